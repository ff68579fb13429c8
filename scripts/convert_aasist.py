"""Publish the AASIST authors' released weights in the zoo's hub layout.

    python scripts/convert_aasist.py [--src tests/fixtures/reference/aasist] [--out hub/zoo-models]

Reads AASIST.pth / AASIST-L.pth (clovaai/aasist @ a04c986, MIT) with ``zoo.models.aasist.convert_checkpoint``,
loads them strictly, checks the golden logits, and writes ``<out>/aasist.asvspoof2019`` and
``<out>/aasist_l.asvspoof2019`` (config.json + model.safetensors + README.md) with ``zoo.hub.save_pretrained``.
Prints the sha256 of each model.safetensors (the registry's ``PretrainedSource.sha256``).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import zoo
from zoo.hub import save_pretrained, sha256_file
from zoo.models.aasist import convert_checkpoint

# Logits (spoof, bona fide) of the official code on 0.1 sin(2pi 440 t) + 0.05 sin(2pi 1234 t), 64600 samples.
GOLDEN = {"aasist": (4.698488, -5.037317), "aasist_l": (6.401302, -5.689848)}
FILES = {"aasist": "AASIST.pth", "aasist_l": "AASIST-L.pth"}
AUTHORS = {"aasist": {"eer": 0.83, "min_tdcf": 0.0275}, "aasist_l": {"eer": 0.99, "min_tdcf": 0.0309}}

CARD = """## About these weights

These are the weights released by the AASIST authors (clovaai/aasist, `models/weights/{file}`, commit a04c986,
MIT licence, Copyright (c) 2021-present NAVER Corp.), converted to safetensors without change. The zoo's
re-implementation reproduces the official outputs to ~2e-6 (tests/models/test_aasist.py).

- Input: 16 kHz mono waveform, 64,600 samples (~4 s); shorter clips are tiled (repeated), longer ones cropped.
- Output: `(embedding (B, 160), logits (B, 2))`. **Score = `logits[:, 1]`, the bona-fide logit** (higher = more
  likely genuine human speech); class 0 = spoof.
- Metrics above are **as reported by the authors** (README of clovaai/aasist) on the ASVspoof 2019 LA evaluation
  set: EER in %, min t-DCF with the ASVspoof 2019 cost model. They were not re-measured here (the dataset is not
  redistributable). Trained on the ASVspoof 2019 LA train subset only, without data augmentation.
- Parameters: {params:,} (counted as the authors do, including the unused `bn1` layers).
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--src", default="tests/fixtures/reference/aasist")
    p.add_argument("--out", default="hub/zoo-models")
    args = p.parse_args()
    n = torch.arange(64600, dtype=torch.float64)
    x = (0.1 * torch.sin(2 * math.pi * 440 * n / 16000) + 0.05 * torch.sin(2 * math.pi * 1234 * n / 16000)).float()
    for arch, fname in FILES.items():
        model = zoo.create_model(arch)
        model.load_state_dict(convert_checkpoint(Path(args.src) / fname), strict=True)
        model.eval()
        with torch.no_grad():
            _, logits = model(x[None])
        diff = (logits[0] - torch.tensor(GOLDEN[arch])).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f"{arch}: logits {logits.tolist()} differ from the official {GOLDEN[arch]} by {diff}")
        params = sum(p.numel() for p in model.parameters())
        folder = Path(args.out) / f"{arch}.asvspoof2019"
        save_pretrained(
            model, folder, metrics={"eer": AUTHORS[arch]["eer"], "min_tdcf": AUTHORS[arch]["min_tdcf"]},
            dataset="ASVspoof 2019 LA",
            recipe="The authors' recipe (config/{}.conf): Adam lr 1e-4, wd 1e-4, cosine to 5e-6 per step, 100 epochs, "
                   "batch 24, weighted CE [0.1 spoof, 0.9 bona fide], SWA over the epochs whose dev EER improved. "
                   "Not retrained here.".format("AASIST" if arch == "aasist" else "AASIST-L"),
            extra_card=CARD.format(file=fname, params=params), name=f"{arch}.asvspoof2019",
        )
        print(f"{folder}: golden diff {diff:.2e}, params {params}, sha256 {sha256_file(folder / 'model.safetensors')}")


if __name__ == "__main__":
    main()
