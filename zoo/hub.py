"""Hugging Face Hub I/O in the zoo's layout: a folder (or hub repository) holding ``config.json`` (how to rebuild the
model), ``model.safetensors`` (its weights) and ``README.md`` (its model card).

Loading is strict (every key and shape must match), never unpickles anything, verifies sha256 where the registry
knows it, and reads ``HF_HUB_OFFLINE``, ``HF_HOME``/``HF_HUB_CACHE`` and ``HF_ENDPOINT`` at call time (huggingface_hub
itself freezes them at import).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from zoo.registry import PretrainedSource, create_model, model_entry

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "ChecksumError",
    "HubUnavailableError",
    "WeightsMismatchError",
    "save_pretrained",
    "from_pretrained",
    "load_pretrained",
    "push_to_hub",
    "cache_folder",
    "load_state_dict_strict",
    "find_converter",
    "parse_hub_id",
    "input_spec_for",
    "sha256_file",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".pickle", ".tar")
_HUB_PREFIX = "hf-hub:"
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class ChecksumError(ValueError):
    """A downloaded or local weights file does not have the sha256 the registry expects."""


class WeightsMismatchError(ValueError):
    """A state dict does not match the model: missing keys, unexpected keys or shape mismatches."""


class HubUnavailableError(FileNotFoundError):
    """A file is not in the HF cache and the hub cannot be asked for it (offline, or unreachable)."""


_log = logging.getLogger("zoo")
# Published folders ship in a source checkout as hub/<org>/<name>/, exactly as their hub repositories hold them.
SOURCE_HUB_DIR = Path(__file__).resolve().parents[1] / "hub"


# --------------------------------------------------------------------------------------------------------------------
# environment (read at call time)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def hub_cache_dir() -> Path:
    """The HF cache folder: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HUB_CACHE"])))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"]))) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _endpoint() -> str | None:
    ep = os.environ.get("HF_ENDPOINT", "").strip()
    return ep.rstrip("/") or None


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub endpoint's host (``HF_ENDPOINT`` or huggingface.co), no HTTP and no retries:
    False when it cannot be opened within ``timeout`` seconds. Lets loads fail fast instead of retrying."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(_endpoint() or constants.ENDPOINT)
    if not url.hostname:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------------------------
# small helpers


def parse_hub_id(spec: str) -> tuple[str, str | None]:
    """``"hf-hub:org/name@rev"`` / ``"org/name"`` -> ``("org/name", "rev" | None)``; ValueError if malformed."""
    if not isinstance(spec, str):
        raise TypeError(f"hub id must be a str, got {type(spec).__name__}")
    s = spec[len(_HUB_PREFIX):] if spec.startswith(_HUB_PREFIX) else spec
    repo_id, _, rev = s.partition("@")
    if not _REPO_ID_RE.match(repo_id):
        raise ValueError(f"malformed hub id {spec!r}: expected 'hf-hub:org/name[@revision]' or 'org/name'")
    return repo_id, (rev or None)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verify_sha256(path: Path, expected: str | None, what: str) -> None:
    if not expected:
        return
    actual = sha256_file(path)
    if actual.lower() != expected.strip().lower():
        raise ChecksumError(
            f"sha256 mismatch for {what} ({path}): expected {expected.lower()}, got {actual}. The file is corrupt or "
            "not the one the registry pins; delete it from the cache (or fix the registry's sha256) and retry."
        )


def find_converter(arch: str) -> Callable[..., dict[str, torch.Tensor]] | None:
    """The model module's ``convert_checkpoint(path) -> state_dict`` hook for the authors' checkpoints, if any."""
    import importlib
    import sys

    name = model_entry(arch).constructor.__module__
    module = sys.modules.get(name)
    if module is None:
        try:
            module = importlib.import_module(name)
        except ImportError:  # registered from code that is not an importable module (e.g. exec'd in a test)
            return None
    fn = getattr(module, "convert_checkpoint", None)
    return fn if callable(fn) else None


def _refuse_pickle(filename: str, arch: str | None) -> None:
    if str(filename).lower().endswith(PICKLE_SUFFIXES):
        hint = ""
        if arch is not None:
            try:
                conv = find_converter(arch)
            except KeyError:
                conv = None
            if conv is not None:
                hint = (
                    f" {arch}'s module has a converter ({conv.__module__}.convert_checkpoint): run "
                    f"`python -m zoo convert {arch} {filename} --out DIR` and load DIR."
                )
            else:
                hint = f" {arch}'s module has no convert_checkpoint() hook; convert the file to safetensors first."
        else:
            hint = " Convert it with `python -m zoo convert ARCH FILE --out DIR` (the model module's converter)."
        raise ValueError(
            f"refusing to load {filename!r}: zoo never unpickles weights (.bin/.pth/.pt/.ckpt); it loads only "
            f"safetensors.{hint}"
        )


def input_spec_for(arch: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The registry's input spec of ``arch`` adjusted to constructor ``args``: an ``in_chans`` override replaces the
    channel count of a (C, H, W) image shape (e.g. Fashion-MNIST weights built with ``in_chans=1``)."""
    spec = dict(model_entry(arch).input_spec)
    shape = spec.get("shape")
    in_chans = (args or {}).get("in_chans")
    if isinstance(in_chans, int) and isinstance(shape, (list, tuple)) and len(shape) == 3:
        spec["shape"] = (in_chans, *tuple(shape)[1:])
    return spec


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


_DTYPES = {
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
}


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(f"dtype must be a torch floating dtype or one of {sorted(_DTYPES)}, got {dtype!r}")


# --------------------------------------------------------------------------------------------------------------------
# state dicts


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise ValueError(f"{path} is not a valid safetensors file ({e}); zoo loads only safetensors weights") from e


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "") -> None:
    """Load ``state_dict`` into ``model`` requiring the same keys and shapes; tensors are cast to the model's dtypes.

    Raises:
        WeightsMismatchError: listing missing keys, unexpected keys and shape mismatches (all of them at once).
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:

        def _few(items: list, n: int = 20) -> str:
            shown = ", ".join(map(str, items[:n]))
            return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")

        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_few(unexpected)}")
        if mismatched:
            parts.append(
                f"shape mismatches ({len(mismatched)}): "
                + _few([f"{k}: file {s} vs model {m}" for k, s, m in mismatched])
            )
        where = f" from {source}" if source else ""
        raise WeightsMismatchError(
            f"weights{where} do not match {type(model).__name__}: " + "; ".join(parts)
            + ". (Weights load strictly; build the model with the args the weights were trained with, then change "
            "the head, e.g. reset_classifier().)"
        )
    model.load_state_dict(dict(state_dict), strict=True)


def _finish(model: nn.Module, arch: str, args: Mapping[str, Any]) -> nn.Module:
    model.eval()
    model.zoo_config = {"architecture": arch, "args": dict(args)}
    return model


def _build_and_load(arch: str, args: Mapping[str, Any], weights: Path, source: str) -> nn.Module:
    model = create_model(arch, **args)
    load_state_dict_strict(model, _read_safetensors(weights), source=source)
    return _finish(model, arch, args)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(cfg, dict) or not isinstance(cfg.get("architecture"), str):
        raise ValueError(f"{path} has no 'architecture' string; not a zoo config.json")
    if not isinstance(cfg.get("args", {}), dict):
        raise ValueError(f"{path}: 'args' must be an object of constructor keyword arguments")
    return cfg


def _merge_args(arch: str, cfg: Mapping[str, Any] | None, *layers: Mapping[str, Any]) -> dict[str, Any]:
    if cfg is not None and cfg["architecture"] != arch:
        raise ValueError(
            f"config.json describes architecture {cfg['architecture']!r} but {arch!r} was requested"
        )
    args: dict[str, Any] = {}
    for layer in (*layers[:-1], (cfg or {}).get("args", {}), layers[-1]):
        args.update(layer)
    return args


# --------------------------------------------------------------------------------------------------------------------
# downloads


def _download(repo_id: str, filename: str, revision: str | None, *, optional: bool = False,
              reachable: bool | None = None) -> Path | None:
    """hf_hub_download with the zoo's env handling and clear errors. Returns None for a missing optional file.
    ``reachable``: the caller's :func:`hub_reachable` answer (asked here when None, unless offline)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = _offline()
    unreachable = not offline and not (hub_reachable() if reachable is None else reachable)
    try:
        with _hub_offline_while(unreachable):
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    cache_dir=hub_cache_dir(),
                    local_files_only=offline or unreachable,
                    endpoint=_endpoint(),
                )
            )
    except RevisionNotFoundError as e:
        raise FileNotFoundError(f"revision {revision!r} of hub repo {repo_id!r} does not exist: {e}") from e
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(f"hub repo {repo_id!r} not found (or not accessible with your token): {e}") from e
    except EntryNotFoundError as e:
        # LocalEntryNotFoundError subclasses EntryNotFoundError in some versions: handle it first.
        if isinstance(e, LocalEntryNotFoundError):
            if optional:
                return None
            why = "HF_HUB_OFFLINE is set" if offline else f"the hub ({_endpoint() or 'huggingface.co'}) cannot be reached"
            raise HubUnavailableError(
                f"{filename!r} of {repo_id!r} (revision {revision or 'main'}) is not in the HF cache "
                f"{hub_cache_dir()} and {why}. Populate the cache (zoo.hub.cache_folder / `python -m zoo cache`) or "
                "go online."
            ) from e
        if optional:
            return None
        raise FileNotFoundError(f"{filename!r} not found in hub repo {repo_id!r} at {revision or 'main'}") from e


@contextlib.contextmanager
def _hub_offline_while(active: bool):
    """huggingface_hub's own offline switch, for one call: with ``local_files_only`` alone it still makes requests
    of its own (its user-agent registry), each a connect timeout on an unreachable network."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or active
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _snapshot_commit(path: Path, filename: str) -> str | None:
    snap = path
    for _ in PurePosixPath(filename).parts:
        snap = snap.parent
    return snap.name if _COMMIT_RE.match(snap.name) else None


def _sibling(filename: str, name: str) -> str:
    parent = PurePosixPath(filename).parent
    return name if str(parent) in ("", ".") else str(parent / name)


def _fetch_repo(
    repo_id: str, revision: str | None, filename: str = WEIGHTS_NAME, *, need_config: bool
) -> tuple[Path, dict[str, Any] | None, str]:
    """Download weights (+ config.json at the same commit). Returns (weights path, config or None, description)."""
    _refuse_pickle(filename, None)
    reachable = _offline() or hub_reachable()  # asked once per repo: an unreachable hub costs one connect timeout
    weights = _download(repo_id, filename, revision, reachable=reachable)
    commit = _snapshot_commit(weights, filename) or revision
    cfg_path = _download(repo_id, _sibling(filename, CONFIG_NAME), commit, optional=not need_config,
                         reachable=reachable)
    cfg = _read_config(cfg_path) if cfg_path is not None else None
    return weights, cfg, f"hf-hub:{repo_id}@{commit or revision or 'main'}"


def _source_tree_copy(tag: str, source: PretrainedSource, why: FileNotFoundError) -> tuple[Path, dict | None, str]:
    """The published folder ``hub/<repo_id>/`` of a source checkout, for a tag the hub cannot serve right now."""
    folder = SOURCE_HUB_DIR / source.repo_id
    weights = folder / source.filename
    if not isinstance(why, HubUnavailableError):
        reason = f"the hub has no {source.filename} for it"
    else:
        reason = "HF_HUB_OFFLINE is set" if _offline() else f"the hub ({_endpoint() or 'huggingface.co'}) cannot be reached"
    if not weights.is_file():
        raise HubUnavailableError(
            f"cannot load pretrained {tag!r} (hub repo {source.repo_id!r}): it is not in the HF cache and {reason}. "
            "Fix: connect to the hub (unset HF_HUB_OFFLINE), or get the repo's folder and either put it into the "
            f"cache with `python -m zoo cache <folder>` or pass it: create_model({tag.split('.')[0]!r}, "
            "pretrained='<folder>')."
        ) from why
    cfg_path = weights.parent / CONFIG_NAME
    _log.warning("zoo: %s; loading %s from the source tree's %s", reason, tag, folder)
    return weights, _read_config(cfg_path) if cfg_path.is_file() else None, str(weights)


# --------------------------------------------------------------------------------------------------------------------
# public API


def load_pretrained(arch: str, source: PretrainedSource | str | Path, **overrides: Any) -> nn.Module:
    """Build registered architecture ``arch`` and load weights strictly from ``source``; returns it in eval mode.

    ``source``: a registry ``PretrainedSource`` (downloaded, sha256-checked when known), ``"hf-hub:org/name[@rev]"``,
    ``"org/name"``, a local folder (``model.safetensors`` + optional ``config.json``) or a ``.safetensors`` file.
    Constructor args come from (lowest to highest priority) the source's ``overrides``, the config.json found next to
    the weights, and ``overrides``. ``model.zoo_config`` records the merged args.
    """
    entry = model_entry(arch)
    arch = entry.name
    if isinstance(source, PretrainedSource):
        _refuse_pickle(source.filename, arch)
        try:
            weights, cfg, desc = _fetch_repo(source.repo_id, source.revision, source.filename, need_config=False)
        except FileNotFoundError as e:  # offline, unreachable, or not uploaded yet
            tag = next((f"{arch}.{t}" for t, s in entry.pretrained.items() if s is source), arch)
            weights, cfg, desc = _source_tree_copy(tag, source, e)
        _verify_sha256(weights, source.sha256, f"{arch} weights from {source.repo_id}")
        args = _merge_args(arch, cfg, dict(source.overrides), overrides)
        return _build_and_load(arch, args, weights, desc)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if isinstance(source, str) and not path.exists() and (source.startswith(_HUB_PREFIX) or _REPO_ID_RE.match(
                source.partition("@")[0])):
            repo_id, rev = parse_hub_id(source)
            weights, cfg, desc = _fetch_repo(repo_id, rev, need_config=False)
            return _build_and_load(arch, _merge_args(arch, cfg, overrides), weights, desc)
        _refuse_pickle(str(path), arch)
        if path.is_dir():
            weights, cfg_path = path / WEIGHTS_NAME, path / CONFIG_NAME
        elif path.is_file():
            if path.suffix != ".safetensors":
                raise ValueError(f"{path}: expected a .safetensors file or a folder holding {WEIGHTS_NAME}")
            weights, cfg_path = path, path.parent / CONFIG_NAME
        else:
            raise FileNotFoundError(f"pretrained source {str(source)!r} is neither an existing path nor a hub id")
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found (a zoo folder holds {CONFIG_NAME} + {WEIGHTS_NAME})")
        cfg = _read_config(cfg_path) if cfg_path.is_file() else None
        return _build_and_load(arch, _merge_args(arch, cfg, overrides), weights, str(weights))
    raise TypeError(
        f"source must be a PretrainedSource, 'hf-hub:org/name[@rev]' or a local path, got {type(source).__name__}"
    )


def from_pretrained(id_or_folder: str | Path, *, revision: str | None = None, **overrides: Any) -> nn.Module:
    """Load a model from a zoo folder, a ``.safetensors`` file with a sibling config.json, ``hf-hub:org/name[@rev]``,
    ``org/name`` or a registry name with a tag (``"repnext_m0.fmnist"``).

    The architecture and constructor args come from ``config.json`` (``overrides`` win); weights load strictly; the
    model is returned in eval mode in the dtype its constructor gives (fp16 files are cast up).
    """
    if isinstance(id_or_folder, (str, Path)) and Path(id_or_folder).exists():
        path = Path(id_or_folder)
        _refuse_pickle(str(path), None)
        folder = path if path.is_dir() else path.parent
        weights = path if path.is_file() else path / WEIGHTS_NAME
        if path.is_file() and path.suffix != ".safetensors":
            raise ValueError(f"{path}: expected a .safetensors file or a zoo folder")
        if not (folder / CONFIG_NAME).is_file():
            raise ValueError(
                f"{folder} has no {CONFIG_NAME}, so the architecture is unknown: use "
                f"zoo.hub.load_pretrained(arch, {str(path)!r}) or zoo.create_model(arch, pretrained={str(path)!r})"
            )
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found")
        cfg = _read_config(folder / CONFIG_NAME)
        arch = cfg["architecture"]
        return _build_and_load(arch, _merge_args(arch, cfg, overrides), weights, str(weights))
    if not isinstance(id_or_folder, str):
        raise FileNotFoundError(f"{id_or_folder} does not exist")
    if not id_or_folder.startswith(_HUB_PREFIX) and "/" not in id_or_folder:
        # A registry name: "repnext_m0.fmnist" (or an architecture with a default tag).
        return create_model(id_or_folder, pretrained=True, **overrides)
    repo_id, rev = parse_hub_id(id_or_folder)
    if revision is not None and rev is not None and revision != rev:
        raise ValueError(f"revision given twice with different values: {rev!r} in the id and revision={revision!r}")
    weights, cfg, desc = _fetch_repo(repo_id, revision or rev, need_config=True)
    arch = cfg["architecture"]
    return _build_and_load(arch, _merge_args(arch, cfg, overrides), weights, desc)


def _with_data_config(spec: Mapping[str, Any], data_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The registry's input spec with a timm data config laid over it (``input_size`` becomes ``shape``)."""
    out = dict(spec)
    for key, value in (data_config or {}).items():
        out["shape" if key == "input_size" else key] = value
    return out


def save_pretrained(
    model: nn.Module,
    folder: str | Path,
    *,
    metrics: Mapping[str, float] | None = None,
    dataset: str | None = None,
    recipe: str | Mapping[str, Any] | None = None,
    extra_card: str | None = None,
    dtype: torch.dtype | str | None = None,
    name: str | None = None,
    repo_id: str | None = None,
    data_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``folder/{config.json, model.safetensors, README.md}`` for a model built by ``zoo.create_model``.

    Args:
        model: needs ``model.zoo_config`` (set by ``zoo.create_model``) naming a registered architecture.
        metrics: e.g. eval.py's ``{"test/acc": 0.93}``; go into the card's table and model-index.
        dataset: dataset name for the card (e.g. ``"fashion_mnist"``).
        recipe: training recipe (markdown string or mapping, e.g. the LightningCLI config).
        dtype: cast floating tensors before saving (``torch.float16`` / ``"fp16"`` halves the file).
        name: card title (default: the architecture). repo_id: hub id used in the card's usage snippet (default:
            ``org/name`` when ``folder`` is ``.../hub/<org>/<name>``).
        data_config: the timm-style data config the weights were trained with (``input_size``, ``mean``, ``std``,
            ``interpolation``, ``crop_pct``); it replaces the architecture's default in ``pretrained_cfg``.
    Returns:
        The folder path.
    """
    from safetensors.torch import save_file

    import zoo
    from zoo.card import model_card

    zc = getattr(model, "zoo_config", None)
    if not isinstance(zc, Mapping) or "architecture" not in zc:
        raise ValueError(
            "model has no zoo_config: build it with zoo.create_model(...) (or set model.zoo_config = "
            "{'architecture': name, 'args': {...}}) so config.json can rebuild it"
        )
    arch = zc["architecture"]
    entry = model_entry(arch)
    args = dict(zc.get("args", {}))
    try:
        json.dumps(args)
    except TypeError as e:
        raise TypeError(f"constructor args of {arch} must be JSON-serialisable to go into config.json: {e}") from e
    cast = _as_dtype(dtype)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu")
        if cast is not None and t.is_floating_point():
            t = t.to(cast)
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)  # safetensors refuses shared/strided tensors
        seen.add((t.untyped_storage().data_ptr(), t.storage_offset()))
        tensors[k] = t.contiguous()
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "architecture": arch})
    os.chmod(folder / WEIGHTS_NAME, 0o644)  # safetensors writes 0600; weights are meant to be shared

    spec = _with_data_config(input_spec_for(arch, args), data_config)
    config = {
        "architecture": arch,
        "args": args,
        "zoo_version": zoo.__version__,
        "pretrained_cfg": _json_safe(spec),
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n", encoding="utf-8")

    if repo_id is None and folder.resolve().parent.parent.name == "hub":
        repo_id = f"{folder.resolve().parent.name}/{folder.resolve().name}"
    card = model_card(
        name=name or arch,
        architecture=arch,
        task=entry.task,
        license=entry.license,
        args=args,
        family=entry.family,
        title=entry.title,
        paper=entry.paper,
        citation=entry.citation,
        input_spec=spec,
        dataset=dataset,
        metrics=dict(metrics) if metrics else None,
        recipe=recipe,
        repo_id=repo_id,
        num_params=sum(p.numel() for p in model.parameters()),
        extra=extra_card,
    )
    (folder / CARD_NAME).write_text(card, encoding="utf-8")
    return folder


def push_to_hub(
    model_or_folder: nn.Module | str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    revision: str | None = None,
    private: bool = False,
    commit_message: str = "Upload model with zoo",
    **save_kwargs: Any,
):
    """Upload a model (saved with ``save_pretrained(**save_kwargs)`` into a temporary folder) or an existing zoo
    folder to hub repo ``repo_id`` (created if needed; ``revision`` is a branch, created if needed).

    Talks to ``$HF_ENDPOINT`` when set. Returns huggingface_hub's ``CommitInfo``.
    """
    from huggingface_hub import HfApi

    parse_hub_id(repo_id)  # validates
    if _offline():
        raise RuntimeError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set (unset it to upload)")
    api = HfApi(endpoint=_endpoint(), token=token)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        if isinstance(model_or_folder, nn.Module):
            folder = save_pretrained(model_or_folder, Path(tmp) / "model", repo_id=repo_id, **save_kwargs)
        else:
            if save_kwargs:
                raise TypeError(f"save options {sorted(save_kwargs)} only apply when pushing a model, not a folder")
            folder = Path(model_or_folder)
            for need in (CONFIG_NAME, WEIGHTS_NAME):
                if not (folder / need).is_file():
                    raise FileNotFoundError(f"{folder} is not a zoo folder: {need} is missing")
            pickles = [p.name for p in folder.iterdir() if p.name.lower().endswith(PICKLE_SUFFIXES)]
            if pickles:
                raise ValueError(f"{folder} holds pickle files {pickles}; the zoo publishes safetensors only")
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
            ignore_patterns=[".*", "__pycache__/*", "*.pyc"],
        )


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def cache_folder(
    folder: str | Path,
    repo_id: str,
    *,
    revision: str = "main",
    commit: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Copy a zoo folder into the HF cache as ``repo_id`` at ``revision`` (what a download would leave there), so
    ``HF_HUB_OFFLINE=1`` loads of ``hf-hub:repo_id`` (and registry sources pointing at it) work without a server.

    Layout: ``models--org--name/{blobs/<etag>, refs/<revision> -> commit, snapshots/<commit>/<file> -> blob}``.
    ``commit`` defaults to a hash of the folder's contents. Returns the snapshot folder.
    """
    parse_hub_id(repo_id)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{folder} is empty")
    root = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    repo_dir = root / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    etags: dict[str, str] = {}
    for p in files:
        rel = p.relative_to(folder).as_posix()
        # The hub's etag: sha256 for LFS files (weights), the git blob sha1 for small text files.
        etags[rel] = sha256_file(p) if p.suffix == ".safetensors" or p.stat().st_size > 10 << 20 else (
            _git_blob_sha1(p.read_bytes()))
    if commit is None:
        commit = hashlib.sha1(json.dumps(sorted(etags.items())).encode()).hexdigest()
    if not _COMMIT_RE.match(commit):
        raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")
    snap = repo_dir / "snapshots" / commit
    for p in files:
        rel = p.relative_to(folder).as_posix()
        blob = repo_dir / "blobs" / etags[rel]
        if not blob.exists():
            tmp = blob.with_suffix(".incomplete")
            shutil.copyfile(p, tmp)
            os.replace(tmp, blob)
        dst = snap / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        try:
            dst.symlink_to(os.path.relpath(blob, dst.parent))
        except OSError:  # no symlinks (some Windows set-ups): huggingface_hub copies too
            shutil.copyfile(blob, dst)
    if not _COMMIT_RE.match(revision):
        ref = repo_dir / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    return snap
