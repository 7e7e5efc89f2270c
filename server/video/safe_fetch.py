"""Download a video from a user-given URL without letting the URL reach internal services (SSRF).

What is enforced, hop by hop (the first request and every redirect):

* the scheme must be in `FetchPolicy.allowed_schemes` (default: https only);
* URLs with user info (`https://user:pw@host/`) are refused: credentials in URLs end up in logs,
  and `user@host` is a classic way to make a URL look like it points somewhere else;
* the host is resolved once with DNS, and the request is refused if ANY resolved address is not
  a public unicast address (loopback, private, link-local incl. cloud metadata 169.254.169.254,
  shared 100.64.0.0/10, unspecified, multicast, reserved, and the IPv6 forms that embed such an
  IPv4 address: IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo). Checking the *resolved*
  addresses also catches numeric tricks like `http://2130706433/` or `http://0x7f000001/`;
* the connection goes to the address that was checked (the request URL carries the IP, the Host
  header and, for https, the SNI / certificate hostname carry the original name), so a DNS answer
  that changes between the check and the connect (DNS rebinding) cannot redirect it;
* redirects are followed by hand, at most `max_redirects`, each target checked like the first URL.

The body is streamed into a temporary file next to `dest` and renamed onto `dest` only when the
download is complete, so `dest` never holds a partial file; the temporary file is removed on any
failure. Size (Content-Length and counted bytes), connect, per-read and total time are bounded.

`FetchPolicy.allowed_hosts` bypasses the address check (not the scheme check) for trusted hosts.
An entry is either a host (`"store.internal"`, `"10.0.0.5"`, `"::1"`), which matches any port, or
a host with a port (`"127.0.0.1:8080"`, `"[::1]:8080"`), which matches only that port. Host names
are compared lower-case, IDNA-encoded (as `xn--...`) for non-ASCII names.
`FetchPolicy.allow_private` lifts only the "private" and "shared" classes (RFC 1918, fc00::/7,
100.64.0.0/10, documentation/benchmark ranges); loopback, link-local, unspecified, multicast and
reserved addresses stay refused, because they are never a legitimate video store.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import pathlib
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import BinaryIO

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_URL_CHARS = 8192  # longer URLs are refused outright; no video URL needs more
_SHOWN_URL_CHARS = 200  # never echo more than this much of a URL in a message
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "arc-video-serve/0.1"

# IPv6 prefixes whose low 32 bits are an IPv4 destination (RFC 6052 NAT64 well-known / local-use).
_NAT64_PREFIXES = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d form
_SHARED_V4 = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT, not "private" in Python
_THIS_NETWORK_V4 = ipaddress.IPv4Network("0.0.0.0/8")  # Linux routes 0.0.0.0 to the local host


class FetchError(Exception):
    """A refused or failed download; `status_code` is what the gateway should answer with."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"FetchError({self.status_code}, {self.code!r}, {self.message!r})"


@dataclass(frozen=True)
class FetchPolicy:
    allowed_schemes: frozenset[str] = frozenset({"https"})
    max_bytes: int = 512 * 1024 * 1024
    connect_timeout_s: float = 10.0  # also bounds the DNS lookup
    read_timeout_s: float = 30.0  # per read (and per write of the request)
    total_timeout_s: float = 300.0  # whole download, all hops included
    max_redirects: int = 3
    # Hosts ("name", "ip", "name:port", "[v6]:port") that bypass the address check; see module doc.
    allowed_hosts: frozenset[str] = frozenset()
    allow_private: bool = False  # True only for trusted networks; see module doc
    # TLS trust for https; None means the default CA bundle (certifi). Set for private CAs / tests.
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)


@dataclass
class FetchResult:
    path: pathlib.Path
    size: int
    content_type: str | None
    final_url: str  # the URL (after redirects) that served the body, with its original host name


def _shorten(text: str) -> str:
    if len(text) <= _SHOWN_URL_CHARS:
        return text
    return text[:_SHOWN_URL_CHARS] + "..."


def _refused(code: str, message: str) -> FetchError:
    return FetchError(400, code, message)


# --- address classification -------------------------------------------------------------------


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for, with the name of the form, if any."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped IPv6", ip.ipv4_mapped
    for prefix in _NAT64_PREFIXES:
        if ip in prefix:
            return "NAT64 IPv6", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4 IPv6", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo IPv6", ip.teredo[1]  # (server, client); the client is the destination
    # ::/96 minus :: and ::1, which are judged as themselves (unspecified / loopback) below.
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible IPv6", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _address_class(ip: IPAddress, allow_private: bool) -> str | None:
    """Why `ip` must not be contacted (e.g. "a loopback address"), or None if it may be."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, v4 = embedded
            inner = _address_class(v4, allow_private)
            if inner is not None:
                return f"{inner} ({form} form)"
            # Mapped / NAT64 / compatible addresses are delivered to the IPv4 address itself.
            if form in ("IPv4-mapped IPv6", "NAT64 IPv6", "IPv4-compatible IPv6"):
                return None
    # Order matters: Python also calls loopback and link-local addresses "private".
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK_V4):
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (this includes cloud metadata services)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:  # includes 240.0.0.0/4 and 255.255.255.255
        return "a reserved address"
    if allow_private:
        return None
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_V4:
        return "a shared (carrier-grade NAT) address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a private address"
    if ip.is_private or not ip.is_global:
        return "a private address"
    return None


def blocked_reason(ip: str | IPAddress, allow_private: bool = False) -> str | None:
    """Public helper: why an address is refused (e.g. "a loopback address"), or None."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip)
    return _address_class(ip, allow_private)


# --- URL checks -------------------------------------------------------------------------------


def _parse_url(url: str, policy: FetchPolicy, what: str) -> httpx.URL:
    """Parse and check scheme, user info and host of one hop; `what` names it in messages."""
    if len(url) > _MAX_URL_CHARS:
        raise _refused("url_invalid", f"the {what} is longer than {_MAX_URL_CHARS} characters")
    shown = _shorten(url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise _refused("url_invalid", f"the {what} {shown!r} is not a valid URL ({exc})") from None
    allowed = ", ".join(sorted(policy.allowed_schemes)) or "none"
    if parsed.scheme not in policy.allowed_schemes:
        scheme = parsed.scheme or "(none)"
        raise _refused(
            "url_scheme",
            f"the {what} uses the scheme {scheme!r}, which is not allowed; use one of: {allowed}",
        )
    if parsed.userinfo:
        raise _refused(
            "url_userinfo",
            f"the {what} contains a user name or password before the host, which is not allowed;"
            " remove the 'user:password@' part",
        )
    if not parsed.raw_host:
        raise _refused("url_invalid", f"the {what} {shown!r} has no host")
    return parsed


def _host_port(url: httpx.URL) -> tuple[str, int]:
    host = url.raw_host.decode("ascii").lower()
    port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    return host, port


def _is_allowed_host(host: str, port: int, policy: FetchPolicy) -> bool:
    if not policy.allowed_hosts:
        return False
    shown_host = f"[{host}]" if ":" in host else host
    candidates = {host, f"{shown_host}:{port}"}
    return any(entry.strip().lower() in candidates for entry in policy.allowed_hosts)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """All addresses `host` resolves to, in resolver order, without duplicates."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


async def _checked_addresses(url: httpx.URL, policy: FetchPolicy, what: str) -> list[IPAddress]:
    """Resolve the host of `url`; refuse if any address is not allowed. Returns what to dial."""
    host, port = _host_port(url)
    shown_host = _shorten(host)
    try:
        addresses = await asyncio.wait_for(_resolve(host, port), policy.connect_timeout_s)
    except asyncio.TimeoutError:
        raise FetchError(
            504, "url_timeout", f"resolving the {what} host {shown_host} took too long"
        ) from None
    except (OSError, UnicodeError, ValueError):
        addresses = []
    if not addresses:
        raise _refused(
            "url_unresolvable",
            f"the {what} host {shown_host} could not be resolved; check the host name",
        )
    if _is_allowed_host(host, port, policy):
        return addresses
    for ip in addresses:
        reason = _address_class(ip, policy.allow_private)
        if reason is not None:
            # The resolved address itself is not echoed: it could reveal internal DNS data.
            raise _refused(
                "url_blocked_address",
                f"the {what} host {shown_host} resolves to {reason}, which is not allowed;"
                " use a publicly reachable URL",
            )
    return addresses


# --- the download -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs tens of ms; do it once, not once per hop.
    return httpx.create_ssl_context()


def _client(policy: FetchPolicy) -> httpx.AsyncClient:
    # A fresh client per hop: no cookies or pooled connections (bound to another host's SNI)
    # carry over. trust_env=False: an HTTP(S)_PROXY or .netrc must not bypass the pinning.
    timeout = httpx.Timeout(
        connect=policy.connect_timeout_s,
        read=policy.read_timeout_s,
        write=policy.read_timeout_s,
        pool=policy.connect_timeout_s,
    )
    return httpx.AsyncClient(
        verify=policy.ssl_context or _default_ssl_context(),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
    )


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, ip: IPAddress) -> httpx.Request:
    """A GET to `ip` that looks, to the server and to TLS, like a GET to `url`."""
    host, _port = _host_port(url)
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    headers = {
        "Host": url.netloc.decode("ascii"),
        "User-Agent": _USER_AGENT,
        "Accept": "*/*",
        # Stored bytes must be the video itself; compressed bodies are refused below.
        "Accept-Encoding": "identity",
    }
    pinned = url.copy_with(host=str(ip), fragment=None)
    return client.build_request("GET", pinned, headers=headers, extensions=extensions)


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _send(
    client: httpx.AsyncClient, url: httpx.URL, addresses: list[IPAddress], what: str
) -> httpx.Response:
    """Open a streaming response, trying the checked addresses in order until one connects."""
    shown_host = _shorten(_host_port(url)[0])
    last_error: httpx.ConnectError | None = None
    for ip in addresses:
        try:
            return await client.send(_pinned_request(client, url, ip), stream=True)
        except httpx.ConnectError as exc:
            if _tls_failure(exc):
                detail = _shorten(str(exc))
                raise FetchError(
                    502,
                    "url_tls",
                    f"the TLS handshake with the {what} host {shown_host} failed ({detail});"
                    " the server needs a valid certificate for its name",
                ) from None
            last_error = exc
    raise FetchError(
        502,
        "url_connect",
        f"could not connect to the {what} host {shown_host} ({_shorten(str(last_error))})",
    )


async def _save_body(
    response: httpx.Response, file: BinaryIO, policy: FetchPolicy, shown_url: str
) -> int:
    too_large = FetchError(
        413,
        "url_too_large",
        f"the video at {shown_url} is larger than the limit of {policy.max_bytes} bytes",
    )
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > policy.max_bytes:
        raise too_large  # refuse before reading a single body byte
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Decoding would let a small compressed body expand in memory; we asked for identity.
        raise FetchError(
            502,
            "url_content_encoding",
            f"the server sent a {_shorten(encoding)!r}-encoded body; serve the video uncompressed",
        )
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > policy.max_bytes:
            raise too_large
        file.write(chunk)  # small local writes; not worth a thread per chunk
    return size


async def _download(url: str, file: BinaryIO, policy: FetchPolicy) -> tuple[int, str | None, str]:
    """Follow redirects and save the body into `file`: (size, content type, final URL)."""
    current = _parse_url(url, policy, "URL")
    what = "URL"
    for hop in range(policy.max_redirects + 1):
        addresses = await _checked_addresses(current, policy, what)
        shown_url = _shorten(str(current))
        async with _client(policy) as client:
            response = await _send(client, current, addresses, what)
            try:
                if response.status_code in _REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(
                            502,
                            "url_redirects",
                            f"{shown_url} answered {response.status_code} without a Location",
                        )
                    if hop == policy.max_redirects:
                        raise FetchError(
                            502,
                            "url_redirects",
                            f"the URL redirected more than {policy.max_redirects} times;"
                            " give the final URL of the video",
                        )
                    try:
                        target = str(current.join(location).copy_with(fragment=None))
                    except (httpx.InvalidURL, TypeError, ValueError):
                        target = location
                    what = "redirect target"
                    current = _parse_url(target, policy, what)
                    continue
                if not 200 <= response.status_code < 300:
                    raise FetchError(
                        502,
                        "url_http_status",
                        f"{shown_url} answered HTTP {response.status_code}"
                        f" {response.reason_phrase}; check that the URL points to the video",
                    )
                size = await _save_body(response, file, policy, shown_url)
                return size, response.headers.get("content-type"), str(current)
            finally:
                await response.aclose()
    raise AssertionError("unreachable: the loop returns or raises")


async def fetch_to_file(url: str, dest: pathlib.Path, policy: FetchPolicy) -> FetchResult:
    """Download `url` into `dest` under `policy`; raises FetchError (never leaves partial files)."""
    dest = pathlib.Path(dest)
    # The body goes to a temporary file beside `dest` (same file system, so the final rename is
    # atomic); `dest` only ever appears complete.
    handle, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp_path = pathlib.Path(name)
    try:
        try:
            with os.fdopen(handle, "wb") as file:
                size, content_type, final_url = await asyncio.wait_for(
                    _download(url, file, policy), policy.total_timeout_s
                )
        except asyncio.TimeoutError:
            raise FetchError(
                504,
                "url_timeout",
                f"downloading the video took longer than {policy.total_timeout_s:g} s",
            ) from None
        except httpx.TimeoutException as exc:
            kind = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "reading from"
            raise FetchError(
                504, "url_timeout", f"{kind} the video server timed out ({type(exc).__name__})"
            ) from None
        except httpx.HTTPError as exc:
            raise FetchError(
                502, "url_upstream", f"the video server broke the transfer ({type(exc).__name__})"
            ) from None
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return FetchResult(path=dest, size=size, content_type=content_type, final_url=final_url)
