"""The MoC experiment: a small Wan-style DiT trained twice at equal steps (dense, MoC) on the multi-shot task.

    python -m zoo.moc_cli experiment --out runs/moc_exp              # GPU: ~45 s dense + equal steps MoC + metrics
    python -m zoo.moc_cli experiment --out /tmp/moc --smoke          # CPU smoke (tiny, seconds)

Steps: pre-generate a pool of scenes (``zoo.datasets.moc_video``); train ``moc_dit_small`` dense for
``--train-seconds`` and count its steps; train the MoC model (chunk = one frame, top-k 3, shot links, causal
routing, drop-off / drop-in) for the same number of steps from the same initialisation and batches; sample the test
captions with each (Euler + CFG) and with the dense model switched to MoC zero-shot; score them with
``zoo.tasks.video_gen.VideoMetrics`` (plus the real test videos as the ceiling); time one training step of both
against sequence length; write ``results.json``, ``moc_experiment.md`` (tables), sample strips (PNG + GIF) and the
MoC model in hub layout (``hub/zoo-models/moc_dit_small.multishot_fmnist``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_parser", "main", "run_experiment"]

MOC_ARGS = dict(attention="moc", moc_top_k=3, moc_block_size=64, moc_shot_links=True, moc_causal=True,
                moc_drop_off=0.5, moc_drop_in=0.5)


def _pool(ds, n: int, device, workers: int) -> dict[str, torch.Tensor]:
    """First ``n`` scenes of ``ds`` stacked on ``device``."""
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(ds, range(min(n, len(ds)))), batch_size=64, num_workers=workers)
    parts = [b for b in loader]
    return {k: torch.cat([p[k] for p in parts]).to(device) for k in parts[0]}


def _batch(pool, idx):
    return {k: v[idx] for k, v in pool.items()}


def train(model, pool, *, steps: int | None, seconds: float | None, batch: int, lr: float, seed: int, amp: bool,
          max_seconds: float = 1e9, log=print) -> dict[str, Any]:
    """AdamW + linear warm-up; batches drawn by a seeded generator (same sequence for every model). Stops after
    ``steps`` or ``seconds`` (whichever given) or ``max_seconds``. Returns steps, seconds, loss curve, step ms."""
    from zoo.tasks.video_gen import flow_matching_loss

    dev = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    g = torch.Generator().manual_seed(seed)
    gd = torch.Generator(device=dev).manual_seed(seed)
    n = pool["video"].shape[0]
    shots = pool["shots"][0].cpu()  # host copy: the layout is built without a device sync
    model.train()
    losses, stats, t0, step = [], {}, time.perf_counter(), 0
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    while True:
        el = time.perf_counter() - t0
        if (steps is not None and step >= steps) or (seconds is not None and el >= seconds) or el >= max_seconds:
            break
        idx = torch.randint(0, n, (batch,), generator=g).to(dev)
        b = _batch(pool, idx)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = flow_matching_loss(model, b["video"], b["context"], shots=shots, text_shot=b["text_shot"],
                                      generator=gd)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % 50 == 0 or step == 1:
            losses.append((step, float(loss.detach())))
            if hasattr(model, "moc_stats") and model.moc_stats():
                stats = model.moc_stats()
            if step % 500 == 0 or step == 1:
                log(f"  step {step} loss {float(loss.detach()):.4f} {time.perf_counter() - t0:.1f}s")
    sync()
    sec = time.perf_counter() - t0
    return {"steps": step, "seconds": sec, "step_ms": 1e3 * sec / max(step, 1), "loss_curve": losses,
            "final_loss": sum(x for _, x in losses[-4:]) / max(len(losses[-4:]), 1), "moc_stats": stats}


@torch.no_grad()
def generate(model, test, *, steps: int, guidance: float, amp: bool, seed: int = 0) -> torch.Tensor:
    from zoo.tasks.video_gen import sample_euler

    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    outs = []
    for i in range(0, test["video"].shape[0], 32):
        b = {k: v[i:i + 32] for k, v in test.items()}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            outs.append(sample_euler(model, b["context"], tuple(b["video"].shape), steps=steps, guidance=guidance,
                                     shots=test["shots"][0].cpu(), text_shot=b["text_shot"], generator=g).float().cpu())
    return torch.cat(outs)


def step_time_sweep(frames: list[int], *, amp: bool, budget_s: float, log=print) -> list[dict]:
    """Median fwd+bwd time of one training step (batch 1) of the small DiT, dense vs MoC, vs sequence length."""
    import zoo

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows, t_start = [], time.perf_counter()
    for f in frames:
        if time.perf_counter() - t_start > budget_s:
            break
        row = {"frames": f, "tokens": f * 64}
        for mode in ("dense", "moc"):
            try:
                torch.manual_seed(0)
                m = zoo.create_model("moc_dit_small", **(MOC_ARGS if mode == "moc" else {})).to(dev)
                x = torch.randn(1, 3, f, 32, 32, device=dev)
                ctx = torch.randn(1, 32, 32, device=dev)
                shots = torch.arange(f, device="cpu") // 4

                def one():
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                        y = m(x, torch.full((1,), 500.0, device=dev), ctx, shots=shots)
                    y.float().square().mean().backward()

                one()
                sync()
                ts = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    one()
                    sync()
                    ts.append(1e3 * (time.perf_counter() - t0))
                row[f"{mode}_ms"] = sorted(ts)[2]
                if mode == "moc":
                    row["sparsity"] = m.moc_stats().get("sparsity", float("nan"))
                del m
            except torch.OutOfMemoryError:
                row[f"{mode}_ms"] = float("nan")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        log(f"  sweep {row}")
        rows.append(row)
    return rows


def run_experiment(a) -> dict[str, Any]:
    import zoo
    from zoo.datasets.moc_video import MultiShotVideoDataModule
    from zoo.tasks.video_gen import VideoMetrics, save_video_strip

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() and not a.cpu else "cpu")
    amp = dev.type == "cuda"
    log = lambda *x: print(*x, flush=True)  # noqa: E731
    t_all = time.perf_counter()
    dm = MultiShotVideoDataModule(num_train=a.pool, num_test=a.num_test, seed=a.seed)
    workers = 0 if a.smoke else min(12, os.cpu_count() or 1)
    pool = _pool(dm.dataset("train"), a.pool, dev, workers)
    test = _pool(dm.dataset("test"), a.num_test, dev, workers)
    log(f"data: {pool['video'].shape[0]} train scenes, {test['video'].shape[0]} test scenes, "
        f"{time.perf_counter() - t_all:.1f}s")
    torch.manual_seed(a.seed)
    dense = zoo.create_model("moc_dit_small", **a.model_args).to(dev)
    init = {k: v.clone() for k, v in dense.state_dict().items()}
    moc_args = {**a.model_args, **MOC_ARGS}
    moc = zoo.create_model("moc_dit_small", **moc_args).to(dev)
    moc.load_state_dict(init)
    res: dict[str, Any] = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                           "torch": torch.__version__, "params": sum(p.numel() for p in dense.parameters()),
                           "moc_args": MOC_ARGS, "batch": a.batch, "lr": a.lr}
    log("train dense")
    res["train_dense"] = train(dense, pool, steps=a.steps or None, seconds=None if a.steps else a.train_seconds,
                               batch=a.batch, lr=a.lr, seed=a.seed, amp=amp, log=log)
    n = res["train_dense"]["steps"]
    log(f"train moc ({n} steps)")
    res["train_moc"] = train(moc, pool, steps=n, seconds=None, batch=a.batch, lr=a.lr, seed=a.seed, amp=amp,
                             max_seconds=a.max_moc_seconds, log=log)
    # FLOPs per sample per forward (all layers), counted and by the paper's formula.
    st = res["train_moc"]["moc_stats"]
    L = test["video"].shape[2] * 64
    hd = dense.dim // dense.num_heads
    from zoo.models.moc import moc_flops
    eq = moc_flops(L, hd, test["video"].shape[2], 3, 64.0)
    nl, nh = len(dense.blocks), dense.num_heads
    res["flops"] = {"tokens": L, "counted_moc_attn_per_fwd": st.get("flops_moc"), "dense_attn_per_fwd": st.get("flops_dense"),
                    "sparsity": st.get("sparsity"), "eq4_moc_per_fwd": eq["moc"] * nl * nh,
                    "eq4_dense_per_fwd": eq["dense"] * nl * nh}
    # Samples and metrics.
    clf = zoo.create_model("repnext_m0", pretrained=a.classifier).to(dev)
    metrics = VideoMetrics(clf, dm.cfg)
    tb = {k: v.cpu() for k, v in test.items()}
    real_feats = metrics.frame_features(tb["video"])
    res["metrics"] = {"real": {**metrics.compute(tb["video"], tb),
                               "frame_fd": _fd_split(real_feats)}}
    for name, model, mode in (("dense", dense, "dense"), ("moc", moc, "moc"), ("dense+moc zero-shot", dense, "moc")):
        t0 = time.perf_counter()
        if mode == "moc" and name.startswith("dense"):
            dense.set_attention("moc", top_k=3, block_size=64, shot_links=True, causal=True)
        gen = generate(model, test, steps=a.sample_steps, guidance=a.guidance, amp=amp, seed=a.seed)
        res["metrics"][name] = metrics.compute(gen, tb, real_frame_feats=real_feats)
        res["metrics"][name]["sample_s"] = time.perf_counter() - t0
        save_video_strip(gen[:6], out / "samples" / name.replace(" ", "_").replace("+", "_"))
        log(f"  {name}: {res['metrics'][name]}")
    dense.set_attention("dense")
    save_video_strip(tb["video"][:6], out / "samples" / "real")
    # Step time vs sequence length.
    res["sweep"] = step_time_sweep(a.sweep_frames, amp=amp, budget_s=a.sweep_seconds, log=log)
    # Publish the MoC model.
    hub_dir = out / "hub" / "zoo-models" / "moc_dit_small.multishot_fmnist"
    m = res["metrics"]["moc"]
    zoo.save_pretrained(moc.cpu().float(), hub_dir, dataset="multi_shot_fmnist", dtype="fp16",
                        metrics={"text_alignment": m["text_alignment"], "identity_cosine": m["identity_cosine"],
                                 "frame_fd": m["frame_fd"]},
                        recipe={"steps": n, "batch": a.batch, "lr": a.lr, "optimizer": "adamw (wd 0.01), 100 warm-up",
                                "objective": "rectified flow (velocity)", "amp": "bf16" if amp else "fp32",
                                "moc": MOC_ARGS, "scenes": a.pool},
                        extra_card=_card_text(res), repo_id="zoo-models/moc_dit_small.multishot_fmnist")
    res["total_s"] = time.perf_counter() - t_all
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float))
    (out / "moc_experiment.md").write_text(tables(res))
    log(tables(res))
    return res


def _fd_split(feats: torch.Tensor) -> float:
    """FD between two halves of the real test frames (the noise floor of the metric at this sample size)."""
    from zoo.tasks.video_gen import frechet_distance

    h = feats.shape[0] // 2
    return frechet_distance(feats[:h].double().numpy(), feats[h:2 * h].double().numpy())


def _fmt(x, nd=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and (abs(x) >= 1e5 or (abs(x) < 1e-3 and x != 0)):
        return f"{x:.3g}"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def tables(res: dict) -> str:
    """Markdown tables of an experiment's ``results.json``."""
    td, tm, fl = res["train_dense"], res["train_moc"], res["flops"]
    lines = [f"Device: {res['device']}, torch {res['torch']}; moc_dit_small ({res['params']:,} params), batch "
             f"{res['batch']}, {td['steps']} steps each.", "",
             "| run | steps | train s | ms / step | final loss | attention sparsity | attn GFLOPs / sample fwd "
             "| attn TFLOPs / train step (3 x fwd x batch) |",
             "|---|---|---|---|---|---|---|---|",
             f"| dense | {td['steps']} | {_fmt(td['seconds'], 1)} | {_fmt(td['step_ms'], 1)} | {_fmt(td['final_loss'], 4)} "
             f"| 0 | {_fmt((fl['dense_attn_per_fwd'] or 0) / 1e9, 2)} "
             f"| {_fmt((fl['dense_attn_per_fwd'] or 0) * 3 * res['batch'] / 1e12, 3)} |",
             f"| MoC | {tm['steps']} | {_fmt(tm['seconds'], 1)} | {_fmt(tm['step_ms'], 1)} | {_fmt(tm['final_loss'], 4)} "
             f"| {_fmt(fl['sparsity'])} | {_fmt((fl['counted_moc_attn_per_fwd'] or 0) / 1e9, 2)} "
             f"| {_fmt((fl['counted_moc_attn_per_fwd'] or 0) * 3 * res['batch'] / 1e12, 3)} |", "",
             f"Eq. 4 (per-token routing, k = 3, m̄ = 64, C = {fl['tokens'] // 64}) at L = {fl['tokens']}: MoC "
             f"{_fmt(fl['eq4_moc_per_fwd'] / 1e9, 2)} vs dense {_fmt(fl['eq4_dense_per_fwd'] / 1e9, 2)} GFLOPs per "
             "sample forward; counted = visited key blocks (own shot + text links + top-3) x 4·d per pair + routing.",
             "", "| samples | text alignment ↑ | identity cosine ↑ | identity class agreement ↑ | frame FD ↓ |",
             "|---|---|---|---|---|"]
    for name, m in res["metrics"].items():
        lines.append(f"| {name} | {_fmt(m['text_alignment'])} | {_fmt(m['identity_cosine'])} | "
                     f"{_fmt(m['identity_class_agreement'])} | {_fmt(m.get('frame_fd'), 2)} |")
    lines += ["", "(real: the test videos themselves; their frame FD is between two halves of the real frames.)", "",
              "| frames | tokens | dense step ms | MoC step ms | MoC sparsity |", "|---|---|---|---|---|"]
    for r in res["sweep"]:
        lines.append(f"| {r['frames']} | {r['tokens']} | {_fmt(r.get('dense_ms'), 1)} | {_fmt(r.get('moc_ms'), 1)} | "
                     f"{_fmt(r.get('sparsity'))} |")
    return "\n".join(lines) + "\n"


def _card_text(res: dict) -> str:
    return ("## Training\n\nTrained by the zoo on its synthetic multi-shot Fashion-MNIST video task "
            "(`zoo.datasets.moc_video`, 4 shots x 4 frames of 32x32 RGB pixels, captions as one-hot tokens) with "
            "Mixture-of-Contexts self-attention (chunk = one frame, top-k 3, intra-shot and caption links, causal "
            "routing, context drop-off p_max 0.5 / drop-in λ 0.5), rectified flow. Not a general video model.\n\n"
            "## Results (test captions, unseen items)\n\n" + tables(res))


def add_parser(subparsers) -> None:
    """``python -m zoo moc-experiment ...`` (for zoo/commands.py)."""
    p = subparsers.add_parser("moc-experiment", help="train dense vs MoC DiT on the multi-shot task")
    _args(p)
    p.set_defaults(fn=lambda a: _run(a) and 0)


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--train-seconds", type=float, default=45.0, help="dense training time; MoC gets equal steps")
    p.add_argument("--steps", type=int, default=0, help="fixed step count instead of --train-seconds")
    p.add_argument("--max-moc-seconds", type=float, default=100.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--pool", type=int, default=4000, help="training scenes (pre-generated)")
    p.add_argument("--num-test", type=int, default=64)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--sweep-frames", type=int, nargs="*", default=[16, 64, 256, 1024])
    p.add_argument("--sweep-seconds", type=float, default=25.0)
    p.add_argument("--classifier", default="hub/zoo-models/repnext_m0.fmnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run: 2 layers, 4 steps, 8 scenes")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("experiment")
    _args(e)
    _run(p.parse_args(argv))


def _run(a) -> dict[str, Any]:
    a.model_args = {}
    if a.smoke:
        a.model_args = {"num_layers": 1, "dim": 64, "ffn_dim": 128}
        a.steps, a.pool, a.num_test, a.batch, a.sample_steps = 2, 8, 4, 2, 2
        a.sweep_frames, a.cpu = [4], True
    return run_experiment(a)


if __name__ == "__main__":
    sys.exit(main())
