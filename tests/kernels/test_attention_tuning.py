"""Autotune candidate rules of our attention kernels (zoo/kernels/attention/triton_common.prune_configs), as on a GPU.

Under the interpreter every kernel has one config, so the GPU lists are rebuilt here from the module tables."""
import triton

from zoo.kernels.attention import triton_common, triton_fwd


def _gpu_configs():
    tables = triton_fwd._FWD_FAST + triton_fwd._FWD_D256 + triton_fwd._FWD_SMALL
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st) for m, n, w, st in tables]


def _tiles(monkeypatch, **args):
    monkeypatch.setattr(triton_common, "INTERPRET", False)
    monkeypatch.delenv("ZOO_ATTN_TRITON_SINGLE_CONFIG", raising=False)
    base = dict(BLOCK_D=64, BLOCK_DV=64, BLOCK_SIZE=0, IS_FP32=False, CAUSAL=False, HAS_WL=False, HAS_WR=False,
                wl=-1, wr=-1)
    out = triton_common.prune_configs(_gpu_configs(), {}, {**base, **args}, triton_fwd._FWD_FAST,
                                      triton_fwd._FWD_D256, triton_fwd._FWD_SMALL)
    return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in out}


def test_dense_bf16_tries_only_the_fast_tiles(monkeypatch):
    assert _tiles(monkeypatch) == {(m, n) for m, n, _, _ in triton_fwd._FWD_FAST}


def test_fp32_tries_only_small_tiles(monkeypatch):
    """IEEE fp32 dots compile for 5-26 s per fast-tile config on sm_90 (benchmarks/triton_compile.py)."""
    assert _tiles(monkeypatch, IS_FP32=True) == {(m, n) for m, n, _, _ in triton_fwd._FWD_SMALL}


def test_narrow_bands_also_try_small_tiles(monkeypatch):
    narrow = _tiles(monkeypatch, HAS_WL=True, HAS_WR=True, wl=10, wr=2)
    assert (32, 32) in narrow and (128, 128) in narrow
    wide = _tiles(monkeypatch, HAS_WL=True, HAS_WR=True, wl=256, wr=32)
    assert (32, 32) not in wide
    assert (32, 32) in _tiles(monkeypatch, HAS_WL=True, wl=10, CAUSAL=True)  # sliding-causal, 11 keys
    assert (32, 32) not in _tiles(monkeypatch, HAS_WL=True, wl=10)  # left limit only: unbounded to the right
    assert (32, 32) not in _tiles(monkeypatch, HAS_WL=True, wl=511, CAUSAL=True)


def test_sparse_blocks_bound_the_tiles(monkeypatch):
    assert all(m <= 32 and n <= 32 for m, n in _tiles(monkeypatch, BLOCK_SIZE=32))
    assert all(m <= 64 and n <= 64 for m, n in _tiles(monkeypatch, BLOCK_SIZE=64))
