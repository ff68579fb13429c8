"""Text-to-speech commands: ``python -m zoo tts`` (synthesise, optionally streaming) and ``python -m zoo ist``
(initial-state tuning on a folder of a speaker's clips).

    python -m zoo tts --model hub/zoo-models/lina_speech_small.lina_offline --text "Hello there." --out hello.wav
    python -m zoo tts --model ... --text "..." --out a.wav --state speaker.safetensors --stream
    python -m zoo ist --model hub/zoo-models/lina_speech_small.lina_offline --clips my_voice/ --out speaker.safetensors

``--model`` is a registered ``name.tag``, an ``hf-hub:`` id or a local folder in hub layout; the codec
(``codec.json`` + ``codec.safetensors``) is read from ``--codec`` (default: the model folder). A clips folder holds
``*.wav`` files each with its transcript in ``<name>.txt`` (or one ``transcripts.tsv``: ``file<TAB>text``).
The state file holds the low-rank S0 factors with the authors' key names (``layer{i}_k`` / ``layer{i}_v``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "main", "load_codec", "load_tts", "read_clips"]


def _build_codec(name: str, args: dict[str, Any]):
    """A codec from its ``codec.json`` entry: ``MelVQCodec(**args)`` or ``WavTokenizer(WavTokenizerConfig(**args))``."""
    if name == "MelVQCodec":
        from zoo.models.codec import MelVQCodec

        return MelVQCodec(**args)
    if name == "WavTokenizer":
        from zoo.models.wavtokenizer import WavTokenizer, WavTokenizerConfig

        return WavTokenizer(WavTokenizerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}))
    raise ValueError(f"unknown codec class {name!r}: expected 'MelVQCodec' or 'WavTokenizer'")


def load_codec(folder: str | Path):
    """The codec saved beside a model (``codec.json`` naming the class + args, ``codec.safetensors`` in the zoo's key
    names; a WavTokenizer's released checkpoint goes through ``zoo.models.wavtokenizer.load_released`` first)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "codec.json").is_file():
        raise FileNotFoundError(f"{folder}/codec.json not found: pass --codec DIR (a folder with codec.json)")
    cfg = json.loads((folder / "codec.json").read_text())
    try:
        c = _build_codec(cfg["class"], cfg.get("args", {}))
    except ValueError as e:
        raise ValueError(f"{folder}/codec.json: {e}") from None
    c.load_state_dict(load_file(str(folder / "codec.safetensors")), strict=True)
    return c.eval()


def load_tts(model: str, codec: str | None = None, state: str | None = None):
    """(model, codec, initial states or None) from a model spec, an optional codec folder and a state file."""
    import zoo
    from zoo.models.lina_speech import InitialStates

    folder = Path(model)
    if folder.is_dir():
        cfg = json.loads((folder / "config.json").read_text())
        m = zoo.create_model(cfg["architecture"], pretrained=str(folder))
    else:
        m = zoo.create_model(model, pretrained=True)
        if codec is None:
            folder = _codec_folder_of(model)
    m.eval()
    c = load_codec(codec or folder)
    s0 = None
    if state:
        from safetensors.torch import load_file

        s0 = [s.detach() for s in InitialStates.from_state_dict(m, load_file(state))()]
    return m, c, s0


def _codec_folder_of(spec: str) -> Path:
    """Folder holding the codec files of a registered tag: the source tree's hub/<repo_id>, else a download."""
    from zoo.registry import _resolve_pretrained

    _, src = _resolve_pretrained(spec, True)
    repo_id = getattr(src, "repo_id", None) or str(src).removeprefix("hf-hub:").split("@")[0]
    local = Path(__file__).resolve().parents[1] / "hub" / repo_id
    if (local / "codec.json").is_file():
        return local
    from zoo.hub import _download

    path = _download(repo_id, "codec.json", getattr(src, "revision", None))
    _download(repo_id, "codec.safetensors", getattr(src, "revision", None))
    return Path(path).parent


def read_clips(folder: str | Path, codec) -> list[tuple[str, Any]]:
    """(transcript, codes (Q, n)) for every clip of a folder, resampled to the codec's rate, mono."""
    import soundfile as sf
    import torch
    import torchaudio

    folder = Path(folder)
    table = {}
    tsv = folder / "transcripts.tsv"
    if tsv.is_file():
        for line in tsv.read_text().splitlines():
            if "\t" in line:
                f, t = line.split("\t", 1)
                table[f.strip()] = t.strip()
    items = []
    for wav in sorted(folder.glob("*.wav")):
        text = table.get(wav.name) or table.get(wav.stem)
        if text is None and wav.with_suffix(".txt").is_file():
            text = wav.with_suffix(".txt").read_text().strip()
        if not text:
            continue
        a, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        x = torch.from_numpy(a.mean(1))
        if sr != codec.sample_rate:
            x = torchaudio.functional.resample(x, sr, codec.sample_rate)
        items.append((text, codec.encode(x)))
    if not items:
        raise FileNotFoundError(f"no transcribed *.wav clips in {folder} (need <name>.txt or transcripts.tsv)")
    return items


def cmd_tts(ns: argparse.Namespace) -> int:
    import soundfile as sf
    import torch

    from zoo.models.lina_speech import CharTokenizer

    torch.manual_seed(ns.seed)
    model, codec, s0 = load_tts(ns.model, ns.codec, ns.state)
    ids = torch.tensor(CharTokenizer().encode(ns.text))
    kw: dict[str, Any] = dict(top_k=ns.top_k, temperature=ns.temperature, init_state=s0, max_len=ns.max_len,
                              first_greedy_quant=0 if ns.greedy else ns.first_greedy_quant)
    t0 = time.perf_counter()
    if ns.stream:
        chunks, first = [], None
        for wav in model.stream(ids, codec, chunk_frames=ns.chunk_frames, **kw):
            first = first or time.perf_counter() - t0
            chunks.append(wav)
            print(f"chunk {len(chunks)}: {wav.numel() / codec.sample_rate:.2f} s at {time.perf_counter() - t0:.2f} s",
                  file=sys.stderr)
        wav = torch.cat(chunks) if chunks else torch.zeros(0)
    else:
        codes = model.generate(ids, **kw)[0]
        wav = codec.decode(codes) if codes.shape[-1] else torch.zeros(0)
    wall = time.perf_counter() - t0
    sf.write(ns.out, wav.clamp(-1, 1).numpy(), codec.sample_rate)
    dur = wav.numel() / codec.sample_rate
    print(f"wrote {ns.out}: {dur:.2f} s of audio in {wall:.2f} s (RTF {wall / max(dur, 1e-9):.3f})")
    return 0


def cmd_ist(ns: argparse.Namespace) -> int:
    import torch
    from safetensors.torch import save_file

    from zoo.models.lina_speech import CharTokenizer, collate
    from zoo.tasks.tts import tune_initial_states

    torch.manual_seed(ns.seed)
    model, codec, _ = load_tts(ns.model, ns.codec)
    dev = torch.device(ns.device)
    model.to(dev)
    tok = CharTokenizer()
    items = [(tok.encode(t), c) for t, c in read_clips(ns.clips, codec)]
    print(f"{len(items)} clips, {sum(c.shape[-1] for _, c in items) / codec.frame_rate:.1f} s of audio")
    g = torch.Generator().manual_seed(ns.seed)

    def batches():
        while True:
            perm = torch.randperm(len(items), generator=g).tolist()
            for s in range(0, len(perm), ns.batch_size):
                b = collate([items[i] for i in perm[s : s + ns.batch_size]])
                yield {k: v.to(dev) for k, v in b.items()}

    ist, losses = tune_initial_states(model, batches(), ns.steps, lr=ns.lr, rank=ns.rank, scale=ns.scale,
                                      grad_acc=ns.grad_acc, seed=ns.seed, log_every=max(1, ns.steps // 10))
    meta = {"model": ns.model, "rank": str(ns.rank), "scale": str(ns.scale), "steps": str(ns.steps),
            "clips": str(len(items)), "first_loss": f"{losses[0]:.4f}", "last_loss": f"{losses[-1]:.4f}"}
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in ist.state_dict().items()}, ns.out, metadata=meta)
    n = sum(p.numel() for p in ist.parameters())
    print(f"wrote {ns.out}: {n} numbers; loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    return 0


def add_parser(subparsers) -> None:
    """Register ``tts`` and ``ist`` on ``python -m zoo``'s subparsers."""
    s = subparsers.add_parser("tts", help="synthesise speech with a text-to-speech model (Lina-Speech)")
    s.add_argument("--model", required=True, help="name.tag, hf-hub:org/name or a local hub folder")
    s.add_argument("--text", required=True)
    s.add_argument("--out", required=True, help="output .wav")
    s.add_argument("--codec", default=None, help="codec folder (default: the model folder)")
    s.add_argument("--state", default=None, help="initial-state file from `python -m zoo ist` (voice)")
    s.add_argument("--stream", action="store_true", help="stream: decode audio chunks while tokens are generated")
    s.add_argument("--chunk-frames", type=int, default=25)
    s.add_argument("--top-k", type=int, default=100)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--first-greedy-quant", type=int, default=1, help="codebooks sampled (top-k); the rest greedy")
    s.add_argument("--greedy", action="store_true", help="greedy on every codebook")
    s.add_argument("--max-len", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_tts)

    s = subparsers.add_parser("ist", help="initial-state tuning: adapt a voice from a folder of transcribed clips")
    s.add_argument("--model", required=True)
    s.add_argument("--clips", required=True, help="folder of *.wav + <name>.txt transcripts (or transcripts.tsv)")
    s.add_argument("--out", required=True, help="output .safetensors (keys layer{i}_k / layer{i}_v)")
    s.add_argument("--codec", default=None)
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--batch-size", type=int, default=2)
    s.add_argument("--grad-acc", type=int, default=4)
    s.add_argument("--lr", type=float, default=0.1)
    s.add_argument("--rank", type=int, default=1)
    s.add_argument("--scale", type=float, default=0.02)
    s.add_argument("--device", default="cuda" if _cuda() else "cpu")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_ist)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.tts_cli")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    ns = p.parse_args(argv)
    return int(ns.fn(ns) or 0)


if __name__ == "__main__":
    sys.exit(main())
