"""Lightning tasks: the training plumbing around plain ``nn.Module`` models.

``ZooTask`` (base: optimizer/scheduler recipe, stage-prefixed logging, checkpoint rebuild info, model-card facts) and
the concrete tasks built on it. Other task modules in this package (``zoo.tasks.antispoof``, ``zoo.tasks.asr``,
``zoo.tasks.tabular``...) are imported by their full path.
"""
from zoo.tasks.base import ZooTask, build_lr_lambda, build_optimizer

__all__ = ["ImageClassificationTask", "ZooTask", "build_lr_lambda", "build_optimizer"]


def __getattr__(name: str):
    if name == "ImageClassificationTask":
        from zoo.tasks.classification import ImageClassificationTask

        return ImageClassificationTask
    raise AttributeError(f"module 'zoo.tasks' has no attribute {name!r}")
