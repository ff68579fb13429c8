"""Compile every Triton kernel of ``zoo.kernels`` for the H200 (sm_90) on a machine without a GPU.

Why: the interpreter (``TRITON_INTERPRET=1``) that CI tests the kernels with never compiles them, so a kernel that
takes minutes to compile, or asks for more shared memory than the card has, passes every CPU test and only fails on
the GPU (the first GLA kernels took ~20 s per autotune config and stalled two H200 calls, 2026-11-29).

How: each workload below calls the ops' Python launchers on small CPU tensors with Triton's autotuner patched to
record its launches (argument values, and the GPU autotune configs after pruning) instead of running them. Every
recorded (kernel, specialisation, config) is then compiled ahead of time with ``triton.compile`` for
``GPUTarget("cuda", 90, 32)`` in a fresh cache, specialised by Triton's own argument binder as a launch would be
(pointer / int divisibility, so the same vectorisation, pipelining and shared memory); ptxas ships with the wheel. Printed: compile seconds and
shared memory per config; exit status 1 when a compile fails, exceeds ``--max-seconds`` or needs more than
``--max-shared-kb`` (the H200's 227 KB per block by default).

    python benchmarks/triton_compile.py                     # every workload
    python benchmarks/triton_compile.py --only gla          # regex on workload names
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # GPU autotune config lists; must be set before the kernels are imported
os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="zoo-triton-aot-"))  # measure real compiles

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

H200 = GPUTarget("cuda", 90, 32)
H200_SHARED_KB = 227

@dataclass
class Launch:
    """One recorded autotuned launch: the JIT function, its argument values and the configs to compile."""

    workload: str
    fn: object
    args: dict
    configs: list


@contextmanager
def record_launches(workload: str, out: list):
    """Within the block, autotuned kernel launches are appended to ``out`` as :class:`Launch` and not run."""
    original = Autotuner.run

    def run(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args))
        try:
            out.append(Launch(workload, self.fn, {**self.nargs, **kwargs}, self.prune_configs(kwargs)))
        finally:
            self.nargs = None

    Autotuner.run = run
    try:
        yield
    finally:
        Autotuner.run = original


_BINDERS: dict = {}


def jit_specialised(fn, values: dict, options: dict):
    """(ASTSource, options) exactly as ``JITFunction.run`` would compile ``fn`` for these argument values on an
    sm_90 device: Triton's own binder derives the specialisation (16-byte divisibility of pointers and ints, ints
    equal to 1 as constants), which decides vectorised loads, async-copy pipelining and so shared memory."""
    backend = make_backend(H200)
    binder = _BINDERS.get(fn)
    if binder is None:
        binder = _BINDERS[fn] = create_function_from_signature(fn.signature, fn.params, backend)
    args = [values.get(p.name, p.default) for p in fn.params]
    bound, specialization, _ = binder(*args, **options)
    opts, sig, const, attrs = fn._pack_args(backend, options, bound, specialization, None)
    return ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs), opts.__dict__


def compile_launch(launch: Launch):
    """Yield (config text, seconds, shared KB, error or None) for every config of ``launch``."""
    for cfg in launch.configs:
        values = {**launch.args, **cfg.all_kwargs()}
        text = " ".join(f"{k}={v}" for k, v in cfg.kwargs.items()) + f" w{cfg.num_warps} s{cfg.num_stages}"
        options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
        if cfg.maxnreg is not None:
            options["maxnreg"] = cfg.maxnreg
            text += f" r{cfg.maxnreg}"
        t0 = time.perf_counter()
        try:
            src, opts = jit_specialised(launch.fn, values, options)
            kernel = triton.compile(src, target=H200, options=opts)
            yield text, time.perf_counter() - t0, kernel.metadata.shared / 1024, None
        except Exception as e:  # noqa: BLE001 - reported as a failing row
            yield text, time.perf_counter() - t0, float("nan"), f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"


# ---------------------------------------------------------------------------------------------------- workloads
def _attention(dtype, d, dv=None, n=256, **mask):
    from zoo.kernels.attention.triton_bwd import attention_bwd
    from zoo.kernels.attention.triton_fwd import attention_fwd

    b, h = 1, 2
    q, k = (torch.randn(b, h, n, d, dtype=dtype) for _ in range(2))
    v = torch.randn(b, h, n, dv or d, dtype=dtype)
    o, lse = attention_fwd(q, k, v, scale=d ** -0.5, **mask)
    attention_bwd(torch.randn_like(o), q, k, v, o, lse, scale=d ** -0.5, **mask)


def _atomic_dq(fn):
    """Run ``fn`` with the block-sparse backward's dq inside the dk/dv kernel (ZOO_ATTN_ATOMIC_DQ=1)."""
    old = os.environ.get("ZOO_ATTN_ATOMIC_DQ")
    os.environ["ZOO_ATTN_ATOMIC_DQ"] = "1"
    try:
        fn()
    finally:
        if old is None:
            del os.environ["ZOO_ATTN_ATOMIC_DQ"]
        else:
            os.environ["ZOO_ATTN_ATOMIC_DQ"] = old


def _fwd_ws(fn):
    """Run ``fn`` with the forward's warp-specialised main loop (ZOO_ATTN_FWD_WS=1)."""
    old = os.environ.get("ZOO_ATTN_FWD_WS")
    os.environ["ZOO_ATTN_FWD_WS"] = "1"
    try:
        fn()
    finally:
        if old is None:
            del os.environ["ZOO_ATTN_FWD_WS"]
        else:
            os.environ["ZOO_ATTN_FWD_WS"] = old


def _blocksparse_mask(n=256, bs=64):
    nb = n // bs
    idx = torch.arange(nb, dtype=torch.int32).expand(1, 2, nb, nb).contiguous()
    cnt = (torch.arange(nb, dtype=torch.int32) + 1).expand(1, 2, nb).contiguous()
    return dict(causal=True, block_indices=idx, block_counts=cnt, block_size=bs)


def _nsa_like_mask(n=4096, bs=64):
    """Block 0 and the own block for every query block: key block 0's transposed list holds every query block, so
    the dk/dv kernel takes its split (fp32 atomic) specialisation (n / bs = 64 query blocks > one 32-entry segment)."""
    nb = n // bs
    own = torch.arange(nb, dtype=torch.int32)
    idx = torch.stack([torch.zeros_like(own), own], -1).expand(1, 2, nb, 2).contiguous()
    cnt = (1 + (own > 0).to(torch.int32)).expand(1, 2, nb).contiguous()
    return dict(causal=True, block_indices=idx, block_counts=cnt, block_size=bs)


def _attention_packed(dtype, d, n=256, bs=64, group=4):
    """Block-sparse lists shared by the KV group (Hb = Hkv) with head packing on (PACK_GQA_HEADS): the forward and
    dq kernels take their PACK > 1 specialisation (block 64: PACK 2, 128-row tiles)."""
    from unittest import mock

    from zoo.kernels.attention import triton_common
    from zoo.kernels.attention.triton_bwd import attention_bwd
    from zoo.kernels.attention.triton_fwd import attention_fwd

    nb = n // bs
    q = torch.randn(1, group, n, d, dtype=dtype)
    k, v = (torch.randn(1, 1, n, d, dtype=dtype) for _ in range(2))
    mask = dict(causal=True, block_size=bs,
                block_indices=torch.arange(nb, dtype=torch.int32).expand(1, 1, nb, nb).contiguous(),
                block_counts=(torch.arange(nb, dtype=torch.int32) + 1).expand(1, 1, nb).contiguous())
    with mock.patch.object(triton_common, "PACK_GQA_HEADS", True):
        o, lse = attention_fwd(q, k, v, scale=d ** -0.5, **mask)
        attention_bwd(torch.randn_like(o), q, k, v, o, lse, scale=d ** -0.5, **mask)


def _gla(dtype, dim, t=256):
    """Every GLA kernel: the fast- and slow-chunk kernels are both launched on every call (each skips the chunks of
    the other kind on the device), the recurrent kernel, and the autotune configs left after clamping to K, V."""
    from zoo.kernels.gla.chunk import gla_chunk_bwd, gla_chunk_fwd
    from zoo.kernels.gla.recurrent import gla_recurrent_fwd

    q, k, v = (torch.randn(1, 2, t, dim, dtype=dtype) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(1, 2, t, dim))
    s0 = torch.zeros(1, 2, dim, dim)
    o, ht = gla_chunk_fwd(q, k, v, g, s0)
    gla_chunk_bwd(torch.randn_like(o), torch.randn_like(ht), q, k, v, g, s0, ht)
    gla_recurrent_fwd(q, k, v, g, s0)


def _nsa_importance(dtype, d, causal=True, cmp_len=32, cmp_stride=16, sel_len=64):
    from unittest import mock

    from zoo.kernels.nsa import importance

    q = torch.randn(1, 16, 512, d, dtype=dtype)
    kc = torch.randn(1, 1, (512 - cmp_len) // cmp_stride + 1, d, dtype=dtype)
    lse = torch.zeros(1, 16, 512)
    with mock.patch.object(importance, "block_importance_supported", lambda *a: True):  # CPU tensors, not launched
        importance.block_importance(q, kc, lse, cmp_len=cmp_len, cmp_stride=cmp_stride, sel_len=sel_len,
                                    causal=causal, scale=d ** -0.5, heads_kv=1)


def _nsa_gates(dtype, dv):
    from zoo.kernels.nsa import op

    b, h, t, st = 1, 4, 64, 16
    gates = torch.rand(1, t, h, 3, dtype=dtype).transpose(1, 2)
    slc, win, full = (torch.randn(b, h, t, dv, dtype=dtype) for _ in range(3))
    parts = [torch.randn(15, b * h, t // st, dv, dtype=dtype).view(15, b, h, t // st, dv).permute(1, 2, 3, 0, 4),
             torch.randn(b, h, t // st, 1, dv, dtype=dtype)]
    op._gate_combine_triton(gates, slc, win, st, [(0, 15), (15, 16)], parts)  # residue layout (causal)
    op._gate_combine_triton(gates, slc, win, 0, None, [full])  # full layout (bidirectional)


@contextmanager
def record_plain_launches(workload: str, out: list):
    """Like :func:`record_launches` for plain ``@triton.jit`` kernels (no autotuner; ``num_warps``/``num_stages``
    passed at launch): appended to ``out`` with that one config, not run."""
    from triton.runtime.jit import JITFunction

    original = JITFunction.run

    def run(self, *args, grid=None, warmup=False, **kwargs):
        opts = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        cfg = triton.Config({}, num_warps=opts.get("num_warps", 4), num_stages=opts.get("num_stages", 3))
        out.append(Launch(workload, self, {**dict(zip(self.arg_names, args)), **kwargs}, [cfg]))

    JITFunction.run = run
    try:
        yield
    finally:
        JITFunction.run = original


def _rnnt(precision, j=512, v=1024, bias=True):
    """Fused RNN-T joint + loss, forward and backward (B2 T40 U12): the GPU tile shapes of ``_config``."""
    from zoo.kernels.rnnt.fused import _FusedRNNT

    b, t, u = 2, 40, 12
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.zeros(b, t, j, dtype=dtype, requires_grad=True)
    lab = torch.zeros(b, u + 1, j, dtype=dtype, requires_grad=True)
    w = torch.zeros(v, j, requires_grad=True)
    bb = torch.zeros(v, requires_grad=True) if bias else None
    y = torch.ones(b, u, dtype=torch.int32)
    lens = torch.tensor([t, t - 3], dtype=torch.int32), torch.tensor([u, u - 2], dtype=torch.int32)
    with torch.enable_grad():
        loss = _FusedRNNT.apply(a, lab, w, bb, y, *lens, 0, precision)
        loss.sum().backward()


WORKLOADS = {
    "attention bf16 D128 causal": lambda: _attention(torch.bfloat16, 128, causal=True),
    "attention bf16 D64 sliding window": lambda: _attention(torch.bfloat16, 64, causal=True, window_left=32),
    "attention bf16 D64/Dv32 limited context L10/R2 (transducer)": lambda: _attention(
        torch.bfloat16, 64, 32, window_left=10, window_right=2),
    "attention bf16 D128 block-sparse": lambda: _attention(torch.bfloat16, 128, **_blocksparse_mask()),
    "attention bf16 D128 block-sparse long lists (split dk/dv)": lambda: _attention(
        torch.bfloat16, 128, n=4096, **_nsa_like_mask()),
    "attention bf16 D128 causal warp-specialised forward": lambda: _fwd_ws(
        lambda: _attention(torch.bfloat16, 128, causal=True)),
    "attention bf16 D64 full warp-specialised forward": lambda: _fwd_ws(lambda: _attention(torch.bfloat16, 64)),
    "attention bf16 D128 block-sparse atomic dq (one-kernel backward)": lambda: _atomic_dq(
        lambda: _attention(torch.bfloat16, 128, **_blocksparse_mask())),
    "attention bf16 D128 block-sparse long lists atomic dq (split dk/dv)": lambda: _atomic_dq(
        lambda: _attention(torch.bfloat16, 128, n=4096, **_nsa_like_mask())),
    # names kept out of the CI test's "attention fp32" pattern
    "attention (head-packed) bf16 D128 block-sparse GQA4 (PACK 2)": lambda: _attention_packed(torch.bfloat16, 128),
    "attention (head-packed) fp16 D64 block-sparse GQA4 (PACK 2)": lambda: _attention_packed(torch.float16, 64),
    "attention (head-packed) fp32 D64 block-sparse GQA4 bs32 (PACK 4)": lambda: _attention_packed(
        torch.float32, 64, bs=32),
    "attention bf16 D256 full": lambda: _attention(torch.bfloat16, 256),
    "attention fp32 D64 causal": lambda: _attention(torch.float32, 64, causal=True),
    "gla bf16 K=V=128": lambda: _gla(torch.bfloat16, 128),
    "gla fp32 K=V=256": lambda: _gla(torch.float32, 256),
    "gla fp16 K=V=64 ragged T": lambda: _gla(torch.float16, 64, t=200),
    # B*H = 2 and 64 chunks: the two-level state passes (segment summaries, then segments from their start states)
    "gla bf16 K=V=128 T4096 two-level states": lambda: _gla(torch.bfloat16, 128, t=4096),
    "nsa importance bf16 D128": lambda: _nsa_importance(torch.bfloat16, 128),
    # other tile / prune paths of the same kernel (names kept out of the CI test's "nsa importance" pattern)
    "nsa (other paths) importance bf16 D128 videonsa bidirectional": lambda: _nsa_importance(
        torch.bfloat16, 128, causal=False, cmp_len=64, cmp_stride=64, sel_len=64),
    "nsa (other paths) importance fp16 D256": lambda: _nsa_importance(torch.float16, 256),
    "nsa (other paths) importance fp32 D64": lambda: _nsa_importance(torch.float32, 64),
    "nsa gate combine bf16 Dv128": lambda: _nsa_gates(torch.bfloat16, 128),
    "rnnt fused joint+loss bf16 J512 V1024": lambda: _rnnt("bf16"),
    "rnnt fused joint+loss tf32 J256 V29 no bias": lambda: _rnnt("tf32", 256, 29, False),
    "rnnt fused joint+loss bf16 J160 V29 (transducer small)": lambda: _rnnt("bf16", 160, 29),
    "rnnt fused joint+loss ieee J1024 V1024": lambda: _rnnt("ieee", 1024),
}


def _spec_key(fn, values: dict) -> tuple:
    """What a launch specialises on: tensor dtype and 16-byte alignment, int width / == 1 / divisibility by 16,
    constexpr values."""
    key = []
    for p in fn.params:
        v = values.get(p.name)
        if p.is_constexpr or v is None or isinstance(v, (bool, float, str)):
            key.append(repr(v))
        elif isinstance(v, torch.Tensor):
            key.append((str(v.dtype), v.data_ptr() % 16 == 0))
        else:
            key.append(("int", -2 ** 31 <= v < 2 ** 31, v == 1, v % 16 == 0))
    return tuple(key)


def record(only: str | None = None) -> list[Launch]:
    """Run the selected workloads with launches recorded (no kernel runs); distinct specialisations only."""
    launches, seen = [], set()
    for name, work in WORKLOADS.items():
        if only and not re.search(only, name):
            continue
        got: list[Launch] = []
        with record_launches(name, got), record_plain_launches(name, got), torch.no_grad():
            work()
        for launch in got:
            key = (launch.fn.__name__, _spec_key(launch.fn, launch.args))
            if key not in seen:
                seen.add(key)
                launches.append(launch)
    return launches


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="regex on workload names")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="compile-time budget per config (this machine)")
    ap.add_argument("--max-shared-kb", type=float, default=H200_SHARED_KB)
    args = ap.parse_args(argv)
    print(f"# sm_90 AOT compile, triton {triton.__version__}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, cache {os.environ['TRITON_CACHE_DIR']}")
    print("| workload | kernel | config | compile s | shared KB | ok |")
    print("|---|---|---|---|---|---|")
    failures = 0
    for launch in record(args.only):
        for text, secs, shared, err in compile_launch(launch):
            ok = err is None and secs <= args.max_seconds and shared <= args.max_shared_kb
            failures += not ok
            print(f"| {launch.workload} | {launch.fn.__name__} | {text} | {secs:.1f} | {shared:.0f} | "
                  f"{'yes' if ok else 'NO ' + (err or '')} |", flush=True)
    print(f"\n{failures} failing config(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
