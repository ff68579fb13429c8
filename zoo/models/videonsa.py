"""VideoNSA: Qwen2.5-VL with native sparse attention for video tokens (Song et al., arXiv:2510.02295).

The released model (``Enxin/VideoNSA``) replaces every LLM self-attention of Qwen2.5-VL-7B by a mix of NSA (video
tokens) and dense causal attention (text tokens). This file holds, top to bottom:

- the released attention function, exactly as the authors' code computes it (:func:`released_nsa`,
  :class:`VideoNSAAttention` with ``mode="released"``): token typing from the three M-RoPE ids, NSA with Q/K/V zeroed
  at text rows plus dense causal attention with Q zeroed at vision rows (both added: the uniform-average terms the
  zero queries produce are part of the trained function), sigmoid gates (temperature 0.3) multiplied by the vision
  mask before the sigmoid, the 28 -> 64 head duplication with KV head ``h // 16``, the non-causal compression mask, and
  the top-k as fla 0.3.1's Triton kernel computes it (compression LSE read in another memory layout, the current
  block not always kept, ``block_counts`` rounded up to a power of two, bitonic tie order); ``selection="ms-swift"``
  reproduces the training copy, whose top-k reads the queries of other (head, token) pairs;
- a clean routing (``mode="clean"``): vision rows -> :func:`zoo.kernels.nsa.nsa` (any GQA ratio, no padding),
  text rows -> dense causal attention. A different function, for new models; not for the released weights;
- the registry entry ``videonsa_qwen2_5_vl_7b`` (the full VLM on Hugging Face transformers' Qwen2.5-VL, built in
  ``zoo/models/_videonsa_hf.py`` because transformers is an optional extra: ``pip install zoo[videonsa]``).

Layouts: q (B, H, L, D), k / v (B, Hkv, L, D) unless stated; block indices (B, L, Hkv, S) int32 as fla stores them.
Everything runs on ``zoo.kernels.attention`` (compressed, window and dense branches) plus two small per-token ops
(the released top-k and per-token block selection) with a PyTorch path and a Triton path (``zoo/models/_videonsa_triton``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.kernels.attention import Causal, SlidingWindow, Varlen, attention
from zoo.registry import register_model

__all__ = [
    "TinyVideoVLM",
    "VideoNSAAttention",
    "VideoNSADecoderLayer",
    "load_released",
    "apply_rotary",
    "mrope_cos_sin",
    "mean_pool_blocks",
    "released_nsa",
    "released_topk",
    "selected_attention",
    "vision_token_mask",
    "videonsa_qwen2_5_vl_7b",
]

GATE_TEMPERATURE = 0.3
_STAGE_TIMER = None  # set by benchmarks/videonsa.py: a callable name -> context manager timing that stage


def _stage(name: str):
    import contextlib

    return _STAGE_TIMER(name) if _STAGE_TIMER is not None else contextlib.nullcontext()
SELECTIONS = ("lmms-eval", "ms-swift")
MODES = ("released", "clean", "dense")


# ----------------------------------------------------------------------------------------------------------------
# Token typing and M-RoPE
# ----------------------------------------------------------------------------------------------------------------
def vision_token_mask(position_ids: torch.Tensor | None, batch: int, length: int, device=None) -> torch.Tensor:
    """(B, L) bool: True for vision tokens. A token is text iff its three M-RoPE ids (temporal, height, width) are
    equal; 2-D or missing ``position_ids`` (pure text) type every token as text. position_ids: (3, B, L) int."""
    if position_ids is None or position_ids.dim() != 3 or position_ids.shape[0] != 3:
        return torch.zeros(batch, length, dtype=torch.bool, device=device)
    t, h, w = position_ids[0], position_ids[1], position_ids[2]
    return ~((t == h) & (t == w) & (h == w))


def mrope_cos_sin(cos: torch.Tensor, sin: torch.Tensor, mrope_section) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, B, L, D) per-axis cos / sin -> (B, L, D): frequency chunks of ``mrope_section`` (doubled for the two
    rotary halves) taken from the temporal, height, width axis in turn (Qwen2-VL's multimodal RoPE)."""
    sec = list(mrope_section) * 2
    if sum(sec) != cos.shape[-1]:
        raise ValueError(f"mrope_section {list(mrope_section)} must sum to head_dim / 2 = {cos.shape[-1] // 2}")
    pick = lambda x: torch.cat([m[i % 3] for i, m in enumerate(x.split(sec, dim=-1))], dim=-1)  # noqa: E731
    return pick(cos), pick(sin)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, D) rotated with cos / sin (B, L, D) (already M-RoPE-composed)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + _rotate_half(x) * sin


# ----------------------------------------------------------------------------------------------------------------
# The released NSA function (ms-swift/nsa/nsa.py::nsa_func on fla 0.3.1), branch by branch
# ----------------------------------------------------------------------------------------------------------------
def mean_pool_blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """(B, H, L, D) -> (B, H, ceil(L / bs), D): mean over blocks of ``block_size`` tokens; a partial last block is
    averaged over its own length (fla ``mean_pooling``)."""
    b, h, n, d = x.shape
    nb = -(-n // block_size)
    pad = nb * block_size - n
    xs = F.pad(x, (0, 0, 0, pad)).view(b, h, nb, block_size, d).float().sum(3)
    cnt = torch.full((nb,), float(block_size), device=x.device)
    if pad:
        cnt[-1] = block_size - pad
    return (xs / cnt[:, None]).to(x.dtype)


def compressed_attention(q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, block_size: int,
                         backend: str = "auto", scale: float | None = None):
    """Compression branch with the released *non-causal* mask: query i sees compressed block j iff
    ``i <= (j + 1) * bs - 1``, i.e. its own block and all later ones.

    q (B, P, L, D); kc / vc (B, G, NB, D) -> o (B, P, L, D), lse (B, P, L) fp32 (natural log). Executed on
    ``zoo.kernels.attention``: queries grouped by residue r = i mod bs see blocks j >= i // bs, a
    ``SlidingWindow(0, -1)`` band on the (NB, NB) grid; the groups become extra heads (head p*bs + r keeps KV head
    p // (P / G))."""
    b, p, n, d = q.shape
    nb = kc.shape[2]
    if nb != -(-n // block_size):
        raise ValueError(f"kc must hold ceil(L / block_size) = {-(-n // block_size)} blocks, got {nb}")
    qp = F.pad(q, (0, 0, 0, nb * block_size - n))
    qg = qp.view(b, p, nb, block_size, d).transpose(2, 3).reshape(b, p * block_size, nb, d)
    o, lse = attention(qg, kc, vc, SlidingWindow(0, -1), scale=scale, backend=backend, return_lse=True)
    o = o.view(b, p, block_size, nb, -1).transpose(2, 3).reshape(b, p, nb * block_size, -1)[:, :, :n]
    lse = lse.view(b, p, block_size, nb).transpose(2, 3).reshape(b, p, nb * block_size)[:, :, :n]
    return o, lse


# ---- fla's bitonic top-k, transcribed operation by operation (tie order and NaN/inf behaviour included)
def _cas(x: torch.Tensor, ids: torch.Tensor, flip, i: int, n_dims: int):
    """One compare-and-swap level of fla's bitonic network on the last axis (length 2**n_dims): pairs at stride
    2**(n_dims - i - 1); swap where ``(left > right) != flip``. The swap is the kernel's bit-XOR on the values it
    computed as ``left = a*1 + b*0`` and ``right = a*0 + b*1``."""
    s = 2 ** (n_dims - i - 1)
    y = x.view(*x.shape[:-1], 2 ** i, 2, s)
    yi = ids.view(*ids.shape[:-1], 2 ** i, 2, s)
    a, b = y[..., 0, :], y[..., 1, :]
    left, right = a + b * 0.0, a * 0.0 + b
    if isinstance(flip, torch.Tensor):
        flip = flip.view(2 ** i, 2, s)[:, 0, :]
    cond = (left > right) != flip
    xv = torch.where(cond, left.view(torch.int32) ^ right.view(torch.int32), 0)
    na, nb = (a.view(torch.int32) ^ xv).view(torch.float32), (b.view(torch.int32) ^ xv).view(torch.float32)
    ia, ib = yi[..., 0, :], yi[..., 1, :]
    xi = torch.where(cond, ia ^ ib, 0)
    return (torch.stack((na, nb), -2).view(x.shape), torch.stack((ia ^ xi, ib ^ xi), -2).view(ids.shape))


def _merge(x, ids, stage: int, order: int, n_dims: int):
    """fla ``_bitonic_merge``: order 2 = alternating directions in runs of 2**stage, else one direction
    (True = descending)."""
    if order == 2:
        flip = (torch.arange(2 ** n_dims, device=x.device) // 2 ** stage) % 2 == 1
    else:
        flip = bool(order)
    for i in range(stage):
        x, ids = _cas(x, ids, flip, i + n_dims - stage, n_dims)
    return x, ids


def released_topk(q: torch.Tensor, kc: torch.Tensor, lse: torch.Tensor, block_counts: int, block_size: int,
                  scale: float | None = None, *, token_chunk: int = 4096) -> torch.Tensor:
    """fla 0.3.1 ``parallel_nsa_topk`` as the released model runs it, in PyTorch.

    Args:
        q: (B, L, P, D): the query vectors *as the kernel reads them* (see :func:`released_nsa` for the views that
            reproduce its raw-pointer reads). kc: (B, G, NB, D) mean-pooled keys. lse: (B, L, P) as read.
        block_counts: S = next_power_of_2(block_counts) blocks are returned.
    Returns (B, L, G, S) int32 block ids, -1 for empty slots. Per (token t, KV group g): score of block c < t // bs
    = sum over the group's P / G heads of ``exp(q.kc[c] * scale - lse)``, 1.0 per head for the current block, 0 for
    later ones; candidates walked in chunks of bs blocks, each bitonic-sorted and merged into the running top bs / 2.
    """
    b, n, p, d = q.shape
    g = kc.shape[1]
    gh = p // g
    nb = kc.shape[2]
    s_top = 1 << max(0, int(block_counts) - 1).bit_length()
    bc = block_size  # fla sets BC = BS
    n_dims = int(math.log2(bc))
    if 2 ** n_dims != bc or s_top > bc // 2:
        raise ValueError(f"block_size must be a power of two >= 2 * next_power_of_2(block_counts), got {bc}, {s_top}")
    scale = d ** -0.5 if scale is None else scale
    out = torch.empty(b, n, g, s_top, dtype=torch.int32, device=q.device)
    m_half = torch.arange(bc, device=q.device) < bc // 2
    kc_pad = F.pad(kc.float(), (0, 0, 0, -(-nb // bc) * bc - nb))  # (B, G, NBp, D), zero keys past the end
    for t0 in range(0, n, token_chunk):
        t1 = min(n, t0 + token_chunk)
        qs = (q[:, t0:t1].float() * scale).to(q.dtype).float().view(b, t1 - t0, g, gh, d)
        ls = lse[:, t0:t1].float().view(b, t1 - t0, g, gh)
        cur = (torch.arange(t0, t1, device=q.device) // block_size).view(1, -1, 1, 1)  # (1, T, 1, 1)
        bi = torch.full((b, t1 - t0, g, bc), -1.0, device=q.device)
        oi = torch.zeros(b, t1 - t0, g, bc, dtype=torch.int32, device=q.device)
        for i_c in range(0, (t1 - 1) // block_size + 1, bc):
            oc = i_c + torch.arange(bc, device=q.device)  # (BC,)
            kch = kc_pad[:, :, i_c:i_c + bc]  # (B, G, BC, D)
            sc = torch.einsum("btghd,bgcd->btghc", qs, kch)
            sc = torch.where(cur[..., None] > oc, sc, float("-inf"))
            pr = torch.where(cur[..., None] == oc, 1.0, torch.exp(sc - ls[..., None]))
            nbi = pr.sum(3)  # (B, T, G, BC)
            noi = torch.where(oc <= cur, oc + 1, 0).to(torch.int32).expand_as(nbi).contiguous()
            nbi = nbi.contiguous()
            for st in range(1, n_dims):
                nbi, noi = _merge(nbi, noi, st, 2, n_dims)
            if i_c != 0:
                nbi, noi = _merge(nbi, noi, n_dims, False, n_dims)
                mf = m_half.float()
                cbi = bi * mf + nbi * (1 - mf)
                coi = oi * m_half.int() + noi * (1 - m_half.int())
                nbi, noi = _merge(cbi.contiguous(), coi.contiguous(), n_dims, True, n_dims)
            else:
                nbi, noi = _merge(nbi, noi, n_dims, True, n_dims)
            active = (i_c <= cur)  # tokens whose loop reaches this chunk
            bi = torch.where(active, nbi, bi)
            oi = torch.where(active, noi, oi)
        out[:, t0:t1] = oi[..., :s_top] - 1
    return out


def selected_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_indices: torch.Tensor,
                       block_size: int, scale: float | None = None, *, token_chunk: int = 128) -> torch.Tensor:
    """Per-token block-sparse attention with fla's ``parallel_nsa_fwd`` semantics, in PyTorch (fp32 math).

    q (B, P, L, D); k / v (B, G, L, D); block_indices (B, L, G, S) int: token t of padded head h attends to the
    tokens ``<= t`` of every listed block whose start is in ``[0, t]`` (KV group h // (P / G)); -1 and later blocks are
    skipped; duplicate ids are not expected. Returns (B, P, L, Dv) in q.dtype."""
    b, p, n, d = q.shape
    g = k.shape[1]
    gh = p // g
    s = block_indices.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    out = torch.empty(b, p, n, v.shape[-1], dtype=q.dtype, device=q.device)
    ar = torch.arange(block_size, device=q.device)
    kf, vf = k.float(), v.float()
    for t0 in range(0, n, token_chunk):
        t1 = min(n, t0 + token_chunk)
        tt = torch.arange(t0, t1, device=q.device).view(1, -1, 1, 1, 1)
        idx = block_indices[:, t0:t1].long()  # (B, T, G, S)
        start = (idx * block_size)[..., None]  # (B, T, G, S, 1)
        pos = start + ar  # (B, T, G, S, bs)
        ok = (start >= 0) & (start <= tt) & (pos <= tt) & (pos < n)
        flat = pos.clamp(0, n - 1).permute(0, 2, 1, 3, 4).reshape(b, g, -1)  # (B, G, T*S*bs)
        kk = torch.gather(kf, 2, flat[..., None].expand(-1, -1, -1, d)).view(b, g, t1 - t0, s * block_size, d)
        vv = torch.gather(vf, 2, flat[..., None].expand(-1, -1, -1, vf.shape[-1])).view(b, g, t1 - t0, s * block_size,
                                                                                      -1)
        okm = ok.permute(0, 2, 1, 3, 4).reshape(b, g, 1, t1 - t0, s * block_size)
        qq = (q[:, :, t0:t1].float() * scale).view(b, g, gh, t1 - t0, d)
        sc = torch.einsum("bghtd,bgtkd->bghtk", qq, kk).masked_fill(~okm, float("-inf"))
        mx = sc.amax(-1, keepdim=True)
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        e = torch.exp(sc - mx)
        den = e.sum(-1, keepdim=True)
        o = torch.einsum("bghtk,bgtkd->bghtd", e / torch.where(den > 0, den, 1.0), vv)
        out[:, :, t0:t1] = o.reshape(b, p, t1 - t0, -1).to(q.dtype)
    return out


def _use_triton(backend: str, x: torch.Tensor) -> bool:
    if backend == "triton":
        return True
    return backend == "auto" and x.is_cuda


def released_nsa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g_cmp: torch.Tensor, g_slc: torch.Tensor,
                 g_swa: torch.Tensor, *, block_counts: int = 32, block_size: int = 64, window_size: int = 256,
                 selection: str = "lmms-eval", block_indices: torch.Tensor | None = None, backend: str = "auto",
                 return_parts: bool = False):
    """``nsa_func`` of the released model on padded heads.

    q (B, P, L, D) (P padded heads, contiguous in this layout as the authors make it), k / v (B, G, L, D);
    gates (B, P, L) after the sigmoid. KV group of padded head h: h // (P / G). ``selection``: "lmms-eval"
    (evaluation copy, default) or "ms-swift" (training copy: the top-k reads q's memory, laid out (B, P, L, D), as
    if it were (B, L, P, D)). In both the top-k reads the compression lse, laid out (B, P, L), as (B, L, P).
    ``block_indices`` (B, L, G, S): use these instead of the top-k. ``backend``: "reference" (fp32 oracle math),
    "triton" / "auto" (Triton kernels on CUDA) or any ``zoo.kernels.attention`` backend for the dense parts.

    Returns o (B, P, L, D) = g_cmp*o_cmp + g_slc*o_slc + g_swa*o_swa, or (o, parts) with the branch outputs,
    ``lse_cmp``, ``k_cmp`` / ``v_cmp`` and ``block_indices``.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    b, p, n, d = q.shape
    g = k.shape[1]
    if p % g:
        raise ValueError(f"padded heads ({p}) must be a multiple of the KV heads ({g})")
    scale = d ** -0.5
    att_backend = "reference" if backend == "reference" else backend
    with _stage("compression"):
        kc, vc = mean_pool_blocks(k, block_size), mean_pool_blocks(v, block_size)
        o_cmp, lse = compressed_attention(q, kc, vc, block_size, att_backend, scale)
    triton_path = _use_triton(backend, q)
    ctx = _stage("topk")
    ctx.__enter__()
    if block_indices is None:
        lse_read = lse.contiguous().view(b, n, p)  # (B, P, L) memory read as (B, L, P)
        q_read = q.contiguous().view(b, n, p, d) if selection == "ms-swift" else q.transpose(1, 2)
        if triton_path:
            from zoo.models._videonsa_triton import topk_triton

            block_indices = topk_triton(q_read, kc, lse_read, block_counts, block_size, scale)
        else:
            block_indices = released_topk(q_read, kc, lse_read, block_counts, block_size, scale)
    ctx.__exit__(None, None, None)
    with _stage("selection"):
        if triton_path:
            from zoo.models._videonsa_triton import selected_attention_triton

            o_slc = selected_attention_triton(q, k, v, block_indices, block_size, scale)
        else:
            o_slc = selected_attention(q, k, v, block_indices, block_size, scale)
    with _stage("window"):
        if window_size > 0:
            o_swa = attention(q, k, v, SlidingWindow(window_size - 1, 0), scale=scale, backend=att_backend)
        else:  # flash-attn's window (-1, 0) is plain causal attention
            o_swa = attention(q, k, v, Causal(), scale=scale, backend=att_backend)
    with _stage("gates"):
        o = o_cmp * g_cmp.unsqueeze(-1) + o_slc * g_slc.unsqueeze(-1) + o_swa * g_swa.unsqueeze(-1)
    if not return_parts:
        return o
    return o, {"o_cmp": o_cmp, "lse_cmp": lse, "k_cmp": kc, "v_cmp": vc, "block_indices": block_indices,
               "o_slc": o_slc, "o_swa": o_swa}


def pad_heads(x: torch.Tensor, padded: int, dim: int = 1) -> torch.Tensor:
    """[x, x, zeros] along ``dim`` up to ``padded`` entries (the released 28 -> 64 head duplication)."""
    h = x.shape[dim]
    if 2 * h > padded:
        raise ValueError(f"padded heads ({padded}) must be >= 2 * heads ({2 * h})")
    zshape = list(x.shape)
    zshape[dim] = padded - 2 * h
    return torch.cat([x, x, x.new_zeros(zshape)], dim=dim)


# ----------------------------------------------------------------------------------------------------------------
# The attention layer
# ----------------------------------------------------------------------------------------------------------------
class VideoNSAAttention(nn.Module):
    """VideoNSA's LLM self-attention (``Qwen2_5_VLMixNSA``), parameters named as in the released checkpoint:
    ``q_proj`` / ``k_proj`` / ``v_proj`` (bias), ``o_proj`` (no bias), ``g_proj_1`` Linear(hidden, hidden) -> GELU ->
    ``g_proj_2`` Linear(hidden, 3 * heads) (gate logits ordered (head, branch) with branch = cmp, slc, swa).

    Args:
        hidden_size, num_heads, num_kv_heads, head_dim: the Qwen2.5-VL text shapes (7B: 3584, 28, 4, 128).
        block_counts / block_size / window_size: 32 / 64 / 256 as released.
        mode: "released" (default; the function the checkpoint was trained and evaluated with) or "clean"
            (vision -> ``zoo.kernels.nsa`` with the VideoNSA preset and no head padding, text -> dense causal) or
            "dense" (plain causal attention everywhere; the gates are unused: the dense baseline of the demo).
        selection: "lmms-eval" (evaluation copy, default) or "ms-swift" (training copy) for the released top-k.
        padded_heads: P of the head duplication (64 as released; heads [orig, dup, zeros], KV head h // (P / Hkv)).
        early_exit: the evaluation copy's shortcuts (no vision token in the batch -> dense attention; every token
            vision -> NSA without the dense branch). ms-swift has none.
        backend: "auto", "reference" (fp32 oracle), "triton", or a ``zoo.kernels.attention`` backend.

    forward(hidden_states (B, L, hidden), position_embeddings=(cos, sin) (B, L, head_dim), position_ids (3, B, L)
    or None, attention_mask None / (B, L) 0-1 padding mask, past_key_values: transformers Cache or None) ->
    (B, L, hidden). With a cache, prefill runs the mixed attention over the cached keys and decoding steps (text
    tokens) run dense attention over the whole cache, as released.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int | None = None, *,
                 block_counts: int = 32, block_size: int = 64, window_size: int = 256, mode: str = "released",
                 selection: str = "lmms-eval", padded_heads: int = 64, early_exit: bool | None = None,
                 backend: str = "auto", layer_idx: int = 0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        if mode == "released" and (padded_heads < 2 * num_heads or padded_heads % num_kv_heads):
            raise ValueError(f"padded_heads ({padded_heads}) must be >= 2 * num_heads and a multiple of num_kv_heads")
        self.hidden_size, self.num_heads, self.num_kv_heads = hidden_size, num_heads, num_kv_heads
        self.head_dim = head_dim or hidden_size // num_heads
        self.block_counts, self.block_size, self.window_size = block_counts, block_size, window_size
        self.mode, self.selection, self.padded_heads, self.backend = mode, selection, padded_heads, backend
        self.early_exit = (selection == "lmms-eval") if early_exit is None else early_exit
        self.layer_idx = layer_idx
        hd = self.head_dim
        self.q_proj = nn.Linear(hidden_size, num_heads * hd, bias=True)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(num_heads * hd, hidden_size, bias=False)
        self.g_proj_1 = nn.Linear(hidden_size, hidden_size, bias=True)
        self.g_proj_2 = nn.Linear(hidden_size, num_heads * 3, bias=True)
        self.fast_dense = True  # exact shortcut of the zero-query dense rows (see _dense_text_rows)
        self.last_parts: dict[str, torch.Tensor] | None = None  # filled when record_parts is set
        self.record_parts = False

    def reset_gate_parameters(self) -> None:
        """ms-swift's gate init: weights N(0, 0.02), biases 0 (gates start at sigmoid(0) = 0.5)."""
        for m in (self.g_proj_1, self.g_proj_2):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, hidden) -> (B, L, heads, 3) logits / temperature (cmp, slc, swa), before masking and sigmoid."""
        b, n, _ = x.shape
        return self.g_proj_2(F.gelu(self.g_proj_1(x))).view(b, n, self.num_heads, 3) / GATE_TEMPERATURE

    def project(self, x, cos, sin):
        """q (B, H, L, D) and k, v (B, Hkv, L, D) after the projections and M-RoPE."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)  # under autocast q is bf16: keep the attention in bf16
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: Any = None, **kwargs) -> torch.Tensor:
        x = hidden_states
        b, n, _ = x.shape
        cos, sin = position_embeddings
        q, k, v = self.project(x, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        is_vision = vision_token_mask(position_ids, b, n, x.device)
        if k.shape[2] != n:  # decoding / chunked prefill over a cache: dense causal over everything cached
            o = self._dense(q, k, v, attention_mask, causal=True)
        elif self.mode == "clean":
            o = self._clean(x, q, k, v, is_vision, attention_mask)
        elif self.mode == "dense":
            o = self._dense(q, k, v, attention_mask)
        else:
            o = self._released(x, q, k, v, is_vision, attention_mask)
        return self.o_proj(o.transpose(1, 2).reshape(b, n, -1))

    # ---- branches
    def _dense(self, q, k, v, attention_mask, causal=True):
        """Dense causal attention, Qwen's GQA pairing (head h -> KV h // (H / Hkv)); a (B, Lk) padding mask is
        handled like flash-attn's unpadding (each sequence attends within its own valid tokens)."""
        if attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.all()):
            return _padded_causal(q, k, v, attention_mask.bool(), self.backend)
        if attention_mask is not None and attention_mask.dim() == 4:  # a prepared additive / boolean mask
            m = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
            return F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=q.shape[1] != k.shape[1])
        return attention(q, k, v, Causal(), backend=_att_backend(self.backend))

    def _released(self, x, q, k, v, is_vision, attention_mask):
        b, h, n, d = q.shape
        if self.early_exit and not bool(is_vision.any()):
            return self._dense(q, k, v, attention_mask)
        all_vision = self.early_exit and bool(is_vision.all())
        vm = is_vision[:, None, :, None].to(q.dtype)
        logits = self.gate_logits(x)
        gates = (logits if all_vision else logits * is_vision[:, :, None, None].to(logits.dtype)).sigmoid()
        gp = pad_heads(gates.permute(0, 2, 1, 3), self.padded_heads)  # (B, P, L, 3)
        qn, kn, vn = (q, k, v) if all_vision else (q * vm, k * vm, v * vm)
        qp = pad_heads(qn, self.padded_heads)
        o64, parts = released_nsa(qp, kn, vn, gp[..., 0], gp[..., 1], gp[..., 2], block_counts=self.block_counts,
                                  block_size=self.block_size, window_size=self.window_size,
                                  selection=self.selection, backend=self.backend, return_parts=True)
        o_nsa = 0.5 * (o64[:, :h] + o64[:, h:2 * h])
        with _stage("dense"):
            if all_vision:
                o_dense = torch.zeros_like(o_nsa)
            elif attention_mask is None and self.fast_dense:
                o_dense = _dense_text_rows(q, k, v, is_vision, _att_backend(self.backend), vision_mean=True)
            else:
                o_dense = self._dense(q * (1 - vm), k, v, attention_mask)
        if self.record_parts:
            self.last_parts = {**parts, "gates": gates, "nsa_q": qp, "nsa_k": kn, "nsa_v": vn, "nsa_out64": o64,
                               "nsa_out": o_nsa, "dense_out": o_dense, "is_vision": is_vision}
        return o_nsa + o_dense

    def _clean(self, x, q, k, v, is_vision, attention_mask):
        from zoo.kernels.nsa import nsa, nsa_reference

        gates = self.gate_logits(x).sigmoid().permute(0, 2, 1, 3).contiguous()  # (B, H, L, 3)
        if not bool(is_vision.any()):
            return self._dense(q, k, v, attention_mask)
        if attention_mask is None:
            o_dense = _dense_text_rows(q, k, v, is_vision, _att_backend(self.backend), vision_mean=False)
        else:
            o_dense = self._dense(q, k, v, attention_mask)
        cfg = dict(config="videonsa", sel_count=self.block_counts, window=self.window_size,
                   cmp_len=self.block_size, cmp_stride=self.block_size, sel_len=self.block_size)
        if q.is_cuda and self.backend != "reference":
            o_nsa = nsa(q, k, v, gates, causal=True, **cfg)
        else:  # CPU: the dense-mask oracle of the same rule (the op's Triton parts would run in the interpreter)
            o_nsa = nsa_reference(q, k, v, gates, causal=True, **cfg)
        return torch.where(is_vision[:, None, :, None], o_nsa, o_dense)


class RMSNorm(nn.Module):
    """Qwen2 RMSNorm: weight * (x / rms(x)) computed in fp32, cast back to x's dtype before the weight."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class SwiGLU(nn.Module):
    """Qwen2 MLP: down_proj(silu(gate_proj(x)) * up_proj(x)), no biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class VideoNSADecoderLayer(nn.Module):
    """One Qwen2.5-VL text decoder layer with :class:`VideoNSAAttention` (keys ``self_attn.*``, ``mlp.*``,
    ``input_layernorm``, ``post_attention_layernorm``, as in the checkpoint): pre-norm attention and SwiGLU MLP,
    each with a residual. forward(x (B, L, hidden), position_embeddings, position_ids, attention_mask) -> same."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, intermediate_size: int,
                 head_dim: int | None = None, rms_norm_eps: float = 1e-6, **attn_kwargs):
        super().__init__()
        self.self_attn = VideoNSAAttention(hidden_size, num_heads, num_kv_heads, head_dim, **attn_kwargs)
        self.mlp = SwiGLU(hidden_size, intermediate_size)
        self.input_layernorm = RMSNorm(hidden_size, rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(hidden_size, rms_norm_eps)

    def forward(self, x, position_embeddings, position_ids=None, attention_mask=None, **kwargs):
        x = x + self.self_attn(self.input_layernorm(x), position_embeddings, position_ids, attention_mask, **kwargs)
        return x + self.mlp(self.post_attention_layernorm(x))


def _runs(mask_row: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) runs of True in a 1-D bool tensor."""
    m = mask_row.to(torch.int8).cpu()
    d = torch.diff(torch.cat([torch.zeros(1, dtype=torch.int8), m, torch.zeros(1, dtype=torch.int8)]))
    starts = (d == 1).nonzero().flatten().tolist()
    ends = (d == -1).nonzero().flatten().tolist()
    return list(zip(starts, ends))


def _dense_text_rows(q, k, v, is_vision, backend, vision_mean: bool):
    """Dense causal attention computed for the text rows only (one call per run of text tokens: queries [a, e)
    against keys [0, e), bottom-right causal). Vision rows get, with ``vision_mean``, what the released dense branch
    gives a zero query -- the uniform mean of V over keys 0..t of its KV head (a cumulative mean) -- else zeros.
    Equal to the released masked-query dense branch, at the cost of the text rows."""
    b, h, n, d = q.shape
    g = h // k.shape[1]
    if vision_mean:
        cm = v.float().cumsum(2) / torch.arange(1, n + 1, device=v.device, dtype=torch.float32)[:, None]
        out = cm.to(q.dtype)[:, :, None].expand(b, k.shape[1], g, n, v.shape[-1]).reshape(b, h, n, v.shape[-1])
        out = out.clone()
    else:
        out = q.new_zeros(b, h, n, v.shape[-1])
    if b > 1 and bool((is_vision == is_vision[:1]).all()):  # one layout for the whole batch: batched calls
        rows = [(slice(None), r) for r in _runs(~is_vision[0])]
    else:
        rows = [(slice(i, i + 1), r) for i in range(b) for r in _runs(~is_vision[i])]
    for bi, (a, e) in rows:
        out[bi, :, a:e] = attention(q[bi, :, a:e], k[bi, :, :e], v[bi, :, :e], Causal(), backend=backend)
    return out


def _att_backend(backend: str) -> str:
    return backend if backend in ("reference", "sdpa", "flex", "triton") else "auto"


def _padded_causal(q, k, v, mask, backend):
    """Causal attention per sequence over its valid tokens (flash-attn varlen semantics): (B, Lk) bool mask."""
    b, h, nq, d = q.shape
    nk = k.shape[2]
    qmask = mask[:, nk - nq:]
    lq, lk = qmask.sum(1).to(torch.int32), mask.sum(1).to(torch.int32)
    qs = q.transpose(1, 2)[qmask].transpose(0, 1)[None]  # (1, H, total, D)
    ks = k.transpose(1, 2)[mask].transpose(0, 1)[None]
    vs = v.transpose(1, 2)[mask].transpose(0, 1)[None]
    cu = lambda x: F.pad(x.cumsum(0), (1, 0)).to(torch.int32)  # noqa: E731
    o = attention(qs, ks, vs, Varlen(cu(lq), cu(lk)) & Causal(), backend=_att_backend(backend))
    out = q.new_zeros(b, nq, h, v.shape[-1])
    out[qmask] = o[0].transpose(0, 1)
    return out.transpose(1, 2)


# ----------------------------------------------------------------------------------------------------------------
# A tiny VLM for the trained demonstration (frames -> small ViT -> VideoNSA / dense LM -> answer)
# ----------------------------------------------------------------------------------------------------------------
class FrameViT(nn.Module):
    """Per-frame ViT: (N, C, H, W) -> (N, (H/p) * (W/p), dim) patch tokens (learned patch positions, pre-norm)."""

    def __init__(self, img_size: int = 28, patch: int = 7, in_chans: int = 1, dim: int = 192, depth: int = 2,
                 heads: int = 4):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, patch, patch)
        self.num_patches = (img_size // patch) ** 2
        self.pos = nn.Parameter(torch.zeros(1, self.num_patches, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.norm(self.blocks(x))


class TinyVideoVLM(nn.Module):
    """A few-layer VLM for long-video QA: every frame (28 x 28, grey) -> :class:`FrameViT` -> 16 tokens projected to
    the LM width; the LM reads ``[question tokens] [video tokens] [answer slot]`` with M-RoPE ids (text t = h = w,
    video (2 * frame, row, col), as Qwen2.5-VL lays them out) through :class:`VideoNSADecoderLayer` s, and the answer
    slot's hidden state is classified over ``num_answers``.

    ``attention``: "clean" (VideoNSA routing on ``zoo.kernels.nsa``: trainable, any GQA ratio), "dense" (the same
    layers with plain causal attention) or "released" (the released function; forward only on GPU kernels).
    forward(frames (B, F, 1, 28, 28) float, question (B, Lq) int64) -> answer logits (B, num_answers).
    """

    def __init__(self, vocab_size: int = 32, num_answers: int = 16, dim: int = 384, depth: int = 4, heads: int = 12,
                 kv_heads: int = 4, mlp: int = 1024, vit_dim: int = 192, vit_depth: int = 2,
                 attention: str = "clean", block_counts: int = 4, block_size: int = 64, window_size: int = 64,
                 backend: str = "auto"):
        super().__init__()
        self.vit = FrameViT(dim=vit_dim, depth=vit_depth)
        self.proj = nn.Sequential(nn.Linear(vit_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.embed = nn.Embedding(vocab_size, dim)
        self.answer_slot = nn.Parameter(torch.zeros(1, 1, dim))
        self.head_dim = dim // heads
        self.layers = nn.ModuleList(
            VideoNSADecoderLayer(dim, heads, kv_heads, mlp, mode=attention, block_counts=block_counts,
                                 block_size=block_size, window_size=window_size, backend=backend,
                                 padded_heads=max(2 * heads, 16 * kv_heads))
            for _ in range(depth))
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, num_answers)
        self.side = int(math.isqrt(self.vit.num_patches))
        inv = 1.0 / (10000.0 ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)
        half = self.head_dim // 2
        t = half - 2 * (half // 3)
        self.mrope_section = [t, half // 3, half // 3]

    def set_attention(self, mode: str) -> None:
        for layer in self.layers:
            layer.self_attn.mode = mode

    def position_ids(self, b: int, lq: int, f: int, device) -> torch.Tensor:
        """(3, B, Lq + F * P + 1) M-RoPE ids of the layout."""
        p = self.vit.num_patches
        fr = torch.arange(f, device=device).repeat_interleave(p)
        r = (torch.arange(p, device=device) // self.side).repeat(f)
        c = (torch.arange(p, device=device) % self.side).repeat(f)
        vid = torch.stack([fr * 2 + lq, r + lq, c + lq])
        after = int(vid.max()) + 1
        ids = torch.cat([torch.arange(lq, device=device).expand(3, -1), vid,
                         torch.full((3, 1), after, device=device)], 1)
        return ids[:, None].expand(3, b, -1)

    def rope(self, pid: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        f = pid.float()[..., None] * self.inv_freq
        emb = torch.cat([f, f], -1)
        cos, sin = mrope_cos_sin(emb.cos(), emb.sin(), self.mrope_section)
        return cos.to(dtype), sin.to(dtype)

    def forward(self, frames: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        b, f = frames.shape[:2]
        tok = self.proj(self.vit(frames.flatten(0, 1))).reshape(b, f * self.vit.num_patches, -1)
        x = torch.cat([self.embed(question), tok, self.answer_slot.expand(b, -1, -1).to(tok.dtype)], 1)
        pid = self.position_ids(b, question.shape[1], f, x.device)
        pe = self.rope(pid, x.dtype)
        for layer in self.layers:
            x = layer(x, pe, pid)
        return self.head(self.norm(x[:, -1]))


@register_model(
    paper="arXiv:2510.02295", title="VideoNSA demo: tiny VLM for synthetic long-video QA", task="video-qa",
    license="apache-2.0",
    input_spec={"frames": "(B, F, 1, 28, 28) float32 (Fashion-MNIST normalised)", "question": "(B, 4) int64"},
)
def videonsa_tiny_vlm(**kwargs) -> nn.Module:
    """The demo VLM (~12M parameters by default); ``attention`` = "clean" (VideoNSA) or "dense"."""
    return TinyVideoVLM(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Registry: the full VLM (transformers' Qwen2.5-VL with this attention), weights Enxin/VideoNSA
# ----------------------------------------------------------------------------------------------------------------
_CARD = {
    "benchmarks (project page ablation, accuracy %)": {
        "columns": ["LongVideoBench", "MLVU", "TimeScope", "LongTimeScope", "Tomato", "VSIBench"],
        "Qwen2.5-VL-7B": [58.7, 51.2, 81.0, 40.7, 22.6, 29.7],
        "Dense-SFT": [57.8, 51.2, 76.8, 40.2, 21.7, 30.6],
        "Dense-NSA": [56.1, 51.6, 83.0, 40.9, 23.4, 33.1],
        "VideoNSA": [59.4, 51.8, 82.7, 44.4, 26.2, 36.1],
    },
}


def load_released(path_or_repo="Enxin/VideoNSA", **kwargs) -> nn.Module:
    """The released VideoNSA-7B (a local folder or ``Enxin/VideoNSA``), loaded strictly; see
    :func:`zoo.models._videonsa_hf.load_released` (needs the ``videonsa`` extra)."""
    from zoo.models._videonsa_hf import load_released as _load

    return _load(path_or_repo, **kwargs)


@register_model(
    paper="arXiv:2510.02295",
    title="VideoNSA: Native Sparse Attention Scales Video Understanding",
    task="video-text-to-text",
    license="apache-2.0",
    input_spec={"video": "frames (T, 3, H, W) uint8, sampled at fps / max_frames / max_pixels",
                "text": "chat prompt", "max_tokens": 131072, "card": _CARD,
                # The release is a sharded transformers checkpoint, not a zoo folder: load it with load_released().
                "weights": "Enxin/VideoNSA (zoo.models._videonsa_hf.load_released, strict)",
                "training_data": "Enxin/VideoNSA-data (LLaVA-Video-178K subset, 4 fps, 350-550 frames)"},
)
def videonsa_qwen2_5_vl_7b(config: dict | None = None, **kwargs) -> nn.Module:
    """VideoNSA-7B: transformers' ``Qwen2_5_VLForConditionalGeneration`` with every LLM attention replaced by
    :class:`VideoNSAAttention` (needs the ``videonsa`` extra: transformers). ``config``: a Qwen2.5-VL config dict
    (default: the 7B shapes); kwargs: ``block_counts``, ``window_size``, ``mode``, ``selection``, ``backend``.
    Random weights; the released ones: :func:`load_released` (``zoo.models._videonsa_hf``)."""
    from zoo.models._videonsa_hf import build_videonsa

    return build_videonsa(config, **kwargs)
