"""Remote image fetching (vision/fetch.py) against a real HTTP server on 127.0.0.1.

The server is a threaded http.server on a random port, bound before its thread starts (so no
waiting for it). Fake host names come through the Fetcher's resolver seam; a refusal is shown
to be the address check (not an unreachable host) by the same URL fetching when allowed.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from mlx_textgen.vision.addresses import parse_address, refusal
from mlx_textgen.vision.fetch import BodyCache, Fetcher, FetchError, FetchPolicy

BODY = bytes(range(256)) * 4  # 1 KiB
OPEN = FetchPolicy(allow_private=True, timeout_s=5.0)


class _State:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.stop = threading.Event()  # set at teardown: stalled handlers return
        self.arrived = threading.Event()  # /gate got its request
        self.release = threading.Event()  # /gate may answer
        self.sni: list[str | None] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.state.hits[parts.path] += 1
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = parts.path.split("/")[1]
        getattr(self, f"_{route.replace('-', '_')}", self._missing)(parts.path, query)

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _missing(self, path: str, query: dict[str, str]) -> None:
        self._send(404, b"no")

    def _img(self, path: str, query: dict[str, str]) -> None:  # /img/<name>?size=N
        self._send(200, BODY[: int(query["size"])] if "size" in query else BODY)

    def _host(self, path: str, query: dict[str, str]) -> None:
        self._send(200, self.headers["Host"].encode())

    def _redirect(self, path: str, query: dict[str, str]) -> None:
        self._send(302, b"", Location=query["to"])

    def _loop(self, path: str, query: dict[str, str]) -> None:
        self._send(302, b"", Location="/loop")

    def _status(self, path: str, query: dict[str, str]) -> None:
        self._send(int(path.split("/")[2]), b"err")

    def _gzip(self, path: str, query: dict[str, str]) -> None:
        self._send(200, b"\x1f\x8b", Content_Encoding="gzip")

    def _long(self, path: str, query: dict[str, str]) -> None:  # says too much up front
        self.send_response(200)
        self.send_header("Content-Length", str(10**9))
        self.end_headers()

    def _chunked(self, path: str, query: dict[str, str]) -> None:  # no length, endless chunks
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while not self.state.stop.is_set():
                self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        except OSError:
            pass  # the client hung up at the cap

    def _stall(self, path: str, query: dict[str, str]) -> None:
        self.state.stop.wait(10)

    def _trickle(self, path: str, query: dict[str, str]) -> None:  # a byte every 50 ms
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            while not self.state.stop.wait(0.05):
                self.wfile.write(b"x")
                self.wfile.flush()
        except OSError:
            pass

    def _gate(self, path: str, query: dict[str, str]) -> None:
        self.state.arrived.set()
        self.state.release.wait(10)
        self._send(200, BODY)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up (at a cap, a timeout, a refused certificate)


def _start(handler: type[_Handler], tls: ssl.SSLContext | None = None) -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class _Live(_Handler):
    state = _State()  # replaced by each test's `state` fixture


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    yield from _start(_Live)


@pytest.fixture(autouse=True)
def state(port: int) -> Iterator[_State]:
    _Live.state = fresh = _State()
    yield fresh
    fresh.stop.set()  # stalled handlers return
    fresh.release.set()


def _resolver(names: dict[str, list[str]], calls: list[str] | None = None):
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return names[host]

    return resolve


async def _refused(fetcher: Fetcher, url: str) -> str:
    with pytest.raises(FetchError) as info:
        await fetcher.fetch(url)
    return info.value.reason


# ---------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    "text, kind",
    [
        ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
        ("192.168.1.1", "private"), ("100.64.0.1", "shared (CGNAT)"), ("fc00::1", "unique-local"),
        ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "reserved"),
        ("64:ff9b::a00:1", "private"), ("2002:7f00:1::", "loopback"), ("fec0::1", "private"),
        ("8.8.8.8", None), ("2606:4700::1111", None), ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
    ],
)  # fmt: skip
def test_address_kinds(text: str, kind: str | None) -> None:
    address = parse_address(text)
    assert address is not None and refusal(address) == kind


def test_shorthand_ipv4_is_left_to_the_resolver() -> None:
    assert [parse_address(t) for t in ("127.1", "2130706433", "0x7f000001", "a.b")] == [None] * 4


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "host",
    ["localhost", "[::1]", "0.0.0.0", "127.1", "2130706433", "0x7f000001", "127.0.0.1",
     "[::ffff:127.0.0.1]"],
)  # fmt: skip
async def test_loopback_spellings_refused_unless_allowed(
    host: str, port: int, state: _State
) -> None:
    url = f"http://{host}:{port}/img/a"
    reason = await _refused(Fetcher(FetchPolicy()), url)
    assert reason.endswith(("is loopback: refused", "is unspecified: refused"))
    assert not state.hits  # refused before connecting
    if host != "[::1]":  # the server listens on IPv4 only
        assert await Fetcher(OPEN).fetch(url) == BODY


@pytest.mark.parametrize(
    "host, kind",
    [("169.254.169.254", "link-local"), ("10.0.0.1", "private"), ("192.168.0.10", "private"),
     ("[fd00::1]", "unique-local"), ("100.64.1.1", "shared (CGNAT)")],
)  # fmt: skip
async def test_private_addresses_refused(host: str, kind: str) -> None:
    reason = await _refused(Fetcher(FetchPolicy()), f"http://{host}/latest/meta-data")
    assert reason == f"address {host.strip('[]')} is {kind}: refused"


async def test_name_with_one_private_address_among_public_ones_is_refused() -> None:
    fetcher = Fetcher(FetchPolicy(), resolver=_resolver({"mixed.test": ["8.8.8.8", "10.0.0.1"]}))
    reason = await _refused(fetcher, "http://mixed.test/x.png")
    assert reason == "host mixed.test resolves to an address that is private: refused"
    assert "10.0.0.1" not in reason  # internal DNS is not echoed


@pytest.mark.parametrize(
    "url, words",
    [("ftp://example.com/a.png", "scheme 'ftp'"), ("file:///etc/passwd", "scheme 'file'"),
     ("javascript:alert(1)", "scheme 'javascript'"), ("example.com/a.png", "scheme '(none)'"),
     ("http://user:pw@example.com/a.png", "user name"), ("http://8.8.8.8@127.0.0.1/", "user name"),
     ("http:///a.png", "no host"), ("http://[zz]/", "invalid URL"),
     ("http://0177.0.0.1/", "invalid URL")],  # httpx refuses octal IPv4 outright
)  # fmt: skip
async def test_bad_urls_refused(url: str, words: str) -> None:
    assert words in await _refused(Fetcher(OPEN), url)


async def test_unresolvable_and_unreachable_hosts(port: int) -> None:
    fetcher = Fetcher(OPEN, resolver=_resolver({}))
    assert (
        await _refused(fetcher, "http://nowhere.test/a")
        == "host nowhere.test could not be resolved"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nothing listens once closed
    assert await _refused(Fetcher(OPEN), f"http://127.0.0.1:{closed}/a") == (
        "could not connect to 127.0.0.1"
    )


# ---------------------------------------------------------------------------- pinning, redirects


async def test_connects_to_the_resolved_address_with_the_urls_host(port: int) -> None:
    calls: list[str] = []
    fetcher = Fetcher(OPEN, resolver=_resolver({"pinned.test": ["127.0.0.1"]}, calls))
    assert await fetcher.fetch(f"http://pinned.test:{port}/host") == f"pinned.test:{port}".encode()
    assert calls == ["pinned.test"]  # one resolution: no second answer to rebind


class _FirstHopPublic(Fetcher):
    """Treats public.test as public though it resolves to the test server on 127.0.0.1."""

    def _refusal(self, host, address):  # type: ignore[no-untyped-def]
        return None if host == "public.test" else super()._refusal(host, address)


@pytest.mark.parametrize(
    "target, reason",
    [("http://inside.test:{port}/img/a", "host inside.test resolves to an address that is loopback"),
     ("http://127.0.0.1:{port}/img/a", "address 127.0.0.1 is loopback"),
     ("http://[::ffff:7f00:1]:{port}/img/a", "address ::ffff:7f00:1 is loopback")],
)  # fmt: skip
async def test_redirect_to_a_private_address_is_refused(
    target: str, reason: str, port: int, state: _State
) -> None:
    names = _resolver({"public.test": ["127.0.0.1"], "inside.test": ["127.0.0.1"]})
    url = f"http://public.test:{port}/redirect?to={target.format(port=port)}"
    assert (
        await _refused(_FirstHopPublic(FetchPolicy(), resolver=names), url) == f"{reason}: refused"
    )
    assert state.hits == {"/redirect": 1}  # the second hop was never requested
    assert await Fetcher(OPEN, resolver=names).fetch(url) == BODY  # allowed, it is followed


async def test_redirects_relative_limited_and_checked_for_scheme(port: int) -> None:
    fetcher = Fetcher(OPEN)
    assert await fetcher.fetch(f"http://127.0.0.1:{port}/redirect?to=/img/rel") == BODY
    assert await _refused(fetcher, f"http://127.0.0.1:{port}/loop") == "more than 5 redirects"
    bad = f"http://127.0.0.1:{port}/redirect?to=file:///etc/passwd"
    assert "scheme 'file'" in await _refused(fetcher, bad)


# ---------------------------------------------------------------------------- limits, statuses


async def test_timeout_covers_the_whole_fetch(port: int) -> None:
    fetcher = Fetcher(FetchPolicy(allow_private=True, timeout_s=0.4))
    for path in ("/stall", "/trickle"):  # no answer; an answer slower than the limit in all
        start = time.monotonic()
        assert await _refused(fetcher, f"http://127.0.0.1:{port}{path}") == "timed out after 0.4 s"
        assert time.monotonic() - start < 2.0


async def test_size_cap_by_length_and_while_streaming(port: int, state: _State) -> None:
    fetcher = Fetcher(FetchPolicy(allow_private=True, max_bytes=64 * 1024))
    for path in ("/long", "/chunked"):
        assert await _refused(fetcher, f"http://127.0.0.1:{port}{path}") == "larger than 64 KiB"
    exact = Fetcher(FetchPolicy(allow_private=True, max_bytes=len(BODY)))
    assert await exact.fetch(f"http://127.0.0.1:{port}/img/a") == BODY  # at the cap is fine
    assert "larger than 1023 bytes" == await _refused(
        Fetcher(FetchPolicy(allow_private=True, max_bytes=len(BODY) - 1)),
        f"http://127.0.0.1:{port}/img/b",
    )


async def test_statuses_and_encodings(port: int) -> None:
    fetcher = Fetcher(OPEN)
    assert await _refused(fetcher, f"http://127.0.0.1:{port}/nothing") == "HTTP 404"
    assert await _refused(fetcher, f"http://127.0.0.1:{port}/status/500") == "HTTP 500"
    assert await _refused(fetcher, f"http://127.0.0.1:{port}/gzip") == (
        "compressed response (gzip) not accepted"
    )


# ---------------------------------------------------------------------------- cache, sharing


async def test_cache_hit_makes_no_request(port: int, state: _State) -> None:
    fetcher = Fetcher(OPEN)
    url = f"http://127.0.0.1:{port}/img/a?size=100"
    assert await fetcher.fetch(url) == await fetcher.fetch(url) == BODY[:100]
    assert state.hits["/img/a"] == 1
    await fetcher.fetch(url + "&v=2")  # another URL (exact match only)
    assert state.hits["/img/a"] == 2


async def test_cache_evicts_least_recently_used_and_skips_oversized(
    port: int, state: _State
) -> None:
    fetcher = Fetcher(FetchPolicy(allow_private=True, cache_bytes=250))
    url = {name: f"http://127.0.0.1:{port}/img/{name}?size=100" for name in "abc"}
    for name in "aba":  # a is now the most recently used
        await fetcher.fetch(url[name])
    await fetcher.fetch(url["c"])  # 300 bytes > 250: b goes
    await fetcher.fetch(url["a"])
    await fetcher.fetch(url["b"])
    assert (state.hits["/img/a"], state.hits["/img/b"], state.hits["/img/c"]) == (1, 2, 1)
    big = f"http://127.0.0.1:{port}/img/big?size=300"
    await fetcher.fetch(big)
    await fetcher.fetch(big)
    assert state.hits["/img/big"] == 2  # larger than the whole cache: never kept


def test_body_cache_accounting() -> None:
    cache = BodyCache(10)
    cache.put("a", b"12345")
    cache.put("a", b"123")  # replaced, not counted twice
    cache.put("b", b"1234567")
    assert (cache.nbytes, "a" in cache, cache.get("b")) == (10, True, b"1234567")
    cache.put("c", b"1")
    assert ("a" in cache, "b" in cache, cache.nbytes) == (False, True, 8)


async def test_concurrent_fetches_share_one_download(port: int, state: _State) -> None:
    fetcher = Fetcher(FetchPolicy(allow_private=True, cache_bytes=0))  # no cache: only sharing
    url = f"http://127.0.0.1:{port}/gate"
    first = asyncio.ensure_future(fetcher.fetch(url))
    others = [asyncio.ensure_future(fetcher.fetch(url)) for _ in range(4)]
    assert await asyncio.to_thread(state.arrived.wait, 5)
    first.cancel()  # one client leaving does not cancel the download the others wait on
    state.release.set()
    assert await asyncio.gather(*others) == [BODY] * 4
    assert state.hits["/gate"] == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_failures_are_not_cached(port: int, state: _State) -> None:
    fetcher = Fetcher(OPEN)
    for _ in range(2):
        await _refused(fetcher, f"http://127.0.0.1:{port}/status/503")
    assert state.hits["/status/503"] == 2


async def test_logs_carry_no_query(port: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="mlx_textgen.vision.fetch"):
        await Fetcher(OPEN).fetch(f"http://127.0.0.1:{port}/img/a?token=SECRET")
        await _refused(Fetcher(FetchPolicy()), f"http://127.0.0.1:{port}/img/a?token=SECRET")
    assert "/img/a?..." in caplog.text and "refused" in caplog.text
    assert "SECRET" not in caplog.text


# ---------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    crt, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=pinned.test", "-addext", "subjectAltName=DNS:pinned.test",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


async def test_https_uses_the_urls_host_for_sni_and_verification(
    cert: tuple[Path, Path], state: _State
) -> None:
    crt, key = cert
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(crt, key)
    server_tls.sni_callback = lambda sock, name, ctx: state.sni.append(name)  # type: ignore[assignment]
    client_tls = ssl.create_default_context(cafile=str(crt))
    names = _resolver({"pinned.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    fetcher = Fetcher(OPEN, resolver=names, ssl_context=client_tls)
    handler = type("TLSHandler", (_Handler,), {"state": state})
    for port in _start(handler, tls=server_tls):
        url = f"https://pinned.test:{port}/host"
        assert await fetcher.fetch(url) == f"pinned.test:{port}".encode()
        assert state.sni == ["pinned.test"]
        reason = await _refused(fetcher, f"https://other.test:{port}/host")
        assert reason == "the TLS certificate of other.test could not be verified"
