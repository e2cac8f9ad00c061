"""A short soak (the full one is bench/soak.py): a mixed load at 16 concurrent with tight
limits, so 503s happen; nothing fails but them, every stream is well formed, the engine
ends with nothing running or waiting, its memory stays flat and comes back when idle."""

from __future__ import annotations

import pytest

from tests.e2e.server import ServerProcess, wait_until
from tests.e2e.soak_load import SERVER_ARGS, engine_counts, run_soak, write_keys

REQUESTS, CLIENTS = 48, 16


@pytest.fixture(scope="module")
def soaked(smollm2_gguf, cache_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soak")
    keys = write_keys(tmp / "keys", CLIENTS)
    args = [*SERVER_ARGS, "--max-running-requests", "4", "--max-queued-requests", "4",
            "--cache-ram-gb", "0.1", "--api-key-file", str(tmp / "keys")]  # fmt: skip
    srv = ServerProcess(args, cache_root)
    try:
        report = run_soak(srv.base_url, keys, REQUESTS, seed=1, rss_every=0.5)
        yield srv, keys, report
    finally:
        srv.stop()


def test_nothing_fails_but_the_promised_503s(soaked):
    srv, _, report = soaked
    print(report.summary())
    assert report.requests == REQUESTS
    assert not report.failures, report.examples
    assert report.overloaded > 0  # the limits were reached: the 503 path ran too
    for kind in ("cancel", "near_limit", "too_long"):  # each checked kind ran at least once
        assert sum(v for k, v in report.outcomes.items() if k.startswith(f"{kind}:")) > 0, kind
    assert "Traceback" not in srv.output()


def test_the_engine_ends_with_nothing_running_or_waiting(soaked):
    srv, keys, _ = soaked
    assert wait_until(lambda: engine_counts(srv.base_url, keys[0]) ==
                      {"in_flight": 0, "running": 0, "waiting": 0}, timeout=15)  # fmt: skip


def test_memory_is_flat_under_load_and_comes_back_idle(soaked):
    _, _, report = soaked
    peak = max(b for _, b in report.rss)
    # Loose: in a short run one late long prompt's KV (about 0.2 GB) moves the end's mean.
    assert report.rss_growth_second_half() < 0.5
    assert report.rss_idle < 0.9 * peak  # given back once idle (engine/idle.py)


def test_a_refused_client_is_not_starved(soaked):
    # Retrying every 1 s (Retry-After), a client waits in line about as long as the
    # clients ahead of it take to be served (engine/admission.py): at most all of them.
    _, _, report = soaked
    fair_wait_s = CLIENTS / (report.requests / report.wall_s)
    assert max(report.max_consecutive_503.values()) <= 2 * fair_wait_s + 5
