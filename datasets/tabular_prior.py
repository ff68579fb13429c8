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
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

try:
    import lightning as L

    _DM_BASE = L.LightningDataModule
except Exception:  # pragma: no cover
    _DM_BASE = object

__all__ = ["PriorConfig", "sample_table", "sample_batch", "TabularPriorDataset", "TabularPriorDataModule"]


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
        if not 1 <= self.min_features <= self.max_features:
            raise ValueError(f"need 1 <= min_features <= max_features, got {self.min_features}, {self.max_features}")
        if not 4 <= self.min_rows <= self.max_rows:
            raise ValueError(f"need 4 <= min_rows <= max_rows, got {self.min_rows}, {self.max_rows}")
        if not 0.0 < self.min_train_frac <= self.max_train_frac < 1.0:
            raise ValueError("need 0 < min_train_frac <= max_train_frac < 1")
        if self.max_classes < 2:
            raise ValueError(f"max_classes must be >= 2, got {self.max_classes}")
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


class TabularPriorDataModule(_DM_BASE):
    """Lightning data module streaming prior batches (train) and a fixed set of validation batches.

    Args: ``batch_size`` tables per batch; ``steps_per_epoch`` batches per "epoch"; ``val_batches`` fixed validation
    batches (seed + 10_000); ``num_workers`` DataLoader workers; the rest as :class:`PriorConfig`.
    """

    def __init__(self, batch_size: int = 8, steps_per_epoch: int = 1000, val_batches: int = 8, num_workers: int = 0,
                 seed: int = 0, min_features: int = 2, max_features: int = 20, min_rows: int = 64,
                 max_rows: int = 256, max_classes: int = 10, min_train_frac: float = 0.1, max_train_frac: float = 0.9,
                 p_tree: float = 0.3, p_categorical: float = 0.2):
        super().__init__()
        if hasattr(self, "save_hyperparameters"):
            self.save_hyperparameters()
        self.cfg = PriorConfig(batch_size=batch_size, min_features=min_features, max_features=max_features,
                               min_rows=min_rows, max_rows=max_rows, max_classes=max_classes,
                               min_train_frac=min_train_frac, max_train_frac=max_train_frac, p_tree=p_tree,
                               p_categorical=p_categorical)
        self.cfg.validate()
        self.steps_per_epoch, self.val_batches = steps_per_epoch, val_batches
        self.num_workers, self.seed = num_workers, seed

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(getattr(trainer, "global_rank", 0) or 0)

    def train_dataloader(self) -> DataLoader:
        epoch = int(getattr(getattr(self, "trainer", None), "current_epoch", 0) or 0)
        ds = TabularPriorDataset(self.cfg, seed=self.seed + 7919 * epoch, num_batches=self.steps_per_epoch,
                                 rank=self._rank())
        return DataLoader(ds, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def _fixed(self, seed: int) -> DataLoader:
        # Validation / test episodes are drawn once and kept: identical every epoch, no generation cost after that.
        cache = self.__dict__.setdefault("_fixed_batches", {})
        if seed not in cache:
            cache[seed] = list(TabularPriorDataset(self.cfg, seed=seed, num_batches=self.val_batches, rank=0))
        return DataLoader(cache[seed], batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._fixed(self.seed + 10_000)

    def test_dataloader(self) -> DataLoader:
        return self._fixed(self.seed + 20_000)

    def config(self) -> dict:
        """The prior configuration as a dict (for cards)."""
        return asdict(self.cfg)
