"""SinkRec's one-event step for B users at once, inline and batch-invariant (row_ops.py says how): row b is
bit for bit user b's step alone, so concurrent requests share one step and replays stay exact.

`SinkRec.encode_step` runs the sequence code (banded window attention in blocks, the chunk-ready
delta-rule dispatcher, RVQ with its training branches) on a sequence of length one; at one event
per call its overhead is most of the cost. This step does one position directly:

- memory: the local pattern of the last `pattern_len` embeddings, RVQ codes by nearest codeword
  level by level, the memory vector Σ_l M^l[c^l] (+ the straight-through projection), nulled when
  the level-0 code does not recur;
- per (block, loop): reinjection gate, the window attention as one query over the cached last w−1
  positions and itself (plus the memory slots, prototypes and null slot), TDGD as one delta-rule
  update with its temporal, coverage and differential-readout terms, SwiGLU;
- each cache is updated exactly as `encode_step` updates it (same structure, same shapes), so a
  state written by either can be continued by the other.

What depends only on the weights (prototype slots, which codes recur, the projections sharing an
input merged into one matrix) is computed once, when the step is built: a `SinkRecStep` belongs to
one model whose weights no longer change (serving). It equals `encode_step` up to summation order
(the tests hold it to 1e-12 in float64 on random weights).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..nn.memory_attention import WindowCache
from .row_ops import DeltaRows, Dense, SwiGLURows, lanes, linear, own, rms


def supports(model) -> bool:
    """SinkRec in eval mode with float32 or float64 weights."""
    return (type(model).__name__ == "SinkRec" and not model.training
            and model.item_embedding.weight.dtype in (torch.float32, torch.float64))


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Softmax attention of one query per row: q [B, H, dh] over keys/values [B, n, H, dh] where valid [B, n].
    Products as elementwise sums (row_ops.py: a batched matmul of per-row matrices is not batch-invariant)."""
    scores = ((q * q.shape[-1] ** -0.5)[:, None] * keys).sum(-1).transpose(1, 2)  # [B, H, n]
    weights = torch.softmax(scores.masked_fill(~valid[:, None, :], float("-inf")), -1)
    return (weights.transpose(1, 2)[..., None] * values).sum(1)  # [B, H, dh]


class _Block:
    """One SinkBlock's weights, rearranged for a single position."""

    def __init__(self, block, o, fixed: dict):
        self.block, tdgd, attn = block, block.tdgd, block.attn
        readout = tdgd.memory_key is not None and tdgd.options.diff_readout
        self.mixer = DeltaRows(tdgd.gdn, extra=(tdgd.readout_gate,) if readout else ())
        self.ffn = SwiGLURows(block.ffn)
        if attn is not None:
            self.qkv, self.out = Dense(attn.qkv), Dense(attn.out)
        # Everything projected from the memory vector alone, in one product: reinjection key and value,
        # the attention's memory key/value pair, TDGD's memory keys.
        m_layers, self.m_names = [], []
        if block.reinject is not None:
            m_layers += [block.reinject.key, block.reinject.value]
            self.m_names += ["rkey", "rvalue"]
        if attn is not None and attn.memory_kv is not None:
            m_layers.append(attn.memory_kv)
            self.m_names.append("kv")
        if tdgd.memory_key is not None:
            m_layers.append(tdgd.memory_key)
            self.m_names.append("tkey")
        self.m_proj = Dense(*m_layers) if m_layers else None
        # Prototype slots and the null slot: fixed once the weights are.
        self.fixed_keys = self.fixed_values = self.fixed_mask = None
        if attn is not None and attn.uses_memory:
            h, dh = attn.n_heads, attn.head_dim
            keys, values, masks = [], [], []
            if attn.prototype_kv is not None and o.prototype_levels > 0:
                pk, pv = F.linear(fixed["prototypes"], attn.prototype_kv.weight, attn.prototype_kv.bias).chunk(2, -1)
                keys.append(pk.view(-1, h, dh))
                values.append(pv.view(-1, h, dh))
                masks.append(fixed["proto_valid"])
            keys.append(attn.qkv.weight.new_zeros(1, h, dh))
            values.append(attn.qkv.weight.new_zeros(1, h, dh))
            masks.append(torch.ones(1, dtype=torch.bool))
            self.fixed_keys, self.fixed_values = torch.cat(keys), torch.cat(values)
            self.fixed_mask = torch.cat(masks)
        self.scale_d = o.d_model ** 0.5


class SinkRecStep:
    """`rows(caches, items, whens)`: one event for each of B users (their SinkRecCaches updated in place),
    hidden outputs [B, d]; `step(cache, item, when)`: the same for one user, hidden [1, 1, d]."""

    def __init__(self, model):
        self.model, o = model, model.options
        self.o = o
        self.scale = model.d_model ** 0.5 if o.embed_scale else None
        mem = model.memory
        self.memory = mem
        with torch.inference_mode():
            if mem is not None:
                self.pattern = Dense(mem.pattern)
                self.books = [mem.rvq.codebooks[level] for level in range(mem.rvq.levels)]
                self.books_t = [b.t() for b in self.books]
                self.book_sq = [b.pow(2).sum(-1)[None] for b in self.books]
                self.recurs0 = mem.rvq.recurring(mem.recur_share)[0]
                self.from_quantized = Dense(mem.from_quantized) if mem.from_quantized is not None else None
            fixed = {}
            if mem is not None and o.prototype_levels > 0:
                fixed = {"prototypes": mem.prototypes(o.prototype_levels),
                         "proto_valid": mem.prototype_mask(o.prototype_levels)}
            self.blocks = [_Block(block, o, fixed) for block in model.blocks]

    def __call__(self, cache, item: int, when: float | None) -> torch.Tensor:
        return self.rows([cache], [item], None if when is None else [when])[:, None]

    # ---- the memory read for this event ---------------------------------------------------------
    def _memory(self, emb: torch.Tensor, caches: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(memory vectors [B, d], recurs [B], the pattern windows [B, n, d]) of the patterns ending at `emb`."""
        mem, (rows, d) = self.memory, emb.shape
        n = mem.pattern_len
        zero = emb.new_zeros(1, n - 1, d)
        tails = [c.emb_tail.to(emb.dtype) if c.emb_tail is not None else zero for c in caches]
        window = torch.cat([tails[0] if rows == 1 else torch.cat(tails, 0), emb[:, None]], 1)  # [B, n, d]
        x = self.pattern(window.reshape(rows, n * d))  # [B, dc]
        residual, quantized, codes = x, torch.zeros_like(x), []
        for book, book_t, sq in zip(self.books, self.books_t, self.book_sq):
            c = (residual.pow(2).sum(-1, keepdim=True) - 2 * linear(residual, book_t) + sq).argmin(-1)
            chosen = book[c]
            codes.append(c)
            quantized = quantized + chosen
            residual = residual - chosen
        memory = mem.tables[0][codes[0]]
        for level in range(1, len(codes)):
            memory = memory + mem.tables[level][codes[level]]
        if self.from_quantized is not None:
            memory = memory + self.from_quantized(x + (quantized - x))
        recurs = self.recurs0[codes[0]].to(memory.dtype)
        return memory * recurs[:, None], recurs, window

    def _gaps(self, caches: list, whens: list[float] | None, dtype) -> torch.Tensor:
        """δ [B, 1]: log1p of the gap since the user's previous event in time units (0 for a first event)."""
        if whens is None:  # one unit per step, as the model does without times
            return torch.tensor([[math.log1p(1.0) if c.steps > 0 else 0.0] for c in caches]).to(dtype)
        now = torch.tensor(whens, dtype=torch.float64)
        before = torch.cat([c.last_time.to(torch.float64) if c.steps > 0 and c.last_time is not None
                            else now[r:r + 1] for r, c in enumerate(caches)])
        gap = ((now - before).clamp_min(0) / self.o.time_unit)[:, None]
        return lanes(torch.log1p, gap).float().to(dtype)

    # ---- one block ------------------------------------------------------------------------------
    @staticmethod
    def _attend(attn, b: _Block, x: torch.Tensor, mem: dict, recurs, slots: list[dict]) -> torch.Tensor:
        """Window attention of one query over the last w−1 cached positions and itself (+ memory slots)."""
        rows, w, h, dh = x.shape[0], attn.window, attn.n_heads, attn.head_dim
        q, k, v = b.qkv(x).view(rows, 3, h, dh).unbind(1)
        use_kv = "kv" in mem
        current = [k, v] + (list(mem["kv"]) if use_kv else [])
        no = torch.zeros(1, w, dtype=torch.bool)
        caches = [s.get("attn") for s in slots]

        def gather(get, blank):
            """The users' cached tensors stacked by row, `blank` for a user without one yet."""
            parts = [get(c) if c is not None and get(c) is not None else blank for c in caches]
            return parts[0] if rows == 1 else torch.cat(parts, 0)

        past = [gather(lambda c, i=i: c.tensors[i], z.new_zeros(1, w, h, dh)).to(z.dtype)
                for i, z in enumerate(current)]
        window = [torch.cat([p[:, 1:], z[:, None]], 1) for p, z in zip(past, current)]  # [B, w, H, dh]
        valid = torch.cat([gather(lambda c: c.valid, no)[:, 1:], torch.ones(rows, 1, dtype=torch.bool)], 1)
        y = attend(q, window[0], window[1], valid)
        memory_valid = None
        if b.fixed_keys is not None:
            fixed = [t.to(q.dtype).expand(rows, *t.shape) for t in (b.fixed_keys, b.fixed_values)]
            keys, values, masks = [fixed[0]], [fixed[1]], [b.fixed_mask.expand(rows, -1)]
            if use_kv:
                memory_valid = torch.cat([gather(lambda c: c.memory_valid, no)[:, 1:], (recurs > 0)[:, None]], 1)
                keys, values, masks = [window[2]] + keys, [window[3]] + values, [memory_valid] + masks
            y = y + attend(q, torch.cat(keys, 1), torch.cat(values, 1), torch.cat(masks, 1))
        for r, s in enumerate(slots):
            mine = own(rows, r)
            s["attn"] = WindowCache(tensors=[mine(t) for t in window], valid=mine(valid),
                                    memory_valid=mine(memory_valid) if memory_valid is not None else None)
        return b.out(y.reshape(rows, h * dh))

    @staticmethod
    def _tdgd(tdgd, b: _Block, x: torch.Tensor, delta: torch.Tensor | None, mem: dict, recurs, caches) -> torch.Tensor:
        """TDGD on one position: the gated delta rule's one-token update with its modified inputs."""
        opts, mixer = tdgd.options, b.mixer
        q, k, v, pre, beta_in, gate, *extra = mixer.project(x, caches)
        if tdgd.time_weight is not None:
            pre = pre + tdgd.time_weight * delta
        g, beta = mixer.decay(pre), lanes(torch.sigmoid, beta_in)
        if "tkey" in mem:
            km = F.normalize(mem["tkey"].view(x.shape[0], mixer.heads, mixer.dk), dim=-1)
            if opts.write_suppression:
                cov = lanes(torch.sigmoid, tdgd.kappa * (k * km).sum(-1) + tdgd.coverage_bias)
                if tdgd.coverage_gain is not None:
                    cov = torch.tanh(tdgd.coverage_gain) * cov
                cov = cov * recurs[:, None]
                beta = beta * (1 - cov)
                if opts.decay_suppression:
                    g = g * (1 - cov)
            if opts.diff_readout:
                lam = opts.lambda_max * lanes(torch.sigmoid if opts.readout_form == "sigmoid" else torch.tanh,
                                              extra[0])
                q = q - lam[..., None] * km
        return mixer.output(mixer.recur(caches, q, k, v, g, beta), gate)

    # ---- the whole step -------------------------------------------------------------------------
    @torch.inference_mode()
    def rows(self, caches: list, items: list[int], whens: list[float] | None = None) -> torch.Tensor:
        model, o, rows = self.model, self.o, len(caches)
        emb = model.item_embedding.weight[torch.tensor(items)]  # [B, d]
        if self.scale is not None:
            emb = emb * self.scale
        memory = recurs = window = None
        if self.memory is not None:
            memory, recurs, window = self._memory(emb, caches)
        delta = self._gaps(caches, whens, emb.dtype) if o.temporal else None
        x, slot = emb, 0
        for b in self.blocks:
            block, mem = b.block, {}
            if memory is not None and b.m_proj is not None:
                mem = dict(zip(b.m_names, b.m_proj.split(memory)))
                if "rkey" in mem:
                    mem["rkey"] = rms(mem["rkey"], block.reinject.k_norm)
                if "kv" in mem:
                    attn = block.attn
                    mem["kv"] = mem["kv"].view(rows, 2, attn.n_heads, attn.head_dim).unbind(1)
            for _ in range(o.loops):
                slots = [c.blocks[slot] for c in caches]
                if "rkey" in mem:
                    gate = lanes(torch.sigmoid, (rms(x, block.reinject.h_norm) * mem["rkey"]).sum(-1, keepdim=True)
                                 / b.scale_d)
                    x = x + gate * mem["rvalue"]
                if block.attn is not None:
                    x = x + self._attend(block.attn, b, rms(x, block.attn_norm), mem, recurs, slots)
                x = x + self._tdgd(block.tdgd, b, rms(x, block.tdgd_norm), delta, mem, recurs,
                                   [s["tdgd"] for s in slots])
                x = x + b.ffn(rms(x, block.ffn_norm))
                slot += 1
        keep = o.pattern_len - 1 if self.memory is not None else 0
        for r, cache in enumerate(caches):
            mine = own(rows, r)
            if keep > 0:
                cache.emb_tail = mine(window[:, 1:])
            if whens is not None:
                cache.last_time = torch.tensor(whens[r:r + 1], dtype=torch.float64)
            cache.steps += 1
        return rms(x, model.norm)
