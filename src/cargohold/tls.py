"""The server's TLS context (``http.tls``), re-read when the certificate or key changes.

registry:2 settings: ``certificate`` and ``key`` (PEM files), ``clientcas`` (CA files; when
given, every client must present a certificate signed by one of them: mutual TLS),
``minimumtls`` (``tls1.2`` by default, or ``tls1.3``) and ``ciphersuites`` (Go's names of
TLS 1.2 suites).

The client CAs are reloaded with the rest of the policy (SIGHUP, config change: see
:mod:`cargohold.reload`): a new context with the new CAs is made, and each new handshake is moved
onto it from the server-name callback, which OpenSSL calls for every ClientHello. The verify mode
stays that of the context the server started with (OpenSSL keeps it when the context is switched),
so the set of CAs can change but turning mutual TLS on or off needs a restart.

Renewing a certificate (certbot, ``cargohold cert``, a secret mount) needs no restart: every
few seconds the files' mtimes are compared, and when they changed, the pair is loaded into the
same SSLContext, which every new handshake then uses. A pair that does not load (a key that
does not match the certificate yet, half a file) is skipped with one warning and the previous
one stays in use until the files are consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import ssl
from collections.abc import Iterator

from cargohold.config import TLS12_CIPHER_SUITES, ConfigError, TlsConfig

log = logging.getLogger("cargohold.tls")

RELOAD_INTERVAL = 5.0
_Stamp = tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]


def stamp_of(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@contextlib.contextmanager
def _in_memory(data: bytes) -> Iterator[str]:
    """A path to ``data`` that no other process can see (Linux: a memfd)."""
    fd = os.memfd_create("cargohold-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


class ServerTLS:
    """An ``ssl.SSLContext`` for the server plus the watcher that reloads its certificate."""

    def __init__(self, config: TlsConfig, interval: float = RELOAD_INTERVAL) -> None:
        self.config = config
        self.interval = interval
        self._stamp: _Stamp = self._stat()
        self._rejected: _Stamp | None = None
        self.context = self._loaded(self._new_context())
        self.active = self.context  # the one new handshakes use (see set_clientcas)
        self.context.sni_callback = self._switch

    def _loaded(self, context: ssl.SSLContext) -> ssl.SSLContext:
        config = self.config
        try:
            context.load_cert_chain(config.certificate, config.key)
        except (OSError, ssl.SSLError) as exc:  # missing file, not PEM, key not matching
            raise ConfigError(
                f"cannot load certificate {config.certificate} with key {config.key}: "
                f"{exc.strerror or exc}",
                key="http.tls.certificate",
            ) from exc
        return context

    def _switch(self, connection: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if self.active is not self.context:
            connection.context = self.active

    def set_clientcas(self, clientcas: list[str]) -> bool:
        """Verify client certificates against ``clientcas`` from the next handshake on; False
        (nothing changed) when that would turn mutual TLS on or off. Raises ConfigError when a
        CA file does not load."""
        if clientcas == self.config.clientcas:
            return True
        if bool(clientcas) != bool(self.config.clientcas):
            return False
        old, self.config = self.config, dataclasses.replace(self.config, clientcas=list(clientcas))
        try:
            self.active = self._loaded(self._new_context())
        except ConfigError:
            self.config = old
            raise
        return True

    def _new_context(self) -> ssl.SSLContext:
        config = self.config
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = (
            ssl.TLSVersion.TLSv1_3 if config.minimumtls == "tls1.3" else ssl.TLSVersion.TLSv1_2
        )
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        tls12 = [TLS12_CIPHER_SUITES[s] for s in config.ciphersuites if s in TLS12_CIPHER_SUITES]
        if tls12:
            context.set_ciphers(":".join(dict.fromkeys(tls12)))
        if config.clientcas:
            context.verify_mode = ssl.CERT_REQUIRED
            for i, path in enumerate(config.clientcas):
                try:
                    context.load_verify_locations(cafile=path)
                except (OSError, ssl.SSLError) as exc:
                    message = f"cannot load CA file {path}: {exc.strerror or exc}"
                    raise ConfigError(message, key=f"http.tls.clientcas[{i}]") from exc
        context.set_alpn_protocols(["http/1.1"])
        return context

    def _stat(self) -> _Stamp:
        return (stamp_of(self.config.certificate), stamp_of(self.config.key))

    def check(self) -> bool:
        """Reload the certificate and key if they changed on disk; True when reloaded."""
        stamp = self._stat()
        if stamp == self._stamp or stamp == self._rejected or None in stamp:
            return False
        try:
            with open(self.config.certificate, "rb") as fh:
                cert_data = fh.read()
            with open(self.config.key, "rb") as fh:
                key_data = fh.read()
            # Try the exact bytes on a scratch context first: a failed load_cert_chain could
            # leave the live context with a certificate and no matching key.
            with _in_memory(cert_data) as cert_path, _in_memory(key_data) as key_path:
                scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                scratch.load_cert_chain(cert_path, key_path)
                self.context.load_cert_chain(cert_path, key_path)
                if self.active is not self.context:
                    self.active.load_cert_chain(cert_path, key_path)
        except (OSError, ssl.SSLError) as exc:
            self._rejected = stamp
            log.warning(
                "TLS certificate %s / key %s changed but do not load (%s); still using the "
                "previous pair",
                self.config.certificate,
                self.config.key,
                exc,
            )
            return False
        self._stamp, self._rejected = stamp, None
        log.info("TLS certificate %s reloaded", self.config.certificate)
        return True

    async def watch(self) -> None:
        """Run :meth:`check` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:  # never let the watcher die: the next change must still load
                log.exception("TLS certificate reload failed")
