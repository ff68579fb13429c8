"""Attention accuracy on the GPU: ours (Triton) and SDPA in bf16 / fp16 against an fp64 reference.

Criterion (as in FlashAttention's tests): for o, dq, dk, dv,
``max|ours - ref| <= 2 * max|sdpa - ref| + atol`` where ``ref`` is the fp64 reference computed from the same
(rounded) inputs and ``atol = 2 * max|(ref + 0.3 - 0.3) - ref|`` in the low-precision dtype (its rounding step near
the values). Mean relative error ``mean|x - ref| / mean|ref|`` is printed too. The fp64 reference (forward and
backward) runs in chunks of queries, so N = 64k fits in memory.

    python benchmarks/attention_accuracy.py --out docs/benchmarks/attention-accuracy-h200.md
    python benchmarks/attention_accuracy.py --quick
    python benchmarks/attention_accuracy.py --device cpu --quick   # smoke test (sdpa only unless TRITON_INTERPRET=1)
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoo.kernels import (
    BlockSparse,
    Causal,
    KeyPadding,
    SlidingWindow,
    Varlen,
    attention,
)
from zoo.kernels.attention.masks import as_spec

from benchmarks.attention import (  # the speed benchmark's mask builders
    _chunk_lists,
    _doc_bounds,
)
from benchmarks.run_header import emit_report, run_header

I32 = torch.int32


@dataclass
class AccCase:
    name: str
    b: int
    hq: int
    hkv: int
    n: int
    d: int
    make_mask: Callable[[torch.device], object]


def build_cases(quick: bool, cpu: bool) -> list[AccCase]:
    if cpu:
        n_long, n_mid, b_lc, n_lc, doc, chunk = 512, 256, 2, 256, 64, 64
    elif quick:
        n_long, n_mid, b_lc, n_lc, doc, chunk = 16384, 4096, 16, 2048, 1024, 1024
    else:
        n_long, n_mid, b_lc, n_lc, doc, chunk = 65536, 16384, 16, 2048, 2048, 1024
    g = torch.Generator().manual_seed(0)
    lc_lens = torch.randint(n_lc // 2, n_lc + 1, (b_lc,), generator=g).to(I32)
    ragged = [int(x) for x in torch.randint(doc // 8, 2 * doc, (16,), generator=g)]
    ragged[-1] += 16 * doc - sum(ragged) if sum(ragged) < 16 * doc else 0
    cu_docs, cu_rag = _doc_bounds([doc] * 16), _doc_bounds(ragged)
    idx, cnt = _chunk_lists(1, 4, n_long, chunk, 3)
    lc_mask = (lambda dev: SlidingWindow(256, 32) & KeyPadding(lc_lens.to(dev)))
    n_s = 128 if cpu else 2048
    return [
        AccCase(f"dense full B2 H8 N{n_s} D64", 2, 8, 8, n_s, 64, lambda dev: None),
        AccCase(f"dense causal B2 H8 N{n_s} D128", 2, 8, 8, n_s, 128, lambda dev: Causal()),
        AccCase(f"dense causal GQA 16/2 B1 N{n_mid} D128", 1, 16, 2, n_mid, 128, lambda dev: Causal()),
        AccCase(f"dense causal B1 H4 N{n_long} D128", 1, 4, 4, n_long, 128, lambda dev: Causal()),
        AccCase(f"dense causal B2 H4 N{n_s} D256", 2, 4, 4, n_s, 256, lambda dev: Causal()),
        AccCase(f"dense causal B2 H4 N{n_s} D80", 2, 4, 4, n_s, 80, lambda dev: Causal()),
        AccCase(f"sliding-causal W512 B1 H4 N{n_long} D128", 1, 4, 4, n_long, 128,
                lambda dev: Causal() & SlidingWindow(511, -1)),
        AccCase(f"limited context L256/R32 + padding B{b_lc} H8 N{n_lc} D64", b_lc, 8, 8, n_lc, 64, lc_mask),
        AccCase(f"varlen 16 docs x {doc} causal H4 D128", 1, 4, 4, 16 * doc, 128,
                lambda dev: Varlen(torch.tensor(cu_docs, dtype=I32, device=dev),
                                   torch.tensor(cu_docs, dtype=I32, device=dev)) & Causal()),
        AccCase(f"varlen ragged 16 docs N{cu_rag[-1]} H4 D128", 1, 4, 4, cu_rag[-1], 128,
                lambda dev: Varlen(torch.tensor(cu_rag, dtype=I32, device=dev),
                                   torch.tensor(cu_rag, dtype=I32, device=dev))),
        AccCase(f"block-sparse chunk {chunk} own+3 causal B1 H4 N{n_long} D128", 1, 4, 4, n_long, 128,
                lambda dev: BlockSparse(idx.to(dev), cnt.to(dev), chunk) & Causal()),
    ]


@torch.no_grad()
def reference_fwd_bwd(q, k, v, do, spec, scale, chunk_elems=2**27):
    """fp64 o, dq, dk, dv over chunks of query rows (no autograd graph, so long sequences fit)."""
    q, k, v, do = (t.double() for t in (q, k, v, do))
    b, hq, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    grp = hq // hkv
    ke, ve = k.repeat_interleave(grp, 1), v.repeat_interleave(grp, 1)
    o = torch.empty(b, hq, nq, v.shape[-1], dtype=torch.float64, device=q.device)
    dq = torch.empty_like(q)
    dk = torch.zeros_like(ke)
    dv = torch.zeros_like(ve)
    chunk = max(1, min(nq, chunk_elems // max(1, b * hq * nk)))
    for s0 in range(0, nq, chunk):
        s1 = min(nq, s0 + chunk)
        qc, doc = q[:, :, s0:s1], do[:, :, s0:s1]
        s = torch.matmul(qc, ke.transpose(-1, -2)) * scale
        if spec is not None:
            s.masked_fill_(~spec.dense(b, hq, hkv, nq, nk, q.device, q_rows=(s0, s1)), float("-inf"))
        mx = s.amax(-1, keepdim=True)
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        p = torch.exp(s - mx)
        del s
        den = p.sum(-1, keepdim=True)
        p /= torch.where(den > 0, den, torch.ones_like(den))
        oc = torch.matmul(p, ve)
        o[:, :, s0:s1] = oc
        dp = torch.matmul(doc, ve.transpose(-1, -2))
        delta = (doc * oc).sum(-1, keepdim=True)
        ds = p * (dp - delta)
        del dp
        dq[:, :, s0:s1] = torch.matmul(ds, ke) * scale
        dk += torch.matmul(ds.transpose(-1, -2), qc) * scale
        dv += torch.matmul(p.transpose(-1, -2), doc)
        del p, ds
    dk = dk.view(b, hkv, grp, nk, d).sum(2)
    dv = dv.view(b, hkv, grp, nk, v.shape[-1]).sum(2)
    return o, dq, dk, dv


def run_backend(backend, q, k, v, do, mask):
    qq, kk, vv = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    o = attention(qq, kk, vv, mask, backend=backend)
    dq, dk, dv = torch.autograd.grad(o, (qq, kk, vv), do)
    return o.detach(), dq, dk, dv


def errors(outs, refs, dtype):
    res = {}
    for name, x, r in zip(("o", "dq", "dk", "dv"), outs, refs):
        diff = (x.double() - r).abs()
        step = ((r.to(dtype) + 0.3 - 0.3).double() - r.to(dtype).double()).abs().max().item()
        res[name] = {"max": diff.max().item(), "rel": (diff.mean() / r.abs().mean().clamp_min(1e-30)).item(),
                     "atol": 2 * step}
    return res


def _reason(e):
    msg = re.sub(r"\s+", " ", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    if "cannot run this case: " in msg:
        return msg.split("cannot run this case: ", 1)[1][:80]
    return f"{type(e).__name__}: {msg[:80]}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--only", default=None, help="regex on case names")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    dtypes = [getattr(torch, x) for x in args.dtypes.split(",")]
    if cpu:
        dtypes = [dt for dt in dtypes if dt != torch.bfloat16] or [torch.float16]
    cases = build_cases(args.quick, cpu)
    if args.only:
        cases = [c for c in cases if re.search(args.only, c.name)]
    header = run_header("attention accuracy vs fp64", device, ", --quick" if args.quick else "")
    print(header, flush=True)
    lines = [f"# {header}", "",
             ("max|x − ref| per tensor (ours / SDPA), ref = fp64 on the same rounded inputs. Pass: ours ≤ 2·SDPA + "
              "atol for o, dq, dk, dv (FlashAttention's test criterion). rel = mean|x − ref| / mean|ref| of ours."), "",
             ("| case | dtype | o ours / sdpa | dq ours / sdpa | dk ours / sdpa | dv ours / sdpa | rel (o, dq) | "
              "worst ours/(2·sdpa+atol) | pass |"),
             "|---|---|---|---|---|---|---|---|---|"]
    all_pass = True
    for c in cases:
        mask = c.make_mask(device)
        spec = as_spec(mask)
        g = torch.Generator().manual_seed(1)
        base = [torch.randn(c.b, h, c.n, c.d, generator=g) for h in (c.hq, c.hkv, c.hkv)]
        dob = torch.randn(c.b, c.hq, c.n, c.d, generator=g)
        for dtype in dtypes:
            t0 = time.time()
            q, k, v, do = (t.to(device=device, dtype=dtype) for t in (*base, dob))
            scale = 1 / math.sqrt(c.d)
            try:
                refs = reference_fwd_bwd(q, k, v, do, spec, scale)
            except Exception as e:  # noqa: BLE001
                lines.append(f"| {c.name} | {str(dtype)[6:]} | reference failed: {_reason(e)} | | | | | | |")
                print(lines[-1], flush=True)
                continue
            res = {}
            for backend in ("triton", "sdpa"):
                try:
                    res[backend] = errors(run_backend(backend, q, k, v, do, mask), refs, dtype)
                except Exception as e:  # noqa: BLE001
                    res[backend] = _reason(e)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            del refs
            ours, sd = res["triton"], res["sdpa"]
            cells, worst = [], None
            for t in ("o", "dq", "dk", "dv"):
                a = f"{ours[t]['max']:.2e}" if isinstance(ours, dict) else "n/a"
                s = f"{sd[t]['max']:.2e}" if isinstance(sd, dict) else "n/a"
                cells.append(f"{a} / {s}")
                if isinstance(ours, dict) and isinstance(sd, dict):
                    r = ours[t]["max"] / (2 * sd[t]["max"] + ours[t]["atol"])
                    worst = r if worst is None else max(worst, r)
            rel = f"{ours['o']['rel']:.1e}, {ours['dq']['rel']:.1e}" if isinstance(ours, dict) else "n/a"
            ok = worst is not None and worst <= 1.0
            if worst is not None:
                all_pass &= ok
            verdict = "yes" if ok else ("NO" if worst is not None else
                                        f"n/a ({sd if isinstance(sd, str) else ours})")
            lines.append(f"| {c.name} | {str(dtype)[6:]} | " + " | ".join(cells)
                         + f" | {rel} | {'—' if worst is None else f'{worst:.2f}'} | {verdict} |")
            print(lines[-1], f"({time.time() - t0:.1f} s)", flush=True)
    lines += ["", f"all measured cases pass: {'yes' if all_pass else 'NO'}"]
    emit_report(lines, args.out)
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
