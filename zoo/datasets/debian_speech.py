"""Transcribed speech shipped in Debian packages (read from the installed files; nothing is downloaded).

- ``asterisk-core-sounds-en-wav``: the Asterisk PBX prompts, one female speaker (Allison), 8 kHz 16-bit WAV under
  ``/usr/share/asterisk/sounds/en_US_f_Allison/<name>.wav``; the transcripts are in the (always co-installed)
  ``asterisk-core-sounds-en`` package at ``/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz`` as
  ``name: Transcript.`` lines (``digits/5: five``; ``[beep tone]`` marks a non-speech file).
- ``pocketsphinx-testdata``: 16 kHz WAV/raw test utterances under ``/usr/share/pocketsphinx/test/data`` with
  Sphinx ``<s> words </s> (utt-id)`` transcription files.

:func:`read_asterisk_prompts` and :func:`read_pocketsphinx` return :class:`SpeechItem` lists (shared by the speech
recognition and anti-spoofing corpora); :func:`normalize_transcript` maps text to ``[a-z' ]``.
"""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SpeechItem",
    "ASTERISK_SOUNDS_DIR",
    "ASTERISK_TRANSCRIPTS",
    "POCKETSPHINX_DIR",
    "parse_asterisk_transcripts",
    "read_asterisk_prompts",
    "read_pocketsphinx",
    "parse_sphinx_transcription",
    "normalize_transcript",
    "number_to_words",
    "MissingPackageError",
]

ASTERISK_SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
POCKETSPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")


class MissingPackageError(FileNotFoundError):
    """A Debian package the corpus is built from is not installed."""


@dataclass(frozen=True)
class SpeechItem:
    """One utterance: audio file, its sample rate (``raw`` files: 16 kHz 16-bit mono), raw and normalised text."""

    utt_id: str
    path: Path
    text: str
    normalized: str
    source: str
    sample_rate: int


_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """0 <= n < 10**6 -> English words (``342`` -> ``three hundred forty two``)."""
    if not 0 <= n < 10**6:
        raise ValueError(f"n must be in [0, 1e6), got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_to_words(n % 100))
    return number_to_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + number_to_words(n % 1000))


_SYMBOLS = {"*": " star ", "#": " pound ", "&": " and ", "%": " percent ", "+": " plus ", "@": " at "}


def normalize_transcript(text: str) -> str:
    """Drop ``(notes)`` / ``[descriptions]``, lower-case, spell digits (``1`` -> ``one``, ``25`` -> ``twenty five``) and ``* #`` (``star``, ``pound``),
    turn ``-``/``/`` into spaces, drop other punctuation; result uses only ``a-z``, ``'`` and single spaces."""
    t = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text.lower())  # (notes) and [descriptions] are not spoken
    for k, v in _SYMBOLS.items():
        t = t.replace(k, v)
    t = re.sub(r"(\d+)", lambda m: " " + (number_to_words(int(m.group(1))) if len(m.group(1)) < 7
                                          else " ".join(_ONES[int(c)] for c in m.group(1))) + " ", t)
    t = re.sub(r"[-/_]", " ", t)
    t = re.sub(r"[^a-z' ]", "", t)
    t = re.sub(r"\s*'\s*(?![a-z])|(?<![a-z])'", " ", t)  # stray quotes
    return re.sub(r"\s+", " ", t).strip()


def parse_asterisk_transcripts(lines) -> dict[str, str]:
    """``name: Transcript`` lines (comments ``;``) -> ``{name: transcript}``; bracketed ``[...]`` non-speech
    descriptions are dropped, as are empty transcripts."""
    out: dict[str, str] = {}
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(";") or ":" not in line:
            continue
        name, _, text = line.partition(":")
        name, text = name.strip(), text.strip()
        if not name or " " in name or not text:
            continue
        if text.startswith("[") and text.endswith("]"):
            continue
        out[name] = text
    return out


def _require(path: Path, package: str) -> None:
    if not path.exists():
        raise MissingPackageError(
            f"{path} not found: install the Debian package(s) {package} (e.g. `sudo apt-get install {package}`)"
        )


def read_asterisk_prompts(sounds_dir: Path | str = ASTERISK_SOUNDS_DIR,
                          transcripts: Path | str = ASTERISK_TRANSCRIPTS) -> list[SpeechItem]:
    """Transcribed prompts of ``asterisk-core-sounds-en-wav`` (8 kHz WAV) that have a speech transcript, sorted."""
    sounds_dir, transcripts = Path(sounds_dir), Path(transcripts)
    _require(sounds_dir, "asterisk-core-sounds-en-wav")
    _require(transcripts, "asterisk-core-sounds-en")
    opener = gzip.open if transcripts.suffix == ".gz" else open
    with opener(transcripts, "rt", encoding="utf-8", errors="replace") as f:
        table = parse_asterisk_transcripts(f)
    items = []
    for name, text in sorted(table.items()):
        wav = sounds_dir / f"{name}.wav"
        norm = normalize_transcript(text)
        if wav.is_file() and norm:
            items.append(SpeechItem(f"asterisk/{name}", wav, text, norm, "asterisk", 8000))
    return items


_SPHINX_LINE = re.compile(r"^(.*?)\s*\(([^()]+)\)\s*$")


def parse_sphinx_transcription(lines) -> dict[str, str]:
    """Sphinx transcription lines ``<s> words </s> (utt-id)`` -> ``{utt_id: words}``."""
    out = {}
    for raw in lines:
        m = _SPHINX_LINE.match(raw.strip())
        if not m:
            continue
        words = re.sub(r"</?s>", " ", m.group(1))
        words = re.sub(r"\s+", " ", words).strip()
        if words:
            out[m.group(2).strip()] = words
    return out


def read_pocketsphinx(root: Path | str = POCKETSPHINX_DIR) -> list[SpeechItem]:
    """The transcribed utterances of ``pocketsphinx-testdata`` (librivox, cards, tidigits), 16 kHz."""
    root = Path(root)
    _require(root, "pocketsphinx-testdata")
    items = []
    for sub, tfile in (("librivox", "transcription"), ("cards", "cards.transcription")):
        p = root / sub / tfile
        if not p.is_file():
            continue
        for utt, words in sorted(parse_sphinx_transcription(p.read_text().splitlines()).items()):
            wav = root / sub / f"{utt}.wav"
            if wav.is_file():
                items.append(SpeechItem(f"pocketsphinx/{sub}/{utt}", wav, words, normalize_transcript(words),
                                        "pocketsphinx", 16000))
    # tidigits/dhd.2934z.raw: file name spells the digits (z = zero), as in tidigits.lsn
    raw = root / "tidigits" / "dhd.2934z.raw"
    if raw.is_file():
        words = "two nine three four zero"
        items.append(SpeechItem("pocketsphinx/tidigits/dhd.2934z", raw, words, words, "pocketsphinx", 16000))
    return items
