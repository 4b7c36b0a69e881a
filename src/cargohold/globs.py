"""Repository globs, as the ``access``, ``immutable`` and ``quotas`` rules write them.

``*`` and ``?`` stay within one path segment, ``**`` crosses segments, and ``{user}`` stands for
the caller's own name (access rules only). One implementation, so that a glob selects the same
repositories in every rule that takes one.
"""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=4096)
def compile_glob(pattern: str, user: str | None = None) -> re.Pattern[str] | None:
    """The regular expression of a repository glob; None when it needs a user and has none."""
    parts = pattern.split("{user}")
    if len(parts) > 1 and not user:
        return None
    return re.compile(re.escape(user or "").join(_glob_regex(p) for p in parts) + r"\Z")


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def glob_match(pattern: str, repository: str, user: str | None = None) -> bool:
    regex = compile_glob(pattern, user)
    return regex is not None and regex.match(repository) is not None
