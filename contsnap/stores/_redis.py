"""RedisStore: a store in one Redis server (redis-py), every multi-step change one Lua script.

Layout under ``prefix`` (default ``contsnap:``): ``k:<key>`` a hash with the
version ``v``, the group ``g``, expiry settings and one field ``d:<version>``
per kept generation, expired by Redis itself (``PEXPIREAT``); ``lease:<key>`` a
hash that exists while the lease is live (native ttl); ``fence:<key>`` the
counter that issues fencing tokens and outlives every lease. The size
bookkeeping (``lru``, ``sizes``, ``groups``, ``bytes``, ``grp:<group>``) lets
the scripts evict the least recently used keys. Scripts compute key names
themselves, so use one Redis server, not a cluster. Times are the server's.
"""

from __future__ import annotations

from typing import Any

from contsnap.stores._base import (
    Entry,
    Lease,
    StoreBase,
    StoreError,
    check_generation,
    check_key,
    check_positive,
    conflict_error,
    default_owner,
    fenced_error,
    held_error,
)

__all__ = ["RedisStore"]

# Shared Lua: the server clock in ms, and forgetting the size bookkeeping of a key.
_PRELUDE = """
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function forget(key)
  local size = tonumber(redis.call('HGET', p .. 'sizes', key) or '0')
  redis.call('DECRBY', p .. 'bytes', size)
  redis.call('HDEL', p .. 'sizes', key)
  redis.call('ZREM', p .. 'lru', key)
  local grp = redis.call('HGET', p .. 'groups', key)
  if grp then
    redis.call('ZREM', p .. 'grp:' .. grp, key)
    redis.call('HDEL', p .. 'groups', key)
  end
end
local function lease_ok(lkey, token)
  if lkey == '' then return true end
  return redis.call('HGET', p .. 'lease:' .. lkey, 'token') == token
end
local function fenced(lkey)
  return {'fenced', redis.call('HGET', p .. 'lease:' .. lkey, 'token') or false,
          redis.call('GET', p .. 'fence:' .. lkey) or false}
end
"""

# ARGV: prefix, keep, expect|'', lease key|'', token, ttl ms, idle ms, group|'', max bytes,
# max per group (0: none), then key, data pairs.
_PUT = (
    _PRELUDE
    + """
local keep, expect, lkey, ltoken = tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local ttl, idle, grp = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local max_bytes, max_group = tonumber(ARGV[9]), tonumber(ARGV[10])
if not lease_ok(lkey, ltoken) then return fenced(lkey) end
local n = (#ARGV - 10) / 2
if expect ~= '' then
  for i = 0, n - 1 do
    local cur = redis.call('HGET', p .. 'k:' .. ARGV[11 + 2 * i], 'v')
    if (tonumber(cur) or 0) ~= tonumber(expect) then return {'conflict', cur or false} end
  end
end
local result, written = {'ok'}, {}
for i = 0, n - 1 do
  local key, data = ARGV[11 + 2 * i], ARGV[12 + 2 * i]
  local hk = p .. 'k:' .. key
  if redis.call('EXISTS', hk) == 0 then forget(key) end
  local new = (tonumber(redis.call('HGET', hk, 'v')) or 0) + 1
  redis.call('HSET', hk, 'v', new, 'd:' .. new, data)
  local size = 0
  for _, f in ipairs(redis.call('HKEYS', hk)) do
    if string.sub(f, 1, 2) == 'd:' then
      if tonumber(string.sub(f, 3)) <= new - keep then
        redis.call('HDEL', hk, f)
      else
        size = size + redis.call('HSTRLEN', hk, f)
      end
    end
  end
  local deadline = 0
  if ttl > 0 then deadline = now + ttl end
  redis.call('HSET', hk, 'dl', deadline, 'idle', idle)
  local expires = deadline
  if idle > 0 and (expires == 0 or now + idle < expires) then expires = now + idle end
  if expires > 0 then redis.call('PEXPIREAT', hk, expires) else redis.call('PERSIST', hk) end
  forget(key)
  redis.call('HSET', p .. 'sizes', key, size)
  redis.call('INCRBY', p .. 'bytes', size)
  redis.call('ZADD', p .. 'lru', now, key)
  if grp ~= '' then
    redis.call('HSET', p .. 'groups', key, grp)
    redis.call('ZADD', p .. 'grp:' .. grp, now, key)
  end
  written[key] = true
  result[#result + 1] = new
end
local function evict(key)
  redis.call('DEL', p .. 'k:' .. key)
  forget(key)
end
if grp ~= '' and max_group > 0 then
  local members = redis.call('ZRANGE', p .. 'grp:' .. grp, 0, -1)
  local live = {}
  for _, key in ipairs(members) do
    if redis.call('EXISTS', p .. 'k:' .. key) == 0 then forget(key)
    elseif not written[key] then live[#live + 1] = key end
  end
  local count = redis.call('ZCARD', p .. 'grp:' .. grp)
  local i = 1
  while count > max_group and i <= #live do
    evict(live[i]); count = count - 1; i = i + 1
  end
end
if max_bytes > 0 and tonumber(redis.call('GET', p .. 'bytes') or '0') > max_bytes then
  for _, key in ipairs(redis.call('ZRANGE', p .. 'lru', 0, -1)) do
    if tonumber(redis.call('GET', p .. 'bytes') or '0') <= max_bytes then break end
    if redis.call('EXISTS', p .. 'k:' .. key) == 0 then forget(key)
    elseif not written[key] then evict(key) end
  end
end
return result
"""
)

# ARGV: prefix, key, generation -> {version, data} or {}
_ENTRY = """
local hk = ARGV[1] .. 'k:' .. ARGV[2]
local versions = {}
for _, f in ipairs(redis.call('HKEYS', hk)) do
  if string.sub(f, 1, 2) == 'd:' then versions[#versions + 1] = tonumber(string.sub(f, 3)) end
end
table.sort(versions, function(a, b) return a > b end)
local v = versions[tonumber(ARGV[3]) + 1]
if not v then return {} end
return {v, redis.call('HGET', hk, 'd:' .. v)}
"""

# ARGV: prefix, group|'' -> the live keys (of the group)
_KEYS = (
    _PRELUDE
    + """
local index = p .. 'lru'
if ARGV[2] ~= '' then index = p .. 'grp:' .. ARGV[2] end
local live = {}
for _, key in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  if redis.call('EXISTS', p .. 'k:' .. key) == 1 then live[#live + 1] = key end
end
return live
"""
)

# ARGV: prefix, key, lease key|'', token
_DELETE = (
    _PRELUDE
    + """
if not lease_ok(ARGV[3], ARGV[4]) then return fenced(ARGV[3]) end
local existed = redis.call('DEL', p .. 'k:' .. ARGV[2])
forget(ARGV[2])
return {'ok', existed}
"""
)

# ARGV: prefix, key
_TOUCH = (
    _PRELUDE
    + """
local key = ARGV[2]
local hk = p .. 'k:' .. key
if redis.call('EXISTS', hk) == 0 then forget(key); return 0 end
redis.call('ZADD', p .. 'lru', now, key)
local grp = redis.call('HGET', p .. 'groups', key)
if grp then redis.call('ZADD', p .. 'grp:' .. grp, now, key) end
local deadline = tonumber(redis.call('HGET', hk, 'dl'))
local idle = tonumber(redis.call('HGET', hk, 'idle'))
if idle and idle > 0 then
  local expires = now + idle
  if deadline and deadline > 0 and deadline < expires then expires = deadline end
  redis.call('PEXPIREAT', hk, expires)
end
return 1
"""
)

# ARGV: prefix -> how many expired keys were forgotten
_SWEEP = (
    _PRELUDE
    + """
local removed = 0
for _, key in ipairs(redis.call('ZRANGE', p .. 'lru', 0, -1)) do
  if redis.call('EXISTS', p .. 'k:' .. key) == 0 then forget(key); removed = removed + 1 end
end
return removed
"""
)

# ARGV: prefix, key, ttl ms, owner, pid, host
_ACQUIRE = (
    _PRELUDE
    + """
local lk = p .. 'lease:' .. ARGV[2]
if redis.call('EXISTS', lk) == 1 then
  local h = redis.call('HMGET', lk, 'owner', 'pid', 'host')
  return {'held', h[1], h[2], h[3], redis.call('PTTL', lk)}
end
local token = redis.call('INCR', p .. 'fence:' .. ARGV[2])
redis.call('HSET', lk, 'token', token, 'owner', ARGV[4], 'pid', ARGV[5], 'host', ARGV[6])
redis.call('PEXPIRE', lk, ARGV[3])
return {'ok', token, now + tonumber(ARGV[3])}
"""
)

# ARGV: prefix, key, token, ttl ms
_RENEW = (
    _PRELUDE
    + """
if not lease_ok(ARGV[2], ARGV[3]) then return fenced(ARGV[2]) end
redis.call('PEXPIRE', p .. 'lease:' .. ARGV[2], ARGV[4])
return {'ok', now + tonumber(ARGV[4])}
"""
)

# ARGV: prefix, key
_LEASE_OF = (
    _PRELUDE
    + """
local lk = p .. 'lease:' .. ARGV[2]
local ms = redis.call('PTTL', lk)
if ms < 0 then return false end
local h = redis.call('HMGET', lk, 'token', 'owner', 'pid', 'host')
return {h[1], h[2], h[3], h[4], now + ms, ms}
"""
)

# ARGV: prefix, key, token
_RELEASE = (
    _PRELUDE
    + """
if not lease_ok(ARGV[2], ARGV[3]) then return 0 end
return redis.call('DEL', p .. 'lease:' .. ARGV[2])
"""
)


class RedisStore(StoreBase):
    """A store in a Redis server, shared by every process that connects to it.

    ``max_bytes`` bounds the bytes of all keys under ``prefix`` (least recently
    used keys are evicted), ``max_per_group`` the keys of one ``group=``. Bound
    the server's own memory with ``maxmemory`` as well.
    """

    __module__ = "contsnap.stores"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "contsnap:",
        max_bytes: int | None = None,
        max_per_group: int | None = None,
        client: Any = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        check_positive(url, "max_bytes", max_bytes, integer=True)
        check_positive(url, "max_per_group", max_per_group, integer=True)
        self.max_bytes, self.max_per_group = max_bytes, max_per_group
        try:
            import redis
        except ImportError as exc:
            raise StoreError(
                f"store {url}: RedisStore needs redis-py; install it with "
                "pip install 'contsnap[redis]'"
            ) from exc
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        try:
            self._client: Any = redis.Redis.from_url(url) if client is None else client
            self._client.ping()
        except redis.RedisError as exc:
            raise StoreError(
                f"store {url}: cannot reach the Redis server ({exc}); check the URL and "
                "that redis-server is running"
            ) from exc
        register = self._client.register_script
        self._put_script = register(_PUT)
        self._entry_script = register(_ENTRY)
        self._delete_script = register(_DELETE)
        self._keys_script = register(_KEYS)
        self._touch_script = register(_TOUCH)
        self._sweep_script = register(_SWEEP)
        self._acquire_script = register(_ACQUIRE)
        self._renew_script = register(_RENEW)
        self._release_script = register(_RELEASE)
        self._lease_of_script = register(_LEASE_OF)

    def _run(self, script: Any, *args: object) -> Any:
        try:
            return script(args=[self.prefix, *args])
        except self._errors as exc:
            raise StoreError(
                f"store {self.url}: the Redis server failed ({exc}); check that it is "
                "running and reachable"
            ) from exc

    # --- reads -------------------------------------------------------------------------------

    def entry(self, key: str, *, generation: int = 0) -> Entry | None:
        """The ``generation`` of ``key`` with its version, or ``None`` if missing or expired."""
        check_key(self.url, key)
        generation = check_generation(self.url, generation)
        found = self._run(self._entry_script, key, generation)
        return Entry(bytes(found[1]), int(found[0]), generation) if found else None

    def version(self, key: str) -> int | None:
        """The newest version of ``key`` (1 after its first put), or ``None`` if absent."""
        check_key(self.url, key)
        try:
            value = self._client.hget(self.prefix + "k:" + key, "v")
        except self._errors as exc:
            raise StoreError(f"store {self.url}: the Redis server failed ({exc})") from exc
        return None if value is None else int(value)

    def generations(self, key: str) -> list[int]:
        """The versions kept for ``key``, newest first (index = generation)."""
        check_key(self.url, key)
        try:
            fields: list[bytes] = self._client.hkeys(self.prefix + "k:" + key)
        except self._errors as exc:
            raise StoreError(f"store {self.url}: the Redis server failed ({exc})") from exc
        return sorted((int(f[2:]) for f in fields if f.startswith(b"d:")), reverse=True)

    def keys(self, *, group: str | None = None) -> list[str]:
        """The live keys, sorted; only those written with ``group=`` if given."""
        if group is not None:
            check_key(self.url, group, "group")
        return sorted(k.decode() for k in self._run(self._keys_script, group or ""))

    # --- writes ------------------------------------------------------------------------------

    def _put_items(
        self,
        items: dict[str, bytes],
        keep: int,
        expect: int | None,
        lease: Lease | None,
        ttl: float | None,
        idle: float | None,
        group: str | None,
    ) -> dict[str, int]:
        if self.max_bytes is not None and sum(map(len, items.values())) > self.max_bytes:
            raise StoreError(
                f"store {self.url}: writing {sorted(items)} needs more than "
                f"max_bytes={self.max_bytes}; raise max_bytes or store less"
            )
        pairs: list[object] = []
        for key, data in items.items():
            pairs += [key, data]
        reply = self._run(
            self._put_script,
            keep,
            "" if expect is None else expect,
            "" if lease is None else lease.key,
            "" if lease is None else lease.token,
            _ms(ttl),
            _ms(idle),
            group or "",
            self.max_bytes or 0,
            self.max_per_group or 0,
            *pairs,
        )
        self._check_reply(reply, lease, expect, next(iter(items)))
        return dict(zip(items, (int(v) for v in reply[1:])))

    def _check_reply(self, reply: Any, lease: Lease | None, expect: int | None, key: str) -> None:
        status = reply[0]
        if status == b"fenced" and lease is not None:
            token = None if reply[2] is None else int(reply[2])
            raise fenced_error(self.url, lease, token, reply[1] is not None)
        if status == b"conflict" and expect is not None:
            raise conflict_error(self.url, key, expect, None if reply[1] is None else int(reply[1]))

    def delete(self, key: str, *, lease: Lease | None = None) -> bool:
        """Remove ``key`` and all its generations; return whether it existed."""
        check_key(self.url, key)
        reply = self._run(
            self._delete_script,
            key,
            "" if lease is None else lease.key,
            "" if lease is None else lease.token,
        )
        self._check_reply(reply, lease, None, key)
        return bool(reply[1])

    def touch(self, key: str) -> bool:
        """Mark ``key`` used now: last in the LRU order, its idle timer restarted."""
        check_key(self.url, key)
        return bool(self._run(self._touch_script, key))

    def sweep(self) -> int:
        """Forget the bookkeeping of keys Redis has expired; return how many."""
        return int(self._run(self._sweep_script))

    # --- leases ------------------------------------------------------------------------------

    def _acquire(self, key: str, ttl: float, owner: str | None) -> Lease:
        """One try at the lease (see `StoreBase.acquire`)."""
        check_key(self.url, key)
        check_positive(self.url, "ttl", ttl)
        name, pid, host = default_owner()
        owner = name if owner is None else owner
        reply = self._run(self._acquire_script, key, _ms(ttl), owner, pid, host)
        if reply[0] == b"held":
            raise held_error(
                self.url, key, reply[1].decode(), int(reply[2]), reply[3].decode(),
                int(reply[4]) / 1000,
            )  # fmt: skip
        return Lease(key, int(reply[1]), owner, pid, host, int(reply[2]) / 1000, ttl)

    def renew(self, lease: Lease, ttl: float | None = None) -> Lease:
        """Extend a live lease by ``ttl`` (default: its own); `FencedError` if lost."""
        ttl = lease.ttl if ttl is None else ttl
        check_positive(self.url, "ttl", ttl)
        reply = self._run(self._renew_script, lease.key, lease.token, _ms(ttl))
        self._check_reply(reply, lease, None, lease.key)
        expires = int(reply[1]) / 1000
        return Lease(lease.key, lease.token, lease.owner, lease.pid, lease.host, expires, ttl)

    def release(self, lease: Lease) -> bool:
        """Give the lease up; ``False`` if it was no longer live (released, expired or taken)."""
        return bool(self._run(self._release_script, lease.key, lease.token))

    def current_lease(self, key: str) -> Lease | None:
        """The live lease on ``key`` as it stands (``ttl``: the seconds left), or ``None``."""
        check_key(self.url, key)
        found = self._run(self._lease_of_script, key)
        if not found:
            return None
        token, owner, pid, host, expires, left = found
        return Lease(
            key, int(token), owner.decode(), int(pid), host.decode(), int(expires) / 1000,
            int(left) / 1000,
        )  # fmt: skip

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r})"


def _ms(seconds: float | None) -> int:
    return 0 if seconds is None else max(1, round(seconds * 1000))
