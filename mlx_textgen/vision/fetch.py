"""Fetching remote images for requests: only public addresses, bounded in time and size, cached.

Each hop of a fetch resolves its host once (off the event loop), checks every address the
resolver gave (``addresses.refusal``), then connects to a checked address itself: the URL's
host is replaced by the address, while the Host header and the TLS server name (SNI, and the
name the certificate is verified against) stay the original host's. A DNS answer that changes
between the check and the connection (rebinding) therefore can't lead anywhere unchecked.
Redirects are followed by hand, each hop checked the same way.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import certifi  # httpx's own dependency: the CA roots it verifies against by default
import httpx

from mlx_textgen.vision.addresses import IPAddress, parse_address, refusal
from mlx_textgen.vision.lru import SizedLRU

if TYPE_CHECKING:
    from mlx_textgen.config import ServerConfig

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}

# (host, port) -> the addresses it resolves to, as strings. The test seam for fake names.
Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class FetchPolicy:
    """What the operator allows a fetch to do (``--media-*`` and ``--allow-private-media-urls``)."""

    timeout_s: float = 10.0  # whole fetch, connect to last byte, redirects included
    max_bytes: int = 20 * 2**20  # body cap; reading stops past it
    allow_private: bool = False  # loopback, link-local, private, CGNAT, ... (addresses.refusal)
    cache_bytes: int = 256 * 2**20  # bounded cache of downloaded bodies, by URL

    @classmethod
    def from_config(cls, config: ServerConfig) -> FetchPolicy:
        """The policy the operator set (``media_*`` keys and ``allow_private_media_urls``)."""
        return cls(
            timeout_s=config.media_fetch_timeout,
            max_bytes=config.media_max_bytes,
            allow_private=config.allow_private_media_urls,
            cache_bytes=config.media_cache_bytes,
        )


class FetchError(Exception):
    """A fetch that failed or was refused; ``reason`` is one sentence fit for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def system_resolver(host: str, port: int) -> list[str]:
    """The system resolver's addresses for `host` (getaddrinfo, in the default executor)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class Fetcher:
    """Downloads http(s) URLs under a FetchPolicy; bodies are cached by exact URL (LRU, bounded
    by total bytes) and concurrent fetches of one URL share one download.

    `resolver` (tests only) replaces the system resolver; `ssl_context` (tests only) replaces
    the default certificate verification (certifi's roots, as httpx's default).
    """

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self._resolve = resolver or system_resolver
        self._ssl_context = ssl_context
        self._cache = BodyCache(policy.cache_bytes)
        self._inflight: dict[str, asyncio.Task[bytes]] = {}

    async def fetch(self, url: str) -> bytes:
        """The body of `url`; FetchError when it is refused, fails, or breaks the policy."""
        body = self._cache.get(url)
        if body is not None:
            return body
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.ensure_future(self._download(url))
            self._inflight[url] = task
            task.add_done_callback(lambda done: self._finished(url, done))
        # One caller giving up (client gone) must not cancel the download the others wait on.
        return await asyncio.shield(task)

    def _finished(self, url: str, task: asyncio.Task[bytes]) -> None:
        self._inflight.pop(url, None)
        if not task.cancelled() and task.exception() is None:
            self._cache.put(url, task.result())

    async def _download(self, url: str) -> bytes:
        start = time.monotonic()
        target = _checked_url(url)
        try:
            body = await asyncio.wait_for(self._follow(target), self.policy.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            reason = f"timed out after {self.policy.timeout_s:g} s"
            log.info("image fetch from %s failed: %s", target.host, reason)
            raise FetchError(reason) from None
        except FetchError as exc:
            log.info("image fetch from %s failed: %s", target.host, exc.reason)
            raise
        log.debug("fetched %s: %d bytes in %.2f s", _redacted(target), len(body),
                  time.monotonic() - start)  # fmt: skip
        return body

    async def _follow(self, url: httpx.URL) -> bytes:
        # A fresh client per fetch and no keep-alive: a pooled connection is keyed by address,
        # and must never carry a request for another host than the one its TLS was checked for.
        timeout = httpx.Timeout(self.policy.timeout_s)
        limits = httpx.Limits(max_keepalive_connections=0)
        if self._ssl_context is None:  # built once: loading the CA roots takes ~0.1 s
            self._ssl_context = ssl.create_default_context(cafile=certifi.where())
        async with httpx.AsyncClient(
            verify=self._ssl_context, trust_env=False, timeout=timeout, limits=limits
        ) as client:
            for _ in range(MAX_REDIRECTS + 1):
                result = await self._hop(client, url)
                if isinstance(result, bytes):
                    return result
                url = result
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")

    async def _hop(self, client: httpx.AsyncClient, url: httpx.URL) -> bytes | httpx.URL:
        """One request: the body, or the URL a redirect leads to (already checked)."""
        addresses = await self._addresses(url)
        for index, address in enumerate(addresses):
            try:
                response = await client.send(_pinned_request(client, url, address), stream=True)
            except httpx.ConnectError as exc:
                if index + 1 < len(addresses):
                    continue  # the next checked address, as a browser would
                raise FetchError(_connect_failure(url, exc)) from None
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError:
                raise FetchError(f"the connection to {url.host} failed") from None
            try:
                return await self._answer(url, response)
            finally:
                await response.aclose()
        raise FetchError(f"host {url.host} could not be resolved")

    async def _addresses(self, url: httpx.URL) -> list[IPAddress]:
        """Every address of the URL's host, each checked; FetchError if any is refused."""
        host = url.raw_host.decode("ascii")
        literal = parse_address(host)
        if literal is not None:
            found = [literal]
        else:
            try:
                names = await self._resolve(host, url.port or _DEFAULT_PORTS[url.scheme])
            except (OSError, UnicodeError):
                names = []
            found = [a for a in map(parse_address, names) if a is not None]
        if not found:
            raise FetchError(f"host {url.host} could not be resolved")
        for address in found:
            kind = None if self.policy.allow_private else self._refusal(host, address)
            if kind is None:
                continue
            if literal is not None:
                raise FetchError(f"address {address} is {kind}: refused")
            # The address itself is not echoed: it would map the operator's internal DNS.
            raise FetchError(f"host {url.host} resolves to an address that is {kind}: refused")
        return list(dict.fromkeys(found))

    def _refusal(self, host: str, address: IPAddress) -> str | None:
        """Why `address` (an address of `host`) may not be fetched from; None: it may."""
        return refusal(address)

    async def _answer(self, url: httpx.URL, response: httpx.Response) -> bytes | httpx.URL:
        status = response.status_code
        if status in _REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                raise FetchError(f"HTTP {status} redirect without a Location")
            try:
                return _checked_url(str(url.join(location)))  # relative to the URL, not the address
            except httpx.InvalidURL:
                raise FetchError("redirect to an invalid URL") from None
        if not 200 <= status < 300:
            raise FetchError(f"HTTP {status}")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # Asked for identity; a compressed body could expand far past the cap per chunk.
            raise FetchError(f"compressed response ({encoding}) not accepted")
        cap = self.policy.max_bytes
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            raise FetchError(f"larger than {_size_words(cap)}")
        chunks, total = [], 0
        async for chunk in response.aiter_raw():
            total += len(chunk)
            if total > cap:
                raise FetchError(f"larger than {_size_words(cap)}")
            chunks.append(chunk)
        return b"".join(chunks)


class BodyCache(SizedLRU[bytes]):
    """Downloaded bodies by exact URL, least recently used first out, at most `limit_bytes` in
    all; a body larger than the whole limit is not kept."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(limit_bytes, len)


def _checked_url(url: str) -> httpx.URL:
    """`url` parsed, if it is an http(s) URL with a host and no user name or password."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError("invalid URL") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        shown = parsed.scheme[:20] or "(none)"
        raise FetchError(f"URL scheme {shown!r} is not allowed; use http or https")
    if parsed.userinfo:
        raise FetchError("URLs with a user name or password are not accepted")
    if not parsed.raw_host:
        raise FetchError("invalid URL: no host")
    return parsed


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: IPAddress) -> httpx.Request:
    """A GET of `url` sent to `address`, with the URL's Host header and TLS server name."""
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Accept": "image/*,*/*;q=0.5",
        "Accept-Encoding": "identity",
        "User-Agent": "mlx-textgen",
    }
    extensions = {"sni_hostname": url.raw_host.decode("ascii")}
    return client.build_request(
        "GET", url.copy_with(host=str(address)), headers=headers, extensions=extensions
    )


def _connect_failure(url: httpx.URL, exc: httpx.ConnectError) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in str(exc):
        return f"the TLS certificate of {url.host} could not be verified"
    if isinstance(cause, ssl.SSLError):
        return f"the TLS handshake with {url.host} failed"
    return f"could not connect to {url.host}"


def _redacted(url: httpx.URL) -> str:
    """`url` without its query (which may carry tokens), for logs."""
    query = "?..." if url.query else ""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}{query}"


def _size_words(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"
