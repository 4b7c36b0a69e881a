"""The rules a running registry enforces and may change without a restart.

``access``, ``immutable``, ``quotas`` and ``retention`` can be edited while the registry serves
(SIGHUP, or the config file changing: see :mod:`cargohold.reload`). Rather than patching the
fields of every object that once copied a piece of the configuration, they all read one
:class:`Rules` snapshot through the :class:`Governance` holder when they check something: a
reload builds a complete new snapshot from a configuration that validated and swaps it in with
one assignment, so no check sees half of the old rules and half of the new, and nothing in flight
(an upload, a connection) is touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from cargohold.config import AccessConfig, Config, ImmutableRule, QuotaRule, RetentionConfig
from cargohold.errors import ErrorCode, RegistryError
from cargohold.globs import glob_match


@dataclass(frozen=True)
class Rules:
    """One consistent set of rules; never changed after it is made."""

    access: AccessConfig | None = None
    immutable: tuple[ImmutableRule, ...] = ()
    quotas: tuple[QuotaRule, ...] = ()
    retention: RetentionConfig | None = None
    generation: int = 0  # counts reloads: 0 is the configuration the process started with

    @classmethod
    def of(cls, config: Config, generation: int = 0) -> Rules:
        return cls(
            config.access,
            tuple(config.immutable),
            tuple(config.quotas),
            config.retention,
            generation,
        )

    @cached_property
    def _tag_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(rule.tags) for rule in self.immutable)

    def immutable_rule(self, repository: str, tag: str) -> int | None:
        """The index of the first ``immutable`` rule that freezes ``tag`` in ``repository``."""
        for i, rule in enumerate(self.immutable):
            if self._tag_patterns[i].search(tag) and any(
                glob_match(g, repository) for g in rule.repositories
            ):
                return i
        return None

    def quota_rules(self, repository: str) -> list[tuple[int, QuotaRule]]:
        """Every quota rule that covers ``repository`` (each one is enforced)."""
        return [
            (i, rule)
            for i, rule in enumerate(self.quotas)
            if any(glob_match(g, repository) for g in rule.repositories)
        ]

    def immutable_error(self, repository: str, tag: str, index: int, what: str) -> RegistryError:
        """DENIED (403), which docker, podman and skopeo print with its message."""
        rule = self.immutable[index]
        where = ", ".join(rule.repositories)
        return RegistryError(
            ErrorCode.DENIED,
            f"tag {tag} of {repository} is immutable (rule immutable[{index}]: repositories "
            f"{where}, tags {rule.tags}): {what}",
            {"repository": repository, "tag": tag, "rule": f"immutable[{index}]"},
        )


class Governance:
    """The current :class:`Rules` of this process, replaced whole on reload."""

    def __init__(self, config: Config) -> None:
        self.rules = Rules.of(config)
        self._listeners: list[Callable[[Rules, Rules], None]] = []

    def on_change(self, listener: Callable[[Rules, Rules], None]) -> None:
        """Call ``listener(old, new)`` after every replacement (caches keyed by the rules)."""
        self._listeners.append(listener)

    def replace(self, config: Config) -> Rules:
        old = self.rules
        self.rules = Rules.of(config, old.generation + 1)
        for listener in self._listeners:
            listener(old, self.rules)
        return self.rules
