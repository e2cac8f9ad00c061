"""The engine runs in its own process (one per loaded model): it gets the fast BLAS, and if
it dies the server fails that model's running requests, marks it unloaded and serves on;
the next request for the model loads it again."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from mlx_textgen.blas import find_system_blas
from tests.e2e.conftest import API_KEY, MODEL
from tests.e2e.server import ServerProcess, wait_until


def engine_pid(server_pid: int) -> int | None:
    """The spawned engine process among the server's children."""
    try:
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        except OSError:
            continue
    return None


def test_engine_process_gets_the_fast_blas(server):
    log = Path(server.log.name).read_text(errors="replace")
    assert "MLX is already imported" not in log
    if find_system_blas() is not None:
        assert "BLAS: fast path" in log


def test_clean_shutdown_stops_the_engine_quietly(smollm2_gguf, tmp_path):
    srv = ServerProcess([], tmp_path)  # a fresh import: its progress bars run in the engine
    try:
        pid = engine_pid(srv.proc.pid)
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(timeout=60) == 0
        out = srv.output()
        assert "terminate called" not in out and "Traceback" not in out
        assert "leaked semaphore" not in out
        if pid is not None:
            assert wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)
    finally:
        srv.stop()


@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="needs /proc to find the engine process"
)
def test_engine_crash_fails_its_requests_and_the_next_request_reloads(smollm2_gguf, cache_root):
    srv = ServerProcess(["--api-key", API_KEY], cache_root)
    try:
        pid = engine_pid(srv.proc.pid)
        assert pid is not None and pid != srv.proc.pid
        events: list[str] = []
        started = threading.Event()

        def stream() -> None:
            body = {
                "model": MODEL,
                "prompt": "Once upon a time",
                "max_tokens": 400,
                "stream": True,
                "temperature": 0,
                "ignore_eos": True,
            }
            headers = {"Authorization": f"Bearer {API_KEY}"}
            try:
                with httpx.stream(
                    "POST", f"{srv.base_url}/v1/completions", json=body, headers=headers, timeout=60
                ) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            events.append(line)
                            started.set()
            except (
                httpx.HTTPError
            ) as exc:  # the server going away mid-stream is also a failure seen
                events.append(f"transport error: {exc}")
            started.set()

        t = threading.Thread(target=stream)
        t.start()
        assert started.wait(60)
        os.kill(pid, signal.SIGKILL)
        t.join(60)
        assert not t.is_alive()
        assert any('"error"' in e for e in events)
        assert srv.proc.poll() is None  # the server serves on
        assert "engine process of model" in srv.output() and "marked unloaded" in srv.output()
        gone = srv.health()["models"][MODEL]
        assert gone["state"] == "unloaded" and gone["engine_crashes"] == 1
        assert "exited unexpectedly" in gone["last_error"] and "-9" in gone["last_error"]
        r = httpx.post(f"{srv.base_url}/v1/completions", timeout=120,
                       headers={"Authorization": f"Bearer {API_KEY}"},
                       json={"model": MODEL, "prompt": "The capital of France is", "max_tokens": 3})
        assert r.status_code == 200 and r.json()["choices"][0]["text"]
        again = srv.health()["models"][MODEL]
        assert again["state"] == "loaded" and again["engine_pid"] not in (None, pid)
        assert again["engine_crashes"] == 1 and again["last_error"] is None
        # An idle engine killed too: the next request reloads it again, without a hand.
        os.kill(again["engine_pid"], signal.SIGKILL)
        assert wait_until(lambda: srv.health()["models"][MODEL]["engine_crashes"] == 2, 30)
        r = httpx.post(f"{srv.base_url}/v1/completions", timeout=120,
                       headers={"Authorization": f"Bearer {API_KEY}"},
                       json={"model": MODEL, "prompt": "Hello", "max_tokens": 2})
        assert r.status_code == 200, r.text
        assert srv.health()["models"][MODEL]["state"] == "loaded"
    finally:
        srv.stop()
