"""Orion-BiX: bi-axial attention for tabular in-context learning (arXiv:2512.00181, Lexsi Labs; MIT).

Re-implementation of the released architecture of ``Lexsi-Labs/Orion-BiX`` @ 060d346 (a fork of TabICL v1), with the
official module and parameter names so ``{config, state_dict}`` checkpoints load strictly. Pipeline per table
``X`` (B, T, F) whose first ``n_train`` rows carry labels ``y_train`` (B, n_train):

1. ``col_embedder`` (:class:`ColEmbedding`): every column is a set over rows. Four reserved slots (value -100) are
   prepended to the F columns; each cell is embedded (``in_linear``), a stack of post-norm ELU+1 *linear-attention*
   set blocks runs along the rows (train rows attend to train rows, test rows attend to train rows only), and the
   feature-wise affine ``x * LN(W_w h) + LN(W_b h)`` gives (B, T, 4 + F, E).
2. ``bi_axial_attention`` (:class:`BiAxialAttention`): per row, blocks of standard -> grouped -> hierarchical ->
   relational softmax attention over the 4 + F tokens, then 4 learnable CLS tokens cross-attend to them; every block
   returns **only its CLS tokens**, so blocks 2.. see the previous block's 4 CLS tokens. Output (B, T, 4E).
3. ``icl_predictor`` (:class:`ICLearning`): one-hot label embedding added to train rows, pre-norm transformer over
   rows with keys = train rows, final LN, MLP decoder to ``max_classes`` logits. More than ``max_classes`` classes
   at inference: hierarchical decision routing (balanced recursive groups, probabilities multiplied along the path).

Quirks of the released code kept here because they change outputs (each also noted where it lives):
 - the reserved slots are *not* replaced by learned tokens: they become the constant ``-100 * ln_w.bias + ln_b.bias``
   and bi-axial block 1 treats them as 4 extra features;
 - the linear attention contracts keys and values the "wrong" way round (``out[m] = sum_s phi(k_s)[m] <phi(q), v_s>``
   normalised by ``<phi(q), sum_s phi(k_s)>``), with no 1/sqrt(d) scale and eps 1e-6;
 - hierarchical bi-axial attention: the second half attends to the *updated* first half; grouped attention passes
   the ``F mod 4`` trailing tokens through untouched; no positional encoding anywhere (``row_rope_base`` unused);
 - ``bi_axial_attention.out_ln`` exists (and is counted) but is never applied;
 - any input cell exactly equal to -100 is treated as a "skip" cell by ``SkippableLinear``.

All softmax attention goes through :func:`zoo.kernels.attention` (via :func:`_attend`); the train/test split is
"keys = the first n_train rows" (cross-attention), with ``KeyPadding`` when tables in a batch have different
``n_train``. Attention-weight dropout is not applied (the released config has dropout 0; residual/FF dropouts are).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from zoo.kernels import KeyPadding, attention
from zoo.registry import PretrainedSource, register_model

__all__ = [
    "OrionBix",
    "ColEmbedding",
    "BiAxialAttention",
    "ICLearning",
    "convert_checkpoint",
    "clean_state_dict",
    "RELEASED_CONFIG",
    "SMALL_CONFIG",
    "ContextCache",
]

SKIP_VALUE = -100.0


# ----------------------------------------------------------------------------------------------------------------
# attention helper (the only place softmax attention is computed)
# ----------------------------------------------------------------------------------------------------------------
def _attend(q: Tensor, k: Tensor, v: Tensor, kv_len: int | Tensor | None = None) -> Tensor:
    """Softmax attention (B, H, Nq, D) x (B, H, Nk, D) -> (B, H, Nq, D) through :func:`zoo.kernels.attention`.

    ``kv_len``: None (all keys), an int (only the first ``kv_len`` keys: the train rows) or a (B,) int tensor of
    per-batch key counts (``KeyPadding``).
    """
    if kv_len is None:
        return attention(q, k, v)
    if isinstance(kv_len, int):
        return attention(q, k[:, :, :kv_len], v[:, :, :kv_len])
    lengths = kv_len.to(device=q.device, dtype=torch.int32)
    nk = int(lengths.max())
    return attention(q, k[:, :, :nk], v[:, :, :nk], KeyPadding(lengths))


def _expand_lengths(kv_len: int | Tensor | None, reps: int) -> int | Tensor | None:
    """Per-table key lengths (B,) -> per-flattened-batch lengths (B * reps,) (tables are the outer dimension)."""
    if kv_len is None or isinstance(kv_len, int):
        return kv_len
    return kv_len.repeat_interleave(reps)


# ----------------------------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------------------------
class SkippableLinear(nn.Linear):
    """Linear layer whose output is ``skip_value`` wherever the whole input vector equals ``skip_value``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, skip_value: float = SKIP_VALUE):
        super().__init__(in_features, out_features, bias)
        self.skip_value = skip_value

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        skip = (x == self.skip_value).all(dim=-1, keepdim=True)
        return torch.where(skip, torch.full_like(out, self.skip_value), out)


class OneHotAndLinear(nn.Linear):
    """Class index (any float/int dtype) -> one-hot(num_classes) -> linear: (...,) -> (..., embed_dim)."""

    def __init__(self, num_classes: int, embed_dim: int):
        super().__init__(num_classes, embed_dim)
        self.num_classes = num_classes

    def forward(self, y: Tensor) -> Tensor:
        one_hot = F.one_hot(y.long(), self.num_classes).to(self.weight.dtype)
        return F.linear(one_hot, self.weight, self.bias)


class PackedMultiheadAttention(nn.Module):
    """Multi-head softmax attention with ``nn.MultiheadAttention``'s parameter layout (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``), batch-first over any number of leading batch dims: (..., N, E) -> (..., N, E)."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, kv_len: int | Tensor | None = None) -> Tensor:
        *batch, nq, e = query.shape
        nk = key.shape[-2]
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        h, dh = self.num_heads, e // self.num_heads
        q = F.linear(query, w_q, b_q).reshape(-1, nq, h, dh).transpose(1, 2)
        k = F.linear(key, w_k, b_k).reshape(-1, nk, h, dh).transpose(1, 2)
        v = F.linear(value, w_v, b_v).reshape(-1, nk, h, dh).transpose(1, 2)
        o = _attend(q, k, v, kv_len)
        o = o.transpose(1, 2).reshape(*batch, nq, e)
        return self.out_proj(o)


class MultiheadAttentionBlock(nn.Module):
    """Transformer block (official ``MultiheadAttentionBlock``): attention + GELU feed-forward, pre- or post-norm.

    ``forward(q, k=None, v=None, kv_len=None)``: (..., Nq, E) queries attend to (..., Nk, E) keys (default: q);
    pre-norm applies ``norm1`` to q, k and v. ``out_proj`` and ``linear2`` start at zero (identity block at init).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 activation: str = "gelu", norm_first: bool = True):
        super().__init__()
        self.attn = PackedMultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.activation = _activation_fn(activation)
        for t in (self.attn.out_proj.weight, self.attn.out_proj.bias, self.linear2.weight, self.linear2.bias):
            nn.init.zeros_(t)

    def _ff(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, q: Tensor, k: Tensor | None = None, v: Tensor | None = None,
                kv_len: int | Tensor | None = None) -> Tensor:
        k = q if k is None else k
        v = k if v is None else v
        if self.norm_first:
            nq = self.norm1(q)
            nk = nq if k is q else self.norm1(k)
            nv = nk if v is k else self.norm1(v)
            x = q + self.dropout1(self.attn(nq, nk, nv, kv_len))
            return x + self._ff(self.norm2(x))
        x = self.norm1(q + self.dropout1(self.attn(q, k, v, kv_len)))
        return self.norm2(x + self._ff(x))


def _activation_fn(name: str):
    if name == "gelu":
        return F.gelu
    if name == "relu":
        return F.relu
    raise ValueError(f"activation must be 'gelu' or 'relu', got {name!r}")


# ---- column embedder: ELU+1 linear attention (not softmax attention: plain math here, not a kernel call) --------
class MultiHeadLinearAttention(nn.Module):
    """ELU+1 kernelised attention (official ``MultiHeadLinearAttentionLayer`` + ``LinearAttention``).

    ``forward(x_q (N, L, E), x_kv (N, S, E), key_mask (N, S) bool or None) -> (N, L, E)``. Keeps the official
    contraction order: with ``Q = elu(q)+1``, ``K = elu(k)+1``, ``KV[d, m] = sum_s K[s, d] V[s, m]`` the output is
    ``out[m] = sum_d Q[d] KV[m, d] / (Q . sum_s K[s] + 1e-6)`` (i.e. KV is used transposed), no 1/sqrt(d) scale.
    """

    def __init__(self, d_model: int, n_heads: int, eps: float = 1e-6):
        super().__init__()
        self.query_projection = nn.Linear(d_model, d_model)
        self.key_projection = nn.Linear(d_model, d_model)
        self.value_projection = nn.Linear(d_model, d_model)
        self.out_projection = nn.Linear(d_model, d_model)
        self.n_heads, self.eps = n_heads, eps

    def forward(self, x_q: Tensor, x_kv: Tensor, key_mask: Tensor | None = None) -> Tensor:
        n, l, e = x_q.shape
        s = x_kv.shape[1]
        h = self.n_heads
        q = F.elu(self.query_projection(x_q).view(n, l, h, -1)) + 1
        k = F.elu(self.key_projection(x_kv).view(n, s, h, -1)) + 1
        v = self.value_projection(x_kv).view(n, s, h, -1)
        if key_mask is not None:
            k = k * key_mask[:, :, None, None].to(k.dtype)
        kv = torch.einsum("nshd,nshm->nhdm", k, v)
        z = 1.0 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + self.eps)
        out = torch.einsum("nlhd,nhmd->nlhm", q, kv) * z[..., None]  # official index binding: KV transposed
        return self.out_projection(out.reshape(n, l, e))


class LinearAttentionEncoderLayer(nn.Module):
    """Post-norm encoder layer around :class:`MultiHeadLinearAttention` (official
    ``LinearAttentionTransformerEncoderLayer``): ``x = LN1(x + attn(x)); out = LN2(x + FF(x))``."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 activation: str = "gelu"):
        super().__init__()
        self.attention = MultiHeadLinearAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = _activation_fn(activation)

    def forward(self, x: Tensor, train_size: int | None = None, key_mask: Tensor | None = None) -> Tensor:
        # train rows attend to train rows, test rows attend to train rows only: keys = the first train_size rows
        kv = x if train_size is None else x[:, :train_size]
        km = key_mask if key_mask is None or train_size is None else key_mask[:, :train_size]
        x = self.norm1(x + self.dropout(self.attention(x, kv, km)))
        y = self.dropout(self.linear2(self.dropout(self.activation(self.linear1(x)))))
        return self.norm2(x + y)


class LinearAttentionBlock(nn.Module):
    """One column set block: columns that are entirely ``skip_value`` (the reserved slots) stay ``skip_value``.

    ``forward(src (..., T, E), train_size, key_mask (..., T) or None) -> (..., T, E)``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 activation: str = "gelu", skip_value: float = SKIP_VALUE):
        super().__init__()
        self.transformer_layer = LinearAttentionEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation)
        self.skip_value = skip_value

    def forward(self, src: Tensor, train_size: int | None = None, key_mask: Tensor | None = None) -> Tensor:
        lead = src.shape[:-2]
        flat = src.reshape(-1, *src.shape[-2:])
        km = None if key_mask is None else key_mask.reshape(-1, key_mask.shape[-1])
        keep = ~(flat == self.skip_value).all(dim=-1).all(dim=-1)
        out = torch.full_like(flat, self.skip_value)
        if bool(keep.any()):
            kept = self.transformer_layer(flat[keep], train_size, None if km is None else km[keep])
            out = out.to(kept.dtype)  # autocast may change the layer's output dtype
            out[keep] = kept
        return out.reshape(*lead, *src.shape[-2:])


class SetTransformer(nn.Module):
    """Stack of :class:`LinearAttentionBlock` along the rows of every column (official ``tf_col``)."""

    def __init__(self, num_blocks: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 activation: str = "gelu"):
        super().__init__()
        self.blocks = nn.ModuleList(
            [LinearAttentionBlock(d_model, nhead, dim_feedforward, dropout, activation) for _ in range(num_blocks)]
        )

    def forward(self, src: Tensor, train_size: int | None = None, key_mask: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            src = block(src, train_size, key_mask)
        return src


class ColEmbedding(nn.Module):
    """Distribution-aware column embedding with ``reserve_cls_tokens`` reserved slots.

    ``forward(X (B, T, F) float, train_size, feature_shuffles=None, train_sizes=None) -> (B, T, R + F, E)``.
    ``train_size``: rows ``< train_size`` are the context (None: every row is a key, ``embed_with_test``).
    ``train_sizes``: optional (B,) per-table context sizes (rows beyond are masked out as keys).
    ``feature_shuffles`` (inference): the tables are column permutations of one table; columns are embedded
    independently, so table 0's embeddings are computed once and permuted for the others.
    """

    def __init__(self, embed_dim: int, num_blocks: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 activation: str = "gelu", norm_first: bool = True, reserve_cls_tokens: int = 4):
        super().__init__()
        self.embed_dim, self.reserve_cls_tokens = embed_dim, reserve_cls_tokens
        self.in_linear = SkippableLinear(1, embed_dim)
        self.tf_col = SetTransformer(num_blocks, embed_dim, nhead, dim_feedforward, dropout, activation)
        self.out_w = SkippableLinear(embed_dim, embed_dim)
        self.ln_w = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()
        self.out_b = SkippableLinear(embed_dim, embed_dim)
        self.ln_b = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()

    def _embed(self, X: Tensor, train_size: int | None, key_mask: Tensor | None) -> Tensor:
        if self.reserve_cls_tokens > 0:
            X = F.pad(X, (self.reserve_cls_tokens, 0), value=SKIP_VALUE)
        feats = X.transpose(1, 2).unsqueeze(-1)  # (B, HC, T, 1)
        km = None if key_mask is None else key_mask[:, None, :].expand(-1, feats.shape[1], -1)
        src = self.tf_col(self.in_linear(feats), train_size, km)
        emb = feats * self.ln_w(self.out_w(src)) + self.ln_b(self.out_b(src))
        return emb.transpose(1, 2)  # (B, T, HC, E)

    def forward(self, X: Tensor, train_size: int | None = None, feature_shuffles: Sequence[Sequence[int]] | None = None,
                train_sizes: Tensor | None = None) -> Tensor:
        key_mask = None
        if train_sizes is not None:
            key_mask = torch.arange(X.shape[1], device=X.device)[None, :] < train_sizes.to(X.device)[:, None]
        if feature_shuffles is None or X.shape[0] == 1:
            return self._embed(X, train_size, key_mask)
        if len(feature_shuffles) != X.shape[0]:
            raise ValueError(f"feature_shuffles must hold one pattern per table ({X.shape[0]}), "
                             f"got {len(feature_shuffles)}")
        first = self._embed(X[:1], train_size, None if key_mask is None else key_mask[:1])[0]  # (T, HC, E)
        r = self.reserve_cls_tokens
        pos0 = {f: j for j, f in enumerate(feature_shuffles[0])}
        # Table i column j holds original feature p_i[j], found at column pos0[p_i[j]] of table 0. (Upstream maps
        # with the inverse permutation here, but that path crashes upstream at 060d346 before it is used.)
        idx = [list(range(r)) + [r + pos0[f] for f in p] for p in feature_shuffles]
        idx_t = torch.tensor(idx, device=X.device)
        return first[:, idx_t].permute(1, 0, 2, 3).contiguous()


# ---- bi-axial row encoder -------------------------------------------------------------------------------------
class StandardCrossFeatureAttention(nn.Module):
    """Full softmax attention across the tokens of a row: (N, F, E) -> (N, F, E)."""

    def __init__(self, embed_dim, nhead, dim_feedforward, dropout=0.0, activation="gelu", norm_first=True):
        super().__init__()
        self.attention = MultiheadAttentionBlock(embed_dim, nhead, dim_feedforward, dropout, activation, norm_first)

    def forward(self, x: Tensor) -> Tensor:
        return self.attention(x)


class GroupedFeatureAttention(nn.Module):
    """Attention inside ``num_groups`` contiguous groups of ``F // num_groups`` tokens after Linear+LN; the
    ``F mod num_groups`` trailing tokens are passed through unchanged (not projected). (N, F, E) -> (N, F, E)."""

    def __init__(self, embed_dim, nhead, dim_feedforward, num_groups=4, dropout=0.0, activation="gelu",
                 norm_first=True):
        super().__init__()
        self.num_groups = num_groups
        self.attention = MultiheadAttentionBlock(embed_dim, nhead, dim_feedforward, dropout, activation, norm_first)
        self.group_proj = nn.Linear(embed_dim, embed_dim)
        self.group_ln = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        n, f, e = x.shape
        per = f // self.num_groups
        used = per * self.num_groups
        g = self.group_ln(self.group_proj(x[:, :used].reshape(n, self.num_groups, per, e)))
        g = self.attention(g).reshape(n, used, e)
        return torch.cat([g, x[:, used:]], dim=1) if used < f else g


class HierarchicalFeatureAttention(nn.Module):
    """First half of the tokens (projected) attends to the raw second half; then the projected second half attends
    to the *updated* first half (one shared projection and attention block). (N, F, E) -> (N, F, E)."""

    def __init__(self, embed_dim, nhead, dim_feedforward, dropout=0.0, activation="gelu", norm_first=True):
        super().__init__()
        self.attention = MultiheadAttentionBlock(embed_dim, nhead, dim_feedforward, dropout, activation, norm_first)
        self.hier_proj = nn.Linear(embed_dim, embed_dim)
        self.hier_ln = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        mid = x.shape[1] // 2
        first, second = x[:, :mid], x[:, mid:]
        first = self.attention(self.hier_ln(self.hier_proj(first)), second, second)
        second = self.attention(self.hier_ln(self.hier_proj(second)), first, first)
        return torch.cat([first, second], dim=1)


class RelationalFeatureAttention(nn.Module):
    """Linear+LN, then full attention across tokens. (N, F, E) -> (N, F, E)."""

    def __init__(self, embed_dim, nhead, dim_feedforward, dropout=0.0, activation="gelu", norm_first=True):
        super().__init__()
        self.attention = MultiheadAttentionBlock(embed_dim, nhead, dim_feedforward, dropout, activation, norm_first)
        self.rel_proj = nn.Linear(embed_dim, embed_dim)
        self.rel_ln = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.attention(self.rel_ln(self.rel_proj(x)))


class CLSAttention(nn.Module):
    """CLS tokens (N, C, E) cross-attend to the features (N, F, E) -> updated CLS tokens (N, C, E).

    Parameter layout of the official module (``attn`` is an ``nn.MultiheadAttention``, ``ffn`` a Sequential with
    Linear at indices 0 and 3)."""

    def __init__(self, embed_dim, nhead, dim_feedforward, dropout=0.0, activation="gelu", norm_first=True):
        super().__init__()
        self.norm_first = norm_first
        self.attn = PackedMultiheadAttention(embed_dim, nhead)
        self.norm1 = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()
        self.ffn = nn.Sequential(
            nn.Linear(embed_dim, dim_feedforward),
            nn.GELU() if activation == "gelu" else nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, embed_dim),
            nn.Dropout(dropout),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, cls_tokens: Tensor, features: Tensor) -> Tensor:
        if self.norm_first:
            f = self.norm1(features)
            cls_tokens = cls_tokens + self.dropout(self.attn(self.norm1(cls_tokens), f, f))
            return cls_tokens + self.dropout(self.ffn(self.norm2(cls_tokens)))
        cls_tokens = self.norm1(cls_tokens + self.dropout(self.attn(cls_tokens, features, features)))
        return self.norm2(cls_tokens + self.dropout(self.ffn(cls_tokens)))


class BiAxialAttentionBlock(nn.Module):
    """standard -> grouped -> hierarchical -> relational attention, then CLS cross-attention.

    (N, F, E) -> (N, num_cls, E): the block returns **only** its CLS tokens (the upstream "4-step optimised" block;
    the paper's 6-step pattern is not what the checkpoint was trained with)."""

    def __init__(self, embed_dim, nhead, dim_feedforward, num_cls=4, dropout=0.0, activation="gelu",
                 norm_first=True):
        super().__init__()
        args = (embed_dim, nhead, dim_feedforward)
        kw = dict(dropout=dropout, activation=activation, norm_first=norm_first)
        self.standard_attention = StandardCrossFeatureAttention(*args, **kw)
        self.grouped_attention = GroupedFeatureAttention(*args, **kw)
        self.hierarchical_attention = HierarchicalFeatureAttention(*args, **kw)
        self.relational_attention = RelationalFeatureAttention(*args, **kw)
        self.cls_tokens = nn.Parameter(torch.empty(num_cls, embed_dim))
        nn.init.trunc_normal_(self.cls_tokens, std=0.02)
        self.cls_attention = CLSAttention(*args, **kw)

    def forward(self, x: Tensor) -> Tensor:
        x = self.standard_attention(x)
        x = self.grouped_attention(x)
        x = self.hierarchical_attention(x)
        x = self.relational_attention(x)
        cls = self.cls_tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.cls_attention(cls, x)


class BiAxialAttention(nn.Module):
    """Row encoder: (B, T, F', E) column embeddings -> (B, T, num_cls * E) row representations.

    Blocks are chained, and each returns only its CLS tokens, so block 1 sees the 4 reserved slots + F features and
    blocks 2.. see the 4 CLS tokens of the previous block. ``out_ln`` is a parameter-holding quirk of the released
    model: it is in the state dict but never applied."""

    def __init__(self, embed_dim, num_blocks, nhead, dim_feedforward, num_cls=4, dropout=0.0, activation="gelu",
                 norm_first=True):
        super().__init__()
        self.num_cls = num_cls
        self.bi_axial_blocks = nn.ModuleList(
            [BiAxialAttentionBlock(embed_dim, nhead, dim_feedforward, num_cls, dropout, activation, norm_first)
             for _ in range(num_blocks)]
        )
        self.out_ln = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()  # unused upstream; kept for keys

    def forward(self, embeddings: Tensor) -> Tensor:
        b, t, f, e = embeddings.shape
        x = embeddings.reshape(b * t, f, e)
        for block in self.bi_axial_blocks:
            x = block(x)
        return x.reshape(b, t, self.num_cls * e)


# ---- ICL head -------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """Stack of pre-norm :class:`MultiheadAttentionBlock` over rows; keys are the first ``train_size`` rows."""

    def __init__(self, num_blocks, d_model, nhead, dim_feedforward, dropout=0.0, activation="gelu", norm_first=True):
        super().__init__()
        self.blocks = nn.ModuleList(
            [MultiheadAttentionBlock(d_model, nhead, dim_feedforward, dropout, activation, norm_first)
             for _ in range(num_blocks)]
        )

    def forward(self, src: Tensor, kv_len: int | Tensor) -> Tensor:
        for block in self.blocks:
            src = block(src, kv_len=kv_len)
        return src


class ICLearning(nn.Module):
    """Label-aware in-context learner over rows: (B, T, D) representations + (B, n_train) labels -> logits.

    Train mode returns the decoder output of the test rows, all ``max_classes`` columns (B, T - n_train, max_classes).
    Eval mode slices to the number of classes in ``y_train[0]`` and returns logits or ``softmax(logits / temp)``;
    more classes than ``max_classes`` use hierarchical routing (then logits are ``temp * log(p + 1e-6)``).
    """

    def __init__(self, max_classes, d_model, num_blocks, nhead, dim_feedforward, dropout=0.0, activation="gelu",
                 norm_first=True):
        super().__init__()
        self.max_classes, self.norm_first = max_classes, norm_first
        self.tf_icl = Encoder(num_blocks, d_model, nhead, dim_feedforward, dropout, activation, norm_first)
        if norm_first:
            self.ln = nn.LayerNorm(d_model)
        self.y_encoder = OneHotAndLinear(max_classes, d_model)
        self.decoder = nn.Sequential(nn.Linear(d_model, d_model * 2), nn.GELU(), nn.Linear(d_model * 2, max_classes))

    def decode_all(self, R: Tensor, y_train: Tensor, train_sizes: Tensor | None = None) -> Tensor:
        """Decoder output for every row: (B, T, D), (B, n_train) -> (B, T, max_classes)."""
        n_train = y_train.shape[1]
        if train_sizes is None:
            lab = self.y_encoder(y_train)
            R = torch.cat([R[:, :n_train] + lab, R[:, n_train:]], dim=1)
            kv_len: int | Tensor = n_train
        else:
            lab = self.y_encoder(y_train.clamp(min=0))
            valid = (torch.arange(n_train, device=R.device)[None, :] < train_sizes.to(R.device)[:, None])
            R = torch.cat([R[:, :n_train] + lab * valid[..., None].to(lab.dtype), R[:, n_train:]], dim=1)
            kv_len = train_sizes
        src = self.tf_icl(R, kv_len)
        if self.norm_first:
            src = self.ln(src)
        return self.decoder(src)

    def _predict_standard(self, R, y_train, return_logits, temperature):
        out = self.decode_all(R, y_train)
        num_classes = len(torch.unique(y_train[0]))
        out = out[:, y_train.shape[1]:, :num_classes]
        return out if return_logits else torch.softmax(out / temperature, dim=-1)

    def _grouping(self, num_classes: int) -> tuple[list[int], int]:
        """Balanced assignment of ``num_classes`` sorted classes to at most ``max_classes`` contiguous groups."""
        num_groups = min(math.ceil(num_classes / self.max_classes), self.max_classes)
        assign, remaining, left = [], num_classes, num_groups
        for g in range(num_groups):
            size = math.ceil(remaining / left)
            assign += [g] * size
            remaining, left = remaining - size, left - 1
        return assign, num_groups

    def _hierarchical_probs(self, R_train: Tensor, y: Tensor, R_test: Tensor, temperature: float) -> Tensor:
        """Probabilities over the sorted unique classes of ``y`` (n_test, C), multiplied along the routing tree."""
        classes = torch.unique(y)
        R_node = torch.cat([R_train, R_test], dim=0)[None]
        if len(classes) <= self.max_classes:
            local = torch.searchsorted(classes, y)
            return self._predict_standard(R_node, local[None], False, temperature)[0]
        assign, num_groups = self._grouping(len(classes))
        assign_t = torch.tensor(assign, device=y.device)
        groups = assign_t[torch.searchsorted(classes, y)]
        group_p = self._predict_standard(R_node, groups[None], False, temperature)[0]
        out = R_test.new_zeros(R_test.shape[0], len(classes))
        for g in range(num_groups):
            m = groups == g
            child = self._hierarchical_probs(R_train[m], y[m], R_test, temperature)
            cls_idx = torch.searchsorted(classes, torch.unique(y[m]))
            out[:, cls_idx] = child * group_p[:, g : g + 1]
        return out

    def forward(self, R: Tensor, y_train: Tensor, return_logits: bool = True, softmax_temperature: float = 0.9,
                train_sizes: Tensor | None = None) -> Tensor:
        n_train = y_train.shape[1]
        if self.training:
            if train_sizes is not None:  # per-table context sizes: every row's output, the caller masks
                return self.decode_all(R, y_train, train_sizes)
            return self.decode_all(R, y_train)[:, n_train:]
        if train_sizes is not None:
            raise ValueError("train_sizes (per-table context sizes) is a training-mode option")
        num_classes = len(torch.unique(y_train[0]))
        if any(len(torch.unique(yi)) != num_classes for yi in y_train):
            raise ValueError("all tables in an inference batch must have the same number of classes")
        if num_classes <= self.max_classes:
            return self._predict_standard(R, y_train, return_logits, softmax_temperature)
        probs = torch.stack(
            [self._hierarchical_probs(r[:n_train], yi.long(), r[n_train:], softmax_temperature)
             for r, yi in zip(R, y_train)]
        )
        return softmax_temperature * torch.log(probs + 1e-6) if return_logits else probs



# ----------------------------------------------------------------------------------------------------------------
# training-context cache (inference): train rows never attend to test rows, so everything the test rows read from
# them -- the linear-attention state ``(sum_s phi(k_s) v_s^T, sum_s phi(k_s))`` of every column block and the
# keys/values of every ICL block -- is computed once and reused by any number of test rows.
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ContextCache:
    """What :meth:`OrionBix.build_context` keeps of a training context (eval only).

    ``col_states``: per column block, ``(keep (N,) bool, kv (N', H, D, D), k_sum (N', H, D))`` for the N = B' * (R + F)
    columns of the embedded tables (B' = 1 with ``feature_shuffles``: table 0, permuted by ``shuffle_idx``).
    ``icl_kv``: per ICL block, keys and values of the train rows (B, H, n_train, D). ``num_classes``: classes in
    ``y_train[0]`` (the logits are sliced to it).
    """

    n_train: int
    num_features: int
    batch: int
    num_classes: int
    col_states: list
    shuffle_idx: Tensor | None
    icl_kv: list

    def nbytes(self) -> int:
        """Memory held by the cache in bytes."""
        ts = [t for st in self.col_states for t in st] + [t for kv in self.icl_kv for t in kv]
        return sum(t.numel() * t.element_size() for t in ts)


def _linear_attention_state(attn: MultiHeadLinearAttention, x_kv: Tensor) -> tuple[Tensor, Tensor]:
    """``(kv (N, H, D, D), k_sum (N, H, D))`` of keys/values ``x_kv`` (N, S, E), as :class:`MultiHeadLinearAttention`
    contracts them."""
    n, s, _ = x_kv.shape
    k = F.elu(attn.key_projection(x_kv).view(n, s, attn.n_heads, -1)) + 1
    v = attn.value_projection(x_kv).view(n, s, attn.n_heads, -1)
    return torch.einsum("nshd,nshm->nhdm", k, v), k.sum(dim=1)


def _linear_attention_read(attn: MultiHeadLinearAttention, x_q: Tensor, kv: Tensor, k_sum: Tensor) -> Tensor:
    """:meth:`MultiHeadLinearAttention.forward` with the key/value state precomputed: (N, L, E) -> (N, L, E)."""
    n, l, e = x_q.shape
    q = F.elu(attn.query_projection(x_q).view(n, l, attn.n_heads, -1)) + 1
    z = 1.0 / (torch.einsum("nlhd,nhd->nlh", q, k_sum) + attn.eps)
    out = torch.einsum("nlhd,nhmd->nlhm", q, kv) * z[..., None]
    return attn.out_projection(out.reshape(n, l, e))


def _encoder_layer_read(layer: LinearAttentionEncoderLayer, x: Tensor, kv: Tensor, k_sum: Tensor) -> Tensor:
    x = layer.norm1(x + layer.dropout(_linear_attention_read(layer.attention, x, kv, k_sum)))
    y = layer.dropout(layer.linear2(layer.dropout(layer.activation(layer.linear1(x)))))
    return layer.norm2(x + y)


def _col_features(col: ColEmbedding, X: Tensor) -> Tensor:
    if col.reserve_cls_tokens > 0:
        X = F.pad(X, (col.reserve_cls_tokens, 0), value=SKIP_VALUE)
    return X.transpose(1, 2).unsqueeze(-1)  # (B, HC, T, 1)


def _col_finish(col: ColEmbedding, feats: Tensor, src: Tensor) -> Tensor:
    return (feats * col.ln_w(col.out_w(src)) + col.ln_b(col.out_b(src))).transpose(1, 2)


def _col_context(col: ColEmbedding, X_train: Tensor) -> tuple[Tensor, list]:
    """Column embeddings of the train rows (B, n, HC, E) and the per-block linear-attention states."""
    feats = _col_features(col, X_train)
    src = col.in_linear(feats)
    states = []
    for block in col.tf_col.blocks:
        flat = src.reshape(-1, *src.shape[-2:])
        keep = ~(flat == block.skip_value).all(dim=-1).all(dim=-1)
        out = torch.full_like(flat, block.skip_value)
        kv, k_sum = _linear_attention_state(block.transformer_layer.attention, flat[keep])
        out[keep] = _encoder_layer_read(block.transformer_layer, flat[keep], kv, k_sum)
        states.append((keep, kv, k_sum))
        src = out.reshape(src.shape)
    return _col_finish(col, feats, src), states


def _col_read(col: ColEmbedding, X_test: Tensor, states: list) -> Tensor:
    """Column embeddings of test rows (B, m, HC, E) from the cached per-block states."""
    feats = _col_features(col, X_test)
    src = col.in_linear(feats)
    for block, (keep, kv, k_sum) in zip(col.tf_col.blocks, states):
        flat = src.reshape(-1, *src.shape[-2:])
        if bool((~(flat[~keep] == block.skip_value)).any()):
            raise ValueError("a column that is entirely the skip value -100 in the training rows holds other values "
                             "in the test rows: use the uncached forward")
        out = torch.full_like(flat, block.skip_value)
        out[keep] = _encoder_layer_read(block.transformer_layer, flat[keep], kv, k_sum)
        src = out.reshape(src.shape)
    return _col_finish(col, feats, src)


def _mha_block_kv(block: MultiheadAttentionBlock, x: Tensor) -> tuple[Tensor, Tensor]:
    """Keys and values (B, H, n, D) that rows ``x`` (B, n, E) offer as context in ``block``."""
    src = block.norm1(x) if block.norm_first else x
    attn = block.attn
    _, w_k, w_v = attn.in_proj_weight.chunk(3)
    _, b_k, b_v = attn.in_proj_bias.chunk(3)
    h = attn.num_heads
    k = F.linear(src, w_k, b_k).reshape(x.shape[0], x.shape[1], h, -1).transpose(1, 2)
    v = F.linear(src, w_v, b_v).reshape(x.shape[0], x.shape[1], h, -1).transpose(1, 2)
    return k, v


def _mha_block_read(block: MultiheadAttentionBlock, x: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """:meth:`MultiheadAttentionBlock.forward` of rows ``x`` (B, m, E) against cached keys/values."""
    attn = block.attn
    w_q, b_q = attn.in_proj_weight.chunk(3)[0], attn.in_proj_bias.chunk(3)[0]
    b, m, e = x.shape
    h = attn.num_heads

    def attend(inp: Tensor) -> Tensor:
        q = F.linear(inp, w_q, b_q).reshape(b, m, h, -1).transpose(1, 2)
        return attn.out_proj(_attend(q, k, v).transpose(1, 2).reshape(b, m, e))

    if block.norm_first:
        x = x + block.dropout1(attend(block.norm1(x)))
        return x + block._ff(block.norm2(x))
    x = block.norm1(x + block.dropout1(attend(x)))
    return block.norm2(x + block._ff(x))


def _icl_head(icl: ICLearning, src: Tensor) -> Tensor:
    if icl.norm_first:
        src = icl.ln(src)
    return icl.decoder(src)

# ----------------------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------------------
class OrionBix(nn.Module):
    """Orion-BiX tabular in-context classifier (official constructor arguments).

    ``forward(X (B, T, F) float32, y_train (B, n_train) float/int class ids, ...)``: see :meth:`forward`.
    Only ``col_attention_type='linear'``, ``row_attention_type='bi_axial'`` and ``icl_attention_type='standard'`` (the
    released modules) are implemented; ``col_num_inds``, ``*_feature_map`` (other than elu) and ``row_rope_base`` are
    accepted for config compatibility and, as upstream, unused.
    """

    def __init__(
        self,
        max_classes: int = 10,
        embed_dim: int = 128,
        col_num_blocks: int = 3,
        col_nhead: int = 4,
        col_num_inds: int = 128,
        col_attention_type: str = "linear",
        col_feature_map: str = "elu",
        row_num_blocks: int = 3,
        row_nhead: int = 8,
        row_num_cls: int = 4,
        row_rope_base: float = 100000.0,
        row_attention_type: str = "bi_axial",
        row_feature_map: str = "elu",
        icl_num_blocks: int = 12,
        icl_nhead: int = 4,
        icl_attention_type: str = "standard",
        icl_feature_map: str = "elu",
        ff_factor: int = 2,
        dropout: float = 0.0,
        activation: str = "gelu",
        norm_first: bool = True,
        **unused: Any,
    ):
        super().__init__()
        if col_attention_type != "linear" or col_feature_map != "elu":
            raise ValueError("only col_attention_type='linear' with col_feature_map='elu' (the released model) is "
                             f"implemented, got {col_attention_type!r}/{col_feature_map!r}")
        if row_attention_type != "bi_axial":
            raise ValueError(f"only row_attention_type='bi_axial' is implemented, got {row_attention_type!r}")
        if icl_attention_type != "standard":
            raise ValueError(f"only icl_attention_type='standard' is implemented, got {icl_attention_type!r}")
        if max_classes < 2:
            raise ValueError(f"max_classes must be >= 2, got {max_classes}")
        self.max_classes, self.embed_dim, self.row_num_cls = max_classes, embed_dim, row_num_cls
        self.col_embedder = ColEmbedding(embed_dim, col_num_blocks, col_nhead, embed_dim * ff_factor, dropout,
                                         activation, norm_first, reserve_cls_tokens=row_num_cls)
        self.row_interactor = None  # upstream attribute (None for bi_axial)
        self.bi_axial_attention = BiAxialAttention(embed_dim, row_num_blocks, row_nhead, embed_dim * ff_factor,
                                                   row_num_cls, dropout, activation, norm_first)
        icl_dim = embed_dim * row_num_cls
        self.icl_predictor = ICLearning(max_classes, icl_dim, icl_num_blocks, icl_nhead, icl_dim * ff_factor,
                                        dropout, activation, norm_first)

    def forward(
        self,
        X: Tensor,
        y_train: Tensor,
        d: Tensor | None = None,
        feature_shuffles: Sequence[Sequence[int]] | None = None,
        embed_with_test: bool = False,
        return_logits: bool = True,
        softmax_temperature: float = 0.9,
        inference_config: Any = None,
        train_sizes: Tensor | None = None,
    ) -> Tensor:
        """Predict the rows after the first ``n_train = y_train.shape[1]`` of each table.

        Args:
            X: (B, T, F) float features (T >= n_train).
            y_train: (B, n_train) class ids 0..C-1 (float or int).
            d: per-table feature counts; only ``None`` or all-equal-to-F is supported (pad features yourself).
            feature_shuffles: eval only; one column permutation per table, tables being permutations of one table.
            embed_with_test: let test rows act as keys in the column embedder (upstream option).
            return_logits / softmax_temperature: eval only.
            inference_config: accepted for upstream compatibility, ignored.
            train_sizes: train only; (B,) per-table context sizes <= n_train (rows beyond are masked as keys and
                their labels ignored: the KeyPadding path for tables of different sizes). The output then covers
                all T rows, (B, T, max_classes); select the rows >= train_sizes[b] for the loss.
        Returns:
            train mode: (B, T - n_train, max_classes) decoder outputs. eval mode: (B, T - n_train, C) logits, or
            probabilities ``softmax(logits / temperature)`` when ``return_logits=False``.
        """
        if X.dim() != 3:
            raise ValueError(f"X must be (B, T, F), got shape {tuple(X.shape)}")
        if y_train.dim() != 2 or y_train.shape[0] != X.shape[0]:
            raise ValueError(f"y_train must be (B, n_train) with B={X.shape[0]}, got {tuple(y_train.shape)}")
        n_train = y_train.shape[1]
        if not 0 < n_train <= X.shape[1]:
            raise ValueError(f"y_train holds {n_train} labels but X has {X.shape[1]} rows; need 0 < n_train <= T")
        if d is not None and not bool((d == X.shape[2]).all()):
            raise ValueError("per-table feature counts d != F are not supported; pad tables to a common F")
        if not self.training:
            train_sizes_eff = None
            if train_sizes is not None:
                raise ValueError("train_sizes is a training-mode option")
        else:
            train_sizes_eff = train_sizes
            feature_shuffles = None
        emb = self.col_embedder(X, None if embed_with_test else n_train, feature_shuffles,
                                None if embed_with_test else train_sizes_eff)
        R = self.bi_axial_attention(emb)
        return self.icl_predictor(R, y_train, return_logits, softmax_temperature, train_sizes_eff)

    @torch.no_grad()
    def build_context(self, X_train: Tensor, y_train: Tensor,
                      feature_shuffles: Sequence[Sequence[int]] | None = None) -> ContextCache:
        """Cache the training context (eval mode, at most ``max_classes`` classes) for :meth:`forward_with_context`.

        ``X_train`` (B, n_train, F), ``y_train`` (B, n_train) class ids, ``feature_shuffles`` as in :meth:`forward`.
        ``forward_with_context(X_test, cache)`` equals ``forward(cat([X_train, X_test], 1), y_train)`` (same
        ``feature_shuffles``) up to float rounding, at the cost of the test rows only.
        """
        if self.training:
            raise ValueError("build_context is for inference: call model.eval() first")
        if X_train.dim() != 3 or y_train.shape != X_train.shape[:2]:
            raise ValueError(f"need X_train (B, n, F) and y_train (B, n), got {tuple(X_train.shape)}, "
                             f"{tuple(y_train.shape)}")
        num_classes = len(torch.unique(y_train[0]))
        if any(len(torch.unique(yi)) != num_classes for yi in y_train):
            raise ValueError("all tables in an inference batch must have the same number of classes")
        if num_classes > self.max_classes:
            raise ValueError(f"{num_classes} classes > max_classes={self.max_classes} (hierarchical routing): "
                             "the context cache covers the standard path only")
        b, n, f = X_train.shape
        shuffle_idx = None
        if feature_shuffles is not None and b > 1:
            if len(feature_shuffles) != b:
                raise ValueError(f"feature_shuffles must hold one pattern per table ({b}), got {len(feature_shuffles)}")
            r = self.col_embedder.reserve_cls_tokens
            pos0 = {c: j for j, c in enumerate(feature_shuffles[0])}
            shuffle_idx = torch.tensor([list(range(r)) + [r + pos0[c] for c in p] for p in feature_shuffles],
                                       device=X_train.device)
            emb, col_states = _col_context(self.col_embedder, X_train[:1])
            emb = emb[0][:, shuffle_idx].permute(1, 0, 2, 3)
        else:
            emb, col_states = _col_context(self.col_embedder, X_train)
        x = self.bi_axial_attention(emb) + self.icl_predictor.y_encoder(y_train)
        icl_kv = []
        for block in self.icl_predictor.tf_icl.blocks:
            k, v = _mha_block_kv(block, x)
            icl_kv.append((k, v))
            x = _mha_block_read(block, x, k, v)
        return ContextCache(n, f, b, num_classes, col_states, shuffle_idx, icl_kv)

    @torch.no_grad()
    def forward_with_context(self, X_test: Tensor, cache: ContextCache, return_logits: bool = True,
                             softmax_temperature: float = 0.9) -> Tensor:
        """Predict test rows ``X_test`` (B, m, F) against a cached context: (B, m, C) logits or probabilities."""
        if self.training:
            raise ValueError("forward_with_context is for inference: call model.eval() first")
        if X_test.dim() != 3 or X_test.shape[0] != cache.batch or X_test.shape[2] != cache.num_features:
            raise ValueError(f"X_test must be (B={cache.batch}, m, F={cache.num_features}), got "
                             f"{tuple(X_test.shape)}")
        if cache.shuffle_idx is not None:
            emb = _col_read(self.col_embedder, X_test[:1], cache.col_states)[0]
            emb = emb[:, cache.shuffle_idx].permute(1, 0, 2, 3)
        else:
            emb = _col_read(self.col_embedder, X_test, cache.col_states)
        x = self.bi_axial_attention(emb)
        for block, (k, v) in zip(self.icl_predictor.tf_icl.blocks, cache.icl_kv):
            x = _mha_block_read(block, x, k, v)
        out = _icl_head(self.icl_predictor, x)[..., : cache.num_classes]
        return out if return_logits else torch.softmax(out / softmax_temperature, dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# configs + registry
# ----------------------------------------------------------------------------------------------------------------
RELEASED_CONFIG: dict[str, Any] = dict(
    max_classes=10, embed_dim=128, col_num_blocks=3, col_nhead=4, col_num_inds=128, col_attention_type="linear",
    col_feature_map="elu", row_num_blocks=3, row_nhead=8, row_num_cls=4, row_rope_base=100000.0,
    row_attention_type="bi_axial", row_feature_map="elu", icl_num_blocks=12, icl_nhead=4,
    icl_attention_type="standard", icl_feature_map="elu", ff_factor=2, dropout=0.0, activation="gelu",
    norm_first=True,
)
SMALL_CONFIG: dict[str, Any] = {**RELEASED_CONFIG, "embed_dim": 32, "col_num_blocks": 2, "col_num_inds": 16,
                                "row_num_blocks": 2, "row_nhead": 4, "icl_num_blocks": 3}

_PAPER = "arXiv:2512.00181"
_TITLE = "Orion-BiX: Bi-Axial Attention for Tabular In-Context Learning"
_SPEC = {"shape": ("T", "F"), "dtype": "float32", "max_classes": 10,
         "note": "one table per call: X (B, T, F) with the first y_train.shape[1] rows labelled"}


@register_model(
    paper=_PAPER, title=_TITLE, task="tabular-classification", license="mit", input_spec=_SPEC,
    pretrained={
        # The authors' file is a pickled {config, state_dict}: never loaded by the hub loader. Convert it with
        # convert_checkpoint() + zoo.save_pretrained() (docs/models/orion_bix.md).
        "official": PretrainedSource(repo_id="Lexsi/Orion-BiX", filename="Orion-BiX-v1.1.ckpt"),
    },
)
def orion_bix(**kwargs: Any) -> OrionBix:
    """Orion-BiX as released (28,346,762 params): d 128, 3 linear column blocks, 3 bi-axial blocks, 12 ICL blocks."""
    return OrionBix(**{**RELEASED_CONFIG, **kwargs})


@register_model(
    paper=_PAPER, title=_TITLE, task="tabular-classification", license="mit", input_spec=_SPEC,
    pretrained={"prior": PretrainedSource(
        repo_id="zoo-models/orion_bix_small.prior", dataset="tabular-prior",
        sha256="c970f43bce10dc2ea1bb257af1b43261899b4c7186fb36c87de8418828a6832d",  # the file in hub/zoo-models/
        metrics={"val/loss": 1.3743, "val/acc": 0.4733, "val/acc_majority": 0.4577})},
)
def orion_bix_small(**kwargs: Any) -> OrionBix:
    """Small Orion-BiX (546,570 params; the reference-fixture config): d 32, 2/2/3 blocks, same module types."""
    return OrionBix(**{**SMALL_CONFIG, **kwargs})


# ----------------------------------------------------------------------------------------------------------------
# the authors' checkpoint format
# ----------------------------------------------------------------------------------------------------------------
def clean_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip the ``_orig_mod.`` (torch.compile) and ``module.`` (DDP) prefixes from official keys."""
    return {k.replace("_orig_mod.", "").replace("module.", ""): v for k, v in state_dict.items()}


def convert_checkpoint(path: str) -> tuple[OrionBix, dict[str, Any]]:
    """Load the authors' ``{config, state_dict}`` ``.ckpt`` (e.g. ``Orion-BiX-v1.1.ckpt``) strictly.

    Returns ``(model in eval mode, config)``. The file is read with ``torch.load(weights_only=True)``; write the
    zoo's hub layout with ``zoo.save_pretrained(model, folder, ...)`` (the config becomes ``config.json`` args).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path}: expected a dict with 'config' and 'state_dict' (the official Orion-BiX format)")
    config = dict(ckpt["config"])
    model = OrionBix(**config)
    model.load_state_dict(clean_state_dict(ckpt["state_dict"]), strict=True)
    model.zoo_config = {"architecture": "orion_bix", "args": {k: v for k, v in config.items()
                                                              if k in RELEASED_CONFIG}}
    return model.float().eval(), config
