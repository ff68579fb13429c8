"""RepNeXt: A Fast Multi-Scale CNN using Structural Reparameterization (Zhao, Luo, Ouyang; arXiv:2406.16004).

Re-implementation of the official architecture (github.com/suous/RepNeXt, ``model/repnext.py`` @ f515377) with the
same module names, so the authors' training-form checkpoints (classifier + distillation head) load strictly after
:func:`convert_checkpoint`. Also a timm-style model (``forward_features``, ``forward_head``, ``reset_classifier``,
``feature_info``, ``features_only``, ``forward_intermediates``) and visible to ``timm.create_model`` under names timm
does not already own.

Reparameterisation (``model.fuse(level=...)``, or ``timm.utils.reparameterize_model`` which calls ``fuse()`` on
children and gets ``level="full"``):

* ``"official"``: exactly the authors' ``utils.replace_batchnorm``: ConvNorm -> Conv2d, RepDWConvS -> one 3x3
  depthwise conv, RepDWConvM -> one 7x7 depthwise conv, the two NormLinear heads -> one averaged Linear. The block and
  downsample BatchNorms stay, ``conv_l`` stays two separable convs. State-dict keys equal the official fused form.
* ``"full"``: ``"official"`` plus the BatchNorm after every token mixer folded away: in a MetaNeXtBlock into the
  following 1x1 conv (``channel_mixer.0``), in a Downsample into the two stride-2 depthwise convs of its CopyConv (the
  shortcut reads the normalised tensor, so the 1x1 conv cannot take it). No BatchNorm is left.
* ``merge_large_kernel=True`` (with ``"full"``): the ``conv_l`` pair 1x11 -> 11x1 becomes one 11x11 depthwise conv
  only where that is exact, i.e. where the 1x11 conv's bias is zero. With a non-zero bias the pair is not a single
  convolution: the 11x1 conv zero-pads the *biased* 1x11 output, so the bias contribution differs in the 5 rows next
  to the top and bottom border. Such pairs are left separable. The merge also costs 121 instead of 22 MACs per pixel.

Not folded (not exact, or not a win): ChunkConv's identity chunk and concat; the two CopyConv branches into one
grouped conv (its interleaved output order would have to propagate through the following stage).
"""
from __future__ import annotations

import argparse
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models._features import feature_take_indices

from zoo.registry import PretrainedSource, register_model

__all__ = [
    "RepNext",
    "convert_checkpoint",
    "FUSE_LEVELS",
    "repnext_m0",
    "repnext_m1",
    "repnext_m2",
    "repnext_m3",
    "repnext_m4",
    "repnext_m5",
]

FUSE_LEVELS = ("official", "full")

_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "hardswish": nn.Hardswish}


def _check_level(level: str) -> None:
    if level not in FUSE_LEVELS:
        raise ValueError(f"level must be one of {FUSE_LEVELS}, got {level!r}")


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = scale * x + shift (per channel)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _dw_conv(weight: torch.Tensor, bias: torch.Tensor, like: nn.Conv2d, padding) -> nn.Conv2d:
    """A depthwise Conv2d carrying ``weight`` (C, 1, kh, kw) and ``bias`` with ``like``'s stride."""
    c = weight.shape[0]
    conv = nn.Conv2d(c, c, tuple(weight.shape[2:]), stride=like.stride, padding=padding, groups=c, bias=True,
                     device=weight.device, dtype=weight.dtype)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


def _pad_to(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Zero-pad a (C, 1, kh, kw) kernel symmetrically to (C, 1, k, k)."""
    ph, pw = (k - weight.shape[2]) // 2, (k - weight.shape[3]) // 2
    return F.pad(weight, [pw, pw, ph, ph])


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    return conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)


# --------------------------------------------------------------------------------------------------------- layers


class ConvNorm(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d; ``fuse()`` -> one biased Conv2d. (N, Cin, H, W) -> (N, Cout, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=1, stride=1, padding=0, groups: int = 1):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                                          bias=False))
        self.add_module("norm", nn.BatchNorm2d(out_channels))

    @torch.no_grad()
    def fuse(self, level: str = "full", merge_large_kernel: bool = False) -> nn.Conv2d:
        """Fold the BatchNorm into the conv; returns a new Conv2d."""
        _check_level(level)
        conv, (scale, shift) = self.conv, _bn_affine(self.norm)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
        fused.weight.data.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.data.copy_(shift + scale * _bias(conv))
        return fused


class NormLinear(nn.Sequential):
    """BatchNorm1d + Linear (classifier head); ``fuse()`` -> one Linear. (N, C) -> (N, num_classes)."""

    def __init__(self, in_features: int, out_features: int, std: float = 0.02):
        super().__init__()
        self.add_module("norm", nn.BatchNorm1d(in_features))
        self.add_module("linear", nn.Linear(in_features, out_features))
        trunc_normal_(self.linear.weight, std=std)
        nn.init.zeros_(self.linear.bias)

    @torch.no_grad()
    def fuse(self, level: str = "full", merge_large_kernel: bool = False) -> nn.Linear:
        """Fold the BatchNorm into the Linear; returns a new Linear."""
        _check_level(level)
        scale, shift = _bn_affine(self.norm)
        lin = self.linear
        fused = nn.Linear(lin.in_features, lin.out_features, device=lin.weight.device, dtype=lin.weight.dtype)
        fused.weight.data.copy_(lin.weight * scale[None, :])
        fused.bias.data.copy_(lin.weight @ shift + lin.bias)
        return fused


def mlp(channels: int, hidden: int, act_layer: type[nn.Module]) -> nn.Sequential:
    """Channel mixer: 1x1 ConvNorm C->hidden, activation, 1x1 ConvNorm hidden->C (keys ``0`` and ``2``)."""
    return nn.Sequential(ConvNorm(channels, hidden), act_layer(), ConvNorm(hidden, channels))


class RepDWConvS(nn.Module):
    """Small multi-branch depthwise conv, fusable into one 3x3 depthwise conv. (N, C, H, W) -> (N, C, H/s, W/s).

    Branches: 3x3, 1x3, 3x1, 2x2 with dilation 2 (the four 3x3 corners). Stride 1: all four in parallel, all biased.
    Stride 2: the 1x3 and 3x1 run in series without biases (stride split between them).
    """

    def __init__(self, channels: int, stride: int = 1):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.stride = stride
        dw = dict(in_channels=channels, out_channels=channels, groups=channels)
        par = stride == 1
        self.conv_3_3 = nn.Conv2d(kernel_size=3, stride=stride, padding=1, **dw)
        self.conv_3_w = nn.Conv2d(kernel_size=(1, 3), stride=(1, stride), padding=(0, 1), bias=par, **dw)
        self.conv_3_h = nn.Conv2d(kernel_size=(3, 1), stride=(stride, 1), padding=(1, 0), bias=par, **dw)
        self.conv_2_2 = nn.Conv2d(kernel_size=2, stride=stride, padding=1, dilation=2, **dw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return self.conv_3_3(x) + self.conv_3_h(x) + self.conv_3_w(x) + self.conv_2_2(x)
        return self.conv_3_3(x) + self.conv_3_h(self.conv_3_w(x)) + self.conv_2_2(x)

    @torch.no_grad()
    def fuse(self, level: str = "full", merge_large_kernel: bool = False) -> nn.Conv2d:
        """All branches as one 3x3 depthwise conv (new module, keys ``weight``/``bias``)."""
        _check_level(level)
        w = self.conv_3_3.weight.clone()
        w[:, :, ::2, ::2] += self.conv_2_2.weight  # dilation-2 taps land on the corners
        b = _bias(self.conv_3_3) + _bias(self.conv_2_2)
        if self.stride == 1:
            w[:, :, 1:2, :] += self.conv_3_w.weight
            w[:, :, :, 1:2] += self.conv_3_h.weight
            b = b + _bias(self.conv_3_w) + _bias(self.conv_3_h)
        else:  # series of 1x3 then 3x1 without bias = outer product of the two kernels
            w += self.conv_3_h.weight * self.conv_3_w.weight
        return _dw_conv(w, b, self.conv_3_3, padding=1)


class RepDWConvM(nn.Module):
    """Medium multi-branch depthwise conv, fusable into one 7x7 depthwise conv. (N, C, H, W) -> (N, C, H/s, W/s).

    Parallel biased 7x7, 5x3, 3x5, plus bias-free series pairs 1x7 -> 7x1 and 1x5 -> 5x1.
    """

    def __init__(self, channels: int, stride: int = 1):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        dw = dict(in_channels=channels, out_channels=channels, groups=channels)
        self.conv_7_7 = nn.Conv2d(kernel_size=7, stride=stride, padding=3, **dw)
        self.conv_5_3 = nn.Conv2d(kernel_size=(5, 3), stride=stride, padding=(2, 1), **dw)
        self.conv_3_5 = nn.Conv2d(kernel_size=(3, 5), stride=stride, padding=(1, 2), **dw)
        self.conv_7_w = nn.Conv2d(kernel_size=(1, 7), stride=(1, stride), padding=(0, 3), bias=False, **dw)
        self.conv_7_h = nn.Conv2d(kernel_size=(7, 1), stride=(stride, 1), padding=(3, 0), bias=False, **dw)
        self.conv_5_w = nn.Conv2d(kernel_size=(1, 5), stride=(1, stride), padding=(0, 2), bias=False, **dw)
        self.conv_5_h = nn.Conv2d(kernel_size=(5, 1), stride=(stride, 1), padding=(2, 0), bias=False, **dw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv_7_7(x) + self.conv_5_3(x) + self.conv_3_5(x) + self.conv_7_h(self.conv_7_w(x))
                + self.conv_5_h(self.conv_5_w(x)))

    @torch.no_grad()
    def fuse(self, level: str = "full", merge_large_kernel: bool = False) -> nn.Conv2d:
        """All branches as one 7x7 depthwise conv (new module, keys ``weight``/``bias``)."""
        _check_level(level)
        w = (self.conv_7_7.weight + _pad_to(self.conv_5_3.weight, 7) + _pad_to(self.conv_3_5.weight, 7)
             + self.conv_7_h.weight * self.conv_7_w.weight
             + _pad_to(self.conv_5_h.weight * self.conv_5_w.weight, 7))
        b = _bias(self.conv_7_7) + _bias(self.conv_5_3) + _bias(self.conv_3_5)
        return _dw_conv(w, b, self.conv_7_7, padding=3)


def _large_kernel(channels: int) -> nn.Sequential:
    """Separable depthwise 1x11 -> 11x1, both biased (``conv_l``)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, (1, 11), padding=(0, 5), groups=channels),
        nn.Conv2d(channels, channels, (11, 1), padding=(5, 0), groups=channels),
    )


class ChunkConv(nn.Module):
    """Token mixer of a block: channels split in 4 chunks (identity, small, medium, large kernel), concatenated back
    in the same order. (N, C, H, W) -> (N, C, H, W); C divisible by 4."""

    def __init__(self, channels: int):
        super().__init__()
        if channels % 4:
            raise ValueError(f"ChunkConv channels must be divisible by 4, got {channels}")
        c = channels // 4
        self.conv_s = RepDWConvS(c)
        self.conv_m = RepDWConvM(c)
        self.conv_l = _large_kernel(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i, s, m, l = torch.chunk(x, 4, dim=1)
        return torch.cat((i, self.conv_s(s), self.conv_m(m), self.conv_l(l)), dim=1)

    @torch.no_grad()
    def fuse(self, level: str = "full", merge_large_kernel: bool = False) -> "ChunkConv":
        """In place (idempotent): branches -> single convs; optionally the exact 11x11 merge of ``conv_l``."""
        _check_level(level)
        for name in ("conv_s", "conv_m"):
            branch = getattr(self, name)
            if isinstance(branch, (RepDWConvS, RepDWConvM)):
                setattr(self, name, branch.fuse(level))
        if level == "full" and merge_large_kernel and isinstance(self.conv_l, nn.Sequential):
            first, second = self.conv_l[0], self.conv_l[1]
            if first.bias is None or not bool(torch.any(first.bias != 0)):
                w = second.weight * first.weight  # (C,1,11,1) * (C,1,1,11) -> (C,1,11,11)
                self.conv_l = _dw_conv(w, _bias(second), first, padding=5)
        return self


class CopyConv(nn.Module):
    """Downsampling token mixer: concat(RepDWConvS stride 2, RepDWConvM stride 2) block-wise.
    (N, C, H, W) -> (N, 2C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_s = RepDWConvS(channels, stride=2)
        self.conv_m = RepDWConvM(channels, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.conv_s(x), self.conv_m(x)), dim=1)

    @torch.no_grad()
    def fuse(self, level: str = "full", merge_large_kernel: bool = False) -> "CopyConv":
        """In place (idempotent): each branch -> one depthwise conv."""
        _check_level(level)
        for name in ("conv_s", "conv_m"):
            branch = getattr(self, name)
            if isinstance(branch, (RepDWConvS, RepDWConvM)):
                setattr(self, name, branch.fuse(level))
        return self


def _fuse_mlp(channel_mixer: nn.Sequential, level: str) -> None:
    for idx in (0, 2):
        if isinstance(channel_mixer[idx], ConvNorm):
            channel_mixer[idx] = channel_mixer[idx].fuse(level)


class MetaNeXtBlock(nn.Module):
    """x + channel_mixer(norm(token_mixer(x))). (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int, mlp_ratio: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.token_mixer = ChunkConv(channels)
        self.norm = nn.BatchNorm2d(channels)
        self.channel_mixer = mlp(channels, channels * mlp_ratio, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.channel_mixer(self.norm(self.token_mixer(x)))

    @torch.no_grad()
    def fuse(self, level: str = "full", merge_large_kernel: bool = False) -> "MetaNeXtBlock":
        """In place (idempotent). ``"full"`` also folds ``norm`` into ``channel_mixer.0`` (a 1x1 conv: exact)."""
        _check_level(level)
        self.token_mixer.fuse(level, merge_large_kernel)
        _fuse_mlp(self.channel_mixer, level)
        if level == "full" and isinstance(self.norm, nn.BatchNorm2d):
            scale, shift = _bn_affine(self.norm)
            pw = self.channel_mixer[0]
            pw.bias.data.add_(pw.weight[:, :, 0, 0] @ shift)
            pw.weight.data.mul_(scale[None, :, None, None])
            self.norm = nn.Identity()
        return self


class Downsample(nn.Module):
    """y = norm(CopyConv(x)); y + channel_mixer(y). (N, C, H, W) -> (N, 2C, H/2, W/2)."""

    def __init__(self, channels: int, mlp_ratio: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        out = channels * 2
        self.token_mixer = CopyConv(channels)
        self.norm = nn.BatchNorm2d(out)
        self.channel_mixer = mlp(out, out * mlp_ratio, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.token_mixer(x))
        return x + self.channel_mixer(x)

    @torch.no_grad()
    def fuse(self, level: str = "full", merge_large_kernel: bool = False) -> "Downsample":
        """In place (idempotent). ``"full"`` also folds ``norm`` into the two depthwise convs before it (exact:
        their zero padding acts on the input, the norm on their output)."""
        _check_level(level)
        self.token_mixer.fuse(level)
        _fuse_mlp(self.channel_mixer, level)
        if level == "full" and isinstance(self.norm, nn.BatchNorm2d):
            scale, shift = _bn_affine(self.norm)
            c = scale.shape[0] // 2
            for conv, sl in ((self.token_mixer.conv_s, slice(0, c)), (self.token_mixer.conv_m, slice(c, 2 * c))):
                conv.weight.data.mul_(scale[sl, None, None, None])
                conv.bias.data.mul_(scale[sl]).add_(shift[sl])
            self.norm = nn.Identity()
        return self


class RepNextStem(nn.Module):
    """Two stride-2 3x3 ConvNorms with an activation between. (N, in_chans, H, W) -> (N, C, H/4, W/4)."""

    def __init__(self, in_chans: int, channels: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.stem = nn.Sequential(
            ConvNorm(in_chans, channels // 2, 3, 2, 1),
            act_layer(),
            ConvNorm(channels // 2, channels, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


class RepNextStage(nn.Module):
    """Optional Downsample (C/2 -> C, stride 2) then ``depth`` MetaNeXtBlocks. (N, C_in, H, W) -> (N, C, H', W')."""

    def __init__(self, in_channels: int, channels: int, depth: int, mlp_ratio: int, act_layer, downsample: bool):
        super().__init__()
        self.downsample = Downsample(in_channels, mlp_ratio, act_layer) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[MetaNeXtBlock(channels, mlp_ratio, act_layer) for _ in range(depth)])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class RepNextClassifier(nn.Module):
    """Two NormLinear heads (``head``, ``head_dist``). (N, C) -> (N, K): their mean, or the tuple of both in
    ``train()`` with ``distillation=True``. ``fuse()`` -> one Linear holding the mean."""

    def __init__(self, dim: int, num_classes: int, distillation: bool = False, drop: float = 0.0):
        super().__init__()
        self.head_drop = nn.Dropout(drop)
        self.head = NormLinear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.distillation = distillation
        self.num_classes = num_classes
        self.head_dist = NormLinear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor):
        x = self.head_drop(x)
        x1, x2 = self.head(x), self.head_dist(x)
        if self.training and self.distillation and not torch.jit.is_scripting():
            return x1, x2
        return (x1 + x2) / 2

    @torch.no_grad()
    def fuse(self, level: str = "full", merge_large_kernel: bool = False) -> nn.Module:
        """One Linear whose weight and bias are the mean of the two BN-folded heads (Identity without classes)."""
        _check_level(level)
        if self.num_classes <= 0:
            return nn.Identity()
        a, b = self.head.fuse(level), self.head_dist.fuse(level)
        a.weight.data.add_(b.weight).div_(2)
        a.bias.data.add_(b.bias).div_(2)
        return a


# ---------------------------------------------------------------------------------------------------------- model


def _fuse_tree(module: nn.Module, level: str, merge_large_kernel: bool) -> None:
    for name, child in module.named_children():
        if hasattr(child, "fuse"):
            setattr(module, name, child.fuse(level, merge_large_kernel))
        else:
            _fuse_tree(child, level, merge_large_kernel)


class RepNext(nn.Module):
    """RepNeXt image classifier. (N, in_chans, H, W) float -> (N, num_classes) logits (H, W divisible by 32 keeps
    the official feature sizes; any size >= 32 runs).

    Args:
        in_chans: input channels (1 for Fashion-MNIST).
        embed_dim: stage widths; each divisible by 4 and twice the previous one.
        depth: blocks per stage.
        mlp_ratio: channel-mixer expansion.
        global_pool: ``"avg"`` or ``""`` (no pooling in ``forward_head``).
        num_classes: classifier outputs; 0 -> no classifier (``forward`` returns pooled features).
        act_layer: ``"gelu"`` (official), ``"relu"``, ``"silu"``, ``"hardswish"`` or an ``nn.Module`` class.
        distillation: in ``train()``, return ``(head, head_dist)`` logits instead of their mean (DeiT-style).
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim=(48,),
        depth=(2,),
        mlp_ratio: int = 2,
        global_pool: str = "avg",
        num_classes: int = 1000,
        act_layer="gelu",
        distillation: bool = False,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        embed_dim, depth = tuple(int(c) for c in embed_dim), tuple(int(d) for d in depth)
        if not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        if not embed_dim or len(embed_dim) != len(depth):
            raise ValueError(f"embed_dim and depth must be non-empty and of equal length, got {embed_dim}, {depth}")
        if any(c % 4 for c in embed_dim):
            raise ValueError(f"every embed_dim must be divisible by 4, got {embed_dim}")
        if any(b != 2 * a for a, b in zip(embed_dim, embed_dim[1:])):
            raise ValueError(f"each embed_dim must be twice the previous one (Downsample doubles), got {embed_dim}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        if isinstance(act_layer, str):
            if act_layer not in _ACTIVATIONS:
                raise ValueError(f"act_layer must be one of {sorted(_ACTIVATIONS)} or an nn.Module class, "
                                 f"got {act_layer!r}")
            act_layer = _ACTIVATIONS[act_layer]
        self.global_pool = global_pool
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.distillation = distillation
        self.drop_rate = drop_rate

        self.stem = RepNextStem(in_chans, embed_dim[0], act_layer)
        stages, self.feature_info, stride, prev = [], [], 4, embed_dim[0]
        for i, (c, d) in enumerate(zip(embed_dim, depth)):
            stages.append(RepNextStage(prev, c, d, mlp_ratio, act_layer, downsample=i > 0))
            stride *= 2 if i > 0 else 1
            self.feature_info.append(dict(num_chs=c, reduction=stride, module=f"stages.{i}"))
            prev = c
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = embed_dim[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = RepNextClassifier(embed_dim[-1], num_classes, distillation)

    # -- timm API ---------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise lr decay (timm convention)."""
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.downsample", (0,)),
                                                                           (r"^stages\.(\d+)\.blocks\.(\d+)", None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None, distillation: bool | None = None):
        """New (randomly initialised) classifier with ``num_classes`` outputs (0 -> none)."""
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        if distillation is not None:
            self.distillation = distillation
        self.num_classes = num_classes
        dev = next(self.parameters()).device
        if isinstance(self.head, RepNextClassifier):
            self.head = RepNextClassifier(self.num_features, num_classes, self.distillation).to(dev)
        else:  # already fused: a plain Linear head
            self.head = nn.Linear(self.num_features, num_classes).to(dev) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)  # a new BatchNorm head must follow the model's mode

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, embed_dim[-1], H/32, W/32)."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        """(N, C, h, w) -> pooled (N, C) if ``pre_logits`` else logits (N, num_classes) (tuple when distilling)."""
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Stage outputs (timm >= 1.0 API). ``indices``: last n stages (int), the given stages (list) or all (None).
        Returns the list of (N, C_i, H/r_i, W/r_i) tensors, or (final features, list) unless ``intermediates_only``.
        ``norm`` is accepted for API compatibility (RepNeXt has no final norm)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[: max_index + 1] if stop_early or intermediates_only else self.stages
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop stages after the last wanted index (and the head); returns the absolute indices kept."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if max_index < len(self.embed_dim) - 1:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or max_index < len(self.embed_dim) - 1:
            self.reset_classifier(0, "")
        return take

    # -- reparameterisation ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def fuse(self, level: str = "full", merge_large_kernel: bool = False) -> "RepNext":
        """Reparameterise in place for inference and return ``self`` (see the module docstring for the levels).

        ``"official"`` reproduces the authors' fused model (same state-dict keys); ``"full"`` folds every
        BatchNorm; ``merge_large_kernel`` merges exact 1x11/11x1 pairs. Idempotent; ``"full"`` after ``"official"``
        works. Call on a model in ``eval()`` semantics (BatchNorm running statistics are used).
        """
        _check_level(level)
        _fuse_tree(self, level, merge_large_kernel)
        return self


# -------------------------------------------------------------------------------------------------------- configs

_VARIANTS: dict[str, dict[str, Any]] = {
    "repnext_m0": dict(embed_dim=(40, 80, 160, 320), depth=(2, 2, 9, 1)),
    "repnext_m1": dict(embed_dim=(48, 96, 192, 384), depth=(3, 3, 15, 2)),
    "repnext_m2": dict(embed_dim=(56, 112, 224, 448), depth=(3, 3, 15, 2)),
    "repnext_m3": dict(embed_dim=(64, 128, 256, 512), depth=(3, 3, 13, 2)),
    "repnext_m4": dict(embed_dim=(64, 128, 256, 512), depth=(5, 5, 25, 4)),
    "repnext_m5": dict(embed_dim=(80, 160, 320, 640), depth=(7, 7, 35, 2)),
}

_CROP_PCT = 0.875  # the authors' main.py evaluates at resize 256 -> centre crop 224

_INPUT_SPEC = {
    "shape": (3, 224, 224),
    "dtype": "float32",
    "mean": tuple(IMAGENET_DEFAULT_MEAN),
    "std": tuple(IMAGENET_DEFAULT_STD),
    "interpolation": "bicubic",
    "crop_pct": _CROP_PCT,
}

_COMMON = dict(
    paper="arXiv:2406.16004",
    title="RepNeXt: A Fast Multi-Scale CNN using Structural Reparameterization",
    task="image-classification",
    license="apache-2.0",
    input_spec=_INPUT_SPEC,
    citation=(
        "@article{zhao2024repnext,\n  title={RepNeXt: A Fast Multi-Scale CNN using Structural Reparameterization},\n"
        "  author={Zhao, Mingshu and Luo, Yi and Ouyang, Yong},\n  journal={arXiv preprint arXiv:2406.16004},\n"
        "  year={2024}\n}"
    ),
)


def _cfg(**kwargs) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": _CROP_PCT,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.stem.0.conv",
        "classifier": ("head.head.linear", "head.head_dist.linear"),
        "license": "apache-2.0",
        "paper_ids": "arXiv:2406.16004",
        "paper_name": _COMMON["title"],
        "origin_url": "https://github.com/suous/RepNeXt",
        **kwargs,
    }


# timm reads this by name when a model of this module is registered with it (one untagged cfg per architecture).
default_cfgs: dict[str, dict[str, Any]] = {name: _cfg() for name in _VARIANTS}


def _create_repnext(variant: str, **kwargs) -> nn.Module:
    """Build ``variant`` through timm's builder (pretrained_cfg, features_only, out_indices, feature_cls)."""
    if kwargs.pop("pretrained", False):
        raise ValueError(
            f"{variant}: load weights with zoo.create_model('{variant}.<tag>', pretrained=True) (see "
            "zoo.list_pretrained('repnext*')) or convert the authors' checkpoint with convert_checkpoint()"
        )
    pretrained_cfg = kwargs.pop("pretrained_cfg", None) or default_cfgs[variant]
    overlay = kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("cache_dir", None)
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        RepNext,
        variant,
        pretrained=False,
        pretrained_cfg=pretrained_cfg,
        pretrained_cfg_overlay=overlay,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **{**_VARIANTS[variant], **kwargs},
    )


# ------------------------------------------------------------------------------------------------ registry entries


@register_model(
    **_COMMON,
    pretrained={
        "fmnist": PretrainedSource(
            repo_id="zoo-models/repnext_m0.fmnist",
            overrides={"num_classes": 10, "in_chans": 1},
            dataset="fashion_mnist",
            sha256="7ef063a6f76276130cbfd16ff8d593a6c9afa0b53a97bcebd9f586801cb9a2c1",  # hub/zoo-models/repnext_m0.fmnist
            metrics={"test/acc1": 0.9337, "test/acc5": 0.9983},
        )
    },
)
def repnext_m0(*, num_classes: int = 1000, in_chans: int = 3, distillation: bool = False, drop_rate: float = 0.0,
               **kwargs) -> nn.Module:
    """RepNeXt-M0: widths 40-320, depths 2/2/9/1; 2.72M params (2.33M after the official fuse), 0.4 GMACs."""
    return _create_repnext("repnext_m0", num_classes=num_classes, in_chans=in_chans, distillation=distillation,
                           drop_rate=drop_rate, **kwargs)


@register_model(**_COMMON)
def repnext_m1(*, num_classes: int = 1000, in_chans: int = 3, distillation: bool = False, drop_rate: float = 0.0,
               **kwargs) -> nn.Module:
    """RepNeXt-M1: widths 48-384, depths 3/3/15/2; 5.32M params (4.83M fused), 0.8 GMACs."""
    return _create_repnext("repnext_m1", num_classes=num_classes, in_chans=in_chans, distillation=distillation,
                           drop_rate=drop_rate, **kwargs)


@register_model(**_COMMON)
def repnext_m2(*, num_classes: int = 1000, in_chans: int = 3, distillation: bool = False, drop_rate: float = 0.0,
               **kwargs) -> nn.Module:
    """RepNeXt-M2: widths 56-448, depths 3/3/15/2; 7.05M params (6.47M fused), 1.1 GMACs."""
    return _create_repnext("repnext_m2", num_classes=num_classes, in_chans=in_chans, distillation=distillation,
                           drop_rate=drop_rate, **kwargs)


@register_model(**_COMMON)
def repnext_m3(*, num_classes: int = 1000, in_chans: int = 3, distillation: bool = False, drop_rate: float = 0.0,
               **kwargs) -> nn.Module:
    """RepNeXt-M3: widths 64-512, depths 3/3/13/2; 8.47M params (7.82M fused), 1.3 GMACs."""
    return _create_repnext("repnext_m3", num_classes=num_classes, in_chans=in_chans, distillation=distillation,
                           drop_rate=drop_rate, **kwargs)


@register_model(**_COMMON)
def repnext_m4(*, num_classes: int = 1000, in_chans: int = 3, distillation: bool = False, drop_rate: float = 0.0,
               **kwargs) -> nn.Module:
    """RepNeXt-M4: widths 64-512, depths 5/5/25/4; 14.08M params (13.34M fused), 2.3 GMACs."""
    return _create_repnext("repnext_m4", num_classes=num_classes, in_chans=in_chans, distillation=distillation,
                           drop_rate=drop_rate, **kwargs)


@register_model(**_COMMON)
def repnext_m5(*, num_classes: int = 1000, in_chans: int = 3, distillation: bool = False, drop_rate: float = 0.0,
               **kwargs) -> nn.Module:
    """RepNeXt-M5: widths 80-640, depths 7/7/35/2; 22.71M params (21.74M fused), 4.5 GMACs."""
    return _create_repnext("repnext_m5", num_classes=num_classes, in_chans=in_chans, distillation=distillation,
                           drop_rate=drop_rate, **kwargs)


def _register_with_timm() -> list[str]:
    """Make the variants visible to ``timm.create_model`` without touching names timm already has."""
    from timm.models import is_model, model_entrypoint
    from timm.models import register_model as timm_register

    added = []
    for name in _VARIANTS:
        if is_model(name):
            if getattr(model_entrypoint(name), "__module__", None) != __name__:
                warnings.warn(f"timm already has a model named {name!r}; leaving it alone", stacklevel=2)
            continue

        timm_register(_timm_entry(name))
        added.append(name)
    return added


def _timm_entry(variant: str):
    """A timm-style entrypoint ``fn(pretrained=False, **kwargs)`` named ``variant``."""

    def entry(pretrained: bool = False, **kwargs) -> nn.Module:
        return _create_repnext(variant, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = variant
    entry.__module__ = __name__
    entry.__doc__ = globals()[variant].__doc__
    return entry


_register_with_timm()



# ------------------------------------------------------------------------------------------------------ converter


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def _unwrap(obj: Any, use_ema: bool) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise TypeError(f"checkpoint must be a state dict or a dict holding one, got {type(obj).__name__}")
    keys = ("model_ema", "state_dict_ema", "model", "state_dict") if use_ema else ("model", "state_dict",
                                                                                      "model_state_dict")
    for key in keys:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner:
            return inner
    if use_ema:
        raise ValueError("use_ema=True but the checkpoint holds no 'model_ema'/'state_dict_ema' entry")
    return obj


def convert_checkpoint(path_or_state_dict, *, use_ema: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """Authors' RepNeXt checkpoint -> zoo state dict (same keys; load with ``strict=True``).

    Accepts a path to a release ``.pth`` (a training checkpoint with the weights under ``model``, e.g.
    ``repnext_m0_distill_300e.pth``), a timm-script ``.pth.tar`` (``state_dict``), or an already loaded dict.
    Loads with ``torch.load(weights_only=True)`` (``argparse.Namespace`` in ``args`` is allow-listed). Strips
    ``module.`` / ``_orig_mod.`` prefixes. The output is float tensors keyed like ``RepNext.state_dict()``: the
    training form, or the official fused form if that is what was saved (load that into a model after
    ``fuse(level="official")``). The release's fused ``*_fused.pt`` files are TorchScript programs, not weights, and
    are rejected: convert the non-fused ``.pth`` and call ``fuse()``.
    """
    if isinstance(path_or_state_dict, (str, Path)):
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise ValueError(f"path_or_state_dict: no such file {path}")
        if _is_torchscript_archive(path):
            raise ValueError(
                f"{path} is a TorchScript archive (e.g. the release's *_fused.pt), not a state dict; the zoo never "
                "executes TorchScript from a file. Convert the training checkpoint (repnext_*_distill_300e.pth) "
                "instead and call model.fuse()."
            )
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - re-raised with the reason
            raise ValueError(f"could not load {path} with torch.load(weights_only=True): {err}") from err
    elif isinstance(path_or_state_dict, Mapping):
        obj = path_or_state_dict
    else:
        raise TypeError(f"path_or_state_dict must be a path or a dict, got {type(path_or_state_dict).__name__}")

    state = _unwrap(obj, use_ema)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"checkpoint entry {key!r} is a {type(value).__name__}, expected a tensor")
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    if not any(k.startswith("stem.stem.0") for k in out):
        raise ValueError("checkpoint does not look like a RepNeXt state dict: no 'stem.stem.0.*' entries")
    return out
