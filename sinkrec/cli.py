"""The `sinkrec` command: train, evaluate, recommend, prepare, datasets."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .errors import SinkrecError

log = logging.getLogger("sinkrec")

# `sinkrec train` with no --config: the built-in synthetic benchmark, sized for a 2-core CPU.
# Routines repeat by design, so seen items stay rankable (filter_seen: false).
DEFAULT_RUN = {
    "data": {"dataset": "synthetic", "max_len": 100},
    "model": {"name": "sinkrec", "d_model": 64, "dropout": 0.1},
    "train": {"epochs": 8, "batch_size": 64, "lr": 2e-3, "patience": 3},
    "eval": {"filter_seen": False},
    "output_dir": "runs/synthetic",
}


def _table(rows: list[tuple[str, dict[str, float]]], keys: list[str]) -> str:
    head = f"{'split':<8}" + "".join(f"{k:>10}" for k in keys)
    lines = [head, "-" * len(head)]
    for name, metrics in rows:
        lines.append(f"{name:<8}" + "".join(f"{metrics.get(k, float('nan')):>10.4f}" for k in keys))
    return "\n".join(lines)


def _metric_keys(topk: list[int]) -> list[str]:
    return [f"{m}@{k}" for k in topk for m in ("hr", "ndcg")] + ["mrr"]


def cmd_train(args: argparse.Namespace) -> int:
    from .config import build_config, load_yaml, merge, parse_override, resolve_config_path
    from .data import load_dataset
    from .train.trainer import Trainer

    raw = load_yaml(resolve_config_path(args.config)) if args.config else json.loads(json.dumps(DEFAULT_RUN))
    for text in args.set or []:
        raw = merge(raw, parse_override(text))
    if args.device:
        raw = merge(raw, {"train": {"device": args.device}})
    if args.output:
        raw = merge(raw, {"output_dir": args.output})
    cfg = build_config(raw)
    rank = int(os.environ.get("RANK", "0"))  # set by torchrun; only rank 0 reports
    if rank > 0:
        logging.getLogger().setLevel(logging.WARNING)
    data = load_dataset(cfg.data)
    store = data.store
    log.info("data %s: %d users, %d items, %d events (mean length %.1f)", data.name, store.n_users,
             store.n_items, len(store.items), len(store.items) / store.n_users)
    trainer = Trainer(cfg, data)
    resume = args.resume
    if resume:
        trainer.resume(Path(cfg.output_dir) / "last.pt" if resume == "auto" else resume)
    log.info("model %s: %.2fM parameters, device %s", cfg.model["name"],
             sum(p.numel() for p in trainer.model.parameters()) / 1e6, trainer.device)
    result = trainer.fit()
    from .train.distributed import cleanup

    cleanup(trainer.dist)
    if rank > 0:
        return 0
    keys = _metric_keys(cfg.eval.topk)
    rows = [("valid", result.valid), ("test", result.test)]
    if trainer.oracle:
        rows.append(("oracle", trainer.oracle["test"]))
    print(_table(rows, keys))
    print(f"best epoch {result.best_epoch}, {result.train_seconds:.1f}s training; "
          f"checkpoint {result.output_dir / 'best.pt'}, metrics {result.output_dir / 'metrics.json'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .eval.evaluate import evaluate
    from .train import checkpoint
    from .train.trainer import pick_device

    payload = checkpoint.load(args.checkpoint)
    model, cfg = checkpoint.model_from_checkpoint(payload)
    if args.filter_seen is not None:
        cfg.eval.filter_seen = args.filter_seen == "true"
    device = pick_device(args.device or "auto")
    data = load_dataset(cfg.data)
    if data.store.n_items != payload["n_items"]:
        raise SinkrecError(f"the dataset now has {data.store.n_items} items but the checkpoint was "
                           f"trained on {payload['n_items']}; the data changed since training")
    metrics = evaluate(model.to(device), data.split, args.split, cfg.eval, cfg.data.max_len, device)
    print(_table([(args.split, metrics)], _metric_keys(cfg.eval.topk)))
    print(f"{int(metrics['users'])} users, filter_seen={cfg.eval.filter_seen}")
    if args.json:
        Path(args.json).write_text(json.dumps({"split": args.split, "metrics": metrics}, indent=2))
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from .recommend import recommend_from_checkpoint

    history = [token for token in args.history.split(",") if token.strip()]
    result = recommend_from_checkpoint(args.checkpoint, history, args.k, not args.include_seen,
                                       timestamps=args.timestamps)
    if args.json:
        print(json.dumps(result))
    else:
        for rank, (item, score) in enumerate(zip(result["items"], result["scores"]), 1):
            print(f"{rank:>3}  {item}  {score:.4f}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .diagnostics.run import diagnose

    result = diagnose(args.checkpoint, args.baseline, args.users, args.length, Path(args.out), args.top,
                      args.device)
    print(f"{'series':<34}{'early M_t':>10}{'late M_t':>10}{'rise':>9}")
    for name, row in result["summary"].items():
        print(f"{name:<34}{row['early_mean']:>10.4f}{row['late_mean']:>10.4f}{row['rise']:>9.4f}")
    print(f"wrote {args.out}/state_sink.json, sink_mass.png, probe_heatmap.png")
    return 0


def cmd_lm(args: argparse.Namespace) -> int:
    from .lm import generate, train_lm

    if args.lm_command == "train":
        result = train_lm(args.text, Path(args.out), args.mixer, args.steps, args.context, args.batch_size, args.lr,
                          args.d_model, args.n_layers, args.n_heads, args.seed, args.device)
        print(f"{'step':>6}{'train loss':>12}{'valid ppl':>11}")
        for row in result["history"]:
            print(f"{row['step']:>6}{row['train_loss']:>12.4f}{row['valid_ppl']:>11.3f}")
        print(f"{args.mixer}: valid perplexity {result['valid_ppl']:.3f} (bytes) in {result['seconds']}s; "
              f"checkpoint {args.out}/lm.pt")
    else:
        print(generate(args.checkpoint, args.prompt, args.tokens, args.temperature, args.top_k, args.seed))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .config import DataConfig
    from .data import load_dataset

    data = load_dataset(DataConfig(dataset=args.name, min_events=args.min_events))
    store = data.store
    print(f"{data.name}: {store.n_users} users, {store.n_items} items, {len(store.items)} events, "
          f"timestamps: {'yes' if store.timestamps is not None else 'no'}")
    for note in store.notes:
        print(f"  note: {note}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data.catalog import CATALOG

    for info in CATALOG.values():
        check = "sha256" if info.sha256 else "md5" if (info.md5 or info.md5_url) else "none published"
        print(f"{info.name:<18} {info.description}\n{'':<18} {info.url}  (checksum: {check}; reader: "
              f"{info.format})\n{'':<18} licence: {info.licence}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sinkrec", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (default: SinkRec on the built-in synthetic data)")
    p.add_argument("--config", help="YAML file, or a name in ./configs (e.g. ml-1m)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides train.device")
    p.add_argument("--output", help="output folder (overrides output_dir)")
    p.add_argument("--resume", nargs="?", const="auto",
                   help="continue from a checkpoint (default: OUTPUT/last.pt)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="full-ranking evaluation of a checkpoint")
    p.add_argument("checkpoint", help="checkpoint file or run folder (uses best.pt)")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--filter-seen", choices=["true", "false"], help="override eval.filter_seen")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-k items for a history (original ids in and out)")
    p.add_argument("checkpoint", help="checkpoint file or run folder (uses best.pt)")
    p.add_argument("--history", required=True, help="comma-separated item ids, oldest first")
    p.add_argument("--timestamps", help="comma-separated unix times, one per history item")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--include-seen", action="store_true", help="allow items already in the history")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("diagnose", help="semantic state sink: sink mass M_t and probe heat maps (Fig. 4)")
    p.add_argument("checkpoint", help="a SinkRec checkpoint (its RVQ codes define the prototypes)")
    p.add_argument("--baseline", help="a plain GDN checkpoint trained on the same data, probed the same way")
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--length", type=int, help="history length (default data.max_len)")
    p.add_argument("--top", type=float, default=0.1, help="repetitive set: top fraction of prototypes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/diagnose")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("prepare", help="download, verify, convert and cache a catalogue dataset")
    p.add_argument("name", help="a name from `sinkrec datasets`")
    p.add_argument("--min-events", type=int, default=3)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("lm", help="byte-level language model with a Sessa (or attention / GDN) decoder")
    lm = p.add_subparsers(dest="lm_command", required=True)
    t = lm.add_parser("train", help="train on a text file (default: a built-in story text)")
    t.add_argument("--text", help="UTF-8 text file; default: built-in tiny stories")
    t.add_argument("--mixer", choices=["sessa", "attention", "gdn"], default="sessa")
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--context", type=int, default=128)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--d-model", type=int, default=128)
    t.add_argument("--n-layers", type=int, default=2)
    t.add_argument("--n-heads", type=int, default=4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--out", default="runs/lm")
    g = lm.add_parser("generate", help="continue a prompt")
    g.add_argument("checkpoint", help="lm.pt or its folder")
    g.add_argument("--prompt", default="Once upon a time")
    g.add_argument("--tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=20)
    g.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_lm)

    p = sub.add_parser("datasets", help="list the catalogue of public datasets")
    p.set_defaults(func=cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except SinkrecError as exc:
        print(f"sinkrec: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. incompatible sizes in a config; -v shows the traceback
        if args.verbose:
            raise
        print(f"sinkrec: error: {exc} (run with -v for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sinkrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
