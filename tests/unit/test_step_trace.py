"""The engine's step trace: off without a path, one JSON line per step and per request with."""

from __future__ import annotations

import json
import time

from mlx_textgen.engine.trace import ENV, StepTrace


def test_disabled_trace_records_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    trace = StepTrace.from_env()
    assert not trace.enabled
    trace.begin(time.monotonic(), 1)
    trace.phase("decode", 0.1)
    trace.end(running=1)
    trace.taken("r")
    trace.request("r", time.monotonic(), None, 0)
    trace.flush()
    assert list(tmp_path.iterdir()) == []


def test_steps_and_requests_land_in_the_file_on_flush(tmp_path, monkeypatch):
    path = tmp_path / "t.jsonl"
    monkeypatch.setenv(ENV, str(path))
    trace = StepTrace.from_env()
    made = time.monotonic()
    trace.taken("r1")
    trace.begin(made - 0.5, adds=1)
    trace.phase("decode", 0.25)
    trace.phase("decode", 0.25)
    trace.end(running=3, joined=1)
    trace.request("r1", made, made, tokens=4)
    assert not path.exists()  # buffered until the engine is idle
    trace.flush()
    step, req = [json.loads(line) for line in path.read_text().splitlines()]
    assert step["adds"] == 1 and step["running"] == 3 and step["joined"] == 1
    assert step["decode"] == 0.5 and step["wait"] >= 0.5 and step["dur"] >= 0
    assert req["req"] == "r1" and req["tokens"] == 4 and req["taken"] >= made
    assert req["end"] >= req["first"] >= req["arrival"] == made
    trace.flush()  # nothing new: the file is unchanged
    assert len(path.read_text().splitlines()) == 2
