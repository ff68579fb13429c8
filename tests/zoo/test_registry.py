"""Registry contract: register, create, list, tags and the errors for bad names/tags/arguments."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import zoo
from zoo.registry import PretrainedSource, model_entry, register_model, split_model_name


class _Tiny(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(5, width)
        self.fc2 = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@register_model(
    paper="arXiv:0000.00001",
    title="A tiny test model",
    task="tabular-classification",
    license="mit",
    input_spec={"shape": (5,), "dtype": "float32"},
    pretrained={
        "alpha": PretrainedSource(repo_id="zoo-test/zootest_reg_mlp.alpha", dataset="alpha-set"),
        "beta": PretrainedSource(repo_id="zoo-test/zootest_reg_mlp.beta", overrides={"num_classes": 7}),
    },
    default_tag="beta",
)
def zootest_reg_mlp(num_classes: int = 3, width: int = 4) -> nn.Module:
    """Tiny MLP: (B, 5) float32 -> (B, num_classes)."""
    return _Tiny(num_classes=num_classes, width=width)


@register_model(paper="arXiv:0000.00002", task="image-classification", license="apache-2.0")
def zootest_reg_other(**kwargs) -> nn.Module:
    """No pretrained weights."""
    return _Tiny(**kwargs)


def test_create_model_records_zoo_config():
    m = zoo.create_model("zootest_reg_mlp", width=6)
    assert isinstance(m, _Tiny) and m.fc1.out_features == 6
    assert m.zoo_config == {"architecture": "zootest_reg_mlp", "args": {"width": 6}}
    assert zoo.create_model("zootest_reg_mlp").zoo_config == {"architecture": "zootest_reg_mlp", "args": {}}
    # A tag in the name without pretrained=True builds the bare architecture.
    assert zoo.create_model("zootest_reg_mlp.alpha").zoo_config["architecture"] == "zootest_reg_mlp"


def test_entry_facts():
    e = model_entry("zootest_reg_mlp.beta")
    assert e.name == "zootest_reg_mlp" and e.family == "test_registry"
    assert e.paper == "arXiv:0000.00001" and e.task == "tabular-classification" and e.license == "mit"
    assert e.input_spec == {"shape": (5,), "dtype": "float32"}
    assert e.default_tag == "beta" and set(e.pretrained) == {"alpha", "beta"}
    assert e.default_args == {"num_classes": 3, "width": 4}
    assert model_entry("zootest_reg_other").default_tag is None


def test_list_models_and_pretrained():
    assert zoo.list_models("zootest_reg_*") == ["zootest_reg_mlp", "zootest_reg_other"]
    assert zoo.list_models("zootest_reg_*", task="image-classification") == ["zootest_reg_other"]
    assert zoo.list_models("zootest_reg_*", family="test_registry") == ["zootest_reg_mlp", "zootest_reg_other"]
    assert zoo.list_models("zootest_nothing*") == []
    assert zoo.list_pretrained("zootest_reg_*") == ["zootest_reg_mlp.alpha", "zootest_reg_mlp.beta"]
    assert zoo.list_pretrained("*.beta") == ["zootest_reg_mlp.beta"]
    assert zoo.list_models() == sorted(zoo.list_models())


def test_split_model_name():
    assert split_model_name("a_b.tag") == ("a_b", "tag")
    assert split_model_name("a_b") == ("a_b", None)
    with pytest.raises(TypeError):
        split_model_name("")
    with pytest.raises(TypeError):
        split_model_name(None)  # type: ignore[arg-type]


def test_unknown_model_suggests_close_names():
    with pytest.raises(KeyError, match="zootest_reg_mlp"):
        zoo.create_model("zootest_reg_mpl")


def test_pretrained_errors():
    with pytest.raises(ValueError, match="no pretrained weights"):
        zoo.create_model("zootest_reg_other", pretrained=True)
    with pytest.raises(ValueError, match="unknown for 'zootest_reg_mlp'.*alpha"):
        zoo.create_model("zootest_reg_mlp", pretrained="gamma")
    with pytest.raises(ValueError, match="gamma"):
        zoo.create_model("zootest_reg_mlp.gamma", pretrained=True)
    with pytest.raises(TypeError, match="pretrained must be"):
        zoo.create_model("zootest_reg_mlp", pretrained=3.5)  # type: ignore[arg-type]


def test_pretrained_resolution_picks_the_right_source():
    from zoo.registry import _resolve_pretrained

    assert _resolve_pretrained("zootest_reg_mlp", True)[1].repo_id.endswith(".beta")  # default_tag
    assert _resolve_pretrained("zootest_reg_mlp.alpha", True)[1].repo_id.endswith(".alpha")
    assert _resolve_pretrained("zootest_reg_mlp", "alpha")[1].repo_id.endswith(".alpha")
    assert _resolve_pretrained("zootest_reg_mlp", "zootest_reg_mlp.alpha")[1].repo_id.endswith(".alpha")
    assert _resolve_pretrained("zootest_reg_mlp", "hf-hub:org/x@v1") == ("zootest_reg_mlp", "hf-hub:org/x@v1")
    assert _resolve_pretrained("zootest_reg_mlp", False) == ("zootest_reg_mlp", None)


def test_register_rejects_bad_default_tag_and_name_clash():
    with pytest.raises(ValueError, match="default_tag"):

        @register_model(paper="x", task="t", license="mit", pretrained={"a": PretrainedSource("o/n")},
                        default_tag="b")
        def zootest_reg_badtag() -> nn.Module:
            return _Tiny()

    def zootest_reg_mlp() -> nn.Module:  # same name, different module
        return _Tiny()

    zootest_reg_mlp.__module__ = "somewhere.else"
    with pytest.raises(ValueError, match="already registered"):
        register_model(zootest_reg_mlp, paper="x", task="t", license="mit")


def test_real_models_are_registered():
    """The zoo's own models register on import of zoo.models (every entry has the facts a card needs)."""
    names = zoo.list_models()
    assert names, "no models registered"
    for n in names:
        e = model_entry(n)
        assert e.paper and e.task and e.license, n
