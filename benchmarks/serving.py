"""Serving benchmark (CPU): update/recommend latency vs history length, the shared row step's cost, HTTP
latency for users with long histories, HTTP throughput, state size, and repeated SIGKILL tests. Writes
benchmarks/results/serving.{json,md,png}.

    python benchmarks/serving.py            # the full run recorded in docs/serving.md
    python benchmarks/serving.py --quick    # a smoke run

Models are d=64 runs trained one epoch on a synthetic log whose generator draws from 3,416 items;
the catalogue served is what training kept (recorded as `catalogue`). Timings do not depend on how
well trained the weights are. A history of n events is prefilled for real: the n events go into the
store's log and the state is computed from them by chunked passes (`encode_step` over the prefix),
then single events are timed on top of it.

Throughput is counted from the server side: the events the store holds before and after each
configuration (and the `recorded` field of the answers), with event ids unique across the whole run,
so a duplicate is never counted as a new event. The load comes from a minimal keep-alive HTTP/1.1
client (`Connection`, lean like wrk): with httpx, the client itself used a whole core of the two at
64 connections and was what got measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from importlib.util import find_spec
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_results  # noqa: E402
from sinkrec.recommend import Recommender  # noqa: E402
from sinkrec.serve import Engine, Event  # noqa: E402
from sinkrec.serve import state as codec  # noqa: E402

N_ITEMS = 3416


def make_run(name: str, folder: Path) -> Path:
    import sinkrec

    config = {"data": {"dataset": "synthetic", "max_len": 200,
                       "synthetic": {"n_users": 1500, "n_items": N_ITEMS, "min_len": 20, "max_len": 60}},
              "model": {"name": name, "d_model": 64}, "train": {"epochs": 1, "progress": False, "device": "cpu"},
              "output_dir": str(folder / name)}
    return sinkrec.train(config, overwrite=True).path


def model_name(run: Path) -> str:
    """The config name of the model a run trained (`--run` may be any streaming model's run)."""
    from sinkrec.models.registry import MODELS

    cls = type(Recommender.from_run(run).model)
    return next(name for name, (model_cls, _) in MODELS.items() if model_cls is cls)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@torch.no_grad()
def prefill(engine: Engine, user: str, n: int) -> None:
    """Store an n-event log and the state it gives, built by chunked passes (not one step per event)."""
    rng = random.Random(n)
    items = [rng.randint(1, engine.n_items) for _ in range(n)]
    names = [str(i) for i in engine.rec.item_ids]
    events = [Event(user, names[i], 60.0 * t, f"p{t}") for t, i in enumerate(items)]
    state = engine.new_state()
    if engine.streaming:
        for start in range(0, n, 4096):
            chunk = items[start:start + 4096]
            times = torch.arange(start, start + len(chunk), dtype=torch.float64)[None] * 60.0
            hidden = engine.model.encode_step(torch.tensor([chunk]), state.cache, times)
            state.hidden = hidden[0, -1].float().clone()
        for i in items:
            state.mark_seen(i, engine.n_items)
        state.n_events = n
    else:
        state = engine.advance(state, items, [60.0 * t for t in range(n)])
    blob = codec.dumps(state)
    engine.store.update(user, events, lambda old, fresh, log: blob)
    assert len(engine.store.events(user)) == n


def latency(runs: dict[str, Path], lengths: list[int], repeats: int) -> list[dict]:
    records = []
    for name, run in runs.items():
        for n in lengths:
            with tempfile.TemporaryDirectory() as tmp:
                engine = Engine.from_run(run, f"sqlite:///{tmp}/s.db")
                prefill(engine, "u", n)
                item_ids = [str(i) for i in engine.rec.item_ids[1:]]
                update, rec = [], []
                for i in range(repeats + 5):
                    event = Event("u", item_ids[i % len(item_ids)], 60.0 * (n + i), f"b{i}")
                    t = time.perf_counter()
                    engine.record([event])
                    update.append((time.perf_counter() - t) * 1e3)
                    t = time.perf_counter()
                    engine.recommend(user="u", k=10)
                    rec.append((time.perf_counter() - t) * 1e3)
                update, rec = update[5:], rec[5:]
                size = len(engine.store.load("u"))
                records.append({"kind": "latency", "model": name, "history": n, "update_p50_ms": pct(update, .5),
                                "update_p99_ms": pct(update, .99), "recommend_p50_ms": pct(rec, .5),
                                "recommend_p99_ms": pct(rec, .99), "state_bytes": size, "store": "sqlite",
                                **split(engine, item_ids, n, repeats)})
                print(json.dumps(records[-1]), flush=True)
    return records


def split(engine: Engine, item_ids: list[str], n: int, repeats: int) -> dict:
    """Where one event's update goes (medians, ms): state decode, model step, state encode, and the
    SQLite commit (one event row + the state blob, fsync'd) — the parts `engine.record` runs in turn."""
    parts: dict[str, list[float]] = {"decode": [], "model": [], "encode": [], "commit": []}
    for i in range(repeats):
        t0 = time.perf_counter()
        state = codec.loads(engine.store.load("u"))
        t1 = time.perf_counter()
        index = engine.index[item_ids[(i * 7) % len(item_ids)]]
        engine.advance(state, [index], [60.0 * (n + 10_000 + i)])
        t2 = time.perf_counter()
        blob = codec.dumps(state)
        t3 = time.perf_counter()
        event = Event("u", item_ids[index - 1], 60.0 * (n + 10_000 + i), f"s{i}")
        engine.store.update("u", [event], lambda old, fresh, log, blob=blob: blob)
        t4 = time.perf_counter()
        for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[key].append(value * 1e3)
    return {f"{key}_ms": pct(values, .5) for key, values in parts.items()}


class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, as lean as wrk's: on 2 cores, httpx's
    own CPU (measured ~8 ms per request with 64 connections) would be measured instead of the server."""

    def __init__(self, url: str):
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port or 80)
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        headers = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
        data = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return int(head[9:12]), data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def load(urls: list[str], concurrency: int, seconds: float, batch: int, items: list[str], users: int,
               tag: str) -> dict:
    """Closed loop: `concurrency` clients, each with one request in flight on its own keep-alive connection.

    Event ids are `tag`-prefixed: `tag` is unique per configuration and run, so every event is new."""
    acked, recorded, latencies, errors, counter = 0, 0, [], 0, [0]
    deadline = time.perf_counter() + seconds

    async def client(c: int):
        nonlocal acked, recorded, errors
        conn = Connection(urls[c % len(urls)])
        try:
            while time.perf_counter() < deadline:
                n = counter[0]
                counter[0] += batch
                body = json.dumps({"events": [{"user": f"u{(n + j) % users}", "item": items[(n + j) % len(items)],
                                               "timestamp": float(n + j), "event_id": f"{tag}-{n + j}"}
                                              for j in range(batch)]}).encode()
                t = time.perf_counter()
                try:
                    status, data = await conn.post("/v1/events", body)
                except (OSError, asyncio.IncompleteReadError):
                    conn.close()
                    status, data = 0, b""
                latencies.append((time.perf_counter() - t) * 1e3)
                if status == 200:
                    acked += batch
                    recorded += json.loads(data)["recorded"]
                else:
                    errors += 1
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {"acked": acked, "answered_recorded": recorded, "seconds": elapsed, "request_p50_ms": pct(latencies, .5),
            "request_p99_ms": pct(latencies, .99), "errors": errors}


def stored_events(spec: str) -> int:
    """Events the store holds (the server's own record, read from the store itself)."""
    from sinkrec.serve import open_store

    store = open_store(spec)
    try:
        if store.kind == "sqlite":
            return int(store._query("SELECT COUNT(*) FROM events", ())[0][0])
        return sum(int(store.client.llen(store._keys(u)[0])) for u in store.users())
    finally:
        store.close()


CONFIGS = ("sqlite:1", "sqlite:2", "redis:1", "redis:2")


def throughput(runs: dict[str, Path], redis_url: str | None, seconds: float, concurrencies: list[int],
               configs: tuple[str, ...] = CONFIGS, sizes: tuple[int, ...] = (1, 16),
               server_args: tuple[str, ...] = ()) -> list[dict]:
    """For each model of `runs`: `configs`, STORE:PROCESSES; `sizes`: events per request (at 8, 64);
    `server_args`: more flags of `sinkrec serve`."""
    from tests.test_serve_http import ServerProcess

    records = []
    stores = [("sqlite", None)] + ([("redis", redis_url)] if redis_url else [])
    run_tag = uuid.uuid4().hex[:8]
    for name, run in runs.items():
        items = [str(i) for i in Recommender.from_run(run).item_ids[1:]]
        for store_name, url in stores:
            for processes in (1, 2):
                if f"{store_name}:{processes}" not in configs:
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    spec = url or f"sqlite:///{tmp}/s.db"
                    if url:
                        import redis

                        redis.Redis.from_url(url).flushdb()
                    server = ServerProcess(run, spec, args=("--workers", str(processes)) + server_args)
                    try:
                        for conc in concurrencies:
                            for batch in (sizes if conc in (8, 64) else [1]):
                                tag = f"{run_tag}-{name}-{store_name}-{processes}-{conc}-{batch}"
                                before = stored_events(spec)
                                out = asyncio.run(load([server.url], conc, seconds, batch, items, 1000, tag))
                                new = stored_events(spec) - before
                                records.append({"kind": "throughput", "model": name, "store": store_name,
                                                "processes": processes, "concurrency": conc,
                                                "events_per_request": batch, "new_events_stored": new,
                                                "server_args": " ".join(server_args),
                                                "events_per_s": new / out["seconds"], **out})
                                print(json.dumps(records[-1]), flush=True)
                    finally:
                        server.stop()
    return records


def http_history(runs: dict[str, Path], lengths: list[int], seconds: float, users: int = 20) -> list[dict]:
    """One client posting one-event calls over HTTP (SQLite, two workers) for `users` users whose logs
    already hold n events each (prefilled as for the latency rows): the update latency a long-lived
    user sees end to end."""
    from tests.test_serve_http import ServerProcess

    records = []
    for name, run in runs.items():
        for n in lengths:
            with tempfile.TemporaryDirectory() as tmp:
                spec = f"sqlite:///{tmp}/h.db"
                engine = Engine.from_run(run, spec)
                for u in range(users):
                    prefill(engine, f"u{u}", n)
                items = [str(i) for i in engine.rec.item_ids[1:]]
                engine.store.close()
                server = ServerProcess(run, spec, args=("--workers", "2"))
                try:
                    before = stored_events(spec)
                    out = asyncio.run(load([server.url], 1, seconds, 1, items, users, f"h{n}"))
                    new = stored_events(spec) - before
                finally:
                    server.stop()
            records.append({"kind": "http_history", "model": name, "history": n, "users": users, "store": "sqlite",
                            "processes": 2, "new_events_stored": new, "events_per_s": new / out["seconds"], **out})
            print(json.dumps(records[-1]), flush=True)
    return records


def step_costs(runs: dict[str, Path], users: tuple[int, ...] = (1, 4, 16, 64), repeats: int = 200) -> list[dict]:
    """The batch-invariant row step (one event for each of B users at once): median ms per step and per
    user, on users with a past of 16 events; and whether this machine's kernels passed the probe."""
    records = []
    for name, run in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            engine = Engine.from_run(run, f"sqlite:///{tmp}/c.db")
            engine.store.close()
        if engine.rows is None:
            records.append({"kind": "step", "model": name, "probe": False})
            continue
        rng = random.Random(0)
        for b in users:
            caches, times = [engine.model.new_cache() for _ in range(b)], []
            for t in range(16 + repeats):
                items, whens = [rng.randint(1, engine.n_items) for _ in range(b)], [60.0 * t] * b
                start = time.perf_counter()
                engine.rows(caches, items, whens)
                times.append((time.perf_counter() - start) * 1e3)
            step = pct(times[16:], .5)
            records.append({"kind": "step", "model": name, "probe": True, "users": b, "step_ms": step,
                            "per_user_ms": step / b})
            print(json.dumps(records[-1]), flush=True)
    return records


def kill_tests(run: Path, repetitions: int) -> dict:
    from tests.test_serve_http import ServerProcess, _stream

    items = [str(i) for i in Recommender.from_run(run).item_ids[1:50]]
    with tempfile.TemporaryDirectory() as tmp:
        store, acked = f"sqlite:///{tmp}/k.db", []
        for rep in range(repetitions):
            server, stop = ServerProcess(run, store, args=("--workers", "2")), threading.Event()
            workers = subprocess.run(["pgrep", "-P", str(server.proc.pid), "-f", "spawn_main"], capture_output=True,
                                     text=True).stdout.split()
            clients = [threading.Thread(target=_stream, args=(server.url, items, 20, 100_000 * (4 * rep + c), acked,
                                                              stop)) for c in range(4)]
            for c in clients:
                c.start()
            time.sleep(random.Random(rep).uniform(0.3, 1.2))
            for pid in workers:  # the parent and its worker processes, all at once
                os.kill(int(pid), signal.SIGKILL)
            server.stop(signal.SIGKILL)
            stop.set()
            for c in clients:
                c.join(10)
        engine = Engine.from_run(run, store)
        recorded = {(u, e.event_id) for u in engine.store.users() for e in engine.store.events(u)}
        lost = len(set(acked) - recorded)
        equal = all(codec.dumps(engine.state(u)) == codec.dumps(engine.replay(engine.store.events(u)))
                    for u in engine.store.users())
    out = {"kind": "kill", "repetitions": repetitions, "workers": 2, "acknowledged": len(set(acked)),
           "recorded": len(recorded), "lost": lost, "states_equal_replay": equal}
    print(json.dumps(out), flush=True)
    return out


def markdown(records: list[dict]) -> str:
    lines = ["| model | history | update p50 / p99 (ms) | recommend p50 / p99 (ms) | state bytes |",
             "|---|---:|---:|---:|---:|"]
    for r in (r for r in records if r["kind"] == "latency"):
        lines.append(f"| {r['model']} | {r['history']:,} | {r['update_p50_ms']:.2f} / {r['update_p99_ms']:.2f} | "
                     f"{r['recommend_p50_ms']:.2f} / {r['recommend_p99_ms']:.2f} | {r['state_bytes']:,} |")
    lines += ["", "Median split of one update (ms): decode state / model step / encode state / SQLite commit.", "",
              "| model | history | decode | model | encode | commit |", "|---|---:|---:|---:|---:|---:|"]
    for r in (r for r in records if r["kind"] == "latency" and "model_ms" in r):
        lines.append(f"| {r['model']} | {r['history']:,} | {r['decode_ms']:.2f} | {r['model_ms']:.2f} | "
                     f"{r['encode_ms']:.2f} | {r['commit_ms']:.2f} |")
    steps = [r for r in records if r["kind"] == "step" and r["probe"]]
    if steps:
        lines += ["", "One shared row step for B users at once (median ms, one thread):", "",
                  "| model | users | step | per user |", "|---|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['users']} | {r['step_ms']:.2f} | {r['per_user_ms']:.3f} |" for r in steps]
    for r in (r for r in records if r["kind"] == "step" and not r["probe"]):
        lines += ["", f"Probe failed for {r['model']}: its steps are not shared on this machine."]
    history = [r for r in records if r["kind"] == "http_history"]
    if history:
        lines += ["", "One client over HTTP (SQLite, two workers), one-event calls for users with a long log:", "",
                  "| model | history | users | request p50 / p99 (ms) | events/s | errors |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['history']:,} | {r['users']} | {r['request_p50_ms']:.1f} / "
                  f"{r['request_p99_ms']:.1f} | {r['events_per_s']:,.0f} | {r['errors']} |" for r in history]
    lines += ["", "| model | store | processes | concurrency | events/request | new events stored/s | "
              "acked / stored | request p50 / p99 (ms) | errors |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in (r for r in records if r["kind"] == "throughput"):
        lines.append(f"| {r['model']} | {r['store']} | {r['processes']} | "
                     f"{r['concurrency']} | {r['events_per_request']} | "
                     f"{r['events_per_s']:,.0f} | {r['acked']:,} / {r['new_events_stored']:,} | "
                     f"{r['request_p50_ms']:.1f} / {r['request_p99_ms']:.1f} | {r['errors']} |")
    for r in (r for r in records if r["kind"] == "kill"):
        lines += ["", f"SIGKILL during an event stream, {r['repetitions']} repetitions: {r['acknowledged']:,} "
                  f"acknowledged events, {r['lost']} lost; every state equals a replay of its log: "
                  f"{r['states_equal_replay']}."]
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "update_p99_ms", "per-event update p99"),
                           (axes[1], "recommend_p99_ms", "recommend p99 (k=10)")):
        for model in sorted({r["model"] for r in records if r["kind"] == "latency"}):
            rows = [r for r in records if r["kind"] == "latency" and r["model"] == model]
            ax.plot([r["history"] for r in rows], [r[key] for r in rows], marker="o", label=model)
        ax.set(xscale="log", xlabel="history length (events)", ylabel="ms", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis", help="redis://HOST:PORT/DB for the Redis rows (db is flushed)")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lengths", default="100,1000,10000,100000", help="history lengths of the latency rows")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per throughput configuration")
    parser.add_argument("--rows", default="latency,steps,history,throughput,kills", help="which parts to run")
    parser.add_argument("--models", default="gdn,sinkrec,sasrec",
                        help="models of the latency rows (steps, history and throughput: the streaming ones)")
    parser.add_argument("--history-lengths", default="100,10000", help="history lengths of the HTTP history rows")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="throughput servers: STORE:PROCESSES (e.g. sqlite:2,redis:2)")
    parser.add_argument("--concurrency", default="1,8,64", help="throughput concurrencies")
    parser.add_argument("--sizes", default="1,16", help="events per request at concurrency 8 and 64")
    parser.add_argument("--server-args", default="", help="more flags of `sinkrec serve` (e.g. '--max-concurrency 16')")
    parser.add_argument("--run", help="a trained GDN or SinkRec run to serve (default: train one per model); only with "
                        "throughput,kills")
    parser.add_argument("--out", help="results JSON path (default benchmarks/results/serving.json, with .md and .png)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(1)
    load_start = [round(x, 2) for x in os.getloadavg()]
    lengths = [100, 1000] if args.quick else [int(n) for n in args.lengths.split(",")]
    rows = set(args.rows.split(","))
    if args.run and rows - {"throughput", "kills"}:
        raise SystemExit("--run serves one run: use it with --rows throughput,kills")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = ({model_name(Path(args.run)): Path(args.run)} if args.run
                else {name: make_run(name, Path(tmp)) for name in args.models.split(",")})
        streaming = {name: run for name, run in runs.items() if name in ("gdn", "sinkrec")}
        seconds = 1.0 if args.quick else args.seconds
        if "latency" in rows:
            records += latency(runs, lengths, 30 if args.quick else 200)
        if "steps" in rows:
            records += step_costs(streaming, repeats=20 if args.quick else 200)
        if "history" in rows:
            records += http_history(streaming, [int(n) for n in args.history_lengths.split(",")], seconds,
                                    users=5 if args.quick else 20)
        if "throughput" in rows:
            records += throughput(streaming, args.redis, seconds, [int(c) for c in args.concurrency.split(",")],
                                  tuple(args.configs.split(",")), tuple(int(n) for n in args.sizes.split(",")),
                                  tuple(args.server_args.split()))
        served = runs.get("gdn", next(iter(runs.values())))
        catalogue = len(Recommender.from_run(served).item_ids) - 1
        if "kills" in rows:
            records.append(kill_tests(served, 2 if args.quick else args.kills))
    load_avg = [round(x, 2) for x in os.getloadavg()]  # other work on the machine inflates every timing
    path = write_results("serving", records, out=args.out,
                         extra={"catalogue": catalogue, "generator_items": N_ITEMS, "d_model": 64,
                                "uvicorn": {"loop": "uvloop" if find_spec("uvloop") else "asyncio",
                                            "http": "httptools" if find_spec("httptools") else "h11"},
                                "cores": os.cpu_count(), "load_average": load_avg, "load_average_at_start": load_start})
    if args.out is None:
        (path.parent / "serving.md").write_text(markdown(records))
        plot(records, path.parent / "serving.png")
    print(markdown(records))


if __name__ == "__main__":
    main()
