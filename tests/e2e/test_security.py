"""Who gets in: API keys on every route but /health (from a key file too, out of the
process list), a separate admin key for cache and model admin, CORS off unless asked for;
no prompt or completion text in the log; names never reach the filesystem as paths."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import ServerProcess

FILE_KEY = "key-from-the-file"
ADMIN = "the-admin-key"
ORIGIN = "http://localhost:3000"
SECRET_PROMPT = "zebra-quartz-7731 tells the tale of"


@pytest.fixture(scope="module")
def srv(smollm2_gguf, cache_root, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# keys for the team\n{FILE_KEY}\n\nsecond-file-key\n")
    s = ServerProcess(["--api-key-file", str(key_file), "--admin-api-key", ADMIN,
                       "--allowed-origins", ORIGIN], cache_root)
    yield s
    s.stop()


def call(srv, method: str, path: str, key: str | None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{srv.base_url}{path}", headers=headers | kw.pop("headers", {}),
                         timeout=120, **kw)


def test_keys_stay_out_of_the_process_list(srv):
    cmdline = Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes() if Path("/proc").is_dir() else b""
    assert FILE_KEY.encode() not in cmdline


ROUTES = [
    ("GET", "/v1/models"), ("GET", f"/v1/models/{MODEL}"), ("GET", "/openapi.json"),
    ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/v1/cache"), ("DELETE", "/v1/cache"),
    ("POST", "/v1/cache/warmup"), ("POST", f"/v1/models/{MODEL}/load"),
    ("POST", f"/v1/models/{MODEL}/unload"), ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"), ("GET", "/v1/nothing-here"), ("GET", "/anything"),
]


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_but_health_needs_a_key(srv, method, path):
    for key in (None, "wrong-key"):
        r = call(srv, method, path, key)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key"
    assert call(srv, "GET", "/health", None).status_code == 200


def test_file_keys_work(srv):
    for key in (FILE_KEY, "second-file-key"):
        assert call(srv, "GET", "/v1/models", key).status_code == 200
    assert call(srv, "GET", "/v1/models", "# keys for the team").status_code == 401


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/cache"), ("DELETE", "/v1/cache"), ("POST", "/v1/cache/warmup"),
    ("POST", f"/v1/models/{MODEL}/load"), ("POST", f"/v1/models/{MODEL}/unload"),
])
def test_admin_routes_need_the_admin_key(srv, method, path):
    r = call(srv, method, path, FILE_KEY)
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


def test_the_admin_key_opens_admin_and_plain_routes(srv):
    assert call(srv, "GET", "/v1/cache", ADMIN).status_code == 200
    assert call(srv, "POST", f"/v1/models/{MODEL}/load", ADMIN).status_code == 200
    assert call(srv, "GET", "/v1/models", ADMIN).status_code == 200


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/v1/cache?model=../../../etc"), ("DELETE", "/v1/cache?model=%2Ftmp%2Fx"),
    ("POST", "/v1/models/..%2F..%2Fetc/load"), ("POST", "/v1/models/../../etc/passwd/unload"),
])
def test_names_are_never_paths(srv, method, path):
    r = call(srv, method, path, ADMIN)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["message"]


def test_cors_only_for_the_allowed_origin(srv):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = call(srv, "OPTIONS", "/v1/chat/completions", None, headers={"Origin": ORIGIN} | pre)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    bad = call(srv, "OPTIONS", "/v1/chat/completions", None,
               headers={"Origin": "http://evil.example"} | pre)
    assert "access-control-allow-origin" not in bad.headers
    r = call(srv, "GET", "/v1/models", FILE_KEY, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_is_off_by_default(server):
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    r = httpx.options(f"{server.base_url}/v1/chat/completions", headers=pre, timeout=30)
    assert "access-control-allow-origin" not in r.headers


def test_no_prompt_or_completion_text_in_the_log(srv):
    r = call(srv, "POST", "/v1/completions", FILE_KEY,
             json={"model": MODEL, "prompt": SECRET_PROMPT, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200
    text = r.json()["choices"][0]["text"]
    r = call(srv, "POST", "/v1/chat/completions", FILE_KEY, json={
        "model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": SECRET_PROMPT}]})
    assert r.status_code == 200
    log = Path(srv.log.name).read_text(errors="replace")
    assert "zebra-quartz" not in log
    if len(text.strip()) >= 12:  # shorter could be any word of the log
        assert text.strip() not in log
    assert FILE_KEY not in log and ADMIN not in log


def test_a_missing_key_file_stops_the_start(cache_root, tmp_path):
    with pytest.raises(RuntimeError, match="api_key_file"):
        ServerProcess(["--api-key-file", str(tmp_path / "nope.txt")], cache_root)
