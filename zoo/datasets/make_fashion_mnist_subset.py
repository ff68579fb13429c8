"""Make the Fashion-MNIST subset that ships in the repo (zoo/datasets/data/fashion_mnist_subset/).

Takes the first ``--train-per-class`` training and ``--test-per-class`` test images of every class (in file order,
so the result is deterministic) from the full IDX files of the Debian package ``dataset-fashion-mnist`` (or
``--src``) and writes them as gzipped IDX files with the original names. Default: 600 + 100 per class = 6,000 train
and 1,000 test images (~3 MB).

    apt-get install dataset-fashion-mnist && python zoo/datasets/make_fashion_mnist_subset.py
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script from a source checkout: make `import zoo` resolve to the repo
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zoo.datasets.images import (
    DEBIAN_FASHION_MNIST_DIR,
    EMBEDDED_FASHION_MNIST_DIR,
    find_fashion_mnist,
    read_idx,
    write_idx,
)


def _first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    idx = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    return np.sort(idx)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", default=str(DEBIAN_FASHION_MNIST_DIR), help="folder with the full IDX files")
    p.add_argument("--out", default=str(EMBEDDED_FASHION_MNIST_DIR))
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--test-per-class", type=int, default=100)
    a = p.parse_args(argv)
    files = find_fashion_mnist(a.src if a.src != str(DEBIAN_FASHION_MNIST_DIR) else "debian")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, per in (("train", a.train_per_class), ("test", a.test_per_class)):
        images, labels = read_idx(files[split][0]), read_idx(files[split][1])
        keep = _first_per_class(labels, per)
        prefix = "train" if split == "train" else "t10k"
        pairs = ((f"{prefix}-images-idx3-ubyte.gz", images[keep]), (f"{prefix}-labels-idx1-ubyte.gz", labels[keep]))
        for stem, arr in pairs:
            write_idx(out / stem, arr)
            digest = hashlib.sha256((out / stem).read_bytes()).hexdigest()[:16]
            print(f"{out / stem}: shape {arr.shape}, {(out / stem).stat().st_size / 1e6:.2f} MB, sha256 {digest}...")
    (out / "README.md").write_text(
        "# Fashion-MNIST subset (embedded default)\n\n"
        f"The first {a.train_per_class} training and {a.test_per_class} test images of each of the 10 classes of\n"
        "Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; MIT licence), taken in file order from the Debian package\n"
        "`dataset-fashion-mnist` by `zoo/datasets/make_fashion_mnist_subset.py`. Same IDX format and file names as the\n"
        "original release; 28x28 grey images, labels 0-9.\n"
    )


if __name__ == "__main__":
    main()
