"""Shared Lightning plumbing for every task in the zoo.

A task wraps one registered ``nn.Module`` (``self.model``, built with ``zoo.create_model``) and adds the loss, the
metrics and the optimizer/scheduler recipe. Models stay free of Lightning so they export; everything
training-specific lives here.

Subclasses implement :meth:`ZooTask.step` (one batch -> loss, logging their own metrics) or override
``training_step`` / ``validation_step`` / ``test_step`` directly. Example::

    class MyTask(ZooTask):
        def __init__(self, model, model_args=None, pretrained=False, optimizer=None, scheduler=None, alpha=1.0):
            super().__init__(model, model_args, pretrained, optimizer, scheduler)   # saves *all* init args

        def step(self, batch, stage):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log_metrics(stage, {"loss": loss}, batch_size=x.shape[0])
            return loss

Recipe dicts (YAML-friendly)::

    optimizer: {name: adamw, lr: 2.0e-3, weight_decay: 0.05, betas: [0.9, 0.999]}   # any timm optimizer + its kwargs
    scheduler: {name: cosine, warmup_epochs: 1, min_lr_ratio: 0.01}                 # or warmup_steps
    scheduler: {name: noam, warmup_steps: 10000, hold_steps: 20000, decay: inverse_sqrt}
    scheduler: {name: constant, warmup_steps: 500}   |   {name: none}
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from zoo.registry import create_model

__all__ = ["SCHEDULERS", "STAGES", "ZooTask", "build_lr_lambda", "build_optimizer"]

STAGES = ("train", "val", "test", "predict")
SCHEDULERS = ("cosine", "constant", "noam", "none")

_DEFAULT_OPTIMIZER: dict[str, Any] = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}
_DEFAULT_SCHEDULER: dict[str, Any] = {"name": "cosine", "warmup_epochs": 0}


def build_optimizer(module: nn.Module, config: dict[str, Any] | None) -> torch.optim.Optimizer:
    """Optimizer from a recipe dict through ``timm.optim.create_optimizer_v2``.

    ``config``: ``name`` (alias ``opt``; any timm optimizer name: adamw, sgd, lamb, ...), ``lr``, ``weight_decay`` and
    any further keyword timm or the optimizer accepts (``betas``, ``momentum``, ``eps``, ``layer_decay``,
    ``filter_bias_and_bn``...). Bias and norm parameters get no weight decay (timm's default).
    """
    from timm.optim import create_optimizer_v2

    if config is not None and not isinstance(config, dict):
        raise TypeError(f"optimizer must be a dict like {{'name': 'adamw', 'lr': 1e-3}}, got {type(config).__name__}")
    cfg = dict(_DEFAULT_OPTIMIZER if config is None else config)
    if "name" in cfg and "opt" in cfg:
        raise ValueError("optimizer: give either 'name' or 'opt', not both")
    name = cfg.pop("name", cfg.pop("opt", "adamw"))
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a string, got {name!r}")
    if "lr" not in cfg:
        raise ValueError(f"optimizer {name!r}: 'lr' is required")
    if "betas" in cfg and cfg["betas"] is not None:
        cfg["betas"] = tuple(float(b) for b in cfg["betas"])
    lr = float(cfg.pop("lr"))
    weight_decay = float(cfg.pop("weight_decay", 0.0))
    try:
        return create_optimizer_v2(module, opt=name, lr=lr, weight_decay=weight_decay, **cfg)
    except (KeyError, AssertionError, ValueError) as e:  # timm signals an unknown name in these ways
        raise ValueError(f"optimizer: unknown or invalid optimizer {name!r} ({e})") from e


def build_lr_lambda(
    config: dict[str, Any] | None, total_steps: int, steps_per_epoch: float | None = None
) -> Callable[[int], float] | None:
    """Multiplicative LR factor ``f(step)`` for ``torch.optim.lr_scheduler.LambdaLR`` (stepped per optimizer step).

    Args:
        config: ``{"name": "cosine" | "constant" | "noam" | "none", ...}``. Keys:
            - ``warmup_steps`` (int) or ``warmup_epochs`` (float, needs ``steps_per_epoch``): linear warm-up from
              ``warmup_start_ratio`` (default 0) to 1, all schedules but ``none``.
            - cosine: ``min_lr_ratio`` (default 0): the factor reached at ``total_steps``.
            - noam: ``hold_steps`` (default 0) at the peak, then ``decay``: ``inverse_sqrt`` (default; the factor is
              ``sqrt((warmup+hold) / step)``), ``exponential`` (``decay_rate`` per ``decay_steps`` steps, default 0.5
              per 10% of training) or ``cosine`` (to ``min_lr_ratio`` at ``total_steps``); floored at ``min_lr_ratio``.
        total_steps: optimizer steps in the whole run (``trainer.estimated_stepping_batches``).
        steps_per_epoch: optimizer steps per epoch, needed to convert ``warmup_epochs``.
    Returns:
        ``f(step) -> float`` or ``None`` for ``name: none`` (no scheduler at all).
    """
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"scheduler must be a dict like {{'name': 'cosine'}}, got {type(config).__name__}")
    cfg = dict(_DEFAULT_SCHEDULER if config is None else config)
    name = str(cfg.pop("name", "cosine")).lower()
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler name must be one of {SCHEDULERS}, got {name!r}")
    if name == "none":
        if cfg:
            raise ValueError(f"scheduler 'none' takes no options, got {sorted(cfg)}")
        return None
    total_steps = max(int(total_steps), 1)

    if "warmup_steps" in cfg and "warmup_epochs" in cfg:
        raise ValueError("scheduler: give either 'warmup_steps' or 'warmup_epochs', not both")
    if "warmup_epochs" in cfg:
        epochs = float(cfg.pop("warmup_epochs"))
        if epochs and not steps_per_epoch:
            raise ValueError("scheduler: 'warmup_epochs' needs a known epoch length; use 'warmup_steps' with max_steps")
        warmup = round(epochs * (steps_per_epoch or 0))
    else:
        warmup = int(cfg.pop("warmup_steps", 0))
    if warmup < 0:
        raise ValueError(f"scheduler: warm-up must be >= 0, got {warmup}")
    start = float(cfg.pop("warmup_start_ratio", 0.0))
    min_ratio = float(cfg.pop("min_lr_ratio", 0.0))
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"scheduler: min_lr_ratio must be in [0, 1], got {min_ratio}")

    def warm(step: int) -> float:
        # (step + 1) so the very first optimizer step already has a non-zero lr.
        return start + (1.0 - start) * min(1.0, (step + 1) / warmup)

    if name == "constant":
        _no_extra(name, cfg)
        return lambda step: warm(step) if step < warmup else 1.0

    if name == "cosine":
        _no_extra(name, cfg)
        decay_steps = max(total_steps - warmup, 1)

        def cosine(step: int) -> float:
            if step < warmup:
                return warm(step)
            t = min(1.0, (step - warmup) / decay_steps)
            return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

        return cosine

    # noam: warm-up, hold, decay
    hold = int(cfg.pop("hold_steps", 0))
    decay = str(cfg.pop("decay", "inverse_sqrt"))
    peak_end = warmup + hold
    if decay == "inverse_sqrt":
        _no_extra(name, cfg)
        ref = max(peak_end, 1)
        after = lambda s: math.sqrt(ref / max(s, ref))
    elif decay == "exponential":
        rate = float(cfg.pop("decay_rate", 0.5))
        every = int(cfg.pop("decay_steps", max(total_steps // 10, 1)))
        _no_extra(name, cfg)
        if not 0.0 < rate <= 1.0 or every <= 0:
            raise ValueError(f"scheduler noam: decay_rate must be in (0, 1] and decay_steps > 0, got {rate}, {every}")
        after = lambda s: rate ** ((s - peak_end) / every)
    elif decay == "cosine":
        _no_extra(name, cfg)
        span = max(total_steps - peak_end, 1)
        after = lambda s: 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - peak_end) / span)))
    else:
        raise ValueError(f"scheduler noam: decay must be 'inverse_sqrt', 'exponential' or 'cosine', got {decay!r}")

    def noam(step: int) -> float:
        if step < warmup:
            return warm(step)
        if step < peak_end:
            return 1.0
        return max(min_ratio, after(step))

    return noam


def _no_extra(name: str, cfg: dict[str, Any]) -> None:
    if cfg:
        raise ValueError(f"scheduler {name!r}: unknown option(s) {sorted(cfg)}")


class ZooTask(L.LightningModule):
    """Base LightningModule: a zoo model + optimizer/scheduler recipe + stage-prefixed logging + rebuild info.

    Args:
        model: registered name (``"repnext_m0"``) or name.tag.
        model_args: constructor overrides for ``zoo.create_model`` (JSON-serialisable, e.g. ``{"num_classes": 10}``).
        pretrained: as ``zoo.create_model``: False, True, a tag, ``"hf-hub:org/name"`` or a local folder.
        optimizer: recipe dict for :func:`build_optimizer` (default AdamW lr 1e-3, wd 0.05).
        scheduler: recipe dict for :func:`build_lr_lambda` (default cosine, no warm-up), stepped per optimizer step.

    ``save_hyperparameters()`` runs here and records the init args of the subclass too, so a subclass only calls
    ``super().__init__(...)``. Checkpoints carry ``checkpoint["zoo_config"]`` (task class, its init args, the model's
    ``zoo_config`` and the datamodule class + hparams) so ``eval.py`` can rebuild everything from one file.
    """

    def __init__(
        self,
        model: str,
        model_args: dict | None = None,
        pretrained: bool | str = False,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
    ):
        super().__init__()
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a registered model name (str), got {model!r}")
        if model_args is not None and not isinstance(model_args, dict):
            raise TypeError(f"model_args must be a dict of constructor overrides, got {type(model_args).__name__}")
        self.save_hyperparameters()
        self.model = create_model(model, pretrained=pretrained, **dict(model_args or {}))
        # Fail at construction, not at fit time, on a bad recipe.
        if optimizer is not None and not isinstance(optimizer, dict):
            raise TypeError(f"optimizer must be a dict, got {type(optimizer).__name__}")
        build_lr_lambda(scheduler, total_steps=1, steps_per_epoch=1)

    # ------------------------------------------------------------------ forward / steps
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the wrapped model."""
        return self.model(*args, **kwargs)

    def step(self, batch: Any, stage: str) -> torch.Tensor | None:
        """One batch of ``stage`` ("train" | "val" | "test") -> loss (a scalar tensor). Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement step(batch, stage) or the *_step hooks")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self.step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self.step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self.step(batch, "test")

    # ------------------------------------------------------------------ logging
    def log_metrics(
        self,
        stage: str,
        metrics: dict[str, Any],
        *,
        batch_size: int | None = None,
        prog_bar: bool | tuple[str, ...] = False,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
    ) -> None:
        """Log ``metrics`` as ``"<stage>/<name>"`` (e.g. ``train/loss``, ``val/acc1``).

        Values may be tensors, floats or torchmetrics ``Metric`` objects (Lightning then computes, syncs across ranks
        and resets them per epoch). Defaults: train logs per step and per epoch, val/test per epoch only; plain
        tensors are averaged across ranks (``sync_dist``) at epoch end. ``prog_bar`` is a bool or the names to show.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        train = stage == "train"
        on_step = train if on_step is None else on_step
        on_epoch = True if on_epoch is None else on_epoch
        for name, value in metrics.items():
            show = prog_bar if isinstance(prog_bar, bool) else name in prog_bar
            is_metric = hasattr(value, "compute") and hasattr(value, "update")
            self.log(
                f"{stage}/{name}",
                value,
                on_step=on_step,
                on_epoch=on_epoch,
                prog_bar=show,
                batch_size=batch_size,
                sync_dist=(on_epoch and not is_metric and not train),
            )

    # ------------------------------------------------------------------ optimisation
    def output_dir(self) -> Path:
        """Where test-time files (score lists, plots, overlays) go: ``hparams.output_dir`` when the task has one,
        else the trainer's log dir (eval.py: next to metrics.json), else the working directory."""
        explicit = getattr(self.hparams, "output_dir", None)
        if explicit:
            return Path(explicit)
        trainer = self._trainer
        return Path(trainer.log_dir or trainer.default_root_dir) if trainer is not None else Path(".")

    def optimizer_module(self) -> nn.Module:
        """The module whose parameters are optimised (default ``self.model``; override to add loss parameters)."""
        return self.model

    def configure_optimizers(self):
        """Optimizer from ``hparams.optimizer`` and a per-step LambdaLR from ``hparams.scheduler``."""
        opt = build_optimizer(self.optimizer_module(), self.hparams.get("optimizer"))
        total, per_epoch = self._schedule_lengths()
        fn = build_lr_lambda(self.hparams.get("scheduler"), total_steps=total, steps_per_epoch=per_epoch)
        if fn is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": LambdaLR(opt, fn), "interval": "step", "frequency": 1}}

    def _schedule_lengths(self) -> tuple[int, float | None]:
        trainer = self._trainer
        if trainer is None:
            return 1, None
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("the scheduler needs a finite run length: set trainer.max_epochs or trainer.max_steps")
        total = int(total)
        max_epochs = trainer.max_epochs
        per_epoch = total / max_epochs if max_epochs and max_epochs > 0 and trainer.max_steps in (-1, None) else None
        if per_epoch is None and max_epochs and max_epochs > 0:
            # max_steps caps the run: estimate one epoch from the dataloader length.
            try:
                batches = len(trainer.fit_loop._data_source.dataloader())
                per_epoch = batches / max(trainer.accumulate_grad_batches, 1) / max(trainer.world_size, 1) or None
            except Exception:  # noqa: BLE001 - unsized loaders
                per_epoch = None
        return total, per_epoch

    # ------------------------------------------------------------------ checkpoints / cards
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store ``zoo_config``: what eval.py needs to rebuild the task, the model and the data."""
        cls = type(self)
        cfg: dict[str, Any] = {
            "task": f"{cls.__module__}.{cls.__qualname__}",
            "init_args": _plain(dict(self.hparams)),
            "model": _plain(getattr(self.model, "zoo_config", {"architecture": self.hparams.get("model")})),
        }
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            dcls = type(dm)
            cfg["datamodule"] = {
                "class_path": f"{dcls.__module__}.{dcls.__qualname__}",
                "init_args": _plain(dict(getattr(dm, "hparams", {}) or {})),
            }
        try:
            cfg["card"] = _plain(self.model_card_info())
        except Exception as e:  # noqa: BLE001 - card info is informative only; never break checkpointing
            cfg["card_error"] = repr(e)
        checkpoint["zoo_config"] = cfg

    def model_card_info(self) -> dict[str, Any]:
        """Facts for the model card: ``dataset`` (name or None) and ``recipe`` (a flat summary dict).

        Subclasses extend the dict (``info = super().model_card_info(); info["recipe"]["label_smoothing"] = ...``).
        """
        hp = self.hparams
        recipe: dict[str, Any] = {
            "task": type(self).__name__,
            "model": hp.get("model"),
            "model_args": dict(hp.get("model_args") or {}),
            "pretrained_init": hp.get("pretrained") or False,
            "optimizer": dict(hp.get("optimizer") or _DEFAULT_OPTIMIZER),
            "scheduler": dict(hp.get("scheduler") or _DEFAULT_SCHEDULER),
        }
        dataset = None
        trainer = self._trainer
        if trainer is not None:
            recipe["max_epochs"] = trainer.max_epochs
            if trainer.max_steps not in (-1, None):
                recipe["max_steps"] = trainer.max_steps
            recipe["precision"] = str(trainer.precision)
            recipe["devices"] = trainer.world_size
            recipe["accumulate_grad_batches"] = trainer.accumulate_grad_batches
            dm = getattr(trainer, "datamodule", None)
            if dm is not None:
                dataset = getattr(dm, "dataset_name", None) or type(dm).__name__
                if getattr(dm, "batch_size", None) is not None:
                    recipe["batch_size"] = dm.batch_size
                if hasattr(dm, "card_info"):
                    recipe.update(dm.card_info())
        return {"dataset": dataset, "recipe": recipe}


def _plain(obj: Any) -> Any:
    """Recursively turn hparams (AttributeDicts, tuples, Paths) into JSON-friendly builtins."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
