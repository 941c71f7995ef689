"""`sinkrec diagnose`: sink mass M_t against prefix length (plain GDN vs SinkRec) and probe heat maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data import load_dataset
from ..errors import SinkrecError
from ..nn.memory import memory_head_keys
from ..training import checkpoint, runfolder
from .state_sink import histories, mean_key_probes, probe, recorded_states


def _load(path: str):
    payload = runfolder.load_model(path)  # tensors and plain data only: a crafted file runs nothing
    model, cfg = checkpoint.model_from_checkpoint(payload, str(path))
    return model.eval(), cfg, payload


@torch.no_grad()
def diagnose(main: str, baseline: str | None, users: int, length: int | None, out: Path,
             top_fraction: float = 0.1, device: str = "cpu") -> dict:
    model, cfg, _ = _load(main)
    models = [(cfg.model["name"], model)]
    if baseline:
        base_model, base_cfg, _ = _load(baseline)
        if base_cfg.data != cfg.data:
            raise SinkrecError("the two checkpoints were trained on different data; "
                               "diagnose them on the same histories")
        models.insert(0, (base_cfg.model["name"], base_model))
    memory_models = [m for _, m in models if getattr(m, "memory", None) is not None]
    if not memory_models:
        raise SinkrecError("diagnose needs a SinkRec checkpoint with memory (its RVQ codes define the prototypes)")
    sink_model = memory_models[0]
    data = load_dataset(cfg.data)
    batch = histories(data.split, length or cfg.data.max_len, users).to(device)
    codes = sink_model.to(device)(batch).codes[..., 0]
    n_codes = sink_model.memory.rvq.codes
    series, heat = {}, {}
    for name, m in models:
        states, keys = recorded_states(m.to(device), batch)
        probe_keys, probe_codes = mean_key_probes(keys, codes, n_codes)
        result = probe(states, probe_keys, probe_codes, codes, top_fraction)
        series[f"{name} (mean-key probe)"] = result.sink_mass
        heat[name] = (result.response[0].cpu().numpy(), probe_codes.cpu().numpy())
        if getattr(m, "memory", None) is not None:
            tdgd = m.blocks[0].tdgd
            if tdgd.memory_key is not None:
                table = m.memory.tables[0]
                mkeys = memory_head_keys(tdgd.memory_key, table, tdgd.gdn.n_heads)
                result = probe(states, mkeys, torch.arange(table.shape[0], device=device), codes, top_fraction)
                series[f"{name} (memory-key probe)"] = result.sink_mass
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, mass in series.items():
        tenth = max(1, len(mass) // 10)
        early, late = float(mass[:tenth].mean()), float(mass[-tenth:].mean())
        slope = float(np.polyfit(np.arange(len(mass)), mass, 1)[0] * len(mass))
        summary[name] = {"early_mean": round(early, 4), "late_mean": round(late, 4), "rise": round(late - early, 4),
                         "fitted_rise_over_T": round(slope, 4)}
    result = {"checkpoints": {"main": main, "baseline": baseline}, "users": int(batch.items.shape[0]),
              "length": int(batch.items.shape[1]), "top_fraction": top_fraction, "summary": summary,
              "sink_mass": {k: [round(float(x), 5) for x in v] for k, v in series.items()}}
    (out / "state_sink.json").write_text(json.dumps(result, indent=2))
    pngs = _plot(series, heat, codes[0].cpu().numpy(), out)
    # what was really written, and why plots are missing: the CLI reports exactly this
    result["written"] = [str(out / "state_sink.json"), *map(str, pngs)]
    result["skipped"] = None if pngs else PLOTS_MISSING
    return result


PLOTS_MISSING = "plots skipped: matplotlib is not installed (pip install 'sinkrec[plots]')"


def _plot(series: dict, heat: dict, codes_user0: np.ndarray, out: Path) -> list[Path]:
    """The PNGs written: none when matplotlib (the `plots` extra) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, mass in series.items():
        ax.plot(np.arange(1, len(mass) + 1), mass, label=name)
    ax.set_xlabel("prefix length t")
    ax.set_ylabel("sink mass $M_t$")
    ax.set_title("Semantic state sink")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sink_mass.png", dpi=120)
    plt.close(fig)
    fig, axes = plt.subplots(len(heat), 1, figsize=(9, 3 * len(heat)), squeeze=False)
    counts = np.bincount(codes_user0)
    for ax, (name, (response, probe_codes)) in zip(axes[:, 0], heat.items()):
        order = np.argsort(-counts[probe_codes] if len(counts) > probe_codes.max() else -np.zeros(len(probe_codes)))
        rows = order[:32]
        ax.imshow(response[:, rows].T, aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_title(f"{name}: state-probe response r[t, j] (user 0; 32 most frequent prototypes)")
        ax.set_xlabel("t")
        ax.set_ylabel("prototype (by frequency)")
    fig.tight_layout()
    fig.savefig(out / "probe_heatmap.png", dpi=120)
    plt.close(fig)
    return [out / "sink_mass.png", out / "probe_heatmap.png"]
