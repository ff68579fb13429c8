"""Model cards: the README.md of a hub folder (YAML front matter the Hub indexes + a human-readable body)."""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

import yaml

__all__ = ["model_card", "card_metadata"]

# Task names the Hub knows as pipeline tags; others are kept as plain tags only.
_HUB_PIPELINE_TAGS = {
    "image-classification",
    "image-feature-extraction",
    "object-detection",
    "image-segmentation",
    "video-classification",
    "audio-classification",
    "automatic-speech-recognition",
    "text-to-speech",
    "tabular-classification",
    "tabular-regression",
    "feature-extraction",
    "time-series-forecasting",
}


def _paper_url(paper: str) -> str | None:
    m = re.fullmatch(r"(?:arxiv:)?(\d{4}\.\d{4,5})(v\d+)?", paper.strip(), flags=re.IGNORECASE)
    if m:
        return f"https://arxiv.org/abs/{m.group(1)}"
    if paper.startswith(("http://", "https://")):
        return paper
    return None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) >= 1e-3 else f"{v:.3g}"
    return str(v)


def card_metadata(
    *,
    name: str,
    task: str,
    license: str,
    family: str | None = None,
    dataset: str | None = None,
    metrics: Mapping[str, float] | None = None,
    paper: str | None = None,
    extra_tags: list[str] | None = None,
) -> dict[str, Any]:
    """The YAML front matter of a card as a dict (Hub model-card metadata: license, library_name, tags, ...)."""
    tags = ["zoo", task] + ([family] if family else []) + list(extra_tags or [])
    if paper and (m := re.fullmatch(r"(?:arxiv:)?(\d{4}\.\d{4,5})", paper.strip(), flags=re.IGNORECASE)):
        tags.append(f"arxiv:{m.group(1)}")
    meta: dict[str, Any] = {
        "license": license,
        "library_name": "zoo",
        "tags": list(dict.fromkeys(tags)),
    }
    if task in _HUB_PIPELINE_TAGS:
        meta["pipeline_tag"] = task
    if dataset:
        meta["datasets"] = [dataset]
    if metrics:
        meta["metrics"] = sorted({k.split("/")[-1] for k in metrics})
        meta["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": task},
                        "dataset": {"name": dataset or "unknown", "type": dataset or "unknown"},
                        "metrics": [
                            {"type": k.split("/")[-1], "name": k, "value": float(v)} for k, v in metrics.items()
                        ],
                    }
                ],
            }
        ]
    return meta


def model_card(
    *,
    name: str,
    architecture: str,
    task: str,
    license: str,
    args: Mapping[str, Any] | None = None,
    family: str | None = None,
    title: str | None = None,
    paper: str | None = None,
    citation: str | None = None,
    input_spec: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    metrics: Mapping[str, float] | None = None,
    recipe: str | Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    num_params: int | None = None,
    extra: str | None = None,
) -> str:
    """Render a model card (README.md): YAML front matter + task, dataset, metrics, recipe, licence, citation, usage.

    Args:
        name: display name, e.g. ``"repnext_m0.fmnist"``.
        architecture: registered architecture (``zoo.create_model`` name).
        args: constructor overrides recorded in config.json (shown in the usage snippet).
        metrics: ``{"test/acc": 0.93, ...}`` as written by eval.py's metrics.json.
        recipe: the training recipe, a string (markdown) or a mapping (rendered as YAML).
        repo_id: hub id used in the usage snippet (``hf-hub:<repo_id>``); the local folder form is shown otherwise.
        extra: markdown appended at the end.
    """
    meta = card_metadata(
        name=name, task=task, license=license, family=family, dataset=dataset, metrics=metrics, paper=paper
    )
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "", f"# {name}", ""]
    summary = f"`{architecture}` for **{task}**"
    if dataset:
        summary += f", trained on **{dataset}**"
    lines += [summary + ".", ""]
    if title or paper:
        url = _paper_url(paper) if paper else None
        ref = f"[{paper}]({url})" if url else (paper or "")
        lines += [f"Paper: {title + ' ' if title else ''}{'(' + ref + ')' if ref else ''}".rstrip(), ""]

    lines += ["## Model", "", f"- Architecture: `{architecture}`"]
    if args:
        lines.append(f"- Constructor args: `{json.dumps(dict(args), sort_keys=True)}`")
    if num_params is not None:
        lines.append(f"- Parameters: {num_params / 1e6:.2f}M")
    if input_spec:
        shape = input_spec.get("shape")
        if shape is not None:
            lines.append(f"- Input: `{tuple(shape)}` {input_spec.get('dtype', '')}".rstrip())
        for key in ("mean", "std"):
            if key in input_spec:
                lines.append(f"- Normalisation {key}: `{tuple(input_spec[key])}`")
    lines.append("")

    lines += ["## Evaluation", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
        if dataset:
            lines += ["", f"Dataset: {dataset}."]
    else:
        lines.append("No evaluation results recorded.")
    lines.append("")

    lines += ["## Training recipe", ""]
    if recipe is None:
        lines.append("Not recorded.")
    elif isinstance(recipe, str):
        lines.append(recipe.strip())
    else:
        lines += ["```yaml", yaml.safe_dump(dict(recipe), sort_keys=False).rstrip(), "```"]
    lines.append("")

    src = f'"hf-hub:{repo_id}"' if repo_id else '"path/to/this/folder"'
    arg_str = "".join(f", {k}={v!r}" for k, v in (args or {}).items())
    lines += [
        "## Usage",
        "",
        "```python",
        "import zoo",
        "",
        f'model = zoo.create_model("{architecture}", pretrained={src}{arg_str})',
        "model.eval()",
        "```",
        "",
        "or `zoo.from_pretrained(" + (f'"{repo_id}"' if repo_id else '"path/to/this/folder"') + ")`.",
        "",
        "## Licence",
        "",
        f"`{license}` (weights and code of this card's model).",
        "",
    ]
    if citation or paper:
        lines += ["## Citation", ""]
        if citation:
            lines += ["```bibtex", citation.strip(), "```"]
        else:
            url = _paper_url(paper) if paper else None
            lines.append(f"{title + '. ' if title else ''}{paper}{' — ' + url if url else ''}")
        lines.append("")
    if extra:
        lines += [extra.strip(), ""]
    return "\n".join(lines)
