"""Quota usage in Redis (used whenever the config has a ``redis`` section).

The same model as the SQLite index of :mod:`cargohold.registry.quota`, in Redis hashes under
``cargohold:<store>:quota:`` (the store's hash, as the blob descriptor cache names its keys):
``held:<repository>`` maps each blob digest the repository holds to ``size|charged-at``, and
``repos`` maps each repository to its total. Every charge is one Lua script, which Redis runs
atomically: it reads the usage, checks every limit and records the blobs with nothing else
running in between, so replicas that share the Redis (on any storage, S3 included) cannot both
squeeze past a limit. A namespace's repositories are listed by the caller (Redis cannot match
our globs); the script refuses to go on when the number of repositories changed meanwhile and
the caller lists them again, so a repository created concurrently is never left out.

Unlike the blob descriptor cache, quotas do not degrade to "no Redis": while Redis cannot be
reached, pushes to repositories under a quota are answered with 503 ``UNAVAILABLE`` (a registry
that cannot count must not let a namespace fill the disk); pulls are not affected.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError

from cargohold.config import RedisConfig
from cargohold.errors import ErrorCode, RegistryError
from cargohold.globs import glob_match
from cargohold.registry.quota import Scope, quota_error
from cargohold.storage.cache import namespace
from cargohold.storage.rediscache import RedisCache

log = logging.getLogger("cargohold.quota")

RETRIES = 8

# ARGV: prefix, repository, now, n, (digest, size) * n, expected HLEN of repos (-1: any),
# scope count, then per scope: index, limit, m, repository * m; check_only (1/0), extra bytes.
_CHARGE = """
local p, repo, now = ARGV[1], ARGV[2], ARGV[3]
local i = 4
local n = tonumber(ARGV[i]); i = i + 1
local items = {}
for k = 1, n do items[k] = {ARGV[i], tonumber(ARGV[i + 1])}; i = i + 2 end
local expect = tonumber(ARGV[i]); i = i + 1
if expect >= 0 and redis.call('HLEN', p .. 'repos') ~= expect then return {'retry'} end
local nscopes = tonumber(ARGV[i]); i = i + 1
local check_only = ARGV[#ARGV - 1] == '1'
local extra = tonumber(ARGV[#ARGV])
for s = 1, nscopes do
  local index, limit, m = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  local usage, seen = 0, {}
  for r = 1, m do
    local all = redis.call('HGETALL', p .. 'held:' .. ARGV[i])
    for j = 1, #all, 2 do
      if not seen[all[j]] then
        seen[all[j]] = true
        usage = usage + tonumber(string.match(all[j + 1], '^(%d+)'))
      end
    end
    i = i + 1
  end
  local adding = extra
  for _, it in ipairs(items) do
    if not seen[it[1]] then adding = adding + it[2] end
  end
  if adding > 0 and usage + adding > limit then
    return {'over', index, tostring(usage), tostring(adding)}
  end
end
if check_only then return {'ok'} end
local added = 0
for _, it in ipairs(items) do
  if redis.call('HSETNX', p .. 'held:' .. repo, it[1], it[2] .. '|' .. now) == 1 then
    added = added + it[2]
  end
end
redis.call('HINCRBY', p .. 'repos', repo, added)
return {'ok'}
"""

# ARGV: prefix, repository, digest...
_RELEASE = """
local p, repo = ARGV[1], ARGV[2]
local freed = 0
for i = 3, #ARGV do
  local v = redis.call('HGET', p .. 'held:' .. repo, ARGV[i])
  if v then
    redis.call('HDEL', p .. 'held:' .. repo, ARGV[i])
    freed = freed + tonumber(string.match(v, '^(%d+)'))
  end
end
if freed > 0 then redis.call('HINCRBY', p .. 'repos', repo, -freed) end
return freed
"""

# ARGV: prefix, repository, started, (digest, size)...: rows charged before the walk began and
# not found by it go, what it found is added, and the total is recomputed.
_REPLACE = """
local p, repo, started = ARGV[1], ARGV[2], tonumber(ARGV[3])
local key = p .. 'held:' .. repo
local want = {}
for i = 4, #ARGV, 2 do want[ARGV[i]] = ARGV[i + 1] end
local all = redis.call('HGETALL', key)
for j = 1, #all, 2 do
  local at = tonumber(string.match(all[j + 1], '|(.*)$')) or 0
  if not want[all[j]] and at < started then redis.call('HDEL', key, all[j]) end
end
for d, size in pairs(want) do redis.call('HSETNX', key, d, size .. '|' .. started) end
local total = 0
all = redis.call('HGETALL', key)
for j = 1, #all, 2 do total = total + tonumber(string.match(all[j + 1], '^(%d+)')) end
if #all == 0 then redis.call('HDEL', p .. 'repos', repo)
else redis.call('HSET', p .. 'repos', repo, total) end
return total
"""


class RedisUsage:
    def __init__(self, config: RedisConfig, store_identity: str) -> None:
        self.config = config
        self.client = RedisCache(config).client  # the same connection settings as the cache
        self.prefix = f"cargohold:{namespace(store_identity)}:quota:"

    async def _call(self, script: str, *args: Any) -> Any:
        try:
            return await self.client.eval(script, 0, self.prefix, *args)
        except (RedisError, OSError, TimeoutError) as exc:
            log.error("quota usage in redis at %s unavailable: %s", self.config.addr, exc)
            raise RegistryError(
                ErrorCode.UNAVAILABLE,
                "quota usage cannot be checked right now (redis unavailable); try again",
                status=503,
            ) from None

    async def _repos(self) -> list[str]:
        try:
            names = await self.client.hkeys(self.prefix + "repos")
        except (RedisError, OSError, TimeoutError) as exc:
            raise RegistryError(ErrorCode.UNAVAILABLE, f"redis: {exc}", status=503) from None
        return [str(n) for n in names]

    async def _run(
        self, repository: str, scopes: list[Scope], items: dict[str, int], check: bool, extra: int
    ) -> None:
        flat = [x for d, size in items.items() for x in (d, size)]
        namespaces = any(s.rule.namespace for s in scopes)
        for _ in range(RETRIES):
            known = await self._repos() if namespaces else []
            args: list[Any] = [repository, f"{time.time():.6f}", len(items), *flat]
            args += [len(known) if namespaces else -1, len(scopes)]
            for scope in scopes:
                members = {scope.repository}
                if scope.rule.namespace:
                    members.update(_matching(known, scope))
                args += [scope.index, scope.rule.size, len(members), *sorted(members)]
            args += ["1" if check else "0", extra]
            result = [str(x) for x in await self._call(_CHARGE, *args)]
            if result[0] == "ok":
                return
            if result[0] == "over":
                scope = next(s for s in scopes if str(s.index) == result[1])
                raise quota_error(scope, int(result[2]), int(result[3]))
        message = "quota usage kept changing; try again"
        raise RegistryError(ErrorCode.UNAVAILABLE, message, status=503)

    async def check(self, scopes: list[Scope], items: dict[str, int], extra: int = 0) -> None:
        await self._run(scopes[0].repository, scopes, items, True, extra)

    async def charge(self, repository: str, scopes: list[Scope], items: dict[str, int]) -> None:
        await self._run(repository, scopes, items, False, 0)

    async def release(self, repository: str, digests: list[str]) -> None:
        if digests:
            await self._call(_RELEASE, repository, *digests)

    async def replace_all(self, held: dict[str, dict[str, int]], started: float) -> None:
        for repository in sorted(set(held) | set(await self._repos())):
            blobs = held.get(repository, {})
            flat = [x for d, size in blobs.items() for x in (d, size)]
            await self._call(_REPLACE, repository, f"{started:.6f}", *flat)
        meta = self.prefix + "meta"
        await self.client.hset(meta, "rebuilt", str(time.time()))

    async def repository_usage(self) -> dict[str, int]:
        raw = await self.client.hgetall(self.prefix + "repos")
        return {str(k): int(v) for k, v in raw.items()}

    async def usage(self, scope: Scope) -> int:
        members = [scope.repository]
        if scope.rule.namespace:
            members = _matching(await self._repos(), scope)
        seen: dict[str, int] = {}
        for repository in members:
            key = self.prefix + "held:" + repository
            raw = await self.client.hgetall(key)
            for digest, value in raw.items():
                seen[str(digest)] = int(str(value).split("|", 1)[0])
        return sum(seen.values())

    async def rebuilt(self) -> float | None:
        value = await self.client.hget(self.prefix + "meta", "rebuilt")
        return float(value) if value is not None else None

    async def close(self) -> None:
        await self.client.aclose()


def _matching(repositories: list[str], scope: Scope) -> list[str]:
    return [r for r in repositories if any(glob_match(g, r) for g in scope.rule.repositories)]
