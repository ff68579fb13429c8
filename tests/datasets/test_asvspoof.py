"""ASVspoof 2019 LA reader on a small generated copy of the layout; spoof_speech helpers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.datasets.asvspoof import (
    ASVspoofDataModule,
    ASVspoofDataset,
    audio_dir,
    protocol_path,
    random_crop_pad,
    read_protocol,
    repeat_pad,
)

sf = pytest.importorskip("soundfile")
LENGTHS = {"LA_T_0001": 1000, "LA_T_0002": 64600, "LA_T_0003": 70000, "LA_T_0004": 30000}


@pytest.fixture()
def la_root(tmp_path):
    rng = np.random.default_rng(0)
    for subset in ("train", "dev", "eval"):
        audio_dir(tmp_path, subset).mkdir(parents=True)
        lines = []
        for i, (utt, n) in enumerate(LENGTHS.items()):
            utt = utt.replace("_T_", f"_{subset[0].upper()}_")
            x = (np.arange(n) % 997 / 997.0 - 0.5).astype(np.float32) * 0.5 + rng.normal(0, 1e-3, n).astype(np.float32)
            sf.write(str(audio_dir(tmp_path, subset) / f"{utt}.flac"), x, 16000, subtype="PCM_16")
            lines.append(f"LA_00{i} {utt} - {'-' if i % 2 == 0 else 'A01'} {'bonafide' if i % 2 == 0 else 'spoof'}")
        protocol_path(tmp_path, subset).parent.mkdir(exist_ok=True)
        protocol_path(tmp_path, subset).write_text("\n".join(lines) + "\n")
    return tmp_path


def test_protocol(la_root, tmp_path):
    entries = read_protocol(protocol_path(la_root, "train"))
    assert [e.label for e in entries] == [1, 0, 1, 0]
    assert entries[1].system == "A01" and entries[0].speaker == "LA_000"
    bad = tmp_path / "bad.txt"
    bad.write_text("LA_0001 LA_T_1 - A01\n")
    with pytest.raises(ValueError, match="5 fields"):
        read_protocol(bad)


def test_repeat_pad_not_zero():
    x = np.arange(1, 11, dtype=np.float32)
    y = repeat_pad(x, 25)
    assert y.shape == (25,) and np.all(y != 0) and y[10] == 1 and y[24] == 5
    assert np.array_equal(repeat_pad(np.arange(30.0), 25), np.arange(25.0))
    z = random_crop_pad(np.arange(25.0), 25, np.random.default_rng(0))  # exactly n: the authors' code crashed here
    assert np.array_equal(z, np.arange(25.0))
    c = random_crop_pad(np.arange(100.0), 25, np.random.default_rng(0))
    assert c.shape == (25,) and np.all(np.diff(c) == 1)


def test_dataset_items(la_root):
    ev = ASVspoofDataset(la_root, "eval", train=False)
    assert len(ev) == 4
    for i in range(4):
        x, y = ev[i]
        assert x.shape == (64600,) and x.dtype == torch.float32 and y in (0, 1)
    short = ev.load(0)
    x0, _ = ev[0]
    assert torch.allclose(x0[:1000], torch.from_numpy(short)) and torch.allclose(x0[1000:2000], x0[:1000])
    x2, _ = ev[2]
    assert torch.allclose(x2, torch.from_numpy(ev.load(2)[:64600]))  # eval: first 64600 samples
    tr = ASVspoofDataset(la_root, "train", train=True, seed=1)
    assert tr[2][0].shape == (64600,)


def test_datamodule(la_root, tmp_path):
    dm = ASVspoofDataModule(root=str(la_root), batch_size=2, num_workers=0)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 64600) and y.dtype == torch.int64
    dm.setup("test")
    assert len(dm.test_dataloader()) == 2
    with pytest.raises(FileNotFoundError, match="spoof_speech"):
        ASVspoofDataModule(root=str(tmp_path / "nowhere"))


def test_spoof_speech_split_by_text():
    from zoo.datasets.spoof_speech import normalise_text, split_of

    assert normalise_text("Please  enter, your PIN!") == "please enter your pin"
    texts = [f"sentence number {i}" for i in range(300)]
    splits = [split_of(t) for t in texts]
    assert {*splits} == {"train", "dev", "eval"}
    assert split_of(normalise_text("Hello there")) == split_of(normalise_text("hello, there!"))
    assert 0.6 < splits.count("train") / 300 < 0.8


def test_spoof_speech_missing_packages(monkeypatch, tmp_path):
    import zoo.datasets.debian_speech as ds
    import zoo.datasets.spoof_speech as ss

    monkeypatch.setattr(ss, "read_asterisk_prompts", lambda: ds.read_asterisk_prompts(sounds_dir=tmp_path / "none"))
    with pytest.raises(RuntimeError, match="apt-get install asterisk-core-sounds-en-wav"):
        ss.find_sources()


def test_prepared_corpus_disjoint_sentences():
    """When the corpus was built (python -m zoo.datasets.spoof_speech prepare), no sentence is in two subsets."""
    from pathlib import Path

    from zoo.datasets.spoof_speech import normalise_text

    meta = Path(__file__).resolve().parents[2] / "data" / "spoof_speech" / "metadata.tsv"
    if not meta.is_file():
        pytest.skip("data/spoof_speech not prepared")
    where: dict[str, set] = {}
    for line in meta.read_text().splitlines()[1:]:
        f = line.split("\t")
        where.setdefault(normalise_text(f[6]), set()).add(f[1])
    assert all(len(v) == 1 for v in where.values())
