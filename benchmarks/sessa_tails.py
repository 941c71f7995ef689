"""Memory tails: |∂y_t/∂x_τ| against lag ℓ = t − τ for the three mixers, at init and trained.

y_t is the last position's final hidden state, x_τ the input embedding at position τ; the Jacobian
norm is estimated with random probe vectors (averaged). A log-log line fit over ℓ ∈ [8, T/2] gives
the decay slope. Trained models come from `benchmarks/sessa_tasks.py` checkpoints (SymbolSoup).
Writes benchmarks/results/sessa_tails.json and sessa_tails.png.

    python benchmarks/sessa_tails.py --device cuda --checkpoints runs/sessa_tasks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, write_results  # noqa: E402

from sinkrec.diagnostics.memory_tails import influence, tail_slope  # noqa: E402
from sinkrec.lm.model import LMConfig, SessaLM  # noqa: E402
from sinkrec.lm.tasks import SOUP_VOCAB, symbol_soup  # noqa: E402
from sinkrec.training import checkpoint  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoints", default="runs/sessa_tasks")
    parser.add_argument("--length", type=int, default=389)
    parser.add_argument("--out")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    dev = torch.device(args.device)
    tokens = torch.from_numpy(symbol_soup(16, seed=777)[0][:, : args.length]).to(dev)
    records, curves = [], {}
    for mixer in ("sessa", "attention", "gdn"):
        for state in ("init", "trained"):
            torch.manual_seed(0)
            model = SessaLM(LMConfig(vocab_size=SOUP_VOCAB, d_model=64, n_layers=2, n_heads=4, mixer=mixer)).to(dev)
            if state == "trained":
                path = Path(args.checkpoints) / f"symbolsoup-{mixer}-s0.pt"
                if not path.is_file():
                    print(f"skip {mixer} trained: {path} not found")
                    continue
                model.load_state_dict(checkpoint.read(path, kind=None)["model"])
            curve = influence(model.eval(), tokens)
            curves[f"{mixer} ({state})"] = curve
            records.append({"model": mixer, "state": state, "slope": round(tail_slope(curve), 4),
                            "influence": [float(f"{v:.4g}") for v in curve]})
            print(f"{mixer:<10}{state:<8} log-log slope {records[-1]['slope']:+.3f}")
    path = write_results("sessa_tails", records, args.out)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        lags = np.arange(1, len(curve))
        ax.loglog(lags, curve[1:], label=name, linestyle="-" if "trained" in name else "--")
    ax.set_xlabel("lag ℓ = t − τ")
    ax.set_ylabel("|∂y_t / ∂x_τ|")
    ax.set_title("Memory tails")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png") if args.out else ROOT / "benchmarks" / "results" / "sessa_tails.png", dpi=120)


if __name__ == "__main__":
    main()
