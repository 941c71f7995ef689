"""Peak memory of loading an interaction file (read + build the sequence store), against its size.

Generates `user item` files (SASRec format) and a CSV with a header and timestamps, each with one
500-character item id (which used to widen every row, then every distinct id, of a fixed-width numpy
string array), then loads each in a fresh process and records the peak resident memory above the
process's memory after imports (Linux VmHWM, reset after the imports), and, for files up to
--trace-lines, the tracemalloc peak in a second process (tracing keeps a record per allocation,
which would inflate the RSS). The goal (issue #25) is a peak ≤ 3× the file size.

    python benchmarks/reader_memory.py --lines 1000000 10000000
    python benchmarks/reader_memory.py --lines 1000000 --code /tmp/old  # another checkout, e.g. before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

LONG_ID = "L" * 500

MEASURE = """
import json, os, sys, time, tracemalloc
if os.environ.get("BENCH_CODE"):  # measure another checkout: bypass the editable install's finder
    sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__name__", str(f))]
    sys.path.insert(0, os.environ["BENCH_CODE"])
from sinkrec.data.sequences import build_store
from sinkrec.data.formats import read_interactions
path, trace = sys.argv[1], sys.argv[2] == "1"
def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the memory held now, after the imports
base = status("VmRSS")
if trace:
    tracemalloc.start()
start = time.perf_counter()
store = build_store(read_interactions(path), min_events=1)
seconds = time.perf_counter() - start
traced = tracemalloc.get_traced_memory()[1] if trace else None
peak = status("VmHWM")
print(json.dumps({"base_rss": base, "peak_rss": peak, "traced_peak": traced, "seconds": seconds,
                  "events": int(len(store.items)), "users": store.n_users, "items": store.n_items}))
"""


def generate(path: Path, lines: int, kind: str, seed: int = 0) -> None:
    """`lines` events of ~lines/150 users over 20,000 items (Zipf-like), grouped by user; one 500-char id."""
    rng = np.random.default_rng(seed)
    n_users = max(1, lines // 150)
    with open(path, "w") as out:
        if kind == "csv":
            out.write("user_id,item_id,timestamp\n")
        for start in range(0, lines, 1_000_000):
            n = min(1_000_000, lines - start)
            users = (np.arange(start, start + n) * n_users // lines + 1).tolist()
            items = np.minimum(rng.zipf(1.3, n), 20_000).tolist()
            rows = [f"{u} {i}" for u, i in zip(users, items)] if kind == "sasrec" else \
                [f"{u},{i},{1_600_000_000 + start + k}" for k, (u, i) in enumerate(zip(users, items))]
            if start == 0:
                sep = " " if kind == "sasrec" else ","
                rows[0] = sep.join([str(users[0]), LONG_ID] + ([] if kind == "sasrec" else ["1600000000"]))
            out.write("\n".join(rows) + "\n")


def measure(path: Path, trace: bool, code: str | None) -> dict:
    env = dict(os.environ, BENCH_CODE=code) if code else None
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path), "1" if trace else "0"], env=env,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["sasrec", "csv"], choices=["sasrec", "csv"])
    parser.add_argument("--trace-lines", type=int, default=1_000_000, help="tracemalloc for files up to this")
    parser.add_argument("--code", help="PYTHONPATH of another sinkrec checkout to measure instead")
    parser.add_argument("--out", help="results file (default benchmarks/results/reader_memory.json)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    from common import write_results

    records = []
    print(f"{'file':<22}{'MiB':>8}{'peak RSS MiB':>14}{'× file':>8}{'traced MiB':>12}{'× file':>8}{'s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for lines in args.lines:
            for kind in args.kinds:
                path = Path(tmp) / f"events-{lines}.{'txt' if kind == 'sasrec' else 'csv'}"
                generate(path, lines, kind)
                size = path.stat().st_size
                got = measure(path, False, args.code)
                traced = measure(path, True, args.code)["traced_peak"] if lines <= args.trace_lines else None
                path.unlink()
                added = got["peak_rss"] - got["base_rss"]
                record = {"format": kind, "lines": lines, "file_bytes": size, "long_id_chars": len(LONG_ID),
                          "peak_rss_added_bytes": added, "rss_ratio": round(added / size, 2),
                          "traced_peak_bytes": traced, "traced_ratio": None if traced is None else
                          round(traced / size, 2), "seconds": round(got["seconds"], 1), "events": got["events"],
                          "users": got["users"], "items": got["items"], "code": args.code or "this checkout"}
                records.append(record)
                mib = 1 << 20
                print(f"{kind + ' ' + str(lines):<22}{size / mib:>8.1f}{added / mib:>14.1f}{record['rss_ratio']:>8.2f}"
                      f"{'' if traced is None else f'{traced / mib:.1f}':>12}"
                      f"{'' if traced is None else record['traced_ratio']:>8}{record['seconds']:>8}", flush=True)
    print("written", write_results("reader_memory", records, args.out))


if __name__ == "__main__":
    main()
