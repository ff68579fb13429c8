"""The zoo's non-training command-line tools: ``list``, ``info``, ``export``, ``convert``, ``publish``, ``cache``.

Run as ``python -m zoo <command> ...``; ``train``/``eval`` are dispatched to ``zoo.cli`` (LightningCLI) by
``zoo/__main__.py``. Every command returns a process exit code; errors print one line to stderr and return 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["build_parser", "main", "COMMANDS"]

COMMANDS = ("list", "info", "export", "convert", "publish", "cache", "tts", "ist", "video-qa", "crane-convert",
            "moc-experiment")


class CommandError(Exception):
    """A user-facing error: printed without a traceback."""


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def _parse_args_kv(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise CommandError(f"--arg expects KEY=VALUE with a Python identifier as KEY, got {item!r}")
        out[key] = _parse_value(value)
    return out


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise CommandError(f"--input-shape expects integers like 1,3,224,224, got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise CommandError(f"--input-shape expects positive integers like 1,3,224,224, got {text!r}")
    return shape


# --------------------------------------------------------------------------------------------------------------------


def cmd_list(ns: argparse.Namespace) -> int:
    import zoo

    names = zoo.list_pretrained(ns.pattern) if ns.pretrained else zoo.list_models(ns.pattern, task=ns.task)
    if ns.pretrained and ns.task:
        names = [n for n in names if zoo.model_entry(n).task == ns.task]
    for n in names:
        print(n)
    return 0


def _entry_info(name: str) -> dict[str, Any]:
    import zoo
    from zoo.hub import find_converter

    e = zoo.model_entry(name)
    return {
        "name": e.name,
        "family": e.family,
        "task": e.task,
        "paper": e.paper,
        "title": e.title,
        "license": e.license,
        "input_spec": e.input_spec,
        "default_args": {k: v for k, v in e.default_args.items() if _jsonable(v)},
        "pretrained": {
            f"{e.name}.{tag}": {
                "repo_id": s.repo_id,
                "filename": s.filename,
                "revision": s.revision,
                "sha256": s.sha256,
                "dataset": s.dataset,
                "metrics": s.metrics,
                "overrides": s.overrides,
                "default": tag == e.default_tag,
            }
            for tag, s in e.pretrained.items()
        },
        "converter": (lambda c: f"{c.__module__}.{c.__name__}" if c else None)(find_converter(e.name)),
        "doc": (e.constructor.__doc__ or "").strip().splitlines()[0] if e.constructor.__doc__ else "",
    }


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def cmd_info(ns: argparse.Namespace) -> int:
    info = _entry_info(ns.name)
    if ns.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    width = max(map(len, info))
    for k, v in info.items():
        if isinstance(v, dict):
            v = json.dumps(v, default=str)
        print(f"{k:<{width}}  {v}")
    return 0


def _example_inputs(name: str, shape_text: str | None, batch: int, args: dict[str, Any] | None = None):
    import torch

    from zoo.hub import input_spec_for
    from zoo.registry import split_model_name

    spec = input_spec_for(split_model_name(name)[0], args)
    dtype = getattr(torch, str(spec.get("dtype", "float32")))
    if shape_text:
        shape = _parse_shape(shape_text)
    else:
        base = spec.get("shape")
        if base is None or not all(isinstance(s, int) for s in base):
            raise CommandError(
                f"{name}'s input_spec has no fixed shape ({base!r}); pass --input-shape, e.g. 1,3,224,224"
            )
        shape = (batch, *base)
    gen = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen, dtype=dtype)
    return torch.randint(0, 2, shape, generator=gen, dtype=dtype)


def cmd_export(ns: argparse.Namespace) -> int:
    import zoo
    from zoo.export import export

    fmt = ns.format or ("pte" if str(ns.out).endswith(".pte") else "pt2")
    overrides = _parse_args_kv(ns.arg)
    pretrained: Any = ns.pretrained
    if pretrained is not None and pretrained.lower() in ("true", "false"):
        pretrained = pretrained.lower() == "true"
    model = zoo.create_model(ns.name, pretrained=pretrained or False, **overrides)
    x = _example_inputs(ns.name, ns.input_shape, ns.batch, getattr(model, "zoo_config", {}).get("args"))
    report = export(model, x, ns.out, format=fmt, reparameterize=not ns.no_reparameterize, check=not ns.no_check,
                    atol=ns.atol)
    print(report)
    if ns.report:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in report.__dict__.items()}
        Path(ns.report).write_text(json.dumps(d, indent=2) + "\n")
    return 0


def cmd_convert(ns: argparse.Namespace) -> int:
    import torch.nn as nn

    import zoo
    from zoo.hub import find_converter, load_state_dict_strict, save_pretrained

    entry = zoo.model_entry(ns.name)
    conv = find_converter(entry.name)
    if conv is None:
        raise CommandError(
            f"{entry.name}'s module {entry.constructor.__module__} has no convert_checkpoint(path) hook"
        )
    overrides = _parse_args_kv(ns.arg)
    result = conv(str(ns.src))
    if isinstance(result, tuple) and result and isinstance(result[0], nn.Module):
        result = result[0]  # (model, config) hooks
    if isinstance(result, nn.Module):
        model = result
        if overrides:
            raise CommandError("--arg cannot be combined with a converter that builds the model itself")
        zc = getattr(model, "zoo_config", None) or {"architecture": entry.name, "args": {}}
        model.zoo_config = {"architecture": entry.name, "args": dict(zc.get("args", {}))}
    elif isinstance(result, dict):
        model = zoo.create_model(entry.name, **overrides)
        load_state_dict_strict(model, result, source=str(ns.src))
    else:
        raise CommandError(f"{conv.__module__}.convert_checkpoint returned {type(result).__name__}; expected a "
                           "state dict, a model or (model, config)")
    model.eval()
    metrics = json.loads(Path(ns.metrics).read_text()) if ns.metrics else None
    out = save_pretrained(model, ns.out, dtype=ns.dtype, dataset=ns.dataset, metrics=metrics,
                          recipe=f"Converted from the authors' checkpoint `{Path(ns.src).name}`.")
    print(f"wrote {out} ({', '.join(sorted(p.name for p in Path(out).iterdir()))})")
    return 0


def cmd_publish(ns: argparse.Namespace) -> int:
    from huggingface_hub import get_token

    from zoo.hub import CONFIG_NAME, WEIGHTS_NAME, push_to_hub

    folder = Path(ns.folder)
    if not folder.is_dir():
        raise CommandError(f"{folder} is not a folder")
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME, "README.md") if not (folder / n).is_file()]
    if missing:
        raise CommandError(f"{folder} is not a publishable zoo folder: missing {missing}")
    repo_id = ns.repo_id or f"{folder.resolve().parent.name}/{folder.resolve().name}"
    token = ns.token or get_token()
    if not token:
        raise CommandError(
            "no Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass --token (needs write access to "
            f"{repo_id})"
        )
    try:
        info = push_to_hub(folder, repo_id, token=token, revision=ns.revision, private=ns.private,
                           commit_message=ns.message or f"Upload {repo_id} with zoo")
    except OSError as e:  # httpx connection errors and HfHubHTTPError are OSErrors
        raise CommandError(f"upload of {folder} to {repo_id} failed (network or permissions?): {e}") from e
    print(f"published {folder} -> {repo_id}: {getattr(info, 'commit_url', info)}")
    return 0


def cmd_cache(ns: argparse.Namespace) -> int:
    from zoo.hub import cache_folder

    folder = Path(ns.folder)
    repo_id = ns.repo_id or f"{folder.resolve().parent.name}/{folder.resolve().name}"
    snap = cache_folder(folder, repo_id, revision=ns.revision, cache_dir=ns.cache_dir)
    print(f"cached {folder} as {repo_id}@{ns.revision} -> {snap}")
    return 0


# --------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo", description="zoo: model registry, hub and export tools")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="list registered models (shell-style pattern)")
    s.add_argument("pattern", nargs="?", default="*")
    s.add_argument("--pretrained", action="store_true", help="list arch.tag names that have weights")
    s.add_argument("--task", default=None)
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("info", help="show a model's registry entry")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("export", help="export to .pt2 (torch.export) or .pte (ExecuTorch/XNNPACK) with a parity check")
    s.add_argument("name", help="architecture or arch.tag")
    s.add_argument("--pretrained", default=None,
                   help="true | tag | hf-hub:org/name[@rev] | local folder/file (default: random weights)")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--format", choices=("pt2", "pte"), default=None, help="default: from --out's suffix")
    s.add_argument("--input-shape", default=None, help="e.g. 1,3,224,224 (default: batch + registry input_spec)")
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--arg", action="append", metavar="KEY=VALUE", help="constructor override (JSON value)")
    s.add_argument("--atol", type=float, default=1e-4)
    s.add_argument("--no-reparameterize", action="store_true")
    s.add_argument("--no-check", action="store_true", help="report the difference without failing on it")
    s.add_argument("--report", default=None, help="write the export report as JSON here")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("convert", help="convert the authors' checkpoint into a zoo folder (module's converter)")
    s.add_argument("name")
    s.add_argument("src", type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--arg", action="append", metavar="KEY=VALUE", help="constructor override (JSON value)")
    s.add_argument("--dtype", default=None, help="e.g. float16 to halve the file")
    s.add_argument("--dataset", default=None)
    s.add_argument("--metrics", default=None, help="metrics.json to put in the card")
    s.set_defaults(fn=cmd_convert)

    s = sub.add_parser("publish", help="upload a zoo folder (hub/<org>/<name>) to the Hugging Face Hub")
    s.add_argument("folder", type=Path)
    s.add_argument("--repo-id", default=None, help="default: <org>/<name> from the folder path")
    s.add_argument("--revision", default=None, help="branch (created if needed)")
    s.add_argument("--private", action="store_true")
    s.add_argument("--token", default=None, help="default: HF_TOKEN / saved login")
    s.add_argument("--message", default=None)
    s.set_defaults(fn=cmd_publish)

    s = sub.add_parser("cache", help="put a zoo folder into the HF cache (for HF_HUB_OFFLINE=1 loads)")
    s.add_argument("folder", type=Path)
    s.add_argument("--repo-id", default=None, help="default: <org>/<name> from the folder path")
    s.add_argument("--revision", default="main")
    s.add_argument("--cache-dir", default=None, help="default: $HF_HUB_CACHE or $HF_HOME/hub")
    s.set_defaults(fn=cmd_cache)

    from zoo import crane_cli, moc_cli, tts_cli, videonsa_cli  # per-model commands, each in its own module

    for module in (tts_cli, videonsa_cli, crane_cli, moc_cli):
        module.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run one command; returns the exit code (2 on a user error, message on stderr)."""
    ns = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(ns.fn(ns) or 0)
    except (CommandError, KeyError, ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError) as e:
        if os.environ.get("ZOO_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"zoo {ns.command}: error: {msg}", file=sys.stderr)
        return 2
