"""server.video.safe_fetch against a real HTTP(S) server on 127.0.0.1 (no outside network needed).

Refusals of blocked addresses happen before any connection, so URLs such as
http://169.254.169.254/ never leave the machine. Slow endpoints wait on an event that the
fixture sets at teardown, so every server thread ends by itself.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from server.video import safe_fetch
from server.video.safe_fetch import FetchError, FetchPolicy, FetchResult, fetch_to_file

BODY = bytes(range(256)) * 400  # 102,400 bytes
STALL_S = 5.0  # longest any handler waits; the tests' timeouts are far below it


class Handler(http.server.BaseHTTPRequestHandler):
    server: TestServer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Host", "")))
        path = self.path.split("?", 1)[0]
        stop = self.server.stop
        try:
            if path == "/video":
                self._head(200, {"Content-Type": "video/mp4", "Content-Length": str(len(BODY))})
                self.wfile.write(BODY)
            elif path == "/endless":  # no Content-Length: the body ends when the socket closes
                self._head(200, {"Content-Type": "video/mp4"})
                chunk = b"\0" * 65536
                for _ in range(1024):  # 64 MiB at most
                    if stop.is_set():
                        break
                    self.wfile.write(chunk)
            elif path == "/declared-huge":  # says 1 TB, then sends nothing
                self._head(200, {"Content-Length": str(10**12)})
                self.wfile.flush()
                stop.wait(STALL_S)
            elif path == "/stall":  # part of the body, then nothing
                self._head(200, {"Content-Length": str(len(BODY))})
                self.wfile.write(BODY[:1000])
                self.wfile.flush()
                stop.wait(STALL_S)
            elif path == "/slow-headers":
                stop.wait(STALL_S)
                self._head(200, {"Content-Length": "0"})
            elif path == "/trickle":  # each read is quick, the whole body is slow
                self._head(200, {"Content-Length": "100"})
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    if stop.wait(0.05):
                        break
            elif path == "/gzip":
                self._head(200, {"Content-Encoding": "gzip", "Content-Length": "4"})
                self.wfile.write(b"\x1f\x8b\x08\x00")
            elif path == "/redirect":
                target = self.path.split("?to=", 1)[1]
                self._head(302, {"Location": target, "Content-Length": "0"})
            elif path.startswith("/chain/"):  # /chain/N: N relative redirects, then the video
                left = int(path.rsplit("/", 1)[1])
                if left > 0:
                    self._head(301, {"Location": f"../chain/{left - 1}", "Content-Length": "0"})
                else:
                    self._head(200, {"Content-Length": str(len(BODY))})
                    self.wfile.write(BODY)
            else:
                self._head(404, {"Content-Length": "9"})
                self.wfile.write(b"not found")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client gave up on purpose (size cap, timeout)


class TestServer(http.server.ThreadingHTTPServer):
    __test__ = False  # not a pytest test class
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.stop = threading.Event()
        self.requests: list[tuple[str, str]] = []
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return self.server_address[1]


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[TestServer]:
    server = TestServer(tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def srv() -> Iterator[TestServer]:
    yield from _serve()


def _policy(port: int | None = None, **overrides: object) -> FetchPolicy:
    """http allowed, the test server's 127.0.0.1:PORT trusted, short timeouts."""
    settings: dict[str, object] = {
        "allowed_schemes": frozenset({"http", "https"}),
        "allowed_hosts": frozenset({f"127.0.0.1:{port}"}) if port else frozenset(),
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "total_timeout_s": 10.0,
    }
    settings.update(overrides)
    return FetchPolicy(**settings)  # type: ignore[arg-type]


def _fetch(url: str, dest: Path, policy: FetchPolicy) -> FetchResult:
    return asyncio.run(fetch_to_file(url, dest, policy))


def _refused(url: str, dest: Path, policy: FetchPolicy) -> FetchError:
    with pytest.raises(FetchError) as info:
        _fetch(url, dest, policy)
    assert list(dest.parent.iterdir()) == [], "no file (partial or temporary) may be left"
    return info.value


def _fake_resolver(
    mapping: dict[str, list[str]],
) -> Callable[[str, int], Awaitable[list[safe_fetch.IPAddress]]]:
    """A stand-in for safe_fetch._resolve: fixed answers, unknown names fail like DNS does."""

    async def resolve(host: str, port: int) -> list[safe_fetch.IPAddress]:
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in mapping[host]]

    return resolve


# --- downloads that are allowed ----------------------------------------------------------------


def test_allowed_host_downloads(srv: TestServer, tmp_path: Path) -> None:
    dest = tmp_path / "v.mp4"
    url = f"http://127.0.0.1:{srv.port}/video"
    result = _fetch(url, dest, _policy(srv.port))
    assert result == FetchResult(dest, len(BODY), "video/mp4", url)
    assert dest.read_bytes() == BODY
    assert list(tmp_path.iterdir()) == [dest]


def test_size_exactly_at_cap_is_fine(srv: TestServer, tmp_path: Path) -> None:
    result = _fetch(
        f"http://127.0.0.1:{srv.port}/video", tmp_path / "v", _policy(srv.port, max_bytes=len(BODY))
    )
    assert result.size == len(BODY)


def test_relative_redirects_followed_up_to_limit(srv: TestServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{srv.port}/chain/3"
    result = _fetch(url, tmp_path / "v", _policy(srv.port, max_redirects=3))
    assert result.final_url == f"http://127.0.0.1:{srv.port}/chain/0"
    assert (tmp_path / "v").read_bytes() == BODY


def test_connection_is_pinned_to_checked_address(
    srv: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "video.test" exists in no DNS: the download only works if the connection goes to the
    # address safe_fetch resolved and checked, with the original name in the Host header.
    monkeypatch.setattr(safe_fetch, "_resolve", _fake_resolver({"video.test": ["127.0.0.1"]}))
    srv.requests.clear()
    policy = _policy(allowed_hosts=frozenset({"video.test"}))
    result = _fetch(f"http://video.test:{srv.port}/video", tmp_path / "v", policy)
    assert result.final_url == f"http://video.test:{srv.port}/video"
    assert srv.requests == [("/video", f"video.test:{srv.port}")]


# --- refused before connecting -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://017700000001/",
        "http://127.1/",
        "http://0.0.0.0/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://224.0.0.1/",
        "https://localhost/",
    ],
)
def test_blocked_addresses_refused(url: str, tmp_path: Path) -> None:
    err = _refused(url, tmp_path / "v", _policy())
    assert (err.status_code, err.code) == (400, "url_blocked_address")
    assert "which is not allowed" in err.message


def test_loopback_refused_without_allow_list(srv: TestServer, tmp_path: Path) -> None:
    srv.requests.clear()
    err = _refused(f"http://127.0.0.1:{srv.port}/video", tmp_path / "v", _policy())
    assert (err.status_code, err.code) == (400, "url_blocked_address")
    assert err.message.startswith("the URL host 127.0.0.1 resolves to a loopback address")
    assert srv.requests == []  # refused before connecting


def test_allow_private_keeps_loopback_and_metadata_blocked(tmp_path: Path) -> None:
    policy = _policy(allow_private=True)
    for url in ("http://127.0.0.1/", "http://169.254.169.254/", "http://[::ffff:127.0.0.1]/"):
        assert _refused(url, tmp_path / "v", policy).code == "url_blocked_address"


def test_any_blocked_resolved_address_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = _fake_resolver({"mixed.test": ["93.184.216.34", "10.1.2.3"]})
    monkeypatch.setattr(safe_fetch, "_resolve", resolver)
    err = _refused("https://mixed.test/v.mp4", tmp_path / "v", _policy())
    assert err.code == "url_blocked_address"
    assert "private" in err.message and "10.1.2.3" not in err.message


def test_unresolvable_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safe_fetch, "_resolve", _fake_resolver({}))
    err = _refused("https://nowhere.test/v.mp4", tmp_path / "v", _policy())
    assert (err.status_code, err.code) == (400, "url_unresolvable")


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/v.mp4", "url_scheme"),
        ("file:///etc/passwd", "url_scheme"),
        ("gopher://127.0.0.1:70/", "url_scheme"),
        ("http://user:secret@example.com/v.mp4", "url_userinfo"),
        ("http:///v.mp4", "url_invalid"),
        ("http://" + "a" * 9000, "url_invalid"),
    ],
)
def test_bad_urls_refused(url: str, code: str, tmp_path: Path) -> None:
    err = _refused(url, tmp_path / "v", _policy())
    assert (err.status_code, err.code) == (400, code)
    assert "secret" not in err.message and len(err.message) < 400


def test_http_refused_when_only_https_allowed(srv: TestServer, tmp_path: Path) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({f"127.0.0.1:{srv.port}"}))
    err = _refused(f"http://127.0.0.1:{srv.port}/video", tmp_path / "v", policy)
    assert (err.status_code, err.code) == (400, "url_scheme")
    assert "https" in err.message


# --- redirects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("http://169.254.169.254/latest/meta-data/", "url_blocked_address"),
        ("http://127.0.0.1:{other}/video", "url_blocked_address"),  # allow-list is per port
        ("http://localhost:{port}/video", "url_blocked_address"),  # allow-list is per name
        ("http://[::1]:{port}/video", "url_blocked_address"),
        ("http://2130706433:{port}/video", "url_blocked_address"),
        ("file:///etc/passwd", "url_scheme"),
    ],
)
def test_redirect_to_refused_target(
    srv: TestServer, target: str, code: str, tmp_path: Path
) -> None:
    target = target.format(port=srv.port, other=srv.port + 1)
    err = _refused(
        f"http://127.0.0.1:{srv.port}/redirect?to={target}", tmp_path / "v", _policy(srv.port)
    )
    assert (err.status_code, err.code) == (400, code)
    assert "redirect target" in err.message


def test_too_many_redirects(srv: TestServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{srv.port}/chain/4"
    err = _refused(url, tmp_path / "v", _policy(srv.port, max_redirects=3))
    assert (err.status_code, err.code) == (502, "url_redirects")


# --- size, status, timeouts --------------------------------------------------------------------


def test_size_cap_from_content_length(srv: TestServer, tmp_path: Path) -> None:
    policy = _policy(srv.port, max_bytes=len(BODY) - 1)
    err = _refused(f"http://127.0.0.1:{srv.port}/video", tmp_path / "v", policy)
    assert (err.status_code, err.code) == (413, "url_too_large")


def test_declared_huge_refused_before_reading(srv: TestServer, tmp_path: Path) -> None:
    # The server sends no body at all: a 413 (not a read timeout) shows the header was enough.
    policy = _policy(srv.port, max_bytes=1024 * 1024, read_timeout_s=1.0)
    err = _refused(f"http://127.0.0.1:{srv.port}/declared-huge", tmp_path / "v", policy)
    assert (err.status_code, err.code) == (413, "url_too_large")


def test_size_cap_on_streamed_body(srv: TestServer, tmp_path: Path) -> None:
    policy = _policy(srv.port, max_bytes=1024 * 1024)
    start = time.monotonic()
    err = _refused(f"http://127.0.0.1:{srv.port}/endless", tmp_path / "v", policy)
    assert (err.status_code, err.code) == (413, "url_too_large")
    assert time.monotonic() - start < 5.0


def test_http_404_is_502(srv: TestServer, tmp_path: Path) -> None:
    long_url = f"http://127.0.0.1:{srv.port}/missing?q=" + "x" * 5000
    err = _refused(long_url, tmp_path / "v", _policy(srv.port))
    assert (err.status_code, err.code) == (502, "url_http_status")
    assert "404" in err.message
    assert len(err.message) < 400  # the long URL is shortened


def test_compressed_body_refused(srv: TestServer, tmp_path: Path) -> None:
    err = _refused(f"http://127.0.0.1:{srv.port}/gzip", tmp_path / "v", _policy(srv.port))
    assert (err.status_code, err.code) == (502, "url_content_encoding")


def test_read_timeout_waiting_for_headers(srv: TestServer, tmp_path: Path) -> None:
    policy = _policy(srv.port, read_timeout_s=0.3)
    err = _refused(f"http://127.0.0.1:{srv.port}/slow-headers", tmp_path / "v", policy)
    assert (err.status_code, err.code) == (504, "url_timeout")


def test_read_timeout_mid_body_removes_partial_file(srv: TestServer, tmp_path: Path) -> None:
    dest = tmp_path / "v"
    policy = _policy(srv.port, read_timeout_s=0.3)
    err = _refused(f"http://127.0.0.1:{srv.port}/stall", dest, policy)
    assert (err.status_code, err.code) == (504, "url_timeout")
    assert not dest.exists()


def test_total_timeout(srv: TestServer, tmp_path: Path) -> None:
    policy = _policy(srv.port, read_timeout_s=2.0, total_timeout_s=0.4)
    start = time.monotonic()
    err = _refused(f"http://127.0.0.1:{srv.port}/trickle", tmp_path / "v", policy)
    assert (err.status_code, err.code) == (504, "url_timeout")
    assert "longer than 0.4 s" in err.message
    assert time.monotonic() - start < 2.0


def test_connection_refused_is_502(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = _refused(f"http://127.0.0.1:{port}/video", tmp_path / "v", _policy(port))
    assert (err.status_code, err.code) == (502, "url_connect")


# --- https: the pinned connection verifies the certificate of the original name ----------------


def _tls_contexts(name: str, cert_dir: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a cert for `name` only, client context trusting its test CA)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "safe_fetch test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (cert_dir / "cert.pem").write_bytes(cert.public_bytes(pem))
    (cert_dir / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_dir / "cert.pem", cert_dir / "key.pem")
    client_ctx = ssl.create_default_context(cadata=ca_cert.public_bytes(pem).decode("ascii"))
    return server_ctx, client_ctx


@pytest.fixture(scope="module")
def tls_srv(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestServer, ssl.SSLContext]]:
    server_ctx, client_ctx = _tls_contexts("video.test", tmp_path_factory.mktemp("tls"))
    for server in _serve(server_ctx):
        yield server, client_ctx


def test_https_pinned_with_sni_of_original_host(
    tls_srv: tuple[TestServer, ssl.SSLContext], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cert is valid for "video.test" only (no IP in it); the connection goes to 127.0.0.1.
    server, client_ctx = tls_srv
    resolver = _fake_resolver({"video.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    monkeypatch.setattr(safe_fetch, "_resolve", resolver)
    policy = FetchPolicy(
        allowed_hosts=frozenset({"video.test", "other.test"}),
        ssl_context=client_ctx,
        connect_timeout_s=2.0,
        read_timeout_s=2.0,
        total_timeout_s=10.0,
    )
    server.requests.clear()
    result = _fetch(f"https://video.test:{server.port}/video", tmp_path / "v", policy)
    assert result.size == len(BODY) and (tmp_path / "v").read_bytes() == BODY
    assert server.requests == [("/video", f"video.test:{server.port}")]

    # Same server and address, but a name the certificate does not cover: refused by TLS.
    (tmp_path / "other").mkdir()
    err = _refused(f"https://other.test:{server.port}/video", tmp_path / "other" / "w", policy)
    assert (err.status_code, err.code) == (502, "url_tls")
