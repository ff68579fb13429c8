"""LightningDataModules for the zoo's tasks (``zoo.datasets``).

Images: :class:`ImageFolderDataModule` (``train/<class>/*.jpg`` + ``val/<class>/*.jpg``) and
:class:`FashionMNISTDataModule` (raw IDX files: a folder, the Debian package ``dataset-fashion-mnist``, or the subset
embedded in the repo). Speech and tabular modules live in their own files (``zoo.datasets.audio_*``,
``zoo.datasets.tabular*``) and are imported by full path.
"""
from zoo.datasets.images import (
    FASHION_MNIST_CLASSES,
    ArrayImageDataset,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    find_fashion_mnist,
    read_idx,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "ArrayImageDataset",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "find_fashion_mnist",
    "read_idx",
]
