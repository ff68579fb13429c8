"""Synthetic tabular prior for meta-training in-context classifiers (TabICL-style structural causal models).

Every episode is a fresh classification table drawn from a mixture of

- **MLP-SCM** (p = 1 - ``p_tree``): root causes (normal / uniform / mixed, optionally per-row "sample-level" noise
  scale) pass through a random MLP with random activations and Gaussian noise at every layer; features and the
  target are random intermediate nodes (so some features are causes, some effects of the target);
- **tree-SCM** (p = ``p_tree``, default 0.3): the same layered graph but every node is a sum of random axis-aligned
  regression trees (piecewise-constant functions of the previous layer; TabICL fits XGBoost on noise, here the
  trees are drawn directly).

The continuous target is binned to ``C ~ U{2..max_classes}`` classes (``reg2cls``: random quantile boundaries, or
value thresholds, then a random class permutation); a fraction ``p_categorical`` of features is discretised into
2..10 categories with random ordinal codes; features are z-scored with the *train* rows' statistics and clipped
(like the estimator's preprocessing); rows are shuffled and the first ``n_train = round(frac * T)`` rows, with
``frac ~ U(min_train_frac, max_train_frac)`` (0.1-0.9), form the context.

Batches: :class:`TabularPriorDataset` is an ``IterableDataset`` that yields whole batches (tables in one batch share
T and F, have their own ``n_train``: the model masks keys per table with ``KeyPadding``). Each DataLoader worker is
seeded from ``(seed, worker id, rank)``. :class:`TabularPriorDataModule` wraps it for Lightning.

Batch dict: ``X`` (B, T, F) float32, ``y`` (B, T) int64 (all rows' labels), ``train_sizes`` (B,) int64.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

try:
    import lightning as L

    _DM_BASE = L.LightningDataModule
except Exception:  # pragma: no cover
    _DM_BASE = object

__all__ = ["PriorConfig", "sample_table", "sample_batch", "TabularPriorDataset", "TabularPriorDataModule",
           "TorchPriorConfig", "sample_batch_torch"]


def _validate_table_ranges(cfg) -> None:
    """Checks shared by the numpy and torch prior configs: feature / row / train-fraction ranges and class count."""
    if not 1 <= cfg.min_features <= cfg.max_features:
        raise ValueError(f"need 1 <= min_features <= max_features, got {cfg.min_features}, {cfg.max_features}")
    if not 4 <= cfg.min_rows <= cfg.max_rows:
        raise ValueError(f"need 4 <= min_rows <= max_rows, got {cfg.min_rows}, {cfg.max_rows}")
    if not 0.0 < cfg.min_train_frac <= cfg.max_train_frac < 1.0:
        raise ValueError("need 0 < min_train_frac <= max_train_frac < 1")
    if cfg.max_classes < 2:
        raise ValueError(f"max_classes must be >= 2, got {cfg.max_classes}")


@dataclass
class PriorConfig:
    """Prior hyper-parameters (ranges are inclusive)."""

    batch_size: int = 8
    min_features: int = 2
    max_features: int = 20
    min_rows: int = 64
    max_rows: int = 256
    max_classes: int = 10
    min_train_frac: float = 0.1
    max_train_frac: float = 0.9
    p_tree: float = 0.3
    p_categorical: float = 0.2
    min_layers: int = 1
    max_layers: int = 4
    min_hidden: int = 8
    max_hidden: int = 48
    clip: float = 10.0

    def validate(self) -> None:
        _validate_table_ranges(self)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


_ACTS = (
    np.tanh,
    lambda x: np.maximum(x, 0.0),
    lambda x: 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30))),
    np.sin,
    lambda x: x,
    lambda x: np.where(x > 0, x, 0.1 * x),
    lambda x: np.abs(x),
    lambda x: np.sign(x) * np.sqrt(np.abs(x)),
)


def _causes(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        z = rng.normal(size=(n, d))
    elif kind == 1:
        z = rng.uniform(-1.7, 1.7, size=(n, d))
    else:
        z = np.where(rng.random((n, d)) < 0.5, rng.normal(size=(n, d)), rng.uniform(-1.7, 1.7, size=(n, d)))
    if rng.random() < 0.3:  # heteroscedastic rows
        z = z * rng.gamma(2.0, 0.5, size=(n, 1))
    return z


def _random_trees(rng: np.random.Generator, h: np.ndarray, n_out: int) -> np.ndarray:
    """n_out outputs, each a sum of 1-3 random axis-aligned trees of depth 2-5 on the columns of h (n, d)."""
    n, d = h.shape
    out = np.zeros((n, n_out))
    for o in range(n_out):
        for _ in range(int(rng.integers(1, 4))):
            depth = int(rng.integers(2, 6))
            node = np.zeros(n, dtype=np.int64)
            for _lvl in range(depth):
                n_nodes = 2 ** _lvl
                feat = rng.integers(d, size=n_nodes)
                thr = h[rng.integers(n, size=n_nodes), feat]  # split at the value of a random row
                node = 2 * node + (h[np.arange(n), feat[node]] > thr[node])
            out[:, o] += rng.normal(size=2 ** depth)[node]
    return out


def _scm_nodes(rng: np.random.Generator, n: int, cfg: PriorConfig, tree: bool) -> np.ndarray:
    """All intermediate node values (n, n_nodes) of one random layered SCM."""
    n_layers = int(rng.integers(cfg.min_layers, cfg.max_layers + 1))
    hidden = int(rng.integers(cfg.min_hidden, cfg.max_hidden + 1))
    h = _causes(rng, n, int(rng.integers(2, max(3, hidden // 2) + 1)))
    noise = float(np.exp(rng.uniform(np.log(1e-3), np.log(0.3))))
    nodes = [h]
    for _ in range(n_layers):
        if tree:
            h = _random_trees(rng, h, hidden)
        else:
            w = rng.normal(size=(h.shape[1], hidden)) / math.sqrt(h.shape[1])
            if rng.random() < 0.5:  # sparse connectivity
                w = w * (rng.random(w.shape) < 0.5)
            h = _ACTS[int(rng.integers(len(_ACTS)))](h @ w + rng.normal(size=hidden) * 0.5)
        h = h + noise * rng.normal(size=h.shape) * (h.std(axis=0, keepdims=True) + 1e-6)
        nodes.append(h)
    allv = np.concatenate(nodes[1:] if rng.random() < 0.8 else nodes, axis=1)
    return allv


def _reg2cls(rng: np.random.Generator, t: np.ndarray, n_classes: int) -> np.ndarray:
    if rng.random() < 0.7:  # rank-based: random quantile boundaries
        qs = np.sort(rng.uniform(0.05, 0.95, size=n_classes - 1))
        bounds = np.quantile(t, qs)
    else:  # value-based: random thresholds inside the range
        bounds = np.sort(rng.uniform(t.min(), t.max(), size=n_classes - 1))
    y = np.searchsorted(bounds, t)
    return rng.permutation(n_classes)[y]


def sample_table(rng: np.random.Generator, n_rows: int, n_features: int, n_train: int,
                 cfg: PriorConfig) -> tuple[np.ndarray, np.ndarray]:
    """One table: X (n_rows, n_features) float32 normalised with its first n_train rows, y (n_rows,) int64."""
    for _attempt in range(20):
        tree = rng.random() < cfg.p_tree
        nodes = _scm_nodes(rng, n_rows, cfg, tree)
        while nodes.shape[1] < n_features + 1:
            nodes = np.concatenate([nodes, _scm_nodes(rng, n_rows, cfg, tree)], axis=1)
        cols = rng.choice(nodes.shape[1], size=n_features + 1, replace=False)
        X, t = nodes[:, cols[:-1]], nodes[:, cols[-1]]
        if np.ptp(t) <= 1e-8 or not np.isfinite(nodes).all():
            continue
        n_classes = int(rng.integers(2, cfg.max_classes + 1))
        y = _reg2cls(rng, t, n_classes)
        perm = rng.permutation(n_rows)
        X, y = X[perm], y[perm]
        if len(np.unique(y[:n_train])) < 2:
            continue
        break
    # relabel to 0..C'-1 by first appearance in the train rows (classes seen only in test keep the highest ids)
    seen = list(dict.fromkeys(y[:n_train].tolist()))
    uniq = seen + [c for c in dict.fromkeys(y.tolist()) if c not in set(seen)]
    remap = {c: i for i, c in enumerate(uniq)}
    y = np.array([remap[c] for c in y], dtype=np.int64)
    for j in range(n_features):
        if rng.random() < cfg.p_categorical:
            k = int(rng.integers(2, 11))
            edges = np.quantile(X[:, j], np.linspace(0, 1, k + 1)[1:-1])
            X[:, j] = rng.permutation(k)[np.searchsorted(edges, X[:, j])].astype(np.float64)
    mu = X[:n_train].mean(axis=0)
    sd = X[:n_train].std(axis=0) + 1e-6
    X = np.clip((X - mu) / sd, -cfg.clip, cfg.clip)
    return X.astype(np.float32), y


def sample_batch(rng: np.random.Generator, cfg: PriorConfig) -> dict[str, torch.Tensor]:
    """A batch of ``cfg.batch_size`` tables sharing T and F: ``{"X", "y", "train_sizes"}``."""
    T = int(rng.integers(cfg.min_rows, cfg.max_rows + 1))
    Fn = int(rng.integers(cfg.min_features, cfg.max_features + 1))
    Xs, ys, ts = [], [], []
    for _ in range(cfg.batch_size):
        frac = rng.uniform(cfg.min_train_frac, cfg.max_train_frac)
        n_train = int(min(max(round(frac * T), 2), T - 1))
        X, y = sample_table(rng, T, Fn, n_train, cfg)
        Xs.append(X)
        ys.append(y)
        ts.append(n_train)
    return {"X": torch.from_numpy(np.stack(Xs)), "y": torch.from_numpy(np.stack(ys)),
            "train_sizes": torch.tensor(ts, dtype=torch.int64)}


# ----------------------------------------------------------------------------------------------------------------
# batched torch prior (runs on the training device: steps are bound by the model, not by CPU prior workers)
# ----------------------------------------------------------------------------------------------------------------
_TORCH_ACTS = (
    torch.tanh,
    torch.relu,
    torch.sigmoid,
    torch.sin,
    lambda x: x,
    lambda x: F.leaky_relu(x, 0.1),
    torch.abs,
    lambda x: torch.sign(x) * torch.sqrt(torch.abs(x)),
    lambda x: (x > 0).to(x.dtype),  # step: piecewise-constant (tree-like) nodes
    lambda x: torch.exp(-x * x),  # bump: non-monotone
)


@dataclass
class TorchPriorConfig:
    """Ranges of the batched torch prior (inclusive). Rows, features and the number of tables per batch are shared
    by the tables of one batch; everything else is drawn per table.

    ``p_linear``: probability that a table's labels are a noisy multinomial-logistic function of its features (real
    tables are often close to linearly separable); otherwise the target is a random node of a random MLP-SCM binned
    into classes. ``max_cells``: tables per batch = ``min(batch_size, max_cells // (T * (F + 4)))``.
    Curriculum: over the first ``curriculum`` fraction of training, the largest T and F grow linearly from
    ``start_rows`` / ``start_features`` to ``max_rows`` / ``max_features`` (T and F are drawn log-uniformly).
    """

    batch_size: int = 64
    min_features: int = 2
    max_features: int = 100
    min_rows: int = 32
    max_rows: int = 1024
    max_classes: int = 10
    min_train_frac: float = 0.3
    max_train_frac: float = 0.9
    p_linear: float = 0.35
    p_effect: float = 0.4
    p_categorical: float = 0.15
    min_layers: int = 1
    max_layers: int = 4
    min_hidden: int = 8
    max_hidden: int = 64
    max_noise: float = 0.1
    max_cells: int = 1 << 21
    start_rows: int = 128
    start_features: int = 16
    curriculum: float = 0.5
    clip: float = 10.0

    def validate(self) -> None:
        _validate_table_ranges(self)
        if self.batch_size < 1 or self.max_cells < 1:
            raise ValueError("batch_size and max_cells must be >= 1")
        if not 0.0 <= self.curriculum <= 1.0:
            raise ValueError(f"curriculum must be in [0, 1], got {self.curriculum}")

    def shape_at(self, progress: float, gen: torch.Generator) -> tuple[int, int, int]:
        """(tables, rows T, features F) of a batch at training ``progress`` in [0, 1] (the curriculum)."""
        p = 1.0 if self.curriculum <= 0 else min(1.0, max(0.0, progress) / self.curriculum)
        hi_rows = round(min(self.start_rows, self.max_rows) + p * (self.max_rows - min(self.start_rows, self.max_rows)))
        hi_feat = round(min(self.start_features, self.max_features)
                        + p * (self.max_features - min(self.start_features, self.max_features)))
        u = torch.rand(2, generator=gen, device=gen.device).tolist()
        T = int(round(math.exp(math.log(self.min_rows) + u[0] * (math.log(max(hi_rows, self.min_rows))
                                                                   - math.log(self.min_rows)))))
        Fn = int(round(math.exp(math.log(self.min_features) + u[1] * (math.log(max(hi_feat, self.min_features))
                                                                        - math.log(self.min_features)))))
        T, Fn = max(self.min_rows, min(T, self.max_rows)), max(self.min_features, min(Fn, self.max_features))
        B = max(1, min(self.batch_size, self.max_cells // (T * (Fn + 4))))
        return B, T, Fn


def _uniform(gen, shape, lo, hi, device):
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


def _randint(gen, lo, hi, shape, device):  # inclusive
    return torch.randint(lo, hi + 1, shape, generator=gen, device=device)


def _standardise(h: Tensor) -> Tensor:
    return (h - h.mean(dim=1, keepdim=True)) / (h.std(dim=1, keepdim=True) + 1e-6)


def _mlp_scm_nodes(gen, B: int, T: int, n_nodes: int, cfg: TorchPriorConfig, device) -> Tensor:
    """Node values (B, T, >= n_nodes) of random layered MLP-SCMs (one graph per table, shared widths)."""
    n_layers = int(_randint(gen, cfg.min_layers, cfg.max_layers, (1,), device))
    hidden = int(_randint(gen, cfg.min_hidden, cfg.max_hidden, (1,), device))
    hidden = max(hidden, math.ceil(n_nodes / n_layers))
    d0 = int(_randint(gen, 2, max(3, hidden // 2), (1,), device))
    # root causes: normal, uniform or a per-column mix; optional heteroscedastic rows
    normal = torch.randn(B, T, d0, generator=gen, device=device)
    unif = _uniform(gen, (B, T, d0), -1.7, 1.7, device)
    kind = _randint(gen, 0, 2, (B, 1, 1), device)
    mix = torch.rand(B, 1, d0, generator=gen, device=device) < 0.5
    h = torch.where(kind == 0, normal, torch.where(kind == 1, unif, torch.where(mix, normal, unif)))
    hetero = torch.rand(B, 1, 1, generator=gen, device=device) < 0.3
    h = torch.where(hetero, h * torch.exp(0.5 * torch.randn(B, T, 1, generator=gen, device=device)), h)
    noise = torch.exp(_uniform(gen, (B, 1, 1), math.log(1e-3), math.log(cfg.max_noise), device))
    nodes = [h]
    for _ in range(n_layers):
        w = torch.randn(B, h.shape[-1], hidden, generator=gen, device=device) / math.sqrt(h.shape[-1])
        sparse = torch.rand(B, 1, 1, generator=gen, device=device) < 0.5
        w = torch.where(sparse, w * (torch.rand(w.shape, generator=gen, device=device) < 0.5), w)
        pre = _standardise(h @ w) + 0.5 * torch.randn(B, 1, hidden, generator=gen, device=device)
        act = _randint(gen, 0, len(_TORCH_ACTS) - 1, (B, 1, 1), device)
        h = torch.zeros_like(pre)
        for i, fn in enumerate(_TORCH_ACTS):
            h = torch.where(act == i, fn(pre), h)
        h = h + noise * torch.randn(h.shape, generator=gen, device=device) * (h.std(dim=1, keepdim=True) + 1e-6)
        nodes.append(h)
    return torch.cat(nodes, dim=-1)


def _bin_target(gen, t: Tensor, n_classes: Tensor, max_classes: int, device) -> Tensor:
    """Continuous targets (B, T) -> classes (B, T) in 0..n_classes[b]-1: random quantile (70 %) or value thresholds,
    then a random permutation of the classes."""
    B, T = t.shape
    k = torch.arange(max_classes - 1, device=device)[None, :]
    valid = k < (n_classes[:, None] - 1)
    q = torch.sort(torch.where(valid, _uniform(gen, (B, max_classes - 1), 0.05, 0.95, device), 2.0), dim=1).values
    st = torch.sort(t, dim=1).values
    by_rank = st.gather(1, (q.clamp(max=1.0) * (T - 1)).round().long())
    lo, hi = st[:, :1], st[:, -1:]
    by_value = torch.sort(lo + (hi - lo) * torch.rand(B, max_classes - 1, generator=gen, device=device), dim=1).values
    rank = torch.rand(B, 1, generator=gen, device=device) < 0.7
    bounds = torch.where(valid, torch.where(rank, by_rank, by_value), torch.inf)
    y = (t[:, :, None] > bounds[:, None, :]).sum(-1)
    return _permute_classes(gen, y, n_classes, max_classes, device)


def _permute_classes(gen, y: Tensor, n_classes: Tensor, max_classes: int, device) -> Tensor:
    keys = torch.rand(y.shape[0], max_classes, generator=gen, device=device)
    keys = torch.where(torch.arange(max_classes, device=device)[None, :] < n_classes[:, None], keys, 2.0)
    return keys.argsort(dim=1).gather(1, y)


def _relabel_by_train(y: Tensor, train_mask: Tensor, max_classes: int) -> tuple[Tensor, Tensor]:
    """Map classes present in the train rows to 0..C_train-1 (in class order), the others after them."""
    present = (F.one_hot(y, max_classes) * train_mask[..., None]).sum(1) > 0  # (B, C)
    n_present = present.sum(1, keepdim=True)
    new = torch.where(present, present.cumsum(1) - 1, n_present + (~present).cumsum(1) - 1)
    return new.gather(1, y), n_present[:, 0]


def sample_batch_torch(gen: torch.Generator, cfg: TorchPriorConfig, progress: float = 1.0,
                       shape: tuple[int, int, int] | None = None) -> dict[str, Tensor]:
    """A prior batch on ``gen.device``: ``{"X" (B, T, F) float32, "y" (B, T) int64, "train_sizes" (B,) int64}``.

    ``shape``: (B, T, F), else drawn by :meth:`TorchPriorConfig.shape_at` at ``progress``. Per table: MLP-SCM nodes
    (random activations incl. step and bump functions, sparse weights, noise), F features and a target picked among
    the nodes; with probability ``p_linear`` the labels come from a random multinomial-logistic model of the
    (standardised) features instead; 2..max_classes classes; categorical features (2-10 random ordinal codes);
    z-scored with the train rows' statistics and clipped. Train labels are 0..C_train-1 with C_train >= 2.
    """
    device = gen.device
    B, T, Fn = shape if shape is not None else cfg.shape_at(progress, gen)
    C = cfg.max_classes
    frac = _uniform(gen, (B,), cfg.min_train_frac, cfg.max_train_frac, device)
    n_train = (frac * T).round().long().clamp(2, T - 1)
    train_mask = torch.arange(T, device=device)[None, :] < n_train[:, None]

    nodes = _mlp_scm_nodes(gen, B, T, Fn + 1, cfg, device)
    pick = torch.rand(B, nodes.shape[-1], generator=gen, device=device).argsort(dim=1)[:, : Fn + 1]
    chosen = nodes.gather(2, pick[:, None, :].expand(B, T, Fn + 1))
    X, t = _standardise(chosen[..., :Fn]), chosen[..., Fn]
    # "effect" tables: the target is a random one-hidden-layer function of a subset of the chosen features
    effect = torch.rand(B, 1, generator=gen, device=device) < cfg.p_effect
    w1 = torch.randn(B, Fn, 16, generator=gen, device=device)
    w1 = w1 * (torch.rand(B, Fn, 1, generator=gen, device=device) < _uniform(gen, (B, 1, 1), 0.2, 1.0, device))
    act = _randint(gen, 0, len(_TORCH_ACTS) - 1, (B, 1, 1), device)
    pre = _standardise(X @ w1)
    hid = torch.zeros_like(pre)
    for i, fn in enumerate(_TORCH_ACTS):
        hid = torch.where(act == i, fn(pre), hid)
    t_eff = (hid @ torch.randn(B, 16, 1, generator=gen, device=device))[..., 0]
    t_eff = t_eff + 0.1 * torch.exp(_uniform(gen, (B, 1), math.log(0.01), math.log(1.0), device)) * \
        t_eff.std(dim=1, keepdim=True) * torch.randn(B, T, generator=gen, device=device)
    t = torch.where(effect, t_eff, t)
    t = torch.nan_to_num(_standardise(torch.nan_to_num(t)[..., None])[..., 0])
    t = t + 1e-4 * torch.randn(B, T, generator=gen, device=device)  # no ties (constant nodes become noise)
    n_classes = _randint(gen, 2, C, (B,), device)
    y = _bin_target(gen, t, n_classes, C, device)

    # multinomial-logistic tables: y = argmax_c (X w_c * scale + b_c + Gumbel noise), w sparse over features
    w = torch.randn(B, Fn, C, generator=gen, device=device)
    relevant = torch.rand(B, Fn, 1, generator=gen, device=device) < _uniform(gen, (B, 1, 1), 0.2, 1.0, device)
    w = w * relevant / torch.sqrt(relevant.sum(1, keepdim=True).clamp(min=1))
    scale = torch.exp(_uniform(gen, (B, 1, 1), math.log(1.0), math.log(10.0), device))
    gumbel = -torch.log(-torch.log(torch.rand(B, T, C, generator=gen, device=device).clamp(1e-9, 1 - 1e-9)))
    logits = (X @ w) * scale + 0.5 * torch.randn(B, 1, C, generator=gen, device=device) + gumbel
    logits = logits.masked_fill(torch.arange(C, device=device)[None, None, :] >= n_classes[:, None, None], -torch.inf)
    linear = torch.rand(B, 1, generator=gen, device=device) < cfg.p_linear
    y = torch.where(linear, _permute_classes(gen, logits.argmax(-1), n_classes, C, device), y)

    y, n_present = _relabel_by_train(y, train_mask, C)
    # fewer than 2 classes among the train rows: binary split of the target at its train median instead
    t_train = torch.where(train_mask, t, torch.nan)
    median = t_train.nanmedian(dim=1, keepdim=True).values
    binary = (t > median).long()
    binary, n_bin = _relabel_by_train(binary, train_mask, C)
    y = torch.where((n_present < 2)[:, None], binary, y)

    # categorical features: 2..10 quantile bins with random ordinal codes
    cat = torch.rand(B, 1, Fn, generator=gen, device=device) < cfg.p_categorical
    k = _randint(gen, 2, 10, (B, 1, Fn), device)
    ranks = X.argsort(dim=1).argsort(dim=1).to(X.dtype) / T
    bins = (ranks * k).floor().long().clamp(max=9)
    keys = torch.rand(B, Fn, 10, generator=gen, device=device)
    keys = torch.where(torch.arange(10, device=device)[None, None, :] < k[:, 0, :, None], keys, 2.0)
    codes = keys.argsort(-1).to(X.dtype)  # (B, F, 10): a permutation of 0..k-1 in the first k slots
    coded = codes.gather(2, bins.transpose(1, 2)).transpose(1, 2)
    X = torch.where(cat, coded, X)

    # z-score with the train rows' statistics, clip
    m = train_mask[..., None].to(X.dtype)
    cnt = m.sum(1, keepdim=True)
    mu = (X * m).sum(1, keepdim=True) / cnt
    sd = torch.sqrt(((X - mu) ** 2 * m).sum(1, keepdim=True) / cnt) + 1e-6
    X = torch.nan_to_num((X - mu) / sd, nan=0.0, posinf=cfg.clip, neginf=-cfg.clip).clamp(-cfg.clip, cfg.clip)
    return {"X": X.float().contiguous(), "y": y.long().contiguous(), "train_sizes": n_train.long()}


class TabularPriorDataset(IterableDataset):
    """Endless (or ``num_batches``-long) stream of prior batches; seeded per worker and rank."""

    def __init__(self, cfg: PriorConfig, seed: int = 0, num_batches: int | None = None, rank: int = 0):
        cfg.validate()
        self.cfg, self.seed, self.num_batches, self.rank = cfg, seed, num_batches, rank
        self._passes = 0  # per-process count of iterations: persistent workers draw fresh data every epoch

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("endless prior stream has no length")
        return self.num_batches

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.rank, wid, self._passes])
        self._passes += 1
        mine = None if self.num_batches is None else len(range(wid, self.num_batches, nw))
        k = 0
        while mine is None or k < mine:
            yield sample_batch(rng, self.cfg)
            k += 1


class _SeedStream(IterableDataset):
    """``num_batches`` tiny ``{"prior_seed": int64}`` items: the torch prior draws the batch after transfer."""

    def __init__(self, seed: int, num_batches: int, rank: int = 0):
        self.seed, self.num_batches, self.rank = seed, num_batches, rank
        self._passes = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        base = (self.seed * 1_000_003 + self.rank * 7_919 + self._passes * 104_729) % (1 << 62)
        self._passes += 1
        for k in range(self.num_batches):
            yield {"prior_seed": torch.tensor(base + k * 15_485_863, dtype=torch.int64)}


class TabularPriorDataModule(_DM_BASE):
    """Lightning data module streaming prior batches (train) and a fixed set of validation batches.

    Args: ``batch_size`` tables per batch; ``steps_per_epoch`` batches per "epoch"; ``val_batches`` fixed validation
    batches (seed + 10_000); ``num_workers`` DataLoader workers; the rest as :class:`PriorConfig`.

    ``backend="torch"``: the batched :func:`sample_batch_torch` prior, drawn on the training device in
    ``on_after_batch_transfer`` (the loader only yields seeds) with the :class:`TorchPriorConfig` options
    (``p_linear``, ``p_effect``, ``max_cells``, curriculum ``start_rows`` / ``start_features`` / ``curriculum``);
    training progress for the curriculum is ``trainer.lightning_module.progress()`` when the task has it, else
    ``global_step / max_steps``. ``max_train_frac`` etc. apply to both backends.
    """

    def __init__(self, batch_size: int = 8, steps_per_epoch: int = 1000, val_batches: int = 8, num_workers: int = 0,
                 seed: int = 0, min_features: int = 2, max_features: int = 20, min_rows: int = 64,
                 max_rows: int = 256, max_classes: int = 10, min_train_frac: float = 0.1, max_train_frac: float = 0.9,
                 p_tree: float = 0.3, p_categorical: float = 0.2, backend: str = "numpy", p_linear: float = 0.35,
                 p_effect: float = 0.4, max_cells: int = 1 << 21, start_rows: int = 128, start_features: int = 16,
                 curriculum: float = 0.5):
        super().__init__()
        if hasattr(self, "save_hyperparameters"):
            self.save_hyperparameters()
        if backend not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
        self.backend = backend
        self.cfg = PriorConfig(batch_size=batch_size, min_features=min_features, max_features=max_features,
                               min_rows=min_rows, max_rows=max_rows, max_classes=max_classes,
                               min_train_frac=min_train_frac, max_train_frac=max_train_frac, p_tree=p_tree,
                               p_categorical=p_categorical)
        self.cfg.validate()
        self.torch_cfg = TorchPriorConfig(
            batch_size=batch_size, min_features=min_features, max_features=max_features, min_rows=min_rows,
            max_rows=max_rows, max_classes=max_classes, min_train_frac=min_train_frac, max_train_frac=max_train_frac,
            p_linear=p_linear, p_effect=p_effect, p_categorical=p_categorical, max_cells=max_cells,
            start_rows=start_rows, start_features=start_features, curriculum=curriculum)
        self.torch_cfg.validate()
        self.steps_per_epoch, self.val_batches = steps_per_epoch, val_batches
        self.num_workers, self.seed = num_workers, seed

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(getattr(trainer, "global_rank", 0) or 0)

    def train_dataloader(self) -> DataLoader:
        epoch = int(getattr(getattr(self, "trainer", None), "current_epoch", 0) or 0)
        if self.backend == "torch":
            return DataLoader(_SeedStream(self.seed + 7919 * epoch, self.steps_per_epoch, self._rank()),
                              batch_size=None, num_workers=0)
        ds = TabularPriorDataset(self.cfg, seed=self.seed + 7919 * epoch, num_batches=self.steps_per_epoch,
                                 rank=self._rank())
        return DataLoader(ds, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def progress(self) -> float:
        """Training progress in [0, 1] for the torch prior's curriculum."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1.0
        task = getattr(trainer, "lightning_module", None)
        if task is not None and hasattr(task, "progress"):
            return float(task.progress())
        max_steps = getattr(trainer, "max_steps", -1) or -1
        return min(1.0, trainer.global_step / max_steps) if max_steps > 0 else 1.0

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        """Torch backend: turn a transferred ``{"prior_seed"}`` item into a prior batch on its device."""
        if isinstance(batch, dict) and "prior_seed" in batch:
            seed = batch["prior_seed"]
            gen = torch.Generator(device=seed.device)
            gen.manual_seed(int(seed))
            with torch.no_grad():
                return sample_batch_torch(gen, self.torch_cfg, self.progress())
        return batch

    def _fixed(self, seed: int) -> DataLoader:
        # Validation / test episodes are drawn once and kept: identical every epoch, no generation cost after that.
        cache = self.__dict__.setdefault("_fixed_batches", {})
        if seed not in cache:
            if self.backend == "torch":  # full-size tables (curriculum end), drawn on the CPU once
                gen = torch.Generator().manual_seed(seed)
                cache[seed] = [sample_batch_torch(gen, self.torch_cfg, 1.0) for _ in range(self.val_batches)]
            else:
                cache[seed] = list(TabularPriorDataset(self.cfg, seed=seed, num_batches=self.val_batches, rank=0))
        return DataLoader(cache[seed], batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._fixed(self.seed + 10_000)

    def test_dataloader(self) -> DataLoader:
        return self._fixed(self.seed + 20_000)

    def config(self) -> dict:
        """The prior configuration as a dict (for cards)."""
        return asdict(self.torch_cfg if self.backend == "torch" else self.cfg)
