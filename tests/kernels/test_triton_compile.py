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
