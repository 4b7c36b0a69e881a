"""``http.limits``: slow request heads, Host values RFC 9112 refuses, deeply nested manifests,
header sizes and connections per client address, all over raw sockets."""

from __future__ import annotations

import gc
import socket

import pytest
import requests
from support.waiting import eventually

from .helpers import repo
from .rawhttp import closed_by_server, connect, exchange, read_response

LIMITED = {
    "http": {
        "limits": {
            "headertimeout": "1s",
            "maxheaderbytes": 1024,
            "maxconnectionsperclient": 3,
        }
    }
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    from support.servers import cargohold_process

    server = cargohold_process(tmp_path_factory.mktemp("limited"), config=LIMITED)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /v2/ HTT",  # a request line that never ends
        b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow",  # headers that never end
    ],
)
def test_a_request_head_that_never_ends_is_closed(limited, partial: bytes) -> None:
    with connect(limited.port) as sock:
        sock.sendall(partial)
        assert closed_by_server(sock)  # aiohttp alone would keep it open for an hour


def test_a_head_sent_a_byte_at_a_time_is_closed_too(limited) -> None:
    """Bytes that keep trickling in do not extend the deadline of the head they belong to."""
    head = b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 900
    with connect(limited.port) as sock:
        closed = False
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(0.05)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
                break
        sock.settimeout(60)
        assert closed or closed_by_server(sock)


def test_keep_alive_connections_serve_several_requests(limited) -> None:
    """The head timer does not close a connection between complete requests."""
    with connect(limited.port) as sock:
        for _ in range(3):
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock).status == 200


@pytest.mark.parametrize("host", ["a b", "a/b", "user@host", "a\tb"])
def test_an_invalid_host_is_400_with_the_json_error(registry, host: str) -> None:
    resp = exchange(registry.port, f"GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert resp.status == 400
    assert resp.code == "UNKNOWN"
    assert "Host" in resp.json()["errors"][0]["message"]


def test_two_host_fields_are_400(registry) -> None:
    resp = exchange(registry.port, b"GET /v2/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert resp.status == 400
    assert resp.json()["errors"]


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost", "[::1]:5000", "reg.example"])
def test_valid_hosts_are_served(registry, host: str) -> None:
    resp = exchange(registry.port, f"GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert resp.status == 200


def test_a_manifest_nested_thousands_deep_is_manifest_invalid(registry) -> None:
    depth = 100_000
    body = b'{"schemaVersion": 2, "x": ' + b"[" * depth + b"]" * depth + b"}"
    resp = requests.put(
        f"{registry.url}/v2/{repo()}/manifests/deep",
        data=body,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=60,
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["errors"][0]["code"] == "MANIFEST_INVALID"


def test_header_fields_over_the_limit_are_refused_with_the_json_error(limited) -> None:
    fill = b"GET /v2/ HTTP/1.1\r\nHost: h\r\nX-Fill: "
    ok = exchange(limited.port, fill + b"a" * 500 + b"\r\n\r\n")
    assert ok.status == 200
    big = exchange(limited.port, fill + b"a" * 2000 + b"\r\n\r\n")
    assert 400 <= big.status < 500
    assert big.headers["content-type"].startswith("application/json")
    assert big.json()["errors"][0]["code"]
    line = exchange(limited.port, b"GET /v2/" + b"a" * 2000 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert 400 <= line.status < 500
    assert line.json()["errors"]


def test_connections_per_client_address_are_limited(make_registry) -> None:
    limited = make_registry({"http": {"limits": {"maxconnectionsperclient": 3}}})
    held: list[socket.socket] = []

    def admit_one() -> bool:
        """One more connection held open, once the server let it in. The readiness probe's
        connection (requests leaves it to the garbage collector) counts until it is closed."""
        gc.collect()
        sock = connect(limited.port)
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: h\r\n\r\n")
        if read_response(sock).status == 200:
            held.append(sock)
            return True
        sock.close()
        return False

    try:
        for _ in range(3):
            eventually(admit_one, timeout=30)
        with connect(limited.port) as extra:
            refused = read_response(extra)
            assert refused.status == 429
            assert refused.code == "TOOMANYREQUESTS"
            assert closed_by_server(extra)
        held.pop().close()

        eventually(admit_one, timeout=30)  # a closed connection frees its place
    finally:
        for sock in held:
            sock.close()


def test_trusted_proxies_are_not_limited(make_registry) -> None:
    server = make_registry(
        {"http": {"limits": {"maxconnectionsperclient": 1}, "trustedproxies": ["127.0.0.0/8"]}}
    )
    held = []
    try:
        for _ in range(3):
            sock = connect(server.port)
            held.append(sock)
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(sock).status == 200
    finally:
        for sock in held:
            sock.close()


def test_limits_config_is_known_and_checked(tmp_path) -> None:
    from cargohold.config import ConfigError, load_config

    path = tmp_path / "config.yml"
    storage = "storage: {filesystem: {rootdirectory: /tmp/x}}\n"
    path.write_text(
        "version: 0.1\n" + storage + "http:\n  trustedproxies: [10.0.0.0/8, '::1']\n"
        "  limits: {headertimeout: 5s, maxconnectionsperclient: 0, loginfailures: 3}\n"
    )
    config = load_config(str(path), {})
    assert config.http.limits.headertimeout == 5.0
    assert config.http.limits.maxconnectionsperclient == 0
    assert config.http.limits.loginfailures == 3
    assert config.http.limits.loginwindow == 60.0
    assert config.http.trustedproxies == ["10.0.0.0/8", "::1"]
    path.write_text("version: 0.1\n" + storage + "http: {trustedproxies: [nonsense]}\n")
    with pytest.raises(ConfigError, match="trustedproxies"):
        load_config(str(path), {})
    path.write_text("version: 0.1\n" + storage + "http: {limits: {maxheaders: -1}}\n")
    with pytest.raises(ConfigError, match="maxheaders"):
        load_config(str(path), {})
    env = {"REGISTRY_HTTP_LIMITS_HEADERTIMEOUT": "7s"}
    path.write_text("version: 0.1\n" + storage)
    assert load_config(str(path), env).http.limits.headertimeout == 7.0
