"""CLIP image and text towers in OpenAI's layout (Radford et al., ICML 2021, arXiv:2103.00020), any size.

A generic piece other zoo models build on (Crane, ``zoo.models.crane``). Parameter names are OpenAI's
(``visual.conv1``, ``visual.transformer.resblocks.{i}.attn.in_proj_weight``, ``token_embedding``, ``ln_final``,
``text_projection``, ...), so an OpenAI-layout state dict loads strictly. The OpenAI TorchScript archive itself is not
read (it is a pickle); the converters below map the safetensors checkpoints users have:

- ``convert_hf_clip``: transformers' ``CLIPModel`` naming (``openai/clip-vit-large-patch14-336``).
- ``convert_open_clip``: open_clip's naming (``ViT-L-14-336`` / ``openai``), OpenAI's names plus buffers.
- ``convert_timm_clip_vision``: timm's ``vit_large_patch14_clip_336.openai`` (vision tower only).
- ``to_openai_clip_state_dict``: detects which of these a state dict is in.

Tokens are batch-first inside (B, N, D). Attention is plain softmax attention through ``zoo.kernels.attention``
(the text tower with its causal mask). Activations are QuickGELU, LayerNorms compute in fp32, as in OpenAI's code.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from zoo.kernels import attention as zoo_attention
from zoo.kernels.attention import Causal
from zoo.registry import PretrainedSource, register_model

__all__ = [
    "CLIP_CONFIGS",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "QuickGELU",
    "LayerNorm",
    "Attention",
    "ResidualAttentionBlock",
    "Transformer",
    "VisionTransformer",
    "CLIP",
    "resize_pos_embed",
    "convert_hf_clip",
    "convert_open_clip",
    "convert_timm_clip_vision",
    "to_openai_clip_state_dict",
    "clip_tokenize",
    "TINY_VOCAB",
    "word_tokenize",
    "clip_tiny",
    "TINY_CLIP",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Constructor args of OpenAI's released towers (heads = width // 64).
CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "vit_b16": dict(embed_dim=512, image_size=224, patch_size=16, vision_width=768, vision_layers=12, vision_heads=12,
                    text_width=512, text_layers=12, text_heads=8),
    "vit_l14": dict(embed_dim=768, image_size=224, patch_size=14, vision_width=1024, vision_layers=24, vision_heads=16,
                    text_width=768, text_layers=12, text_heads=12),
    "vit_l14_336": dict(embed_dim=768, image_size=336, patch_size=14, vision_width=1024, vision_layers=24,
                        vision_heads=16, text_width=768, text_layers=12, text_heads=12),
}


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), OpenAI CLIP's activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back (OpenAI CLIP's fp16-safe variant)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type(x.dtype)


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.reshape(b, n, h, d // h).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names (``in_proj_weight`` (3W, W),
    ``in_proj_bias`` (3W,), ``out_proj``), batch-first: (B, N, W) -> (B, N, W)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.width, self.num_heads = width, heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, H, N, W/H) each."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        h = self.num_heads
        return _heads(q, h), _heads(k, h), _heads(v, h)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        q, k, v = self.qkv(x)
        o = zoo_attention(q, k, v, Causal() if causal else None)
        return self.out_proj(_merge(o))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); MLP c_fc -> QuickGELU -> c_proj."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.attn = Attention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(hidden, width))]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """``layers`` residual attention blocks (``resblocks``), (B, N, W) -> (B, N, W)."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for blk in self.resblocks:
            x = blk(x, causal=causal)
        return x


def resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize a CLIP position table (1 + g*g, W) to (1 + grid*grid, W): the patch rows bilinearly
    (``align_corners=False``, no antialias, as OpenAI-CLIP derived code does), the CLS row kept."""
    n, w = pos.shape
    g = int(round(math.sqrt(n - 1)))
    if g * g != n - 1:
        raise ValueError(f"position table has {n - 1} patch rows, not a square grid")
    if g == grid:
        return pos
    patches = pos[1:].reshape(1, g, g, w).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], patches.reshape(w, grid * grid).t()], dim=0)


class VisionTransformer(nn.Module):
    """CLIP image tower. Image (B, 3, S, S) -> tokens (B, 1 + (S/p)^2, W) / embedding (B, E).

    ``positional_embedding`` (1 + (image_size/p)^2, W) is the stored table. ``run_size`` (default ``image_size``)
    is the input size the model is run at: the table is resized for it once (bilinear, see ``resize_pos_embed``)
    into the non-persistent buffer ``pos_embed_run``, recomputed whenever weights are loaded, so an exported graph
    holds the resized table as a constant.
    """

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int,
                 run_size: int | None = None):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        run_size = image_size if run_size is None else run_size
        if run_size % patch_size:
            raise ValueError(f"run_size {run_size} must be a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size, self.run_size = image_size, patch_size, run_size
        self.width, self.output_dim = width, output_dim
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((image_size // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))
        self.register_buffer("pos_embed_run", torch.empty(0), persistent=False)
        self.refresh_pos_embed()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.refresh_pos_embed())

    @property
    def grid(self) -> int:
        """Patch grid side at ``run_size``."""
        return self.run_size // self.patch_size

    @torch.no_grad()
    def refresh_pos_embed(self) -> None:
        """Recompute ``pos_embed_run`` from ``positional_embedding`` for ``run_size``."""
        self.pos_embed_run = resize_pos_embed(self.positional_embedding.detach(), self.grid).clone()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, run_size, run_size) -> ln_pre(patches + CLS + position) (B, 1 + grid^2, W)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-2:] != (self.run_size, self.run_size):
            raise ValueError(f"image must be {self.run_size}x{self.run_size} (run_size), got {tuple(x.shape[-2:])}")
        x = self.conv1(x.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed_run.to(x.dtype)
        return self.ln_pre(x)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """ln_post then projection: (..., W) -> (..., E)."""
        return self.ln_post(tokens) @ self.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, S, S) -> CLS embedding (B, E)."""
        tokens = self.transformer(self.embed(x))
        return self.head(tokens[:, 0])


class CLIP(nn.Module):
    """CLIP in OpenAI's layout: ``visual`` (VisionTransformer) plus the text tower at top level (``token_embedding``,
    ``positional_embedding``, ``transformer``, ``ln_final``, ``text_projection``) and ``logit_scale``.

    Args: embed_dim E, image_size / patch_size / vision_{width,layers,heads}, context_length, vocab_size,
    text_{width,layers,heads}; ``run_size`` (see VisionTransformer). Head counts come from the config (OpenAI uses
    width // 64).
    """

    def __init__(self, embed_dim: int = 768, image_size: int = 336, patch_size: int = 14, vision_width: int = 1024,
                 vision_layers: int = 24, vision_heads: int = 16, context_length: int = 77, vocab_size: int = 49408,
                 text_width: int = 768, text_layers: int = 12, text_heads: int = 12, run_size: int | None = None):
        super().__init__()
        self.embed_dim, self.context_length = embed_dim, context_length
        self.visual = VisionTransformer(image_size, patch_size, vision_width, vision_layers, vision_heads, embed_dim,
                                        run_size=run_size)
        self.token_embedding = nn.Embedding(vocab_size, text_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, text_width))
        self.transformer = Transformer(text_width, text_layers, text_heads)
        self.ln_final = LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.empty(text_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._init_text(text_width, text_layers)

    def _init_text(self, width: int, layers: int) -> None:
        # OpenAI's init for the text tower.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
        for blk in self.transformer.resblocks:
            nn.init.normal_(blk.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(blk.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(blk.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(blk.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, S, S) float -> (B, E) (not normalised)."""
        return self.visual(image)

    def text_tokens_to_features(self, x: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """Final text LayerNorm, row at ``eot_index`` (B,), projection: (B, L, D) -> (B, E)."""
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), eot_index] @ self.text_projection

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) int -> (B, E) (not normalised); the EOT token is the largest id in each row."""
        if text.dim() != 2 or text.shape[1] != self.context_length:
            raise ValueError(f"text must be (B, {self.context_length}) token ids, got {tuple(text.shape)}")
        x = self.token_embedding(text.long()) + self.positional_embedding
        x = self.transformer(x, causal=True)
        return self.text_tokens_to_features(x, text.argmax(dim=-1))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image (B_img, B_txt), logits_per_text) with the learned temperature."""
        img = F.normalize(self.encode_image(image), dim=-1)
        txt = F.normalize(self.encode_text(text), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()


# --------------------------------------------------------------------------------------------------------------------
# Converters to OpenAI's layout (state dicts of tensors in, OpenAI-named state dict out)
# --------------------------------------------------------------------------------------------------------------------
_BLOCK_MAP_HF = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                 "self_attn.out_proj": "attn.out_proj"}


def _hf_blocks(sd: Mapping[str, torch.Tensor], src: str, dst: str, out: dict) -> None:
    layers = sorted({int(k[len(src):].split(".")[0]) for k in sd if k.startswith(src)})
    for i in layers:
        p, q = f"{src}{i}.", f"{dst}{i}."
        for a, b in _BLOCK_MAP_HF.items():
            for t in ("weight", "bias"):
                out[f"{q}{b}.{t}"] = sd[f"{p}{a}.{t}"]
        for t in ("weight", "bias"):
            out[f"{q}attn.in_proj_{t}"] = torch.cat([sd[f"{p}self_attn.{n}_proj.{t}"] for n in "qkv"], dim=0)


def convert_hf_clip(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``CLIPModel`` state dict (``text_model.*``, ``vision_model.*``, ``visual_projection``,
    ``text_projection``, ``logit_scale``) -> OpenAI layout. A ``CLIPVisionModelWithProjection`` (vision only) works
    too. q/k/v projections are concatenated into ``in_proj_*``; projections are transposed; ``position_ids``
    buffers are dropped."""
    sd = {k.removeprefix("model."): v for k, v in sd.items() if not k.endswith("position_ids")}
    out: dict[str, torch.Tensor] = {}
    if any(k.startswith("vision_model.") for k in sd):
        v = "vision_model."
        out["visual.class_embedding"] = sd[v + "embeddings.class_embedding"]
        out["visual.conv1.weight"] = sd[v + "embeddings.patch_embedding.weight"]
        out["visual.positional_embedding"] = sd[v + "embeddings.position_embedding.weight"]
        for t in ("weight", "bias"):
            out[f"visual.ln_pre.{t}"] = sd[f"{v}pre_layrnorm.{t}"]
            out[f"visual.ln_post.{t}"] = sd[f"{v}post_layernorm.{t}"]
        _hf_blocks(sd, v + "encoder.layers.", "visual.transformer.resblocks.", out)
        out["visual.proj"] = sd["visual_projection.weight"].t().contiguous()
    if any(k.startswith("text_model.") for k in sd):
        t_ = "text_model."
        out["token_embedding.weight"] = sd[t_ + "embeddings.token_embedding.weight"]
        out["positional_embedding"] = sd[t_ + "embeddings.position_embedding.weight"]
        _hf_blocks(sd, t_ + "encoder.layers.", "transformer.resblocks.", out)
        for t in ("weight", "bias"):
            out[f"ln_final.{t}"] = sd[f"{t_}final_layer_norm.{t}"]
        out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    if "logit_scale" in sd:
        out["logit_scale"] = sd["logit_scale"].reshape(())
    if not out:
        raise ValueError("not a transformers CLIP state dict: no 'vision_model.*' or 'text_model.*' keys")
    return out


def convert_open_clip(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip ``CLIP`` state dict (OpenAI names plus buffers such as ``attn_mask``) -> OpenAI layout."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    out = {k: v for k, v in sd.items() if not k.endswith("attn_mask") and not k.endswith("position_ids")}
    if "logit_scale" in out:
        out["logit_scale"] = out["logit_scale"].reshape(())
    if "visual.conv1.weight" not in out and "token_embedding.weight" not in out:
        raise ValueError("not an open_clip / OpenAI CLIP state dict: no 'visual.conv1.weight' or 'token_embedding'")
    return out


def convert_timm_clip_vision(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``vit_*_clip_*.openai`` state dict (vision only) -> OpenAI ``visual.*`` keys. timm stores the projection
    as ``head.weight`` (E, W) with a zero ``head.bias``; a non-zero bias has no OpenAI equivalent (ValueError)."""
    out: dict[str, torch.Tensor] = {}
    out["visual.class_embedding"] = sd["cls_token"].reshape(-1)
    out["visual.positional_embedding"] = sd["pos_embed"].reshape(-1, sd["pos_embed"].shape[-1])
    out["visual.conv1.weight"] = sd["patch_embed.proj.weight"]
    if "patch_embed.proj.bias" in sd:
        raise ValueError("timm state dict has a patch-embedding bias: not an OpenAI CLIP vision tower")
    for t in ("weight", "bias"):
        out[f"visual.ln_pre.{t}"] = sd[f"norm_pre.{t}"]
        out[f"visual.ln_post.{t}"] = sd[f"norm.{t}"]
    layers = sorted({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
    m = {"norm1": "ln_1", "norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj", "attn.proj": "attn.out_proj"}
    for i in layers:
        p, q = f"blocks.{i}.", f"visual.transformer.resblocks.{i}."
        for a, b in m.items():
            for t in ("weight", "bias"):
                out[f"{q}{b}.{t}"] = sd[f"{p}{a}.{t}"]
        out[q + "attn.in_proj_weight"] = sd[p + "attn.qkv.weight"]
        out[q + "attn.in_proj_bias"] = sd[p + "attn.qkv.bias"]
    if "head.bias" in sd and bool(sd["head.bias"].abs().max() > 0):
        raise ValueError("timm head.bias is non-zero; OpenAI's projection has no bias")
    out["visual.proj"] = sd["head.weight"].t().contiguous()
    return out


def to_openai_clip_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported layout (transformers, open_clip / OpenAI, timm vision) -> OpenAI layout, detected by key names."""
    keys = set(sd)
    if any(k.startswith(("vision_model.", "text_model.", "model.vision_model.")) for k in keys):
        return convert_hf_clip(sd)
    if "cls_token" in keys and any(k.startswith("blocks.") for k in keys):
        return convert_timm_clip_vision(sd)
    if any(k.removeprefix("module.") in ("visual.conv1.weight", "token_embedding.weight") for k in keys):
        return convert_open_clip(sd)
    raise ValueError("unrecognised CLIP state dict layout (expected transformers, open_clip/OpenAI or timm keys)")


def clip_tokenize(texts: str | list[str], context_length: int = 77) -> torch.Tensor:
    """CLIP BPE token ids (N, context_length) int64 through open_clip's maintained tokenizer (extra ``crane``:
    ``pip install open_clip_torch ftfy regex``). Raises ImportError naming the extra when it is missing."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("clip_tokenize needs open_clip_torch (+ ftfy, regex): pip install 'zoo[crane]'") from e
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = SimpleTokenizer(context_length=context_length)
    return _TOKENIZER([texts] if isinstance(texts, str) else list(texts), context_length=context_length).long()


_TOKENIZER = None


# --------------------------------------------------------------------------------------------------------------------
# The zoo's tiny CLIP (pre-trained on Fashion-MNIST captions by zoo.tasks.anomaly): a word-level vocabulary
# --------------------------------------------------------------------------------------------------------------------
TINY_VOCAB: tuple[str, ...] = (
    "<pad>", "<sot>", "X", ".", "a", "photo", "of", "the", "an", "object", "damaged", "normal", "flawless",
    "perfect", "good", "broken", "defect", "scratched", "with", "blemish", "flaw", "anomalous",
    "t-shirt", "top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle", "boot",
    "clothing", "item", "piece", "picture", "image", "small", "grey", "cropped", "unblemished", "corrupted",
    "<eot>",  # last: the text tower finds the EOT position as the largest id (OpenAI's convention)
)


def word_tokenize(texts: str | list[str], context_length: int = 16, *, raw: bool = False):
    """Word-level ids in ``TINY_VOCAB`` for the tiny CLIP: ``<sot> words <eot>`` padded with 0 to (N, L) int64.
    ``raw=True`` returns the ids of one text without specials as a list. Unknown words raise ValueError."""
    index = {w: i for i, w in enumerate(TINY_VOCAB)}

    def ids(t: str) -> list[int]:
        words = t.lower().replace(".", " . ").replace("/", " ").split()
        unknown = [w for w in words if w not in index]
        if unknown:
            raise ValueError(f"words {unknown} are not in the tiny CLIP vocabulary")
        return [index[w] for w in words]

    if raw:
        if not isinstance(texts, str):
            raise TypeError("raw=True takes one str")
        return ids(texts)
    rows = []
    for t in [texts] if isinstance(texts, str) else list(texts):
        r = [index["<sot>"]] + ids(t) + [index["<eot>"]]
        if len(r) > context_length:
            raise ValueError(f"{t!r} needs {len(r)} tokens > context_length {context_length}")
        rows.append(r + [0] * (context_length - len(r)))
    return torch.tensor(rows, dtype=torch.long)


TINY_CLIP: dict[str, Any] = dict(embed_dim=64, image_size=28, patch_size=4, vision_width=96, vision_layers=6,
                                 vision_heads=4, context_length=16, vocab_size=len(TINY_VOCAB), text_width=64,
                                 text_layers=4, text_heads=4)


@register_model(paper="arXiv:2103.00020", task="zero-shot-image-classification", license="mit",
                title="Learning Transferable Visual Models From Natural Language Supervision",
                input_spec={"shape": (3, 28, 28), "dtype": "float32", "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD},
                pretrained={"fmnist": PretrainedSource(repo_id="zoo-models/clip_tiny.fmnist", dataset="fashion_mnist")})
def clip_tiny(**kwargs: Any) -> CLIP:
    """A 0.9M-parameter CLIP (ViT 96 wide, 6 blocks, patch 4 at 28 px; word-level text tower) that the zoo pre-trains
    contrastively on Fashion-MNIST captions (``zoo.tasks.anomaly``); the backbone of ``crane_tiny``."""
    return CLIP(**{**TINY_CLIP, **kwargs})
