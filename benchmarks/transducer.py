"""Transformer Transducer speed: streaming real-time factor on CPU, training step time on CUDA.

    python benchmarks/transducer.py --rtf [--threads 2] [--chunk-ms 300] [--left 10 --right 2]
        [--weights hub/zoo-models/transformer_transducer_small.offline_speech --audio data/offline_speech/test/.../*.flac]
    python benchmarks/transducer.py --train-step          # CUDA: our attention (auto/triton) vs SDPA + dense mask
    python benchmarks/transducer.py --export out/step.pt2 # streaming audio-encoder step, checked against eager

RTF = processing time / audio duration for StreamingDecoder (features, encoder, greedy joint) on 10 s of audio.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

if __package__ in (None, ""):  # run as a script from the repo root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo
import zoo.models.transducer as tt


def _speech(paths: list[str], seconds: float) -> torch.Tensor:
    """16 kHz mono float32 audio: the given files concatenated (and repeated) to ``seconds``."""
    import soundfile as sf

    parts = []
    for path in paths:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
        if sr != 16000:
            raise ValueError(f"--audio {path}: expected 16 kHz audio, got {sr} Hz")
        parts.append(torch.from_numpy(wav.mean(1)))
    audio = torch.cat(parts)
    return audio.repeat(int(seconds * 16000) // audio.numel() + 1)[: int(seconds * 16000)]


def rtf(threads: int, chunk_ms: float, left: int, right: int, seconds: float = 10.0, weights: str | None = None,
        audio_files: list[str] | None = None) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if weights:
        m = zoo.create_model("transformer_transducer_small", pretrained=weights, audio_left=left,
                             audio_right=right).eval()
    else:
        m = zoo.create_model("transformer_transducer_small", vocab_size=29, audio_left=left, audio_right=right).eval()
    audio = _speech(audio_files, seconds) if audio_files else torch.randn(int(seconds * 16000)) * 0.1
    step = int(chunk_ms * 16)
    best = float("inf")
    for _ in range(3):
        sd = m.streaming_decoder()
        t0 = time.perf_counter()
        for i in range(0, audio.numel(), step):
            sd.accept(audio[i:i + step])
        sd.finish()
        best = min(best, time.perf_counter() - t0)
    return {"rtf": best / seconds, "threads": threads, "chunk_ms": chunk_ms, "left": left, "right": right,
            "tokens": len(sd.tokens), "weights": weights or "random init", "audio": "speech" if audio_files else "noise"}


def train_step(backends=("triton", "sdpa", "flex", "auto"), batch=16, seconds=8.0, u=80, steps=10) -> dict:
    """ms per optimizer step of the small transducer (L10/R2 audio masks, causal label masks) per attention backend,
    under bf16 autocast (fp32 master weights, fp32 RNN-T loss) on one fixed batch; SDPA gets the dense boolean mask."""
    dev = torch.device("cuda")
    out = {}
    for be in backends:
        tt.ATTENTION_BACKEND = be
        torch.manual_seed(0)
        m = zoo.create_model("transformer_transducer_small", vocab_size=29, audio_left=10, audio_right=2).to(dev)
        opt = torch.optim.AdamW(m.parameters(), 1e-3)
        audio = torch.randn(batch, int(seconds * 16000), device=dev) * 0.1
        lens = torch.full((batch,), audio.shape[1], device=dev)
        tg = torch.randint(1, 29, (batch, u), device=dev)
        tl = torch.full((batch,), u, device=dev)

        def go():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = m(audio, lens, tg, tl)["loss"]
            loss.backward()
            opt.step()

        t0 = time.perf_counter()
        for _ in range(3):  # warm-up: kernel compilation / autotuning
            go()
        torch.cuda.synchronize()
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            go()
        torch.cuda.synchronize()
        out[be] = {"step_ms": (time.perf_counter() - t0) / steps * 1000, "warmup_s": warm}
        print(be, out[be], flush=True)
    tt.ATTENTION_BACKEND = "auto"
    return {"train_step": out, "batch": batch, "seconds": seconds, "U": u, "precision": "bf16 autocast"}


def export_step(path: str, chunk: int = 4, left: int = 10, right: int = 2) -> dict:
    torch.manual_seed(0)
    m = zoo.create_model("transformer_transducer_small", vocab_size=29).eval()
    step = tt.AudioEncoderStep(m, chunk, left, right).eval()
    ex = (torch.randn(1, chunk, m.d_model), torch.tensor(40), *step.init_cache())
    rep = zoo.export(step, ex, path, format="pt2")
    res = {"pt2": path, "max_abs_diff": getattr(rep, "max_abs_diff", None)}
    try:
        import executorch  # noqa: F401

        rep2 = zoo.export(step, ex, path.replace(".pt2", ".pte"), format="pte")
        res["pte_max_abs_diff"] = getattr(rep2, "max_abs_diff", None)
    except ImportError:
        res["pte"] = "executorch not installed"
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtf", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-ms", type=float, default=300.0)
    ap.add_argument("--left", type=int, default=10)
    ap.add_argument("--right", type=int, default=2)
    ap.add_argument("--weights", help="hub folder or registry tag of trained weights for --rtf (default: random init)")
    ap.add_argument("--audio", nargs="+", help="16 kHz speech files for --rtf, concatenated to 10 s (default: noise)")
    ap.add_argument("--train-step", action="store_true")
    ap.add_argument("--export")
    a = ap.parse_args()
    res = {}
    if a.rtf:
        res["rtf"] = rtf(a.threads, a.chunk_ms, a.left, a.right, weights=a.weights, audio_files=a.audio)
    if a.train_step:
        res["train"] = train_step() if torch.cuda.is_available() else "needs CUDA"
    if a.export:
        res["export"] = export_step(a.export)
    print(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
