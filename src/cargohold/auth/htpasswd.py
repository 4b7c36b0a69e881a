"""htpasswd files as registry:2 reads them, and password checks that stay cheap.

registry:2 accepts bcrypt entries only (``user:$2y$...`` as written by ``htpasswd -Bbn``), so
does cargohold: other entries are skipped with a warning naming the user (never the hash).
The file is re-read when it changes (its mtime, size or inode), at most once a second, so
users can be added or removed while the registry runs.

bcrypt is slow on purpose, and a ``docker push`` sends the same credentials with every request,
so :class:`PasswordChecker` runs bcrypt in a thread and remembers successful checks for a
minute. The memory holds no passwords, only an HMAC (with a per-process random key) of user,
password and file version, so editing the file invalidates every cached check.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass

import bcrypt

from cargohold.atomicfile import write_atomic
from cargohold.coalesce import Coalescer

log = logging.getLogger("cargohold.auth")

BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; Apache's htpasswd and Go truncate here
DEFAULT_COST = 10
CACHE_TTL = 60.0
CACHE_MAX = 10_000


class HtpasswdError(ValueError):
    """A user name or password that cannot go into an htpasswd file."""


def check_user_name(user: str) -> None:
    if not user or ":" in user or any(c.isspace() or not c.isprintable() for c in user):
        raise HtpasswdError(f"invalid user name {user!r}: no colons, spaces or control chars")


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    """A ``$2y$`` bcrypt hash, the form ``htpasswd -B`` writes and registry:2 reads."""
    data = password.encode()
    if len(data) > MAX_PASSWORD_BYTES:
        raise HtpasswdError(f"password longer than {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)")
    if not password:
        raise HtpasswdError("empty password")
    hashed = bcrypt.hashpw(data, bcrypt.gensalt(rounds=cost, prefix=b"2b")).decode()
    return "$2y$" + hashed[4:]  # the same algorithm; 2y is what Apache's htpasswd writes


def verify_password(password: str, hashed: str) -> bool:
    """bcrypt comparison (constant time in the bcrypt library); False on a malformed hash."""
    try:
        return bcrypt.checkpw(password.encode()[:MAX_PASSWORD_BYTES], hashed.encode())
    except ValueError:
        return False


def parse(text: str, source: str = "htpasswd") -> dict[str, str]:
    """``{user: bcrypt hash}``; the last entry of a user wins, as in registry:2."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            log.warning("%s line %d: not user:hash, skipped", source, number)
            continue
        if not hashed.startswith(BCRYPT_PREFIXES):
            log.warning(
                "%s line %d: user %s has no bcrypt hash (use htpasswd -B), skipped",
                source,
                number,
                user,
            )
            continue
        entries[user] = hashed
    return entries


@dataclass(frozen=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int


class HtpasswdFile:
    """The users of one htpasswd file, re-read when the file changes."""

    def __init__(self, path: str, check_interval: float = 1.0) -> None:
        self.path = path
        self.check_interval = check_interval
        self._entries: dict[str, str] = {}
        self._stamp: _Stamp | None = None
        self._checked = 0.0
        self._missing_reported = False
        self.load()  # a missing or unreadable file stops the start (OSError)

    def _stat(self) -> _Stamp:
        st = os.stat(self.path)
        return _Stamp(st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> None:
        stamp = self._stat()
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        self._entries = parse(text, self.path)
        self._stamp = stamp
        self._checked = time.monotonic()
        self._missing_reported = False
        if not self._entries:
            log.warning("%s has no usable (bcrypt) entries: nobody can log in", self.path)

    def refresh(self) -> None:
        """Re-read the file if it changed; checked at most every ``check_interval`` seconds."""
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return
        self._checked = now
        try:
            stamp = self._stat()
            if stamp != self._stamp:
                self.load()
                log.info("%s changed: %d users", self.path, len(self._entries))
        except OSError as exc:
            if not self._missing_reported:
                log.error("cannot read %s (%s): nobody can log in until it is back", self.path, exc)
                self._missing_reported = True
            self._entries, self._stamp = {}, None

    @property
    def version(self) -> str:
        stamp = self._stamp
        return "-" if stamp is None else f"{stamp.mtime_ns}:{stamp.size}:{stamp.inode}"

    @property
    def users(self) -> list[str]:
        return sorted(self._entries)

    def lookup(self, user: str) -> str | None:
        return self._entries.get(user)

    def dummy_hash(self) -> str:
        """A hash to check unknown users against, so they take as long as known ones."""
        cost = 5
        for hashed in self._entries.values():
            with contextlib.suppress(ValueError, IndexError):
                cost = int(hashed.split("$")[2])
            break
        return _dummy_hash(cost)


_DUMMIES: dict[int, str] = {}


def _dummy_hash(cost: int) -> str:
    cost = min(max(cost, 4), 16)
    if cost not in _DUMMIES:
        _DUMMIES[cost] = hash_password(secrets.token_urlsafe(16), cost)
    return _DUMMIES[cost]


class PasswordChecker:
    """Checks passwords against an :class:`HtpasswdFile`: bcrypt in a thread, successes cached.

    The cache holds, per user, an HMAC of (user, password, file version) and an expiry time;
    a later check compares HMACs with :func:`hmac.compare_digest`. Concurrent checks of the
    same credentials (a push's parallel layer uploads) share one bcrypt run.
    """

    def __init__(self, htpasswd: HtpasswdFile, ttl: float = CACHE_TTL) -> None:
        self.htpasswd = htpasswd
        self.ttl = ttl
        self._key = secrets.token_bytes(32)
        self._cache: dict[str, tuple[bytes, float]] = {}
        self._inflight: Coalescer[bytes, bool] = Coalescer()

    def _digest(self, user: str, password: str) -> bytes:
        parts = (user, password, self.htpasswd.version, self.htpasswd.path)
        message = b"\0".join(hashlib.sha256(part.encode()).digest() for part in parts)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _cached(self, user: str, digest: bytes) -> bool:
        entry = self._cache.get(user)
        if entry is None:
            return False
        stored, expires = entry
        if expires <= time.monotonic():
            del self._cache[user]
            return False
        return hmac.compare_digest(stored, digest)

    async def check(self, user: str, password: str) -> bool:
        self.htpasswd.refresh()
        digest = self._digest(user, password)
        if self._cached(user, digest):
            return True
        task = self._inflight.running(digest)
        if task is None:
            task = self._inflight.start(digest, self._verify(user, password, digest))
        return await asyncio.shield(task)

    async def _verify(self, user: str, password: str, digest: bytes) -> bool:
        hashed = self.htpasswd.lookup(user)
        ok = await asyncio.to_thread(self._verify_sync, password, hashed)
        if ok and hashed is not None:
            self._remember(user, digest)
            return True
        return False

    def _verify_sync(self, password: str, hashed: str | None) -> bool:
        """In a thread: bcrypt against the user's hash, or a dummy one for unknown users."""
        return verify_password(
            password, hashed if hashed is not None else self.htpasswd.dummy_hash()
        )

    def _remember(self, user: str, digest: bytes) -> None:
        now = time.monotonic()
        if len(self._cache) >= CACHE_MAX:
            self._cache = {u: e for u, e in self._cache.items() if e[1] > now}
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
        self._cache[user] = (digest, now + self.ttl)


# --------------------------------------------------------------------------- editing files


def read_entries(path: str) -> list[tuple[str, str]]:
    """Every ``user:hash`` line of a file in order (any hash type); [] if it does not exist."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        user, sep, hashed = line.strip().partition(":")
        if sep and user and not user.startswith("#"):
            entries.append((user, hashed))
    return entries


def write_entries(path: str, entries: list[tuple[str, str]]) -> None:
    """Replace the file atomically (temporary file + rename), keeping its mode, else 0600."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    text = "".join(f"{user}:{hashed}\n" for user, hashed in entries)
    write_atomic(path, text.encode("utf-8"), mode=mode, prefix=".htpasswd.")


def set_user(path: str, user: str, password: str, cost: int = DEFAULT_COST) -> bool:
    """Add or replace ``user``; True when the user already existed."""
    check_user_name(user)
    hashed = hash_password(password, cost)
    entries = read_entries(path)
    existed = any(u == user for u, _ in entries)
    if existed:
        entries = [(u, hashed if u == user else h) for u, h in entries]
    else:
        entries.append((user, hashed))
    write_entries(path, entries)
    return existed


def delete_user(path: str, user: str) -> bool:
    """Remove ``user``; False when there was no such user."""
    entries = read_entries(path)
    kept = [(u, h) for u, h in entries if u != user]
    if len(kept) == len(entries):
        return False
    write_entries(path, kept)
    return True
