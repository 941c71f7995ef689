"""The `sinkrec` command: train, evaluate, recommend, compare, tune, prepare, datasets."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import SinkrecError

log = logging.getLogger("sinkrec")

def non_negative_float(text: str) -> float:
    """An argparse type: a number ≥ 0 (argparse names the flag in its one-line error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}")
    return value


def _table(rows: list[tuple[str, dict[str, float]]], keys: list[str]) -> str:
    width = max(8, *(len(name) + 2 for name, _ in rows))
    head = f"{'split':<{width}}" + "".join(f"{k:>10}" for k in keys)
    lines = [head, "-" * len(head)]
    for name, metrics in rows:
        lines.append(f"{name:<{width}}" + "".join(f"{metrics.get(k, float('nan')):>10.4f}" for k in keys))
    return "\n".join(lines)


def _metric_keys(topk: list[int]) -> list[str]:
    return [f"{m}@{k}" for k in topk for m in ("hr", "ndcg")] + ["mrr"]


def cmd_train(args: argparse.Namespace) -> int:
    from .api import train

    run = train(args.config, data=args.data, model=args.model, overrides=args.set or [], device=args.device,
                output_dir=args.output, overwrite=args.overwrite, resume=args.resume or False,
                baselines=not args.no_baselines)
    if int(os.environ.get("RANK", "0")) > 0:
        return 0
    rows = [("valid", run.valid), ("test", run.test)]
    if run.oracle:
        rows.append(("oracle test", run.oracle["test"]))
    rows += [(f"{name} test", scores["test"]) for name, scores in (run.baselines or {}).items()]
    print(_table(rows, _metric_keys(run.config.eval.topk)))
    seen = "seen items filtered" if run.config.eval.filter_seen else "seen items ranked"
    print(f"{run.config.model['name']} on {Path(run.config.data.dataset).name}: best epoch {run.best_epoch} ({seen}); "
          f"checkpoint {run.path / 'best.pt'}, metrics {run.path / 'metrics.json'}")
    for text in run.warnings:
        print(f"warning: {text}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .api import evaluate

    filter_seen = None if args.filter_seen is None else args.filter_seen == "true"
    metrics = evaluate(args.checkpoint, args.split, filter_seen, args.device or "auto", data=args.data)
    # the run's cut-offs, from the metrics themselves (no second read of the checkpoint)
    topk = [int(key[3:]) for key in metrics if key.startswith("hr@")]
    print(_table([(args.split, metrics)], _metric_keys(topk)))
    print(f"{int(metrics['users'])} users")
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


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import server
    except ImportError as exc:
        raise SinkrecError(f"`sinkrec serve` needs the serve extra: pip install 'sinkrec[serve]' ({exc})") from None
    if args.rebuild:
        print(f"rebuilt {server.rebuild(args.run, args.store)} user states")
        return 0
    from .serve.limits import Limits

    limits = Limits(max_body_bytes=args.max_body_bytes, max_events=args.max_events, max_queries=args.max_queries,
                    max_history=args.max_history, max_history_total=args.max_history_total, max_k=args.max_k,
                    time_budget_s=args.time_budget, max_concurrency=args.max_concurrency, max_queue=args.max_queue)
    server.serve(args.run, args.store, args.host, args.port, args.threads, args.log_level, workers=args.workers,
                 token_file=args.token_file, insecure=args.insecure, open_metrics=args.open_metrics, limits=limits,
                 state_cache_bytes=int(args.state_cache_mb * (1 << 20)))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .diagnostics.run import diagnose

    result = diagnose(args.checkpoint, args.baseline, args.users, args.length, Path(args.out), args.top,
                      args.device)
    print(f"{'series':<34}{'early M_t':>10}{'late M_t':>10}{'rise':>9}")
    for name, row in result["summary"].items():
        print(f"{name:<34}{row['early_mean']:>10.4f}{row['late_mean']:>10.4f}{row['rise']:>9.4f}")
    print(f"wrote {', '.join(result['written'])}")
    if result.get("skipped"):
        print(result["skipped"])
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
    from .data.catalog import prepare

    path = prepare(args.name, file=args.file)
    print(f"{args.name}: {path}")
    data = load_dataset(DataConfig(dataset=args.name, min_events=args.min_events))
    store = data.store
    print(f"{data.name}: {store.n_users} users, {store.n_items} items, {len(store.items)} events, "
          f"timestamps: {'yes' if store.timestamps is not None else 'no'}")
    for note in store.notes:
        print(f"  note: {note}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare

    models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    result = compare(args.data, models, seeds=args.seeds, budget=args.budget, parallel=args.parallel,
                     device=args.device, out=args.out, config=args.config, overrides=args.set or [])
    return 1 if result["failed"] else 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import tune

    tune(args.data, args.model.lower(), trials=args.trials, space=args.space, storage=args.storage, study=args.study,
         workers=args.workers, pruner=args.pruner, budget=args.budget, out=args.out, config=args.config,
         overrides=args.set or [], device=args.device, seed=args.seed, join=args.join,
         pruner_startup=args.pruner_startup, worker=args.worker, timeout=args.timeout)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data.catalog import CATALOG

    for info in CATALOG.values():
        check = ("sha256 pinned" if info.sha256 else "md5 published" if (info.md5 or info.md5_url)
                 else "none published: digest recorded on first use")
        source = f"users 1..{info.max_user} of {info.subset_of}" if info.subset_of else info.url
        print(f"{info.name:<18} {info.description}\n{'':<18} {source}  (checksum: {check}; reader: "
              f"{info.format})\n{'':<18} licence: {info.licence}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from . import configs

    if args.config_command == "list":
        for name in configs.names():
            header = configs.locate(name).read_text().splitlines()[0].lstrip("# ")
            print(f"{name:<26} {header}")
        return 0
    from .config import Config
    from .describe import describe_fields, format_options, model_options

    options = model_options()
    args.model = args.model.lower() if args.model else args.model
    if args.model and args.model not in options:
        raise SinkrecError(f"unknown model '{args.model}'; known: {', '.join(sorted(options))}")
    print(format_options([row for row in describe_fields(Config) if not row.name.startswith("model")]))
    for name in [args.model] if args.model else sorted(options):
        print(f"\nmodel: {name}  (--model {name}, or model.name: {name})")
        print(format_options(describe_fields(options[name]), prefix="model."))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sinkrec", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"sinkrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (no arguments: the built-in synthetic demo)",
                       description="Train on a file, a catalogue dataset or a config; leave-one-out split, "
                                   "full-ranking evaluation, seen items filtered (except in the synthetic demo).")
    p.add_argument("data", nargs="?", help="interaction file or catalogue name (`sinkrec datasets`)")
    p.add_argument("--model", help="model name (`sinkrec config show`); default gdn for your own data")
    p.add_argument("--config", help="YAML file, or a shipped config name (`sinkrec config list`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=3e-4 (repeatable; keys: `sinkrec config show`)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides train.device")
    p.add_argument("--output", help="output folder (default runs/DATA-MODEL)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run already in the output folder (default: write to a fresh numbered folder)")
    p.add_argument("--resume", nargs="?", const="auto",
                   help="continue a run exactly (default: the run in OUTPUT; or a run folder)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip fitting the pop and itemknn baselines (their rows; for very large data)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="full-ranking evaluation of a checkpoint")
    p.add_argument("checkpoint", help="run folder (its best epoch) or model file")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--filter-seen", choices=["true", "false"], help="override eval.filter_seen")
    p.add_argument("--data", help="the run's data file, moved (default: the absolute path the run recorded)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-k items for a history (original ids in and out)")
    p.add_argument("checkpoint", help="run folder (its best epoch) or model file")
    p.add_argument("--history", required=True, help="comma-separated item ids, oldest first")
    p.add_argument("--timestamps", help="comma-separated unix times, one per history item")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--include-seen", action="store_true", help="allow items already in the history")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("serve", help="HTTP service: events in, recommendations out, durable per-user state")
    p.add_argument("run", help="run folder or checkpoint to serve")
    p.add_argument("--store", default="sqlite",
                   help="sqlite (RUN/serving/state.db), sqlite:///PATH or redis://HOST:PORT/DB (shared by processes)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--workers", type=int, default=None, help="server processes (default: one per core)")
    p.add_argument("--token-file", help="file of SCOPE:TOKEN lines (scopes read, write); also SINKREC_SERVE_TOKENS")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without any token")
    p.add_argument("--open-metrics", action="store_true", help="serve /metrics without a token")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    p.add_argument("--max-events", type=int, default=1000, help="events per POST /v1/events")
    p.add_argument("--max-queries", type=int, default=64, help="queries per POST /v1/recommend")
    p.add_argument("--max-history", type=int, default=1000, help="items of one explicit history")
    p.add_argument("--max-history-total", type=int, default=2000, help="history items over one recommend call")
    p.add_argument("--max-k", type=int, default=1000)
    p.add_argument("--time-budget", type=float, default=5.0, help="seconds per request, queueing included (503)")
    p.add_argument("--max-concurrency", type=int, default=16,
                   help="/v1 requests running at once per process (concurrent event calls share their model steps)")
    p.add_argument("--max-queue", type=int, default=64, help="/v1 requests waiting per process; more get 429")
    p.add_argument("--state-cache-mb", type=non_negative_float, default=128,
                   help="decoded user states kept per worker process, MiB (0: decode every state it reads)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--rebuild", action="store_true",
                   help="recompute every stored user state from its events with this checkpoint, then exit")
    p.set_defaults(func=cmd_serve)

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
    p.add_argument("--file", help="a copy you downloaded by hand: verified, then registered in the cache")
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

    p = sub.add_parser("compare", help="several models × seeds, one protocol and budget: a table of mean ± std",
                       description="Train every model (and fit the pop / itemknn baselines) under the same data, "
                                   "split, evaluation and budget; resumable (rerun the same command after a kill).")
    p.add_argument("data", nargs="?", help="interaction file or catalogue name (default: the synthetic data)")
    p.add_argument("--models", default="pop,itemknn,sasrec,gdn", help="comma-separated model names")
    p.add_argument("--seeds", type=int, default=3, help="seeds per neural model (baselines are deterministic)")
    p.add_argument("--budget", default="epochs:20", help="epochs:N (exactly N epochs each) or minutes:M "
                                                         "(the same training time each)")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (processes; several may share a GPU)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides train.device")
    p.add_argument("--config", help="YAML or shipped config giving the shared data/train/eval settings")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override for every run (model.* keys only where the model has that option)")
    p.add_argument("--out", default="runs/compare", help="folder of the runs, compare.json/.md and the PNG")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("tune", help="hyperparameter search with Optuna (TPE, pruning; needs sinkrec[tune])",
                       description="Search a model's options on validation only; the best trial's checkpoint is "
                                   "scored once on test. Several workers (or machines) share one study "
                                   "through --storage.")
    p.add_argument("data", nargs="?", help="interaction file or catalogue name (default: the synthetic data)")
    p.add_argument("--model", required=True, help="model to tune")
    p.add_argument("--trials", type=int, default=30,
                   help="trials in the study in all (all workers; a rerun continues to this total)")
    p.add_argument("--space", help="search-space YAML (default: the shipped one for the model)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db); e.g. postgresql://…")
    p.add_argument("--study", help="study name (default MODEL-DATA)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--pruner", choices=["median", "halving", "none"], default="median",
                   help="stop weak trials early on the per-epoch validation metric")
    p.add_argument("--budget", default="epochs:20", help="epochs:N per trial (early stopping off)")
    p.add_argument("--pruner-startup", type=int, default=5, help="finished trials before the median pruner acts")
    p.add_argument("--config", help="YAML or shipped config: the settings the search starts from")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override applied to every trial")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides train.device")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (mixed with the worker and the study's size)")
    p.add_argument("--out", default="runs/tune", help="folder of the trials, best.yaml, trials.md and plots")
    p.add_argument("--join", action="store_true",
                   help="only run trials of an existing study (how another machine joins; no report)")
    p.add_argument("--timeout", type=float, help="start no new trial after this many seconds (rerun to go on)")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("datasets", help="list the catalogue of public datasets")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("config", help="the configuration keys, their defaults and help; the shipped configs")
    cfg = p.add_subparsers(dest="config_command", required=True)
    c = cfg.add_parser("show", help="every key with its default and a line of help")
    c.add_argument("model", nargs="?", help="also list this model's options (default: every model's)")
    cfg.add_parser("list", help="the shipped configs (use with `sinkrec train --config NAME`)")
    p.set_defaults(func=cmd_config)
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
