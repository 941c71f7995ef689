"""Full-ranking evaluation speed: all users of a dataset, d=64 model, CPU by default.

    python benchmarks/eval_speed.py --data ../shared/datasets/ml-1m-sasrec/ml-1m.txt
Writes benchmarks/results/eval_speed.json and prints a table. The model is freshly initialised:
evaluation cost does not depend on the weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from sinkrec.config import EvalConfig  # noqa: E402
from sinkrec.data import Split, load_store  # noqa: E402
from sinkrec.eval.evaluate import evaluate  # noqa: E402
from sinkrec.models import build_model  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/ml-1m-sasrec/ml-1m.txt")
    parser.add_argument("--models", default="sasrec")
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    return parser


def main() -> None:
    args = build_parser().parse_args()

    store = load_store(args.data)
    split = Split(store)
    records = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model({"name": name, "d_model": 64}, store.n_items, args.max_len).to(args.device)
        times = []
        for _ in range(args.repeats + 1):
            started = time.perf_counter()
            metrics = evaluate(model, split, "test", EvalConfig(batch_size=args.batch_size), args.max_len, args.device)
            times.append(time.perf_counter() - started)
        seconds = statistics.median(times[1:])  # first run warms up
        records.append({"op": "full_ranking_eval", "model": name, "impl": "torch", "device": args.device,
                        "users": int(metrics["users"]), "items": store.n_items, "max_len": args.max_len,
                        "d_model": 64, "seconds": round(seconds, 3), "threads": torch.get_num_threads()})
    write_results("eval_speed", records)
    print(f"{'model':<10}{'users':>8}{'items':>8}{'seconds':>10}")
    for r in records:
        print(f"{r['model']:<10}{r['users']:>8}{r['items']:>8}{r['seconds']:>10.3f}")


if __name__ == "__main__":
    main()
