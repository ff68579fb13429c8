"""Crane and Crane+ (Salehi et al., arXiv:2504.11055): zero-shot anomaly detection on a frozen CLIP with learned
context prompts, E-Attn (and, for Crane+, D-Attn from DINOv2).

Image (B, 3, S, S), CLIP-normalised -> (image score (B,) float32 in [0, 1], anomaly map (B, S, S) float32 in [0, 1]).

Re-implementation of AlirezaSalehy/Crane @ 39181f9 (``models/Crane.py``, ``models/prompt_ensemble.py``, ``test.py``'s
``ScoreCalculator``, ``train.py``'s loss) on the zoo's OpenAI-layout CLIP (``zoo.models.clip``). Checked against the
authors' outputs to < 1e-5 in fp32 (tests/models/test_crane.py). Quirks of the original kept on purpose are marked
``QUIRK`` where they live:

- the feature layers as executed: an in-place update makes every listed layer the last block's refined tokens
  (``feature_mode="as_executed"``, default); ``"per_layer"`` gives each layer its own refined tokens;
- the deep text prompts are rounded to fp16 before use;
- D-Attn's similarity threshold is the mean over the whole batch tensor, so a map depends on its batch;
- D-Attn reads the original path after the attention residual of its block (before the MLP).

Only the prompt learner is trainable (43,008 values for ViT-L/14). ``state_dict()`` holds the prompt learner only; the
frozen CLIP (and DINOv2) come from ``clip_weights`` / ``dino_weights`` (see ``zoo.crane_weights``) or
``load_clip_state_dict`` / ``load_dino_state_dict``. Text features of the static prompts are computed once and cached
(``text_features`` buffer) so inference runs the vision path only.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.kernels import attention as zoo_attention
from zoo.models.clip import (
    CLIP,
    TINY_CLIP,
    TINY_VOCAB,
    word_tokenize,
    CLIP_CONFIGS,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    _merge,
    to_openai_clip_state_dict,
)
from zoo.registry import PretrainedSource, register_model

__all__ = [
    "PromptLearner",
    "DinoV2",
    "Crane",
    "gaussian_blur_scipy",
    "focal_loss",
    "binary_dice_loss",
    "crane_loss",
    "convert_checkpoint",
    "crane_vit_l14_336",
    "cranep_vit_l14_336",
    "crane_tiny",
    "CRANE_PROMPT_IDS",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CLIP BPE ids of the authors' templates (checked against open_clip's tokenizer in the tests):
# "X X X X X X X X X X X X object." and "X X X X X X X X X X X X damaged object.".
_SOT, _EOT, _X = 49406, 49407, 343
CRANE_PROMPT_IDS = {"normal": [14115, 269], "anomalous": [13568, 14115, 269]}


# --------------------------------------------------------------------------------------------------------------------
# Prompt learner
# --------------------------------------------------------------------------------------------------------------------
def _template_ids(state_ids: Sequence[int], n_ctx: int, length: int, sot: int, eot: int, ctx_id: int) -> torch.Tensor:
    ids = [sot] + [ctx_id] * n_ctx + list(state_ids) + [eot]
    if len(ids) > length:
        raise ValueError(f"prompt of {len(ids)} tokens does not fit context length {length}")
    return torch.tensor(ids + [0] * (length - len(ids)), dtype=torch.int32)


class PromptLearner(nn.Module):
    """Crane's context-guided prompts (the AnomalyCLIP key names).

    Parameters: ``ctx_pos``, ``ctx_neg`` (1, 1, n_ctx, D) learnable context of the normal / anomalous prompt;
    ``compound_prompts_text.{0..depth-2}`` (t_n_ctx, D) deep prompts replacing token positions 1..t_n_ctx at the
    inputs of text blocks 1..depth-1. Buffers (from CLIP's token embedding and the tokenizer): ``token_prefix_*``
    (1, 1, 1, D), ``token_suffix_*`` (1, 1, L-1-n_ctx, D), ``tokenized_prompts_*`` (1, 1, L) int32.
    """

    def __init__(self, width: int, n_ctx: int = 12, t_n_ctx: int = 4, depth: int = 9, context_length: int = 77,
                 prompt_ids: Mapping[str, Sequence[int]] | None = None, special_ids: Sequence[int] = (_SOT, _EOT, _X)):
        super().__init__()
        if depth < 1 or n_ctx < 1 or t_n_ctx < 0:
            raise ValueError(f"need depth >= 1, n_ctx >= 1, t_n_ctx >= 0; got {depth}, {n_ctx}, {t_n_ctx}")
        self.n_ctx, self.t_n_ctx, self.depth, self.width = n_ctx, t_n_ctx, depth, width
        ids = dict(CRANE_PROMPT_IDS if prompt_ids is None else prompt_ids)
        sot, eot, ctx_id = special_ids
        tok_pos = _template_ids(ids["normal"], n_ctx, context_length, sot, eot, ctx_id)
        tok_neg = _template_ids(ids["anomalous"], n_ctx, context_length, sot, eot, ctx_id)
        self.ctx_pos = nn.Parameter(torch.randn(1, 1, n_ctx, width) * 0.02)
        self.ctx_neg = nn.Parameter(torch.randn(1, 1, n_ctx, width) * 0.02)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.randn(t_n_ctx, width) * 0.02) for _ in range(depth - 1)])
        self.register_buffer("tokenized_prompts_pos", tok_pos.view(1, 1, -1))
        self.register_buffer("tokenized_prompts_neg", tok_neg.view(1, 1, -1))
        suffix = context_length - 1 - n_ctx
        for s in ("pos", "neg"):
            self.register_buffer(f"token_prefix_{s}", torch.zeros(1, 1, 1, width))
            self.register_buffer(f"token_suffix_{s}", torch.zeros(1, 1, suffix, width))

    @torch.no_grad()
    def init_from_clip(self, token_embedding: nn.Embedding) -> None:
        """Fill the prefix / suffix buffers from CLIP's token embedding (as the authors' constructor does)."""
        for s in ("pos", "neg"):
            emb = token_embedding(getattr(self, f"tokenized_prompts_{s}").long().view(1, -1))[0]  # (L, D)
            getattr(self, f"token_prefix_{s}").copy_(emb[:1].view(1, 1, 1, -1))
            getattr(self, f"token_suffix_{s}").copy_(emb[1 + self.n_ctx:].view(1, 1, -1, emb.shape[-1]))

    def static_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts (2, L, D) [normal, anomalous] and their EOT positions (2,) int64."""
        pos = torch.cat([self.token_prefix_pos, self.ctx_pos, self.token_suffix_pos], dim=2)[0]
        neg = torch.cat([self.token_prefix_neg, self.ctx_neg, self.token_suffix_neg], dim=2)[0]
        tok = torch.cat([self.tokenized_prompts_pos[0], self.tokenized_prompts_neg[0]], dim=0)
        return torch.cat([pos, neg], dim=0), tok.argmax(dim=-1)

    def image_conditioned_prompts(self, img_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pad_suffix``: normalised image embedding (B, D) appended as an extra context token, the suffix shortened
        by one. Returns prompts (2, B, L, D) [normal, anomalous] and EOT positions (2, B)."""
        b = img_emb.shape[0]
        e = img_emb.view(b, 1, -1).to(self.ctx_pos.dtype)
        out, eots = [], []
        for s in ("pos", "neg"):
            prefix = getattr(self, f"token_prefix_{s}")[0, 0].expand(b, -1, -1)
            ctx = getattr(self, f"ctx_{s}")[0, 0].expand(b, -1, -1)
            suffix = getattr(self, f"token_suffix_{s}")[0, 0, :-1].expand(b, -1, -1)
            out.append(torch.cat([prefix, ctx, e, suffix], dim=1))
            eots.append((getattr(self, f"tokenized_prompts_{s}")[0, 0].argmax() + 1).expand(b))
        return torch.stack(out), torch.stack(eots)


# --------------------------------------------------------------------------------------------------------------------
# DINOv2 (Crane+), timm layout (``vit_base_patch14_reg4_dinov2``)
# --------------------------------------------------------------------------------------------------------------------
class _DinoBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.ls1 = nn.Module()
        self.ls1.gamma = nn.Parameter(torch.full((dim,), 1e-5))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.fc2 = nn.Linear(4 * dim, dim)
        self.ls2 = nn.Module()
        self.ls2.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = self.attn.qkv(self.norm1(x)).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        x = x + self.ls1.gamma * self.attn.proj(_merge(zoo_attention(q, k, v)))
        return x + self.ls2.gamma * self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class DinoV2(nn.Module):
    """DINOv2 ViT with registers in timm's layout (``cls_token``, ``reg_token``, ``pos_embed`` (1, g*g, C) over the
    patches only, ``patch_embed.proj``, ``blocks.{i}``, ``norm``). ``forward``: ImageNet-normalised image (B, 3, S, S)
    -> last block's normed patch tokens (B, C, S/p, S/p), as ``get_intermediate_layers(x, reshape=True)[0]``."""

    def __init__(self, image_size: int = 518, patch_size: int = 14, width: int = 768, layers: int = 12,
                 heads: int = 12, reg_tokens: int = 4):
        super().__init__()
        self.patch_size, self.grid = patch_size, image_size // patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 1e-6)
        self.reg_token = nn.Parameter(torch.randn(1, reg_tokens, width) * 1e-6)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid, width) * 0.02)
        self.blocks = nn.ModuleList([_DinoBlock(width, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.num_prefix = 1 + reg_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(x)
        b, c, h, w = x.shape
        pos = self.pos_embed
        if (h, w) != (self.grid, self.grid):
            pos = pos.reshape(1, self.grid, self.grid, c).permute(0, 3, 1, 2)
            pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        x = x.flatten(2).transpose(1, 2) + pos
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.reg_token.expand(b, -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)[:, self.num_prefix:]
        return x.transpose(1, 2).reshape(b, c, h, w)


# --------------------------------------------------------------------------------------------------------------------
# Smoothing and losses
# --------------------------------------------------------------------------------------------------------------------
def _reflect_gaussian_matrix(n: int, sigma: float, truncate: float) -> torch.Tensor:
    """(n, n) float64 matrix M with (M @ x) = scipy's 1-D Gaussian of x with mode='reflect' (half-sample symmetric)."""
    r = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    k = k / k.sum()
    src = torch.arange(n).view(-1, 1) + torch.arange(-r, r + 1).view(1, -1)  # (n, 2r+1) padded positions
    src = src % (2 * n)
    src = torch.where(src >= n, 2 * n - 1 - src, src)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.scatter_add_(1, src, k.expand(n, -1).contiguous())
    return m


def gaussian_blur_scipy(x: torch.Tensor, sigma: float = 4.0, truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter(m, sigma)`` per map in torch: (B, H, W) -> (B, H, W).

    Separable, radius ``int(truncate * sigma + 0.5)``, kernel normalised to sum 1, scipy's default ``mode='reflect'``
    (half-sample symmetric: ``d c b a | a b c d``; torch's ``F.pad(mode='reflect')`` is scipy's ``'mirror'``). The
    padding and the kernel are folded into one constant (n, n) matrix per axis, so the blur is two matmuls (exports
    to plain matmuls; matches scipy to ~1e-7).
    """
    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    mh = _reflect_gaussian_matrix(h, sigma, truncate).to(x.device, x.dtype)
    mw = _reflect_gaussian_matrix(w, sigma, truncate).to(x.device, x.dtype)
    return mh @ x @ mw.t()


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """The authors' ``FocalLoss()`` on probabilities (B, C, H, W) against a 0/1 mask (B, H, W): one-hot clamped to
    [smooth/(C-1), 1-smooth], pt = sum(onehot * p) + smooth, mean of -(1-pt)^gamma log pt over all pixels."""
    c = probs.shape[1]
    p = probs.permute(0, 2, 3, 1).reshape(-1, c)
    onehot = F.one_hot(target.reshape(-1).long(), c).to(p.dtype).clamp(smooth / (c - 1), 1.0 - smooth)
    pt = (onehot * p).sum(1) + smooth
    return (-(1 - pt).pow(gamma) * pt.log()).mean()


def binary_dice_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over images of (2 sum(x t) + 1) / (sum x + sum t + 1): (B, H, W) each."""
    b = target.shape[0]
    xf, tf = x.reshape(b, -1), target.reshape(b, -1).to(x.dtype)
    return 1 - ((2 * (xf * tf).sum(1) + 1) / (xf.sum(1) + tf.sum(1) + 1)).sum() / b


def crane_loss(out: Mapping[str, torch.Tensor], mask: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
    """The authors' training loss from ``Crane.forward_train`` outputs: 2·Σ_layers focal + 2·Σ_layers dice +
    0.2·CE(image logits, label). Returns the parts and ``total``."""
    maps = out["train_maps"]  # (L, B, 2, S, S) softmax maps
    focal = sum(focal_loss(m, mask) for m in maps) * 2
    dice = sum(binary_dice_loss((1 - m[:, 0] + m[:, 1]) / 2, mask) for m in maps) * 2
    ce = F.cross_entropy(out["image_logits"], label.long())
    return {"focal_x2": focal, "dice_x2": dice, "ce": ce, "total": focal + dice + 0.2 * ce}


# --------------------------------------------------------------------------------------------------------------------
# Crane
# --------------------------------------------------------------------------------------------------------------------
_BACKBONE_PREFIXES = ("clip.", "dino.")


class Crane(nn.Module):
    """Crane / Crane+ on a frozen CLIP.

    Args:
        clip: CLIP constructor args (``zoo.models.clip.CLIP``) or the name of one of ``CLIP_CONFIGS``.
        image_size: input size S (518 in the paper); CLIP's position table is resized for it once, at load time.
        features_list: 1-indexed vision blocks whose refined tokens give pixel maps (must be E-Attn blocks).
        eattn_to_layer: the authors' ``replace_with_EAttn(to_layer)``: the last ``to_layer - 1`` blocks get E-Attn.
        attn_type: E-Attn variant, ``"qq+kk+vv"`` (paper), ``"vv"``, ``"kk"``, ``"qq"``, ``"qq+kk"``, ``"(q+k+v)^2"``
            or ``"none"`` (no E-Attn: the refined path uses CLIP's own q·k attention; ablation).
        feature_mode: ``"as_executed"`` (QUIRK, default) or ``"per_layer"``; see the module docstring.
        n_ctx, t_n_ctx, depth: prompt learner sizes (12, 4, 9 in the paper). prompt_ids / special_ids: token ids of
            the state words and (SOT, EOT, context-placeholder) for a non-OpenAI vocabulary.
        image_conditioned: use the image-conditioned prompts (``pad_suffix``) at inference (the authors' test uses
            static prompts; training uses conditioned ones).
        soft_mean: average softmaxed layer maps (True) or softmax the averaged logits (False).
        sigma: Gaussian smoothing of the map (0 = off). temperature: 0.07 at test. score_pooling: local-to-global
            image score (ScoreBasePooling).
        dino: DinoV2 constructor args for Crane+ (None = Crane). both_eattn_dattn: Crane+ maps from D-Attn and E-Attn.
        dino_beta, dino_gamma: D-Attn's threshold and sharpening (1.2, 3).
        clip_weights / dino_weights: where ``zoo.crane_weights`` fetches the frozen backbones from when the model is
            built (``hf-hub:org/name``, a local ``.safetensors`` or folder); None leaves them random.
        backbone_in_state_dict: include the frozen backbones in ``state_dict()`` (default: prompts only).
    """

    def __init__(self, clip: str | Mapping[str, Any] = "vit_l14_336", image_size: int = 518,
                 features_list: Sequence[int] = (6, 12, 18, 24), eattn_to_layer: int = 20,
                 attn_type: str = "qq+kk+vv", feature_mode: str = "as_executed", n_ctx: int = 12, t_n_ctx: int = 4,
                 depth: int = 9, prompt_ids: Mapping[str, Sequence[int]] | None = None,
                 special_ids: Sequence[int] = (_SOT, _EOT, _X), image_conditioned: bool = False,
                 soft_mean: bool = True, sigma: float = 4.0, temperature: float = 0.07, score_pooling: bool = True,
                 dino: Mapping[str, Any] | None = None, both_eattn_dattn: bool = True, dino_beta: float = 1.2,
                 dino_gamma: float = 3.0, clip_weights: str | None = None, dino_weights: str | None = None,
                 backbone_in_state_dict: bool = False):
        super().__init__()
        cfg = dict(CLIP_CONFIGS[clip]) if isinstance(clip, str) else dict(clip)
        cfg["run_size"] = image_size
        self.clip = CLIP(**cfg)
        n_blocks = len(self.clip.visual.transformer.resblocks)
        if not 1 <= eattn_to_layer - 1 <= n_blocks:
            raise ValueError(f"eattn_to_layer must be in [2, {n_blocks + 1}], got {eattn_to_layer}")
        self.first_dual = n_blocks - (eattn_to_layer - 1)  # 0-indexed first dual-path block
        self.features_list = [int(i) for i in features_list]
        for i in self.features_list:
            if not self.first_dual < i <= n_blocks:
                raise ValueError(f"features_list layer {i} is not an E-Attn (dual-path) block "
                                 f"({self.first_dual + 1}..{n_blocks})")
        if attn_type not in ("qq+kk+vv", "vv", "kk", "qq", "qq+kk", "(q+k+v)^2", "none"):
            raise ValueError(f"unknown attn_type {attn_type!r}")
        if feature_mode not in ("as_executed", "per_layer"):
            raise ValueError(f"feature_mode must be 'as_executed' or 'per_layer', got {feature_mode!r}")
        text_width = self.clip.ln_final.weight.shape[0]
        if image_conditioned and text_width != self.clip.embed_dim:
            raise ValueError("image-conditioned prompts need embed_dim == text width")
        self.image_size, self.attn_type, self.feature_mode = image_size, attn_type, feature_mode
        self.image_conditioned, self.soft_mean, self.sigma = image_conditioned, soft_mean, float(sigma)
        self.temperature, self.score_pooling = float(temperature), score_pooling
        self.both_eattn_dattn, self.dino_beta, self.dino_gamma = both_eattn_dattn, float(dino_beta), float(dino_gamma)
        self.backbone_in_state_dict = backbone_in_state_dict
        self.prompt_learner = PromptLearner(text_width, n_ctx, t_n_ctx, depth, self.clip.context_length, prompt_ids,
                                            special_ids)
        self.prompt_learner.init_from_clip(self.clip.token_embedding)
        self.dino = DinoV2(**dict(dino)) if dino is not None else None
        self.clip.requires_grad_(False)
        if self.dino is not None:
            self.dino.requires_grad_(False)
        self.register_buffer("text_features", torch.zeros(1, 2, self.clip.embed_dim), persistent=False)
        blur = (_reflect_gaussian_matrix(image_size, self.sigma, 4.0).float() if self.sigma > 0
                else torch.eye(image_size))
        self.register_buffer("blur_matrix", blur, persistent=False)  # the sigma-4 scipy blur as a constant matrix
        self.register_buffer("clip_mean", torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self._register_state_dict_hook(Crane._drop_backbones)
        self.register_load_state_dict_post_hook(Crane._after_load)
        self.refresh_text_features()
        if clip_weights is not None or dino_weights is not None:
            from zoo.crane_weights import load_backbones  # fetches files: kept out of this module

            load_backbones(self, clip_weights, dino_weights)

    # ------------------------------------------------------------------ state dict plumbing
    @staticmethod
    def _drop_backbones(module: "Crane", state_dict: dict, prefix: str, local_metadata: Any) -> None:
        if not module.backbone_in_state_dict:
            for k in [k for k in state_dict if k[len(prefix):].startswith(_BACKBONE_PREFIXES)]:
                del state_dict[k]

    @staticmethod
    def _after_load(module: "Crane", incompatible: Any) -> None:
        if not module.backbone_in_state_dict:
            # keys carry the prefix of the outermost load (e.g. "model.clip." from a Lightning task)
            keep = [k for k in incompatible.missing_keys if not re.search(r"(^|\.)(clip|dino)\.", k)]
            incompatible.missing_keys[:] = keep
        module.refresh_text_features()

    @torch.no_grad()
    def load_clip_state_dict(self, state_dict: Mapping[str, torch.Tensor], *, text: bool = True) -> None:
        """Load frozen CLIP weights (any layout ``to_openai_clip_state_dict`` knows; fp16 is cast up) strictly, resize
        the position table for ``image_size``, rebuild the prompt buffers and the cached text features.
        ``text=False`` accepts a vision-only state dict (timm)."""
        sd = {k: v.to(torch.float32) if v.is_floating_point() else v
              for k, v in to_openai_clip_state_dict(state_dict).items()}
        missing, unexpected = self.clip.load_state_dict(sd, strict=False)
        if not text:
            missing = [k for k in missing if k.startswith("visual.")]
        if missing or unexpected:
            raise ValueError(f"CLIP weights do not match: missing {missing[:10]}, unexpected {unexpected[:10]}")
        self.clip.visual.refresh_pos_embed()
        self.prompt_learner.init_from_clip(self.clip.token_embedding)
        self.refresh_text_features()

    @torch.no_grad()
    def load_dino_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load timm-layout DINOv2 weights strictly (Crane+)."""
        if self.dino is None:
            raise ValueError("this Crane has no DINOv2 (dino=None); build Crane+ to load DINOv2 weights")
        self.dino.load_state_dict({k: v.float() for k, v in state_dict.items() if k != "mask_token"}, strict=True)

    def load_prompt_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load a prompt learner state dict (the authors' key names) strictly and refresh the text cache."""
        self.prompt_learner.load_state_dict(dict(state_dict), strict=True)
        self.refresh_text_features()

    def train(self, mode: bool = True) -> "Crane":
        super().train(mode)
        self.clip.eval()  # frozen backbones never train
        if self.dino is not None:
            self.dino.eval()
        if not mode:
            self.refresh_text_features()
        return self

    # ------------------------------------------------------------------ text
    def encode_text_learn(self, prompts: torch.Tensor, eot: torch.Tensor,
                          collect: list | None = None) -> torch.Tensor:
        """Prompt embeddings (N, L, D) + deep prompts -> text features (N, E) (not normalised); ``collect`` (a list)
        receives every text block's output.

        QUIRK: the deep prompts are rounded to fp16 (the authors cast them with ``.half()`` before concatenating)."""
        clip, pl = self.clip, self.prompt_learner
        x = prompts + clip.positional_embedding.to(prompts.dtype)
        t = pl.t_n_ctx
        for i, blk in enumerate(clip.transformer.resblocks):
            if 1 <= i <= len(pl.compound_prompts_text):
                # expand before the cast, as the authors do: the gradient is rounded to fp16 per prompt, then summed
                deep = pl.compound_prompts_text[i - 1].expand(x.shape[0], -1, -1).half().to(x.dtype)
                x = torch.cat([x[:, :1], deep, x[:, 1 + t:]], dim=1)
            x = blk(x, causal=True)
            if collect is not None:
                collect.append(x)
        return clip.text_tokens_to_features(x, eot)

    def static_text_features(self) -> torch.Tensor:
        """(1, 2, E) normalised [normal, anomalous] text features of the static prompts."""
        prompts, eot = self.prompt_learner.static_prompts()
        return F.normalize(self.encode_text_learn(prompts, eot).float(), dim=-1).unsqueeze(0)

    def conditioned_text_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, 2, E) normalised per-image text features from normalised global features (B, E)."""
        prompts, eot = self.prompt_learner.image_conditioned_prompts(image_features)
        feats = [self.encode_text_learn(prompts[j], eot[j]).float() for j in range(2)]
        return F.normalize(torch.stack(feats, dim=1), dim=-1)

    @torch.no_grad()
    def refresh_text_features(self) -> None:
        """Recompute the cached static text features (after the prompts or CLIP changed); a ``for_export`` view
        (no text tower) keeps its cache."""
        if "prompt_learner" not in self._modules:
            return
        self.text_features = self.static_text_features().detach()

    # ------------------------------------------------------------------ vision
    def _eattn(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """E-Attn weights applied to v: (B, H, N, d) -> (B, H, N, d). Sum of row-softmaxes, not renormalised."""
        s = q.shape[-1] ** -0.5
        if self.attn_type == "none":
            return zoo_attention(q, k, v)

        def sm(a: torch.Tensor, b: torch.Tensor, scale: float = s) -> torch.Tensor:
            return torch.softmax((a @ b.transpose(-2, -1)) * scale, dim=-1)

        if self.attn_type == "(q+k+v)^2":
            c = torch.cat([q, k, v], dim=-1)
            w = sm(c, c, s * 3 ** -0.5)
        else:
            parts = {"vv": v, "kk": k, "qq": q}  # the authors' summation order
            names = self.attn_type.split("+")
            w = sum(sm(t, t) for n, t in parts.items() if n in names)
        return w @ v

    def _dattn(self, blk: nn.Module, h: torch.Tensor, dino_feats: torch.Tensor) -> torch.Tensor:
        """D-Attn on ln_1 output ``h`` (B, N+1, W): DINO similarity weights on CLIP's v (patches) -> (B, HW, W).

        QUIRK: the threshold uses the mean over the whole batch tensor, so a map depends on its batch."""
        attn = blk.attn
        b = h.shape[0]
        _, _, v = attn.qkv(h)  # (B, Hh, N+1, d)
        z = F.normalize(dino_feats.flatten(2), dim=1)  # (B, C, HW)
        sim = torch.einsum("bcm,bcn->bmn", z, z)
        sim = (sim - sim.mean() * self.dino_beta) * self.dino_gamma
        sim = sim.masked_fill(sim < 0, float("-inf"))
        w = torch.softmax(sim.to(v.dtype), dim=-1).unsqueeze(1)  # (B, 1, HW, HW), shared by every head
        g = self.clip.visual.grid
        hh, ww = dino_feats.shape[-2:]
        vp = v[:, :, 1:]
        if (hh, ww) != (g, g):
            nh, d = vp.shape[1], vp.shape[-1]
            vp = vp.reshape(b * nh, g, g, d).permute(0, 3, 1, 2)
            vp = F.interpolate(vp, size=(hh, ww), mode="bilinear", align_corners=False)
            vp = vp.permute(0, 2, 3, 1).reshape(b, nh, hh * ww, d)
        return attn.out_proj(_merge(w @ vp))

    def dino_features(self, image: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised image -> un-normalise, clamp [0, 1], ImageNet-normalise -> DINOv2 (B, C, h, w)."""
        raw = (image * self.clip_std + self.clip_mean).clamp(0, 1)
        mean = raw.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = raw.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return self.dino((raw - mean) / std)

    def encode_image(self, image: torch.Tensor, return_blocks: bool = False) -> dict[str, torch.Tensor]:
        """Image (B, 3, S, S) -> ``image_features_raw`` (B, E) (CLS of the original path), ``patch_features_raw``
        (L, B, N, E) (one entry per pixel-map layer), with ``return_blocks`` also the per-block outputs of both paths
        (``block_out_refined`` / ``block_out_original`` (n_blocks, B, N+1, W)) and the per-layer refined tokens."""
        vis = self.clip.visual
        dino_feats = self.dino_features(image) if self.dino is not None else None
        x = vis.embed(image)
        x_ori = x
        per_layer: list[torch.Tensor] = []
        dattn: list[torch.Tensor] = []
        outs_r, outs_o = [], []
        for i, blk in enumerate(vis.transformer.resblocks):
            if i < self.first_dual:
                x = blk(x)
                x_ori = x
            else:
                src = x_ori
                q, k, v = blk.attn.qkv(blk.ln_1(src))
                ori = blk.attn.out_proj(_merge(zoo_attention(q, k, v)))
                ref = blk.attn.out_proj(_merge(self._eattn(q, k, v)))
                mid = src + ori
                x_ori = mid + blk.mlp(blk.ln_2(mid))
                x = x + ref
                if dino_feats is not None and (i + 1) in self.features_list:
                    # QUIRK: the authors read x[1] after the block updated it in place: the original path after the
                    # attention residual; at the first dual block, the refined path.
                    state = x if i == self.first_dual else mid
                    dattn.append(self._dattn(blk, blk.ln_1(state), dino_feats))
                if (i + 1) in self.features_list:
                    per_layer.append(x[:, 1:])
            if return_blocks:
                outs_r.append(x)
                outs_o.append(x_ori)
        image_features = vis.head(x_ori[:, 0])
        if self.feature_mode == "as_executed":
            # QUIRK: every listed layer is the last block's refined tokens (in-place update + views).
            per_layer = [x[:, 1:]] * len(per_layer)
        if dino_feats is not None:
            feats = []
            for j, d in enumerate(dattn):
                feats.append(d)
                if self.both_eattn_dattn:
                    r = per_layer[j]
                    hh, ww = dino_feats.shape[-2:]
                    if r.shape[1] != hh * ww:
                        g = vis.grid
                        r = F.interpolate(r.transpose(1, 2).reshape(r.shape[0], -1, g, g), size=(hh, ww),
                                          mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
                    feats.append(r)
            per_layer = feats
        out = {"image_features_raw": image_features, "patch_features_raw": torch.stack([vis.head(t) for t in per_layer])}
        if return_blocks:
            out["block_out_refined"] = torch.stack(outs_r)
            out["block_out_original"] = torch.stack(outs_o)
        return out

    # ------------------------------------------------------------------ scores
    def _upsample(self, t: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """(B, N, C) per-patch values -> (B, C, S, S)."""
        b, n, c = t.shape
        g = int(round(math.sqrt(n)))
        t = t.transpose(1, 2).reshape(b, c, g, g)
        return F.interpolate(t, size=(self.image_size, self.image_size), mode=mode)

    def score(self, image_features: torch.Tensor, patch_features: torch.Tensor, text_features: torch.Tensor,
              *, image_temperature: float | None = None, soft_mean: bool | None = None,
              map_interpolation: str = "bilinear") -> dict[str, torch.Tensor]:
        """Normalised global (B, E) and patch (L, B, N, E) features, text (1 or B, 2, E) -> pixel logits (L, B, N, 2),
        anomaly map (B, S, S) before smoothing, fused feature, image logits (B, 2) and score (B,)."""
        soft_mean = self.soft_mean if soft_mean is None else soft_mean
        tt = text_features.transpose(1, 2)  # (1|B, E, 2)
        pixel_logits = torch.stack([(p @ tt) / self.temperature for p in patch_features])
        if soft_mean:
            amap = torch.stack([self._upsample(pl.softmax(-1), map_interpolation) for pl in pixel_logits]).mean(0)
        else:
            amap = torch.stack([self._upsample(pl, map_interpolation) for pl in pixel_logits]).mean(0).softmax(1)
        out = {"pixel_logits": pixel_logits, "anomaly_map": amap[:, 1], "map_probs": amap}
        g = image_features
        if self.score_pooling:
            w = pixel_logits.mean(0).softmax(-1)[..., 1:]  # (B, N, 1)
            pooled = F.normalize((patch_features.mean(0) * w).sum(1), dim=1)
            g = F.normalize(0.5 * pooled + 0.5 * image_features, dim=1)
            out["pooled_feature"] = pooled
        out["image_features_fused"] = g
        temp = self.temperature if image_temperature is None else image_temperature
        logits = (g.unsqueeze(1) @ tt).squeeze(1) / temp
        out["image_logits"] = logits
        out["image_score"] = logits.softmax(-1)[:, 1]
        return out

    def smooth(self, amap: torch.Tensor) -> torch.Tensor:
        """scipy-equivalent Gaussian smoothing (sigma) of maps (B, S, S) through the constant ``blur_matrix``."""
        if self.sigma <= 0:
            return amap
        m = self.blur_matrix.to(amap.dtype)
        return m @ amap @ m.t()

    def forward_features(self, image: torch.Tensor, *, image_conditioned: bool | None = None,
                         soft_mean: bool | None = None, return_blocks: bool = False) -> dict[str, torch.Tensor]:
        """Everything the test path computes, as a dict (see ``encode_image`` and ``score``), plus
        ``anomaly_map_smoothed`` and the ``text_features`` used."""
        enc = self.encode_image(image, return_blocks=return_blocks)
        g = F.normalize(enc["image_features_raw"], dim=-1)
        patches = F.normalize(enc["patch_features_raw"], dim=-1)
        cond = self.image_conditioned if image_conditioned is None else image_conditioned
        if cond:
            text = self.conditioned_text_features(g)
        elif self.training or torch.is_grad_enabled() and self.prompt_learner.ctx_pos.requires_grad:
            text = self.static_text_features()
        else:
            text = self.text_features
        out = {**enc, "image_features": g, "patch_features": patches, "text_features": text}
        out.update(self.score(g, patches, text, soft_mean=soft_mean))
        out["anomaly_map_smoothed"] = self.smooth(out["anomaly_map"])
        return out

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (B, 3, S, S) CLIP-normalised float32 -> (image score (B,), smoothed anomaly map (B, S, S))."""
        with torch.no_grad():
            enc = self.encode_image(image)
        g = F.normalize(enc["image_features_raw"], dim=-1)
        patches = F.normalize(enc["patch_features_raw"], dim=-1)
        text = self.conditioned_text_features(g) if self.image_conditioned else self.text_features
        out = self.score(g, patches, text)
        return out["image_score"], self.smooth(out["anomaly_map"])

    def for_export(self) -> "Crane":
        """A view of this model for ``zoo.export``: the same modules minus the text tower and the prompt learner
        (the cached text features are a buffer), so the exported graph holds the vision path only. Static prompts
        only (``image_conditioned`` needs the text tower)."""
        if self.image_conditioned:
            raise ValueError("image-conditioned prompts need the text tower; export a model with "
                             "image_conditioned=False")
        self.refresh_text_features()
        view = copy.copy(self)
        view._modules = dict(self._modules)
        view._buffers = dict(self._buffers)
        holder = nn.Module()
        holder.visual = self.clip.visual
        view._modules["clip"] = holder
        del view._modules["prompt_learner"]
        return view.eval()

    def forward_train(self, image: torch.Tensor, *, image_conditioned: bool = True,
                      map_interpolation: str = "nearest", image_temperature: float = 0.01) -> dict[str, torch.Tensor]:
        """The authors' training step outputs: per-layer softmax maps ``train_maps`` (L, B, 2, S, S) (nearest
        upsampling), ``image_logits`` (B, 2) at temperature 0.01 and ``text_features``; feed to ``crane_loss``."""
        with torch.no_grad():
            enc = self.encode_image(image)
        g = F.normalize(enc["image_features_raw"], dim=-1)
        patches = F.normalize(enc["patch_features_raw"], dim=-1)
        text = self.conditioned_text_features(g) if image_conditioned else self.static_text_features()
        out = self.score(g, patches, text, image_temperature=image_temperature)
        tt = text.transpose(1, 2)
        out["train_maps"] = torch.stack([self._upsample(((p @ tt) / self.temperature).softmax(-1), map_interpolation)
                                         for p in patches])
        out["text_features"] = text
        return out


# --------------------------------------------------------------------------------------------------------------------
# Configs and registry
# --------------------------------------------------------------------------------------------------------------------
_HF_CLIP = "hf-hub:openai/clip-vit-large-patch14-336"
_HF_DINO = "hf-hub:timm/vit_base_patch14_reg4_dinov2.lvd142m"
_DINO_B14 = dict(image_size=518, patch_size=14, width=768, layers=12, heads=12, reg_tokens=4)
_SPEC = {"shape": (3, 518, 518), "dtype": "float32", "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD,
         "interpolation": "bicubic", "crop_pct": 1.0}
_PAPER = dict(paper="arXiv:2504.11055", task="anomaly-detection", license="mit",
              title="Crane: Context-Guided Prompt Learning and Attention Refinement for Zero-Shot Anomaly Detection")
# Paper Table 1 (image AUROC/AP/F1-max, pixel AUROC/AUPRO/F1-max) on the dataset each checkpoint is tested on.
_CRANE_METRICS = {
    "mvtec": {"visa/image_auroc": 85.3, "visa/image_ap": 87.9, "visa/pixel_auroc": 95.1, "visa/pixel_aupro": 87.5},
    "visa": {"mvtec/image_auroc": 93.8, "mvtec/image_ap": 97.5, "mvtec/pixel_auroc": 91.3, "mvtec/pixel_aupro": 84.6},
}
_CRANEP_METRICS = {
    "mvtec": {"visa/image_auroc": 83.6, "visa/image_ap": 86.7, "visa/pixel_auroc": 95.3, "visa/pixel_aupro": 90.6},
    "visa": {"mvtec/image_auroc": 93.9, "mvtec/image_ap": 97.6, "mvtec/pixel_auroc": 91.2, "mvtec/pixel_aupro": 88.1},
}


_SHA256 = {  # model.safetensors of the converted hub folders (zoo.crane_cli)
    "crane_vit_l14_336.mvtec": "4f9cb4579f3081498cf85f20525cefe76c9c6a4460dd218b820ff7aaa4b1c90b",
    "crane_vit_l14_336.visa": "55a66efefe58bfd49dded136b98ff7565d3d2a749df43f16b7fb352fc737a638",
    "cranep_vit_l14_336.mvtec": "c9af0dacf57e19124977c7a319b48a0c69d3356c18b2a210ba3cc4179904894a",
    "cranep_vit_l14_336.visa": "f5c287685a3008dd124860b189ac1f02dcd5c4cf08b6de3830bafc20afe62ca7",
}


def _sources(arch: str, metrics: Mapping[str, Mapping[str, float]], overrides: Mapping[str, Any]) -> dict:
    return {tag: PretrainedSource(repo_id=f"zoo-models/{arch}.{tag}", dataset=tag, metrics=dict(metrics[tag]),
                                  sha256=_SHA256[f"{arch}.{tag}"], overrides=dict(overrides))
            for tag in ("mvtec", "visa")}


@register_model(**_PAPER, input_spec=_SPEC,
                pretrained=_sources("crane_vit_l14_336", _CRANE_METRICS, {"clip_weights": _HF_CLIP}))
def crane_vit_l14_336(**kwargs: Any) -> Crane:
    """Crane (E-Attn, no DINO) on OpenAI CLIP ViT-L/14@336 at 518 px, the authors' test settings (soft_mean on)."""
    args = dict(clip="vit_l14_336", image_size=518, features_list=(6, 12, 18, 24), soft_mean=True)
    return Crane(**{**args, **kwargs})


@register_model(**_PAPER, input_spec=_SPEC,
                pretrained=_sources("cranep_vit_l14_336", _CRANEP_METRICS,
                                    {"clip_weights": _HF_CLIP, "dino_weights": _HF_DINO}))
def cranep_vit_l14_336(**kwargs: Any) -> Crane:
    """Crane+ (E-Attn + D-Attn from DINOv2-B/14 with registers), features [24], soft_mean off (industrial sets)."""
    args = dict(clip="vit_l14_336", image_size=518, features_list=(24,), soft_mean=False, dino=_DINO_B14)
    return Crane(**{**args, **kwargs})



TINY_SPECIAL_IDS = (TINY_VOCAB.index("<sot>"), TINY_VOCAB.index("<eot>"), TINY_VOCAB.index("X"))
TINY_PROMPT_IDS = {"normal": word_tokenize("object .", raw=True), "anomalous": word_tokenize("damaged object .", raw=True)}


@register_model(**_PAPER, input_spec={"shape": (3, 40, 40), "dtype": "float32", "mean": OPENAI_CLIP_MEAN,
                                      "std": OPENAI_CLIP_STD},
                pretrained={"fmnist_synth": PretrainedSource(
                    repo_id="zoo-models/crane_tiny.fmnist_synth", dataset="fashion_mnist_synth",
                    overrides={"clip_weights": "hf-hub:zoo-models/clip_tiny.fmnist"})})
def crane_tiny(**kwargs: Any) -> Crane:
    """Crane on the zoo's tiny CLIP (``zoo.tasks.anomaly`` pre-trains it on Fashion-MNIST; word-level vocabulary)."""
    args = dict(clip=TINY_CLIP, image_size=40, features_list=(4, 5, 6), eattn_to_layer=5, n_ctx=4, t_n_ctx=2,
                depth=3, prompt_ids=TINY_PROMPT_IDS, special_ids=TINY_SPECIAL_IDS, sigma=1.0)
    return Crane(**{**args, **kwargs})


# --------------------------------------------------------------------------------------------------------------------
# Converter
# --------------------------------------------------------------------------------------------------------------------
_PL_KEYS = ("ctx_pos", "ctx_neg", "token_prefix_pos", "token_suffix_pos", "token_prefix_neg", "token_suffix_neg",
            "tokenized_prompts_pos", "tokenized_prompts_neg")


def convert_checkpoint(path_or_state: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The authors' ``epoch_k.pth`` (``{"prompt_learner": state_dict}``, read with ``weights_only=True``) or that
    inner dict -> the zoo's state dict of a Crane model (``prompt_learner.*`` keys). Raises ValueError on other keys."""
    if isinstance(path_or_state, (str, Path)):
        obj = torch.load(str(path_or_state), map_location="cpu", weights_only=True)
    else:
        obj = path_or_state
    sd = obj.get("prompt_learner", obj) if isinstance(obj, Mapping) else None
    if not isinstance(sd, Mapping):
        raise ValueError("expected {'prompt_learner': state_dict} or a prompt learner state dict")
    deep = sorted((k for k in sd if k.startswith("compound_prompts_text.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    unknown = set(sd) - set(_PL_KEYS) - set(deep)
    missing = set(_PL_KEYS) - set(sd)
    if unknown or missing:
        raise ValueError(f"not a Crane prompt learner: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
    return {f"prompt_learner.{k}": (v.clone() if k.startswith("tokenized") else v.float().clone())
            for k, v in sd.items()}
