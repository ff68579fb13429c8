"""benchmarks/triton_compile.py: the kernels compile for the H200 (sm_90) within the shared-memory limit, in CI.

The interpreter the other kernel tests use never compiles a kernel, so these run the AOT tool in a subprocess
(TRITON_INTERPRET=0: GPU autotune configs, real compiles with the wheel's ptxas; no GPU needed)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    env.pop("TRITON_CACHE_DIR", None)  # the tool compiles in a fresh cache of its own
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "triton_compile.py"), *args], env=env,
                          capture_output=True, text=True, timeout=600)


def _rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| workload")]


def test_gla_and_nsa_kernels_compile_for_sm90():
    res = _run("--only", "gla bf16|nsa importance", "--max-seconds", "60")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = _rows(res.stdout)
    kernels = {r[1] for r in rows}
    assert {"_state_fwd_kernel", "_fwd_o_kernel", "_bwd_dqdk_kernel", "_recurrent_fwd_kernel",
            "_block_prob_sums_kernel"} <= kernels
    assert all(r[5] == "yes" and float(r[4]) <= 227 for r in rows)


def test_fp32_attention_compiles_only_small_tiles():
    """fp32 IEEE dots took 5-26 s of compile per fast-tile config (the transducer's fp32 GPU stall)."""
    res = _run("--only", "attention fp32", "--max-seconds", "60")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = _rows(res.stdout)
    assert {r[1] for r in rows} == {"_attn_fwd_kernel", "_attn_bwd_dq_kernel", "_attn_bwd_dkdv_kernel"}
    for r in rows:
        tiles = dict(kv.split("=") for kv in r[2].split() if "=" in kv)
        assert int(tiles["BLOCK_M"]) <= 32 and int(tiles["BLOCK_N"]) <= 32, r


def test_limits_are_enforced():
    res = _run("--only", "nsa importance", "--max-shared-kb", "1")
    assert res.returncode == 1 and "NO" in res.stdout


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90():
    res = _run()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_compiles_with_the_launch_specialisation():
    """The AOT compile sees what a launch sees: 16-byte aligned pointers and ints divisible by 16 carry
    tt.divisibility (vectorised loads, async-copy pipelining), and ints equal to 1 become constants."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import torch, triton_compile as tc\n"
        "from zoo.kernels.gla.recurrent import _recurrent_fwd_kernel as k\n"
        "fn = k.fn\n"
        "vals = {n: torch.zeros(64, dtype=torch.bfloat16) for n in ('q', 'k', 'v', 'g', 'o')}\n"
        "vals.update(h0=torch.zeros(64), ht=torch.zeros(64), scale=0.1, T=4096, K=1, V=128, BK=128, BV=32,\n"
        "            HAS_H0=False)\n"
        "src, opts = tc.jit_specialised(fn, vals, {'num_warps': 4, 'num_stages': 2})\n"
        "names = [p.name for p in fn.params]\n"
        "div = {names[path[0]] for path, a in src.attrs.items() if ['tt.divisibility', 16] in [list(x) for x in a]}\n"
        "print(sorted(div)); vals['T'] = 1\n"
        "print(tc.jit_specialised(fn, vals, {'num_warps': 4, 'num_stages': 2})[0].signature['T'])\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    div, t_type = res.stdout.strip().splitlines()
    assert {"q", "k", "v", "g", "o", "ht", "T"} <= set(eval(div))  # noqa: S307 - our own printed list
    assert t_type == "constexpr"  # T == 1 is specialised to a constant, as at launch
