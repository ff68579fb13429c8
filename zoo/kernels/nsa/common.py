"""NSA configuration, presets and argument checks shared by the op and its reference."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class NSAConfig:
    """NSA knobs. cmp_len l / cmp_stride d: compression blocks ``[j*d, j*d + l)``; sel_len l' / sel_count n: selected
    blocks (n includes the forced ones); init_blocks / local_blocks: always-selected first / local blocks; window w."""

    cmp_len: int = 32
    cmp_stride: int = 16
    sel_len: int = 64
    sel_count: int = 16
    window: int = 512
    init_blocks: int = 1
    local_blocks: int = 2

    def __post_init__(self):
        for name, val in asdict(self).items():
            low = 0 if name in ("init_blocks", "window") else 1
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(f"{name} must be an int >= {low}, got {val!r}")
        if self.cmp_stride > self.cmp_len:
            raise ValueError(f"cmp_stride={self.cmp_stride} must be <= cmp_len={self.cmp_len} (blocks must cover "
                             "the sequence)")
        if self.init_blocks + self.local_blocks > self.sel_count:
            raise ValueError(f"sel_count={self.sel_count} must be >= init_blocks + local_blocks = "
                             f"{self.init_blocks + self.local_blocks}")


PRESETS = {
    # NSA paper (arXiv:2502.11089): l=32, d=16, l'=64, n=16 (1 initial + 2 local), w=512, learned MLP compressor.
    "paper": NSAConfig(32, 16, 64, 16, 512, 1, 2),
    # VideoNSA (arXiv:2510.02295): mean pooling over 64 (stride 64), 32 blocks of 64 (current block forced), w=256.
    "videonsa": NSAConfig(64, 64, 64, 32, 256, 0, 1),
}


def check_nsa_args(q, k, v, gates, cfg):
    if not isinstance(cfg, NSAConfig):
        raise TypeError(f"config must be an NSAConfig (or a preset name in {sorted(PRESETS)}), got {type(cfg).__name__}")
    for name, t in (("q", q), ("k", k), ("v", v), ("gates", gates)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D, got shape {tuple(t.shape)}")
    b, hq, t_, d = q.shape
    if k.shape[0] != b or k.shape[2] != t_ or k.shape[3] != d or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k, v must be (B={b}, Hkv, T={t_}, D={d}) / (B, Hkv, T, Dv), got {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if k.shape[1] == 0 or hq % k.shape[1]:
        raise ValueError(f"q's heads ({hq}) must be a multiple of k's heads ({k.shape[1]})")
    if gates.shape != (b, hq, t_, 3):
        raise ValueError(f"gates must be (B, Hq, T, 3) = {(b, hq, t_, 3)} (cmp, slc, win; after the sigmoid), got "
                         f"{tuple(gates.shape)}")


def resolve_config(config, overrides) -> NSAConfig:
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"config must be one of {sorted(PRESETS)} or an NSAConfig, got {config!r}")
        config = PRESETS[config]
    if not isinstance(config, NSAConfig):
        raise TypeError(f"config must be an NSAConfig or a preset name, got {type(config).__name__}")
    if overrides:
        config = NSAConfig(**{**asdict(config), **overrides})
    return config


def compress_blocks(x: torch.Tensor, cfg: NSAConfig, fn=None) -> torch.Tensor:
    """(B, H, T, D) -> (B, H, Nc, D) with Nc = (T - l) // d + 1 complete blocks (0 when T < l).
    ``fn`` maps (B, H, Nc, l, D) -> (B, H, Nc, D); None = mean pooling."""
    b, h, t, d = x.shape
    if t < cfg.cmp_len:
        return x.new_zeros(b, h, 0, d)
    blocks = x.unfold(2, cfg.cmp_len, cfg.cmp_stride).transpose(-1, -2)  # (B, H, Nc, l, D)
    return blocks.mean(3) if fn is None else fn(blocks)


def window_bounds(cfg: NSAConfig, causal: bool) -> tuple[int, int]:
    """(left, right) of the sliding window: causal = last w tokens; non-causal = w tokens centred on the query."""
    w = cfg.window
    return (w - 1, 0) if causal else (w // 2, w - 1 - w // 2)
