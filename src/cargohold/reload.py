"""Changing the policy of a running registry: SIGHUP, or the configuration file changing.

What is reloaded: the ``access`` rules, ``immutable``, ``quotas``, ``retention`` policies, the
htpasswd file's path (``auth.htpasswd.path`` or ``auth.token.builtin.htpasswd``), the TLS client
CAs (``http.tls.clientcas``) and ``log.audit.path``. The file is read and validated whole, exactly
as at start (same REGISTRY_* overrides); a file that does not validate, names an htpasswd file or
CA that cannot be read, or asks for quotas on storage that cannot keep them, is refused with one
error line and the running rules stay. Everything else (storage, addresses, auth type...) needs a
restart, and a reload that changes it says so in a warning.

Nothing in flight is dropped: no socket, connection or upload is touched. The rules are one
immutable snapshot (:class:`~cargohold.registry.governance.Rules`) that requests read when they
start; a reload swaps in a new one. With ``--workers`` the supervisor passes SIGHUP on to every
worker, and each also polls the file's modification time (every :data:`POLL_SECONDS`), so all
of them converge on the same file; a worker started later reads the file as it then is.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict
from typing import TYPE_CHECKING

from cargohold import audit
from cargohold.config import Config, ConfigError, load_config
from cargohold.tls import stamp_of as _stamp

if TYPE_CHECKING:
    from cargohold.auth.middleware import Authenticator
    from cargohold.registry.core import Registry
    from cargohold.tls import ServerTLS

log = logging.getLogger("cargohold.reload")

POLL_SECONDS = 2.0
_RESTART_ONLY = ("storage", "http.addr", "http.prefix", "http.secret", "auth type", "redis")


class Reloader:
    """Re-reads the configuration file and applies its policy sections to one worker."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        auth: Authenticator | None = None,
        tls: ServerTLS | None = None,
        primary: bool = True,
    ) -> None:
        self.config = config
        self.primary = primary  # worker 0: background work after a reload is its job
        self.registry = registry
        self.auth = auth
        self.tls = tls
        self.path = config.source
        self._stamp = _stamp(self.path) if self.path else None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def _restart_only(self, new: Config) -> list[str]:
        old = self.config
        changed = []
        pairs = {
            "storage": (old.storage.driver, new.storage.driver),
            "http.addr": (old.http.addr, new.http.addr),
            "http.prefix": (old.http.prefix, new.http.prefix),
            "auth type": (
                (old.auth.htpasswd is None, old.auth.token is None),
                (new.auth.htpasswd is None, new.auth.token is None),
            ),
            "redis": (old.redis and asdict(old.redis), new.redis and asdict(new.redis)),
        }
        for name in _RESTART_ONLY:
            if name in pairs and pairs[name][0] != pairs[name][1]:
                changed.append(name)
        return changed

    async def reload(self, why: str) -> bool:
        """Apply the file's policy sections now; False when it was refused (old rules stay)."""
        if self.path is None:
            log.warning("%s: no configuration file to reload (started without one)", why)
            return False
        async with self._lock:
            self._stamp = _stamp(self.path)
            try:
                new = await asyncio.to_thread(load_config, self.path, os.environ)
                self._apply(new)
            except (ConfigError, OSError) as exc:
                log.error("configuration reload (%s) refused, the current rules stay: %s", why, exc)
                return False
            log.info(
                "configuration reloaded (%s): access, immutable, quotas, retention, htpasswd, "
                "client CAs and audit log as in %s",
                why,
                self.path,
            )
            return True

    def _apply(self, new: Config) -> None:
        """Check everything that can fail first, then switch; a failure changes nothing."""
        if new.access is not None and self.auth is None:
            message = "access needs auth, and turning auth on needs a restart"
            raise ConfigError(message, key="access")
        if new.quotas and not self.registry.quotas.supported:
            raise ConfigError("quotas need filesystem storage or redis", key="quotas")
        tls_cas = new.http.tls.clientcas if new.http.tls is not None else []
        if self.tls is not None and bool(tls_cas) != bool(self.tls.config.clientcas):
            log.warning("turning mutual TLS on or off needs a restart; client CAs unchanged")
            tls_cas = self.tls.config.clientcas
        old_passwords = self.auth.passwords if self.auth is not None else None
        old_cas = self.tls.config.clientcas if self.tls is not None else []
        try:
            if self.auth is not None:
                self.auth.reload(new)  # ConfigError: the new htpasswd file cannot be read
            if self.tls is not None:
                self.tls.set_clientcas(tls_cas)  # ConfigError: a CA does not load
            if new.log.audit_path != self.config.log.audit_path:
                audit.setup(new.log.audit_path)  # OSError: cannot open it
        except BaseException:
            if self.auth is not None:
                self.auth.passwords = old_passwords
            if self.tls is not None:
                self.tls.set_clientcas(old_cas)
            raise
        changed = self._restart_only(new)
        if changed:
            log.warning("reload ignores changes that need a restart: %s", ", ".join(changed))
        self.registry.governance.replace(new)  # the rules every request reads
        self.config.log.audit_path = new.log.audit_path
        if self.primary and self.registry.quotas.active:
            # quotas just turned on: count what the store already holds (once per store)
            self._tasks.add(task := asyncio.create_task(self.registry.quotas.ensure_built()))
            task.add_done_callback(self._tasks.discard)

    async def watch(self, interval: float = POLL_SECONDS) -> None:
        """Reload when the file's modification time, size or inode change."""
        if self.path is None:
            return
        while True:
            await asyncio.sleep(interval)
            stamp = _stamp(self.path)
            if stamp is not None and stamp != self._stamp:
                await self.reload("configuration file changed")
