"""Train a zoo model from a YAML config: ``python train.py --config configs/repnext/m0_fashion_mnist_cpu.yaml``."""
from zoo.cli import train

if __name__ == "__main__":
    train()
