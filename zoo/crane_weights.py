"""Frozen backbones for Crane / Crane+: fetch CLIP and DINOv2 safetensors weights and load them into a ``Crane``.

The Crane hub folders hold the learned prompts only; their config names the backbones (``clip_weights``,
``dino_weights``), which ``zoo.models.crane.Crane`` passes here when it is built:

- ``hf-hub:openai/clip-vit-large-patch14-336`` (transformers layout, ``model.safetensors``), or an open_clip / timm
  safetensors file or folder; the layout is detected (``zoo.models.clip.to_openai_clip_state_dict``);
- ``hf-hub:timm/vit_base_patch14_reg4_dinov2.lvd142m`` (timm layout) for Crane+;
- a zoo hub folder of ``clip_*`` weights (the zoo's own tiny CLIP: ``model.safetensors`` with ``clip.``-free keys).

Only safetensors files are read (never a pickle).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["resolve_safetensors", "load_backbones"]


def resolve_safetensors(spec: str) -> Path:
    """``hf-hub:org/name[@rev]`` (downloads ``model.safetensors``), a folder holding one, or a ``.safetensors`` file."""
    path = Path(spec)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{spec}: backbone weights must be a .safetensors file")
        return path
    if path.is_dir():
        for name in ("model.safetensors", "open_clip_model.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{spec} holds no model.safetensors")
    from zoo.hub import _download, parse_hub_id

    repo_id, rev = parse_hub_id(spec)
    for name in ("model.safetensors", "open_clip_model.safetensors"):
        got = _download(repo_id, name, rev, optional=True)
        if got is not None:
            return Path(got)
    raise FileNotFoundError(f"{spec}: no model.safetensors / open_clip_model.safetensors in the repository")


def load_backbones(model: Any, clip_weights: str | None, dino_weights: str | None) -> None:
    """Load CLIP (and, for Crane+, DINOv2) weights into ``model`` (a ``zoo.models.crane.Crane``)."""
    from safetensors.torch import load_file

    if clip_weights is not None:
        sd = load_file(str(resolve_safetensors(clip_weights)))
        vision_only = not any(k.startswith(("text_model.", "token_embedding", "transformer.")) for k in sd)
        model.load_clip_state_dict(sd, text=not vision_only)
    if dino_weights is not None:
        model.load_dino_state_dict(load_file(str(resolve_safetensors(dino_weights))))
