"""The weight registry, `brgen weights list|check|fetch`, and downloads from an HTTP server on 127.0.0.1.

Hugging Face downloads are tested with stand-ins for `HfApi` and `snapshot_download` (no host is reached),
and with the real huggingface_hub in offline mode, which must fail with a clear message."""

import dataclasses
import hashlib
import http.server
import json
import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from inpainters import weights
from inpainters.fetch import FetchError, fetch_hub, fetch_url
from inpainters.weights import MissingWeightsError, RegistryError, git_blob_sha1, load_registry, resolve
from test_pipeline import run_cli

PAYLOAD = bytes(range(256)) * 12_288  # 3 MiB, so a transfer spans several 1 MiB chunks
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class WeightServer:
    """Serve PAYLOAD at /weights.bin on 127.0.0.1, honouring `Range: bytes=N-` unless `honour_range` is False.

    `drop_after`: on the first request, send only this many bytes of the body, then close the connection.
    """

    def __init__(self, drop_after: int | None = None, honour_range: bool = True):
        self.drop_after = drop_after
        self.honour_range = honour_range
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/weights.bin":
                    self.send_error(404)
                    return
                requested = self.headers.get("Range")
                server.ranges.append(requested)
                start = int(requested.removeprefix("bytes=").rstrip("-")) if requested and server.honour_range else 0
                if start >= len(PAYLOAD):
                    self.send_error(416)
                    return
                body = PAYLOAD[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after is not None and len(server.ranges) == 1:
                    body = body[: server.drop_after]
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/weights.bin"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def url_component(url: str, md5: str = PAYLOAD_MD5) -> weights.Component:
    return weights.Component(
        method="testgan", name="generator", description="test generator", licence="MIT", origin="tests",
        url=url, file="weights.bin", md5=md5,
    )


@pytest.fixture
def test_registry(tmp_path, monkeypatch):
    """Swap the registry for one whose `testgan` method downloads from the local server; returns a writer."""

    def write(url: str, md5: str = PAYLOAD_MD5) -> Path:
        path = tmp_path / "weights.yaml"
        entry = {"description": "test generator", "url": url, "file": "weights.bin", "md5": md5,
                 "licence": "MIT", "origin": "tests", "env": "BRGEN_TESTGAN_WEIGHTS"}
        path.write_text(yaml.safe_dump({"testgan": {"generator": entry}}))
        monkeypatch.setattr(weights, "registry_path", lambda: path)
        load_registry.cache_clear()
        return path

    yield write
    load_registry.cache_clear()


def test_registry_lists_all_five_methods():
    registry = load_registry()
    assert {"lama", "mat", "sdxl", "brushnet", "powerpaint"} <= set(registry)
    assert registry["lama"]["generator"].md5 == "e3aa4aaa15225a33ec84f9f4bc47e500"
    assert registry["mat"]["generator"].md5 == "8ca927835fa3f5e21d65ffcb165377ed"
    assert registry["sdxl"]["pipeline"].repo == "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"


def test_every_component_names_licence_origin_and_source():
    for entries in load_registry().values():
        for entry in entries.values():
            assert entry.licence
            assert entry.origin.startswith("https://")
            assert entry.source in ("url", "hub", "manual")


def test_invalid_registry_names_entry_and_key(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_text(yaml.safe_dump({"lama": {"generator": {"description": "x", "licence": "MIT", "origin": "o", "url": "u", "md6": "x"}}}))
    with pytest.raises(RegistryError, match=r"lama\.generator has unknown field\(s\) md6"):
        load_registry(path)


def test_resolve_prefers_explicit_then_environment_then_folder(tmp_path, monkeypatch):
    folder_copy = Path(os.environ["BRGEN_WEIGHTS_DIR"]) / "lama" / "big-lama.pt"
    folder_copy.parent.mkdir(parents=True)
    folder_copy.write_bytes(b"folder")
    env_copy = tmp_path / "env.pt"
    env_copy.write_bytes(b"env")
    explicit = tmp_path / "explicit.pt"
    explicit.write_bytes(b"explicit")
    assert resolve("lama", "generator") == folder_copy
    monkeypatch.setenv("BRGEN_LAMA_WEIGHTS", str(env_copy))
    assert resolve("lama", "generator") == env_copy
    assert resolve("lama", "generator", explicit) == explicit


def test_missing_explicit_path_is_not_replaced_by_folder(tmp_path):
    folder_copy = Path(os.environ["BRGEN_WEIGHTS_DIR"]) / "lama" / "big-lama.pt"
    folder_copy.parent.mkdir(parents=True)
    folder_copy.write_bytes(b"folder")
    with pytest.raises(MissingWeightsError, match="from the `weights` parameter"):
        resolve("lama", "generator", tmp_path / "typo.pt")


def test_list_shows_missing_and_present(capsys):
    assert run_cli("weights", "list", "lama", "mat") == 0
    before = capsys.readouterr().out
    target = Path(os.environ["BRGEN_WEIGHTS_DIR"]) / "lama" / "big-lama.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the real file")
    assert run_cli("weights", "list", "lama") == 0
    after = capsys.readouterr().out
    assert "generator      missing" in before
    assert "fetch it with `brgen weights fetch mat`" in before
    assert f"generator      present  {target}" in after


def test_list_tells_to_fix_variable_not_fetch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRGEN_LAMA_WEIGHTS", str(tmp_path / "nope.pt"))
    assert run_cli("weights", "list", "lama") == 0
    output = capsys.readouterr().out
    assert f"generator      missing  {tmp_path / 'nope.pt'}" in output
    assert "correct $BRGEN_LAMA_WEIGHTS or unset it" in output
    assert "missing: big-lama.pt; fetch it with" not in output


def test_missing_file_from_variable_names_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("BRGEN_LAMA_WEIGHTS", str(tmp_path / "nope.pt"))
    with pytest.raises(MissingWeightsError) as raised:
        resolve("lama", "generator")
    message = str(raised.value)
    assert f"not found at {tmp_path / 'nope.pt'} (from $BRGEN_LAMA_WEIGHTS)" in message
    assert "Correct $BRGEN_LAMA_WEIGHTS or unset it" in message
    assert "or set BRGEN_LAMA_WEIGHTS=PATH" not in message


def test_missing_explicit_file_says_to_correct_path(tmp_path):
    with pytest.raises(MissingWeightsError) as raised:
        resolve("lama", "generator", tmp_path / "typo.pt")
    message = str(raised.value)
    assert "Correct that path, or leave it out to use $BRGEN_LAMA_WEIGHTS or the weights folder" in message


def test_list_json_has_one_object_per_component(capsys):
    assert run_cli("weights", "list", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    components = {(row["method"], row["component"]) for row in rows}
    assert ("brushnet", "brushnet_sdxl") in components
    assert len(rows) == sum(len(entries) for entries in load_registry().values())


def test_list_json_names_environment_variables(capsys):
    assert run_cli("weights", "list", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    variables = {(row["method"], row["component"]): row["env"] for row in rows}
    assert variables[("lama", "generator")] == "BRGEN_LAMA_WEIGHTS"
    assert variables[("mat", "generator")] == "BRGEN_MAT_WEIGHTS"
    assert variables[("brushnet", "base_sdxl")] == "BRGEN_BRUSHNET_SDXL_BASE"
    assert all(variables.values())


def test_docs_name_every_variable_list_shows(capsys):
    docs = (Path(__file__).resolve().parent.parent / "docs" / "weights.md").read_text()
    assert run_cli("weights", "list", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for row in rows:
        assert f"| `{row['method']}` | `{row['component']}` | `{row['env']}` |" in docs


def test_check_reports_wrong_file_and_fails(capsys):
    target = Path(os.environ["BRGEN_WEIGHTS_DIR"]) / "lama" / "big-lama.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the real file")
    assert run_cli("weights", "check", "lama") == 1
    output = capsys.readouterr().out
    assert "lama.generator: mismatch" in output
    assert f"md5 {hashlib.md5(b'not the real file').hexdigest()}, expected e3aa4aaa15225a33ec84f9f4bc47e500" in output


def test_check_of_named_method_fails_when_missing(capsys):
    assert run_cli("weights", "check", "mat") == 1
    assert "mat.generator: missing" in capsys.readouterr().out


def test_unknown_method_is_rejected(capsys):
    assert run_cli("weights", "fetch", "lamma") == 2
    assert "'lamma' has no weights" in capsys.readouterr().err


def test_fetch_resumes_after_interrupted_transfer(tmp_path):
    with WeightServer(drop_after=1 << 20) as server:
        result = fetch_url(url_component(server.url), tmp_path, backoff=0, progress=False)
    assert result.path.read_bytes() == PAYLOAD
    assert server.ranges == [None, f"bytes={1 << 20}-"]
    assert not (tmp_path / "testgan" / "weights.bin.part").exists()


def test_fetch_resumes_part_file_from_earlier_run(tmp_path):
    partial = tmp_path / "testgan" / "weights.bin.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(PAYLOAD[:12345])
    with WeightServer() as server:
        result = fetch_url(url_component(server.url), tmp_path, progress=False)
    assert result.action == "downloaded"
    assert server.ranges == ["bytes=12345-"]
    assert result.path.read_bytes() == PAYLOAD


def test_fetch_restarts_when_server_ignores_range(tmp_path):
    partial = tmp_path / "testgan" / "weights.bin.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"stale bytes from another file")
    with WeightServer(honour_range=False) as server:
        result = fetch_url(url_component(server.url), tmp_path, progress=False)
    assert hashlib.md5(result.path.read_bytes()).hexdigest() == PAYLOAD_MD5


def test_fetch_rejects_wrong_hash_and_leaves_no_file(tmp_path):
    with WeightServer() as server, pytest.raises(FetchError, match=f"md5 {PAYLOAD_MD5}, expected 0+; the download was deleted"):
        fetch_url(url_component(server.url, md5="0" * 32), tmp_path, progress=False)
    assert not (tmp_path / "testgan" / "weights.bin").exists()
    assert not (tmp_path / "testgan" / "weights.bin.part").exists()


def test_fetch_rejects_wrong_size(tmp_path):
    with WeightServer() as server:
        entry = dataclasses.replace(url_component(server.url), size=len(PAYLOAD) + 1)
        with pytest.raises(FetchError, match=f"gave {len(PAYLOAD)} bytes, the registry expects {len(PAYLOAD) + 1}"):
            fetch_url(entry, tmp_path, progress=False)
    assert not (tmp_path / "testgan" / "weights.bin.part").exists()


def test_fetch_reports_http_error_without_retrying(tmp_path):
    with WeightServer() as server, pytest.raises(FetchError, match="returned HTTP 404"):
        fetch_url(url_component(server.url.replace("weights.bin", "nothing.bin")), tmp_path, backoff=0, progress=False)
    assert server.ranges == []


def test_fetch_keeps_part_file_when_retries_run_out(tmp_path):
    with WeightServer(drop_after=1000) as server, pytest.raises(FetchError, match="the next fetch resumes from there"):
        fetch_url(url_component(server.url), tmp_path, retries=0, progress=False)
    assert (tmp_path / "testgan" / "weights.bin.part").read_bytes() == PAYLOAD[:1000]


def test_fetch_and_check_commands(test_registry, capsys):
    with WeightServer() as server:
        test_registry(server.url)
        assert run_cli("weights", "fetch", "testgan", "--no-progress") == 0
        assert run_cli("weights", "fetch", "testgan", "--no-progress") == 0
    assert run_cli("weights", "check", "testgan") == 0
    output = capsys.readouterr().out
    target = Path(os.environ["BRGEN_WEIGHTS_DIR"]) / "testgan" / "weights.bin"
    assert f"testgan.generator: downloaded {target}" in output
    assert f"testgan.generator: present {target}" in output
    assert f"testgan.generator: ok ({target})" in output
    assert server.ranges == [None]


def test_fetch_warns_when_variable_overrides_folder(test_registry, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRGEN_TESTGAN_WEIGHTS", str(tmp_path / "elsewhere.bin"))
    with WeightServer() as server:
        test_registry(server.url)
        assert run_cli("weights", "fetch", "testgan", "--no-progress") == 0
    error = capsys.readouterr().err
    assert f"$BRGEN_TESTGAN_WEIGHTS is set to {tmp_path / 'elsewhere.bin'}" in error
    assert "unset it to use the fetched file" in error


# Hugging Face downloads, with stand-ins for the Hub.

HUB_FILES = {
    "model_index.json": b'{"_class_name": "Tiny"}',
    "unet/diffusion_pytorch_model.fp16.safetensors": b"unet weights" * 100,
    "unet/diffusion_pytorch_model.safetensors": b"full precision, not fetched",
}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """`model_info` and `snapshot_download` over HUB_FILES; `corrupt` names a file served with other bytes."""

    def __init__(self, corrupt: str | None = None):
        self.corrupt = corrupt
        self.downloads = []

    def model_info(self, repo_id, revision, files_metadata):
        siblings = []
        for name, content in HUB_FILES.items():
            if name.endswith(".safetensors"):
                lfs = SimpleNamespace(sha256=hashlib.sha256(content).hexdigest(), size=len(content))
                siblings.append(SimpleNamespace(rfilename=name, lfs=lfs, blob_id="unused", size=130))
            else:
                siblings.append(SimpleNamespace(rfilename=name, lfs=None, blob_id=None, size=len(content)))
        for sibling, content in zip(siblings, HUB_FILES.values()):
            if sibling.lfs is None:
                path = Path(os.environ["BRGEN_WEIGHTS_DIR"]) / "blob"
                path.write_bytes(content)
                sibling.blob_id = git_blob_sha1(path)
        return SimpleNamespace(sha=COMMIT, siblings=siblings)

    def snapshot_download(self, repo_id, revision, local_dir, allow_patterns):
        self.downloads.append((repo_id, revision))
        import fnmatch

        for name, content in HUB_FILES.items():
            if any(fnmatch.fnmatch(name, pattern) for pattern in allow_patterns):
                path = Path(local_dir) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"tampered" if name == self.corrupt else content)
        return local_dir


def hub_component() -> weights.Component:
    return weights.Component(
        method="sdxl", name="pipeline", description="tiny pipeline", licence="MIT", origin="https://example.org",
        repo="tests/tiny-pipeline", revision="main", allow_patterns=("*.json", "*.fp16.safetensors"),
        required=("model_index.json", "unet/diffusion_pytorch_model.fp16.safetensors"),
    )


def test_hub_fetch_records_commit_and_hashes():
    hub = FakeHub()
    root = Path(os.environ["BRGEN_WEIGHTS_DIR"])
    entry = hub_component()
    result = fetch_hub(entry, root, api=hub, snapshot_download=hub.snapshot_download)
    record = json.loads((root / "hub" / "tests" / "tiny-pipeline" / ".brgen-fetch.json").read_text())
    assert hub.downloads == [("tests/tiny-pipeline", COMMIT)]
    assert result.path == root / "hub" / "tests" / "tiny-pipeline"
    assert record["commit"] == COMMIT
    assert sorted(record["files"]) == ["model_index.json", "unet/diffusion_pytorch_model.fp16.safetensors"]
    assert weights.verify(entry, result.path).status == "ok"


def test_hub_check_finds_changed_file():
    hub = FakeHub()
    root = Path(os.environ["BRGEN_WEIGHTS_DIR"])
    entry = hub_component()
    result = fetch_hub(entry, root, api=hub, snapshot_download=hub.snapshot_download)
    (result.path / "model_index.json").write_bytes(b"{}")
    verification = weights.verify(entry, result.path)
    assert verification.status == "mismatch"
    assert verification.details[0].startswith("model_index.json: git sha1")


def test_hub_fetch_deletes_file_with_wrong_hash():
    hub = FakeHub(corrupt="unet/diffusion_pytorch_model.fp16.safetensors")
    root = Path(os.environ["BRGEN_WEIGHTS_DIR"])
    with pytest.raises(FetchError, match="sha256 differs from the Hub's"):
        fetch_hub(hub_component(), root, api=hub, snapshot_download=hub.snapshot_download)
    assert not (root / "hub" / "tests" / "tiny-pipeline" / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    assert not (root / "hub" / "tests" / "tiny-pipeline" / ".brgen-fetch.json").exists()


def test_hub_fetch_offline_fails_with_message():
    # tests/conftest.py sets HF_HUB_OFFLINE=1: the real huggingface_hub refuses to open a connection.
    with pytest.raises(FetchError, match="cannot read diffusers/stable-diffusion-xl-1.0-inpainting-0.1 at revision main"):
        fetch_hub(load_registry()["sdxl"]["pipeline"], Path(os.environ["BRGEN_WEIGHTS_DIR"]))


def test_hub_component_without_record_is_unverified():
    entry = hub_component()
    folder = entry.default_path(Path(os.environ["BRGEN_WEIGHTS_DIR"]))
    for name, content in HUB_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    assert weights.verify(entry, folder).status == "unverified"
    shutil.rmtree(folder)
    assert weights.verify(entry, folder).status == "missing"


# NFA-ViT's initial weights: two Hub repositories fetched into the weights folder, and a file downloaded by hand.


def test_registry_lists_nfa_vit_components():
    entries = load_registry()["nfa-vit"]
    assert entries["mit_b0"].repo == "nvidia/mit-b0"
    assert entries["mit_b2"].repo == "nvidia/mit-b2"
    assert entries["noiseprint"].source == "manual"
    assert entries["noiseprint"].manual.startswith("https://github.com/grip-unina/TruFor/")
    assert "non-profit" in entries["noiseprint"].licence


def test_nfa_vit_defaults_are_in_weights_folder():
    root = Path(os.environ["BRGEN_WEIGHTS_DIR"])
    entries = load_registry()["nfa-vit"]
    assert entries["mit_b0"].default_path(root) == root / "nfa-vit" / "mit-b0"
    assert entries["mit_b2"].default_path(root) == root / "nfa-vit" / "mit-b2"
    assert entries["noiseprint"].default_path(root) == root / "nfa-vit" / "noiseprint++.th"


def test_hub_component_with_path_fetches_there():
    hub = FakeHub()
    root = Path(os.environ["BRGEN_WEIGHTS_DIR"])
    entry = dataclasses.replace(hub_component(), path="nfa-vit/tiny")
    result = fetch_hub(entry, root, api=hub, snapshot_download=hub.snapshot_download)
    assert result.path == root / "nfa-vit" / "tiny"
    assert (root / "nfa-vit" / "tiny" / "model_index.json").is_file()
    assert weights.verify(entry, result.path).status == "ok"


def test_list_and_check_single_file_manual_component(capsys):
    target = Path(os.environ["BRGEN_WEIGHTS_DIR"]) / "nfa-vit" / "noiseprint++.th"
    assert run_cli("weights", "list", "nfa-vit") == 0
    before = capsys.readouterr().out
    target.parent.mkdir(parents=True)
    target.write_bytes(b"layers")
    assert run_cli("weights", "list", "nfa-vit") == 0
    after = capsys.readouterr().out
    assert run_cli("weights", "check", "nfa-vit") == 1
    checked = capsys.readouterr().out
    assert "missing: noiseprint++.th; download it by hand from https://github.com/grip-unina/TruFor/" in before
    assert f"noiseprint     present  {target}" in after
    assert f"nfa-vit.noiseprint: unverified ({target})" in checked


def test_fetch_names_page_and_target_of_manual_file(capsys):
    assert run_cli("weights", "fetch", "nfa-vit", "--component", "noiseprint") == 1
    error = capsys.readouterr().err
    target = Path(os.environ["BRGEN_WEIGHTS_DIR"]) / "nfa-vit" / "noiseprint++.th"
    assert "nfa-vit.noiseprint: no direct download. Get " in error
    assert f"save it as {target}" in error


def test_mit_variable_may_name_original_weight_file(tmp_path, monkeypatch, capsys):
    original = tmp_path / "mit_b0.pth"
    original.write_bytes(b"weights")
    monkeypatch.setenv("BRGEN_MIT_B0", str(original))
    assert run_cli("weights", "list", "nfa-vit") == 0
    assert f"mit_b0         present  {original}" in capsys.readouterr().out
