"""Hub layout: save/load round trip, strict loading, sha256, pickle refusal, offline HF cache with revision pinning,
and push + pull through a loopback HTTP server speaking the few Hub endpoints huggingface_hub uses."""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch
import torch.nn as nn
import yaml
from safetensors.torch import load_file, save_file

import zoo
from zoo import hub
from zoo.registry import PretrainedSource, register_model

ARCH = "zoohubtest_net"


class _Net(nn.Module):
    """Conv + BN + linear head: (B, 2, 8, 8) -> (B, num_classes)."""

    def __init__(self, num_classes: int = 3, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(2, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _register(pretrained: dict[str, PretrainedSource] | None = None) -> None:
    """(Re-)register the test architecture; re-registering from the same module replaces the entry."""

    def zoohubtest_net(num_classes: int = 3, width: int = 4) -> nn.Module:
        """Tiny conv net for hub tests."""
        return _Net(num_classes=num_classes, width=width)

    zoohubtest_net.__module__ = __name__
    register_model(
        zoohubtest_net,
        paper="arXiv:2406.16004",
        title="Hub test net",
        task="image-classification",
        license="mit",
        input_spec={"shape": (2, 8, 8), "dtype": "float32", "mean": (0.5, 0.5), "std": (0.25, 0.25)},
        pretrained=pretrained or {},
        citation="@misc{hubtest, title={Hub test net}}",
    )


_register()


def _model(seed: int = 0, **args) -> nn.Module:
    torch.manual_seed(seed)
    m = zoo.create_model(ARCH, **args)
    with torch.no_grad():  # non-trivial BN statistics so buffers matter
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    return m.eval()


X = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))


def _same(a: nn.Module, b: nn.Module, atol: float = 0.0) -> bool:
    with torch.no_grad():
        return torch.allclose(a.eval()(X), b.eval()(X), atol=atol, rtol=0)


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """Isolated HF cache, no token, no endpoint, online unless a test sets HF_HUB_OFFLINE."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return cache


# ------------------------------------------------------------------------------------------------ folder round trip


def test_round_trip_through_folder(tmp_path):
    m = _model(num_classes=5)
    folder = zoo.save_pretrained(
        m, tmp_path / "hub" / "zoo-test" / "net.demo", metrics={"test/acc": 0.875, "test/loss": 0.31},
        dataset="fashion_mnist", recipe={"epochs": 3, "lr": 0.01},
    )
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == ARCH and cfg["args"] == {"num_classes": 5}
    assert cfg["zoo_version"] == zoo.__version__ and cfg["pretrained_cfg"]["shape"] == [2, 8, 8]

    loaded = zoo.from_pretrained(folder)
    assert isinstance(loaded, _Net) and not loaded.training
    assert loaded.zoo_config == {"architecture": ARCH, "args": {"num_classes": 5}}
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert _same(m, loaded)
    # The same weights through create_model(pretrained=<folder>) and (<file>), and load_pretrained.
    assert _same(m, zoo.create_model(ARCH, pretrained=str(folder), num_classes=5))
    assert _same(m, zoo.create_model(ARCH, pretrained=folder / "model.safetensors"))
    assert _same(m, zoo.from_pretrained(folder / "model.safetensors"))  # sibling config.json
    assert _same(m, hub.load_pretrained(ARCH, folder))


def test_model_card(tmp_path):
    folder = zoo.save_pretrained(_model(), tmp_path / "hub" / "zoo-test" / "net.demo",
                                 metrics={"test/acc": 0.875}, dataset="fashion_mnist", recipe="10 epochs of AdamW.")
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "mit" and meta["library_name"] == "zoo"
    assert {"zoo", "image-classification"} <= set(meta["tags"]) and meta["datasets"] == ["fashion_mnist"]
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"][0] == {"type": "acc", "name": "test/acc", "value": 0.875}
    assert result["dataset"]["name"] == "fashion_mnist"
    for piece in ("| test/acc | 0.875 |", "10 epochs of AdamW.", "@misc{hubtest", "https://arxiv.org/abs/2406.16004",
                  f'zoo.create_model("{ARCH}", pretrained="hf-hub:zoo-test/net.demo")', "## Licence"):
        assert piece in text, piece
    from zoo.card import model_card

    bare = model_card(name="x", architecture=ARCH, task="t", license="mit")
    assert "No evaluation results recorded." in bare and "model-index" not in bare


def test_data_config_replaces_the_architecture_default(tmp_path):
    data_config = {"input_size": (2, 16, 16), "mean": (0.286, 0.286), "std": (0.353, 0.353)}
    folder = zoo.save_pretrained(_model(), tmp_path / "dc", data_config=data_config)
    cfg = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert cfg["shape"] == [2, 16, 16] and cfg["mean"] == [0.286, 0.286] and cfg["std"] == [0.353, 0.353]
    assert cfg["dtype"] == "float32"  # keys the data config does not name keep the registry's value
    assert "(0.286, 0.286)" in (folder / "README.md").read_text()


def test_fp16_on_disk_loads_into_fp32(tmp_path):
    m = _model()
    folder = zoo.save_pretrained(m, tmp_path / "half", dtype=torch.float16)
    sd = load_file(str(folder / "model.safetensors"))
    assert sd["conv.weight"].dtype == torch.float16
    assert sd["bn.num_batches_tracked"].dtype == torch.int64  # integer buffers are not cast
    loaded = zoo.from_pretrained(folder)
    assert next(loaded.parameters()).dtype == torch.float32
    assert _same(m, loaded, atol=1e-2) and not _same(m, loaded)
    with pytest.raises(ValueError, match="dtype"):
        zoo.save_pretrained(m, tmp_path / "bad", dtype="int3")


def test_save_needs_zoo_config(tmp_path):
    with pytest.raises(ValueError, match="zoo_config"):
        zoo.save_pretrained(_Net(), tmp_path / "x")


# ------------------------------------------------------------------------------------------------ strict loading


def _write_weights(tmp_path: Path, sd: dict) -> Path:
    folder = zoo.save_pretrained(_model(), tmp_path / "f")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    return folder


def test_missing_and_unexpected_keys_are_errors(tmp_path):
    sd = dict(_model().state_dict())
    del sd["bn.running_var"]
    sd["extra.weight"] = torch.zeros(2)
    folder = _write_weights(tmp_path, sd)
    with pytest.raises(hub.WeightsMismatchError) as ei:
        zoo.from_pretrained(folder)
    msg = str(ei.value)
    assert "missing keys (1): bn.running_var" in msg and "unexpected keys (1): extra.weight" in msg


def test_shape_mismatch_is_an_error(tmp_path):
    folder = zoo.save_pretrained(_model(num_classes=3), tmp_path / "f")
    with pytest.raises(hub.WeightsMismatchError, match=r"head.weight: file \(3, 4\) vs model \(6, 4\)"):
        zoo.from_pretrained(folder, num_classes=6)
    with pytest.raises(hub.WeightsMismatchError, match="shape mismatches"):
        zoo.create_model(ARCH, pretrained=str(folder / "model.safetensors"), num_classes=6)


def test_from_pretrained_needs_config_or_arch(tmp_path):
    save_file(dict(_model().state_dict()), str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="load_pretrained"):
        zoo.from_pretrained(tmp_path / "w.safetensors")
    assert _same(_model(), hub.load_pretrained(ARCH, tmp_path / "w.safetensors"))
    with pytest.raises(FileNotFoundError):
        hub.load_pretrained(ARCH, tmp_path / "nope")


def test_refuses_pickle_files(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(_model().state_dict(), path)
    with pytest.raises(ValueError, match="never unpickles.*convert"):
        hub.load_pretrained(ARCH, path)
    with pytest.raises(ValueError, match="never unpickles"):
        zoo.from_pretrained(path)
    with pytest.raises(ValueError, match="never unpickles"):  # refused before any download is tried
        hub.load_pretrained(ARCH, PretrainedSource(repo_id="org/name", filename="pytorch_model.bin"))
    # A pickle renamed to .safetensors is still never unpickled: it fails the safetensors parser.
    fake = tmp_path / "fake" / "model.safetensors"
    fake.parent.mkdir()
    fake.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        hub.load_pretrained(ARCH, fake.parent)


def test_refusal_names_the_models_converter(tmp_path):
    """A model module with convert_checkpoint() is pointed to by the refusal message."""
    names = [n for n in zoo.list_models() if hub.find_converter(n) is not None]
    if not names:
        pytest.skip("no registered model has a convert_checkpoint hook yet")
    with pytest.raises(ValueError, match=rf"python -m zoo convert {names[0]} "):
        hub.load_pretrained(names[0], str(tmp_path / "release.pth"))


# ------------------------------------------------------------------------------------------------ offline HF cache


def test_offline_cache_with_revision_pinning(tmp_path, hf_env, monkeypatch):
    repo = "zoo-test/net.cached"
    m1, m2 = _model(seed=1), _model(seed=2)
    f1 = zoo.save_pretrained(m1, tmp_path / "v1")
    f2 = zoo.save_pretrained(m2, tmp_path / "v2")
    commit1 = "1" * 40
    hub.cache_folder(f1, repo, revision="v1", commit=commit1)
    snap2 = hub.cache_folder(f2, repo)  # main
    commit2 = snap2.name
    repo_dir = hf_env / "models--zoo-test--net.cached"
    assert (repo_dir / "refs" / "main").read_text() == commit2
    assert (repo_dir / "refs" / "v1").read_text() == commit1
    assert (repo_dir / "snapshots" / commit1 / "model.safetensors").is_symlink()
    assert (repo_dir / "blobs" / hub.sha256_file(f1 / "model.safetensors")).is_file()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing may be contacted
    assert _same(m2, zoo.from_pretrained(f"hf-hub:{repo}"))
    assert _same(m2, zoo.from_pretrained(repo))
    assert _same(m1, zoo.from_pretrained(f"hf-hub:{repo}@v1"))
    assert _same(m1, zoo.from_pretrained(repo, revision=commit1))
    assert _same(m2, zoo.create_model(ARCH, pretrained=f"hf-hub:{repo}"))
    with pytest.raises(ValueError, match="revision given twice"):
        zoo.from_pretrained(f"hf-hub:{repo}@v1", revision="main")

    # Registry sources: default tag, pinned revision, sha256 verified (and mismatch refused).
    sha1 = hub.sha256_file(f1 / "model.safetensors")
    _register({
        "latest": PretrainedSource(repo_id=repo),
        "pinned": PretrainedSource(repo_id=repo, revision=commit1, sha256=sha1.upper()),
        "badsha": PretrainedSource(repo_id=repo, sha256="0" * 64),
        "missing": PretrainedSource(repo_id="zoo-test/not-cached"),
    })
    try:
        got = zoo.create_model(ARCH, pretrained=True)
        assert _same(m2, got) and got.zoo_config == {"architecture": ARCH, "args": {}}
        assert _same(m1, zoo.create_model(f"{ARCH}.pinned", pretrained=True))
        with pytest.raises(hub.ChecksumError, match=r"sha256 mismatch.*expected 0{64}"):
            zoo.create_model(ARCH, pretrained="badsha")
        with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
            zoo.create_model(ARCH, pretrained="missing")
    finally:
        _register()


def test_registry_source_overrides_without_config(tmp_path, hf_env, monkeypatch):
    """Weights-only repos are built from the source's overrides (config.json absent)."""
    m = _model(num_classes=7)
    only = tmp_path / "only"
    only.mkdir()
    save_file(dict(m.state_dict()), str(only / "model.safetensors"))
    hub.cache_folder(only, "zoo-test/net.weights-only")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _register({"w": PretrainedSource(repo_id="zoo-test/net.weights-only", overrides={"num_classes": 7})})
    try:
        got = zoo.create_model(f"{ARCH}.w", pretrained=True)
        assert _same(m, got) and got.zoo_config["args"] == {"num_classes": 7}
    finally:
        _register()


# ------------------------------------------------------------------------------------------------ loopback hub


class _Hub:
    """In-memory model repos: {repo_id: {"refs": {name: commit}, "commits": {commit: {path: bytes}}}}."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.log: list[str] = []
        self.lock = threading.Lock()


def _handler(state: _Hub):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict | None = None, ctype="application/json"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, obj, headers: dict | None = None):
            self._send(code, json.dumps(obj).encode(), headers)

        def _error(self, code: int, msg: str, kind: str | None = None):
            self._json(code, {"error": msg}, {"X-Error-Code": kind} if kind else None)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            return self.headers.get("Authorization", "") == "Bearer hf_loopback"

        def _resolve(self, repo_id: str, rev: str):
            repo = state.repos.get(repo_id)
            if repo is None:
                return None, None
            commit = repo["refs"].get(rev, rev if rev in repo["commits"] else None)
            return repo, commit

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = unquote(urlparse(self.path).path)
            state.log.append(f"{self.command} {path}")
            parts = path.strip("/").split("/")
            if len(parts) >= 5 and parts[2] == "resolve":  # /{org}/{name}/resolve/{rev}/{file...}
                repo_id, rev, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                with state.lock:
                    repo, commit = self._resolve(repo_id, rev)
                if repo is None:
                    return self._error(404, "Repository not found", "RepoNotFound")
                if commit is None:
                    return self._error(404, "Revision not found", "RevisionNotFound")
                data = repo["commits"][commit].get(filename)
                if data is None:
                    return self._error(404, "Entry not found", "EntryNotFound")
                etag = hashlib.sha256(data).hexdigest()
                return self._send(200, data, {"X-Repo-Commit": commit, "ETag": f'"{etag}"'},
                                  ctype="application/octet-stream")
            return self._error(404, f"no route {path}")

        def do_POST(self):
            path = unquote(urlparse(self.path).path)
            state.log.append(f"POST {path}")
            body = self._body()
            if not self._authorized():
                return self._error(401, "Invalid credentials in Authorization header")
            parts = path.strip("/").split("/")
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo_id = f"{payload['organization']}/{payload['name']}"
                with state.lock:
                    if repo_id in state.repos:  # the Hub answers 409 with the url; exist_ok reads it
                        return self._json(409, {"error": "You already created this model repo",
                                                "url": f"http://{self.headers['Host']}/{repo_id}"})
                    state.repos[repo_id] = {"refs": {"main": "0" * 40}, "commits": {"0" * 40: {}}}
                return self._json(200, {"url": f"http://{self.headers['Host']}/{repo_id}"})
            if path == "/api/validate-yaml":
                return self._json(200, {"errors": [], "warnings": []})
            if len(parts) >= 6 and parts[:2] == ["api", "models"]:
                repo_id, action, rev = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
                with state.lock:
                    repo, commit = self._resolve(repo_id, rev)
                    if repo is None:
                        return self._error(404, "Repository not found", "RepoNotFound")
                    if action == "branch":
                        if rev in repo["refs"]:
                            return self._error(409, "Branch already exists")
                        repo["refs"][rev] = repo["refs"]["main"]
                        return self._json(200, {})
                    if commit is None:
                        return self._error(404, "Revision not found", "RevisionNotFound")
                    if action == "preupload":
                        files = json.loads(body)["files"]
                        return self._json(200, {"files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                            for f in files]})
                    if action == "commit":
                        tree = dict(repo["commits"][commit])
                        for line in body.decode().splitlines():
                            item = json.loads(line)
                            if item["key"] == "file":
                                v = item["value"]
                                assert v["encoding"] == "base64"
                                tree[v["path"]] = base64.b64decode(v["content"])
                            elif item["key"] == "deletedFile":
                                tree.pop(item["value"]["path"], None)
                        new = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in
                                                       tree.items())).encode() + commit.encode()).hexdigest()
                        repo["commits"][new] = tree
                        repo["refs"][rev] = new
                        host = self.headers["Host"]
                        return self._json(200, {"commitUrl": f"http://{host}/{repo_id}/commit/{new}",
                                                "commitOid": new, "pullRequestUrl": None})
            return self._error(404, f"no route {path}")

    return H


@pytest.fixture
def loopback_hub(hf_env, monkeypatch):
    state = _Hub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        yield state, server
    finally:
        server.shutdown()
        server.server_close()


def test_push_then_pull_through_loopback_hub(tmp_path, hf_env, loopback_hub, monkeypatch):
    state, server = loopback_hub
    repo = "zoo-test/net.pushed"
    m1 = _model(seed=3, num_classes=4)
    info = zoo.push_to_hub(m1, repo, token="hf_loopback", metrics={"test/acc": 0.5}, dataset="fashion_mnist")
    assert info.oid == state.repos[repo]["refs"]["main"]
    tree = state.repos[repo]["commits"][info.oid]
    assert sorted(tree) == ["README.md", "config.json", "model.safetensors"]
    assert "hf-hub:zoo-test/net.pushed" in tree["README.md"].decode()

    # A second version on a branch, pushed from a folder; main is unchanged.
    m2 = _model(seed=4, num_classes=4)
    folder = zoo.save_pretrained(m2, tmp_path / "v2")
    info2 = zoo.push_to_hub(folder, repo, token="hf_loopback", revision="v2", commit_message="v2")
    assert state.repos[repo]["refs"]["v2"] == info2.oid != info.oid

    pulled = zoo.from_pretrained(f"hf-hub:{repo}")
    assert _same(m1, pulled) and pulled.zoo_config == {"architecture": ARCH, "args": {"num_classes": 4}}
    assert _same(m2, zoo.from_pretrained(repo, revision="v2"))
    assert _same(m1, zoo.from_pretrained(f"hf-hub:{repo}@{info.oid}"))
    assert any(line.startswith("GET /zoo-test/net.pushed/resolve/") for line in state.log)

    with pytest.raises(FileNotFoundError, match="not found"):
        zoo.from_pretrained("hf-hub:zoo-test/nothing-here")
    with pytest.raises(FileNotFoundError, match="revision 'nope'"):
        zoo.from_pretrained(repo, revision="nope")

    # The cache huggingface_hub filled serves the same ids offline with the server gone.
    server.shutdown()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _same(m1, zoo.from_pretrained(f"hf-hub:{repo}"))
    assert _same(m2, zoo.from_pretrained(f"hf-hub:{repo}@v2"))
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        zoo.push_to_hub(m1, repo, token="hf_loopback")


def test_publish_command(tmp_path, hf_env, loopback_hub, capsys):
    from zoo.commands import main

    state, _ = loopback_hub
    folder = zoo.save_pretrained(_model(), tmp_path / "hub" / "zoo-test" / "net.cli")
    assert main(["publish", str(folder)]) == 2  # no token anywhere
    assert "no Hugging Face token" in capsys.readouterr().err
    assert main(["publish", str(folder), "--token", "hf_bad"]) == 2
    assert "failed" in capsys.readouterr().err
    assert main(["publish", str(folder), "--token", "hf_loopback"]) == 0
    assert "zoo-test/net.cli" in capsys.readouterr().out
    assert "model.safetensors" in state.repos["zoo-test/net.cli"]["commits"][
        state.repos["zoo-test/net.cli"]["refs"]["main"]]
    (tmp_path / "empty").mkdir()
    assert main(["publish", str(tmp_path / "empty"), "--token", "hf_loopback"]) == 2
    assert "missing" in capsys.readouterr().err


def test_cache_command_then_offline_create_model(tmp_path, hf_env, monkeypatch):
    from zoo.commands import main

    m = _model(seed=5)
    folder = zoo.save_pretrained(m, tmp_path / "hub" / "zoo-test" / "net.cmd")
    assert main(["cache", str(folder)]) == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _same(m, zoo.create_model(ARCH, pretrained="hf-hub:zoo-test/net.cmd"))


# ------------------------------------------------------------------------------------------------ convert + CLI


def convert_checkpoint(path):
    """This module's converter hook (the convention models/*.py follow): an 'authors' .pth -> zoo state dict."""
    sd = torch.load(path, weights_only=True, map_location="cpu")
    return {k.removeprefix("module."): v for k, v in sd["model"].items()}


def test_convert_command_writes_a_loadable_folder(tmp_path, capsys):
    from zoo.commands import main

    m = _model(seed=6, num_classes=2)
    torch.save({"model": {f"module.{k}": v for k, v in m.state_dict().items()}, "epoch": 3}, tmp_path / "rel.pth")
    assert hub.find_converter(ARCH) is convert_checkpoint
    out = tmp_path / "converted"
    assert main(["convert", ARCH, str(tmp_path / "rel.pth"), "--out", str(out), "--arg", "num_classes=2",
                 "--dtype", "float16"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert _same(m, zoo.from_pretrained(out), atol=1e-2)
    assert load_file(str(out / "model.safetensors"))["head.weight"].dtype == torch.float16
    # Wrong args -> strict-load error, reported as a one-line CLI error.
    assert main(["convert", ARCH, str(tmp_path / "rel.pth"), "--out", str(tmp_path / "x")]) == 2
    assert "shape mismatches" in capsys.readouterr().err


def test_python_dash_m_zoo(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "zoo", "list", "*"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [n for n in zoo.list_models() if not n.startswith("zoo")]  # minus test models


def test_info_and_list_commands(capsys):
    from zoo.commands import main

    assert main(["info", ARCH, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == ARCH and info["license"] == "mit" and info["converter"].endswith("convert_checkpoint")
    assert info["default_args"] == {"num_classes": 3, "width": 4}
    assert main(["list", "zoohub*"]) == 0 and capsys.readouterr().out.split() == [ARCH]
    assert main(["info", "no_such_model"]) == 2 and "unknown model" in capsys.readouterr().err
