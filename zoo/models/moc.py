"""Mixture of Contexts (MoC) for long-video diffusion transformers, on a Wan-2.1-style video DiT.

Paper: Cai et al., "Mixture of Contexts for Long Video Generation", arXiv:2508.21058 (no code or weights released).
Base model: the DiT of Wan 2.1 (Wan-AI, "Wan: Open and Advanced Large-Scale Video Generative Models",
arXiv:2503.20314), whose 1.3B text-to-video transformer is the open base of the paper's Appendix H.

Top-down:

- layout: :func:`content_chunks` (content-aligned, variable-length chunks from frame / shot / caption boundaries by
  ``torch.bucketize`` + prefix sums) and :class:`MoCLayout`.
- routing: :func:`moc_route` (mean-key chunk descriptors, per-head top-k, mandatory links added before top-k,
  causal routing mask, context drop-off / drop-in) -> a ``BlockSparse`` mask of ``zoo.kernels.attention`` plus the
  counted statistics; :func:`moc_flops` (the paper's Eq. 4-6).
- :class:`MoCAttention`: Wan's self-attention (q/k/v/o + RMS q/k norms + 3D RoPE) running MoC or dense attention.
- :class:`WanDiT`: the Wan 2.1 video DiT (patchified 3D latents, 3D RoPE, text cross-attention, AdaLN timestep
  modulation) whose self-attention is MoC or dense, switchable at construction (``attention=``) or at any time
  (:meth:`WanDiT.set_attention`, the paper's zero-shot plug-in).
- registry: ``wan21_t2v_1_3b`` (the released 1.3B config, 1,418,996,800 parameters) and ``moc_dit_small``.
- converters: :func:`convert_wan_diffusers` / :func:`convert_checkpoint` from the diffusers
  ``WanTransformer3DModel`` and the original Wan 2.1 key layouts.

The model's own key names are the original Wan 2.1 ones (``blocks.0.self_attn.q.weight`` ...), so an original
checkpoint loads as is and a diffusers one through a rename.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from zoo.kernels.attention import BlockSparse, attention
from zoo.kernels.moc.op import chunk_key_sums
from zoo.registry import PretrainedSource, register_model

__all__ = [
    "MoCAttention",
    "MoCLayout",
    "MoCRoute",
    "WanDiT",
    "content_chunks",
    "convert_checkpoint",
    "convert_wan_diffusers",
    "moc_dense_visibility",
    "moc_flops",
    "moc_route",
]


# ------------------------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class MoCLayout:
    """Where the chunks, shots and caption tokens of one token stream lie (shared by the batch).

    chunk_cu: (C+1,) int64 chunk boundaries 0 .. N, strictly increasing (host tensor).
    chunk_shot: (C,) int64 shot id of each chunk, non-decreasing (shots are contiguous); text chunks carry the id of
        the shot they caption, or -1 for a global caption.
    chunk_text: (C,) bool, True for caption / text chunks (mandatory cross-modal links: every query sees them).
    """

    chunk_cu: torch.Tensor
    chunk_shot: torch.Tensor
    chunk_text: torch.Tensor
    _device_copies: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_chunks(self) -> int:
        return self.chunk_cu.numel() - 1

    @property
    def num_tokens(self) -> int:
        return int(self.chunk_cu[-1])


def content_chunks(num_tokens: int, frame_bounds=None, shot_bounds=None, caption_bounds=None,
                   max_chunk: int | None = None) -> MoCLayout:
    """Content-aligned, variable-length chunks of a token stream from its frame / shot / caption boundaries.

    Args:
        num_tokens: N, tokens in the stream.
        frame_bounds, shot_bounds: 1-D int sequences of token positions where a frame / shot starts (0 and N
            implied). Every shot boundary is a chunk boundary (a chunk never straddles a cut).
        caption_bounds: optional list of (start, end, shot) caption spans (text tokens) in the stream; ``shot`` = the
            shot the caption describes or -1 for a global caption. Each span becomes its own text chunk(s).
        max_chunk: split chunks longer than this into near-equal pieces (None: no limit).
    Returns a :class:`MoCLayout`; chunk = the union of all boundaries (``torch.unique``), shot of a chunk by
    ``torch.bucketize`` of its start into the shot boundaries.
    """
    if not isinstance(num_tokens, int) or num_tokens <= 0:
        raise ValueError(f"num_tokens must be a positive int, got {num_tokens!r}")

    def as_pos(name, b):
        t = torch.as_tensor([] if b is None else b, dtype=torch.int64).flatten()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > num_tokens):
            raise ValueError(f"{name} must lie in [0, {num_tokens}], got min {int(t.min())} max {int(t.max())}")
        return t

    fb, sb = as_pos("frame_bounds", frame_bounds), as_pos("shot_bounds", shot_bounds)
    caps = list(caption_bounds or [])
    cap_t = as_pos("caption_bounds", [p for s, e, _ in caps for p in (s, e)]) if caps else torch.zeros(0, dtype=torch.int64)
    for s, e, _ in caps:
        if not 0 <= s < e <= num_tokens:
            raise ValueError(f"caption span ({s}, {e}) must satisfy 0 <= start < end <= {num_tokens}")
    ends = torch.tensor([0, num_tokens], dtype=torch.int64)
    cu = torch.unique(torch.cat([ends, fb, sb, cap_t]))  # sorted union
    if max_chunk is not None:
        if max_chunk <= 0:
            raise ValueError(f"max_chunk must be positive, got {max_chunk}")
        pieces = [cu[:1]]
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
            m = -(-(b - a) // max_chunk)
            pieces.append(torch.tensor([a + (b - a) * i // m for i in range(1, m + 1)], dtype=torch.int64))
        cu = torch.cat(pieces)
    starts = cu[:-1]
    shot_cu = torch.unique(torch.cat([torch.zeros(1, dtype=torch.int64), sb]))
    shot_cu = shot_cu[shot_cu < num_tokens]
    chunk_shot = torch.bucketize(starts, shot_cu, right=True) - 1
    chunk_text = torch.zeros(starts.numel(), dtype=torch.bool)
    for s, e, shot in caps:
        inside = (starts >= s) & (starts < e)
        chunk_text |= inside
        chunk_shot = torch.where(inside, torch.as_tensor(int(shot)), chunk_shot)
    return MoCLayout(cu, chunk_shot, chunk_text)


def frame_layout(num_frames: int, tokens_per_frame: int, shot_frames=None) -> MoCLayout:
    """Layout of a video token stream (frame-major, as Wan's patchify): one chunk per latent frame (the paper's
    Wan-2.1 setting, chunk = 1560 tokens at 480p); ``shot_frames`` = frames per shot (list) or None (one shot)."""
    n = num_frames * tokens_per_frame
    shots = None
    if shot_frames is not None:
        sf = [int(s) for s in shot_frames]
        if sum(sf) != num_frames or min(sf) <= 0:
            raise ValueError(f"shot_frames must be positive and sum to num_frames={num_frames}, got {sf}")
        shots = (torch.cumsum(torch.tensor(sf), 0)[:-1] * tokens_per_frame).tolist()
    return content_chunks(n, frame_bounds=[f * tokens_per_frame for f in range(num_frames)], shot_bounds=shots)


# ------------------------------------------------------------------------------------------------------ routing
class MoCRoute(NamedTuple):
    """Result of :func:`moc_route`.

    mask: ``BlockSparse`` over (B, H, nqb, W) key-block lists (the engine's mask; ``mask.block_mask`` gives Flex's).
    selected: (B, H, nqb, C) bool, chunks each query block attends (mandatory links + routed top-k).
    routed: (B, H, nqb, C) bool, the chunks picked by top-k (and drop-in), after drop-off.
    visited_keys: (B, H, nqb) int64 keys in the visited key blocks of each query block.
    query_counts: (nqb,) int64 queries in each query block.
    """

    mask: BlockSparse
    selected: torch.Tensor
    routed: torch.Tensor
    visited_keys: torch.Tensor
    query_counts: torch.Tensor


def _layout_device(layout: MoCLayout, dev):
    """The layout's tensors on ``dev``, copied once per device (every layer reuses them)."""
    key = str(dev)
    if key not in layout._device_copies:
        layout._device_copies[key] = (layout.chunk_cu.to(dev), layout.chunk_shot.to(dev), layout.chunk_text.to(dev))
    return layout._device_copies[key]


def _span(tokens: torch.Tensor, bs: int) -> torch.Tensor:
    """Most key blocks a run of ``tokens`` consecutive tokens can touch."""
    return (tokens + bs - 2) // bs + 1


def _list_width(layout: MoCLayout, bs: int, nb: int, shot_links: bool, routed: int) -> int:
    """Host upper bound on the key blocks one query block visits (sizes the block lists without a device sync).

    A block overlaps at most ``own`` chunks (1 + the most boundaries within bs - 1 tokens), hence at most ``own``
    shots; it visits the blocks of those chunks (or shots, with ``shot_links``), of every text chunk and of
    ``routed`` further chunks; a run of m tokens touches at most (m + bs - 2) // bs + 1 blocks."""
    cu = layout.chunk_cu
    lens = cu[1:] - cu[:-1]
    text = layout.chunk_text
    inner = cu[1:-1]
    own = 1
    if inner.numel():
        own += int((torch.searchsorted(inner, inner + (bs - 2), right=True) - torch.arange(inner.numel())).max())
    units = lens[~text]
    if shot_links and units.numel():
        shots = layout.chunk_shot[~text]
        units = torch.zeros(int(shots.max()) + 1, dtype=torch.int64).index_add_(0, shots.clamp(min=0), units)
    top = lambda x, m: int(_span(x, bs).sort(descending=True).values[:m].sum()) if m > 0 and x.numel() else 0  # noqa: E731
    width = top(units, own) + int(_span(lens[text], bs).sum()) + top(lens[~text], routed) + own
    return max(1, min(nb, width))


def _check_layout(layout: MoCLayout, n: int) -> None:
    if not isinstance(layout, MoCLayout):
        raise TypeError(f"layout must be a MoCLayout, got {type(layout).__name__}")
    cu = layout.chunk_cu
    if cu.dim() != 1 or cu.numel() < 2 or int(cu[0]) != 0 or int(cu[-1]) != n or bool((cu[1:] <= cu[:-1]).any()):
        raise ValueError(f"layout.chunk_cu must be strictly increasing from 0 to N={n}")
    c = cu.numel() - 1
    if layout.chunk_shot.shape != (c,) or layout.chunk_text.shape != (c,):
        raise ValueError(f"layout.chunk_shot / chunk_text must have shape ({c},)")


def _rand(shape, dev, generator) -> torch.Tensor:
    """U(0, 1) on ``dev``: from ``generator`` (drawn on its device, then moved) or the device's default RNG (no
    host round trip in training)."""
    if generator is None:
        return torch.rand(shape, device=dev)
    return torch.rand(shape, device=generator.device, generator=generator).to(dev)


@torch.no_grad()
def moc_route(q: torch.Tensor, k: torch.Tensor, layout: MoCLayout, *, top_k: int, block_size: int = 64,
              shot_links: bool = True, causal: bool = False, drop_off: float = 0.0, drop_in: float = 0.0,
              generator: torch.Generator | None = None) -> MoCRoute:
    """MoC routing of one layout (Sections 3.1-3.3 of the paper), per head and per query block of ``block_size``.

    Args:
        q: (B, Hq, N, D); k: (B, Hkv, N, D) (after norms and RoPE; the router sees what attention sees).
        layout: chunks / shots / text chunks (:class:`MoCLayout`).
        top_k: routed chunks per query block, on top of the mandatory links.
        block_size: query / key block of the block-sparse engine; pick a divisor of the chunk length.
        shot_links: mandatory intra-shot link (every token sees its whole own shot). Off: only its own chunk(s).
            The cross-modal link (every query sees every text chunk) and the own-chunk link are always on.
        causal: the causal routing mask: only chunks before the query block's first own chunk are candidates.
        drop_off: p_max of context drop-off: drop floor(p * top_k) routed chunks, p ~ U(0, p_max) per call.
        drop_in: lambda of context drop-in: add m ~ Poisson(lambda) random candidate chunks per call.
    Scores: q̄ · φ(c), q̄ = mean query of the block, φ(c) = mean key of chunk c (fp32). Links are inserted before
    top-k and never use the budget. Routing has no gradient (learning flows through attention on the selection).
    """
    b, hq, n, d = q.shape
    hkv = k.shape[1]
    _check_layout(layout, n)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
    if not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if not 0.0 <= drop_off <= 1.0 or drop_in < 0:
        raise ValueError(f"drop_off must be in [0, 1] and drop_in >= 0, got {drop_off}, {drop_in}")
    dev, bs = q.device, block_size
    cu, shot, text = _layout_device(layout, dev)
    C = cu.numel() - 1
    nb = -(-n // bs)
    tok = torch.arange(n, device=dev)
    chunk = torch.bucketize(tok, cu[1:], right=True)  # (N,) chunk of every token
    # Descriptors: mean key per chunk (per KV head), mean query per block.
    kmean = chunk_key_sums(k, chunk, C) / (cu[1:] - cu[:-1]).float()[:, None]
    kmean = kmean.repeat_interleave(hq // hkv, dim=1)  # (B, Hq, C, D)
    qp = F.pad(q.detach(), (0, 0, 0, nb * bs - n)).reshape(b, hq, nb, bs, d).sum(3, dtype=torch.float32)
    starts = torch.arange(nb, device=dev) * bs
    qcount = torch.minimum(starts + bs, torch.full_like(starts, n)) - starts
    scores = torch.einsum("bhnd,bhcd->bhnc", qp / qcount[:, None], kmean)  # (B, Hq, nb, C)
    # Mandatory links (before top-k): own chunks, own shots, text chunks.
    first = chunk[starts]
    last = chunk[starts + qcount - 1]
    cid = torch.arange(C, device=dev)
    own = (cid >= first[:, None]) & (cid <= last[:, None])  # (nb, C)
    forced = own | text[None, :]
    if shot_links:  # every chunk of a shot that one of the block's own (visual) chunks belongs to
        shot_ids = torch.where(text, 0, shot).clamp(min=0)
        onehot = F.one_hot(shot_ids, int(layout.chunk_shot.max().clamp(min=0)) + 1).float()  # (C, S)
        own_shot = ((own & ~text[None, :]).float() @ onehot) > 0  # (nb, S)
        forced |= own_shot[:, shot_ids] & ~text[None, :]
    cand = ~forced
    if causal:
        cand &= cid[None, :] < first[:, None]
    sel = forced.expand(b, hq, nb, C).clone()
    routed = torch.zeros_like(sel)
    kk = min(top_k, C)
    if kk > 0:
        val, idx = scores.masked_fill(~cand, float("-inf")).topk(kk, dim=-1)
        ok = val > float("-inf")
        if drop_off > 0:
            p = float(torch.rand((), generator=generator)) * drop_off
            ndrop = int(math.floor(p * kk))
            if ndrop:
                rank = _rand(val.shape, dev, generator).argsort(-1).argsort(-1)
                ok &= rank >= ndrop
        routed.scatter_(-1, idx, ok)
    n_in = 0
    if drop_in > 0:
        m = int(torch.poisson(torch.tensor(float(drop_in)), generator=generator))
        n_in = min(m, C)
        if m > 0:
            free = cand & ~routed
            noise = _rand(free.shape, dev, generator)
            val, idx = noise.masked_fill(~free, -1.0).topk(min(m, C), dim=-1)
            routed.scatter_(-1, idx, (val >= 0) | routed.gather(-1, idx))
    sel |= routed
    # Key block j spans chunks [kf_j, kl_j]; visited iff a selected chunk lies there (prefix sums over chunks).
    kf, kl = first, last
    P = F.pad(torch.cumsum(sel.to(torch.int32), -1), (1, 0))  # (B, Hq, nb, C + 1)
    hi = P.gather(-1, (kl + 1)[None, None, None, :].expand(b, hq, nb, nb))
    lo = P.gather(-1, kf[None, None, None, :].expand(b, hq, nb, nb))
    vis = hi > lo  # (B, Hq, nqb, nkb)
    counts = vis.sum(-1, dtype=torch.int32)
    visited_keys = (vis.to(torch.int64) * qcount[None, None, None, :]).sum(-1)
    key = torch.where(vis, nb - torch.arange(nb, device=dev, dtype=torch.int32), 0)
    width = _list_width(layout, bs, nb, shot_links, kk + n_in)
    top = key.topk(width, dim=-1).values
    bidx = torch.where(top > 0, nb - top, 0).to(torch.int32).contiguous()
    mask = BlockSparse.trusted(bidx, counts.contiguous(), bs, max_index=nb - 1)
    return MoCRoute(mask, sel, routed, visited_keys, qcount)


def moc_dense_visibility(route: MoCRoute, n: int) -> torch.Tensor:
    """(B, H, N, N) bool token visibility of a route (for tests / small shapes): key blocks of the lists."""
    bi, bc = route.mask.block_indices, route.mask.block_counts
    b, h, nb, w = bi.shape
    bs = route.mask.block_size
    valid = torch.arange(w, device=bi.device) < bc[..., None]
    blk = torch.zeros(b, h, nb, nb + 1, dtype=torch.bool, device=bi.device)
    blk.scatter_(-1, torch.where(valid, bi.long(), nb), True)
    blk = blk[..., :nb]
    tok = blk.repeat_interleave(bs, 2).repeat_interleave(bs, 3)
    return tok[:, :, :n, :n]


def moc_flops(n: int, head_dim: int, num_chunks: int, top_k: int, mean_chunk: float,
              linked_tokens: float = 0.0) -> dict[str, float]:
    """The paper's Eq. 4-6 per head: MoC ~ L·d + 2·L·C·d + 4·L·k·m̄·d (pooling, routing scores, attention over the
    k selected chunks of m̄ tokens) vs dense 4·L²·d; ``linked_tokens`` adds 4·L·(tokens of the mandatory links)·d
    (own shot / chunk, text), which Eq. 4 leaves out. Returns {"moc", "dense", "ratio"}."""
    L, d = float(n), float(head_dim)
    moc = L * d + 2 * L * num_chunks * d + 4 * L * (top_k * mean_chunk + linked_tokens) * d
    dense = 4 * L * L * d
    return {"moc": moc, "dense": dense, "ratio": dense / moc}


# ------------------------------------------------------------------------------------------------------ layers
class WanRMSNorm(nn.Module):
    """RMSNorm over the last dim (computed in fp32), weight ``weight`` (Wan's q/k norm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()).to(x.dtype)


def rope_3d_tables(head_dim: int, grid: tuple[int, int, int], device=None, theta: float = 10000.0):
    """Wan's 3D RoPE: cos / sin tables (F*H*W, head_dim // 2) fp32 for a (F, H, W) token grid. The head dim's
    complex pairs are split [c - 2(c//3), c//3, c//3] (c = head_dim // 2) between time, height and width, each with
    frequencies theta^(-2i / dim_axis) of its own axis dim (Wan: dims d - 4(d//6), 2(d//6), 2(d//6))."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
    d, c = head_dim, head_dim // 2
    f, h, w = grid
    dims = (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6))
    if [x // 2 for x in dims] != [c - 2 * (c // 3), c // 3, c // 3]:
        raise ValueError(f"head_dim {head_dim} does not split into Wan's 3D RoPE axes")
    angles = []
    for size, dim_ax, shape in ((f, dims[0], (f, 1, 1)), (h, dims[1], (1, h, 1)), (w, dims[2], (1, 1, w))):
        inv = 1.0 / theta ** (torch.arange(0, dim_ax, 2, dtype=torch.float64, device=device) / dim_ax)
        a = torch.outer(torch.arange(size, dtype=torch.float64, device=device), inv)
        angles.append(a.view(*shape, -1).expand(f, h, w, -1))
    ang = torch.cat(angles, -1).reshape(f * h * w, c)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (B, H, N, D) by the angles of (N, D/2) tables (fp32 math, x's dtype out)."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2).to(x.dtype)


class MoCAttention(nn.Module):
    """Wan 2.1 self-attention with Mixture-of-Contexts routing, or dense (``mode``).

    Parameters ``q, k, v, o`` (Linear dim -> dim) and ``norm_q, norm_k`` (RMSNorm over dim), Wan's layout, so the
    same weights run dense or MoC (the zero-shot switch). forward: x (B, N, dim), RoPE tables (N, Dh/2), a
    :class:`MoCLayout` -> (B, N, dim). After each MoC call ``last_route`` holds the :class:`MoCRoute` (for the
    sparsity / FLOPs report, :meth:`stats`).

    Args: dim, num_heads, qk_norm, eps, mode ("moc" | "dense"), top_k (paper: 3 single-shot / Wan, 5 multi-shot),
    block_size, shot_links, causal, drop_off (p_max), drop_in (lambda; both only while training), backend
    (``zoo.kernels.attention`` backend for the block-sparse call).
    """

    MODES = ("moc", "dense")

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool = True, eps: float = 1e-6, mode: str = "moc",
                 top_k: int = 3, block_size: int = 64, shot_links: bool = True, causal: bool = False,
                 drop_off: float = 0.0, drop_in: float = 0.0, backend: str = "auto"):
        super().__init__()
        if dim <= 0 or num_heads <= 0 or dim % num_heads:
            raise ValueError(f"dim={dim} must be a positive multiple of num_heads={num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.top_k, self.block_size, self.shot_links, self.causal = top_k, block_size, shot_links, causal
        self.drop_off, self.drop_in, self.backend = drop_off, drop_in, backend
        self.set_mode(mode)
        self.last_route: MoCRoute | None = None

    def set_mode(self, mode: str) -> None:
        """Switch between ``"moc"`` and ``"dense"`` attention (same weights)."""
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                layout: MoCLayout | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, N, {self.dim}), got {tuple(x.shape)}")
        b, n, _ = x.shape
        heads = lambda t: t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.norm_q(self.q(x))), heads(self.norm_k(self.k(x))), heads(self.v(x))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.mode == "dense":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            if layout is None:
                raise ValueError("MoC attention needs a layout (MoCLayout of chunks / shots / text)")
            route = moc_route(q, k, layout, top_k=self.top_k, block_size=self.block_size,
                              shot_links=self.shot_links, causal=self.causal,
                              drop_off=self.drop_off if self.training else 0.0,
                              drop_in=self.drop_in if self.training else 0.0)
            self.last_route = route
            out = attention(q, k, v, route.mask, backend=self.backend)
        return self.o(out.transpose(1, 2).reshape(b, n, self.dim))

    def stats(self) -> dict[str, float]:
        """Counted sparsity and attention FLOPs of the last MoC call (all heads, batch mean): visited (query, key)
        pairs from the key-block lists; FLOPs = 4·d per pair (QKᵀ and PV), routing = pooling + scores."""
        r = self.last_route
        if r is None:
            return {}
        b, h, nb, c = r.selected.shape
        n = int(r.query_counts.sum())
        pairs = (r.visited_keys.double() * r.query_counts.double()).sum() / b
        d = self.head_dim
        attn = 4.0 * d * float(pairs)
        routing = h * (n * d + 2.0 * nb * c * d)
        return {"sparsity": 1.0 - float(pairs) / (h * n * n), "flops_attn": attn, "flops_routing": routing,
                "flops_moc": attn + routing, "flops_dense": 4.0 * d * h * n * n,
                "routed_chunks": float(r.routed.sum(-1).double().mean()),
                "selected_chunks": float(r.selected.sum(-1).double().mean())}

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.num_heads}, mode={self.mode}, top_k={self.top_k}, "
                f"block_size={self.block_size}, shot_links={self.shot_links}, causal={self.causal}")


class WanCrossAttention(nn.Module):
    """Wan 2.1 text cross-attention (q/k/v/o, RMS q/k norms over dim); an optional bool mask (B, N, L) restricts
    each visual token to its shot's caption tokens (local prompts) and the global ones."""

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool = True, eps: float = 1e-6):
        super().__init__()
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        L = context.shape[1]
        q = self.norm_q(self.q(x)).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.norm_k(self.k(context)).view(b, L, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v(context).view(b, L, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None])
        return self.o(out.transpose(1, 2).reshape(b, n, self.dim))


class WanBlock(nn.Module):
    """Wan 2.1 DiT block: AdaLN-modulated self-attention (MoC or dense), text cross-attention, GELU FFN.
    Keys: ``norm1`` / ``norm2`` (no affine), ``norm3`` (affine when ``cross_attn_norm``), ``self_attn``,
    ``cross_attn``, ``ffn.0`` / ``ffn.2``, ``modulation`` (1, 6, dim)."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, *, qk_norm: bool, cross_attn_norm: bool, eps: float,
                 attn_kwargs: dict[str, Any]):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = MoCAttention(dim, num_heads, qk_norm=qk_norm, eps=eps, **attn_kwargs)
        self.norm3 = nn.LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.cross_attn = WanCrossAttention(dim, num_heads, qk_norm=qk_norm, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x, e, context, rope, layout, text_mask):
        """x (B, N, dim); e (B, 6, dim) fp32 timestep modulation."""
        e = (self.modulation.float() + e).chunk(6, dim=1)
        y = self.self_attn((self.norm1(x).float() * (1 + e[1]) + e[0]).to(x.dtype), rope, layout)
        x = x + (y.float() * e[2]).to(x.dtype)
        x = x + self.cross_attn(self.norm3(x), context, text_mask)
        y = self.ffn((self.norm2(x).float() * (1 + e[4]) + e[3]).to(x.dtype))
        return x + (y.float() * e[5]).to(x.dtype)


class WanHead(nn.Module):
    """Output head: AdaLN (``modulation`` (1, 2, dim)) then ``head`` Linear(dim, out_dim * prod(patch))."""

    def __init__(self, dim: int, out_dim: int, patch_size, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim * math.prod(patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x, e):
        e = (self.modulation.float() + e[:, None]).chunk(2, dim=1)
        return self.head((self.norm(x).float() * (1 + e[1]) + e[0]).to(x.dtype))


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding: [cos(t·w), sin(t·w)], w_i = 10000^(-i / (dim/2)); t (B,) -> (B, dim) fp32."""
    half = dim // 2
    w = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=torch.float64) / half)
    a = torch.outer(t.double(), w)
    return torch.cat([a.cos(), a.sin()], 1).float()


# ------------------------------------------------------------------------------------------------------ model
class WanDiT(nn.Module):
    """Wan 2.1 text-to-video DiT whose self-attention is Mixture of Contexts or dense.

    forward(x, t, context, shots=None, text_shot=None) -> velocity (B, out_dim, F, H, W):
        x: (B, in_dim, F, H, W) latents (or pixels); t: (B,) timesteps in [0, num_train_timesteps] (Wan: sigma·1000);
        context: (B, L, text_dim) text-encoder embeddings (Wan: umT5, L = text_len 512, zero-padded);
        shots: optional per-frame shot ids (F,) int (after temporal patching) - multi-shot scenes; default one shot;
        text_shot: optional (B, L) int shot each text token captions (-1 = global); when given, a visual token
            cross-attends only to its shot's caption and the global tokens (local prompts).
    Attention mode: ``attention="moc" | "dense"`` at construction, :meth:`set_attention` later (zero-shot plug-in).
    MoC layout: one chunk per latent frame (paper, Appendix H), shot boundaries from ``shots``.
    """

    def __init__(self, in_dim: int = 16, out_dim: int = 16, dim: int = 1536, ffn_dim: int = 8960, freq_dim: int = 256,
                 text_dim: int = 4096, num_heads: int = 12, num_layers: int = 30, patch_size=(1, 2, 2),
                 qk_norm: bool = True, cross_attn_norm: bool = True, eps: float = 1e-6, text_len: int = 512,
                 attention: str = "dense", moc_top_k: int = 3, moc_block_size: int = 64, moc_shot_links: bool = True,
                 moc_causal: bool = False, moc_drop_off: float = 0.0, moc_drop_in: float = 0.0,
                 moc_backend: str = "auto"):
        super().__init__()
        patch_size = tuple(int(p) for p in patch_size)
        if len(patch_size) != 3 or min(patch_size) <= 0:
            raise ValueError(f"patch_size must be 3 positive ints (t, h, w), got {patch_size}")
        self.in_dim, self.out_dim, self.dim, self.freq_dim = in_dim, out_dim, dim, freq_dim
        self.num_heads, self.patch_size, self.text_len = num_heads, patch_size, text_len
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=patch_size, stride=patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        akw = dict(mode=attention, top_k=moc_top_k, block_size=moc_block_size, shot_links=moc_shot_links,
                   causal=moc_causal, drop_off=moc_drop_off, drop_in=moc_drop_in, backend=moc_backend)
        self.blocks = nn.ModuleList(
            WanBlock(dim, ffn_dim, num_heads, qk_norm=qk_norm, cross_attn_norm=cross_attn_norm, eps=eps,
                     attn_kwargs=akw) for _ in range(num_layers))
        self.head = WanHead(dim, out_dim, patch_size, eps)
        self.attention_mode = attention
        self._layout_cache: dict = {}
        self.init_weights()

    def init_weights(self) -> None:
        """Wan's initialisation: Xavier-uniform linears (zero bias), normal(0.02) text / time embeddings, Xavier
        patch embedding, zero output head."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for seq in (self.text_embedding, self.time_embedding):
            for m in seq:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)

    def set_attention(self, mode: str, **moc_options: Any) -> None:
        """Switch every self-attention to ``"moc"`` or ``"dense"`` (same weights; the paper's zero-shot plug-in).
        ``moc_options``: top_k, block_size, shot_links, causal, drop_off, drop_in, backend."""
        for blk in self.blocks:
            blk.self_attn.set_mode(mode)
            for key, val in moc_options.items():
                if not hasattr(blk.self_attn, key) or key in ("mode", "dim", "num_heads", "head_dim"):
                    raise ValueError(f"unknown MoC option {key!r}")
                setattr(blk.self_attn, key, val)
        self.attention_mode = mode

    def layout(self, grid: tuple[int, int, int], shots=None) -> MoCLayout:
        """MoC layout of a (F, H, W) token grid: one chunk per latent frame, shots from per-frame ids (F,)."""
        f, h, w = grid
        shot_frames = None
        if shots is not None:
            s = torch.as_tensor(shots).flatten().cpu()
            if s.numel() != f or bool((s[1:] < s[:-1]).any()):
                raise ValueError(f"shots must be {f} non-decreasing per-frame shot ids, got {s.tolist()}")
            shot_frames = torch.unique_consecutive(s, return_counts=True)[1].tolist()
        key = (grid, tuple(shot_frames or ()))
        if key not in self._layout_cache:
            self._layout_cache[key] = frame_layout(f, h * w, shot_frames)
        return self._layout_cache[key]

    def _token_shots(self, grid, shots, device) -> torch.Tensor:
        """(N,) shot id of every token on ``device`` (cached per grid / shots / device)."""
        fs = torch.as_tensor(shots if shots is not None else [0] * grid[0]).flatten().long().cpu()
        key = ("tok_shot", grid, tuple(fs.tolist()), str(device))
        if key not in self._layout_cache:
            self._layout_cache[key] = fs.repeat_interleave(grid[1] * grid[2]).to(device)
        return self._layout_cache[key]

    def moc_stats(self) -> dict[str, float]:
        """Sparsity / FLOPs of the last forward, summed over layers (sparsity: layer mean); {} in dense mode."""
        per = [blk.self_attn.stats() for blk in self.blocks]
        per = [p for p in per if p]
        if not per:
            return {}
        out = {k: sum(p[k] for p in per) for k in per[0]}
        for k in ("sparsity", "routed_chunks", "selected_chunks"):
            out[k] /= len(per)
        return out

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, shots=None,
                text_shot: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must be (B, {self.in_dim}, F, H, W), got {tuple(x.shape)}")
        b = x.shape[0]
        pt, ph, pw = self.patch_size
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise ValueError(f"x's (F, H, W) = {tuple(x.shape[2:])} must be multiples of patch_size {self.patch_size}")
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
        if context.dim() != 3 or context.shape[0] != b:
            raise ValueError(f"context must be (B={b}, L, text_dim), got {tuple(context.shape)}")
        h = self.patch_embedding(x)
        grid = tuple(h.shape[2:])
        h = h.flatten(2).transpose(1, 2)  # (B, N, dim), frame-major
        n = h.shape[1]
        e = self.time_embedding(sinusoidal_embedding(self.freq_dim, t).to(self.time_embedding[0].weight.dtype)).float()
        e0 = self.time_projection(e.to(self.time_projection[1].weight.dtype)).float().unflatten(1, (6, self.dim))
        ctx = self.text_embedding(context.to(self.text_embedding[0].weight.dtype))
        rope = rope_3d_tables(self.dim // self.num_heads, grid, device=x.device)
        layout = self.layout(grid, shots) if self.attention_mode == "moc" else None
        text_mask = None
        if text_shot is not None:
            tok_shot = self._token_shots(grid, shots, x.device)  # (N,)
            text_mask = (text_shot[:, None, :] < 0) | (text_shot[:, None, :] == tok_shot[None, :, None])
            text_mask = text_mask | ~text_mask.any(-1, keepdim=True)  # a token without caption sees all text
            text_mask = text_mask.expand(b, n, text_shot.shape[1])
        for blk in self.blocks:
            h = blk(h, e0, ctx, rope, layout, text_mask)
        out = self.head(h, e)  # (B, N, out * prod(patch))
        f, hh, ww = grid
        out = out.view(b, f, hh, ww, pt, ph, pw, self.out_dim)
        return torch.einsum("bfhwpqrc->bcfphqwr", out).reshape(b, self.out_dim, f * pt, hh * ph, ww * pw)


# ------------------------------------------------------------------------------------------------------ registry
_WAN_TITLE = "Mixture of Contexts for Long Video Generation (on the Wan 2.1 DiT)"
_CITATION = ("@inproceedings{cai2026moc, title={Mixture of Contexts for Long Video Generation}, author={Cai, Shengqu "
             "and Yang, Ceyuan and Zhang, Lvmin and others}, booktitle={ICLR}, year={2026}}")

WAN_1_3B = dict(in_dim=16, out_dim=16, dim=1536, ffn_dim=8960, freq_dim=256, text_dim=4096, num_heads=12,
                num_layers=30, patch_size=(1, 2, 2), qk_norm=True, cross_attn_norm=True, eps=1e-6, text_len=512)
WAN_1_3B_PARAMS = 1_418_996_800

# The zoo's small multi-shot DiT (pixel space 3 x 16 x 32 x 32, patch (1, 4, 4): 64 tokens per frame).
SMALL = dict(in_dim=3, out_dim=3, dim=256, ffn_dim=1024, freq_dim=256, text_dim=32, num_heads=4, num_layers=6,
             patch_size=(1, 4, 4), qk_norm=True, cross_attn_norm=True, eps=1e-6, text_len=32, moc_block_size=64)


@register_model(paper="arXiv:2508.21058", title=_WAN_TITLE, task="text-to-video", license="apache-2.0",
                input_spec={"shape": (16, 21, 60, 104), "dtype": "float32"}, citation=_CITATION)
def wan21_t2v_1_3b(**kwargs: Any) -> WanDiT:
    """Wan-2.1-T2V-1.3B transformer (1,418,996,800 params), attention dense by default; ``attention="moc"`` plugs
    MoC in (paper, Appendix H: chunk = one latent frame = 1560 tokens at 480p, top-k 3). Load the released weights
    with :func:`convert_checkpoint` (diffusers or original layout)."""
    return WanDiT(**{**WAN_1_3B, **kwargs})


@register_model(paper="arXiv:2508.21058", title=_WAN_TITLE + ", small multi-shot DiT", task="text-to-video",
                license="apache-2.0", input_spec={"shape": (3, 16, 32, 32), "dtype": "float32"}, citation=_CITATION,
                pretrained={"multishot_fmnist": PretrainedSource(
                    repo_id="zoo-models/moc_dit_small.multishot_fmnist", dataset="multi_shot_fmnist")})
def moc_dit_small(**kwargs: Any) -> WanDiT:
    """Small Wan-style DiT (6,955,824 params) for the zoo's synthetic multi-shot video task (pixel space 32x32, 16
    frames = 4 shots of 4, 1024 tokens); ``attention="moc"`` (chunk = frame, top-k 3, shot links) or "dense"."""
    return WanDiT(**{**SMALL, **kwargs})


# ------------------------------------------------------------------------------------------------------ converters
# diffusers WanTransformer3DModel name -> original Wan 2.1 name (which the zoo uses). diffusers calls the original
# norm3 (affine, before cross-attention) norm2 and the original norm2 norm3 (both without parameters).
_DIFFUSERS_TO_WAN = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1.to_out.0", "self_attn.o"), ("attn1.to_q", "self_attn.q"), ("attn1.to_k", "self_attn.k"),
    ("attn1.to_v", "self_attn.v"), ("attn1.norm_q", "self_attn.norm_q"), ("attn1.norm_k", "self_attn.norm_k"),
    ("attn2.to_out.0", "cross_attn.o"), ("attn2.to_q", "cross_attn.q"), ("attn2.to_k", "cross_attn.k"),
    ("attn2.to_v", "cross_attn.v"), ("attn2.norm_q", "cross_attn.norm_q"), ("attn2.norm_k", "cross_attn.norm_k"),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
]


def convert_wan_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers ``WanTransformer3DModel`` state dict -> the zoo's (original Wan 2.1) names. Original-layout keys
    pass through unchanged, so either layout converts. Raises ``ValueError`` on keys of other Wan variants (image
    embedder of I2V / VACE)."""
    out: dict[str, torch.Tensor] = {}
    for key, val in state_dict.items():
        new = key
        if new.startswith("model."):  # some original checkpoints wrap the model
            new = new[len("model."):]
        if any(s in new for s in ("image_embedder", "img_emb", "add_k_proj", "add_v_proj", "vace")):
            raise ValueError(f"key {key!r} belongs to an image-conditioned / VACE Wan variant, not T2V")
        for a, b in _DIFFUSERS_TO_WAN:
            new = new.replace(a, b)
        if new == "proj_out.weight" or new == "proj_out.bias":
            new = "head.head." + new.split(".")[-1]
        elif new == "scale_shift_table":
            new = "head.modulation"
        elif new.startswith("blocks.") and new.endswith(".scale_shift_table"):
            new = new[: -len("scale_shift_table")] + "modulation"
        elif new.startswith("blocks.") and ".norm2." in new and "attn" not in new:
            new = new.replace(".norm2.", ".norm3.")  # diffusers norm2 = original norm3 (the affine one)
        if new in out:
            raise ValueError(f"two keys map to {new!r} (mixed layouts?)")
        out[new] = val
    return out


def convert_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Released Wan-2.1-T2V-1.3B transformer weights -> the zoo's state dict. ``path``: a ``.safetensors`` file or a
    folder of them (diffusers ``transformer/diffusion_pytorch_model*.safetensors`` or the original
    ``diffusion_pytorch_model.safetensors``), or an original ``.pth`` (read with ``weights_only=True``)."""
    from pathlib import Path

    from safetensors.torch import load_file

    p = Path(path)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not files:
        raise ValueError(f"no .safetensors files in {path}")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            sd.update(load_file(str(f)))
        elif f.suffix in (".pth", ".pt"):
            sd.update(torch.load(str(f), weights_only=True, map_location="cpu"))
        else:
            raise ValueError(f"unsupported checkpoint file {f}")
    return convert_wan_diffusers(sd)
