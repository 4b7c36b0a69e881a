"""``http.tls.clientcas`` reloaded on SIGHUP: a client certificate from the new CA is accepted from
the next handshake on, one from the old CA refused; a CA that does not load is refused and the
old CAs stay."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import requests
import yaml
from support.waiting import eventually

from .helpers import Pki, SecureFactory, SecureRegistry, make_pki, tls_config


def _answers(server: SecureRegistry, client: tuple[Path, Path]) -> bool:
    try:
        response = requests.get(
            server.url + "/v2/",
            verify=str(server.ca),
            cert=(str(client[0]), str(client[1])),
            timeout=10,
        )
    except requests.exceptions.SSLError:
        return False
    except requests.exceptions.ConnectionError:  # TLS 1.3: the refusal arrives after the hello
        return False
    return response.status_code == 200


def _reload_with(server: SecureRegistry, clientcas: list[str]) -> None:
    config = yaml.safe_load(server.config_path.read_text())
    config["http"]["tls"]["clientcas"] = clientcas
    tmp = server.config_path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    os.replace(tmp, server.config_path)
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGHUP)


def test_sighup_changes_the_client_cas(
    secure_registry: SecureFactory, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = make_pki(tmp_path_factory.mktemp("other-pki"))
    first = (pki.client_cert, pki.client_key)
    second = (other.client_cert, other.client_key)
    server = secure_registry(
        {"http": {"tls": tls_config(pki, clientcas=[str(pki.ca)])}}, client=first
    )
    assert _answers(server, first) and not _answers(server, second)
    _reload_with(server, [str(other.ca)])
    eventually(lambda: _answers(server, second), timeout=20)
    assert not _answers(server, first)
    # a CA file that does not load: refused, the CAs in force stay
    _reload_with(server, [str(tmp_path_factory.mktemp("none") / "missing.crt")])
    eventually(lambda: "reload (SIGHUP) refused" in server.log_path.read_text(), timeout=20)
    assert _answers(server, second) and not _answers(server, first)
