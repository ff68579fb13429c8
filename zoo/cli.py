"""Training and evaluation entry points: ``train.py`` / ``eval.py`` / ``python -m zoo train|eval``.

Train (LightningCLI over one YAML per model x dataset)::

    python train.py --config configs/repnext/m0_fashion_mnist_cpu.yaml            # fit, then test the best ckpt
    python train.py --config ... --trainer.max_epochs=2 --trainer.precision=bf16-mixed --trainer.devices=2
    python train.py --config ... --ckpt_path last                                  # resume the same run folder

A run folder (``trainer.default_root_dir``, default ``runs/<config stem>``) holds ``checkpoints/best-*.ckpt`` +
``checkpoints/last.ckpt``, the CSV (and TensorBoard, when installed) logs under ``version_N/`` with ``config.yaml``,
and ``results.json`` (best checkpoint, its monitored score, its validation and test metrics).

Evaluate (no jsonargparse needed)::

    python eval.py --ckpt runs/m0_fashion_mnist/checkpoints/best-epoch009.ckpt [--out metrics.json]
    python eval.py --pretrained hub/zoo-models/repnext_m0.fmnist --config configs/repnext/m0_fashion_mnist.yaml
    python eval.py --ckpt ... --card-out hub/zoo-models/repnext_m0.fmnist --card-dtype float16

writes ``metrics.json`` (the ``trainer.test`` metrics, e.g. ``{"test/acc1": 0.93, ...}``), prints a table and, with
``--card-out``, the hub folder (config.json + model.safetensors + README.md) through ``zoo.hub.save_pretrained``.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

__all__ = ["build_from_config", "evaluate", "load_task_from_checkpoint", "main", "train"]  # + ZooCLI (lazy)

DEFAULT_MONITOR = ("val/loss", "min")


# ------------------------------------------------------------------------------------------------------ train
def _cli_class():
    """Build the LightningCLI subclass lazily: importing lightning.pytorch.cli needs jsonargparse[signatures]."""
    try:
        from lightning.pytorch.cli import LightningCLI
    except ModuleNotFoundError as e:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            f"train.py needs LightningCLI's parser: pip install 'jsonargparse[signatures]>=4.27.7' ({e})"
        ) from e
    from lightning.pytorch.callbacks import (
        LearningRateMonitor,
        ModelCheckpoint,
        TQDMProgressBar,
    )
    from lightning.pytorch.loggers import CSVLogger

    from zoo.tasks.base import ZooTask

    class ZooCLI(LightningCLI):
        """LightningCLI for zoo tasks: ``--config`` YAML with ``model`` (a ZooTask subclass), ``data`` (a
        LightningDataModule), ``trainer``, ``checkpoint`` (ModelCheckpoint args: monitor, mode...), ``seed_everything``
        and ``ckpt_path``. Adds best + last checkpoints in ``<default_root_dir>/checkpoints``, a CSV logger
        (+ TensorBoard when installed), a TQDM progress bar and an LR monitor."""

        def __init__(self, args: Sequence[str] | None = None, **kwargs: Any):
            kwargs.setdefault("model_class", ZooTask)
            kwargs.setdefault("subclass_mode_model", True)
            kwargs.setdefault("datamodule_class", L.LightningDataModule)
            kwargs.setdefault("subclass_mode_data", True)
            kwargs.setdefault("seed_everything_default", 0)
            kwargs.setdefault("auto_configure_optimizers", False)
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            kwargs.setdefault("run", False)
            super().__init__(args=args, **kwargs)

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults(
                {
                    "checkpoint.monitor": DEFAULT_MONITOR[0],
                    "checkpoint.mode": DEFAULT_MONITOR[1],
                    "checkpoint.save_last": True,
                    "checkpoint.save_top_k": 1,
                    "checkpoint.filename": "best-epoch{epoch:03d}",
                    "checkpoint.auto_insert_metric_name": False,
                }
            )
            parser.add_argument("--ckpt_path", type=str | None, default=None,
                                help="resume from a checkpoint: a path or 'last' (this run folder's last.ckpt)")
            parser.add_argument("--test_after_fit", type=bool, default=True,
                                help="run trainer.test on the best checkpoint after fit and record it in results.json")
            parser.add_argument("--progress_refresh_rate", type=int, default=1,
                                help="TQDM progress bar refresh rate in steps (larger: quieter logs)")

        def before_instantiate_classes(self) -> None:
            cfg = self.config
            root = cfg.trainer.get("default_root_dir")
            if not root:
                cfgs = cfg.get("config") or []
                stem = Path(str(cfgs[-1])).stem if cfgs else "run"
                root = os.path.join("runs", stem)
                cfg.trainer.default_root_dir = root
            if not cfg.checkpoint.get("dirpath"):
                cfg.checkpoint.dirpath = os.path.join(root, "checkpoints")

        def instantiate_trainer(self, **kwargs: Any):
            cfg = self.config_init
            tcfg = cfg.trainer
            root = tcfg.get("default_root_dir")
            if tcfg.get("logger") in (None, True) and "logger" not in kwargs:
                loggers: list = [CSVLogger(save_dir=root, name="")]
                try:
                    import tensorboard  # noqa: F401
                    from lightning.pytorch.loggers import TensorBoardLogger

                    loggers.append(TensorBoardLogger(save_dir=root, name="", version=loggers[0].version))
                except ImportError:
                    pass
                kwargs["logger"] = loggers
            extra = []
            callbacks = list(tcfg.get("callbacks") or [])
            if tcfg.get("enable_progress_bar", True) is not False and not any(
                isinstance(c, TQDMProgressBar) for c in callbacks
            ):
                extra.append(TQDMProgressBar(refresh_rate=int(cfg.get("progress_refresh_rate", 1))))
            if tcfg.get("logger") is not False and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
                extra.append(LearningRateMonitor(logging_interval="step"))
            if extra:
                kwargs["callbacks"] = callbacks + extra
            return super().instantiate_trainer(**kwargs)

    return ZooCLI


def __getattr__(name: str):
    if name == "ZooCLI":
        return _cli_class()
    raise AttributeError(f"module 'zoo.cli' has no attribute {name!r}")


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                continue
            v = v.item()
        if isinstance(v, (int, float)):
            out[str(k)] = float(v)
    return out


def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Fit a task from a YAML config (LightningCLI arguments), then test the best checkpoint.

    Returns the results dict also written to ``<default_root_dir>/results.json``: ``best_checkpoint``,
    ``last_checkpoint``, ``monitor``, ``best_score``, ``val`` (metrics of the best checkpoint on the validation set)
    and ``test`` (on the test set; absent with ``--test_after_fit false``).
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    ZooCLI = _cli_class()
    with warnings.catch_warnings():
        # `python -m zoo train ...` passes its own argv; Lightning warns whenever sys.argv differs from args.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = ZooCLI(args=None if argv is None else list(argv))
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    ckpt_path = cli.config.get("ckpt_path")
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)

    cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    best = cb.best_model_path if cb is not None and cb.best_model_path else None
    results: dict[str, Any] = {
        "config": [str(c) for c in (cli.config.get("config") or [])],
        "best_checkpoint": best,
        "last_checkpoint": getattr(cb, "last_model_path", None) or None,
        "monitor": cb.monitor if cb is not None else None,
        "best_score": float(cb.best_model_score) if cb is not None and cb.best_model_score is not None else None,
        "epochs_trained": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    which = best or None
    if dm is not None and getattr(dm, "val_dataloader", None) is not None and trainer.num_val_batches:
        val = trainer.validate(model, datamodule=dm, ckpt_path=which, verbose=False)
        results["val"] = _scalars(val[0]) if val else {}
    if cli.config.get("test_after_fit", True):
        test = trainer.test(model, datamodule=dm, ckpt_path=which)
        results["test"] = _scalars(test[0]) if test else {}
    if trainer.is_global_zero:
        root = Path(trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {root / 'results.json'}")
        if results.get("test"):
            _print_table(results["test"], title=f"test metrics of {best or 'the final weights'}")
    return results


# ------------------------------------------------------------------------------------------------------ eval
def _import(path: str):
    mod, _, name = path.rpartition(".")
    if not mod:
        raise ValueError(f"expected a full class path 'package.module.Class', got {path!r}")
    obj = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _init_kwargs(cls, args: dict[str, Any]) -> dict[str, Any]:
    """Keep the keys ``cls.__init__`` accepts (all of them if it takes ``**kwargs``); drop Lightning's private keys."""
    args = {k: v for k, v in args.items() if not k.startswith("_")}
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return args
    return {k: v for k, v in args.items() if k in params}


def _instantiate(spec: Any, what: str, overrides: dict[str, Any] | None = None):
    """``{"class_path": "pkg.mod.Class", "init_args": {...}}`` -> instance (``overrides`` update init_args)."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"{what}: expected a mapping with 'class_path' (+ 'init_args'), got {spec!r}")
    cls = _import(spec["class_path"])
    init = {**dict(spec.get("init_args") or {}), **(overrides or {})}
    return cls(**_init_kwargs(cls, init))


def _torch_load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path}: cannot read this Lightning checkpoint with weights_only=True ({type(e).__name__}: {e}). "
            "Only checkpoints written by train.py are supported."
        ) from e


def load_task_from_checkpoint(path: str | Path):
    """Rebuild the task (model + hparams) from a train.py checkpoint without jsonargparse.

    Returns ``(task, zoo_config)``; the task holds the checkpoint's weights (strict load), in eval mode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt {path} does not exist")
    ckpt = _torch_load_checkpoint(path)
    zc = ckpt.get("zoo_config")
    if not zc:
        raise ValueError(f"{path} has no 'zoo_config': it was not written by a zoo task (ZooTask.on_save_checkpoint)")
    cls = _import(zc["task"])
    task = cls(**_init_kwargs(cls, {**zc["init_args"], "pretrained": False}))
    missing, unexpected = task.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: state dict does not match {zc['task']}: missing {missing}, unexpected {unexpected}")
    return task.eval(), zc


def _load_yaml_configs(paths: Sequence[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for p in paths:
        with open(p) as f:
            data = yaml.safe_load(f) or {}
        for k, v in data.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = _deep_merge(merged[k], v)
            else:
                merged[k] = v
    return merged


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_from_config(config: dict[str, Any], pretrained: Any = None, data_overrides: dict[str, Any] | None = None):
    """(task, datamodule) from a train.py YAML dict; ``pretrained`` replaces ``model.init_args.pretrained``."""
    if "model" not in config or "data" not in config:
        raise ValueError("the config needs 'model' and 'data' sections (class_path + init_args)")
    over = {} if pretrained is None else {"pretrained": pretrained}
    task = _instantiate(config["model"], "model", over)
    dm = _instantiate(config["data"], "data", data_overrides)
    return task, dm


def _print_table(metrics: dict[str, float], title: str = "") -> None:
    width = max([len(k) for k in metrics] + [6])
    line = "-" * (width + 14)
    print(line)
    if title:
        print(title)
        print(line)
    print(f"{'metric':<{width}}  {'value':>10}")
    print(line)
    for k, v in sorted(metrics.items()):
        print(f"{k:<{width}}  {v:>10.4f}")
    print(line)


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--data-arg expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval.py", description="Test a trained zoo model; write metrics.json and optionally a hub folder."
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="Lightning checkpoint written by train.py")
    src.add_argument("--pretrained", help="hub id ('hf-hub:org/name', 'repnext_m0.fmnist') or a hub folder")
    p.add_argument("--config", "-c", action="append", default=[],
                   help="train.py YAML(s): 'data' (and, with --pretrained, 'model') sections; repeatable")
    p.add_argument("--data-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override a datamodule init arg, e.g. --data-arg max_test_samples=500")
    p.add_argument("--out", help="metrics.json path or folder (default: next to --ckpt, else ./metrics.json)")
    p.add_argument("--card-out", help="write the hub folder (config.json, model.safetensors, README.md) here")
    p.add_argument("--card-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="dtype of the published weights; the card's metrics are measured with weights rounded to it")
    p.add_argument("--card-name", help="card title (default: the architecture)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", default="1")
    p.add_argument("--precision", default=None, help="e.g. bf16-mixed (default: 32-true)")
    p.add_argument("--batch-size", type=int, help="evaluation batch size")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--limit-batches", type=float, default=None,
                   help="test on this many batches (int) or this fraction (float) only: a smoke run")
    return p


def _limit(value: float | None) -> int | float:
    """``--limit-batches``: a whole number counts batches, a fraction below 1 a share of them, None all of them."""
    if value is None:
        return 1.0
    if value <= 0:
        raise ValueError(f"--limit-batches must be > 0, got {value}")
    return int(value) if float(value).is_integer() and value >= 1 else float(value)


def _test(task, dm, ns, root: Path) -> dict[str, float]:
    """trainer.test with eval.py's settings; files a task writes at test time (plots, overlays) go under ``root``."""
    devices: Any = ns.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    trainer = L.Trainer(
        accelerator=ns.accelerator, devices=devices, precision=ns.precision or "32-true", logger=False,
        enable_checkpointing=False, enable_model_summary=False,
        limit_test_batches=_limit(ns.limit_batches), default_root_dir=str(root),
    )
    out = trainer.test(task, datamodule=dm, verbose=False)
    return _scalars(out[0]) if out else {}


def evaluate(argv: Sequence[str] | None = None) -> dict[str, float]:
    """eval.py: test a checkpoint or a pretrained model, write metrics.json, print a table, optionally a hub folder.

    Returns the test metrics (``{"test/acc1": ..., "test/loss": ...}``).
    """
    ns = _eval_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    data_over = _parse_overrides(ns.data_arg)
    if ns.batch_size:
        data_over.setdefault("batch_size", ns.batch_size)
        data_over.setdefault("eval_batch_size", ns.batch_size)
    if ns.num_workers is not None:
        data_over.setdefault("num_workers", ns.num_workers)
    config = _load_yaml_configs(ns.config) if ns.config else {}
    card: dict[str, Any] = {}
    if ns.ckpt:
        task, zc = load_task_from_checkpoint(ns.ckpt)
        card = dict(zc.get("card") or {})
        if "data" in config:
            dm = _instantiate(config["data"], "data", data_over)
        elif zc.get("datamodule"):
            dm = _instantiate(zc["datamodule"], "checkpoint datamodule", data_over)
        else:
            raise ValueError(f"{ns.ckpt} records no datamodule; pass --config with a 'data' section")
        source = str(ns.ckpt)
        default_out = Path(ns.ckpt).resolve().parent / "metrics.json"
    else:
        if not config:
            raise ValueError("--pretrained needs --config (its 'model' section names the task, 'data' the test set)")
        task, dm = build_from_config(config, pretrained=ns.pretrained, data_overrides=data_over)
        task.eval()
        source = str(ns.pretrained)
        default_out = Path("metrics.json")

    out = Path(ns.out) if ns.out else default_out
    if out.suffix != ".json":
        out = out / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics = _test(task, dm, ns, out.parent)
    out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    _print_table(metrics, title=f"{source} on {getattr(dm, 'dataset_name', type(dm).__name__)} (test)")
    print(f"metrics: {out}")

    if ns.card_out:
        from zoo import hub

        model = task.model
        card_metrics = metrics
        if ns.card_dtype != "float32":
            dtype = getattr(torch, ns.card_dtype)
            rounded = copy.deepcopy(task)
            with torch.no_grad():
                for t in list(rounded.model.parameters()) + list(rounded.model.buffers()):
                    if t.is_floating_point():
                        t.copy_(t.to(dtype).to(t.dtype))
            card_metrics = _test(rounded, dm, ns, out.parent)
            side = out.with_name(f"metrics_{ns.card_dtype}.json")
            side.write_text(json.dumps(card_metrics, indent=2, sort_keys=True) + "\n")
            _print_table(card_metrics, title=f"with weights rounded to {ns.card_dtype} (published)")
            for k in metrics:
                if "acc" in k and abs(metrics[k] - card_metrics.get(k, math.nan)) > 0.002:
                    print(f"warning: {k} changes by {card_metrics.get(k, math.nan) - metrics[k]:+.4f} in {ns.card_dtype}")
        if not card:
            try:
                card = task.model_card_info()
            except Exception:  # noqa: BLE001
                card = {}
        recipe = dict(card.get("recipe") or {})
        if config.get("trainer"):
            recipe.setdefault("trainer", config["trainer"])
        dataset = card.get("dataset") or getattr(dm, "dataset_name", None)
        extra: dict[str, Any] = {}
        data_config = getattr(dm, "data_config", None)
        if data_config and "data_config" in inspect.signature(hub.save_pretrained).parameters:
            # the normalisation the weights were trained with (not the architecture's ImageNet default)
            extra["data_config"] = dict(data_config)
        folder = hub.save_pretrained(
            model, ns.card_out, metrics=card_metrics, dataset=dataset, recipe=recipe,
            dtype=None if ns.card_dtype == "float32" else ns.card_dtype, name=ns.card_name, **extra,
        )
        print(f"hub folder: {folder}")
    return metrics


# ------------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo train ...`` / ``python -m zoo eval ...``; other commands go to ``zoo.commands``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "train":
        train(args[1:])
        return 0
    if args and args[0] in ("eval", "evaluate", "test"):
        evaluate(args[1:])
        return 0
    from zoo import commands

    return int(commands.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
