"""Attention masks as small composable value objects.

Every mask is a frozen value object; ``a & b`` intersects two masks into a normalised :class:`MaskSpec`.

Alignment convention (FlashAttention-2 >= 2.1, "bottom-right"): positions are counted per sequence, query ``i`` in
``[0, Lq)`` and key ``j`` in ``[0, Lk)``, with ``off = Lk - Lq``. Dense batches use ``Lq = Nq`` and ``Lk = Nk``
(key padding does not move the alignment); packed varlen batches use each sequence's own lengths.

- ``Causal()``: ``j <= i + off``.
- ``SlidingWindow(left, right)``: ``i + off - left <= j <= i + off + right``; ``-1`` leaves that side unbounded.
- ``KeyPadding(lengths)``: key ``j`` of batch ``b`` is visible only when ``j < lengths[b]``.
- ``Varlen(cu_seqlens_q, cu_seqlens_k)``: packed sequences (q is ``(1, H, total_q, D)``); a query sees only keys
  of its own sequence.
- ``BlockSparse(block_indices, block_counts, block_size)``: query block ``n`` of batch ``b``, head ``h`` sees
  key blocks ``block_indices[b, h, n, :block_counts[b, h, n]]``; key block ``m`` = keys ``[m*bs, (m+1)*bs)``.
  With ``Varlen`` the block positions are positions in the packed tensor.

A query row with no visible key returns zeros (and zero gradient).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "BlockSparse",
    "Causal",
    "KeyPadding",
    "Mask",
    "MaskSpec",
    "SlidingWindow",
    "Varlen",
    "as_spec",
]


def _tracing() -> bool:
    """True under torch.compile / torch.export tracing, where data-dependent checks must be skipped."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _check_int_tensor(name: str, t: Any, ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of dtype int32, got {type(t).__name__}")
    if t.dtype != torch.int32:
        raise TypeError(f"{name} must have dtype torch.int32, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    return t


def _check_window_side(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int (-1 for unbounded), got {type(v).__name__}")
    if v < -1:
        raise ValueError(f"{name} must be >= 0 or -1 (unbounded), got {v}")
    return v


def _min_side(a: int, b: int) -> int:
    """Intersection of two window sides, -1 meaning unbounded."""
    if a == -1:
        return b
    if b == -1:
        return a
    return min(a, b)


class Mask:
    """Base class of the attention masks; ``a & b`` gives their intersection as a :class:`MaskSpec`."""

    def to_spec(self) -> MaskSpec:  # pragma: no cover - overridden
        raise NotImplementedError

    def __and__(self, other: Mask) -> MaskSpec:
        if not isinstance(other, Mask):
            return NotImplemented
        return self.to_spec().intersect(other.to_spec())

    # Convenience: every mask can produce what MaskSpec produces.
    def kernel_kwargs(self) -> dict:
        """Keyword arguments of the Triton kernels ``attention_fwd`` / ``attention_bwd``."""
        return self.to_spec().kernel_kwargs()

    def dense(self, batch: int, heads_q: int, heads_kv: int, nq: int, nk: int, device=None,
              q_rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Dense boolean visibility mask, see :meth:`MaskSpec.dense`."""
        return self.to_spec().dense(batch, heads_q, heads_kv, nq, nk, device, q_rows)

    def mask_mod(self, heads_q: int, heads_kv: int, nq: int, nk: int, device=None) -> Callable:
        """FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool``, see :meth:`MaskSpec.mask_mod`."""
        return self.to_spec().mask_mod(heads_q, heads_kv, nq, nk, device)

    def block_mask(self, batch: int, heads_q: int, heads_kv: int, nq: int, nk: int, device=None, **kw):
        """FlexAttention ``BlockMask``, see :meth:`MaskSpec.block_mask`."""
        return self.to_spec().block_mask(batch, heads_q, heads_kv, nq, nk, device, **kw)


@dataclass(frozen=True, eq=False)
class Causal(Mask):
    """Causal mask, bottom-right aligned: query ``i`` sees keys ``j <= i + (Lk - Lq)``."""

    def to_spec(self) -> MaskSpec:
        return MaskSpec(causal=True)

    def __eq__(self, other):
        return isinstance(other, Causal)

    def __hash__(self):
        return hash("Causal")


@dataclass(frozen=True, eq=True)
class SlidingWindow(Mask):
    """Band ``i + off - left <= j <= i + off + right`` (``off = Lk - Lq``); ``-1`` = that side unbounded.

    ``SlidingWindow(w - 1, 0)`` is causal attention over the last ``w`` keys; ``SlidingWindow(L, R)`` is the
    Transformer Transducer's limited left/right context.
    """

    left: int = -1
    right: int = -1

    def __post_init__(self):
        _check_window_side("left", self.left)
        _check_window_side("right", self.right)

    def to_spec(self) -> MaskSpec:
        return MaskSpec(window_left=self.left, window_right=self.right)


@dataclass(frozen=True, eq=False)
class KeyPadding(Mask):
    """Key padding: key ``j`` of batch ``b`` is visible only when ``j < lengths[b]``.

    lengths: (B,) int32, values in ``[0, Nk]`` (checked against ``Nk`` when attention is called).
    """

    lengths: torch.Tensor
    max_length: int = dataclasses.field(default=-1, compare=False)

    def __post_init__(self):
        _check_int_tensor("lengths", self.lengths, 1)
        if self.max_length == -1 and not _tracing() and self.lengths.numel() > 0:
            lo, hi = int(self.lengths.min()), int(self.lengths.max())
            if lo < 0:
                raise ValueError(f"lengths must be >= 0, got min {lo}")
            object.__setattr__(self, "max_length", hi)

    def to_spec(self) -> MaskSpec:
        return MaskSpec(seqlens_k=self.lengths, _max_seqlen_k_pad=self.max_length)


@dataclass(frozen=True, eq=False)
class Varlen(Mask):
    """Packed variable-length sequences: q is ``(1, Hq, total_q, D)``, k/v ``(1, Hkv, total_k, D)``.

    cu_seqlens_q, cu_seqlens_k: (S + 1,) int32, non-decreasing, starting at 0, ending at total_q / total_k, on the
    device of q. max_seqlen_q / max_seqlen_k: the longest sequence (computed from the data when 0).
    """

    cu_seqlens_q: torch.Tensor
    cu_seqlens_k: torch.Tensor
    max_seqlen_q: int = 0
    max_seqlen_k: int = 0

    def __post_init__(self):
        cq = _check_int_tensor("cu_seqlens_q", self.cu_seqlens_q, 1)
        ck = _check_int_tensor("cu_seqlens_k", self.cu_seqlens_k, 1)
        if cq.shape != ck.shape:
            raise ValueError(
                f"cu_seqlens_q and cu_seqlens_k must have the same shape (S + 1,), got {tuple(cq.shape)} and "
                f"{tuple(ck.shape)}"
            )
        if cq.numel() < 2:
            raise ValueError(f"cu_seqlens_q must hold at least 2 entries (S + 1 with S >= 1), got {cq.numel()}")
        if cq.device != ck.device:
            raise ValueError(f"cu_seqlens_q ({cq.device}) and cu_seqlens_k ({ck.device}) must be on one device")
        for name in ("max_seqlen_q", "max_seqlen_k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0 (0 = compute from cu_seqlens), got {v!r}")
        if _tracing():
            return
        for name, cu, mx in (("cu_seqlens_q", cq, "max_seqlen_q"), ("cu_seqlens_k", ck, "max_seqlen_k")):
            c = cu.detach().to("cpu", torch.int64)
            if int(c[0]) != 0:
                raise ValueError(f"{name} must start at 0, got {int(c[0])}")
            d = c[1:] - c[:-1]
            if bool((d < 0).any()):
                raise ValueError(f"{name} must be non-decreasing, got {c.tolist()}")
            longest = int(d.max())
            given = getattr(self, mx)
            if given == 0:
                object.__setattr__(self, mx, longest)
            elif given < longest:
                raise ValueError(f"{mx}={given} is smaller than the longest sequence in {name} ({longest})")
        object.__setattr__(self, "_total_q", int(cq[-1]))
        object.__setattr__(self, "_total_k", int(ck[-1]))

    def to_spec(self) -> MaskSpec:
        return MaskSpec(
            cu_seqlens_q=self.cu_seqlens_q,
            cu_seqlens_k=self.cu_seqlens_k,
            max_seqlen_q=self.max_seqlen_q,
            max_seqlen_k=self.max_seqlen_k,
            _total_q=getattr(self, "_total_q", -1),
            _total_k=getattr(self, "_total_k", -1),
        )


@dataclass(frozen=True, eq=False)
class BlockSparse(Mask):
    """Per query block, the list of key blocks to visit.

    block_indices: (B, Hb, ceil(Nq / block_size), max_blocks) int32, key block ids (only the first
    ``block_counts`` entries of a row are read; they must be distinct and in ``[0, ceil(Nk / block_size))``).
    block_counts: (B, Hb, ceil(Nq / block_size)) int32 in ``[0, max_blocks]``. Hb = Hq or Hkv (shared by the GQA
    group). block_size: tokens per block (query and key blocks alike).
    """

    block_indices: torch.Tensor
    block_counts: torch.Tensor
    block_size: int

    def __post_init__(self):
        bi, bc = self._check_layout(self.block_indices, self.block_counts, self.block_size)
        if _tracing() or bc.numel() == 0:
            return
        cnt = bc.detach().to("cpu", torch.int64)
        if int(cnt.min()) < 0 or int(cnt.max()) > bi.shape[3]:
            raise ValueError(
                f"block_counts must lie in [0, max_blocks={bi.shape[3]}], got range [{int(cnt.min())}, {int(cnt.max())}]"
            )
        idx = bi.detach().to("cpu", torch.int64)
        used = torch.arange(bi.shape[3]) < cnt[..., None]
        if bool(used.any()):
            vals = idx[used]
            if int(vals.min()) < 0:
                raise ValueError(f"block_indices must be >= 0 where used, got min {int(vals.min())}")
            object.__setattr__(self, "_max_index", int(vals.max()))
            s = torch.where(used, idx, torch.full_like(idx, -1)).sort(-1).values
            dup = (s[..., 1:] == s[..., :-1]) & (s[..., 1:] >= 0)
            if bool(dup.any()):
                raise ValueError("block_indices must not repeat a key block within one query block's list")

    @staticmethod
    def _check_layout(bi, bc, bs):
        """Dtype / shape / device checks (host metadata only, no device sync)."""
        bi = _check_int_tensor("block_indices", bi, 4)
        bc = _check_int_tensor("block_counts", bc, 3)
        if isinstance(bs, bool) or not isinstance(bs, int) or bs <= 0:
            raise ValueError(f"block_size must be a positive int, got {bs!r}")
        if bi.shape[:3] != bc.shape:
            raise ValueError(
                f"block_counts must have shape block_indices.shape[:3] = {tuple(bi.shape[:3])}, got {tuple(bc.shape)}"
            )
        if bi.device != bc.device:
            raise ValueError(f"block_indices ({bi.device}) and block_counts ({bc.device}) must be on one device")
        return bi, bc

    @classmethod
    def trusted(cls, block_indices: torch.Tensor, block_counts: torch.Tensor, block_size: int,
                max_index: int = -1) -> BlockSparse:
        """``BlockSparse`` for lists built by the caller and valid by construction (e.g. NSA's top-n selection):
        only the dtype / shape / device checks run; the value checks (counts in range, indices >= 0 and distinct),
        which copy the lists to the host and so wait for the GPU, are skipped. ``max_index``: an upper bound of the
        used block ids known on the host (checked against the key length when attention is called), -1 = unknown.
        Invalid lists are not caught: they give wrong attention or out-of-bounds reads in the kernels."""
        cls._check_layout(block_indices, block_counts, block_size)
        if isinstance(max_index, bool) or not isinstance(max_index, int) or max_index < -1:
            raise ValueError(f"max_index must be an int >= -1, got {max_index!r}")
        obj = object.__new__(cls)
        object.__setattr__(obj, "block_indices", block_indices)
        object.__setattr__(obj, "block_counts", block_counts)
        object.__setattr__(obj, "block_size", block_size)
        if max_index >= 0:
            object.__setattr__(obj, "_max_index", max_index)
        return obj

    def to_spec(self) -> MaskSpec:
        return MaskSpec(
            block_indices=self.block_indices,
            block_counts=self.block_counts,
            block_size=self.block_size,
            _max_block_index=getattr(self, "_max_index", -1),
        )


@dataclass(frozen=True, eq=False)
class MaskSpec(Mask):
    """Normalised intersection of masks, holding exactly the keyword arguments of the Triton kernels.

    Normal form: ``causal`` means "right bound 0"; so ``Causal() & SlidingWindow(l, r)`` becomes
    ``causal=True, window_left=l, window_right=-1`` and ``SlidingWindow(l, 0)`` likewise.
    """

    causal: bool = False
    window_left: int = -1
    window_right: int = -1
    seqlens_k: torch.Tensor | None = None
    cu_seqlens_q: torch.Tensor | None = None
    cu_seqlens_k: torch.Tensor | None = None
    max_seqlen_q: int = 0
    max_seqlen_k: int = 0
    block_indices: torch.Tensor | None = None
    block_counts: torch.Tensor | None = None
    block_size: int = 0
    # Host-side summaries computed once at construction (-1 = unknown, e.g. built while tracing).
    _max_seqlen_k_pad: int = -1
    _total_q: int = -1
    _total_k: int = -1
    _max_block_index: int = -1

    def __post_init__(self):
        _check_window_side("window_left", self.window_left)
        _check_window_side("window_right", self.window_right)
        if self.causal or self.window_right == 0:
            object.__setattr__(self, "causal", True)
            object.__setattr__(self, "window_right", -1)

    def to_spec(self) -> MaskSpec:
        return self

    # ---------------------------------------------------------------- composition
    def intersect(self, o: MaskSpec) -> MaskSpec:
        """Intersection of two specs; raises ``ValueError`` for combinations without a defined meaning."""
        kw: dict[str, Any] = {}
        kw["causal"] = self.causal or o.causal
        kw["window_left"] = _min_side(self.window_left, o.window_left)
        kw["window_right"] = _min_side(self.window_right, o.window_right)
        if self.seqlens_k is not None and o.seqlens_k is not None:
            if self.seqlens_k.shape != o.seqlens_k.shape:
                raise ValueError(
                    f"KeyPadding & KeyPadding: lengths shapes differ ({tuple(self.seqlens_k.shape)} vs "
                    f"{tuple(o.seqlens_k.shape)})"
                )
            kw["seqlens_k"] = torch.minimum(self.seqlens_k, o.seqlens_k)
            kw["_max_seqlen_k_pad"] = min(self._max_seqlen_k_pad, o._max_seqlen_k_pad)
            if -1 in (self._max_seqlen_k_pad, o._max_seqlen_k_pad):
                kw["_max_seqlen_k_pad"] = -1
        else:
            src = self if self.seqlens_k is not None else o
            kw["seqlens_k"] = src.seqlens_k
            kw["_max_seqlen_k_pad"] = src._max_seqlen_k_pad
        if self.cu_seqlens_q is not None and o.cu_seqlens_q is not None:
            same = (self.cu_seqlens_q is o.cu_seqlens_q and self.cu_seqlens_k is o.cu_seqlens_k) or (
                not _tracing()
                and torch.equal(self.cu_seqlens_q, o.cu_seqlens_q)
                and torch.equal(self.cu_seqlens_k, o.cu_seqlens_k)
            )
            if not same:
                raise ValueError("Varlen & Varlen: the two masks have different cu_seqlens; intersect one packing only")
        src = self if self.cu_seqlens_q is not None else o
        kw.update(
            cu_seqlens_q=src.cu_seqlens_q,
            cu_seqlens_k=src.cu_seqlens_k,
            max_seqlen_q=src.max_seqlen_q,
            max_seqlen_k=src.max_seqlen_k,
            _total_q=src._total_q,
            _total_k=src._total_k,
        )
        if self.block_indices is not None and o.block_indices is not None:
            raise ValueError("BlockSparse & BlockSparse is not supported: merge the block lists into one BlockSparse")
        src = self if self.block_indices is not None else o
        kw.update(
            block_indices=src.block_indices,
            block_counts=src.block_counts,
            block_size=src.block_size,
            _max_block_index=src._max_block_index,
        )
        if kw["seqlens_k"] is not None and kw["cu_seqlens_q"] is not None:
            raise ValueError(
                "KeyPadding cannot be combined with Varlen: shorten the sequences in cu_seqlens_k instead"
            )
        return MaskSpec(**kw)

    # ---------------------------------------------------------------- classification
    @property
    def has_window(self) -> bool:
        return self.window_left != -1 or self.window_right != -1

    @property
    def is_varlen(self) -> bool:
        return self.cu_seqlens_q is not None

    @property
    def is_block_sparse(self) -> bool:
        return self.block_indices is not None

    @property
    def is_empty(self) -> bool:
        """True when the spec masks nothing (full attention)."""
        return not (
            self.causal or self.has_window or self.seqlens_k is not None or self.is_varlen or self.is_block_sparse
        )

    @property
    def is_causal_only(self) -> bool:
        return self.causal and not (
            self.has_window or self.seqlens_k is not None or self.is_varlen or self.is_block_sparse
        )

    @property
    def kind(self) -> str:
        """Coarse mask kind for dispatch: none, causal, padding, window, varlen, blocksparse (heaviest wins)."""
        if self.is_block_sparse:
            return "blocksparse"
        if self.is_varlen:
            return "varlen"
        if self.has_window:
            return "window"
        if self.seqlens_k is not None:
            return "padding"
        if self.causal:
            return "causal"
        return "none"

    def tensors(self) -> list[torch.Tensor]:
        return [
            t
            for t in (self.seqlens_k, self.cu_seqlens_q, self.cu_seqlens_k, self.block_indices, self.block_counts)
            if t is not None
        ]

    # ---------------------------------------------------------------- validation against shapes
    def validate(self, batch: int, heads_q: int, heads_kv: int, nq: int, nk: int, device: torch.device) -> None:
        """Check the spec against q (batch, heads_q, nq, .) and k (batch, heads_kv, nk, .); raises ValueError."""
        for name in ("seqlens_k", "cu_seqlens_q", "cu_seqlens_k", "block_indices", "block_counts"):
            t = getattr(self, name)
            if t is not None and t.device != device:
                raise ValueError(f"{name} is on {t.device} but q is on {device}; move the mask to q's device")
        if self.seqlens_k is not None:
            if self.seqlens_k.shape[0] != batch:
                raise ValueError(f"KeyPadding lengths must have shape ({batch},) (batch of q), got "
                                 f"{tuple(self.seqlens_k.shape)}")
            if self._max_seqlen_k_pad > nk:
                raise ValueError(f"KeyPadding lengths must be <= Nk={nk} (keys in k), got max {self._max_seqlen_k_pad}")
        if self.is_varlen:
            if batch != 1:
                raise ValueError(f"Varlen expects packed q of batch 1, shape (1, Hq, total_q, D); got batch {batch}")
            if self._total_q not in (-1, nq):
                raise ValueError(f"cu_seqlens_q[-1]={self._total_q} must equal the packed query length q.shape[2]={nq}")
            if self._total_k not in (-1, nk):
                raise ValueError(f"cu_seqlens_k[-1]={self._total_k} must equal the packed key length k.shape[2]={nk}")
        if self.is_block_sparse:
            bi, bs = self.block_indices, self.block_size
            nqb, nkb = math.ceil(nq / bs), math.ceil(nk / bs)
            if bi.shape[0] != batch:
                raise ValueError(f"block_indices must have batch {batch} (batch of q), got shape {tuple(bi.shape)}")
            if bi.shape[1] not in (heads_q, heads_kv):
                raise ValueError(
                    f"block_indices.shape[1] must be Hq={heads_q} or Hkv={heads_kv}, got {bi.shape[1]}"
                )
            if bi.shape[2] != nqb:
                raise ValueError(
                    f"block_indices.shape[2] must be ceil(Nq / block_size) = {nqb}, got {bi.shape[2]}"
                )
            if self._max_block_index >= nkb:
                raise ValueError(
                    f"block_indices must be < ceil(Nk / block_size) = {nkb}, got {self._max_block_index}"
                )

    # ---------------------------------------------------------------- producers
    def kernel_kwargs(self) -> dict:
        """Keyword arguments of the Triton kernels ``attention_fwd`` / ``attention_bwd``."""
        return {
            "causal": self.causal,
            "window_left": self.window_left,
            "window_right": self.window_right,
            "seqlens_k": self.seqlens_k,
            "cu_seqlens_q": self.cu_seqlens_q,
            "cu_seqlens_k": self.cu_seqlens_k,
            "max_seqlen_q": self.max_seqlen_q,
            "max_seqlen_k": self.max_seqlen_k,
            "block_indices": self.block_indices,
            "block_counts": self.block_counts,
            "block_size": self.block_size,
        }

    def _positions(self, nq: int, nk: int, device):
        """Per-row (query) and per-column (key) positions, sequence ids and offsets ``Lk - Lq``.

        Returns qpos (nq,), kpos (nk,), qseq (nq,) or None, kseq (nk,) or None, off (nq,) or int.
        """
        qi = torch.arange(nq, device=device)
        kj = torch.arange(nk, device=device)
        if not self.is_varlen:
            return qi, kj, None, None, nk - nq
        cq = self.cu_seqlens_q.to(device=device, dtype=torch.int64)
        ck = self.cu_seqlens_k.to(device=device, dtype=torch.int64)
        qseq = torch.searchsorted(cq[1:], qi, right=True)  # sequence of each packed query row
        kseq = torch.searchsorted(ck[1:], kj, right=True)
        nseq = cq.numel() - 1
        qseq_c, kseq_c = qseq.clamp(max=nseq - 1), kseq.clamp(max=nseq - 1)
        qpos = qi - cq[qseq_c]
        kpos = kj - ck[kseq_c]
        lq, lk = cq[1:] - cq[:-1], ck[1:] - ck[:-1]
        off = (lk - lq)[qseq_c]
        return qpos, kpos, qseq, kseq, off

    def _block_table(self, heads_q: int, heads_kv: int, nq: int, nk: int, device) -> torch.Tensor:
        """(B, Hq, ceil(Nq/bs), ceil(Nk/bs)) bool: key block visited by query block."""
        bi, bc, bs = self.block_indices.to(device), self.block_counts.to(device), self.block_size
        b, hb, nqb, mb = bi.shape
        nkb = math.ceil(nk / bs)
        used = torch.arange(mb, device=device) < bc[..., None].long()
        idx = torch.where(used, bi.long(), torch.full_like(bi, nkb, dtype=torch.long))
        table = torch.zeros(b, hb, nqb, nkb + 1, dtype=torch.bool, device=device)
        table.scatter_(-1, idx, used)
        table = table[..., :nkb]
        if hb != heads_q:
            table = table.repeat_interleave(heads_q // hb, dim=1)
        return table

    def dense(self, batch: int, heads_q: int, heads_kv: int, nq: int, nk: int, device=None,
              q_rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Dense boolean visibility mask, True = attend. Shape (B or 1, Hq or 1, Nq, Nk), broadcastable to
        (B, Hq, Nq, Nk); the head dimension is Hq only for block-sparse masks. ``q_rows=(r0, r1)`` builds only
        query rows ``[r0, r1)`` (for chunked evaluation of long sequences)."""
        qpos, kpos, qseq, kseq, off = self._positions(nq, nk, device)
        r0, r1 = q_rows if q_rows is not None else (0, nq)
        qpos = qpos[r0:r1]
        if qseq is not None:
            qseq = qseq[r0:r1]
            off = off[r0:r1]
        qp = qpos[:, None]
        kp = kpos[None, :]
        offc = off[:, None] if isinstance(off, torch.Tensor) else off
        m = torch.ones(r1 - r0, nk, dtype=torch.bool, device=device)
        if qseq is not None:
            m = m & (qseq[:, None] == kseq[None, :])
        if self.causal:
            m = m & (kp <= qp + offc)
        if self.window_left != -1:
            m = m & (kp >= qp + offc - self.window_left)
        if self.window_right != -1:
            m = m & (kp <= qp + offc + self.window_right)
        m = m[None, None]
        if self.seqlens_k is not None:
            lens = self.seqlens_k.to(device=device, dtype=torch.int64)
            m = m & (torch.arange(nk, device=device)[None, None, None, :] < lens[:, None, None, None])
        if self.is_block_sparse:
            bs = self.block_size
            table = self._block_table(heads_q, heads_kv, nq, nk, device)
            qb = torch.arange(r0, r1, device=device) // bs
            kb = torch.arange(nk, device=device) // bs
            m = m & table[:, :, qb][:, :, :, kb]
        return m

    def mask_mod(self, heads_q: int, heads_kv: int, nq: int, nk: int, device=None) -> Callable:
        """FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool`` with the same semantics as :meth:`dense`."""
        causal, wl, wr = self.causal, self.window_left, self.window_right
        lens = self.seqlens_k.to(device) if self.seqlens_k is not None else None
        if self.is_varlen:
            qpos, kpos, qseq, kseq, off = self._positions(nq, nk, device)
        else:
            qpos = kpos = qseq = kseq = None
            off = nk - nq
        table = self._block_table(heads_q, heads_kv, nq, nk, device) if self.is_block_sparse else None
        bs = self.block_size

        def mask_mod(b, h, q_idx, kv_idx):
            if qseq is not None:
                qp, kp, o = qpos[q_idx], kpos[kv_idx], off[q_idx]
                ok = qseq[q_idx] == kseq[kv_idx]
            else:
                qp, kp, o = q_idx, kv_idx, off
                ok = q_idx >= 0
            if causal:
                ok = ok & (kp <= qp + o)
            if wl != -1:
                ok = ok & (kp >= qp + o - wl)
            if wr != -1:
                ok = ok & (kp <= qp + o + wr)
            if lens is not None:
                ok = ok & (kv_idx < lens[b])
            if table is not None:
                ok = ok & table[b, h, q_idx // bs, kv_idx // bs]
            return ok

        return mask_mod

    @property
    def depends_on_batch(self) -> bool:
        return self.seqlens_k is not None or self.is_block_sparse

    @property
    def depends_on_head(self) -> bool:
        return self.is_block_sparse

    def block_mask(self, batch: int, heads_q: int, heads_kv: int, nq: int, nk: int, device=None,
                   block_size: int = 128, compile: bool = False):
        """FlexAttention ``BlockMask`` built with ``create_block_mask`` from :meth:`mask_mod` (B / H broadcast when
        the mask does not depend on them). ``compile=True`` avoids materialising the mask (use it on CUDA)."""
        from torch.nn.attention.flex_attention import create_block_mask

        device = torch.device("cpu") if device is None else torch.device(device)
        mm = self.mask_mod(heads_q, heads_kv, nq, nk, device)
        return create_block_mask(
            mm,
            batch if self.depends_on_batch else None,
            heads_q if self.depends_on_head else None,
            nq,
            nk,
            device=device,
            BLOCK_SIZE=block_size,
            _compile=compile,
        )


def as_spec(mask: Mask | None) -> MaskSpec | None:
    """Normalise ``None`` / any mask object to a :class:`MaskSpec` (``None`` when nothing is masked)."""
    if mask is None:
        return None
    if not isinstance(mask, Mask):
        raise TypeError(
            f"mask must be a zoo.kernels mask object (Causal, SlidingWindow, KeyPadding, Varlen, BlockSparse or their "
            f"'&'), got {type(mask).__name__}"
        )
    spec = mask.to_spec()
    return None if spec.is_empty else spec
