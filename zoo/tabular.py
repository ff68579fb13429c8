"""scikit-learn estimator for the zoo's tabular in-context learners (Orion-BiX).

``OrionBixClassifier().fit(X, y).predict_proba(X_test)``: ``fit`` keeps the (preprocessed) training table as the
context, no gradient step is taken; ``predict_proba`` runs the ensemble of the official wrapper
(``orion_bix.sklearn.OrionBixClassifier`` @ 060d346):

- numerical encoding: DataFrame categorical / string / bool columns are ordinal-encoded (unknown or missing -> -1),
  numeric columns mean-imputed, categorical columns first (upstream ``TransformToNumerical``). NumPy input with NaN
  is mean-imputed too (upstream passes NaN straight to the model; documented deviation). ``inf`` raises.
- constant columns dropped; per normalisation method (``["none", "power"]`` by default) a pipeline of the official
  custom standard scaler (z-score with std + 1e-6, clipped to +-100), then optionally Yeo-Johnson
  (``PowerTransformer``), then two-stage z-score outlier clipping at ``outlier_threshold`` with log-softened bounds;
- members: latin-square feature permutations x cyclic class shifts (``random.Random(random_state)`` exactly as
  upstream, so ``random_state`` reproduces the official members), members grouped by normalisation method;
- combine: undo the class shift, average logits, ``softmax(avg / softmax_temperature)``, renormalise.

Memory stays bounded: ``batch_size`` ensemble members per forward and ``test_chunk_size`` test rows per forward
(test rows never attend to each other, so chunking is exact). ``device=None`` picks CUDA when available.

Default weights (``model="auto"``): the authors' released checkpoint ``Lexsi/Orion-BiX`` / ``Orion-BiX-v1.1.ckpt``
when it can be had -- downloaded through the hub once, converted in memory and kept in the HF cache as the zoo folder
``zoo-models/orion_bix.official`` (safetensors), so later calls neither download nor convert -- else the zoo's own
meta-trained ``orion_bix_small.prior`` (from the source tree's ``hub/`` folder when present), with a one-line notice.

``kv_cache=True``: ``fit`` runs the training rows once and keeps, per ensemble member, the linear-attention state of
every column block and the keys/values of every ICL block (:meth:`zoo.models.orion_bix.OrionBix.build_context`);
``predict_proba`` then runs the test rows only. Same outputs as the uncached path (float rounding), not for more
than ``max_classes`` classes (hierarchical routing runs uncached).
"""
from __future__ import annotations

import itertools
import logging
import numbers
import random
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import LabelEncoder, OrdinalEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

__all__ = ["OrionBixClassifier", "latin_square_shuffles", "feature_shuffles", "ensemble_members",
           "resolve_default_model", "official_checkpoint_folder"]

OFFICIAL_REPO = "Lexsi/Orion-BiX"
OFFICIAL_FILE = "Orion-BiX-v1.1.ckpt"
CONVERTED_REPO = "zoo-models/orion_bix.official"  # the converted checkpoint's repo id inside the HF cache
FALLBACK_MODEL = "orion_bix_small.prior"
_log = logging.getLogger("zoo")

NORM_METHODS = ("none", "power")
SHUFFLE_METHODS = ("none", "shift", "random", "latin")
MAX_HIERARCHY_DEPTH = 3  # routing supports up to max_classes ** 3 classes


# ----------------------------------------------------------------------------------------------------------------
# ensemble members (same random.Random call sequence as upstream, so a seed gives the official members)
# ----------------------------------------------------------------------------------------------------------------
def latin_square_shuffles(n: int, rng: random.Random) -> list[list[int]]:
    """The ``n`` feature permutations of a random latin square (rows/columns shuffled), upstream's generator."""
    if n == 0:
        return [[]]
    symbols = list(range(n))
    picked = []
    while len(symbols) > 1:  # upstream recursion, unrolled: one choice per level, outermost first
        s = rng.choice(symbols)
        symbols.remove(s)
        picked.append(s)
    square = [symbols]
    for s in reversed(picked):
        k = len(square) + 1
        square.append(square[0].copy())
        for i in range(k):
            square[i].insert(i, s)
    square = [row.copy() for row in square]
    rng.shuffle(square)
    cols = list(zip(*square))
    rng.shuffle(cols)
    return [list(c) for c in cols]


def feature_shuffles(n_features: int, n_estimators: int, method: str, seed: int | None) -> list[list[int]]:
    """Feature permutations for the ensemble (``'none'``, ``'shift'``, ``'random'`` or ``'latin'``)."""
    rng = random.Random(seed)
    idx = list(range(n_features))
    if method == "latin" and n_features > 4000:
        method = "random"
    if method == "none" or n_estimators == 1:
        return [idx]
    if method == "shift":
        return [idx[-i:] + idx[:-i] for i in range(n_features)] if n_features else [idx]
    if method == "random":
        if n_features <= 5:
            perms = [list(p) for p in itertools.permutations(idx)]
            return rng.sample(perms, min(n_estimators, len(perms)))
        return [rng.sample(idx, n_features) for _ in range(n_estimators)]
    if method == "latin":
        return latin_square_shuffles(n_features, rng)
    raise ValueError(f"feat_shuffle_method must be one of {SHUFFLE_METHODS}, got {method!r}")


def ensemble_members(n_features: int, n_classes: int, n_estimators: int, norm_methods: list[str],
                     shuffle_method: str, class_shift: bool, seed: int | None) -> "OrderedDict[str, list]":
    """``{norm_method: [(feature_permutation, class_shift_offset), ...]}`` exactly as the official wrapper draws them
    (methods in order of first use; upstream orders them by ``set`` iteration, which only changes summation order)."""
    patterns = feature_shuffles(n_features, n_estimators, shuffle_method, seed)
    rng = random.Random(seed)
    offsets = rng.sample(range(n_classes), n_classes) if class_shift and n_estimators > 1 else [0]
    configs = list(itertools.product(patterns, offsets))
    rng.shuffle(configs)
    chosen = list(itertools.product(configs, norm_methods))[:n_estimators]
    out: OrderedDict[str, list] = OrderedDict()
    for method in norm_methods:
        members = [c for c, m in chosen if m == method]
        if members:
            out[method] = members
    return out


# ----------------------------------------------------------------------------------------------------------------
# preprocessing (float dtype of the input is kept, as upstream)
# ----------------------------------------------------------------------------------------------------------------
class _YeoJohnson:
    """Yeo-Johnson power transform + standardisation, as scikit-learn's ``PowerTransformer`` <= 1.6 fits it.

    The official wrapper pins scikit-learn 1.3-1.6, whose lambda is the Brent minimum (bracket (-2, 2)) of the
    negative log-likelihood; scikit-learn >= 1.7 delegates to ``scipy.stats.yeojohnson`` and lands on slightly
    different lambdas (up to ~3e-4 in the transformed values). Reproducing the pinned behaviour keeps
    ``predict_proba`` at parity with the official estimator. Works in the input's float dtype.
    """

    _EPS = np.spacing(1.0)

    @classmethod
    def _tf(cls, x: np.ndarray, lmbda: float) -> np.ndarray:
        out = np.zeros_like(x)
        pos = x >= 0
        if abs(lmbda) < cls._EPS:
            out[pos] = np.log1p(x[pos])
        else:
            out[pos] = (np.power(x[pos] + 1, lmbda) - 1) / lmbda
        if abs(lmbda - 2) > cls._EPS:
            out[~pos] = -(np.power(-x[~pos] + 1, 2 - lmbda) - 1) / (2 - lmbda)
        else:
            out[~pos] = -np.log1p(-x[~pos])
        return out

    def _optimize(self, x: np.ndarray) -> float:
        from scipy import optimize

        x = x[~np.isnan(x)]
        tiny = np.finfo(np.float64).tiny

        def nll(lmbda):
            xt = self._tf(x, lmbda)
            var = xt.var()
            if var < tiny:
                return np.inf
            ll = -x.shape[0] / 2 * np.log(var) + (lmbda - 1) * (np.sign(x) * np.log1p(np.abs(x))).sum()
            return -ll

        try:
            return optimize.brent(nll, brack=(-2, 2))
        except (ValueError, RuntimeError):  # no valid bracket (e.g. one sample or a constant column): identity
            return 1.0

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        X = X.copy()
        self.lambdas_ = np.array([self._optimize(col) for col in X.T])
        with np.errstate(invalid="ignore"):
            for i, lmbda in enumerate(self.lambdas_):
                X[:, i] = self._tf(X[:, i], lmbda)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std < 10 * np.finfo(X.dtype).eps, 1.0, std).astype(X.dtype)
        return (X - self.mean_) / self.scale_

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = X.copy()
        with np.errstate(invalid="ignore"):
            for i, lmbda in enumerate(self.lambdas_):
                X[:, i] = self._tf(X[:, i], lmbda)
        if not np.isfinite(X).all():
            raise ValueError("Yeo-Johnson transform overflowed")
        return (X - self.mean_) / self.scale_


class _Preprocessor:
    """Scaler -> optional Yeo-Johnson -> outlier clipping, fitted on the training table (upstream pipeline)."""

    def __init__(self, method: str, threshold: float):
        self.method, self.threshold = method, threshold

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        self.mean_ = np.mean(X, axis=0)
        self.scale_ = np.std(X, axis=0) + 1e-6
        Xs = self._scale(X)
        self.power_ = None
        if self.method == "power":
            self.power_ = _YeoJohnson()
            self.min_, self.max_ = Xs.min(axis=0, keepdims=True), Xs.max(axis=0, keepdims=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                Xs = self.power_.fit_transform(Xs)
        self._fit_outliers(Xs)
        self.X_transformed_ = self._clip(Xs)
        return self.X_transformed_

    def transform(self, X: np.ndarray) -> np.ndarray:
        Xs = self._scale(X)
        if self.power_ is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    Xs = self.power_.transform(Xs)
                except ValueError:  # upstream: clip to the training range and retry
                    Xs = self.power_.transform(np.clip(Xs, self.min_, self.max_))
        return self._clip(Xs)

    def _scale(self, X):
        return np.clip((X - self.mean_) / self.scale_, -100, 100)

    def _fit_outliers(self, X):
        ddof = 1 if X.shape[0] > 1 else 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns after masking
            mean = np.nanmean(X, axis=0)
            std = np.maximum(np.nanstd(X, axis=0, ddof=ddof), 1e-6)
            Xc = X.copy()
            Xc[(X < mean - self.threshold * std) | (X > mean + self.threshold * std)] = np.nan
            mean = np.nanmean(Xc, axis=0)
            std = np.maximum(np.nanstd(Xc, axis=0, ddof=ddof), 1e-6)
        self.lower_, self.upper_ = mean - self.threshold * std, mean + self.threshold * std

    def _clip(self, X):
        X = np.maximum(-np.log1p(np.abs(X)) + self.lower_, X)
        return np.minimum(np.log1p(np.abs(X)) + self.upper_, X)


def _is_dataframe(X) -> bool:
    return hasattr(X, "columns") and hasattr(X, "dtypes") and hasattr(X, "iloc")


_MODEL_CACHE: dict[tuple, nn.Module] = {}


def _checkout_hub_folder(name: str) -> Path | None:
    """``hub/<org>/<name>`` of a source checkout holding the weights of registry tag ``name``, if present (so the
    published-in-repo weights work offline before they are on the Hugging Face Hub)."""
    import zoo

    arch, _, tag = name.partition(".")
    try:
        entry = zoo.model_entry(arch)
    except KeyError:
        return None
    src = entry.pretrained.get(tag or entry.default_tag or "")
    if src is None:
        return None
    folder = Path(zoo.__file__).resolve().parent.parent / "hub" / src.repo_id
    return folder if (folder / src.filename).is_file() and (folder / "config.json").is_file() else None


# ----------------------------------------------------------------------------------------------------------------
# default weights: the released checkpoint (converted once, cached as safetensors), else the zoo's own
# ----------------------------------------------------------------------------------------------------------------
_AUTO_RESOLVED: dict[tuple, str | Path] = {}


def official_checkpoint_folder(download: bool = True) -> Path:
    """The zoo folder (``config.json`` + ``model.safetensors``) of the released ``Orion-BiX-v1.1.ckpt`` in the HF cache.

    First call: the authors' file comes from the HF cache or, when ``download`` and the hub is reachable, is
    downloaded (``zoo.hub`` fails fast offline); it is converted in memory (``convert_checkpoint``) and written into
    the HF cache as repo ``zoo-models/orion_bix.official``. Later calls find that folder without network or
    conversion. Raises ``FileNotFoundError`` (``zoo.hub.HubUnavailableError`` when offline / unreachable).
    """
    import tempfile

    from huggingface_hub import try_to_load_from_cache

    from zoo import hub
    from zoo.models.orion_bix import convert_checkpoint

    cache = hub.hub_cache_dir()
    hit = try_to_load_from_cache(CONVERTED_REPO, hub.WEIGHTS_NAME, cache_dir=cache)
    if isinstance(hit, str) and (Path(hit).parent / hub.CONFIG_NAME).is_file():
        return Path(hit).parent
    raw = try_to_load_from_cache(OFFICIAL_REPO, OFFICIAL_FILE, cache_dir=cache)
    if not isinstance(raw, str):
        if not download:
            raise hub.HubUnavailableError(f"{OFFICIAL_FILE!r} of {OFFICIAL_REPO!r} is not in the HF cache {cache}")
        raw = hub._download(OFFICIAL_REPO, OFFICIAL_FILE, None)
    model, _ = convert_checkpoint(str(raw))
    with tempfile.TemporaryDirectory() as tmp:
        folder = hub.save_pretrained(
            model, Path(tmp) / "orion_bix.official", name="Orion-BiX v1.1 (released weights, converted)",
            dataset="TabICL-style synthetic prior (authors' stages 1-3)",
            recipe=f"Converted from `{OFFICIAL_REPO}` / `{OFFICIAL_FILE}` with "
                   "`zoo.models.orion_bix.convert_checkpoint` (strict load, fp32).")
        snap = hub.cache_folder(folder, CONVERTED_REPO, cache_dir=cache)
    return snap


def resolve_default_model(download: bool = True) -> str | Path:
    """What ``OrionBixClassifier(model="auto")`` loads: the converted released checkpoint's folder when it can be
    had (:func:`official_checkpoint_folder`), else ``"orion_bix_small.prior"`` (with a one-line notice on the
    ``zoo`` logger). Memoised per process, HF cache folder and offline setting (an unreachable hub costs one
    connection attempt per process, not per ``fit``)."""
    from zoo import hub

    key = (str(hub.hub_cache_dir()), hub._offline(), hub._endpoint(), bool(download))
    hit = _AUTO_RESOLVED.get(key)
    if hit is not None and (not isinstance(hit, Path) or hit.is_dir()):
        return hit
    try:
        out: str | Path = official_checkpoint_folder(download=download)
    except FileNotFoundError as e:
        if isinstance(e, hub.HubUnavailableError):
            why = ("HF_HUB_OFFLINE is set" if hub._offline() else
                   "it is not in the HF cache and the hub cannot be reached" if download else "it is not in the HF cache")
        else:
            why = "the hub does not serve it"
        _log.warning("zoo: the released Orion-BiX weights (%s/%s) are not available (%s); OrionBixClassifier uses "
                     "the zoo's %s", OFFICIAL_REPO, OFFICIAL_FILE, why, FALLBACK_MODEL)
        out = FALLBACK_MODEL
    _AUTO_RESOLVED[key] = out
    return out


# ----------------------------------------------------------------------------------------------------------------
# estimator
# ----------------------------------------------------------------------------------------------------------------
class OrionBixClassifier(ClassifierMixin, BaseEstimator):
    """Orion-BiX tabular in-context classifier with the official ensemble (scikit-learn API).

    Args:
        model: ``"auto"`` (default: the released checkpoint when it can be had, else ``"orion_bix_small.prior"``,
            see the module docstring), a registry name with tag (e.g. ``"orion_bix_small.prior"``), a registry
            architecture (with ``pretrained=False``: random init, seeded by ``random_state``; for tests), a zoo hub
            folder (``config.json`` + ``model.safetensors``), the authors' ``.ckpt`` (converted in memory with
            ``zoo.models.orion_bix.convert_checkpoint``) or an ``nn.Module``.
        pretrained: load weights for a registry ``model`` (ignored for folders, files and modules).
        model_args: constructor overrides for a registry ``model`` (e.g. a tiny random-init model for tests).
        n_estimators: ensemble members (feature permutation x class shift x normalisation), at most
            ``n_features * n_classes * len(norm_methods)`` are distinct.
        norm_methods: ``None`` (= ``["none", "power"]``), a string or a list of ``"none"``/``"power"``.
        feat_shuffle_method: ``"latin"`` (default), ``"random"``, ``"shift"`` or ``"none"``.
        class_shift: cyclic label shifts per member. outlier_threshold: z-score clipping bound (4.0).
        softmax_temperature: 0.9. average_logits: average logits (True) or probabilities (False).
        use_hierarchical: allow more than ``max_classes`` (10) classes through hierarchical routing.
        batch_size: ensemble members per forward. test_chunk_size: test rows per forward (None: all).
        device: ``None`` (CUDA if available), ``"cpu"``, ``"cuda"``, a ``torch.device``.
        random_state: int seed (upstream default 42) or None.
        kv_cache: cache the training context in ``fit`` so repeated ``predict_proba`` calls run the test rows only
            (memory: per member and ICL block, keys + values of the train rows).

    Attributes after ``fit``: ``classes_``, ``n_classes_``, ``n_features_in_``, ``feature_names_in_`` (DataFrames),
    ``model_``, ``model_source_`` (what ``model`` resolved to), ``members_`` (``{norm: [(permutation, offset)]}``),
    ``device_``, ``kv_cache_`` (``{norm: [ContextCache per batch of members]}`` or None).

    Behaviour on edge cases: a single training class -> ``predict_proba`` is all ones (no model call); more classes
    than ``max_classes`` -> hierarchical routing (``ValueError`` if ``use_hierarchical=False`` or beyond
    ``max_classes ** 3``); wrong feature count / names at predict -> ``ValueError``; NaN -> imputed;
    inf -> ``ValueError``.
    """

    def __init__(
        self,
        model: str | Path | nn.Module = "auto",
        pretrained: bool = True,
        model_args: dict | None = None,
        n_estimators: int = 32,
        norm_methods: str | list[str] | None = None,
        feat_shuffle_method: str = "latin",
        class_shift: bool = True,
        outlier_threshold: float = 4.0,
        softmax_temperature: float = 0.9,
        average_logits: bool = True,
        use_hierarchical: bool = True,
        batch_size: int | None = 8,
        test_chunk_size: int | None = 4096,
        device: str | torch.device | None = None,
        random_state: int | None = 42,
        kv_cache: bool = False,
    ):
        self.model = model
        self.pretrained = pretrained
        self.model_args = model_args
        self.n_estimators = n_estimators
        self.norm_methods = norm_methods
        self.feat_shuffle_method = feat_shuffle_method
        self.class_shift = class_shift
        self.outlier_threshold = outlier_threshold
        self.softmax_temperature = softmax_temperature
        self.average_logits = average_logits
        self.use_hierarchical = use_hierarchical
        self.batch_size = batch_size
        self.test_chunk_size = test_chunk_size
        self.device = device
        self.random_state = random_state
        self.kv_cache = kv_cache

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = False
        tags.input_tags.categorical = True
        return tags

    # ---- params / model ----------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.n_estimators, numbers.Integral) or self.n_estimators < 1:
            raise ValueError(f"n_estimators must be a positive int, got {self.n_estimators!r}")
        methods = self._norm_methods()
        bad = [m for m in methods if m not in NORM_METHODS]
        if bad or not methods:
            raise ValueError(f"norm_methods must be None or a non-empty subset of {NORM_METHODS}, "
                             f"got {self.norm_methods!r}")
        if self.feat_shuffle_method not in SHUFFLE_METHODS:
            raise ValueError(f"feat_shuffle_method must be one of {SHUFFLE_METHODS}, got {self.feat_shuffle_method!r}")
        if not (isinstance(self.softmax_temperature, numbers.Real) and self.softmax_temperature > 0):
            raise ValueError(f"softmax_temperature must be a positive float, got {self.softmax_temperature!r}")
        if not (isinstance(self.outlier_threshold, numbers.Real) and self.outlier_threshold > 0):
            raise ValueError(f"outlier_threshold must be a positive float, got {self.outlier_threshold!r}")
        for name in ("batch_size", "test_chunk_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, numbers.Integral) or v < 1):
                raise ValueError(f"{name} must be None or a positive int, got {v!r}")

    def _norm_methods(self) -> list[str]:
        if self.norm_methods is None:
            return ["none", "power"]
        if isinstance(self.norm_methods, str):
            return [self.norm_methods]
        return list(dict.fromkeys(self.norm_methods))

    def _seed(self) -> int | None:
        rs = self.random_state
        if rs is None or isinstance(rs, numbers.Integral):
            return None if rs is None else int(rs)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(np.iinfo(np.int32).max))
        raise ValueError(f"random_state must be None, an int or a numpy RandomState, got {rs!r}")

    def _resolve_device(self) -> torch.device:
        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except (TypeError, RuntimeError) as e:
            raise ValueError(f"device must be None, 'cpu', 'cuda[:i]' or a torch.device, got {self.device!r}") from e

    def _load_model(self, device: torch.device) -> nn.Module:
        import zoo

        src = self.model
        if isinstance(src, str) and src == "auto":
            src = resolve_default_model()
        self.model_source_ = src if isinstance(src, nn.Module) else str(src)
        if isinstance(src, nn.Module):
            return src.to(device).float().eval()
        if not isinstance(src, (str, Path)):
            raise TypeError(f"model must be a registry name, a path or an nn.Module, got {type(src).__name__}")
        path = Path(src)
        seed = self._seed_
        margs = dict(self.model_args or {})
        stamp = max((f.stat().st_mtime_ns for f in ([path] if path.is_file() else path.glob("*"))), default=0) \
            if path.exists() else 0
        key = (str(src), stamp, bool(self.pretrained), str(device), seed if not self.pretrained else None,
               tuple(sorted((k, repr(v)) for k, v in margs.items())))
        if key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        if path.exists():
            if path.is_file() and path.suffix in (".ckpt", ".pt", ".pth"):
                from zoo.models.orion_bix import convert_checkpoint

                model, _ = convert_checkpoint(str(path))
            else:
                model = zoo.from_pretrained(path)
        elif self.pretrained or self.model == "auto":
            local = _checkout_hub_folder(str(src))
            model = (zoo.from_pretrained(local, **margs) if local is not None
                     else zoo.create_model(str(src), pretrained=True, **margs))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0 if seed is None else seed)
                model = zoo.create_model(str(src).partition(".")[0], **margs)
        model = model.to(device).float().eval()
        if len(_MODEL_CACHE) > 8:
            _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = model
        return model

    # ---- input encoding ----------------------------------------------------------------------------------------
    def _encode_fit(self, X) -> np.ndarray:
        if _is_dataframe(X):
            return self._encode_frame(X, fit=True)
        self._frame_ = False
        X = validate_data(self, X, reset=True, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan",
                          ensure_min_samples=1)
        self._imputer_ = None
        if np.isnan(X).any():
            self._imputer_ = SimpleImputer(keep_empty_features=True).fit(X)
            X = self._imputer_.transform(X).astype(X.dtype, copy=False)
        return X

    def _encode_frame(self, X, fit: bool) -> np.ndarray:
        import pandas as pd

        cols = [str(c) for c in X.columns]
        if fit:
            self._frame_ = True
            self.feature_names_in_ = np.asarray(cols, dtype=object)
            self.n_features_in_ = len(cols)
            self._cat_cols_ = [c for c, dt in zip(X.columns, X.dtypes)
                               if isinstance(dt, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dt)
                               or pd.api.types.is_object_dtype(dt) or pd.api.types.is_string_dtype(dt)]
            self._num_cols_ = [c for c in X.columns if c not in self._cat_cols_ and pd.api.types.is_numeric_dtype(X[c])]
            dropped = [c for c in X.columns if c not in self._cat_cols_ and c not in self._num_cols_]
            if dropped:
                raise TypeError(f"X has columns of unsupported dtype (neither numeric nor categorical): {dropped}")
        else:
            if len(cols) != self.n_features_in_:
                raise ValueError(f"X has {len(cols)} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input.")
            if cols != list(self.feature_names_in_):
                raise ValueError("The feature names should match those that were passed during fit; got "
                                 f"{cols}, expected {list(self.feature_names_in_)}.")
        parts = []
        if self._cat_cols_:
            cat = X[self._cat_cols_].astype(object).where(X[self._cat_cols_].notna(), np.nan)
            if fit:
                self._ordinal_ = OrdinalEncoder(dtype=np.float64, handle_unknown="use_encoded_value", unknown_value=-1,
                                                encoded_missing_value=-1).fit(cat)
            parts.append(self._ordinal_.transform(cat))
        if self._num_cols_:
            num = X[self._num_cols_].to_numpy(dtype=np.float64, na_value=np.nan)
            if np.isinf(num).any():
                raise ValueError("Input X contains infinity or a value too large for dtype('float64').")
            if fit:
                self._num_imputer_ = SimpleImputer(keep_empty_features=True).fit(num)
            parts.append(self._num_imputer_.transform(num))
        if not parts:
            raise ValueError("X has no columns")
        Xn = np.hstack(parts)
        if Xn.shape[0] < 1:
            raise ValueError(f"Found array with 0 sample(s) (shape={Xn.shape}) while a minimum of 1 is required.")
        return Xn

    def _encode_predict(self, X) -> np.ndarray:
        if self._frame_:
            if not _is_dataframe(X):
                X = validate_data(self, X, reset=False, dtype=None, ensure_all_finite="allow-nan")
                import pandas as pd

                X = pd.DataFrame(X, columns=self.feature_names_in_)
            return self._encode_frame(X, fit=False)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan")
        if np.isnan(X).any():
            imp = self._imputer_
            if imp is None:  # NaN only at predict time: impute with the training means
                imp = SimpleImputer(keep_empty_features=True).fit(self._X_raw_)
            X = imp.transform(X).astype(X.dtype, copy=False)
        return X

    # ---- fit / predict -----------------------------------------------------------------------------------------
    def fit(self, X, y):
        """Keep the preprocessed training table as context. X: (n, F) array or DataFrame; y: (n,) labels."""
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
        Xn = self._encode_fit(X)
        y = column_or_1d(y, warn=True)
        if len(y) != Xn.shape[0]:
            raise ValueError(f"X and y have inconsistent numbers of samples: {Xn.shape[0]} != {len(y)}")
        check_classification_targets(y)
        self._label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self._label_encoder_.classes_
        self.n_classes_ = len(self.classes_)
        y_enc = self._label_encoder_.transform(y)
        self._X_raw_ = Xn

        self._seed_ = self._seed()
        self.device_ = self._resolve_device()
        self.model_ = self._load_model(self.device_)
        max_classes = int(getattr(self.model_, "max_classes", 10))
        if self.n_classes_ > max_classes and not self.use_hierarchical:
            raise ValueError(f"y has {self.n_classes_} classes, more than the model's max_classes={max_classes}; "
                             "set use_hierarchical=True to route them hierarchically")
        if self.n_classes_ > max_classes ** MAX_HIERARCHY_DEPTH:
            raise ValueError(f"y has {self.n_classes_} classes; hierarchical routing supports at most "
                             f"max_classes ** {MAX_HIERARCHY_DEPTH} = {max_classes ** MAX_HIERARCHY_DEPTH}")

        # constant columns carry no information (upstream UniqueFeatureFilter; kept when n <= 1)
        if Xn.shape[0] > 1:
            self._keep_ = np.array([len(np.unique(Xn[:, j])) > 1 for j in range(Xn.shape[1])], dtype=bool)
        else:
            self._keep_ = np.ones(Xn.shape[1], dtype=bool)
        Xf = Xn[:, self._keep_]
        self._y_ = y_enc
        self.members_ = ensemble_members(Xf.shape[1], self.n_classes_, self.n_estimators, self._norm_methods(),
                                         self.feat_shuffle_method, self.class_shift, self._seed_)
        self._pre_ = {}
        for method in self.members_:
            pre = _Preprocessor(method, float(self.outlier_threshold))
            pre.fit_transform(Xf)
            self._pre_[method] = pre
        self.kv_cache_ = None
        if self.kv_cache and 1 < self.n_classes_ <= max_classes:
            self.kv_cache_ = self._build_kv_cache()
        return self

    @torch.no_grad()
    def _build_kv_cache(self) -> dict:
        """``{norm: [ContextCache per batch of batch_size members]}`` of the training rows."""
        caches = {}
        for method, members in self.members_.items():
            Xtr = self._pre_[method].X_transformed_
            perms = [list(p) for p, _ in members]
            ys = np.stack([(self._y_ + off) % self.n_classes_ for _, off in members])
            bs = self.batch_size or len(members)
            caches[method] = []
            for b0 in range(0, len(members), bs):
                x = np.stack([Xtr[:, p] for p in perms[b0:b0 + bs]]).astype(np.float32)
                caches[method].append(self.model_.build_context(
                    torch.from_numpy(x).to(self.device_), torch.from_numpy(ys[b0:b0 + bs]).float().to(self.device_),
                    feature_shuffles=perms[b0:b0 + bs]))
        return caches

    def member_inputs(self, X) -> list[tuple[str, np.ndarray, np.ndarray, list[int], int]]:
        """Per member: ``(norm_method, X (n_train + n_test, F') float32, y_train shifted (n_train,), permutation,
        offset)`` exactly as fed to the model (train rows then test rows)."""
        check_is_fitted(self, "members_")
        Xt = self._encode_predict(X)[:, self._keep_]
        out = []
        for method, members in self.members_.items():
            pre = self._pre_[method]
            both = np.concatenate([pre.X_transformed_, pre.transform(Xt)], axis=0)
            for perm, off in members:
                out.append((method, both[:, perm].astype(np.float32), (self._y_ + off) % self.n_classes_, perm, off))
        return out

    @torch.no_grad()
    def _forward_cached(self, Xtest: np.ndarray, caches: list) -> np.ndarray:
        """Test rows of the members (M, n_test, F') against their cached contexts -> (M, n_test, C)."""
        n_test = Xtest.shape[1]
        chunk = self.test_chunk_size or max(n_test, 1)
        outs, b0 = [], 0
        for cache in caches:
            cols = []
            for t0 in range(0, n_test, chunk):
                x = torch.from_numpy(np.ascontiguousarray(Xtest[b0:b0 + cache.batch, t0:t0 + chunk]))
                o = self.model_.forward_with_context(x.float().to(self.device_), cache,
                                                     return_logits=bool(self.average_logits),
                                                     softmax_temperature=float(self.softmax_temperature))
                cols.append(o.float().cpu().numpy())
            outs.append(np.concatenate(cols, axis=1))
            b0 += cache.batch
        return np.concatenate(outs, axis=0)

    @torch.no_grad()
    def _forward(self, Xs: np.ndarray, ys: np.ndarray, perms: list[list[int]]) -> np.ndarray:
        """Members (M, n_train + n_test, F') of one normalisation -> (M, n_test, C) logits or probabilities."""
        n_train = ys.shape[1]
        n_test = Xs.shape[1] - n_train
        bs = self.batch_size or Xs.shape[0]
        chunk = self.test_chunk_size or max(n_test, 1)
        outs = []
        for b0 in range(0, Xs.shape[0], bs):
            xb, yb, pb = Xs[b0:b0 + bs], ys[b0:b0 + bs], perms[b0:b0 + bs]
            y_t = torch.from_numpy(yb).float().to(self.device_)
            cols = []
            for t0 in range(0, n_test, chunk):
                x = np.concatenate([xb[:, :n_train], xb[:, n_train + t0:n_train + t0 + chunk]], axis=1)
                x_t = torch.from_numpy(np.ascontiguousarray(x)).float().to(self.device_)
                o = self.model_(x_t, y_t, feature_shuffles=pb, return_logits=bool(self.average_logits),
                                softmax_temperature=float(self.softmax_temperature))
                cols.append(o.float().cpu().numpy())
            outs.append(np.concatenate(cols, axis=1))
        return np.concatenate(outs, axis=0)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) float32, columns in ``classes_`` order."""
        check_is_fitted(self, "members_")
        Xt = self._encode_predict(X)[:, self._keep_]
        n = Xt.shape[0]
        if self.n_classes_ == 1:
            return np.ones((n, 1), dtype=np.float32)
        total, count = None, 0
        for method, members in self.members_.items():
            pre = self._pre_[method]
            perms = [list(p) for p, _ in members]
            caches = (getattr(self, "kv_cache_", None) or {}).get(method)
            if caches:
                test = pre.transform(Xt)
                out = self._forward_cached(np.stack([test[:, p] for p in perms]).astype(np.float32), caches)
            else:
                both = np.concatenate([pre.X_transformed_, pre.transform(Xt)], axis=0)
                Xs = np.stack([both[:, p] for p in perms]).astype(np.float32)
                ys = np.stack([(self._y_ + off) % self.n_classes_ for _, off in members])
                out = self._forward(Xs, ys, perms)
            for o, (_, off) in zip(out, members):
                o = np.concatenate([o[..., off:], o[..., :off]], axis=-1)  # undo the class shift
                total = o if total is None else total + o
                count += 1
        avg = total / count
        if self.average_logits:
            z = avg / self.softmax_temperature
            z = np.exp(z - z.max(axis=-1, keepdims=True))
            avg = z / z.sum(axis=-1, keepdims=True)
        return (avg / avg.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, X) -> np.ndarray:
        """Most probable class label per row (n_samples,), in the dtype of the training labels."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
