"""Tabular classification benchmark: Orion-BiX (in-context) vs gradient boosting, random forest, logistic regression.

5-fold stratified cross-validation on small real tables that ship offline (scikit-learn's breast_cancer, wine, iris,
digits; palmer penguins from ``benchmarks/tabular_penguins.csv``, the CC0 CSV of the ``palmerpenguins`` package:
categorical columns and missing values). Per model and table: accuracy, ROC-AUC (one-vs-rest macro for multi-class),
log-loss, fit and predict seconds per fold (the predict time is the inference time per table fold).

    python benchmarks/tabular.py --weights auto ...             # OrionBixClassifier() with its default weights
    python benchmarks/tabular.py --kv-cache ...                 # also: repeated predict_proba with / without kv_cache

    python benchmarks/tabular.py --weights hub/zoo-models/orion_bix_small.prior --out docs/benchmarks/tabular.md
    python benchmarks/tabular.py --weights ... --official PATH  # also the authors' Orion-BiX-v1.1.ckpt (default: from
                                                                #   the HF cache when present), converted in memory
    python benchmarks/tabular.py --smoke                        # random-init small model, 2 tables, 2 folds (tests)

Writes one markdown table (plus the mean rank per metric) to ``--out`` and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load_tables(names: list[str]) -> dict[str, tuple]:
    """name -> (X as ndarray or DataFrame, y ndarray)."""
    from sklearn import datasets

    out = {}
    for name in names:
        if name == "penguins":
            import pandas as pd

            df = pd.read_csv(Path(__file__).resolve().parent / "tabular_penguins.csv").dropna(subset=["species"])
            out[name] = (df.drop(columns=["species"]).reset_index(drop=True), df["species"].to_numpy().astype(str))
            continue
        loader = getattr(datasets, f"load_{name}", None)
        if loader is None:
            raise ValueError(f"unknown table {name!r}")
        X, y = loader(return_X_y=True)
        out[name] = (X, y)
    return out


def _baseline(name: str, seed: int):
    from sklearn.compose import make_column_transformer, make_column_selector
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    def prep(scale: bool, onehot: bool):
        num = make_pipeline(SimpleImputer(), StandardScaler()) if scale else SimpleImputer()
        cat = (make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore"))
               if onehot else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                             encoded_missing_value=-1))
        return make_column_transformer((num, make_column_selector(dtype_include="number")),
                                       (cat, make_column_selector(dtype_exclude="number")))

    if name == "HistGradientBoosting":
        return lambda frame: make_pipeline(prep(False, False), HistGradientBoostingClassifier(random_state=seed)) \
            if frame else HistGradientBoostingClassifier(random_state=seed)
    if name == "RandomForest":
        return lambda frame: make_pipeline(prep(False, False), RandomForestClassifier(random_state=seed, n_jobs=-1)) \
            if frame else RandomForestClassifier(random_state=seed, n_jobs=-1)
    if name == "LogisticRegression":
        return lambda frame: make_pipeline(prep(True, True), LogisticRegression(max_iter=2000)) \
            if frame else make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    raise ValueError(name)


def evaluate(model_fn, X, y, folds: int, seed: int) -> dict[str, float]:
    """Mean metrics over stratified folds for ``model_fn(is_frame) -> estimator``."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import LabelEncoder

    y = LabelEncoder().fit_transform(y)
    frame = hasattr(X, "iloc")
    accs, aucs, lls, secs, fit_s, pred_s = [], [], [], [], [], []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        Xtr, Xte = (X.iloc[tr], X.iloc[te]) if frame else (X[tr], X[te])
        est = model_fn(frame)
        t0 = time.perf_counter()
        est.fit(Xtr, y[tr])
        t1 = time.perf_counter()
        p = est.predict_proba(Xte)
        t2 = time.perf_counter()
        secs.append(t2 - t0)
        fit_s.append(t1 - t0)
        pred_s.append(t2 - t1)
        p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1)
        p = p / p.sum(1, keepdims=True)
        labels = np.arange(p.shape[1])
        accs.append(accuracy_score(y[te], p.argmax(1)))
        lls.append(log_loss(y[te], p, labels=labels))
        aucs.append(roc_auc_score(y[te], p[:, 1]) if p.shape[1] == 2
                    else roc_auc_score(y[te], p, multi_class="ovr", average="macro", labels=labels))
    return {"acc": float(np.mean(accs)), "auc": float(np.mean(aucs)), "logloss": float(np.mean(lls)),
            "sec": float(np.mean(secs)), "fit_sec": float(np.mean(fit_s)), "predict_sec": float(np.mean(pred_s))}


def kv_cache_speedup(make, X, y, seed: int, repeats: int = 5) -> dict[str, float]:
    """One 80/20 split: ``repeats`` predict_proba calls on one fitted estimator, uncached vs ``kv_cache=True``."""
    from sklearn.model_selection import train_test_split

    Xtr, Xte, ytr, _ = train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)
    out = {}
    for name, kv in (("plain", False), ("cached", True)):
        est = make(kv)
        t0 = time.perf_counter()
        est.fit(Xtr, ytr)
        fit = time.perf_counter() - t0
        times, probs = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            probs = est.predict_proba(Xte)
            times.append(time.perf_counter() - t0)
        out[name] = {"fit": fit, "predict": float(np.median(times)), "p": probs}
    return {"fit_plain": out["plain"]["fit"], "fit_cached": out["cached"]["fit"],
            "predict_plain": out["plain"]["predict"], "predict_cached": out["cached"]["predict"],
            "speedup": out["plain"]["predict"] / max(out["cached"]["predict"], 1e-9),
            "max_abs_diff": float(np.abs(out["plain"]["p"] - out["cached"]["p"]).max())}


def markdown(results: dict, tables: dict, models: list[str], header: str) -> str:
    """One markdown table: rows = table x model, plus mean rank per metric over the tables."""
    lines = [header, "", "| table (n x F, classes) | model | accuracy | ROC-AUC | log-loss | fit s/fold | "
             "predict s/fold |", "|---|---|---|---|---|---|---|"]
    ranks = {m: {"acc": [], "auc": [], "logloss": []} for m in models}
    for t, (X, y) in tables.items():
        desc = f"{t} ({X.shape[0]} x {X.shape[1]}, {len(np.unique(y))})"
        for metric, better in (("acc", -1), ("auc", -1), ("logloss", 1)):
            vals = np.array([better * results[t][m][metric] for m in models])
            order = vals.argsort(kind="stable").argsort() + 1.0
            for m, r in zip(models, order):
                ranks[m][metric].append(r)
        for m in models:
            r = results[t][m]
            lines.append(f"| {desc} | {m} | {r['acc']:.4f} | {r['auc']:.4f} | {r['logloss']:.4f} | "
                         f"{r['fit_sec']:.3f} | {r['predict_sec']:.3f} |")
    lines += ["", "Mean over the tables, and mean rank (1 = best):", "",
              "| model | mean accuracy | mean ROC-AUC | mean log-loss | rank accuracy | rank ROC-AUC | rank log-loss |",
              "|---|---|---|---|---|---|---|"]
    for m in models:
        means = [np.mean([results[t][m][k] for t in tables]) for k in ("acc", "auc", "logloss")]
        lines.append(f"| {m} | " + " | ".join(f"{v:.4f}" for v in means) + " | "
                     + " | ".join(f"{np.mean(ranks[m][k]):.2f}" for k in ("acc", "auc", "logloss")) + " |")
    return "\n".join(lines) + "\n"


def _official_checkpoint(spec: str) -> str | None:
    """Path of the authors' checkpoint: given explicitly, or found in the local HF cache (never downloaded here)."""
    if spec in ("no", "", None):
        return None
    if spec != "auto":
        return spec
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache("Lexsi/Orion-BiX", "Orion-BiX-v1.1.ckpt")
    except Exception:
        return None
    return hit if isinstance(hit, str) and os.path.isfile(hit) else None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=None,
                    help="'auto' (OrionBixClassifier()'s default), zoo hub folder, registry name.tag, or the authors' .ckpt")
    ap.add_argument("--kv-cache", action="store_true",
                    help="also time repeated predict_proba calls with and without kv_cache (one 80/20 split per table)")
    ap.add_argument("--name", default=None, help="label of our model in the table (default: from --weights)")
    ap.add_argument("--tables", default="breast_cancer,wine,iris,digits,penguins")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-estimators", type=int, default=32)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baselines", default="HistGradientBoosting,RandomForest,LogisticRegression")
    ap.add_argument("--out", default="docs/benchmarks/tabular.md")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    ap.add_argument("--smoke", action="store_true", help="random-init small model, iris+wine, 2 folds, 2 members")
    ap.add_argument("--official", default="auto",
                    help="the authors' Orion-BiX-v1.1.ckpt: a path, 'auto' (use it when it is in the HF cache) or 'no'")
    args = ap.parse_args(argv)

    from zoo.tabular import OrionBixClassifier

    if args.smoke:
        args.tables, args.folds, args.n_estimators = "iris,wine", 2, 2
    tables = load_tables([t for t in args.tables.split(",") if t])
    if args.smoke or args.weights is None:
        ours_name = args.name or "Orion-BiX small (random init)"
        kw = dict(model="orion_bix_small", pretrained=False)
    else:
        w = args.weights
        ours_name = args.name or f"Orion-BiX ({Path(w).name})"
        kw = dict(model=w, pretrained=True)
        if w == "auto":
            from zoo.tabular import resolve_default_model

            resolved = resolve_default_model()
            ours_name = args.name or f"OrionBixClassifier() ({Path(str(resolved)).name})"
    models = {ours_name: lambda frame: OrionBixClassifier(n_estimators=args.n_estimators, device=args.device,
                                                          random_state=args.seed, **kw)}
    official = _official_checkpoint(args.official) if not args.smoke else None
    if official is not None:
        models["Orion-BiX (official v1.1)"] = lambda frame: OrionBixClassifier(
            model=official, n_estimators=args.n_estimators, device=args.device, random_state=args.seed)
    for b in [b for b in args.baselines.split(",") if b]:
        models[b] = _baseline(b, args.seed)

    first = next(iter(tables.values()), None)
    if first is not None:  # warm-up (CUDA context, kernels, weights load) outside the timed folds
        OrionBixClassifier(n_estimators=2, device=args.device, random_state=args.seed, **kw).fit(
            first[0][:40], first[1][:40]).predict_proba(first[0][:10])
    results: dict = {}
    for t, (X, y) in tables.items():
        results[t] = {}
        for m, fn in models.items():
            results[t][m] = evaluate(fn, X, y, args.folds, args.seed)
            r = results[t][m]
            print(f"{t:14s} {m:32s} acc {r['acc']:.4f} auc {r['auc']:.4f} ll {r['logloss']:.4f} {r['sec']:.2f}s",
                  flush=True)
    import platform

    import sklearn
    import torch

    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name() if dev.startswith("cuda") and torch.cuda.is_available() else platform.processor() or "CPU"
    header = (f"# Tabular benchmark\n\n{args.folds}-fold stratified CV (seed {args.seed}); Orion-BiX: "
              f"`OrionBixClassifier(n_estimators={args.n_estimators})` with weights `{args.weights}` on {dev}; "
              f"baselines: scikit-learn defaults (LogisticRegression standardised, max_iter 2000). "
              f"Generated by `benchmarks/tabular.py`.\n\n"
              f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {card} ({os.cpu_count()} CPU cores); "
              f"Python {platform.python_version()}, torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
              f"numpy {np.__version__}. Command: `python benchmarks/tabular.py {' '.join(argv if argv is not None else sys.argv[1:])}`. "
              "Orion-BiX times include preprocessing; predict s/fold is the inference time per table fold "
              "(all test rows, all ensemble members).")
    if official is None and not args.smoke:
        header += ("\n\nNo row for the released Orion-BiX: `Orion-BiX-v1.1.ckpt` was not given (`--official PATH`) "
                   "nor found in the local Hugging Face cache.")
    md = markdown(results, tables, list(models), header)
    if args.kv_cache:
        md += ("\n## KV cache: repeated `predict_proba` on one fitted estimator\n\nOne stratified 80/20 split per "
               "table; median of 5 `predict_proba` calls on the test rows; `kv_cache=True` builds the cache in `fit`.\n\n"
               "| table | fit s (plain) | fit s (kv_cache) | predict s (plain) | predict s (kv_cache) | speed-up | "
               "max abs diff |\n|---|---|---|---|---|---|---|\n")
        results["_kv_cache"] = {}
        for t, (X, y) in tables.items():
            r = kv_cache_speedup(lambda kv: OrionBixClassifier(n_estimators=args.n_estimators, device=args.device,
                                                               random_state=args.seed, kv_cache=kv, **kw), X, y, args.seed)
            results["_kv_cache"][t] = r
            md += (f"| {t} | {r['fit_plain']:.3f} | {r['fit_cached']:.3f} | {r['predict_plain']:.3f} | "
                   f"{r['predict_cached']:.3f} | {r['speedup']:.2f}x | {r['max_abs_diff']:.1e} |\n")
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
