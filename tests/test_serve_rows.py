"""The batch-invariant row steps (GDN: serve/rows.py, SinkRec: serve/fused_sinkrec.py) and the steps shared
by concurrent requests (serve/step_batcher.py, planned by the engine or the SQLite store): rows bit for
bit their users' steps alone (float32 and float64, random weights, those that start at zero included),
equal to `encode_step` to 1e-12 in float64, caches interchangeable with `encode_step`'s; concurrent
calls for many users store states equal, byte for byte, to a replay of their logs; the start-up probe
falls back where a kernel is not batch-invariant."""

from __future__ import annotations

import copy
import logging
import random
import threading

import pytest
import torch

from sinkrec.models import build_model
from sinkrec.serve import Engine, Event, SQLiteStore, fused_sinkrec, row_ops
from sinkrec.serve import state as codec
from sinkrec.serve.rows import RowsStep
from sinkrec.serve.step_batcher import probe

from .test_serve import _one_thread, make_store, tiny_recommender  # noqa: F401
from .test_serve_fused import SINKREC_OPTIONS, _randomise, _tensors
from .test_serve_http import run_folder  # noqa: F401 - fixture

OPTIONS = [{}, {"n_layers": 1, "conv_size": 1}, {"n_heads": 4, "head_dim": 8}, {"conv_size": 3, "ffn_mult": 2.0}]


def random_model(options: dict, dtype: torch.dtype, seed: int = 0, n_items: int = 50):
    """A GDN with random values in every weight (biases, dt_bias, norms and others that start at zero or one)."""
    torch.manual_seed(seed)
    model = build_model({"name": "gdn", "d_model": 32, "dropout": 0.0, **options}, n_items, 20).eval().to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.5 if p.dim() < 2 else p.shape[-1] ** -0.5))
    return model


def random_sinkrec(options: dict, dtype: torch.dtype, n_items: int = 50):
    """A SinkRec with random values in every weight and RVQ buffer (every memory path live)."""
    torch.manual_seed(1)
    model = build_model({"name": "sinkrec", "d_model": 32, "dropout": 0.0, "rvq_codes": 8, "code_dim": 8,
                         **options}, n_items, 20).eval().to(dtype)
    _randomise(model, seed=len(str(options)))
    return model


def same(a, b) -> bool:
    """Two caches hold the same tensors, bit for bit, and the same plain values."""
    left, right = _tensors(a), _tensors(b)
    return len(left) == len(right) and all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(left, right))


# d_model 64 (head dim 32): the served default, where more products leave MKL's small-size kernel
STEPS = ([("gdn", o) for o in OPTIONS + [{"d_model": 64}]]
         + [("sinkrec", o) for o in SINKREC_OPTIONS + [{"d_model": 64}]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name, options", STEPS)
def test_rows_are_bit_for_bit_single_steps(name, options, dtype):
    model = random_model(options, dtype) if name == "gdn" else random_sinkrec(options, dtype)
    step = RowsStep(model) if name == "gdn" else fused_sinkrec.SinkRecStep(model)
    users = 13
    together = [model.new_cache() for _ in range(users)]
    alone = [model.new_cache() for _ in range(users)]
    rng, clock = random.Random(0), [1e9 + 1e4 * u for u in range(users)]
    for _ in range(25):
        active = [u for u in range(users) if rng.random() < 0.7]  # users join late and skip positions
        items = [rng.randint(1, 50) for _ in active]
        whens = []
        for u in active:
            clock[u] += rng.choice([-30.0, 0.0, 60.0, 3_600.0 * rng.random(), 86_400.0])  # some out of order
            whens.append(clock[u])
        hidden = step.rows([together[u] for u in active], items, whens)
        assert hidden.shape == (len(active), model.d_model) and hidden.dtype == dtype
        for r, u in enumerate(active):
            assert torch.equal(step(alone[u], items[r], whens[r])[0, 0], hidden[r])
    for a, b in zip(together, alone):
        assert same(a, b)


@pytest.mark.parametrize("options", OPTIONS)
def test_rows_equal_encode_step_in_float64_and_caches_interchange(options):
    model = random_model(options, torch.float64)
    step, users = RowsStep(model), 5
    ours, ref = [model.new_cache() for _ in range(users)], [model.new_cache() for _ in range(users)]
    with torch.inference_mode():
        for t in range(30):
            items = [1 + (t * 17 + 5 * u) % 50 for u in range(users)]
            if t == 15:  # continue each cache with the other implementation
                ours, ref = copy.deepcopy(ref), copy.deepcopy(ours)
            hidden = step.rows(ours, items)
            for u in range(users):
                expected = model.encode_step(torch.tensor([[items[u]]]), ref[u])[0, -1]
                assert (hidden[u] - expected).abs().max().item() <= 1e-12
    for a, b in zip(ours, ref):
        for x, y in zip(a, b):
            assert (x.state - y.state).abs().max().item() <= 1e-12
            assert all(x.conv[n].shape == y.conv[n].shape for n in "qkv")


@pytest.mark.parametrize("name", ["gdn", "sinkrec"])
def test_probe_passes_here_and_fails_on_a_non_invariant_op(name, monkeypatch, caplog, tmp_path):
    model = random_model({}, torch.float32) if name == "gdn" else random_sinkrec({}, torch.float32)
    make = RowsStep if name == "gdn" else fused_sinkrec.SinkRecStep
    assert probe(make(model).rows, model.new_cache, 50)
    # `x @ W` adds in another order for one row than for several (gemv vs gemm): not batch-invariant
    monkeypatch.setattr(row_ops, "linear", lambda x, w, b=None: x @ w if b is None else x @ w + b)
    assert not probe(make(model).rows, model.new_cache, 50)
    with caplog.at_level(logging.WARNING, logger="sinkrec.serve"):
        engine = Engine(tiny_recommender(name), SQLiteStore(tmp_path / "p.db"))
    assert engine.planner is None and engine.rows is None and "not bit-for-bit" in caplog.text
    engine.record([Event("u", "i3", 1.0, "a"), Event("v", "i4", 2.0, "b")])  # still serves, one by one
    assert codec.dumps(engine.state("u")) == codec.dumps(engine.replay(engine.store.events("u")))


def test_engine_shares_steps_unless_told_not_to(tmp_path):
    assert Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "a.db")).planner is not None
    assert Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "b.db"), share_steps=False).planner is None
    assert Engine(tiny_recommender("sinkrec"), SQLiteStore(tmp_path / "c.db")).planner is not None
    assert Engine(tiny_recommender("sasrec"), SQLiteStore(tmp_path / "d.db")).planner is None


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("name, dtype", [("gdn", torch.float32), ("gdn", torch.float64), ("sinkrec", torch.float32)])
def test_concurrent_calls_store_states_equal_to_replays(kind, name, dtype, tmp_path):
    """16 threads post one- and few-event calls over 40 users (some users in several threads at once):
    calls are really stepped together, and every stored state is byte for byte a replay of its log."""
    rec = tiny_recommender(name)
    if name == "sinkrec":
        _randomise(rec.model, seed=3)
    rec.model.to(dtype)
    engine = Engine(rec, make_store(kind, tmp_path))
    # SQLite plans concurrent calls together itself (with their reads); Redis calls meet in the engine's planner
    sharing = engine.store._planner if kind == "sqlite" else engine.planner
    before = sharing.rounds
    errors: list[BaseException] = []

    def client(c: int):
        rng = random.Random(c)
        try:
            for n in range(25):
                size = rng.choice([1, 1, 1, 3])
                engine.record([Event(f"u{rng.randrange(40)}", f"i{rng.randint(1, 40)}", float(n), f"c{c}-{n}-{j}")
                               for j in range(size)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sharing.jobs > sharing.rounds - before  # some rounds stepped several calls
    users = list(engine.store.users())
    assert len(users) == 40 and sum(len(engine.store.events(u)) for u in users) >= 16 * 25
    for user in users:
        log = engine.store.events(user)
        assert engine.state(user).n_events == len(log)
        assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(log))
    if kind == "redis":
        engine.store.clear()



def test_state_bytes_of_the_fast_tensor_path_are_the_format_s(monkeypatch, tmp_path):
    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "f.db"))
    engine.record([Event("u", "i3", 1.0, "a"), Event("u", "i5", 2.0, "b")])
    state = engine.state("u")
    fast = codec.dumps(state)
    monkeypatch.setattr(codec, "_LITTLE", False)  # numpy's own path, as on a big-endian machine
    assert codec.dumps(state) == fast and codec.dumps(codec.loads(fast)) == fast


def test_concurrent_http_calls_store_states_equal_to_replays(run_folder, tmp_path):  # noqa: F811 - fixture
    """12 clients post one-event calls over 40 users to two workers that plan up to 16 calls together."""
    import time

    from sinkrec.recommend import Recommender

    from .test_serve_http import ServerProcess, streaming

    items = Recommender.from_run(run_folder).item_ids[1:40]
    store, acked = f"sqlite:///{tmp_path / 'h.db'}", []
    server = ServerProcess(run_folder, store, args=("--workers", "2", "--max-concurrency", "16"))
    try:
        with streaming([server.url], items, acked, clients=12, users=40, size=1):
            time.sleep(1.5)
    finally:
        server.stop()
    engine = Engine.from_run(run_folder, store)
    users = list(engine.store.users())
    assert len(acked) > 50 and len(users) > 10
    for user in users:
        assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(engine.store.events(user)))
