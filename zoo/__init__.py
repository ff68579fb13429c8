"""zoo: recent vision, speech, video and tabular architectures on one Triton attention layer.

Public API::

    zoo.create_model(name, pretrained=False, **overrides)
    zoo.list_models(pattern="*"), zoo.list_pretrained(pattern="*"), zoo.model_entry(name)
    zoo.save_pretrained(model, folder, ...), zoo.from_pretrained(id_or_folder), zoo.push_to_hub(model, repo_id)
    zoo.export(model, example_inputs, path, format="pt2" | "pte")
"""
from __future__ import annotations

__version__ = "0.1.0"

from zoo.registry import (  # noqa: E402
    PretrainedSource,
    create_model,
    list_models,
    list_pretrained,
    model_entry,
    register_model,
)

# Bound eagerly: the submodule zoo.export would otherwise shadow the function once imported (importing a submodule
# sets it as an attribute of the package). zoo/export.py imports only torch, so this is cheap.
from zoo.export import export  # noqa: E402


def __getattr__(name: str):
    # Hub and export pull in huggingface_hub / torch.export; import them on first use.
    if name in {"save_pretrained", "from_pretrained", "push_to_hub"}:
        from zoo import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


__all__ = [
    "PretrainedSource",
    "create_model",
    "list_models",
    "list_pretrained",
    "model_entry",
    "register_model",
    "save_pretrained",
    "from_pretrained",
    "push_to_hub",
    "export",
]
