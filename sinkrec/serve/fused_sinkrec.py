"""A cheaper single-event step for SinkRec: the same math as `encode_step` on one item, inline.

`SinkRec.encode_step` runs the sequence code (banded window attention in blocks, the chunk-ready
delta-rule dispatcher, RVQ with its training branches) on a sequence of length one; at one event
per call its overhead is most of the cost. This step does one position directly:

- memory: the local pattern of the last `pattern_len` embeddings, RVQ codes by nearest codeword
  level by level, the memory vector Σ_l M^l[c^l] (+ the straight-through projection), nulled when
  the level-0 code does not recur;
- per (block, loop): reinjection gate, the window attention as one query over the cached last w−1
  positions and itself (plus the memory slots, prototypes and null slot), TDGD as one delta-rule
  update with its temporal, coverage and differential-readout terms, SwiGLU;
- the cache is updated exactly as `encode_step` updates it (same structure, same shapes), so a
  state written by either can be continued by the other.

What depends only on the weights (prototype slots, which codes recur, codeword norms, the
projections sharing an input merged into one matrix) is computed once, when the step is built: a
`SinkRecStep` belongs to one model whose weights no longer change (serving). It equals `encode_step`
up to summation order (the tests hold it to 1e-12 in float64 on random weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.sinkrec import time_gaps
from ..nn.memory_attention import WindowCache
from .fused import DeltaStep, merge_linear, rms


def supports(model) -> bool:
    """SinkRec in eval mode with float32 or float64 weights."""
    return (type(model).__name__ == "SinkRec" and not model.training
            and model.item_embedding.weight.dtype in (torch.float32, torch.float64))


class _Block:
    """One SinkBlock's weights, rearranged for a single position."""

    def __init__(self, block, o, fixed: dict):
        self.block, tdgd = block, block.tdgd
        readout = tdgd.memory_key is not None and tdgd.options.diff_readout
        self.mixer = DeltaStep(tdgd.gdn, extra=(tdgd.readout_gate,) if readout else ())
        # Everything projected from the memory vector alone, in one matmul: reinjection key and value,
        # the attention's memory key/value pair, TDGD's memory keys.
        m_layers, self.m_names = [], []
        if block.reinject is not None:
            m_layers += [block.reinject.key, block.reinject.value]
            self.m_names += ["rkey", "rvalue"]
        attn = block.attn
        if attn is not None and attn.memory_kv is not None:
            m_layers.append(attn.memory_kv)
            self.m_names.append("kv")
        if tdgd.memory_key is not None:
            m_layers.append(tdgd.memory_key)
            self.m_names.append("tkey")
        self.m_proj = merge_linear(m_layers) if m_layers else None
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
    """`step(cache, item, when)`: one event for one user; updates its SinkRecCache in place, returns hidden
    [1, 1, d]."""

    def __init__(self, model):
        self.model, o = model, model.options
        self.o = o
        self.scale = model.d_model ** 0.5 if o.embed_scale else None
        self._one = torch.ones(1, 1, dtype=torch.long)  # an item tensor for time_gaps (only its shape is read)
        mem = model.memory
        self.memory = mem
        with torch.inference_mode():
            if mem is not None:
                n, d = mem.pattern_len, model.d_model
                w = mem.pattern.weight
                self.pattern_weight = w.view(w.shape[0], n, d).transpose(0, 1).reshape(n * w.shape[0], d)
                self.books = [mem.rvq.codebooks[level] for level in range(mem.rvq.levels)]
                self.book_sq = [b.pow(2).sum(-1)[None] for b in self.books]
                self.recurs0 = mem.rvq.recurring(mem.recur_share)[0]
                self.tables = mem.tables.reshape(-1, mem.tables.shape[-1])
            fixed = {}
            if mem is not None and o.prototype_levels > 0:
                fixed = {"prototypes": mem.prototypes(o.prototype_levels),
                         "proto_valid": mem.prototype_mask(o.prototype_levels)}
            self.blocks = [_Block(block, o, fixed) for block in model.blocks]

    # ---- the memory read for this event ---------------------------------------------------------
    def _memory(self, emb: torch.Tensor, tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory vector [1, d], recurs [1]) of the pattern ending at `emb` [1, d]."""
        mem = self.memory
        n = mem.pattern_len
        full = emb if n == 1 else torch.cat([tail[0].to(emb.dtype) if tail is not None
                                             else emb.new_zeros(n - 1, emb.shape[-1]), emb])  # [n, d]
        per = F.linear(full, self.pattern_weight).view(n, n, -1)
        p = mem.pattern.bias + per[0, 0]
        for i in range(1, n):
            p = p + per[i, i]
        x = p[None]  # [1, dc]
        residual, quantized, codes = x, torch.zeros_like(x), []
        for book, sq in zip(self.books, self.book_sq):
            c = (residual.pow(2).sum(-1, keepdim=True) - 2 * residual @ book.t() + sq).argmin(-1)
            chosen = book[c]
            codes.append(c)
            quantized = quantized + chosen
            residual = residual - chosen
        codes = torch.stack(codes, -1)  # [1, L]
        memory = F.embedding_bag(codes + mem.level_offsets, self.tables, mode="sum")
        if mem.from_quantized is not None:
            memory = memory + F.linear(x + (quantized - x), mem.from_quantized.weight)
        recurs = self.recurs0[codes[:, 0]].to(memory.dtype)
        return memory * recurs[:, None], recurs

    # ---- one block ------------------------------------------------------------------------------
    @staticmethod
    def _attend(attn, b: _Block, x: torch.Tensor, mem: dict, recurs, c: dict) -> torch.Tensor:
        """Window attention of one query over the last w−1 cached positions and itself (+ memory slots)."""
        w, h, dh = attn.window, attn.n_heads, attn.head_dim
        q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).view(3, 1, h, dh)
        cache = c.get("attn")
        use_kv = "kv" in mem
        current = [k, v] + ([mem["kv"][0], mem["kv"][1]] if use_kv else [])
        if cache is None:
            past = [z.new_zeros(1, w, h, dh) for z in current]
            valid, mvalid = torch.zeros(1, w, dtype=torch.bool), torch.zeros(1, w, dtype=torch.bool)
        else:
            past, valid = cache.tensors, cache.valid
            mvalid = cache.memory_valid if cache.memory_valid is not None else torch.zeros(1, w, dtype=torch.bool)
        window = [torch.cat([p[:, 1:].to(z.dtype), z[:, None]], 1) for p, z in zip(past, current)]  # [1, w, H, dh]
        now = torch.ones(1, 1, dtype=torch.bool)
        valid = torch.cat([valid[:, 1:], now], 1)
        qh = q.view(1, h, 1, dh)
        y = F.scaled_dot_product_attention(qh, window[0].transpose(1, 2), window[1].transpose(1, 2),
                                           attn_mask=valid.view(1, 1, 1, w))
        memory_valid = None
        if b.fixed_keys is not None:
            keys, values, masks = [], [], []
            if use_kv:
                memory_valid = torch.cat([mvalid[:, 1:], (recurs > 0).view(1, 1)], 1)
                keys.append(window[2][0])
                values.append(window[3][0])
                masks.append(memory_valid[0])
            keys.append(b.fixed_keys.to(q.dtype))
            values.append(b.fixed_values.to(q.dtype))
            masks.append(b.fixed_mask)
            y = y + F.scaled_dot_product_attention(qh, torch.cat(keys).transpose(0, 1)[None],
                                                   torch.cat(values).transpose(0, 1)[None],
                                                   attn_mask=torch.cat(masks).view(1, 1, 1, -1))
        c["attn"] = WindowCache(tensors=window, valid=valid, memory_valid=memory_valid)
        return F.linear(y.reshape(1, h * dh), attn.out.weight, attn.out.bias)

    @staticmethod
    def _tdgd(tdgd, b: _Block, x: torch.Tensor, delta: torch.Tensor | None, mem: dict, recurs, cache) -> torch.Tensor:
        """TDGD on one position: the gated delta rule's one-token update with its modified inputs."""
        opts, mixer = tdgd.options, b.mixer
        q, k, v, pre, beta_in, gate, *extra = mixer.project(x, cache)
        if tdgd.time_weight is not None:
            pre = pre + tdgd.time_weight * delta
        g, beta = mixer.decay(pre), torch.sigmoid(beta_in)
        if "tkey" in mem:
            km = F.normalize(mem["tkey"].view(1, mixer.heads, mixer.dk), dim=-1)
            if opts.write_suppression:
                cov = torch.sigmoid(tdgd.kappa * (k * km).sum(-1) + tdgd.coverage_bias)
                if tdgd.coverage_gain is not None:
                    cov = torch.tanh(tdgd.coverage_gain) * cov
                cov = cov * recurs[:, None]
                beta = beta * (1 - cov)
                if opts.decay_suppression:
                    g = g * (1 - cov)
            if opts.diff_readout:
                z = extra[0]
                lam = opts.lambda_max * (torch.sigmoid(z) if opts.readout_form == "sigmoid" else torch.tanh(z))
                q = q - lam[..., None] * km
        return mixer.output(mixer.recur(cache, q, k, v, g, beta), gate)

    # ---- the whole step -------------------------------------------------------------------------
    @torch.inference_mode()
    def __call__(self, cache, item: int, when: float | None) -> torch.Tensor:
        model, o = self.model, self.o
        emb = model.item_embedding.weight[item][None]  # [1, d]
        if self.scale is not None:
            emb = emb * self.scale
        memory = recurs = None
        if self.memory is not None:
            memory, recurs = self._memory(emb, cache.emb_tail)
        times = torch.tensor([[when]], dtype=torch.float64) if when is not None else None
        delta = None
        if o.temporal:  # the model's own gap feature (float32 whatever the weights' dtype)
            previous = None
            if cache.steps > 0:
                previous = cache.last_time if times is not None else torch.zeros(1)
            delta = time_gaps(times, self._one, o.time_unit, previous).to(emb.dtype)  # [1, 1]
        x, slot = emb, 0
        for b in self.blocks:
            block = b.block
            mem = {}
            if memory is not None and b.m_proj is not None:
                weight, bias, sizes = b.m_proj
                for name, part in zip(b.m_names, F.linear(memory, weight, bias).split(sizes, -1)):
                    mem[name] = part
                if "rkey" in mem:
                    mem["rkey"] = rms(mem["rkey"], block.reinject.k_norm)
                if "kv" in mem:
                    attn = block.attn
                    mem["kv"] = mem["kv"].view(2, 1, attn.n_heads, attn.head_dim)
            for _ in range(o.loops):
                c = cache.blocks[slot]
                if "rkey" in mem:
                    gate = torch.sigmoid((rms(x, block.reinject.h_norm) * mem["rkey"]).sum(-1, keepdim=True)
                                         / b.scale_d)
                    x = x + gate * mem["rvalue"]
                if block.attn is not None:
                    x = x + self._attend(block.attn, b, rms(x, block.attn_norm), mem, recurs, c)
                x = x + self._tdgd(block.tdgd, b, rms(x, block.tdgd_norm), delta, mem, recurs, c["tdgd"])
                gate, up = F.linear(rms(x, block.ffn_norm), block.ffn.gate_up.weight).chunk(2, -1)
                x = x + F.linear(F.silu(gate) * up, block.ffn.down.weight)
                slot += 1
        n = o.pattern_len - 1
        if n > 0 and self.memory is not None:
            tail = emb[None] if cache.emb_tail is None else torch.cat([cache.emb_tail.to(emb.dtype), emb[None]], 1)
            cache.emb_tail = tail[:, -n:] if tail.shape[1] >= n else torch.cat(
                [tail.new_zeros(1, n - tail.shape[1], tail.shape[2]), tail], 1)
        if times is not None:
            cache.last_time = times[:, -1]
        cache.steps += 1
        return rms(x, model.norm)[:, None]
