"""Small torch.distributed helpers shared by ring and Ulysses attention."""
from __future__ import annotations

import torch
import torch.distributed as dist


def group_info(group) -> tuple[int, int]:
    """(rank in group, group size); raises when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("context-parallel attention needs torch.distributed initialised (init_process_group)")
    return dist.get_rank(group), dist.get_world_size(group)


def global_rank(group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def check_same_shapes(name_shapes: list[tuple[str, tuple[int, ...]]], group, world: int, device) -> None:
    """All-gather the shard shapes and raise ValueError naming the first tensor whose shape differs across ranks."""
    if world == 1:
        return
    flat = [d for _, s in name_shapes for d in s]
    mine = torch.tensor(flat, dtype=torch.int64, device=device)
    allv = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(allv, mine, group=group)
    allv = [a.tolist() for a in allv]
    i = 0
    for name, s in name_shapes:
        seen = {tuple(a[i:i + len(s)]) for a in allv}
        if len(seen) > 1:
            raise ValueError(f"{name} shards differ across ranks: shapes {sorted(seen)}; every rank must hold an "
                             "equal shard")
        i += len(s)


def check_qkv(q, k, v) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (B, H, N_local, D), got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, N_local, D), got shape {tuple(t.shape)}")
    if k.shape[2] != q.shape[2] or v.shape[2] != q.shape[2]:
        raise ValueError(
            f"q, k and v must hold the same local tokens (self-attention): N_local of q/k/v = "
            f"{q.shape[2]}/{k.shape[2]}/{v.shape[2]}"
        )


def p2p(sends: list[tuple[torch.Tensor, int]], recvs: list[tuple[torch.Tensor, int]], group, tag0: int = 0):
    """Start a batch of isend/irecv (peers are group ranks); returns the requests."""
    ops = []
    for i, (t, peer) in enumerate(sends):
        ops.append(dist.P2POp(dist.isend, t, global_rank(group, peer), group=group, tag=tag0 + i))
    for i, (t, peer) in enumerate(recvs):
        ops.append(dist.P2POp(dist.irecv, t, global_rank(group, peer), group=group, tag=tag0 + i))
    return dist.batch_isend_irecv(ops) if ops else []


def wait(reqs) -> None:
    for r in reqs:
        r.wait()
