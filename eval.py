"""Evaluate a checkpoint or pretrained model: ``python eval.py --ckpt runs/.../best.ckpt [--card-out DIR]``."""
from zoo.cli import evaluate

if __name__ == "__main__":
    evaluate()
