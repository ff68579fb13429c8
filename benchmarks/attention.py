"""Attention speed: ours (Triton) vs SDPA-flash, SDPA-cuDNN, FlexAttention (compiled) and ``auto``, side by side.

TFLOP/s are counted on the visited area: fwd FLOPs = 4 * B * H * Nq * Nk * D * (visible fraction of the mask),
fwd+bwd = 3.5x fwd (shared/notes/kernels.md). Timing: ``triton.testing.do_bench`` median on CUDA.

    python benchmarks/attention.py                      # every row of issue 3 (H200: several minutes)
    python benchmarks/attention.py --quick              # shorter timing, long rows shrunk
    python benchmarks/attention.py --only 'dense|window' # rows whose name matches the regex
    python benchmarks/attention.py --out docs/benchmarks/attention-h200.md --json dispatch.json
    python benchmarks/attention.py --device cpu --quick # smoke test of the script without a GPU

Columns: ``ours`` = ``attention(backend="triton")``; ``sdpa-flash`` = SDPA forced to FLASH_ATTENTION (dense rows) or
``torch.nn.attention.varlen.varlen_attn`` (FA2 varlen, also for single-sequence windows); ``sdpa-cudnn`` = SDPA
forced to CUDNN_ATTENTION (``is_causal`` or a dense boolean mask); ``flex`` = ``attention(backend="flex")``
(compiled ``flex_attention``, BlockMask built once outside the timing); ``auto`` = ``attention(backend="auto")``.
A backend that cannot run a row prints ``n/a (reason)``.

The script also prints (and with ``--json`` writes) the dispatch-table suggestion: per dispatch key, the backends
reachable from ``attention()`` (triton, sdpa, flex) ordered by measured fwd+bwd time.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout
from zoo.kernels import (
    BlockSparse,
    Causal,
    KeyPadding,
    SlidingWindow,
    Varlen,
    attention,
)
from zoo.kernels.attention.backends import Case
from zoo.kernels.attention.dispatch import case_key
from zoo.kernels.attention.masks import as_spec

from benchmarks.run_header import run_header

I32 = torch.int32
COLUMNS = ["ours", "sdpa-flash", "sdpa-cudnn", "flex", "auto"]
# which attention() backend each column stands for in the dispatch suggestion (sdpa-flash via varlen_attn and
# sdpa-cudnn forced are not reachable through attention(); the default SDPA choice on Hopper is cuDNN)
COLUMN_BACKEND = {"ours": "triton", "sdpa-cudnn": "sdpa", "flex": "flex"}


@dataclass
class Row:
    name: str
    b: int
    h: int
    n: int
    d: int
    make_mask: Callable[[torch.device], object]
    kind: str  # dense | causal | window | limited | varlen | blocksparse
    window: tuple[int, int] | None = None  # for varlen_attn (left, right)
    cu: list[int] | None = None  # document boundaries for varlen rows
    extra: dict = field(default_factory=dict)


def _doc_bounds(lengths):
    cu = [0]
    for x in lengths:
        cu.append(cu[-1] + x)
    return cu


def _ragged_lengths(total, n_docs, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n_docs, generator=g) ** 2 + 0.05
    lens = (w / w.sum() * total).floor().long()
    lens[-1] += total - int(lens.sum())
    return [int(x) for x in lens]


def _chunk_lists(b, h, n, chunk, earlier):
    nb = math.ceil(n / chunk)
    idx = torch.zeros(b, h, nb, earlier + 1, dtype=I32)
    cnt = torch.zeros(b, h, nb, dtype=I32)
    for qb in range(nb):
        blocks = list(range(max(0, qb - earlier), qb + 1))
        idx[:, :, qb, : len(blocks)] = torch.tensor(blocks, dtype=I32)
        cnt[:, :, qb] = len(blocks)
    return idx, cnt


def build_rows(quick: bool, device: torch.device) -> list[Row]:
    cpu = device.type == "cpu"
    rows: list[Row] = []
    dense_shapes = [(8, 16, 2048), (2, 16, 8192), (1, 16, 32768)]
    if cpu:
        dense_shapes = [(1, 2, 256)]
    elif quick:
        dense_shapes = [(8, 16, 2048), (2, 16, 8192)]
    for d in (64, 128):
        for (b, h, n) in dense_shapes:
            rows.append(Row(f"dense full B{b} H{h} N{n} D{d}", b, h, n, d, lambda dev: None, "dense"))
            rows.append(Row(f"dense causal B{b} H{h} N{n} D{d}", b, h, n, d, lambda dev: Causal(), "causal",
                            window=(-1, 0)))
    n_long = 512 if cpu else (8192 if quick else 32768)
    h_long = 2 if cpu else 16
    for w in ((64,) if cpu else (512, 2048)):
        rows.append(Row(f"sliding-causal W{w} B1 H{h_long} N{n_long} D128", 1, h_long, n_long, 128,
                        lambda dev, w=w: Causal() & SlidingWindow(w - 1, -1), "window", window=(w - 1, 0)))
    b_lc, n_lc = (2, 256) if cpu else (16, 2048)
    g = torch.Generator().manual_seed(0)
    lc_lens = torch.randint(n_lc // 2, n_lc + 1, (b_lc,), generator=g).to(I32)
    rows.append(Row(f"limited context L256/R32 + key padding B{b_lc} H8 N{n_lc} D64", b_lc, 8, n_lc, 64,
                    lambda dev: SlidingWindow(256, 32) & KeyPadding(lc_lens.to(dev)), "limited"))
    doc = 64 if cpu else (512 if quick else 2048)
    n_docs = 4 if cpu else 16
    n_var = doc * n_docs
    for label, lens in ((f"16 docs x {doc}", [doc] * n_docs), (f"ragged {n_docs} docs", _ragged_lengths(n_var, n_docs))):
        cu = _doc_bounds(lens)
        rows.append(Row(f"varlen {label} N{n_var} H{h_long} D128", 1, h_long, n_var, 128,
                        lambda dev, cu=cu: Varlen(torch.tensor(cu, dtype=I32, device=dev),
                                                  torch.tensor(cu, dtype=I32, device=dev)),
                        "varlen", window=(-1, -1), cu=cu))
    chunk = 64 if cpu else 1024
    n_bs = 1024 if cpu else (16384 if quick else 65536)
    idx, cnt = _chunk_lists(1, h_long, n_bs, chunk, 3)
    rows.append(Row(f"block-sparse chunk {chunk} own+3 earlier (causal) N{n_bs} H{h_long} D128", 1, h_long, n_bs,
                    128, lambda dev: BlockSparse(idx.to(dev), cnt.to(dev), chunk) & Causal(), "blocksparse"))
    return rows


# ---------------------------------------------------------------------------------------------------- timing
def bench_ms(fn, device, quick) -> float:
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=10 if quick else 25, rep=40 if quick else 100,
                                             return_mode="median"))
    fn()
    times = []
    for _ in range(3 if quick else 10):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def visible_fraction(spec, b, h, n, device) -> float:
    """Exact fraction of visible (query, key) pairs, counted in row chunks."""
    if spec is None:
        return 1.0
    hm = h if spec.depends_on_head else 1
    bm = b if spec.depends_on_batch else 1
    chunk = max(1, min(n, 2**28 // max(1, bm * hm * n)))
    total = 0
    for r0 in range(0, n, chunk):
        m = spec.dense(b, h, h, n, n, device, q_rows=(r0, min(n, r0 + chunk)))
        total += int(m.expand(bm, hm, -1, -1).sum())
    return total / (bm * hm * n * n)


def _sdpa_ctx(backend_name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, backend_name)])


def make_runner(col: str, row: Row, mask, q, k, v):
    """A zero-arg callable computing the output for column ``col``, or a string reason why it cannot."""
    import torch.nn.functional as F

    spec = as_spec(mask)
    if col in ("ours", "flex", "auto"):
        backend = {"ours": "triton", "flex": "flex", "auto": "auto"}[col]
        if col == "auto":  # each row is one fixed shape: measure auto's table choice, not the Flex shape budget
            from zoo.kernels.attention.dispatch import reset_flex_shape_budget

            reset_flex_shape_budget()
        return lambda: attention(q, k, v, mask, backend=backend)
    if q.device.type != "cuda":
        return "needs CUDA"
    if col == "sdpa-flash":
        if row.kind in ("dense", "causal"):
            def run():
                with _sdpa_ctx("FLASH_ATTENTION"):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=row.kind == "causal")
            return run
        if row.kind in ("window", "varlen"):
            try:
                from torch.nn.attention.varlen import varlen_attn
            except ImportError:
                return "torch.nn.attention.varlen missing"
            cu_list = row.cu or [0, row.n]
            cu = torch.tensor(cu_list, dtype=I32, device=q.device)
            mx = max(b - a for a, b in itertools.pairwise(cu_list))
            # packed (T, H, D) layout (B = 1): own leaf tensors, so the timed backward is varlen_attn's alone
            qp, kp, vp = (t.detach()[0].transpose(0, 1).contiguous().requires_grad_(True) for t in (q, k, v))
            win = row.window or (-1, -1)

            def run():
                o = varlen_attn(qp, kp, vp, cu, cu, mx, mx, window_size=win)
                return o.transpose(0, 1)[None]
            return run, (qp, kp, vp)
        return "no FA2 path for this mask"
    if col == "sdpa-cudnn":
        if row.kind in ("dense", "causal"):
            def run():
                with _sdpa_ctx("CUDNN_ATTENTION"):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=row.kind == "causal")
            return run
        nbytes = (row.b if spec.depends_on_batch else 1) * (row.h if spec.depends_on_head else 1) * row.n * row.n
        if nbytes > 2**32:
            return f"dense mask of {nbytes / 2**30:.0f} GiB"
        m = spec.dense(row.b, row.h, row.h, row.n, row.n, q.device)

        def run():
            with _sdpa_ctx("CUDNN_ATTENTION"):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        return run
    return "unknown column"


def measure(row: Row, col: str, device, dtype, quick) -> dict:
    """{'fwd': ms or reason, 'fwdbwd': ms or reason}."""
    res = {}
    g = torch.Generator(device="cpu").manual_seed(0)
    shape = (row.b, row.h, row.n, row.d)
    try:
        q, k, v = (torch.randn(shape, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
                   for _ in range(3))
        mask = row.make_mask(device)
        fn = make_runner(col, row, mask, q, k, v)
    except Exception as e:  # noqa: BLE001
        return {"fwd": _reason(e), "fwdbwd": _reason(e)}
    if isinstance(fn, str):
        return {"fwd": fn, "fwdbwd": fn}
    grad_inputs = (q, k, v)
    if isinstance(fn, tuple):
        fn, grad_inputs = fn
    do = torch.randn(row.b, row.h, row.n, row.d, generator=g).to(device=device, dtype=dtype)
    for pass_name in ("fwd", "fwdbwd"):
        try:
            if pass_name == "fwd":
                def step():
                    with torch.no_grad():
                        return fn()
            else:
                def step():
                    return torch.autograd.grad(fn(), grad_inputs, do)
            res[pass_name] = bench_ms(step, device, quick)
        except Exception as e:  # noqa: BLE001
            res[pass_name] = _reason(e)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return res


def _reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = re.sub(r"\s+", " ", msg)
    if "cannot run this case: " in msg:  # attention()'s capability errors: keep the reason only
        return msg.split("cannot run this case: ", 1)[1][:80]
    return f"{type(e).__name__}: {msg[:80]}"


def fmt(ms, flops) -> str:
    if isinstance(ms, str):
        return f"n/a ({ms})"
    tf = flops / (ms * 1e-3) / 1e12
    return f"{tf:.1f} ({ms:.3f} ms)" if tf >= 10 else f"{tf:.3g} ({ms:.3f} ms)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing; long rows shrunk")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--only", default=None, help="regex: run only rows whose name matches")
    ap.add_argument("--columns", default=",".join(COLUMNS), help="comma-separated subset of " + ",".join(COLUMNS))
    ap.add_argument("--out", default=None, help="write the markdown table (with date, card, versions) here")
    ap.add_argument("--json", default=None, help="write the dispatch suggestion + raw numbers here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if device.type == "cpu" and dtype == torch.bfloat16:
        dtype = torch.float32
    cols = [c for c in args.columns.split(",") if c]
    for c in cols:
        if c not in COLUMNS:
            ap.error(f"--columns: unknown column {c!r}; expected a subset of {COLUMNS}")
    # every row is a new shape for compiled Flex: lift Dynamo's recompile limits so it never falls back to eager
    cfg = torch._dynamo.config
    for name, val in (("recompile_limit", 256), ("cache_size_limit", 256), ("accumulated_recompile_limit", 4096),
                      ("accumulated_cache_size_limit", 4096)):
        if hasattr(cfg, name):
            try:
                setattr(cfg, name, max(getattr(cfg, name), val))
            except Exception:  # noqa: BLE001, S110 - renamed / read-only alias in this torch version
                pass

    rows = build_rows(args.quick, device)
    if args.only:
        rows = [r for r in rows if re.search(args.only, r.name)]
    header = run_header("attention benchmark", device, f", dtype {str(dtype).replace('torch.', '')}"
                                                       f"{', --quick' if args.quick else ''}")
    print(header, flush=True)

    results = []
    for row in rows:
        mask = row.make_mask(device)
        spec = as_spec(mask)
        frac = visible_fraction(spec, row.b, row.h, row.n, device)
        flops = 4.0 * row.b * row.h * row.n * row.n * row.d * frac
        entry = {"row": row.name, "visible": frac, "flops_fwd": flops, "ms": {}}
        t0 = time.time()
        for col in cols:
            entry["ms"][col] = measure(row, col, device, dtype, args.quick)
            r = entry["ms"][col]
            print(f"  {row.name} | {col}: fwd {fmt(r['fwd'], flops)}; fwd+bwd {fmt(r['fwdbwd'], 3.5 * flops)}",
                  flush=True)
        kind = spec.kind if spec is not None else "none"
        c = Case(device=device, dtype=dtype, batch=row.b, heads_q=row.h, heads_kv=row.h, nq=row.n, nk=row.n,
                 head_dim=row.d, head_dim_v=row.d, kind=kind, varlen=spec is not None and spec.is_varlen,
                 block_size=spec.block_size if spec is not None else 0, return_lse=False, needs_grad=True,
                 exporting=False)
        entry["key"] = "|".join(case_key(c))
        entry["seconds"] = round(time.time() - t0, 1)
        results.append(entry)

    table = render_table(results, cols, header)
    print()
    print(table)
    suggestion = dispatch_suggestion(results)
    print()
    print("dispatch suggestion (paste into zoo/kernels/attention/dispatch.py _TABLE, citing this run):")
    print(json.dumps(suggestion["table"], indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n\nDispatch suggestion (fwd+bwd order):\n\n```json\n"
                                  + json.dumps(suggestion["table"], indent=1) + "\n```\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, **suggestion, "rows": results}, indent=1))


def _best(entry, pass_name, cols):
    vals = {c: entry["ms"][c][pass_name] for c in cols if isinstance(entry["ms"].get(c, {}).get(pass_name), float)}
    return vals


def render_table(results, cols, header) -> str:
    lines = [f"# {header}", "",
             ("TFLOP/s on the visited area (time in ms). fwd FLOPs = 4·B·H·Nq·Nk·D·visible; fwd+bwd = 3.5× fwd. "
              "'ours/best peer' compares ours with the best of the other backends (auto excluded)."), "",
             "| workload | visible | pass | " + " | ".join(cols) + " | best peer | ours/best peer | auto/best |",
             "|" + "---|" * (len(cols) + 6)]
    for e in results:
        for pass_name, mult, label in (("fwd", 1.0, "fwd"), ("fwdbwd", 3.5, "fwd+bwd")):
            cells = [fmt(e["ms"][c][pass_name], mult * e["flops_fwd"]) for c in cols]
            vals = _best(e, pass_name, cols)
            peers = {c: t for c, t in vals.items() if c not in ("ours", "auto")}
            best_peer = min(peers, key=peers.get) if peers else None
            bp = best_peer or "—"
            ratio = (f"{peers[best_peer] / vals['ours']:.2f}×" if best_peer and "ours" in vals else "—")
            auto_r = (f"{min(vals[c] for c in vals if c != 'auto') / vals['auto']:.2f}×"
                      if "auto" in vals and len(vals) > 1 else "—")
            lines.append(f"| {e['row']} | {e['visible']:.3f} | {label} | " + " | ".join(cells)
                         + f" | {bp} | {ratio} | {auto_r} |")
    return "\n".join(lines)


def dispatch_suggestion(results) -> dict:
    """Per dispatch key, backends reachable from attention() ordered by fwd+bwd time (geometric mean of the time
    relative to the row's best, over the rows that map to the key); also the per-row winners."""
    per_key: dict[str, dict[str, list[float]]] = {}
    winners = []
    for e in results:
        for pass_name in ("fwd", "fwdbwd"):
            vals = {COLUMN_BACKEND[c]: t for c, t in _best(e, pass_name, list(COLUMN_BACKEND)).items()}
            if not vals:
                continue
            best = min(vals.values())
            winners.append({"row": e["row"], "pass": pass_name, "key": e["key"], "winner": min(vals, key=vals.get),
                            "ms": vals})
            if pass_name == "fwdbwd":
                for b, t in vals.items():
                    per_key.setdefault(e["key"], {}).setdefault(b, []).append(math.log(t / best))
    if not per_key:  # no fwd+bwd numbers (e.g. CPU smoke run): order by forward time instead
        for w in winners:
            best = min(w["ms"].values())
            for b, t in w["ms"].items():
                per_key.setdefault(w["key"], {}).setdefault(b, []).append(math.log(t / best))
    table = {}
    for key, scores in per_key.items():
        order = sorted(scores, key=lambda b: sum(scores[b]) / len(scores[b]))
        table[key] = order
    return {"table": table, "winners": winners}


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.exit(130)
