"""How a global sequence of N tokens is laid out over R ranks: contiguous or zig-zag (load-balanced causal)."""
from __future__ import annotations

import torch

__all__ = ["contiguous_merge", "contiguous_split", "local_positions", "shard", "zigzag_merge", "zigzag_split"]

LAYOUTS = ("contiguous", "zigzag")


def _check_world(world: int) -> None:
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be an int >= 1, got {world!r}")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def segments(rank: int, world: int, n_local: int, layout: str) -> list[tuple[int, int]]:
    """Global (start, length) runs of a rank's shard, in local order (global positions increase along it)."""
    if layout == "contiguous":
        return [(rank * n_local, n_local)]
    c = n_local // 2
    return [(rank * c, c), ((2 * world - 1 - rank) * c, c)]


def local_positions(rank: int, world: int, n_local: int, layout: str = "contiguous") -> torch.Tensor:
    """(n_local,) int64 global positions of the rank's tokens, in local order."""
    _check_layout(layout)
    return torch.cat([torch.arange(s, s + n) for s, n in segments(rank, world, n_local, layout)])


def contiguous_split(x: torch.Tensor, world: int, dim: int = 2) -> list[torch.Tensor]:
    """Split x along ``dim`` (the sequence) into ``world`` equal contiguous shards (shard r goes to rank r)."""
    _check_world(world)
    n = x.shape[dim]
    if n % world:
        raise ValueError(f"sequence length {n} (dim {dim}) must be divisible by the world size {world}")
    return list(torch.chunk(x, world, dim=dim))


def contiguous_merge(shards: list[torch.Tensor], dim: int = 2) -> torch.Tensor:
    """Inverse of :func:`contiguous_split`."""
    return torch.cat(shards, dim=dim)


def zigzag_split(x: torch.Tensor, world: int, dim: int = 2) -> list[torch.Tensor]:
    """Zig-zag split for causal load balance: cut the sequence into 2R chunks; rank i holds chunks i and 2R-1-i.

    x (..., N, ...) with N divisible by 2R -> R shards of N/R tokens along ``dim``.
    """
    _check_world(world)
    n = x.shape[dim]
    if n % (2 * world):
        raise ValueError(
            f"zigzag layout needs the sequence length {n} (dim {dim}) divisible by 2 * world size = {2 * world}"
        )
    ch = torch.chunk(x, 2 * world, dim=dim)
    return [torch.cat([ch[i], ch[2 * world - 1 - i]], dim=dim) for i in range(world)]


def zigzag_merge(shards: list[torch.Tensor], dim: int = 2) -> torch.Tensor:
    """Inverse of :func:`zigzag_split`: R zig-zag shards -> the sequence in global order."""
    world = len(shards)
    if world == 0:
        raise ValueError("zigzag_merge needs at least one shard")
    halves = [torch.chunk(s, 2, dim=dim) for s in shards]
    return torch.cat([h[0] for h in halves] + [h[1] for h in reversed(halves)], dim=dim)


def shard(x: torch.Tensor, rank: int, world: int, layout: str = "contiguous", dim: int = 2) -> torch.Tensor:
    """The shard of the global tensor x that rank ``rank`` of ``world`` holds under ``layout``."""
    _check_layout(layout)
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    parts = contiguous_split(x, world, dim) if layout == "contiguous" else zigzag_split(x, world, dim)
    return parts[rank].contiguous()
