"""ClustViT: clustering-based token merging for semantic segmentation (Montello, Güldenring, Nalpantidis; arXiv
2510.01948, ICRA 2026). Official code: github.com/DTU-PAS/clustvit (mmsegmentation 1.x), Apache-2.0.

A plain ViT (mmseg layout and key names) gets a *Cluster* module before layer ``ip``: an MLP D -> H -> k+1 labels
every patch token (hard argmax; id 0 = keep, ids 1..k = clusters), each cluster is replaced by the mean of its
members, kept tokens are compacted per image and right-padded, and the remaining layers run on
``[CLS, kept..., pad, k cluster tokens]`` with a key-padding mask. The *regenerator* (``expand_mlp``) rebuilds the
token grid: kept tokens keep their own output, a clustered position gets
``expand_mlp(cat[its token before clustering, its cluster token now])``. A Segmenter mask-transformer head decodes.

Inside this module the merged sequence is stored as ``[CLS, k cluster tokens, kept..., pad]``: attention is
permutation-equivariant, so this is the official computation, and the padding becomes a suffix that
``zoo.kernels.attention``'s ``KeyPadding(lengths)`` masks. ``reparameterize()`` switches to the static-shape form
for export (all ``1 + N + k`` slots kept, a boolean key mask instead of compaction; same outputs, tested).

Reads top-down: layers -> backbone -> head -> segmentor -> variants / registry -> converters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.kernels import KeyPadding, Varlen, attention
from zoo.registry import PretrainedSource, register_model

__all__ = [
    "ClustViT",
    "ClustViTSegmenter",
    "ClusterInfo",
    "SegmenterMaskHead",
    "clustvit_config_from_state_dict",
    "convert_checkpoint",
    "convert_timm_vit",
    "get_clusters",
    "load_timm_vit_",
    "pseudo_cluster_labels",
    "clust_loss",
    "segmentation_ce",
]

IGNORE_INDEX = 255
PATCH = 16


# ---------------------------------------------------------------------------------------------------------- layers
def _linspace(end: float, n: int) -> list[float]:
    """``torch.linspace(0, end, n).tolist()`` without a tensor (so models build on the meta device)."""
    return [end * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (x (B, ...)); identity in eval or when p == 0."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class _MHAWeights(nn.Module):
    """Parameter holder with ``torch.nn.MultiheadAttention``'s names (``in_proj_weight``, ``in_proj_bias``,
    ``out_proj``), as mmcv's MultiheadAttention stores them under ``attn.attn``."""

    def __init__(self, dim: int, qkv_bias: bool = True):
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim)) if qkv_bias else None
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)


class Attention(nn.Module):
    """Multi-head self-attention through ``zoo.kernels.attention``.

    ``mask``: None, a ``zoo.kernels`` mask (``KeyPadding``), or a boolean key mask (B, N) with True = visible (the
    static export form; runs SDPA with a dense mask).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, backend: str = "auto"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim, self.backend = num_heads, dim // num_heads, backend
        self.attn = _MHAWeights(dim, qkv_bias)

    def forward(self, x: torch.Tensor, mask: Any = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if isinstance(mask, torch.Tensor):
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        else:
            o = attention(q, k, v, mask, backend=self.backend)
        return self.attn.out_proj(o.transpose(1, 2).reshape(b, n, d))


class FFN(nn.Module):
    """mmcv FFN layout: ``layers.0.0`` Linear(D, F) + GELU, ``layers.1`` Linear(F, D) (dropout slots kept)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop)),
                                    nn.Linear(hidden, dim), nn.Dropout(drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer (mmseg ``TransformerEncoderLayer``): ``ln1``, ``attn``, ``ln2``, ``ffn``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, eps: float = 1e-6,
                 drop_path: float = 0.0, drop: float = 0.0, backend: str = "auto"):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, backend)
        self.ln2 = nn.LayerNorm(dim, eps=eps)
        self.ffn = FFN(dim, int(dim * mlp_ratio), drop)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, mask: Any = None) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D)."""
        x = x + drop_path(self.attn(self.ln1(x), mask), self.drop_path, self.training)
        return x + drop_path(self.ffn(self.ln2(x)), self.drop_path, self.training)


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], pos_grid: tuple[int, int],
                     mode: str = "bicubic") -> torch.Tensor:
    """(1, 1 + h0*w0, D) -> (1, 1 + h*w, D): CLS kept, the grid resized with ``align_corners=False``."""
    cls, rest = pos_embed[:, :1], pos_embed[:, 1:]
    d = pos_embed.shape[-1]
    rest = rest.reshape(1, pos_grid[0], pos_grid[1], d).permute(0, 3, 1, 2)
    rest = F.interpolate(rest, size=grid, mode=mode, align_corners=False)
    return torch.cat([cls, rest.flatten(2).transpose(1, 2)], dim=1)


# -------------------------------------------------------------------------------------------------------- backbone
@dataclass
class ClusterInfo:
    """What the Cluster module did to one batch (all (B, ...) tensors on the model's device).

    ids: (B, N) int64 argmax cluster ids (0 = keep). kept_counts: (B,) tokens with id 0. skipped: the batch had
    <= 1 distinct id, so it ran as a plain ViT. seq_len: merged sequence length (1 + max kept + k; N + 1 if skipped).
    """

    ids: torch.Tensor
    kept_counts: torch.Tensor
    skipped: bool
    seq_len: int


class ClustViT(nn.Module):
    """ViT backbone with one Cluster module before layer ``ip`` (``ip=None``: a plain ViT, for the baseline).

    Args:
        img_size: training crop (H, W) or int; sizes ``pos_embed`` (resized bicubically at other input sizes).
        embed_dims, num_layers, num_heads, mlp_ratio: ViT width/depth.
        num_clusters: k. ip: injection point (the Cluster module runs after ``ip`` layers); None disables it.
        cluster_mlp_size: H of the clusterer MLP D -> H -> k + 1 (the authors' configs use 4D + D/32).
        out_indices: layers whose output is returned (-1 = last); the last layer's output is final-normed.
        drop_path_rate: linearly increasing stochastic depth. backend: ``zoo.kernels.attention`` backend.
        token_layout: merged tokens after ``ip`` as ``"padded"`` rows (``KeyPadding``) or ``"packed"`` back to back
            (``Varlen``: no padded queries); same outputs.

    Input (B, 3, H, W) float32 in [-1, 1] (RGB); H, W are zero-padded (bottom/right) to multiples of 16.
    ``forward`` returns (list of (B, D, H/16, W/16) feature maps, cluster logits (B, N, k + 1) or None).
    """

    def __init__(self, img_size: int | Sequence[int] = 512, in_chans: int = 3, embed_dims: int = 768,
                 num_layers: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, num_clusters: int = 3,
                 ip: int | None = 3, cluster_mlp_size: int | None = None, out_indices: int | Sequence[int] = -1,
                 drop_path_rate: float = 0.1, drop_rate: float = 0.0, qkv_bias: bool = True, eps: float = 1e-6,
                 backend: str = "auto", token_layout: str = "padded"):
        super().__init__()
        if token_layout not in ("padded", "packed"):
            raise ValueError(f"token_layout must be 'padded' or 'packed', got {token_layout!r}")
        self.token_layout = token_layout
        img = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(img) != 2 or min(img) < PATCH:
            raise ValueError(f"img_size must be an int or (H, W) >= {PATCH}, got {img_size!r}")
        if ip is not None and not 0 < ip < num_layers:
            raise ValueError(f"ip must be in [1, num_layers={num_layers}) or None, got {ip}")
        if ip is not None and num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        self.img_size, self.embed_dims, self.num_layers = img, embed_dims, num_layers
        self.pos_grid = (img[0] // PATCH, img[1] // PATCH)
        self.ip, self.num_clusters = ip, num_clusters
        outs = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        self.out_indices = [i % num_layers for i in outs]
        self.static = False  # True: export form (see reparameterize)

        self.patch_embed = nn.Module()
        self.patch_embed.projection = nn.Conv2d(in_chans, embed_dims, PATCH, PATCH, bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1] + 1, embed_dims))
        self.drop_after_pos = nn.Dropout(drop_rate)
        dpr = _linspace(drop_path_rate, num_layers)
        self.layers = nn.ModuleList(
            EncoderLayer(embed_dims, num_heads, mlp_ratio, qkv_bias, eps, dpr[i], drop_rate, backend)
            for i in range(num_layers))
        self.ln1 = nn.LayerNorm(embed_dims, eps=eps)
        if ip is not None:
            hidden = cluster_mlp_size or 4 * embed_dims + embed_dims // 32
            self.clusterer = nn.Module()
            self.clusterer.net = nn.Sequential(nn.Linear(embed_dims, hidden), nn.ReLU(),
                                               nn.Linear(hidden, num_clusters + 1))
            self.expand_mlp = nn.Sequential(nn.Linear(2 * embed_dims, embed_dims), nn.GELU(),
                                            nn.Linear(embed_dims, embed_dims))
        self.init_weights()

    def init_weights(self) -> None:
        """The authors' from-scratch init: Linear trunc-normal(0.02) with zero bias (FFN biases N(0, 1e-6)), patch
        conv Kaiming (fan-in), LayerNorm 1/0, CLS and position embedding trunc-normal(0.02)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    if "ffn" in name:
                        nn.init.normal_(m.bias, mean=0.0, std=1e-6)
                    else:
                        nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, _MHAWeights):
                nn.init.trunc_normal_(m.in_proj_weight, std=0.02)
                if m.in_proj_bias is not None:
                    nn.init.zeros_(m.in_proj_bias)

    # --------------------------------------------------------------------------------------------- embedding
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) -> tokens (B, 1 + h*w, D) with CLS and position embedding, grid (h, w)."""
        if x.dim() != 4:
            raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = (-h) % PATCH, (-w) % PATCH
        if ph or pw:  # mmcv AdaptivePadding('corner'): zeros at the bottom and right
            x = F.pad(x, (0, pw, 0, ph))
        x = self.patch_embed.projection(x)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        pos = self.pos_embed
        if x.shape[1] != pos.shape[1]:  # mmseg resizes only when the token count differs
            pos = resize_pos_embed(pos, grid, self.pos_grid)
        return self.drop_after_pos(x + pos), grid

    # ---------------------------------------------------------------------------------------------- clusters
    def cluster_logits(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, D) patch tokens -> (B, N, k + 1) logits."""
        return self.clusterer.net(patches)

    def _cluster_means(self, patches: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Mean of each cluster's members (B, k, D); zero vectors for empty clusters."""
        b, n, d = patches.shape
        k = self.num_clusters
        sums = patches.new_zeros(b, k + 1, d).scatter_add_(1, ids[..., None].expand(b, n, d), patches)
        counts = torch.zeros(b, k + 1, dtype=patches.dtype, device=patches.device)
        counts = counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=patches.dtype))
        return (sums / counts.clamp(min=1)[..., None])[:, 1:]

    def _reduce(self, x: torch.Tensor, ids: torch.Tensor):
        """Dynamic form: (B, 1+N, D) -> the merged tokens, their attention mask and where each token went.

        ``padded``: (B, 1+k+maxk, D) rows ``[CLS, k clusters, kept..., pad]`` with ``KeyPadding``; ``packed``:
        (1, total, D), the rows without padding back to back, with ``Varlen``.
        """
        b, _, d = x.shape
        k = self.num_clusters
        patches = x[:, 1:]
        keep = ids == 0
        kept_counts = keep.sum(1)
        maxk = int(kept_counts.max())
        lens = 1 + k + kept_counts
        if self.token_layout == "packed":
            cu = F.pad(lens.cumsum(0), (1, 0))
            total = int(cu[-1])
            mask: Any = Varlen(cu.to(torch.int32), cu.to(torch.int32), 1 + k + maxk, 1 + k + maxk)
            starts, shape = cu[:-1], (1, total, d)
        else:
            width = 1 + k + maxk
            total = b * width
            mask = KeyPadding(lens.to(torch.int32), max_length=width)
            starts, shape = torch.arange(b, device=x.device) * width, (b, width, d)
        flat = x.new_zeros(total, d)
        flat[starts] = x[:, 0]
        clu_pos = starts[:, None] + 1 + torch.arange(k, device=x.device)
        flat[clu_pos] = self._cluster_means(patches, ids)
        slot = keep.cumsum(1) - 1
        bi, ti = keep.nonzero(as_tuple=True)
        kept_pos = starts[bi] + 1 + k + slot[bi, ti]
        flat[kept_pos] = patches[bi, ti]
        return flat.view(shape), mask, (starts, clu_pos, bi, ti, kept_pos), kept_counts

    def _expand(self, y: torch.Tensor, pre: torch.Tensor, ids: torch.Tensor, pos) -> torch.Tensor:
        """Regenerate the grid (dynamic form): merged tokens (either layout) -> (B, 1+N, D)."""
        starts, clu_pos, bi, ti, kept_pos = pos
        flat = y.reshape(-1, y.shape[-1])
        out = flat.new_zeros(pre.shape[0], pre.shape[1], flat.shape[-1])
        out[bi, ti] = flat[kept_pos]
        cb, ct = (ids != 0).nonzero(as_tuple=True)
        if cb.numel():
            rep = flat[clu_pos[cb, ids[cb, ct] - 1]]
            own = pre[cb, ct].to(flat.dtype)
            out[cb, ct] = self.expand_mlp(torch.cat([own, rep], dim=-1)).to(flat.dtype)
        return torch.cat([flat[starts][:, None], out], dim=1)

    def _static_reduce(self, x: torch.Tensor, ids: torch.Tensor):
        """Static form: [CLS, all N patches in place, k clusters] and a (B, 1+N+k) boolean visible-key mask."""
        patches = x[:, 1:]
        keep = ids == 0
        skip = (ids.amax() == ids.amin())  # batch has <= 1 distinct id (0-d bool tensor)
        vis_patch = keep | skip
        vis_clust = (~skip).expand(x.shape[0], self.num_clusters)
        seq = torch.cat([x, self._cluster_means(patches, ids)], dim=1)
        mask = torch.cat([torch.ones_like(keep[:, :1]), vis_patch, vis_clust], dim=1)
        return seq, mask, vis_patch

    def _static_expand(self, y: torch.Tensor, pre: torch.Tensor, ids: torch.Tensor, own_ok: torch.Tensor):
        n = pre.shape[1]
        clusters = y[:, 1 + n:]
        idx = (ids - 1).clamp(min=0)
        rep = torch.gather(clusters, 1, idx[..., None].expand(-1, -1, y.shape[-1]))
        regen = self.expand_mlp(torch.cat([pre.to(y.dtype), rep], dim=-1))
        grid = torch.where(own_ok[..., None], y[:, 1:1 + n], regen)
        return torch.cat([y[:, :1], grid], dim=1)

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, return_info: bool = False):
        """x (B, 3, H, W) -> (outs: list of (B, D, h, w), cluster logits (B, N, k+1) or None[, ClusterInfo])."""
        x, (h, w) = self.embed(x)
        b = x.shape[0]
        outs: list[torch.Tensor] = []
        logits = ids = None
        mode = "plain"  # "plain" | "dynamic" | "static"
        mask: Any = None
        pre = kept = own_ok = None
        info = None
        last = self.num_layers - 1
        for i, layer in enumerate(self.layers):
            if i == self.ip:
                logits = self.cluster_logits(x[:, 1:])
                ids = logits.argmax(-1)
                if self.static:
                    pre = x[:, 1:]
                    x, mask, own_ok = self._static_reduce(x, ids)
                    mode = "static"
                else:
                    skipped = bool(ids.amax() == ids.amin())
                    kept_counts = (ids == 0).sum(1)
                    if not skipped:
                        pre = x[:, 1:]
                        x, mask, kept, kept_counts = self._reduce(x, ids)
                        seq_len = 1 + self.num_clusters + int(kept_counts.max())
                        mode = "dynamic"
                    info = ClusterInfo(ids, kept_counts, skipped, x.shape[1] if skipped else seq_len)
            x = layer(x, mask)
            if i in self.out_indices or i == last:
                if mode == "dynamic":
                    t = self._expand(x, pre, ids, kept)
                elif mode == "static":
                    t = self._static_expand(x, pre, ids, own_ok)
                else:
                    t = x
                if i == last:
                    t = self.ln1(t)
                    if mode == "plain":
                        x = t
                if i in self.out_indices:
                    outs.append(t[:, 1:].reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous())
        if return_info:
            return outs, logits, info
        return outs, logits


# ------------------------------------------------------------------------------------------------------------ head
class SegmenterMaskHead(nn.Module):
    """Segmenter mask-transformer decoder (mmseg ``SegmenterMaskTransformerHead``; LN eps 1e-5).

    (B, D_in, h, w) -> class masks (B, C, h, w): ``dec_proj``, C learned class embeddings appended, ``num_layers``
    transformer layers, ``decoder_norm``, L2-normalised patch/class projections, their products, ``mask_norm``.
    """

    def __init__(self, in_channels: int, num_classes: int, embed_dims: int, num_layers: int = 2,
                 num_heads: int | None = None, mlp_ratio: float = 4.0, drop_path_rate: float = 0.1,
                 backend: str = "auto"):
        super().__init__()
        heads = num_heads or max(embed_dims // 64, 1)
        self.num_classes = num_classes
        dpr = _linspace(drop_path_rate, num_layers)
        self.layers = nn.ModuleList(EncoderLayer(embed_dims, heads, mlp_ratio, True, 1e-5, dpr[i], 0.0, backend)
                                    for i in range(num_layers))
        self.dec_proj = nn.Linear(in_channels, embed_dims)
        self.cls_emb = nn.Parameter(torch.randn(1, num_classes, embed_dims))
        self.patch_proj = nn.Linear(embed_dims, embed_dims, bias=False)
        self.classes_proj = nn.Linear(embed_dims, embed_dims, bias=False)
        self.decoder_norm = nn.LayerNorm(embed_dims)
        self.mask_norm = nn.LayerNorm(num_classes)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _MHAWeights):
                nn.init.trunc_normal_(m.in_proj_weight, std=0.02)
                nn.init.zeros_(m.in_proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = self.dec_proj(x.permute(0, 2, 3, 1).reshape(b, h * w, c))
        x = torch.cat([x, self.cls_emb.expand(b, -1, -1).to(x.dtype)], dim=1)
        for layer in self.layers:
            x = layer(x)
        x = self.decoder_norm(x)
        patches = F.normalize(self.patch_proj(x[:, :-self.num_classes]), dim=2, p=2)
        classes = F.normalize(self.classes_proj(x[:, -self.num_classes:]), dim=2, p=2)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))
        return masks.permute(0, 2, 1).reshape(b, -1, h, w)


# ------------------------------------------------------------------------------------------------------- segmentor
class ClustViTSegmenter(nn.Module):
    """ClustViT (or plain ViT, ``ip=None``) backbone + Segmenter head; the authors' ``DynSegEncoderDecoder``.

    ``forward(x)`` (B, 3, H, W) float32 RGB in [-1, 1] -> logits (B, num_classes, H, W) (whole-image inference:
    bilinear upsampling of the head's (H/16, W/16) masks). ``forward_train(x)`` -> dict ``seg_logits`` (low
    resolution) + ``clust_logits``; ``slide_inference`` = the authors' test mode; ``auxiliary_losses`` = their
    cluster loss. Keys: ``backbone.*`` / ``decode_head.*`` exactly as the mmseg checkpoints.
    """

    def __init__(self, num_classes: int = 150, img_size: int | Sequence[int] = 512, embed_dims: int = 768,
                 num_layers: int = 12, num_heads: int = 12, num_clusters: int = 3, ip: int | None = 3,
                 cluster_mlp_size: int | None = None, head_layers: int = 2, head_heads: int | None = None,
                 drop_path_rate: float = 0.1, clust_loss_weight: float = 0.1, out_indices: int | Sequence[int] = -1,
                 backend: str = "auto", in_chans: int = 3, token_layout: str = "padded"):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.clust_loss_weight = clust_loss_weight
        self.backbone = ClustViT(img_size, in_chans, embed_dims, num_layers, num_heads, 4.0, num_clusters, ip,
                                 cluster_mlp_size, out_indices, drop_path_rate, backend=backend,
                                 token_layout=token_layout)
        self.decode_head = SegmenterMaskHead(embed_dims, num_classes, embed_dims, head_layers, head_heads,
                                             backend=backend)

    def reparameterize(self) -> ClustViTSegmenter:
        """Switch to the static-shape export form in place (same outputs; used by ``zoo.export``)."""
        self.backbone.static = True
        return self

    def forward_features(self, x: torch.Tensor):
        """(list of backbone maps, cluster logits)."""
        return self.backbone(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Head logits at 1/16 resolution (B, C, h, w) and cluster logits (B, N, k+1) or None."""
        outs, clust = self.backbone(x)
        return self.decode_head(outs[-1]), clust

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        seg, clust = self.encode(x)
        return {"seg_logits": seg, "clust_logits": clust}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seg, _ = self.encode(x)
        return F.interpolate(seg, size=x.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def slide_inference(self, x: torch.Tensor, crop: int | Sequence[int] = 512,
                        stride: int | Sequence[int] = 480) -> torch.Tensor:
        """The authors' sliding-window test: overlapping crops, each upsampled to its crop, summed, averaged.
        x (B, 3, H, W) -> logits (B, C, H, W)."""
        ch, cw = (crop, crop) if isinstance(crop, int) else crop
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        b, _, hi, wi = x.shape
        hg = max(hi - ch + sh - 1, 0) // sh + 1
        wg = max(wi - cw + sw - 1, 0) // sw + 1
        preds = x.new_zeros(b, self.num_classes, hi, wi)
        count = x.new_zeros(b, 1, hi, wi)
        for r in range(hg):
            for c in range(wg):
                y2, x2 = min(r * sh + ch, hi), min(c * sw + cw, wi)
                y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
                preds[:, :, y1:y2, x1:x2] += self(x[:, :, y1:y2, x1:x2])
                count[:, :, y1:y2, x1:x2] += 1
        return preds / count

    def auxiliary_losses(self, out: Mapping[str, Any], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The authors' cluster loss: weight x CE(cluster logits, pseudo-cluster labels of ``target`` (B, H, W))."""
        clust = out.get("clust_logits")
        if clust is None or self.clust_loss_weight == 0:
            return {}
        return {"clust_ce": self.clust_loss_weight * clust_loss(clust, target, self.backbone.num_clusters)}


# ---------------------------------------------------------------------------------------------------------- losses
def get_clusters(gt: torch.Tensor, patch_size: int = PATCH) -> torch.Tensor:
    """(B, H, W) int labels -> (B, H/p, W/p): a patch's class when all its pixels share it, else -1 (an all-ignore
    patch gives 255). H, W must be multiples of ``patch_size``."""
    b, h, w = gt.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"gt (H, W) = {(h, w)} must be multiples of patch_size={patch_size}")
    p = gt.reshape(b, h // patch_size, patch_size, w // patch_size, patch_size).permute(0, 1, 3, 2, 4).flatten(3)
    first = p[..., 0]
    same = (p == first[..., None]).all(-1)
    return torch.where(same, first, torch.full_like(first, -1))


def pseudo_cluster_labels(gt: torch.Tensor, k: int, patch_size: int = PATCH,
                          ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The authors' pseudo-cluster labels (B, H/p, W/p) in 0..k: each image's k most frequent homogeneous-patch
    classes become clusters 1..k (by frequency), every other patch (mixed, ignore, rarer class) is 0 = keep."""
    cl = get_clusters(gt, patch_size)
    cl = torch.where(cl == ignore_index, torch.full_like(cl, -1), cl)
    out = torch.zeros_like(cl)
    for i in range(cl.shape[0]):
        valid = cl[i][cl[i] >= 0]
        if valid.numel() == 0:
            continue
        classes, counts = valid.unique(return_counts=True)
        order = torch.argsort(counts, descending=True, stable=True)[:k]
        for rank, j in enumerate(order.tolist()):
            out[i][cl[i] == classes[j]] = rank + 1
    return out


def clust_loss(clust_logits: torch.Tensor, gt: torch.Tensor, k: int, patch_size: int = PATCH) -> torch.Tensor:
    """Mean CE of cluster logits (B, N, k+1) against the pseudo-cluster labels of gt (B, H, W) (unweighted; the
    authors' ``ClustLoss`` before its weight). gt is padded with ignore to a multiple of the patch size."""
    h, w = gt.shape[-2:]
    ph, pw = (-h) % patch_size, (-w) % patch_size
    if ph or pw:
        gt = F.pad(gt, (0, pw, 0, ph), value=IGNORE_INDEX)
    labels = pseudo_cluster_labels(gt, k, patch_size).flatten(1)
    if labels.shape[1] != clust_logits.shape[1]:
        raise ValueError(f"gt gives {labels.shape[1]} patches but clust_logits has {clust_logits.shape[1]}")
    return F.cross_entropy(clust_logits.float().permute(0, 2, 1), labels)


def segmentation_ce(logits: torch.Tensor, gt: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                    avg_non_ignore: bool = False) -> torch.Tensor:
    """mmseg's decode loss: logits (B, C, h, w) upsampled (bilinear) to gt (B, H, W); CE averaged over all pixels
    (ignored ones count 0 but stay in the denominator) unless ``avg_non_ignore``."""
    if logits.shape[-2:] != gt.shape[-2:]:
        logits = F.interpolate(logits, size=gt.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits.float(), gt, ignore_index=ignore_index, reduction="none")
    if avg_non_ignore:
        return loss.sum() / (gt != ignore_index).sum().clamp(min=1)
    return loss.mean()


# -------------------------------------------------------------------------------------------------------- variants
_VARIANTS: dict[str, dict[str, Any]] = {
    "t": dict(embed_dims=192, num_layers=12, num_heads=3, cluster_mlp_size=774),
    "s": dict(embed_dims=384, num_layers=12, num_heads=6, cluster_mlp_size=1548),
    "b": dict(embed_dims=768, num_layers=12, num_heads=12, cluster_mlp_size=3096),
    "l": dict(embed_dims=1024, num_layers=24, num_heads=16, cluster_mlp_size=4128, img_size=640),
}
# Backbone parameter counts of the official code at de74b90 (ViT, clusterer, regenerator; k=3, 150 classes) and
# the whole segmentor (Segmenter head with 150 classes); asserted in tests/models/test_clustvit.py.
PARAM_COUNTS = {
    "t": dict(vit=5_683_200, clusterer=152_482, regenerator=110_976, segmentor=6_976_654),
    "s": dict(vit=21_983_232, clusterer=602_176, regenerator=443_136, segmentor=27_078_892),
    "b": dict(vit=86_433_792, clusterer=2_393_212, regenerator=1_771_008, segmentor=106_661_032),
    "l": dict(vit=304_738_304, clusterer=4_247_716, regenerator=3_147_776, segmentor=340_628_944),
}

_TITLE = "ClustViT: Clustering-based Token Merging for Semantic Segmentation"
_PAPER = "arXiv:2510.01948"
_CITATION = ("Montello, F., Güldenring, R., Nalpantidis, L. ClustViT: Clustering-based Token Merging for Semantic "
             "Segmentation. ICRA 2026. arXiv:2510.01948")
_INPUT_SPEC = {"shape": (3, 512, 512), "dtype": "float32", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
               "channel_order": "RGB"}
_DTU = "https://data.dtu.dk/ndownloader/files/"


def _released(name: str, dataset: str, k: int, ip: int, miou: float, file_id: int, classes: int) -> PretrainedSource:
    """A released mmseg checkpoint (Segmenter head, 512 crop), once converted to the zoo's layout
    (``python -m zoo convert clustvit_b <file> --out hub/zoo-models/<name>``); source ``_DTU + file_id``."""
    return PretrainedSource(repo_id=f"zoo-models/{name}", dataset=dataset,
                            metrics={"miou": miou, "authors_file_id": file_id},
                            overrides={"num_classes": classes, "num_clusters": k, "ip": ip})


def _build(variant: str, **kwargs: Any) -> ClustViTSegmenter:
    return ClustViTSegmenter(**{**_VARIANTS[variant], **kwargs})


@register_model(paper=_PAPER, title=_TITLE + " (ClustViT-T)", task="semantic-segmentation", license="apache-2.0",
                input_spec=_INPUT_SPEC, citation=_CITATION,
                pretrained={"fmnist_mosaic": PretrainedSource(
                    repo_id="zoo-models/clustvit_t.fmnist_mosaic", dataset="fmnist_mosaic",
                    overrides={"num_classes": 11, "img_size": 256, "ip": 3})})
def clustvit_t(**kwargs: Any) -> ClustViTSegmenter:
    """ClustViT-T (D 192, 12 layers, 3 heads, H 774, k 3, ip 3): 6.98M parameters with 150 classes."""
    return _build("t", **kwargs)


@register_model(paper=_PAPER, title=_TITLE + " (ClustViT-S)", task="semantic-segmentation", license="apache-2.0",
                input_spec=_INPUT_SPEC, citation=_CITATION)
def clustvit_s(**kwargs: Any) -> ClustViTSegmenter:
    """ClustViT-S (D 384, 12 layers, 6 heads, H 1548, k 3, ip 3): 27.1M parameters with 150 classes."""
    return _build("s", **kwargs)


@register_model(
    paper=_PAPER, title=_TITLE + " (ClustViT-B)", task="semantic-segmentation", license="apache-2.0",
    input_spec=_INPUT_SPEC, citation=_CITATION,
    pretrained={
        "ade20k_k3_ip3": _released("clustvit_b.ade20k_k3_ip3", "ade20k", 3, 3, 46.10, 64205592, 150),
        "ade20k_k3_ip4": _released("clustvit_b.ade20k_k3_ip4", "ade20k", 3, 4, 46.19, 64205595, 150),
        "suim_k3_ip3": _released("clustvit_b.suim_k3_ip3", "suim", 3, 3, 61.95, 64205589, 9),
        "suim_k4_ip3": _released("clustvit_b.suim_k4_ip3", "suim", 4, 3, 63.26, 64205583, 9),
        "rumexweeds_k3_ip3": _released("clustvit_b.rumexweeds_k3_ip3", "rumexweeds", 3, 3, 49.82, 64205577, 3),
        "rumexweeds_k3_ip4": _released("clustvit_b.rumexweeds_k3_ip4", "rumexweeds", 3, 4, 51.53, 64205580, 3),
    },
    default_tag="ade20k_k3_ip3",
)
def clustvit_b(**kwargs: Any) -> ClustViTSegmenter:
    """ClustViT-B (D 768, 12 layers, 12 heads, H 3096, k 3, ip 3): 106.7M parameters with 150 classes."""
    return _build("b", **kwargs)


@register_model(paper=_PAPER, title=_TITLE + " (ClustViT-L)", task="semantic-segmentation", license="apache-2.0",
                input_spec={**_INPUT_SPEC, "shape": (3, 640, 640)}, citation=_CITATION)
def clustvit_l(**kwargs: Any) -> ClustViTSegmenter:
    """ClustViT-L (D 1024, 24 layers, 16 heads, H 4128, k 3, ip 3, 640 crop): 340.6M parameters, 150 classes."""
    return _build("l", **kwargs)


@register_model(paper=_PAPER, title="Segmenter ViT-T baseline (ClustViT paper)", task="semantic-segmentation",
                license="apache-2.0", input_spec=_INPUT_SPEC, citation=_CITATION)
def segmenter_vit_t(**kwargs: Any) -> ClustViTSegmenter:
    """The same ViT-T + Segmenter head without the Cluster module (the paper's baseline)."""
    return _build("t", **{"ip": None, **kwargs})


@register_model(paper=_PAPER, title="Segmenter ViT-B baseline (ClustViT paper)", task="semantic-segmentation",
                license="apache-2.0", input_spec=_INPUT_SPEC, citation=_CITATION)
def segmenter_vit_b(**kwargs: Any) -> ClustViTSegmenter:
    """The same ViT-B + Segmenter head without the Cluster module (the paper's baseline)."""
    return _build("b", **{"ip": None, **kwargs})


# ------------------------------------------------------------------------------------------------------ converters
def clustvit_config_from_state_dict(sd: Mapping[str, torch.Tensor], img_size: int | Sequence[int] | None = None
                                    ) -> dict[str, Any]:
    """Constructor args readable from an mmseg ClustViT state dict's shapes (``ip`` and head counts are not: the
    authors' heads are D/64; pass ``ip`` from the checkpoint's config). ``img_size`` defaults to a square grid."""
    d = sd["backbone.cls_token"].shape[-1]
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("backbone.layers."))
    head_layers = 1 + max((int(k.split(".")[2]) for k in sd if k.startswith("decode_head.layers.")), default=-1)
    p = sd["backbone.pos_embed"].shape[1] - 1
    if img_size is None:
        side = int(round(math.sqrt(p)))
        if side * side != p:
            raise ValueError(f"pos_embed has {p} patches, not a square grid: pass img_size")
        img_size = side * PATCH
    args: dict[str, Any] = dict(
        embed_dims=d, num_layers=layers, num_heads=max(d // 64, 1), img_size=img_size,
        num_classes=sd["decode_head.cls_emb"].shape[1], head_layers=head_layers)
    if "backbone.clusterer.net.0.weight" in sd:
        args["cluster_mlp_size"] = sd["backbone.clusterer.net.0.weight"].shape[0]
        args["num_clusters"] = sd["backbone.clusterer.net.2.weight"].shape[0] - 1
    else:
        args["ip"] = None
    return args


def convert_checkpoint(path_or_state: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The authors' mmseg checkpoint (``{'state_dict': {...}, 'meta': ...}`` or a bare state dict) -> the zoo's
    state dict (``backbone.*`` / ``decode_head.*`` kept as they are; parameter-free heads and preprocessor buffers
    dropped). Raises ``ValueError`` on any key outside the known layout."""
    if isinstance(path_or_state, (str, Path)):
        ckpt = torch.load(str(path_or_state), map_location="cpu", weights_only=True)
    else:
        ckpt = path_or_state
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping):
        raise TypeError("expected an mmseg checkpoint dict with a 'state_dict' entry or a state dict")
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith(("data_preprocessor.", "auxiliary_head.")) or k.endswith("num_batches_tracked"):
            continue
        if not k.startswith(("backbone.", "decode_head.")):
            raise ValueError(f"unexpected key {k!r} in a ClustViT mmseg checkpoint")
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{k}: expected a tensor, got {type(v).__name__}")
        out[k] = v.float().contiguous()
    return out


def convert_timm_vit(sd: Mapping[str, torch.Tensor], grid: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """ImageNet ViT weights in timm's layout (``vit_*_patch16_*``) -> ``ClustViT`` backbone keys (no prefix).

    The patch-embedding bias is dropped (ClustViT's patch conv has none, as the authors' init loads
    ``strict=False``); the classifier head is dropped; ``pos_embed`` is resized bicubically to ``grid`` when given.
    """
    out: dict[str, torch.Tensor] = {}
    ren = {"norm1": "ln1", "norm2": "ln2", "attn.qkv.weight": "attn.attn.in_proj_weight",
           "attn.qkv.bias": "attn.attn.in_proj_bias", "attn.proj": "attn.attn.out_proj",
           "mlp.fc1": "ffn.layers.0.0", "mlp.fc2": "ffn.layers.1"}
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            for a, b in ren.items():
                if rest.startswith(a):
                    rest = b + rest[len(a):]
                    break
            out[f"layers.{i}.{rest}"] = v
        elif k == "patch_embed.proj.weight":
            out["patch_embed.projection.weight"] = v
        elif k in ("cls_token", "pos_embed"):
            out[k] = v
        elif k.startswith("norm."):
            out["ln1." + k[5:]] = v
    if grid is not None and "pos_embed" in out:
        p = out["pos_embed"].shape[1] - 1
        side = int(round(math.sqrt(p)))
        if (side, side) != tuple(grid):
            out["pos_embed"] = resize_pos_embed(out["pos_embed"].float(), tuple(grid), (side, side))
    return out


def load_timm_vit_(backbone: ClustViT, sd: Mapping[str, torch.Tensor]) -> list[str]:
    """Initialise ``backbone``'s ViT part from timm ImageNet weights in place; returns the keys left at their init
    (the clusterer and regenerator, which the authors also leave at PyTorch's default init)."""
    conv = convert_timm_vit(sd, backbone.pos_grid)
    own = backbone.state_dict()
    bad = [k for k in conv if k not in own or own[k].shape != conv[k].shape]
    if bad:
        raise ValueError(f"timm ViT weights do not fit this backbone: {bad[:5]}")
    backbone.load_state_dict(conv, strict=False)
    if hasattr(backbone, "clusterer"):
        for m in list(backbone.clusterer.modules()) + list(backbone.expand_mlp.modules()):
            if isinstance(m, nn.Linear):
                m.reset_parameters()
    return sorted(set(own) - set(conv))
