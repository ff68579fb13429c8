"""Orion-BiX: parity with the authors' code (reference fixture), parameter counts, checkpoint loading, masks."""
from __future__ import annotations

import json

import pytest
import torch

import zoo
import zoo.models.orion_bix as ob
from zoo.models.orion_bix import OrionBix, clean_state_dict, convert_checkpoint

TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small forwards: one intra-op thread is faster, and far faster on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ref(reference_root):
    from safetensors.torch import load_file

    d = reference_root / "orion_bix"
    if not d.is_dir():
        pytest.skip("orion_bix fixture missing")
    meta = json.loads((d / "orion_bix_small_c3.json").read_text())
    sd = load_file(str(d / "orion_bix_small_c3_state_dict.safetensors"))
    io = load_file(str(d / "orion_bix_small_c3_io.safetensors"))
    return meta, sd, io


@pytest.fixture(scope="module")
def model(ref):
    meta, sd, _ = ref
    m = OrionBix(**meta["config"])
    m.load_state_dict(sd, strict=True)
    return m.eval()


def _maxdiff(a, b):
    return (a.float() - b.float()).abs().max().item()


def test_param_counts(ref):
    meta, sd, _ = ref
    small = zoo.create_model("orion_bix_small")
    assert sum(p.numel() for p in small.parameters()) == 546_570 == meta["param_count"]
    parts = {k: sum(p.numel() for p in getattr(small, k).parameters()) for k in meta["param_count_by_part"]}
    assert parts == meta["param_count_by_part"]
    assert len(small.state_dict()) == meta["state_dict_num_keys"] == len(sd)
    big = zoo.create_model("orion_bix")
    assert sum(p.numel() for p in big.parameters()) == 28_346_762
    assert len(big.state_dict()) == 431


def test_fixture_parity(model, ref):
    _, _, io = ref
    X, y = io["model_input_X"], io["model_input_y_train"]
    n_train = y.shape[1]
    with torch.no_grad():
        col = model.col_embedder(X, n_train)
        assert _maxdiff(col, io["col_embeddings"]) < TOL
        rows = model.bi_axial_attention(col)
        assert _maxdiff(rows, io["row_representations"]) < TOL
        dec = model.icl_predictor.decode_all(rows, y)
        assert _maxdiff(dec, io["icl_decoder_out"]) < TOL
        logits = model(X, y, return_logits=True, softmax_temperature=0.9)
        probs = model(X, y, return_logits=False, softmax_temperature=0.9)
        assert logits.shape == (1, 16, 3)
        assert _maxdiff(logits, io["logits"]) < TOL
        assert _maxdiff(probs, io["probs"]) < TOL
        model.train()
        try:
            train_logits = model(X, y)
        finally:
            model.eval()
        assert _maxdiff(train_logits, io["train_mode_logits"]) < TOL
        # reserved slots are the constant -100 * ln_w.bias + ln_b.bias (upstream quirk)
        slot = -100 * model.col_embedder.ln_w.bias + model.col_embedder.ln_b.bias
        assert _maxdiff(col[0, :, :4], slot.expand(64, 4, -1)) < TOL


def test_member_logits_and_feature_shuffles(model, ref):
    meta, _, io = ref
    Xm, ym = io["sklearn_member_X"], io["sklearn_member_y_train"]
    with torch.no_grad():
        for i, mem in enumerate(meta["sklearn_members"]):
            out = model(Xm[i : i + 1], ym[i : i + 1], feature_shuffles=[mem["feature_shuffle"]])
            assert _maxdiff(out[0], io["sklearn_member_logits"][i]) < TOL
        # B > 1 on the feature_shuffles path (crashes upstream): same as one table at a time
        base = io["model_input_X"]
        pats = [[3, 4, 5, 2, 0, 6, 1], [5, 1, 4, 3, 6, 2, 0], [6, 5, 4, 3, 2, 1, 0]]
        Xs = torch.cat([base[:, :, p] for p in pats])
        ys = io["model_input_y_train"].expand(3, -1)
        batched = model(Xs, ys, feature_shuffles=pats)
        single = torch.cat([model(Xs[i : i + 1], ys[i : i + 1]) for i in range(3)])
        assert _maxdiff(batched, single) < 1e-5


def test_all_softmax_attention_goes_through_kernels(model, ref, monkeypatch):
    _, _, io = ref
    calls = []
    real = ob.attention

    def spy(q, k, v, mask=None, **kw):
        calls.append(type(mask).__name__)
        return real(q, k, v, mask, **kw)

    monkeypatch.setattr(ob, "attention", spy)
    with torch.no_grad():
        out = model(io["model_input_X"], io["model_input_y_train"])
    assert _maxdiff(out, io["logits"]) < TOL
    # bi-axial: 2 blocks x (std + grouped + 2 hier + rel + cls) = 12; ICL: 3
    assert len(calls) == 15


def test_per_table_train_sizes_keypadding(model, ref):
    """Tables with different context sizes in one batch (KeyPadding) == each table alone."""
    _, _, io = ref
    X = io["model_input_X"].expand(2, -1, -1).clone()
    X[1] = X[1].flip(0)
    y_all = torch.cat([io["y_train"], io["y_test"]]).float()
    y = torch.stack([y_all, y_all.flip(0)])
    ts = torch.tensor([48, 30])
    model.train()
    try:
        with torch.no_grad():
            out = model(X, y[:, :48], train_sizes=ts)
            assert out.shape == (2, 64, 10)
            for b in range(2):
                alone = model(X[b : b + 1], y[b : b + 1, : int(ts[b])])
                assert _maxdiff(out[b, int(ts[b]) :], alone[0]) < 1e-5
    finally:
        model.eval()


def test_hierarchical_many_classes():
    torch.manual_seed(0)
    m = zoo.create_model("orion_bix_small", max_classes=3, icl_num_blocks=1).eval()
    for p in m.parameters():  # break the identity init so the heads differ
        torch.nn.init.normal_(p, std=0.2)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(1, 40, 5, generator=g)
    y = (torch.arange(30) % 7).float()[None]  # 7 classes > max_classes=3: groups [3, 2, 2]
    with torch.no_grad():
        probs = m(X, y, return_logits=False)
        logits = m(X, y, return_logits=True)
    assert probs.shape == (1, 10, 7)
    assert torch.allclose(probs.sum(-1), torch.ones(1, 10), atol=1e-5)
    assert torch.allclose(logits, 0.9 * torch.log(probs + 1e-6), atol=1e-5)
    assert m.icl_predictor._grouping(7) == ([0, 0, 0, 1, 1, 2, 2], 3)


def test_strict_load_with_prefixes_and_converter(ref, tmp_path):
    meta, sd, io = ref
    prefixed = {("_orig_mod.module." if i % 2 else "module.") + k: v for i, (k, v) in enumerate(sd.items())}
    assert clean_state_dict(prefixed).keys() == sd.keys()
    path = tmp_path / "official.ckpt"
    torch.save({"config": meta["config"], "state_dict": prefixed}, path)
    m, cfg = convert_checkpoint(str(path))
    assert cfg == meta["config"]
    with torch.no_grad():
        assert _maxdiff(m(io["model_input_X"], io["model_input_y_train"]), io["logits"]) < TOL
    with pytest.raises(RuntimeError):  # strict: a missing key fails
        bad = dict(sd)
        bad.pop("icl_predictor.ln.weight")
        OrionBix(**meta["config"]).load_state_dict(bad, strict=True)
    torch.save({"state_dict": sd}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="config"):
        convert_checkpoint(str(tmp_path / "bad.ckpt"))


def test_registry_and_bad_input():
    assert {"orion_bix", "orion_bix_small"} <= set(zoo.list_models("orion_bix*"))
    e = zoo.model_entry("orion_bix")
    assert e.pretrained["official"].repo_id == "Lexsi/Orion-BiX"
    assert e.pretrained["official"].filename.endswith(".ckpt")
    with pytest.raises(ValueError, match="convert"):  # the authors' pickle never goes through the hub loader
        zoo.create_model("orion_bix.official", pretrained=True)
    with pytest.raises(ValueError, match="only"):
        OrionBix(col_attention_type="standard")
    m = zoo.create_model("orion_bix_small", icl_num_blocks=1).eval()
    with pytest.raises(ValueError, match="n_train"):
        m(torch.randn(1, 5, 3), torch.zeros(1, 6))
    with pytest.raises(ValueError, match=r"\(B, T, F\)"):
        m(torch.randn(5, 3), torch.zeros(1, 2))
