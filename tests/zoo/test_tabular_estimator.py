"""zoo.tabular.OrionBixClassifier: official-wrapper parity, scikit-learn's estimator checks, bad input, the published
prior weights on a real table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo.models.orion_bix import OrionBix
from zoo.tabular import OrionBixClassifier, ensemble_members

TOL = 1e-4


TINY = {"embed_dim": 16, "col_num_blocks": 1, "row_num_blocks": 1, "icl_num_blocks": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These forwards are tiny: one intra-op thread is faster, and far faster on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _clf(**kw) -> OrionBixClassifier:
    """Random-init tiny Orion-BiX (same module types, seeded by random_state) for the API checks."""
    args = dict(model="orion_bix_small", pretrained=False, model_args=dict(TINY), n_estimators=2, device="cpu",
                random_state=0)
    args.update(kw)
    return OrionBixClassifier(**args)


@pytest.fixture(scope="module")
def ref(reference_root):
    from safetensors.torch import load_file

    d = reference_root / "orion_bix"
    if not d.is_dir():
        pytest.skip("orion_bix fixture missing")
    meta = json.loads((d / "orion_bix_small_c3.json").read_text())
    m = OrionBix(**meta["config"])
    m.load_state_dict(load_file(str(d / "orion_bix_small_c3_state_dict.safetensors")), strict=True)
    io = {k: v.numpy() for k, v in load_file(str(d / "orion_bix_small_c3_io.safetensors")).items()}
    return meta, m.eval(), io


# ---------------------------------------------------------------------------------------------- fixture parity
def test_official_members_and_predict_proba(ref):
    meta, model, io = ref
    clf = OrionBixClassifier(model=model, n_estimators=4, batch_size=1, random_state=0, device="cpu")
    clf.fit(io["X_train"], io["y_train"])
    members = [(m, list(p), o) for m, mem in clf.members_.items() for p, o in mem]
    expected = [(m["norm_method"], m["feature_shuffle"], m["class_shift_offset"]) for m in meta["sklearn_members"]]
    assert sorted(members) == sorted(expected)
    inputs = clf.member_inputs(io["X_test"])
    for k, (norm, perm, off) in enumerate(expected):
        j = next(i for i, t in enumerate(inputs) if (t[0], list(t[3]), t[4]) == (norm, perm, off))
        assert np.abs(inputs[j][1] - io["sklearn_member_X"][k]).max() < TOL
        assert np.array_equal(inputs[j][2], io["sklearn_member_y_train"][k])
        with torch.no_grad():
            out = model(torch.from_numpy(inputs[j][1])[None], torch.from_numpy(inputs[j][2]).float()[None],
                        feature_shuffles=[perm])
        assert np.abs(out[0].numpy() - io["sklearn_member_logits"][k]).max() < TOL
    proba = clf.predict_proba(io["X_test"])
    assert proba.dtype == np.float32 and proba.shape == (16, 3)
    assert np.abs(proba - io["sklearn_predict_proba"]).max() < TOL
    assert np.array_equal(clf.predict(io["X_test"]), io["sklearn_predict"])
    # several members per forward (upstream's default batch_size=8 crashes here) and chunked test rows agree
    clf2 = OrionBixClassifier(model=model, n_estimators=4, batch_size=8, test_chunk_size=5, random_state=0,
                              device="cpu").fit(io["X_train"], io["y_train"])
    assert np.abs(clf2.predict_proba(io["X_test"]) - proba).max() < 1e-5


def test_ensemble_members_reproduce_upstream_draws():
    mem = ensemble_members(7, 3, 4, ["none", "power"], "latin", True, 0)
    assert mem["none"] == [([3, 4, 5, 2, 0, 6, 1], 0), ([5, 1, 4, 3, 6, 2, 0], 1)] == mem["power"]
    assert ensemble_members(7, 3, 1, ["none", "power"], "latin", True, 0) == {"none": [(list(range(7)), 0)]}


# ---------------------------------------------------------------------------------------------- sklearn checks
# Checks that cannot pass with the untrained tiny test model, with the reason (the API checks all pass).
EXPECTED_FAILED_CHECKS = {
    "check_classifiers_train": "asserts > 83% training accuracy on toy blobs; the random-init test model has no "
    "skill (an in-context learner's accuracy comes from meta-training, not from fit)",
}


def _expected_failed(est):
    return EXPECTED_FAILED_CHECKS


from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


@parametrize_with_checks([_clf(n_estimators=1)], expected_failed_checks=_expected_failed)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------------- API / bad input
def _data(n=60, f=5, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = rng.normal(size=(n, f)) + y[:, None]
    return X, y


def test_wrong_feature_count_and_inf():
    X, y = _data()
    clf = _clf().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict_proba(X[:, :4])
    Xi = X.copy()
    Xi[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        clf.predict_proba(Xi)
    with pytest.raises(ValueError, match="infinity"):
        _clf().fit(Xi, y)


def test_nan_is_imputed():
    X, y = _data()
    Xn = X.copy()
    Xn[::7, 1] = np.nan
    p = _clf().fit(Xn, y).predict_proba(Xn)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1, atol=1e-5)
    p2 = _clf().fit(X, y).predict_proba(Xn)  # NaN only at predict time: training means
    assert np.isfinite(p2).all()


def test_single_class_and_too_many_classes():
    X, y = _data()
    clf = _clf().fit(X, np.full(len(X), "only"))
    assert np.array_equal(clf.predict(X[:3]), ["only"] * 3)
    assert np.array_equal(clf.predict_proba(X[:3]), np.ones((3, 1), dtype=np.float32))
    y12 = np.arange(len(X)) % 12
    with pytest.raises(ValueError, match="use_hierarchical"):
        _clf(use_hierarchical=False).fit(X, y12)
    with pytest.raises(ValueError, match="at most"):
        _clf(model_args={**TINY, "max_classes": 2}).fit(X, np.arange(len(X)) % 9)  # 9 > 2 ** 3


def test_hierarchical_through_estimator():
    X, _ = _data(n=72, f=4)
    y = np.arange(72) % 12
    clf = _clf().fit(X, y)
    p = clf.predict_proba(X[:10])
    assert p.shape == (10, 12) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_pandas_categorical_missing_and_string_labels():
    pd = pytest.importorskip("pandas")
    X, y = _data(n=50, f=3)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df["colour"] = np.where(y == 0, "red", np.where(y == 1, "green", None))
    df["flag"] = pd.Categorical(np.where(X[:, 0] > 0, "hi", "lo"))
    df.loc[3, "a"] = np.nan
    labels = np.array(["cat", "dog", "eel"])[y]
    clf = _clf().fit(df, labels)
    assert list(clf.feature_names_in_) == ["a", "b", "c", "colour", "flag"]
    pred = clf.predict(df)
    assert set(pred) <= set(labels) and clf.predict_proba(df).shape == (50, 3)
    new = df.iloc[:4].copy()
    new["colour"] = ["blue", "red", None, "green"]  # unseen category -> -1, like missing
    assert clf.predict_proba(new).shape == (4, 3)
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(df.rename(columns={"a": "z"}))
    with pytest.raises(ValueError, match="features"):
        clf.predict(df.drop(columns=["b"]))


def test_params_and_hub_folder(tmp_path):
    X, y = _data()
    with pytest.raises(ValueError, match="norm_methods"):
        _clf(norm_methods=["quantile"]).fit(X, y)
    with pytest.raises(ValueError, match="n_estimators"):
        _clf(n_estimators=0).fit(X, y)
    est = _clf().fit(X, y)
    folder = zoo.save_pretrained(est.model_, tmp_path / "w")
    p1 = _clf(model=str(folder)).fit(X, y).predict_proba(X)
    assert np.abs(p1 - est.predict_proba(X)).max() < 1e-6
    p3 = _clf(model=est.model_).fit(X, y).predict_proba(X)  # an nn.Module works too
    assert np.abs(p3 - p1).max() < 1e-6


@pytest.mark.slow
def test_benchmark_script_smoke(tmp_path):
    import runpy
    import sys

    out = tmp_path / "tabular.md"
    argv = sys.argv
    sys.argv = ["tabular.py", "--smoke", "--tables", "iris", "--baselines", "LogisticRegression", "--out", str(out)]
    try:
        runpy.run_path(str(__import__("pathlib").Path(__file__).resolve().parents[2] / "benchmarks" / "tabular.py"),
                       run_name="__main__")
    finally:
        sys.argv = argv
    text = out.read_text()
    assert "| iris (150 x 4, 3) | LogisticRegression |" in text and "Mean rank" in text


# ---------------------------------------------------------------------------------------------- published weights
PUBLISHED = Path(__file__).resolve().parents[2] / "hub" / "zoo-models" / "orion_bix_small.prior"


def test_published_prior_weights_classify_a_real_table(offline_hub):
    offline_hub("orion_bix_small.prior")
    from safetensors.torch import load_file
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    # registry tag from the offline HF cache (sha256 checked) == the published file
    model = zoo.create_model("orion_bix_small.prior", pretrained=True)
    published = load_file(str(PUBLISHED / "model.safetensors"))
    assert all(torch.equal(v, published[k]) for k, v in model.state_dict().items())

    X, y = load_breast_cancer(return_X_y=True)  # ships with scikit-learn; majority class 62.7 %
    Xtr, Xte, ytr, yte = train_test_split(X, y, train_size=200, test_size=200, stratify=y, random_state=0)
    clf = OrionBixClassifier(model=str(PUBLISHED), n_estimators=4, device="cpu", random_state=0).fit(Xtr, ytr)
    acc = float((clf.predict(Xte) == yte).mean())
    # Measured 0.925 (0.90-0.955 over split seeds 0-4); random-init weights give 0.37-0.45 here.
    assert acc > 0.85, acc
    assert all(torch.equal(v, published[k]) for k, v in clf.model_.state_dict().items())


def test_published_prior_sha256_mismatch_is_refused(offline_hub):
    offline_hub("orion_bix_small.prior")
    import dataclasses

    from zoo import hub

    entry = zoo.model_entry("orion_bix_small")
    assert entry.pretrained["prior"].sha256 == hub.sha256_file(PUBLISHED / "model.safetensors")
    bad = dataclasses.replace(entry.pretrained["prior"], sha256="0" * 64)
    with pytest.raises(Exception, match="sha256"):
        hub.load_pretrained("orion_bix_small", bad)


# ---------------------------------------------------------------------------------------------- KV cache
def test_kv_cache_matches_the_uncached_path(ref):
    _, model, io = ref
    kw = dict(model=model, n_estimators=6, batch_size=4, test_chunk_size=5, random_state=0, device="cpu")
    plain = OrionBixClassifier(**kw).fit(io["X_train"], io["y_train"])
    cached = OrionBixClassifier(kv_cache=True, **kw).fit(io["X_train"], io["y_train"])
    assert plain.kv_cache_ is None and set(cached.kv_cache_) == set(cached.members_)
    assert [c.batch for c in cached.kv_cache_["none"]] == [3]  # 6 members: 3 per norm method, one batch each
    p = plain.predict_proba(io["X_test"])
    for _ in range(2):  # repeated calls reuse the cache
        assert np.abs(cached.predict_proba(io["X_test"]) - p).max() < 1e-6
    assert np.abs(cached.predict_proba(io["X_test"][:3]) - p[:3]).max() < 1e-6
    # model level: forward_with_context == forward over train + test rows, with and without feature shuffles
    X = torch.from_numpy(io["sklearn_member_X"][:2])
    y = torch.from_numpy(io["sklearn_member_y_train"][:2]).float()
    n = y.shape[1]
    with torch.no_grad():
        full = model(X, y)
        ctx = model.build_context(X[:, :n], y)
        assert (model.forward_with_context(X[:, n:], ctx) - full).abs().max() < 1e-6
    # more classes than max_classes: hierarchical routing runs uncached
    Xd, _ = _data(n=72, f=4)
    clf = _clf(kv_cache=True).fit(Xd, np.arange(72) % 12)
    assert clf.kv_cache_ is None and clf.predict_proba(Xd[:4]).shape == (4, 12)


# ---------------------------------------------------------------------------------------------- model="auto"
@pytest.fixture
def no_network(no_network, monkeypatch):
    """The shared blocked-network fixture, with the estimator's once-per-process model choice forgotten."""
    import zoo.tabular as tab

    monkeypatch.setattr(tab, "_AUTO_RESOLVED", {})
    return no_network


def test_auto_without_network_falls_back_to_the_zoo_weights(no_network, caplog):
    import logging

    if not (PUBLISHED / "model.safetensors").is_file():
        pytest.skip("hub/zoo-models/orion_bix_small.prior not built")
    X, y = _data()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        clf = OrionBixClassifier(n_estimators=1, device="cpu").fit(X, y)
        OrionBixClassifier(n_estimators=1, device="cpu").fit(X, y)  # resolved once per process
    assert clf.model == "auto" and clf.model_source_ == "orion_bix_small.prior"
    assert len(no_network) == 1, no_network  # one fast connection attempt, no retries
    notes = [r.getMessage() for r in caplog.records if r.name == "zoo"]
    assert len(notes) == 1 and "Lexsi/Orion-BiX" in notes[0] and "orion_bix_small.prior" in notes[0]
    assert "\n" not in notes[0]
    published = zoo.from_pretrained(PUBLISHED)
    assert all(torch.equal(v, published.state_dict()[k]) for k, v in clf.model_.state_dict().items())


def test_auto_converts_the_released_checkpoint_once(no_network, ref, tmp_path, monkeypatch):
    from zoo import hub
    import zoo.models.orion_bix as ob
    import zoo.tabular as tab

    meta, model, io = ref
    # a fake released checkpoint in the authors' layout (config + state dict with torch.compile prefixes) in the cache
    src = tmp_path / "authors"
    src.mkdir()
    sd = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    torch.save({"config": meta["config"], "state_dict": sd}, src / tab.OFFICIAL_FILE)
    hub.cache_folder(src, tab.OFFICIAL_REPO)
    clf = OrionBixClassifier(n_estimators=4, batch_size=1, random_state=0, device="cpu")
    clf.fit(io["X_train"], io["y_train"])
    folder = Path(clf.model_source_)
    assert (folder / "model.safetensors").is_file() and "models--zoo-models--orion_bix.official" in str(folder)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in clf.model_.state_dict().items())
    ref_p = OrionBixClassifier(model=model, n_estimators=4, batch_size=1, random_state=0, device="cpu").fit(
        io["X_train"], io["y_train"]).predict_proba(io["X_test"])
    assert np.abs(clf.predict_proba(io["X_test"]) - ref_p).max() < 1e-6
    # next process: the cached safetensors folder is used, nothing is converted or downloaded again
    monkeypatch.setattr(tab, "_AUTO_RESOLVED", {})
    monkeypatch.setattr(ob, "convert_checkpoint", lambda *a, **k: pytest.fail("converted twice"))
    assert tab.resolve_default_model() == folder
    assert no_network == []
