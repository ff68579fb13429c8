"""``python -m zoo video-qa VIDEO --question TEXT``: answer a question about a video file with VideoNSA.

Frames are decoded with PyAV and sampled as the authors' evaluation wrapper does (lmms-eval ``videonsa`` on
``qwen_vl_utils``-style rules): n = total / video_fps * fps frames, clamped to [4, max_frames] and to the video,
floored to an even count (two frames per temporal patch), taken uniformly (``linspace(0, total - 1, n)``); each frame
resized to multiples of 28 with its pixel count in [min_pixels, min(max_pixels, total_pixels / n * 2, 768 * 28 * 28)]
(aspect kept). The model is ``Enxin/VideoNSA`` (or a local folder with its config, processor files and shards) loaded
strictly by :func:`zoo.models._videonsa_hf.load_released`; prompts go through the release's processor and chat
template; prefill runs VideoNSA attention, decoding dense attention over the cache. Needs the ``videonsa`` extra
(transformers, av).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

__all__ = ["add_parser", "decode_video", "main", "sample_plan", "smart_resize"]

FRAME_FACTOR = 2
IMAGE_FACTOR = 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)
MIN_FRAMES = 4


def smart_resize(height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = 4 * 28 * 28,
                 max_pixels: int = 16384 * 28 * 28) -> tuple[int, int]:
    """(h, w) divisible by ``factor``, pixel count within [min_pixels, max_pixels], aspect ratio kept."""
    if max(height, width) / max(1, min(height, width)) > 200:
        raise ValueError(f"aspect ratio must be below 200, got {height}x{width}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def sample_plan(total_frames: int, video_fps: float, height: int, width: int, *, fps: float = 2.0,
                max_frames: int = 32, min_pixels: int = 256 * 28 * 28, max_pixels: int = 1605632,
                total_pixels: int = VIDEO_TOTAL_PIXELS) -> tuple[list[int], tuple[int, int]]:
    """(frame indices, (height, width)) the evaluation wrapper would feed the processor for a video."""
    if total_frames < FRAME_FACTOR:
        raise ValueError(f"the video must have at least {FRAME_FACTOR} frames, got {total_frames}")
    lo = math.ceil(MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
    hi = math.floor(min(max_frames, total_frames) / FRAME_FACTOR) * FRAME_FACTOR
    n = total_frames / max(video_fps, 1e-6) * fps
    n = min(max(n, lo), hi, total_frames)
    n = max(FRAME_FACTOR, math.floor(n / FRAME_FACTOR) * FRAME_FACTOR)
    idx = torch.linspace(0, total_frames - 1, n).round().long().tolist()
    cap = max(min(VIDEO_MAX_PIXELS, total_pixels / n * FRAME_FACTOR), int(min_pixels * 1.05))
    size = smart_resize(height, width, IMAGE_FACTOR, min_pixels, min(max_pixels, cap))
    return idx, size


def decode_video(path: str | Path, **plan_kwargs) -> tuple[torch.Tensor, float]:
    """Decode and sample a video file with PyAV: returns (frames (T, 3, H, W) uint8 resized, sample fps)."""
    try:
        import av
    except ImportError as e:
        raise ImportError("video decoding needs PyAV: pip install 'zoo[videonsa]' (or pip install av)") from e
    import torch.nn.functional as F

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
    if not frames:
        raise ValueError(f"{path}: no video frames decoded")
    h, w = frames[0].shape[:2]
    idx, (rh, rw) = sample_plan(len(frames), rate, h, w, **plan_kwargs)
    x = torch.from_numpy(np.stack([frames[i] for i in idx])).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
    sample_fps = len(idx) / max(len(frames) / rate, 1e-6)
    return x.round().clamp(0, 255).to(torch.uint8), sample_fps


def answer(video: str | Path, question: str, model: str = "Enxin/VideoNSA", *, device: str = "auto",
           max_new_tokens: int = 128, **plan_kwargs) -> str:
    """Decode, sample, prompt and generate: the answer text."""
    from transformers import AutoProcessor

    from zoo.models._videonsa_hf import load_released

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    folder = Path(model)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model))
    net = load_released(folder, dtype=dtype, device=dev)
    processor = AutoProcessor.from_pretrained(str(folder))
    frames, sfps = decode_video(video, **plan_kwargs)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[frames], fps=sfps, return_tensors="pt", do_resize=False).to(dev)
    with torch.no_grad():
        out = net.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``video-qa`` on a ``python -m zoo`` subparsers object; the handler is ``main(ns)``."""
    p = subparsers.add_parser("video-qa", help="answer a question about a video file with VideoNSA",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("video", help="video file (anything FFmpeg/PyAV decodes)")
    p.add_argument("-q", "--question", required=True)
    p.add_argument("--model", default="Enxin/VideoNSA", help="HF repo id or local folder of the release")
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--max-frames", type=int, default=32)
    p.add_argument("--max-pixels", type=int, default=1605632)
    p.add_argument("--min-pixels", type=int, default=256 * 28 * 28)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--plan", action="store_true", help="only print the sampled frame indices and frame size")
    p.set_defaults(fn=main)
    return p


def main(ns: argparse.Namespace) -> int:
    plan = dict(fps=ns.fps, max_frames=ns.max_frames, max_pixels=ns.max_pixels, min_pixels=ns.min_pixels)
    try:
        if ns.plan:
            frames, sfps = decode_video(ns.video, **plan)
            print(f"{frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[3]} at {sfps:.2f} fps")
            return 0
        print(answer(ns.video, ns.question, ns.model, device=ns.device, max_new_tokens=ns.max_new_tokens, **plan))
        return 0
    except (ImportError, ValueError, FileNotFoundError, OSError) as e:
        print(f"video-qa: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m zoo")
    add_parser(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args()
    raise SystemExit(args.fn(args))
