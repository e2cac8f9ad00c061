"""A model file that is corrupt or gone when an operator loads it (POST /v1/models/{id}/load):
a 422 naming the problem in one line, never a traceback, and the server serves on."""

from __future__ import annotations

import httpx
import pytest
import yaml

from tests.e2e.random_model import random_model_dir
from tests.e2e.server import ServerProcess


@pytest.fixture(scope="module")
def broken(smollm2_gguf, cache_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("broken")
    tiny = random_model_dir(smollm2_gguf, cache_root, tmp / "tiny")
    cut = random_model_dir(smollm2_gguf, cache_root, tmp / "cut")
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    gone = random_model_dir(smollm2_gguf, cache_root, tmp / "gone")
    (tmp / "zero.gguf").write_bytes(bytes(65536))
    cfg = {"max_loaded_models": 2, "model_configs": [
        {"model_id_or_path": str(tiny), "model_name": "tiny"},
        {"model_id_or_path": str(cut), "model_name": "cut", "preload": False},
        {"model_id_or_path": str(gone), "model_name": "gone", "preload": False},
        {"model_id_or_path": str(tmp / "zero.gguf"), "model_name": "zero", "preload": False},
    ]}  # fmt: skip
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    srv = ServerProcess(["--config-file", str(tmp / "c.yaml")], cache_root)
    (gone / "model.safetensors").unlink()  # listed at start, vanished before its load
    yield srv
    srv.stop()


@pytest.mark.parametrize(("name", "says"), [
    ("cut", "incomplete download or corrupt file"),
    ("gone", "No safetensors found"),
    ("zero", "not a readable GGUF file"),
])  # fmt: skip
def test_loading_a_broken_model_is_a_422_and_the_server_serves_on(broken, name, says):
    r = httpx.post(f"{broken.base_url}/v1/models/{name}/load", timeout=120)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "model_load_failed" and err["param"] == "model"
    assert f"`{name}` could not be loaded" in err["message"] and says in err["message"]
    assert "\n" not in err["message"] and "Traceback" not in r.text
    assert broken.health()["status"] == "ok"
    body = {"model": "tiny", "prompt": "Hi", "max_tokens": 2}
    ok = httpx.post(f"{broken.base_url}/v1/completions", json=body, timeout=120)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2
