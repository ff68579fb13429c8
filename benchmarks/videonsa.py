"""One VideoNSA decoder layer at the 7B shapes (hidden 3584, 28 / 4 heads, head dim 128, MLP 18944; random
weights, bf16, batch 1) against the same layer with dense causal attention, for prefill at 8K ... 128K tokens.

Rows per length: dense (zoo.kernels.attention ``sdpa`` under cuDNN, and under FlashAttention), VideoNSA as released
(the exact released function: 28 -> 64 head padding, released top-k, per-token selection, window, plus the dense
branch on the text rows and the uniform mean on the vision rows), and the clean routing (zoo.kernels.nsa on the
vision rows, no padding). Columns: whole-layer forward ms, attention-only ms, peak memory; then the released
function's per-branch breakdown (the paper finds compression the bottleneck at 128K).

    python benchmarks/videonsa.py --lengths 8192,32768,65536 --out docs/benchmarks/videonsa-h200.md
    python benchmarks/videonsa.py --device cpu --quick        # smoke run (tiny shapes)
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_header import emit_report, run_header  # noqa: E402

import zoo.models.videonsa as V  # noqa: E402

SHAPES_7B = dict(hidden=3584, heads=28, kv=4, head_dim=128, mlp=18944)
SHAPES_QUICK = dict(hidden=448, heads=28, kv=4, head_dim=16, mlp=256)


def video_layout(n: int, text_prefix: int = 64, text_suffix: int = 64, hw: int = 16, device="cpu"):
    """M-RoPE position ids (3, 1, n) of ``text_prefix`` text tokens, a video of hw x hw merged tokens per temporal
    patch filling the middle (temporal id step 2, Qwen2.5-VL at 2 fps), and ``text_suffix`` text tokens."""
    nv = n - text_prefix - text_suffix
    t = torch.arange(nv) // (hw * hw)
    h = (torch.arange(nv) // hw) % hw
    w = torch.arange(nv) % hw
    p0 = text_prefix
    vid = torch.stack([t * 2 + p0, h + p0, w + p0])
    after = int(vid.max()) + 1
    pre = torch.arange(text_prefix).expand(3, -1)
    suf = (torch.arange(text_suffix) + after).expand(3, -1)
    return torch.cat([pre, vid, suf], 1)[:, None].to(device)


def rope(pid, head_dim, section, device, dtype):
    inv = 1.0 / (1e6 ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    f = pid.float()[..., None] * inv  # (3, B, L, D/2)
    emb = torch.cat([f, f], -1)
    cos, sin = V.mrope_cos_sin(emb.cos(), emb.sin(), section)
    return cos.to(dtype), sin.to(dtype)


class _Timer:
    def __init__(self, device):
        self.device, self.acc = device, {}

    @contextlib.contextmanager
    def __call__(self, name):
        if self.device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            yield
            b.record()
            self.acc.setdefault(name, []).append((a, b))
        else:
            t0 = time.perf_counter()
            yield
            self.acc.setdefault(name, []).append(time.perf_counter() - t0)

    def ms(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return {k: sum(a.elapsed_time(b) for a, b in v) / len(v) for k, v in self.acc.items()}
        return {k: 1e3 * sum(v) / len(v) for k, v in self.acc.items()}


def _time(fn, device, reps):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            ts.append(1e3 * (time.perf_counter() - t0))
    return sorted(ts)[len(ts) // 2]


def _sdpa_ctx(kind):
    if kind is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel({"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[kind])


def bench(args) -> list[str]:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sh = SHAPES_QUICK if args.quick else SHAPES_7B
    lengths = [int(x) for x in args.lengths.split(",")]
    section = [16, 24, 24] if sh["head_dim"] == 128 else [2, 3, 3]
    backend = "triton" if device.type == "cuda" else "reference"
    torch.manual_seed(0)
    kw = dict(block_counts=args.block_counts, window_size=args.window, backend=backend)
    layer = V.VideoNSADecoderLayer(sh["hidden"], sh["heads"], sh["kv"], sh["mlp"], sh["head_dim"], **kw)
    layer = layer.to(device, dtype).eval()
    attn = layer.self_attn
    lines = [run_header("benchmarks/videonsa.py: one VideoNSA decoder layer, prefill", device,
                        f", {dtype}, B1, hidden {sh['hidden']}, heads {sh['heads']}/{sh['kv']}, D {sh['head_dim']}, "
                        f"block_counts {args.block_counts}, window {args.window}, block 64"), ""]
    rows = ["| tokens | variant | layer fwd (ms) | attention fwd (ms) | peak mem (GiB) | vs dense cuDNN (attention) |",
            "|---|---|---|---|---|---|"]
    brk = ["| tokens | compression | top-k | selection | window | gates | dense text rows + vision mean | other |",
           "|---|---|---|---|---|---|---|---|"]
    budget_end = time.time() + args.budget
    for n in lengths:
        if time.time() > budget_end:
            rows.append(f"| {n} | skipped (time budget) | | | | |")
            continue
        pid = video_layout(n, device=device)
        cos, sin = rope(pid, sh["head_dim"], section, device, dtype)
        x = torch.randn(1, n, sh["hidden"], device=device, dtype=dtype)
        variants = [("dense (cuDNN)", "dense", "cudnn"), ("dense (FlashAttention)", "dense", "flash"),
                    ("VideoNSA released", "released", None), ("VideoNSA clean routing", "clean", None)]
        if device.type != "cuda":
            variants = [("dense (SDPA)", "dense", None), ("VideoNSA released", "released", None)]
        dense_attn = None
        for label, mode, sdpa in variants:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            try:
                if mode == "dense":
                    def attn_fn():
                        q, k, v = attn.project(x, cos, sin)
                        with _sdpa_ctx(sdpa):
                            o = V.attention(q, k, v, V.Causal(), backend="sdpa")
                        return attn.o_proj(o.transpose(1, 2).reshape(1, n, -1))

                    def layer_fn():
                        h = x + attn_fn_ln()
                        return h + layer.mlp(layer.post_attention_layernorm(h))

                    def attn_fn_ln():
                        xn = layer.input_layernorm(x)
                        q, k, v = attn.project(xn, cos, sin)
                        with _sdpa_ctx(sdpa):
                            o = V.attention(q, k, v, V.Causal(), backend="sdpa")
                        return attn.o_proj(o.transpose(1, 2).reshape(1, n, -1))
                else:
                    attn.mode = mode

                    def attn_fn():
                        return attn(x, (cos, sin), pid)

                    def layer_fn():
                        return layer(x, (cos, sin), pid)
                with torch.no_grad():
                    t_layer = _time(layer_fn, device, args.reps)
                    t_attn = _time(attn_fn, device, args.reps)
                peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
                if dense_attn is None:
                    dense_attn = t_attn
                rows.append(f"| {n} | {label} | {t_layer:.2f} | {t_attn:.2f} | {peak:.2f} | "
                            f"{dense_attn / t_attn:.2f}x |")
                if mode == "released":
                    timer = _Timer(device)
                    V._STAGE_TIMER = timer
                    try:
                        with torch.no_grad():
                            for _ in range(max(1, args.reps // 2)):
                                attn(x, (cos, sin), pid)
                    finally:
                        V._STAGE_TIMER = None
                    ms = timer.ms()
                    known = sum(ms.get(k, 0.0) for k in ("compression", "topk", "selection", "window", "gates",
                                                         "dense"))
                    brk.append(f"| {n} | " + " | ".join(f"{ms.get(k, 0.0):.2f}" for k in (
                        "compression", "topk", "selection", "window", "gates", "dense")) +
                        f" | {max(0.0, t_attn - known):.2f} |")
            except torch.cuda.OutOfMemoryError:
                rows.append(f"| {n} | {label} | OOM | | | |")
            print(rows[-1], flush=True)
        attn.mode = "released"
        if args.out:  # partial table after every length (a suite time limit keeps what was measured)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text("\n".join(lines + rows + ["", "(partial)"]) + "\n")
    return lines + rows + ["", "Released function, attention forward by branch (ms):", ""] + brk


def parity(args) -> list[str]:
    """The released layer on this device (Triton kernels, fp32 and bf16) against the fixture made by running the
    authors' module (fp32, CPU): block-index agreement and errors of every branch."""
    from safetensors import safe_open

    device = torch.device(args.device)
    d = Path(args.parity)
    io = safe_open(str(d / "videonsa_h448_io.safetensors"), "pt")
    sd = safe_open(str(d / "videonsa_h448_state_dict.safetensors"), "pt")
    sd = {k[len("self_attn."):]: sd.get_tensor(k) for k in sd.keys() if k.startswith("self_attn.")}
    pid = io.get_tensor("position_ids")
    cos, sin = V.mrope_cos_sin(io.get_tensor("cos"), io.get_tensor("sin"), [2, 3, 3])
    x = io.get_tensor("attn.x")
    backend = "triton" if device.type == "cuda" else "reference"
    lines = [run_header("benchmarks/videonsa.py --parity: released VideoNSA attention vs the authors' module",
                        device, f", backend {backend}, fixture Config A (L 640, B 2)"), "",
             "| dtype | selection | indices equal (rows) | output max / mean abs err | nsa_out max | dense_out max "
             "| o_cmp max | lse_cmp max | o_slc max | o_swa max |", "|---|---|---|---|---|---|---|---|---|---|"]
    for dtype in (torch.float32, torch.bfloat16):
        for sel in ("lmms-eval", "ms-swift"):
            m = V.VideoNSAAttention(448, 28, 4, 16, block_counts=4, window_size=64, backend=backend, selection=sel,
                                    early_exit=False)
            m.load_state_dict(sd, strict=True)
            m = m.to(device, dtype).eval()
            m.record_parts = True
            with torch.no_grad():
                pe = (cos.to(device, dtype), sin.to(device, dtype))
                out = m(x.to(device, dtype), pe, pid.to(device)).float().cpu()
            p = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in m.last_parts.items()
                 if isinstance(v, torch.Tensor)}
            sw = ".swift" if sel == "ms-swift" else ""
            ref_idx = io.get_tensor(f"b2.attn{sw}.block_indices")
            rows = (p["block_indices"] == ref_idx).all(-1).float().mean().item()
            e = (out - io.get_tensor(f"b2.attn{sw}.output")).abs()
            err = lambda a, key: (a - io.get_tensor(key)).abs().max().item()  # noqa: E731
            if sel == "lmms-eval":
                extra = [err(p["nsa_out"].transpose(1, 2), "b2.attn.nsa_out"),
                         err(p["dense_out"].transpose(1, 2), "b2.attn.dense_out"),
                         err(p["o_cmp"][:1].transpose(1, 2), "b1.attn.o_cmp"), err(p["lse_cmp"][:1], "b1.attn.lse_cmp"),
                         err(p["o_slc"][:1].transpose(1, 2), "b1.attn.o_slc"),
                         err(p["o_swa"][:1].transpose(1, 2), "b1.attn.o_swa")]
            else:
                extra = [err(p["nsa_out"][:1].transpose(1, 2), "b1.attn.swift.nsa_out")] + [float("nan")] * 5
            lines.append(f"| {str(dtype).split('.')[-1]} | {sel} | {rows:.4f} | {e.max():.2e} / {e.mean():.2e} | "
                         + " | ".join(f"{v:.2e}" for v in extra) + " |")
            print(lines[-1], flush=True)
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--lengths", default="8192,32768,65536,131072")
    ap.add_argument("--block-counts", type=int, default=32)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--budget", type=float, default=1e9, help="seconds; later lengths are skipped past it")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke run)")
    ap.add_argument("--parity", default=None, metavar="FIXTURE_DIR",
                    help="instead of timing: check the released layer against shared/reference/videonsa")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.parity:
        emit_report(parity(args), args.out)
        return
    if args.quick:
        args.lengths = "512" if args.lengths == ap.get_default("lengths") else args.lengths
        args.block_counts, args.window, args.reps = 4, 64, 1
    emit_report(bench(args), args.out)


if __name__ == "__main__":
    main()
