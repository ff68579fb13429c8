"""Sparse / linear op accuracy: nsa, moc_attention, gla (Triton) in bf16 / fp16 against an fp64 reference.

For every case and low-precision dtype: inputs are drawn in fp64 and rounded to the dtype. The oracle is the op's
own plain-PyTorch reference (``nsa_reference``, ``moc_reference``, ``gla_reference``) run in fp64 on the rounded
inputs (cast back). "Ours" is the Triton path: ``backend="triton"`` for nsa / moc_attention, ``mode="chunk"`` and
``mode="recurrent"`` for gla. Checked: every output (o; gla also the final state ht) and the gradient of every
differentiable input (q, k, v, gates for nsa; q, k, v for moc; q, k, v, g, initial_state for gla), with random
output cotangents.

Baseline ("the peer's own error"): the same reference called with the low-precision inputs, as PyTorch computes it.
The three references upcast to fp32 internally and hand back o and the gradients in the input dtype, so the
baseline is the fp32 math plus the rounding of each result to bf16 / fp16 (there is no low-precision eager version
of these ops to compare with; this is the "fp32 reference's error" form of the rule, and the documented factor is 2
plus the absolute floor below, i.e. about 3 rounding steps at the largest magnitude). NSA note: the reference
mean-pools k in the input dtype, so its selection sees the same rounded compressed keys as the op.

Criterion (as benchmarks/attention_accuracy.py): per tensor ``max|ours - ref| <= 2 * max|base - ref| + atol`` with
``atol = 2 * max|(ref + 0.3 - 0.3) - ref|`` in the low dtype (its rounding step near the values). Printed: max errors
ours / base per tensor, mean relative error ``mean|x - ref| / mean|ref|`` of ours for o, the worst ratio
ours / (2 * base + atol), and seconds per row.

Discrete routing: NSA's top-n block selection is a discontinuous function of the inputs; with i.i.d. random q, k the
block importances are tied to ~0.5 %, below bf16's rounding, so op and oracle would pick different blocks. The NSA
inputs therefore carry a planted, well-separated importance per selection block (a shared direction u in q, and
``r_s * u`` on the middle half of every selection block's keys, u removed from the key noise), which keeps every rank
gap ~40x above the rounding error. The "mlp" NSA cases compress v with a random ``BlockCompressor`` and k by mean
pooling (an MLP on k would scramble the planted ranking). MoC routes on fp32 means of the same (exactly
representable) values in op and oracle, so plain random inputs are used.

Reference cost (why the sizes): nsa_reference builds dense (B, Hq, T, T) fp64 masks / scores (2 GiB each at Hq 16,
T 4096; GPU rows use T 2048) and loops in Python over (query block, selection block, compression block), ~1M iterations at T 4096; it
is run on the GPU by making it the default device. moc_reference builds its (B, Hq, N, N) mask token by token in
Python (~2 s at N 8192, Hq 4; ~4x that at 16384), so N = 8192. gla_reference is a T-step autograd loop (T 4096:
~50k kernel launches per call). Each reference runs 4 times per case (oracle + baseline, 2 dtypes).

    python benchmarks/sparse_accuracy.py --out docs/benchmarks/sparse-accuracy-h200.md
    TRITON_INTERPRET=1 python benchmarks/sparse_accuracy.py --device cpu --quick   # smoke test, fp16, tiny sizes
"""
from __future__ import annotations

import argparse
import copy
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoo.kernels.gla import gla, gla_reference  # noqa: E402
from zoo.kernels.moc import moc_attention, moc_reference  # noqa: E402
from zoo.kernels.nsa import PRESETS, BlockCompressor, nsa, nsa_reference  # noqa: E402

from benchmarks.run_header import emit_report, run_header

F64 = torch.float64


@dataclass
class Case:
    """One accuracy case. ``make(gen)`` -> dict of fp64 CPU tensors; ``diff``: names that get gradients;
    ``reference(x, low)`` / ``ours[variant](x, low)`` -> tuple of outputs (``low``: the current low dtype, for
    dtype-dependent extras such as compressor weights)."""

    name: str
    make: Callable[[torch.Generator], dict]
    diff: tuple[str, ...]
    out_names: tuple[str, ...]
    reference: Callable
    ours: dict


# ----------------------------------------------------------------------------------------------------------- NSA
def _nsa_inputs(b, hq, hkv, t, d, sel_len, gen):
    """q, k, v, gates with a planted importance r_s per selection block (see the module docstring)."""
    u = torch.randn(d, generator=gen, dtype=F64)
    u /= u.norm()
    ns = math.ceil(t / sel_len)
    r = torch.randperm(ns, generator=gen).to(F64) * (6.0 / ns)  # logit range ~6 over the blocks
    q = torch.randn(b, hq, t, d, generator=gen, dtype=F64) + math.sqrt(d) * u
    k = torch.randn(b, hkv, t, d, generator=gen, dtype=F64)
    k -= (k @ u)[..., None] * u
    off = torch.arange(t) % sel_len
    mid = (off >= sel_len // 4) & (off < 3 * sel_len // 4)
    k += (r[torch.arange(t) // sel_len] * mid)[:, None] * u
    v = torch.randn(b, hkv, t, d, generator=gen, dtype=F64)
    gates = torch.sigmoid(torch.randn(b, hq, t, 3, generator=gen, dtype=F64))
    return {"q": q, "k": k, "v": v, "gates": gates}


def _nsa_case(name, b, hq, hkv, t, d, cfg, causal, mlp, device, seed):
    comp64 = None
    if mlp:
        torch.manual_seed(seed)
        comp64 = BlockCompressor(cfg["cmp_len"], d).to(device=device, dtype=F64)
    comps = {}

    def compressor(x, low):
        """(None, v compressor) with weights rounded to ``low``, in the dtype of x."""
        if comp64 is None:
            return None
        key = (low, x["q"].dtype)
        if key not in comps:
            comps[key] = copy.deepcopy(comp64).to(low).to(x["q"].dtype)
        return (None, comps[key])

    def ref(x, low):
        with torch.device(x["q"].device):  # the reference makes its index tensors with plain factories
            return (nsa_reference(x["q"], x["k"], x["v"], x["gates"], causal=causal, compressor=compressor(x, low),
                                  **cfg),)

    def ours(x, low):
        return (nsa(x["q"], x["k"], x["v"], x["gates"], causal=causal, compressor=compressor(x, low),
                    backend="triton", **cfg),)

    return Case(name, lambda gen: _nsa_inputs(b, hq, hkv, t, d, cfg["sel_len"], gen), ("q", "k", "v", "gates"),
                ("o",), ref, {"triton": ours})


# ----------------------------------------------------------------------------------------------------------- MoC
def _ragged_bounds(n, mean, gen, seq_bounds=()):
    """Chunk boundaries over [0, n): lengths uniform in [mean/4, 7*mean/4], plus every ``seq_bounds`` entry."""
    cuts, pos = {0, n, *seq_bounds}, 0
    while True:
        pos += int(torch.randint(mean // 4, 7 * mean // 4 + 1, (1,), generator=gen))
        if pos >= n:
            break
        cuts.add(pos)
    return torch.tensor(sorted(cuts), dtype=torch.int32)


def _moc_case(name, b, hq, hkv, n, d, chunk, top_k, causal_routing, anchor_frac, block, seed):
    gen = torch.Generator().manual_seed(seed)
    cu = _ragged_bounds(n, chunk, gen)
    anchors = (torch.rand(n, generator=gen) < anchor_frac) if anchor_frac else None
    if anchors is not None:
        anchors[: n // 64] = True  # a caption-like prefix plus scattered anchor tokens
    kw = dict(top_k=top_k, causal_routing=causal_routing, block_size=block)

    def make(g):
        return {"q": torch.randn(b, hq, n, d, generator=g, dtype=F64),
                "k": torch.randn(b, hkv, n, d, generator=g, dtype=F64),
                "v": torch.randn(b, hkv, n, d, generator=g, dtype=F64)}

    def dev(x):
        return cu.to(x["q"].device), None if anchors is None else anchors.to(x["q"].device)

    def ref(x, low):
        c, a = dev(x)
        return (moc_reference(x["q"], x["k"], x["v"], c, anchors=a, **kw),)

    def ours(x, low):
        c, a = dev(x)
        return (moc_attention(x["q"], x["k"], x["v"], c, anchors=a, backend="triton", **kw),)

    return Case(name, make, ("q", "k", "v"), ("o",), ref, {"triton": ours})


# ----------------------------------------------------------------------------------------------------------- GLA
def _gla_case(name, b, h, t, dk, dv, gate_div):
    def make(g):
        return {"q": torch.randn(b, h, t, dk, generator=g, dtype=F64),
                "k": torch.randn(b, h, t, dk, generator=g, dtype=F64),
                "v": torch.randn(b, h, t, dv, generator=g, dtype=F64),
                "g": F.logsigmoid(torch.randn(b, h, t, dk, generator=g, dtype=F64)) / gate_div,
                "h0": torch.randn(b, h, dk, dv, generator=g, dtype=F64)}

    def ref(x, low):
        return gla_reference(x["q"], x["k"], x["v"], x["g"], x["h0"], output_final_state=True)

    def run(mode):
        return lambda x, low: gla(x["q"], x["k"], x["v"], x["g"], x["h0"], output_final_state=True, mode=mode)

    return Case(name, make, ("q", "k", "v", "g", "h0"), ("o", "ht"), ref,
                {"chunk": run("chunk"), "recurrent": run("recurrent")})


def build_cases(quick: bool, cpu: bool, device) -> list[Case]:
    if cpu:  # tiny shapes for the Triton interpreter; NSA config scaled down with the paper's ratios
        small = dict(cmp_len=8, cmp_stride=4, sel_len=16, sel_count=4, window=24, init_blocks=1, local_blocks=1)
        vsmall = dict(cmp_len=16, cmp_stride=16, sel_len=16, sel_count=3, window=16, init_blocks=0, local_blocks=1)
        return [
            _nsa_case("nsa causal mean Hq4/Hkv1 T96 D16", 1, 4, 1, 96, 16, small, True, False, device, 0),
            _nsa_case("nsa bidir mlp(v) Hq3/Hkv1 T96 D16", 1, 3, 1, 96, 16, vsmall, False, True, device, 1),
            _moc_case("moc_attention ragged anchors causal top3 H2/1 N160 D16", 1, 2, 1, 160, 16, 24, 3, True,
                      0.05, 16, 2),
            _gla_case("gla B1 H2 T64 K=V=16 h0 g=logsig/16", 1, 2, 64, 16, 16, 16.0),
        ]
    t = 1024 if quick else 2048  # NSA reference: 57 s per dtype at T 4096 on the H200 (Python loops, ~T^2)
    paper = {f: getattr(PRESETS["paper"], f) for f in PRESETS["paper"].__dataclass_fields__}
    video = {f: getattr(PRESETS["videonsa"], f) for f in PRESETS["videonsa"].__dataclass_fields__}
    n_moc = 4096 if quick else 8192
    t_gla = 2048 if quick else 4096
    return [
        _gla_case(f"gla B2 H4 T{t_gla} K=V=128 h0 g=logsig/16", 2, 4, t_gla, 128, 128, 16.0),
        _gla_case(f"gla B2 H4 T{t_gla} K=V=128 h0 g=logsig (harsh)", 2, 4, t_gla, 128, 128, 1.0),
        _moc_case(f"moc_attention ragged anchors causal-routing top3 Hq4/Hkv2 N{n_moc} D128", 1, 4, 2, n_moc, 128,
                  512, 3, True, 0.02, 64, 4),
        _moc_case(f"moc_attention ragged anchors top3 Hq4/Hkv2 N{n_moc} D64", 1, 4, 2, n_moc, 64, 256, 3, False,
                  0.02, 64, 5),
        _nsa_case(f"nsa paper causal mean Hq16/Hkv1 T{t} D128", 1, 16, 1, t, 128, paper, True, False, device, 0),
        _nsa_case(f"nsa paper bidir mlp(v) Hq16/Hkv1 T{t} D128", 1, 16, 1, t, 128, paper, False, True, device, 1),
        _nsa_case(f"nsa videonsa bidir mean Hq7/Hkv1 T{t} D128", 1, 7, 1, t, 128, video, False, False, device, 2),
        _nsa_case(f"nsa videonsa causal mlp(v) Hq7/Hkv1 T{t} D64", 1, 7, 1, t, 64, video, True, True, device, 3),
    ]


# ------------------------------------------------------------------------------------------------------- checking
def run_with_grads(fn, x: dict, diff, douts, low):
    """Outputs and gradients (wrt ``diff`` inputs) of ``fn``; cotangents ``douts`` are cast to each output's dtype."""
    xs = {n: t.detach().clone().requires_grad_(n in diff) for n, t in x.items()}
    outs = fn(xs, low)
    pairs = [(o, d.to(o.dtype)) for o, d in zip(outs, douts) if o is not None]
    grads = torch.autograd.grad([o for o, _ in pairs], [xs[n] for n in diff], [d for _, d in pairs],
                                allow_unused=True)
    grads = [torch.zeros_like(xs[n]) if g is None else g for n, g in zip(diff, grads)]
    return [o.detach() for o in outs] + list(grads)


def errors(outs, refs, names, dtype):
    """Per tensor: max abs error, mean relative error and the absolute floor (2 rounding steps of ``dtype``)."""
    res = {}
    for name, x, r in zip(names, outs, refs):
        diff = (x.double() - r).abs()
        rl = r.to(dtype)
        step = ((rl + 0.3 - 0.3).double() - rl.double()).abs().max().item()
        res[name] = {"max": diff.max().item(), "rel": (diff.mean() / r.abs().mean().clamp_min(1e-30)).item(),
                     "atol": 2 * step}
    return res


def check_row(ours: dict, base: dict) -> tuple[float, bool]:
    """Worst ratio max_ours / (2 * max_base + atol) over the tensors, and whether it is <= 1 (NaN fails)."""
    worst = max(ours[t]["max"] / (2 * base[t]["max"] + ours[t]["atol"]) for t in ours)
    return worst, bool(worst <= 1.0)


def _reason(e):
    msg = re.sub(r"\s+", " ", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    return f"{type(e).__name__}: {msg[:100]}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default=None, help="default bfloat16,float16 (float16 on CPU)")
    ap.add_argument("--only", default=None, help="regex on case names")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    # CPU: fp16 through the Triton interpreter (same rule as on the GPU); bf16 is slow there, fp32 is optional
    dtypes = [getattr(torch, x) for x in (args.dtypes or ("float16" if cpu else "bfloat16,float16")).split(",")]
    cases = build_cases(args.quick, cpu, device)
    if args.only:
        cases = [c for c in cases if re.search(args.only, c.name)]
    header = run_header("sparse op accuracy vs fp64", device, ", --quick" if args.quick else "")
    print(header, flush=True)
    lines = [f"# {header}", "",
             ("max|x − ref| per tensor (ours / base); ref = the op's reference in fp64 on the same rounded inputs, "
              "base = that reference called with the low-precision inputs (fp32 math, results rounded to the "
              "dtype). Pass: ours ≤ 2·base + atol for every tensor. rel o = mean|o − ref| / mean|ref| of ours."), "",
             "| case | dtype | ours | ours / base per tensor | rel o | worst ours/(2·base+atol) | pass | s |",
             "|---|---|---|---|---|---|---|---|"]
    all_pass = True
    t_all = time.time()
    for ci, c in enumerate(cases):
        gen = torch.Generator().manual_seed(100 + ci)
        x64 = c.make(gen)
        probe = {n: t.to(device) for n, t in x64.items()}
        names = list(c.out_names) + ["d" + n for n in c.diff]
        for dtype in dtypes:
            t0 = time.time()
            low = {n: t.to(device=device, dtype=dtype) for n, t in x64.items()}
            back = {n: t.double() for n, t in low.items()}
            try:
                douts = _douts(c, probe, torch.Generator().manual_seed(7 + ci))
                refs = run_with_grads(c.reference, back, c.diff, douts, dtype)
                base = errors(run_with_grads(c.reference, low, c.diff, douts, dtype), refs, names, dtype)
            except Exception as e:  # noqa: BLE001
                lines.append(f"| {c.name} | {str(dtype)[6:]} | — | reference failed: {_reason(e)} | | | NO | |")
                all_pass = False
                print(lines[-1], flush=True)
                continue
            t_ref = time.time() - t0
            for variant, fn in c.ours.items():
                t1 = time.time()
                try:
                    ours = errors(run_with_grads(fn, low, c.diff, douts, dtype), refs, names, dtype)
                except Exception as e:  # noqa: BLE001
                    lines.append(f"| {c.name} | {str(dtype)[6:]} | {variant} | failed: {_reason(e)} | | | NO | |")
                    all_pass = False
                    print(lines[-1], flush=True)
                    continue
                worst, ok = check_row(ours, base)
                all_pass &= ok
                cells = ", ".join(f"{t} {ours[t]['max']:.1e}/{base[t]['max']:.1e}" for t in names)
                secs = time.time() - t1 + t_ref / len(c.ours)
                lines.append(f"| {c.name} | {str(dtype)[6:]} | {variant} | {cells} | {ours['o']['rel']:.1e} | "
                             f"{worst:.2f} | {'yes' if ok else 'NO'} | {secs:.1f} |")
                print(lines[-1], flush=True)
            del refs
            if device.type == "cuda":
                torch.cuda.empty_cache()
    lines += ["", f"all cases pass: {'yes' if all_pass else 'NO'} (total {time.time() - t_all:.0f} s)"]
    emit_report(lines, args.out)
    return 0 if all_pass else 1


def _douts(c: Case, probe: dict, gen: torch.Generator):
    """Random fp64 cotangents for the case's outputs (shapes from a cheap shape-only look at the inputs)."""
    q, v = probe["q"], probe["v"]
    b, hq, t, _ = q.shape
    shapes = {"o": (b, hq, t, v.shape[-1]), "ht": (b, hq, q.shape[-1], v.shape[-1])}
    return [torch.randn(shapes[n], generator=gen, dtype=F64).to(q.device) for n in c.out_names]


if __name__ == "__main__":
    sys.exit(main())
