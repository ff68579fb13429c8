"""Model registry: every architecture in the zoo registers a constructor here, with its paper, task, licence, input
spec and pretrained sources (timm's registry, plus the facts a model card needs).

Names: ``repnext_m0`` is an architecture; ``repnext_m0.fmnist`` is that architecture with the pretrained tag
``fmnist``. ``create_model("repnext_m0.fmnist", pretrained=True)`` builds it and loads the tagged weights.
"""
from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

__all__ = [
    "PretrainedSource",
    "ModelEntry",
    "register_model",
    "create_model",
    "list_models",
    "list_pretrained",
    "model_entry",
    "split_model_name",
]


@dataclass(frozen=True)
class PretrainedSource:
    """Where one set of weights lives: a hub repository in the zoo's layout (config.json + model.safetensors).

    ``sha256`` (hex) is checked after download when given. ``revision`` pins a branch, tag or commit.
    ``overrides`` are constructor args the weights need (e.g. ``{"num_classes": 10, "in_chans": 1}``).
    """

    repo_id: str
    filename: str = "model.safetensors"
    revision: str | None = None
    sha256: str | None = None
    dataset: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    """Everything the zoo knows about one registered architecture."""

    name: str
    constructor: Callable[..., nn.Module]
    family: str
    paper: str
    title: str
    task: str
    license: str
    input_spec: dict[str, Any]
    pretrained: dict[str, PretrainedSource]
    default_tag: str | None
    citation: str | None = None

    @property
    def default_args(self) -> dict[str, Any]:
        """The constructor's keyword defaults (what `create_model(name)` builds without overrides)."""
        sig = inspect.signature(self.constructor)
        return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


_REGISTRY: dict[str, ModelEntry] = {}
_MODELS_IMPORTED = False


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    paper: str,
    task: str,
    license: str,
    title: str = "",
    input_spec: dict[str, Any] | None = None,
    pretrained: dict[str, PretrainedSource] | None = None,
    default_tag: str | None = None,
    citation: str | None = None,
):
    """Decorator registering ``fn`` (a function returning an ``nn.Module``) under ``fn.__name__``.

    ``default_tag`` is the pretrained tag used by ``pretrained=True``; it defaults to the first key of ``pretrained``.
    """

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        if name in _REGISTRY and _REGISTRY[name].constructor.__module__ != f.__module__:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].constructor.__module__}")
        sources = dict(pretrained or {})
        tag = default_tag if default_tag is not None else next(iter(sources), None)
        if tag is not None and tag not in sources:
            raise ValueError(f"default_tag {tag!r} of {name!r} is not one of its pretrained tags {sorted(sources)}")
        _REGISTRY[name] = ModelEntry(
            name=name,
            constructor=f,
            family=f.__module__.rsplit(".", 1)[-1],
            paper=paper,
            title=title,
            task=task,
            license=license,
            input_spec=dict(input_spec or {}),
            pretrained=sources,
            default_tag=tag,
            citation=citation,
        )
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_models_imported() -> None:
    global _MODELS_IMPORTED
    if not _MODELS_IMPORTED:
        _MODELS_IMPORTED = True
        import zoo.models  # noqa: F401  (registers every model)


def split_model_name(name: str) -> tuple[str, str | None]:
    """``"repnext_m0.fmnist"`` -> ``("repnext_m0", "fmnist")``; ``"repnext_m0"`` -> ``("repnext_m0", None)``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"model name must be a non-empty str, got {name!r}")
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of an architecture (a tag suffix is ignored). Raises ``KeyError`` with close matches."""
    _ensure_models_imported()
    arch, _ = split_model_name(name)
    if arch not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(arch, list(_REGISTRY), n=3)
        hint = f"; did you mean {close}?" if close else f"; known: {sorted(_REGISTRY)}"
        raise KeyError(f"unknown model {arch!r}{hint}")
    return _REGISTRY[arch]


def list_models(pattern: str = "*", *, task: str | None = None, family: str | None = None) -> list[str]:
    """Sorted architecture names matching the shell-style ``pattern`` (and optionally a task or family)."""
    _ensure_models_imported()
    return sorted(
        n
        for n, e in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern) and (task is None or e.task == task) and (family is None or e.family == family)
    )


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted ``arch.tag`` names with pretrained weights, matching ``pattern``."""
    _ensure_models_imported()
    names = [f"{n}.{t}" for n, e in _REGISTRY.items() for t in e.pretrained]
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def _resolve_pretrained(name: str, pretrained: bool | str | Path) -> tuple[str, PretrainedSource | str | None]:
    """Normalise ``pretrained`` to (architecture, registry source | 'hf-hub:...' | local path | None)."""
    arch, tag = split_model_name(name)
    entry = model_entry(arch)
    if pretrained is False or pretrained is None:
        return arch, None
    if pretrained is True:
        tag = tag or entry.default_tag
        if tag is None:
            raise ValueError(f"pretrained=True but {arch!r} has no pretrained weights; list_pretrained() shows which do")
    elif isinstance(pretrained, Path):
        return arch, str(pretrained)
    elif isinstance(pretrained, str):
        if pretrained.startswith("hf-hub:") or Path(pretrained).exists():
            return arch, pretrained
        ptag = pretrained.split(".", 1)[1] if pretrained.startswith(arch + ".") else pretrained
        tag = ptag
    else:
        raise TypeError(
            "pretrained must be a bool, a tag ('repnext_m0.fmnist' or 'fmnist'), 'hf-hub:org/name[@rev]' or a "
            f"local folder/file, got {type(pretrained).__name__}"
        )
    if tag not in entry.pretrained:
        raise ValueError(
            f"pretrained tag {tag!r} is unknown for {arch!r}: expected one of {sorted(entry.pretrained)}, an "
            "'hf-hub:org/name' id or an existing local path"
        )
    return arch, entry.pretrained[tag]


def create_model(name: str, pretrained: bool | str | Path = False, **overrides: Any) -> nn.Module:
    """Build a registered model, optionally with pretrained weights.

    Args:
        name: architecture (``"repnext_m0"``) or architecture.tag (``"repnext_m0.fmnist"``).
        pretrained: False; True (the tag in ``name`` or the registry default); a tag; ``"hf-hub:org/name[@rev]"``;
            or a local folder (config.json + model.safetensors) or ``.safetensors`` file.
        overrides: constructor keyword arguments (must be JSON-serialisable so the hub can rebuild the model).
    Returns:
        The ``nn.Module`` in eval mode when weights were loaded, with ``model.zoo_config = {"architecture",
        "args"}`` recording how it was built.
    """
    arch, source = _resolve_pretrained(name, pretrained)
    if source is None:
        entry = model_entry(arch)
        model = entry.constructor(**overrides)
        model.zoo_config = {"architecture": arch, "args": dict(overrides)}
        return model
    from zoo import hub

    return hub.load_pretrained(arch, source, **overrides)
