"""SinkRec's page and its paper preset, held to the code and to the values the shared spec states."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import torch
import yaml

from sinkrec.batch import Batch
from sinkrec.describe import format_default
from sinkrec.experiment import load_config, make_config
from sinkrec.models import build_model
from sinkrec.models.sinkrec import SinkRecConfig
from sinkrec.nn.tdgd import TDGD, TDGDOptions

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "models" / "sinkrec.md"
PRESET = "ml-1m-sinkrec-paper"

# Every model value the spec states (spec/sinkrec.md, section in the comment). The preset must set exactly
# these keys to exactly these values; the page's options table must show the same.
SPEC = {
    "pattern_len": 3,  # §3.2.1 n = 3
    "rvq_levels": 3,  # §3.2.2 L = 3 levels
    "rvq_codes": 256,  # §3.2.2 K = 256 codes per level
    "rvq_mode": "ema",  # §3.2.2 EMA codebooks with dead-code restart (default)
    "kmeans_init": True,  # §3.2.2 k-means init from the first batch
    "commitment": 0.25,  # §3.2.2 β_c = 0.25
    "pattern_detach": False,  # §3.2.2 straight-through: the gradient reaches p_t and the embeddings
    "recur_share": 0,  # §3.2.3 m_t = Σ_l M^l[c^l_t] at every position
    "quantized_to_memory": False,  # §3.2.3 m_t is the sum of the tables, nothing else
    "use_memory": True,  # §3.5 the full model
    "reinject": True,  # §3.2.4
    "embed_scale": False,  # §3.1 h⁰_t = E[x_t]
    "use_attention": True,  # §3.3
    "window": 64,  # §3.3 w = 64
    "attn_memory_kv": True,  # §3.3 (k^m_s, v^m_s) of the window positions
    "prototype_levels": 3,  # §3.3 P slots: the codebook prototypes (every code of every level, §3.2.5)
    "temporal": True,  # §3.4.1
    "write_suppression": True,  # §3.4.3 β' = β(1 − c)
    "decay_suppression": True,  # §3.4.3 "optionally" log α' = (1 − c) log α: the full model has it
    "coverage_gain": False,  # §3.4.2 c = σ(κ·cos + b_c)
    "diff_readout": True,  # §3.4.4
    "readout_form": "sigmoid",  # §3.4.4 λ = λ_max σ(w_λᵀ h)
    "conv_size": 4,  # §3.4.5 short causal conv of width 4
    "loops": 2,  # §3.5 R = 2
}
TRAIN_SPEC = {"loss": "ce"}  # §3.5 next-item CE, full softmax


def page_table(heading: str) -> list[list[str]]:
    """Rows (cells) of the first table after `heading` on the SinkRec page."""
    text = PAGE.read_text(encoding="utf-8").split(heading, 1)[1]
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif rows:
            break
    return rows[2:]


def test_paper_preset_sets_exactly_the_spec_values():
    cfg = load_config(PRESET)
    raw = yaml.safe_load((ROOT / "sinkrec" / "configs" / f"{PRESET}.yaml").read_text())
    assert set(raw["model"]) - {"name"} == set(SPEC)  # nothing the spec leaves open
    assert {k: cfg.model[k] for k in SPEC} == SPEC
    assert {k: getattr(cfg.train, k) for k in TRAIN_SPEC} == TRAIN_SPEC
    assert cfg.model["coverage_bias"] < 0  # §3.4.2: b_c initialised negative, so coverage starts small


def test_page_options_table_matches_the_spec_table():
    rows = page_table("## Options")
    shown = {r[0].strip("`"): r[2].strip("`") for r in rows if r[2]}
    assert shown == {k: format_default(v) for k, v in SPEC.items()}
    defaults = {r[0].strip("`"): r[1].strip("`") for r in rows}
    fields = SinkRecConfig()
    assert defaults == {k: format_default(getattr(fields, k)) for k in defaults}
    assert set(defaults) == set(vars(fields))


def test_every_departure_from_the_spec_is_documented_with_its_reason():
    """Each spec value the default differs from is a row of the departures table naming the key, the preset
    value and either a results file that measured it or "not measured"."""
    rows = page_table("## Where we depart from the spec")
    default = SinkRecConfig()
    for key, value in SPEC.items():
        if getattr(default, key) == value:
            continue
        row = next((r for r in rows if f"`{key}:" in r[1] or f"`{key}`" in r[1]), None)
        assert row is not None, f"{key}: default {getattr(default, key)!r}, spec {value!r}, not in the table"
        assert format_default(value) in row[2], (key, row[2])
    for row in rows:
        why = row[3]
        cited = re.findall(r"benchmarks/results/[\w.-]+\.json", why)
        assert "not measured" in why.lower() or cited, row
        assert all((ROOT / path).is_file() for path in cited), cited


def test_page_names_real_options_modules_and_defaults():
    text = PAGE.read_text(encoding="utf-8")
    fields = set(vars(SinkRecConfig()))
    objects = {}
    for token in re.findall(r"`([^`\n]+)`", text):
        if token.startswith("sinkrec.") and " " not in token:  # a module, class or function of the package
            module, _, name = token.rpartition(".")
            try:
                obj = getattr(importlib.import_module(module), name)
            except ModuleNotFoundError:
                obj = importlib.import_module(token)
            objects[name] = obj
        key, colon, value = token.partition(": ")
        if re.fullmatch(r"[a-z][a-z0-9_]*", key) and ("_" in key or key in fields) and key not in ("model.name",):
            assert key in fields, f"`{token}` on the page is not a SinkRec option"
            if colon:
                make_config({"model": {"name": "sinkrec", key: yaml.safe_load(value)}})
    for cls, attr in re.findall(r"`([A-Z]\w*)\.(\w+)`", text):
        assert hasattr(objects[cls], attr), f"{cls}.{attr}"
    for key, value in re.findall(r"`(\w+)`,? default:? `?([\w.+-]+)", text):
        assert format_default(getattr(SinkRecConfig(), key)) == value, key


def tdgd(**options) -> TDGD:
    torch.manual_seed(0)
    layer = TDGD(8, n_heads=2, options=TDGDOptions(**options), use_memory=True).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return layer


@pytest.mark.parametrize("gain", [True, False])
def test_coverage_forms_float64(gain):
    layer = tdgd(coverage_gain=gain)
    k = torch.nn.functional.normalize(torch.randn(2, 5, 2, 4, dtype=torch.float64), dim=-1)
    km = torch.nn.functional.normalize(torch.randn(2, 5, 2, 4, dtype=torch.float64), dim=-1)
    cos = (k * km).sum(-1)
    expected = torch.sigmoid(layer.kappa * cos + layer.coverage_bias)
    if gain:
        expected = torch.tanh(layer.coverage_gain) * expected
    else:
        assert layer.coverage_gain is None
    assert torch.allclose(layer.coverage(k, km, torch.float64), expected, atol=1e-14)


@pytest.mark.parametrize("form", ["tanh", "sigmoid"])
def test_readout_forms_float64(form):
    layer = tdgd(readout_form=form, lambda_max=0.7)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    z = x @ layer.readout_gate.weight.t()
    expected = 0.7 * (torch.sigmoid(z) if form == "sigmoid" else torch.tanh(z))
    assert torch.allclose(layer.readout_lambda(x), expected, atol=1e-14)


def test_paper_preset_builds_and_runs_float64():
    cfg = load_config(PRESET)
    torch.manual_seed(0)
    model = build_model(cfg.model, 40, 50).double()
    gen = torch.Generator().manual_seed(1)
    items = torch.randint(1, 41, (4, 12), generator=gen)
    batch = Batch(items=items, lengths=torch.full((4,), 12),
                  timestamps=torch.cumsum(torch.rand(4, 12, generator=gen, dtype=torch.float64) * 1e4, 1))
    model.train()
    encoded = model(batch)
    assert torch.isfinite(encoded.hidden).all() and encoded.losses["vq"] > 0
    assert encoded.codes.shape == (4, 12, 3)
    model.eval()
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model.encode(batch)
    assert torch.equal(seen[0], model.item_embedding(items))  # h⁰ = E[x] (first of the 2 loops), no √d
    assert model.memory.from_quantized is None and model.memory.rvq.codes == 256
    assert model.memory.prototypes(3).shape == (3 * 256, 64)
    assert model.blocks[0].tdgd.coverage_gain is None


def test_spec_forms_stream_like_the_full_forward_float64():
    """The spec's switches, on a small model: one event at a time gives the full forward's outputs."""
    spec_forms = {k: SPEC[k] for k in ("coverage_gain", "readout_form", "embed_scale", "recur_share",
                                       "quantized_to_memory", "pattern_detach")}
    small = {"name": "sinkrec", "d_model": 16, "rvq_codes": 8, "window": 4, "code_dim": 8, "prototype_levels": 2}
    torch.manual_seed(0)
    model = build_model({**small, **spec_forms}, 40, 50).double()
    gen = torch.Generator().manual_seed(2)
    items = torch.randint(1, 41, (2, 15), generator=gen)
    times = torch.cumsum(torch.rand(2, 15, generator=gen, dtype=torch.float64) * 1e4, 1)
    model.train()
    model.encode(Batch(items=items, lengths=torch.full((2,), 15), timestamps=times))  # k-means init
    model.eval()
    full = model.encode(Batch(items=items, lengths=torch.full((2,), 15), timestamps=times)).hidden
    cache = model.new_cache()
    steps = [model.encode_step(items[:, :5], cache, times[:, :5])]
    steps += [model.encode_step(items[:, t:t + 1], cache, times[:, t:t + 1]) for t in range(5, 15)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-10)
