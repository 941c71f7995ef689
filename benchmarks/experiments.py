"""Every experiment the benchmark scripts run, defined in one place.

- `STUDIES`: quality studies for benchmarks/quality.py — study name → list of (dataset label,
  config, model/variant label, `--set` overrides, seeds);
- `SPEED_MODELS`, `SPEED_N_ITEMS`: the recommenders benchmarks/throughput.py and scaling.py time.
"""

from __future__ import annotations


def budget(epochs: int) -> list[str]:
    """An equal training budget: fixed epochs, lr 2e-3 with warm-up + cosine, no early stop."""
    return [f"train.epochs={epochs}", "train.lr=0.002", "train.schedule=cosine", "train.warmup_steps=100",
            "train.patience=0"]


BUDGET60, BUDGET30 = budget(60), budget(30)

# the single switches of spec §3.6: (label, model config key, value)
ABLATIONS = [("no-memory", "use_memory", "false"), ("no-reinjection", "reinject", "false"),
             ("no-memory-kv", "attn_memory_kv", "false"), ("no-attention", "use_attention", "false"),
             ("no-write-suppression", "write_suppression", "false"),
             ("no-decay-suppression", "decay_suppression", "false"),
             ("no-diff-readout", "diff_readout", "false"), ("no-temporal", "temporal", "false"),
             ("R1", "loops", "1")]

LONG_CPU = ["data.synthetic.n_users=400", "data.synthetic.min_len=600", "data.synthetic.max_len=800",
            "data.max_len=512", "model.d_model=32", "train.epochs=15", "train.patience=0", "train.batch_size=16"]
NOISY = ["data.synthetic.routine_share=0.8", "data.synthetic.interest_noise=0.5"]


def sweep(extra: list[str], settings) -> list[tuple[str, str, str, list[str], list[int]]]:
    """SinkRec vs GDN on the CPU-sized long data at several (routine share, interest noise)."""
    return [(f"synthetic-share{share}-noise{noise}", "synthetic-long-sinkrec", m,
             [f"model.name={m}", f"data.synthetic.routine_share={share}", f"data.synthetic.interest_noise={noise}"]
             + LONG_CPU + extra, [0, 1])
            for share, noise in settings for m in ("gdn", "sinkrec")]


# study name → list of (dataset label, config, model/variant label, overrides, seeds)
STUDIES: dict[str, list[tuple[str, str, str, list[str], list[int]]]] = {
    "sasrec-ml1m": [
        ("ml-1m", "ml-1m", "sasrec", [], [0, 1, 2]),
    ],
    "sasrec-ml1m-sweep": [
        ("ml-1m", "ml-1m", "sasrec", [], [0, 1, 2]),
        ("ml-1m", "ml-1m", "sasrec:d128", ["model.d_model=128"], [0]),
        ("ml-1m", "ml-1m", "sasrec:drop0.1", ["model.dropout=0.1"], [0]),
        ("ml-1m", "ml-1m", "sasrec:d128-3l", ["model.d_model=128", "model.n_layers=3"], [0]),
    ],
    "gdn-ml1m": [
        ("ml-1m", "ml-1m-gdn", "gdn", [], [0, 1, 2]),
        ("ml-1m", "ml-1m-gdn", "gdn:d128", ["model.d_model=128"], [0]),
        ("ml-1m", "ml-1m-gdn", "gdn:d128-3l", ["model.d_model=128", "model.n_layers=3"], [0]),
        ("ml-1m", "ml-1m-gdn", "gdn:drop0.1", ["model.dropout=0.1"], [0]),
    ],
    # issue #4: SinkRec on ML-1M (3 seeds) and each single-switch ablation (1 seed)
    "sinkrec-ml1m": [("ml-1m", "ml-1m-sinkrec", "sinkrec", [], [0, 1, 2])] + [
        ("ml-1m", "ml-1m-sinkrec", f"sinkrec:{name}", [f"model.{key}={value}"], [0])
        for name, key, value in ABLATIONS],
    "sinkrec-ml1m-seeds": [("ml-1m", "ml-1m-sinkrec", "sinkrec", [], [0, 1, 2])],
    # same budget for each: 60 epochs, lr 2e-3 with warm-up + cosine (fits one 10-minute GPU call)
    "ml1m-budget60": [("ml-1m", "ml-1m-sinkrec", f"{m}:budget60", [f"model.name={m}"] + BUDGET60, seeds)
                      for m, seeds in (("sinkrec", [0, 1, 2]), ("gdn", [0]))] + [
        ("ml-1m", "ml-1m-sinkrec", "sinkrec:budget60-no-memory", ["model.use_memory=false"] + BUDGET60, [0])],
    # every single-switch ablation next to SinkRec and GDN at one shorter, equal budget (one GPU call)
    "ml1m-budget30-ablations": [("ml-1m", "ml-1m-sinkrec", f"{m}:budget30", [f"model.name={m}"] + BUDGET30, [0])
                                for m in ("sinkrec", "gdn")] + [
        ("ml-1m", "ml-1m-sinkrec", f"sinkrec:budget30-{name}", [f"model.{key}={value}"] + BUDGET30, [0])
        for name, key, value in ABLATIONS],
    "ml1m-budget60-sinkrec": [("ml-1m", "ml-1m-sinkrec", "sinkrec:budget60", BUDGET60, [0, 1, 2])],
    # choices the spec leaves open, at the same budget: distinct stacked blocks (as GDN's two layers)
    # instead of one block looped twice, fewer codes, a one-item pattern, a lighter VQ loss
    "ml1m-budget60-variants": [("ml-1m", "ml-1m-sinkrec", f"sinkrec:budget60-{name}", sets + BUDGET60, seeds)
                               for name, sets, seeds in (
                                   ("2blocks", ["model.n_blocks=2", "model.loops=1"], [0, 1]),
                                   ("2blocks-R2", ["model.n_blocks=2"], [0]),
                                   ("2blocks-no-memory", ["model.n_blocks=2", "model.loops=1",
                                                          "model.use_memory=false"], [0]),
                                   ("codes64", ["model.rvq_codes=64"], [0]),
                                   ("pattern1", ["model.pattern_len=1"], [0]),
                                   ("vq0.1", ["model.vq_weight=0.1"], [0]))] + [
        ("ml-1m", "ml-1m-sinkrec", "gdn:budget60", ["model.name=gdn"] + BUDGET60, [1])],
    # more seeds of the best of those (no memory, two distinct blocks) and of GDN
    "ml1m-budget60-seeds": [
        ("ml-1m", "ml-1m-sinkrec", "sinkrec:budget60-2blocks-no-memory",
         ["model.n_blocks=2", "model.loops=1", "model.use_memory=false"] + BUDGET60, [1, 2]),
        ("ml-1m", "ml-1m-sinkrec", "gdn:budget60", ["model.name=gdn"] + BUDGET60, [2])],
    "synthetic-long": [("synthetic-long", "synthetic-long-sinkrec", m, [f"model.name={m}"], [0, 1, 2])
                       for m in ("sasrec", "gdn", "sinkrec")],
    "ml1m-ts-half": [("ml-1m-ts-half", "ml-1m-ts-half-sinkrec", m, [f"model.name={m}"], [0])
                     for m in ("sasrec", "gdn", "sinkrec")],
    # a CPU-sized long-history comparison (400 users × 600–800 events, d=32, 15 epochs)
    "synthetic-long-cpu": [("synthetic-long-cpu", "synthetic-long-sinkrec", m, [f"model.name={m}"] + LONG_CPU, [0, 1])
                           for m in ("gdn", "sinkrec")],
    # the same CPU shape where one item no longer names the interest: a high routine share and noisy
    # interest items, so the interest has to be pooled over items that lie many routines apart
    "synthetic-noisy-cpu": [("synthetic-noisy-cpu", "synthetic-long-sinkrec", m, [f"model.name={m}"] + LONG_CPU + NOISY,
                             [0, 1]) for m in ("gdn", "sinkrec")],
    # where the state sink should matter: SinkRec vs GDN as the routine share and the interest noise grow
    "synthetic-sweep": sweep([], [(share, noise) for share in (0.6, 0.8, 0.9) for noise in (0.0, 0.5)]),
    # three of them trained to convergence: does the gap stay, or was it only faster learning?
    "synthetic-sweep-long": sweep(["train.epochs=60", "train.patience=8"], [(0.6, 0.0), (0.8, 0.5), (0.9, 0.5)]),
    "sessa-ml1m": [("ml-1m", "ml-1m-sessa", "sessa", [], [0])],
    "smoke": [
        ("synthetic", "synthetic", "sasrec", ["train.epochs=1"], [0, 1]),
    ],
}


# equal width (d=64) and depth (two mixer applications), catalogue of ML-1M's size
SPEED_N_ITEMS = 3416
SPEED_MODELS = {
    "sasrec": {"name": "sasrec", "d_model": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.1},
    "gdn": {"name": "gdn", "d_model": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.1},
    "sinkrec": {"name": "sinkrec", "d_model": 64, "n_blocks": 1, "loops": 2, "n_heads": 2, "dropout": 0.1},
}
