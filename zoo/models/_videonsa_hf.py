"""VideoNSA as a Hugging Face transformers model: ``Qwen2_5_VLForConditionalGeneration`` (vision tower, merger,
M-RoPE, processor, ``generate``) with every LLM self-attention replaced by :class:`~zoo.models.videonsa.
VideoNSAAttention`, and a strict loader for the released sharded safetensors (``Enxin/VideoNSA``).

Needs the ``videonsa`` extra (transformers >= 5.17). Imported lazily by ``zoo.models.videonsa`` (the leading
underscore keeps ``zoo.models`` from importing it when transformers is absent).
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from zoo.models.videonsa import VideoNSAAttention

__all__ = ["QWEN2_5_VL_7B", "TINY_CONFIG", "VideoNSAForConditionalGeneration", "build_videonsa", "convert_keys",
           "load_released", "load_state_dict_shards"]

# Qwen2.5-VL-7B-Instruct's config.json (the shapes of Enxin/VideoNSA).
QWEN2_5_VL_7B: dict[str, Any] = {
    "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
                      "hidden_act": "silu", "in_channels": 3},
    "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
                    "rms_norm_eps": 1e-6, "vocab_size": 152064, "sliding_window": 32768, "max_window_layers": 28,
                    "use_sliding_window": False,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                        "mrope_section": [16, 24, 24]}},
    "tie_word_embeddings": False,
}

# A tiny random config with the 7B's head counts (28 query / 4 KV heads, so the released 28 -> 64 padding applies).
TINY_CONFIG: dict[str, Any] = {
    "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 448,
                      "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                      "fullatt_block_indexes": [1], "tokens_per_second": 2, "hidden_act": "silu", "in_channels": 3},
    "text_config": {"hidden_size": 448, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 28,
                    "num_key_value_heads": 4, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
                    "vocab_size": 512, "bos_token_id": None, "eos_token_id": None, "sliding_window": 4096,
                    "max_window_layers": 2, "use_sliding_window": False,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}},
    "tie_word_embeddings": False,
    "image_token_id": 500, "video_token_id": 501, "vision_start_token_id": 502, "vision_end_token_id": 503,
}


class HFVideoNSAAttention(VideoNSAAttention):
    """:class:`VideoNSAAttention` with transformers' attention call signature (returns ``(out, None)``)."""

    def __init__(self, text_config, layer_idx: int, **kwargs):
        heads = text_config.num_attention_heads
        super().__init__(text_config.hidden_size, heads, text_config.num_key_value_heads,
                         text_config.hidden_size // heads, layer_idx=layer_idx, **kwargs)

    mrope_ids: torch.Tensor | None = None  # (3, B, L), set by the text model's pre-hook

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
                position_embeddings=None, cache=None, **kwargs):
        # transformers hands the layers only the 1-D text positions; the token typing needs the three M-RoPE ids.
        pid = self.mrope_ids
        if pid is None or pid.shape[1:] != hidden_states.shape[:2]:
            pid = None
        # transformers passes the KV cache as `past_key_values` in older releases and as `cache` in newer ones (5.25).
        cache = cache if cache is not None else past_key_values
        out = VideoNSAAttention.forward(self, hidden_states, position_embeddings, pid, attention_mask, cache)
        return out, None


def _released_rope_index(get_rope_index):
    """Wrap Qwen2.5-VL's ``get_rope_index`` so it gives the released model's M-RoPE ids on every transformers version.

    The authors' vendored copy casts ``second_per_grid_t`` to int64 before scaling (0.5 s -> 0: every temporal patch
    gets temporal id 0; see the fixture README); transformers >= 5.18 keeps the fraction. Truncating the argument
    gives the authors' ids on both."""

    @functools.wraps(get_rope_index)
    def released(*args, second_per_grid_ts=None, **kwargs):
        if second_per_grid_ts is not None:
            second_per_grid_ts = torch.as_tensor(second_per_grid_ts).trunc()
        return get_rope_index(*args, second_per_grid_ts=second_per_grid_ts, **kwargs)

    return released


class VideoNSAForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL with VideoNSA attention in every LLM layer. ``attn_kwargs`` go to :class:`VideoNSAAttention`
    (``block_counts``, ``window_size``, ``mode``, ``selection``, ``backend``, ...); ``config.block_counts`` /
    ``config.window_size`` (the released config's knobs) are used when present."""

    def __init__(self, config, **attn_kwargs):
        super().__init__(config)
        tc = config.text_config
        kw = {"block_counts": getattr(tc, "block_counts", getattr(config, "block_counts", 32)),
              "window_size": getattr(tc, "window_size", getattr(config, "window_size", 256)), **attn_kwargs}
        dev = self.lm_head.weight.device
        for i, layer in enumerate(self.model.language_model.layers):
            old = layer.self_attn
            new = HFVideoNSAAttention(tc, i, **kw).to(device=dev, dtype=old.q_proj.weight.dtype)
            new.load_state_dict(old.state_dict(), strict=False)  # keep the initialised q/k/v/o
            layer.self_attn = new
        self.model.language_model.register_forward_pre_hook(self._capture_mrope_ids, with_kwargs=True)
        self.model.get_rope_index = _released_rope_index(self.model.get_rope_index)

    def _capture_mrope_ids(self, module, args, kwargs):
        pid = kwargs.get("position_ids")
        if pid is not None and pid.dim() == 3 and pid.shape[0] == 4:  # packed: text row first
            pid = pid[1:]
        if pid is not None and pid.dim() != 3:
            pid = None
        for attn in self.nsa_layers():
            attn.mrope_ids = pid
        return None

    def nsa_layers(self) -> list[HFVideoNSAAttention]:
        return [layer.self_attn for layer in self.model.language_model.layers]


def _config(config: dict | Qwen2_5_VLConfig | None) -> Qwen2_5_VLConfig:
    if isinstance(config, Qwen2_5_VLConfig):
        cfg = config
    else:
        cfg = Qwen2_5_VLConfig(**(QWEN2_5_VL_7B if config is None else config))
    cfg._attn_implementation = "sdpa"
    cfg.text_config._attn_implementation = "sdpa"
    cfg.vision_config._attn_implementation = "sdpa"
    return cfg


def build_videonsa(config: dict | None = None, **attn_kwargs) -> VideoNSAForConditionalGeneration:
    """A randomly initialised VideoNSA VLM (default: the 7B shapes; pass ``TINY_CONFIG`` for tests)."""
    return VideoNSAForConditionalGeneration(_config(config), **attn_kwargs).eval()


# -------------------------------------------------------------------------------------------- released checkpoint
_KEY_MAP = [(re.compile(r"^visual\."), "model.visual."),
            (re.compile(r"^model\.(?!language_model\.|visual\.)"), "model.language_model.")]


def convert_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released (transformers < 4.52 layout) key names -> this model's: ``visual.*`` -> ``model.visual.*``,
    ``model.*`` -> ``model.language_model.*``; ``lm_head.weight`` and already-converted names are kept."""
    out = {}
    for k, v in state_dict.items():
        for pat, rep in _KEY_MAP:
            k2 = pat.sub(rep, k)
            if k2 != k:
                k = k2
                break
        out[k] = v
    return out


def load_state_dict_shards(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's ``*.safetensors`` shards (``model.safetensors.index.json`` when present)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors shards in {folder}")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(folder / f)))
    return sd


def load_released(path_or_repo: str | Path = "Enxin/VideoNSA", *, dtype: torch.dtype = torch.bfloat16,
                  device: str | torch.device = "cpu", revision: str | None = None,
                  **attn_kwargs) -> VideoNSAForConditionalGeneration:
    """The released VideoNSA: reads ``config.json`` and the sharded safetensors (a local folder, or an HF repo id
    fetched with huggingface_hub), builds the model on the meta device and loads every tensor strictly (missing or
    unexpected keys raise). ``attn_kwargs`` override the attention knobs (e.g. ``block_counts``, ``backend``)."""
    folder = Path(path_or_repo)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(path_or_repo), revision=revision,
                                        allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    raw = json.loads((folder / "config.json").read_text())
    for k in ("architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version"):
        raw.pop(k, None)
    cfg = _config(raw)
    with torch.device("meta"):
        model = VideoNSAForConditionalGeneration(cfg, **attn_kwargs)
    sd = convert_keys(load_state_dict_shards(folder))
    if cfg.tie_word_embeddings and "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["model.language_model.embed_tokens.weight"]
    sd = {k: v.to(dtype) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise RuntimeError(f"released checkpoint does not match the model: missing {missing[:8]} "
                           f"({len(missing)}), unexpected {unexpected[:8]} ({len(unexpected)})")
    _rebuild_buffers(model)
    return model.to(device).eval()


def _rebuild_buffers(model: nn.Module) -> None:
    """Non-persistent buffers (rotary inverse frequencies) are still on the meta device after ``assign``: recompute
    them with a CPU copy of each rotary module."""
    for name, mod in model.named_modules():
        if hasattr(mod, "inv_freq") and mod.inv_freq.is_meta:
            cls = type(mod)
            with torch.device("cpu"):
                fresh = cls(mod.config) if hasattr(mod, "config") else cls(mod.dim, getattr(mod, "theta", 10000.0))
            for bname, buf in fresh.named_buffers(recurse=False):
                setattr(mod, bname, buf)
