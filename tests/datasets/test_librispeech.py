"""LibriSpeech-layout reader, padding collate and length bucketing on a small generated copy."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from zoo.datasets.librispeech import LengthBucketBatchSampler, LibriSpeechDataset, collate_speech, scan_librispeech


def _make(root, spec):
    for spk, chap, utts in spec:
        d = root / str(spk) / str(chap)
        d.mkdir(parents=True)
        lines = []
        for i, (sec, sr, text) in enumerate(utts):
            utt = f"{spk}-{chap}-{i:04d}"
            sf.write(str(d / f"{utt}.flac"), np.random.default_rng(i).uniform(-0.3, 0.3, int(sec * sr)), sr)
            lines.append(f"{utt} {text}")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")


def test_reader_collate_and_buckets(tmp_path):
    _make(tmp_path, [(19, 198, [(0.5, 16000, "HELLO WORLD"), (1.0, 8000, "A B")]),
                     (26, 495, [(0.25, 16000, "IT'S ME"), (2.0, 16000, "LONG ONE")])])
    items = scan_librispeech(tmp_path)
    assert [i[0] for i in items] == ["19-198-0000", "19-198-0001", "26-495-0000", "26-495-0001"]
    ds = LibriSpeechDataset(tmp_path, max_seconds=1.5)
    assert len(ds) == 3 and ds[1]["audio"].numel() == 16000  # 8 kHz file resampled
    assert ds[0]["text"] == "HELLO WORLD" and ds[0]["audio"].dtype == torch.float32
    b = collate_speech([ds[0], ds[1]])
    assert b["audio"].shape == (2, 16000) and b["audio_lengths"].tolist() == [8000, 16000]
    assert b["audio"][0, 8000:].abs().sum() == 0
    s = LengthBucketBatchSampler([1.0, 5.0, 1.1, 5.2, 0.9], batch_size=2, shuffle=True, seed=0)
    batches = list(s)
    assert sorted(sorted(x) for x in batches) == [[0, 4], [1, 2], [3]]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan_librispeech(tmp_path / "missing")
    with pytest.raises(ValueError, match="trans.txt"):
        scan_librispeech(tmp_path)
    (tmp_path / "1" / "2").mkdir(parents=True)
    (tmp_path / "1" / "2" / "1-2.trans.txt").write_text("1-2-0000 NO AUDIO\n")
    with pytest.raises(ValueError, match="no audio"):
        scan_librispeech(tmp_path)
