"""The ``access:`` policy: who may ``pull``, ``push`` and ``delete`` which repositories.

A request is allowed when any rule grants its actions: rules name repositories by glob
(``*`` and ``?`` stay within one path segment, ``**`` crosses segments, ``{user}`` is the
caller's own name) and callers by user, group, ``anonymous`` (everyone, even without
credentials) or ``authenticated`` (everyone who logged in). Admins may do everything.
``push`` implies ``pull``, as every client reads what it writes.

Without an ``access`` section every authenticated user may do everything and anonymous
callers nothing, which is what registry:2's htpasswd and token setups do.
"""

from __future__ import annotations

from collections.abc import Iterable

from cargohold.config import ACCESS_ACTIONS, AccessConfig, AccessRule
from cargohold.globs import compile_glob, glob_match

ALL_ACTIONS: frozenset[str] = frozenset(ACCESS_ACTIONS)
NOTHING: frozenset[str] = frozenset()
__all__ = ["ALL_ACTIONS", "NOTHING", "Policy", "compile_glob", "glob_match"]


class Policy:
    """Answers "what may this caller do on this repository" from the configuration."""

    def __init__(self, config: AccessConfig | None) -> None:
        self.config = config

    @property
    def configured(self) -> bool:
        return self.config is not None

    def is_admin(self, user: str | None) -> bool:
        return self.config is not None and user is not None and user in self.config.admins

    def groups_of(self, user: str | None) -> frozenset[str]:
        if self.config is None or user is None:
            return NOTHING
        return frozenset(g for g, members in self.config.groups.items() if user in members)

    def _applies(self, rule: AccessRule, user: str | None, groups: frozenset[str]) -> bool:
        if rule.anonymous:
            return True
        if user is None:
            return False
        return rule.authenticated or user in rule.users or not groups.isdisjoint(rule.groups)

    def allowed(self, user: str | None, repository: str) -> frozenset[str]:
        """The actions ``user`` (None: anonymous) may perform on ``repository``."""
        if self.config is None:
            return ALL_ACTIONS if user is not None else NOTHING
        if self.is_admin(user):
            return ALL_ACTIONS
        groups = self.groups_of(user)
        granted: set[str] = set()
        for rule in self.config.rules:
            if not self._applies(rule, user, groups) or granted.issuperset(rule.actions):
                continue
            if any(glob_match(p, repository, user) for p in rule.repositories):
                granted.update(rule.actions)
        if "push" in granted:
            granted.add("pull")
        return frozenset(granted)

    def may_list(self, user: str | None, repositories: Iterable[str]) -> list[str]:
        """The repositories ``user`` may pull, in the given order (for ``_catalog``)."""
        if self.config is None:
            return list(repositories) if user is not None else []
        return [r for r in repositories if "pull" in self.allowed(user, r)]
