"""Offline speech corpus: transcript parsing (always, on generated copies) and the real Debian packages (skipped
when they are not installed)."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import soundfile as sf

from zoo.datasets.debian_speech import (
    ASTERISK_SOUNDS_DIR,
    ASTERISK_TRANSCRIPTS,
    MissingPackageError,
    normalize_transcript,
    parse_asterisk_transcripts,
    parse_sphinx_transcription,
    read_asterisk_prompts,
)
from zoo.datasets.offline_speech import split_of


def test_parsing_and_normalisation(tmp_path):
    text = ("; Core Asterisk Sounds in English\n\nactivated: Activated.\nbeep: [this is a simple beep tone]\n"
            "digits/25: twenty-five\nconf-x: Press 1 or * then # (note: pause)\n")
    table = parse_asterisk_transcripts(text.splitlines())
    assert table == {"activated": "Activated.", "digits/25": "twenty-five", "conf-x": "Press 1 or * then # (note: pause)"}
    assert normalize_transcript(table["conf-x"]) == "press one or star then pound"
    assert normalize_transcript("I'm 342 'quoted' dollar [$]") == "i'm three hundred forty two quoted dollar"
    assert parse_sphinx_transcription(["<s> ten of clubs  </s> (001)", "junk"]) == {"001": "ten of clubs"}
    # a generated tiny copy of the package layout
    snd = tmp_path / "sounds"
    (snd / "digits").mkdir(parents=True)
    for name in ("activated", "digits/25"):
        sf.write(str(snd / f"{name}.wav"), np.zeros(800, dtype=np.float32), 8000)
    tr = tmp_path / "t.txt.gz"
    with gzip.open(tr, "wt") as f:
        f.write(text)
    items = read_asterisk_prompts(snd, tr)
    assert [(i.utt_id, i.normalized, i.sample_rate) for i in items] == [
        ("asterisk/activated", "activated", 8000), ("asterisk/digits/25", "twenty five", 8000)]
    with pytest.raises(MissingPackageError, match="asterisk-core-sounds-en-wav"):
        read_asterisk_prompts(tmp_path / "nope", tr)
    assert {split_of(f"text {i}") for i in range(200)} == {"train", "dev", "test"}


@pytest.mark.skipif(not (ASTERISK_SOUNDS_DIR.is_dir() and ASTERISK_TRANSCRIPTS.is_file()),
                    reason="Debian packages asterisk-core-sounds-en-wav / asterisk-core-sounds-en not installed")
def test_installed_asterisk_prompts():
    items = read_asterisk_prompts()
    assert 540 <= len(items) <= 568
    assert all(set(i.normalized) <= set(" 'abcdefghijklmnopqrstuvwxyz") for i in items)
    assert any(i.utt_id == "asterisk/digits/5" and i.normalized == "five" for i in items)
