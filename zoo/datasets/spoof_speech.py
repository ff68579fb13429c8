"""spoof_speech: an offline bona-fide-vs-synthetic speech task built from Debian packages, in the ASVspoof 2019 LA
layout (so :mod:`zoo.datasets.asvspoof` reads it).

Bona fide: real human recordings with transcripts —
  * ``asterisk-core-sounds-en-wav`` (Allison Smith's Asterisk prompts, 8 kHz; transcripts in
    ``/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz`` from ``asterisk-core-sounds-en``),
  * ``pocketsphinx-testdata`` (LibriVox and "cards" utterances, 16 kHz, with transcription files).
Spoofs: the same transcripts synthesised by ``espeak-ng`` (six voice / variant / speed settings, systems S01-S06)
and ``festival`` with ``festvox-kallpc16k`` (two settings, S07-S08, used when installed).

Every clip — bona fide and spoof — goes through the same channel so that sample rate or level are no cue: resampled
to 8 kHz and back to 16 kHz (the Asterisk prompts are 8 kHz telephone audio), edge silence trimmed, RMS-normalised
with a random +-4 dB gain, capped at 5 s, written as 16-bit FLAC at 16 kHz. The split is by *utterance text*: each
normalised sentence goes (with all its recordings and syntheses) to exactly one of train / dev / eval (70/10/20), so
no sentence is in two subsets.

    python -m zoo.datasets.spoof_speech prepare --out data/spoof_speech [--spoofs-per-text 2] [--max-texts N]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.datasets.asvspoof import SUBSETS, audio_dir, protocol_path
from zoo.datasets.debian_speech import MissingPackageError, read_asterisk_prompts, read_pocketsphinx

__all__ = ["Utterance", "SPOOF_SYSTEMS", "find_sources", "normalise_text", "split_of", "prepare", "main"]

SR = 16000
CHANNEL_SR = 8000
MAX_SECONDS = 5.0
PACKAGES = "asterisk-core-sounds-en-wav asterisk-core-sounds-en pocketsphinx-testdata espeak-ng"
OPTIONAL_PACKAGES = "festival festvox-kallpc16k"

# (system id, engine, settings). espeak-ng: voice (+variant), words per minute, pitch 0-99.
SPOOF_SYSTEMS: list[tuple[str, str, dict]] = [
    ("S01", "espeak-ng", {"voice": "en-us", "speed": 175, "pitch": 50}),
    ("S02", "espeak-ng", {"voice": "en-gb-x-rp+f3", "speed": 150, "pitch": 55}),
    ("S03", "espeak-ng", {"voice": "en-gb-scotland+m3", "speed": 190, "pitch": 45}),
    ("S04", "espeak-ng", {"voice": "en-us+f4", "speed": 140, "pitch": 65}),
    ("S05", "espeak-ng", {"voice": "en-029+m1", "speed": 165, "pitch": 40}),
    ("S06", "espeak-ng", {"voice": "en-us+klatt", "speed": 160, "pitch": 50}),
    ("S07", "festival", {"voice": "kal_diphone", "stretch": 1.0}),
    ("S08", "festival", {"voice": "kal_diphone", "stretch": 1.2}),
]


@dataclass(frozen=True)
class Utterance:
    """A bona-fide recording: source wav, transcript, speaker tag."""

    path: Path
    text: str
    speaker: str


def normalise_text(text: str) -> str:
    """Lower-case words only: the key used to split by sentence."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _missing(msg: str) -> RuntimeError:
    return RuntimeError(
        f"{msg}. The spoof_speech task is built from Debian packages: `apt-get install {PACKAGES}` "
        f"(optional: `{OPTIONAL_PACKAGES}` for festival spoofs)."
    )


def find_sources() -> list[Utterance]:
    """Bona-fide recordings with transcripts from the installed Debian packages (raises naming the packages)."""
    try:
        items = read_asterisk_prompts() + [
            it for it in read_pocketsphinx() if it.path.suffix == ".wav"  # the raw tidigits clip has no header
        ]
    except MissingPackageError as e:
        raise _missing(str(e)) from e
    speaker = {"asterisk": "ALLISON"}
    utts = [
        Utterance(it.path, it.text, speaker.get(it.source) or it.utt_id.split("/")[1].upper())
        for it in items
        if normalise_text(it.text)
    ]
    if not utts:
        raise _missing("no bona-fide recordings found")
    return utts


def split_of(norm_text: str, seed: int = 0) -> str:
    """Deterministic train/dev/eval assignment (70/10/20) of a normalised sentence."""
    h = int(hashlib.sha1(f"{seed}:{norm_text}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if h < 0.7 else ("dev" if h < 0.8 else "eval")


# ---------------------------------------------------------------------------------------------------------- audio
def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


_RESAMPLERS: dict = {}


def _resampler(orig: int, new: int):
    """A cached ``torchaudio.transforms.Resample`` (its sinc kernel is built once; it wraps
    ``torchaudio.functional.resample``)."""
    if (orig, new) not in _RESAMPLERS:
        from torchaudio.transforms import Resample

        _RESAMPLERS[(orig, new)] = Resample(orig, new)
    return _RESAMPLERS[(orig, new)]


def _channel(x: np.ndarray, sr: int, gain_jitter_db: float) -> np.ndarray:
    """The common channel: -> 8 kHz -> 16 kHz, trim edge silence, RMS normalise with a random gain, cap length."""
    import torch

    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if sr != CHANNEL_SR:
            t = _resampler(sr, CHANNEL_SR)(t)
        y = _resampler(CHANNEL_SR, SR)(t).numpy()
    # Trim leading / trailing 10 ms frames 40 dB below the loudest frame, keeping a 50 ms margin.
    frame = SR // 100
    n = len(y) // frame
    if n > 2:
        e = np.sqrt((y[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12)
        active = np.nonzero(e > e.max() * 10 ** (-40 / 20))[0]
        if len(active):
            lo = max(active[0] * frame - SR // 20, 0)
            hi = min((active[-1] + 1) * frame + SR // 20, len(y))
            y = y[lo:hi]
    rms = np.sqrt((y**2).mean() + 1e-12)
    gain_db = -23.0 + gain_jitter_db
    y = y * (10 ** (gain_db / 20) / rms)
    y = np.clip(y, -0.99, 0.99)
    return y[: int(MAX_SECONDS * SR)].astype(np.float32)


def _write_flac(path: Path, y: np.ndarray) -> None:
    import soundfile as sf

    sf.write(str(path), y, SR, format="FLAC", subtype="PCM_16")


def _espeak(text: str, cfg: dict, out: Path) -> None:
    subprocess.run(["espeak-ng", "-v", cfg["voice"], "-s", str(cfg["speed"]), "-p", str(cfg["pitch"]),
                    "-w", str(out), text], check=True, capture_output=True, timeout=60)


def _festival_batch(jobs: list[tuple[str, dict, Path]]) -> None:
    """Synthesise many (text, cfg, out) with one festival process per setting."""
    by_cfg: dict[str, list] = {}
    for text, cfg, out in jobs:
        by_cfg.setdefault(json.dumps(cfg, sort_keys=True), []).append((text, out))
    for key, items in by_cfg.items():
        cfg = json.loads(key)
        lines = [f"(voice_{cfg['voice']})", f"(Parameter.set 'Duration_Stretch {cfg['stretch']})"]
        for text, out in items:
            safe = text.replace("\\", " ").replace('"', "'")
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{safe}")) "{out}" \'riff)')
        with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        try:
            subprocess.run(["festival", "-b", f.name], check=True, capture_output=True, timeout=3600)
        finally:
            Path(f.name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------- prepare
def prepare(out: str | Path, spoofs_per_text: int = 2, max_texts: int | None = None, seed: int = 0,
            workers: int = 2, verbose: bool = True) -> dict:
    """Build the corpus under ``out`` in the ASVspoof 2019 LA layout; returns (and writes to ``out/summary.json``)
    its composition. Deterministic for a given ``seed`` and set of installed packages."""
    if shutil.which("espeak-ng") is None:
        raise _missing("espeak-ng is not installed")
    has_festival = shutil.which("festival") is not None and any(
        Path(p).is_dir() for p in ("/usr/share/festival/voices/english/kal_diphone",))
    systems = [s for s in SPOOF_SYSTEMS if s[1] == "espeak-ng" or has_festival]
    if not 1 <= spoofs_per_text <= len(systems):
        raise ValueError(f"spoofs_per_text must be in [1, {len(systems)}], got {spoofs_per_text}")
    utts = find_sources()
    groups: dict[str, list[Utterance]] = {}
    for u in utts:
        groups.setdefault(normalise_text(u.text), []).append(u)
    texts = sorted(groups)
    if max_texts is not None:
        texts = [t for t in texts if split_of(t, seed) == "train"][: max(1, int(max_texts * 0.7))] + \
            [t for t in texts if split_of(t, seed) == "dev"][: max(1, int(max_texts * 0.1))] + \
            [t for t in texts if split_of(t, seed) == "eval"][: max(1, int(max_texts * 0.2))]
    out = Path(out)
    for subset in SUBSETS:
        audio_dir(out, subset).mkdir(parents=True, exist_ok=True)
    protocol_path(out, "train").parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    rows: dict[str, list[str]] = {s: [] for s in SUBSETS}
    meta: list[str] = ["utt\tsubset\tspeaker\tsystem\tkey\tsource\ttext"]
    counters = {s: 0 for s in SUBSETS}
    prefix = {"train": "T", "dev": "D", "eval": "E"}
    tmp = Path(tempfile.mkdtemp(prefix="spoof_speech_"))
    espeak_jobs, festival_jobs, post = [], [], []  # post: (raw path, subset, utt)

    def new_id(subset: str) -> str:
        counters[subset] += 1
        return f"SS_{prefix[subset]}_{counters[subset]:05d}"

    try:
        for t in texts:
            subset = split_of(t, seed)
            members = groups[t]
            for u in members:
                uid = new_id(subset)
                x, sr = _read_wav(u.path)
                _write_flac(audio_dir(out, subset) / f"{uid}.flac", _channel(x, sr, rng.uniform(-4.0, 4.0)))
                rows[subset].append(f"{u.speaker} {uid} - - bonafide")
                meta.append(f"{uid}\t{subset}\t{u.speaker}\t-\tbonafide\t{u.path}\t{u.text}")
            text = members[0].text
            for i in rng.choice(len(systems), size=spoofs_per_text, replace=False):
                sid, engine, cfg = systems[int(i)]
                uid = new_id(subset)
                raw = tmp / f"{uid}.wav"
                (espeak_jobs if engine == "espeak-ng" else festival_jobs).append((text, cfg, raw))
                post.append((raw, subset, uid))
                rows[subset].append(f"{members[0].speaker} {uid} - {sid} spoof")
                meta.append(f"{uid}\t{subset}\t{members[0].speaker}\t{sid}\tspoof\t{engine}:{cfg}\t{text}")
        if verbose:
            print(f"[spoof_speech] {len(texts)} sentences, {sum(len(groups[t]) for t in texts)} bona fide clips; "
                  f"synthesising {len(espeak_jobs)} espeak-ng + {len(festival_jobs)} festival spoofs ...", flush=True)
        with ThreadPoolExecutor(max(1, workers)) as ex:
            list(ex.map(lambda j: _espeak(*j), espeak_jobs))
        if festival_jobs:
            _festival_batch(festival_jobs)
        gains = np.random.default_rng([seed, 1]).uniform(-4.0, 4.0, size=len(post))

        def finish(i: int) -> None:
            raw, subset, uid = post[i]
            if not raw.is_file():
                raise RuntimeError(f"synthesis failed for {uid} ({raw} missing)")
            x, sr = _read_wav(raw)
            _write_flac(audio_dir(out, subset) / f"{uid}.flac", _channel(x, sr, gains[i]))

        with ThreadPoolExecutor(max(1, workers)) as ex:
            list(ex.map(finish, range(len(post))))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for subset in SUBSETS:
        protocol_path(out, subset).write_text("\n".join(rows[subset]) + "\n")
    (out / "metadata.tsv").write_text("\n".join(meta) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary = {
        "subsets": {s: {"bonafide": sum(r.endswith("bonafide") for r in rows[s]),
                        "spoof": sum(r.endswith(" spoof") for r in rows[s]),
                        "sentences": sum(split_of(t, seed) == s for t in texts)} for s in SUBSETS},
        "systems": {sid: f"{eng} {cfg}" for sid, eng, cfg in systems},
        "spoofs_per_text": spoofs_per_text, "seed": seed, "bytes": size,
        "channel": "8 kHz -> 16 kHz, edge-silence trim, RMS -23 dBFS +-4 dB, <= 5 s, FLAC PCM_16 16 kHz",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if verbose:
        print(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m zoo.datasets.spoof_speech prepare --out DIR``."""
    p = argparse.ArgumentParser(prog="python -m zoo.datasets.spoof_speech", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="build the corpus from the installed Debian packages")
    pp.add_argument("--out", default="data/spoof_speech")
    pp.add_argument("--spoofs-per-text", type=int, default=2)
    pp.add_argument("--max-texts", type=int, default=None, help="small build for tests")
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    try:
        prepare(args.out, args.spoofs_per_text, args.max_texts, args.seed, args.workers)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
