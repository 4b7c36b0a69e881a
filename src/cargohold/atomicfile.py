"""Files that appear complete or not at all: a temporary file beside the target, renamed over it.

Used wherever cargohold writes a file someone else may read at any moment: link files of the
filesystem driver, htpasswd and certificate files (re-read by running servers), image archives
and OCI layouts. The temporary file lives in the target's directory, so the rename is atomic
(same filesystem) and a crash leaves at most a dot-file that no reader looks at. A ``mode``
is set on the open descriptor before anything is written, so a private key is never readable
by others, not even for a moment; without one the file gets the umask's default as ``open``
gives it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from types import TracebackType
from typing import BinaryIO


class AtomicFile:
    """Write to :attr:`file`, then :meth:`commit` (rename into place) or :meth:`abort`.

    As a context manager it commits when the block ends normally and aborts when it raises.
    ``prefix`` names the temporary file (default ``.<name>.tmp-``), followed by a random part;
    ``fsync`` makes the content durable before the rename makes it visible.
    """

    def __init__(
        self, path: str, *, mode: int | None = None, fsync: bool = True, prefix: str | None = None
    ) -> None:
        self.path = path
        self.fsync = fsync
        directory, name = os.path.split(os.path.abspath(path))
        self.tmp = os.path.join(directory, f"{prefix or f'.{name}.tmp-'}{uuid.uuid4().hex}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = os.open(self.tmp, flags, 0o666 if mode is None else 0o600)
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            self.file: BinaryIO = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise

    def _close(self) -> None:
        self.file.flush()
        if self.fsync:
            os.fsync(self.file.fileno())
        self.file.close()

    def commit(self) -> None:
        """Replace the target with what was written."""
        try:
            self._close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def commit_exclusive(self) -> bool:
        """Create the target only if it does not exist (False: it did, nothing was changed).

        For processes racing to create the same file: exactly one wins, the others read the
        winner's complete file."""
        try:
            self._close()
            os.link(self.tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            self.abort()

    def abort(self) -> None:
        """Throw the temporary file away; the target is untouched."""
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> BinaryIO:
        return self.file

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_atomic(
    path: str,
    data: bytes,
    *,
    mode: int | None = None,
    fsync: bool = True,
    prefix: str | None = None,
) -> None:
    """Replace ``path`` with ``data`` in one rename (see :class:`AtomicFile`)."""
    with AtomicFile(path, mode=mode, fsync=fsync, prefix=prefix) as f:
        f.write(data)


def create_exclusive(path: str, data: bytes, *, mode: int | None = None) -> bool:
    """Create ``path`` holding ``data`` unless it exists (False: it did; nothing changed).

    Workers starting together race to create the same key: exactly one wins, and the others
    read the winner's complete file."""
    out = AtomicFile(path, mode=mode)
    try:
        out.file.write(data)
    except BaseException:
        out.abort()
        raise
    return out.commit_exclusive()
