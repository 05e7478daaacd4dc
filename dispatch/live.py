"""Live dispatch state in Redis: where drivers are, who is available, open offers, region
leases and each driver's outbox of pushes not yet acknowledged.

Everything here may be lost and rebuilt (drivers resend their position every few seconds,
offers and leases are short-lived); PostgreSQL holds the facts that matter. Times come in
as ``now`` from the caller's clock; offers and leases expire by Redis' clock, which is the
same machine's clock or an NTP-synced one.

Keys (all under ``live:``):

==================================  =====================================================
``live:driver:{driver_id}``         hash: ``status`` (``available``/``busy``), ``region``,
                                    ``lat``, ``lng``, ``heading``, ``speed``,
                                    ``accuracy`` (``""`` when unknown), ``recorded_at``,
                                    ``last_seen``, ``available_since`` (Unix ms, ``""``
                                    while busy). No TTL while the driver is live; gets
                                    ``forget_after_s`` once swept as stale.
``live:seen``                       sorted set: driver id -> last seen (Unix ms). The
                                    liveness index.
``live:geo:{region}``               geo set of the region's *available* drivers. A busy
                                    driver is not in any.
``live:offer:{offer_id}``           hash: ``ride_id``, ``driver_id``, ``expires_at``
                                    (Unix ms); expires at ``expires_at``.
``live:driver-offer:{driver_id}``   the offer id the driver holds; same expiry.
``live:ride-offer:{ride_id}``       the offer id the ride has out; same expiry.
``live:lease:{region}``             the dispatcher that matches the region; PX TTL.
``live:outbox:{driver_id}``         stream of pushes not yet acknowledged, field
                                    ``body`` (JSON); at most ``outbox_max_len`` entries
                                    (the oldest go first), expires ``outbox_retention_s``
                                    after the last push.
==================================  =====================================================

Liveness: a driver is live while ``last_seen >= now - liveness_s``. Two mechanisms keep
silent drivers out of offers: every query (``nearest_available``, ``drivers_in_region``)
checks the candidates' ``live:seen`` scores inside the same round trip, so a stale driver
is never returned even if no sweep has run; and :meth:`LiveState.drop_stale`, run
periodically by the dispatcher, removes stale drivers from the geo sets and from
``live:seen`` so the index stays small and queries stay fast. The status hash survives the
sweep (with a TTL), so the next update puts the driver back where they were, available or
busy, without going online again.

Nearest drivers: one script searches the regions' geo sets from a small radius
(``nearest_first_radius_m``) and doubles it until ``k`` live drivers are found or the
requested radius is reached, so a query in a dense centre passes hundreds of drivers,
not the tens of thousands within the full radius.

Every write that touches more than one key is one Lua script: one round trip, and no
other client sees half of it. The scripts build some key names from hash fields (a
driver's previous region), so live state needs one Redis primary, not a cluster;
at 50k drivers sending every 4 s that is about 12.5k updates a second, well within one.
The client must decode responses (``infra.redis.create_redis`` does): replies are
taken as ``str``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, cast

from redis.asyncio import Redis

from dispatch.locations import LocationUpdate, storable_coordinates
from dispatch.regions import region_of
from infra.pubsub import user_channel

PREFIX = "live:"
DRIVER_PREFIX = f"{PREFIX}driver:"
SEEN_KEY = f"{PREFIX}seen"
GEO_PREFIX = f"{PREFIX}geo:"
OFFER_PREFIX = f"{PREFIX}offer:"
DRIVER_OFFER_PREFIX = f"{PREFIX}driver-offer:"
RIDE_OFFER_PREFIX = f"{PREFIX}ride-offer:"
LEASE_PREFIX = f"{PREFIX}lease:"
OUTBOX_PREFIX = f"{PREFIX}outbox:"

DriverStatus = Literal["available", "busy"]

_DRIVER_FIELDS = (
    "status",
    "region",
    "lat",
    "lng",
    "heading",
    "speed",
    "accuracy",
    "recorded_at",
    "last_seen",
    "available_since",
)
# Stale drivers removed per script run: bounds how long one sweep blocks Redis.
_SWEEP_BATCH = 500
# Members of a geo set read per script run when listing a region: bounds how long one
# run blocks Redis (about 3 ms per 500 on the benchmark machine).
_REGION_SCAN_COUNT = 500
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def driver_key(driver_id: uuid.UUID) -> str:
    return f"{DRIVER_PREFIX}{driver_id}"


def geo_key(region: str) -> str:
    return f"{GEO_PREFIX}{region}"


def offer_key(offer_id: uuid.UUID) -> str:
    return f"{OFFER_PREFIX}{offer_id}"


def driver_offer_key(driver_id: uuid.UUID) -> str:
    return f"{DRIVER_OFFER_PREFIX}{driver_id}"


def ride_offer_key(ride_id: uuid.UUID) -> str:
    return f"{RIDE_OFFER_PREFIX}{ride_id}"


def lease_key(region: str) -> str:
    return f"{LEASE_PREFIX}{region}"


def outbox_key(driver_id: uuid.UUID) -> str:
    return f"{OUTBOX_PREFIX}{driver_id}"


@dataclass(frozen=True, slots=True)
class LiveDriver:
    driver_id: uuid.UUID
    status: DriverStatus
    region: str
    # The last stored position; usable as ``previous`` for ``validate_update``.
    location: LocationUpdate
    last_seen_at: datetime
    # When the driver last became available (idle since); None while busy.
    available_since: datetime | None


class NearbyDriver(NamedTuple):
    driver_id: uuid.UUID
    distance_m: float


@dataclass(frozen=True, slots=True)
class LiveOffer:
    offer_id: uuid.UUID
    ride_id: uuid.UUID
    driver_id: uuid.UUID
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    message_id: str
    body: dict[str, Any]


# KEYS: driver hash, seen, geo of the region. ARGV: driver id, region, lat, lng, now ms,
# geo prefix. A busy driver who comes back online (a reconnect mid-trip) stays busy.
_SET_ONLINE = """
local current = redis.call('HMGET', KEYS[1], 'status', 'region', 'available_since')
local status, old_region, since = current[1], current[2], current[3]
if old_region and old_region ~= ARGV[2] then
  redis.call('ZREM', ARGV[6] .. old_region, ARGV[1])
end
if status ~= 'busy' then
  if status ~= 'available' or not since or since == '' then since = ARGV[5] end
  status = 'available'
  redis.call('GEOADD', KEYS[3], ARGV[4], ARGV[3], ARGV[1])
else
  since = ''
end
redis.call('HSET', KEYS[1], 'status', status, 'region', ARGV[2], 'lat', ARGV[3],
  'lng', ARGV[4], 'heading', '', 'speed', '', 'accuracy', '', 'recorded_at', ARGV[5],
  'last_seen', ARGV[5], 'available_since', since)
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return status
"""

# KEYS: driver hash, seen. ARGV: driver id, geo prefix.
_SET_OFFLINE = """
local region = redis.call('HGET', KEYS[1], 'region')
if region then redis.call('ZREM', ARGV[2] .. region, ARGV[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""

# KEYS: driver hash, seen, geo of the new region. ARGV: driver id, region, lat, lng,
# heading, speed, accuracy, recorded ms, now ms, geo prefix. Returns false for a driver
# who is not online.
_UPDATE_LOCATION = """
local current = redis.call('HMGET', KEYS[1], 'status', 'region')
local status, old_region = current[1], current[2]
if not status then return false end
if old_region and old_region ~= ARGV[2] then
  redis.call('ZREM', ARGV[10] .. old_region, ARGV[1])
end
redis.call('HSET', KEYS[1], 'region', ARGV[2], 'lat', ARGV[3], 'lng', ARGV[4],
  'heading', ARGV[5], 'speed', ARGV[6], 'accuracy', ARGV[7], 'recorded_at', ARGV[8],
  'last_seen', ARGV[9])
if status == 'available' then
  redis.call('GEOADD', KEYS[3], ARGV[4], ARGV[3], ARGV[1])
end
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[9], ARGV[1])
return ARGV[2]
"""

# KEYS: driver hash. ARGV: driver id, geo prefix.
_MARK_BUSY = """
local region = redis.call('HGET', KEYS[1], 'region')
if not region then return 0 end
redis.call('ZREM', ARGV[2] .. region, ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'busy', 'available_since', '')
return 1
"""

# KEYS: driver hash, seen. ARGV: driver id, now ms, geo prefix. A driver swept as stale
# goes back into the geo set with their next update, not here, so that the geo sets only
# ever hold drivers that the liveness index also holds.
_MARK_AVAILABLE = """
local current = redis.call('HMGET', KEYS[1], 'status', 'region', 'lat', 'lng')
if not current[1] then return 0 end
if current[1] ~= 'available' then
  redis.call('HSET', KEYS[1], 'status', 'available', 'available_since', ARGV[2])
end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('GEOADD', ARGV[3] .. current[2], current[4], current[3], ARGV[1])
end
return 1
"""

# KEYS: seen, then one geo set per region. ARGV: lng, lat, radius m, k, live cutoff ms,
# first radius m. Returns id, distance, id, distance... of the k nearest live drivers,
# nearest first. A search costs in proportion to the members near the point, so it
# starts small and doubles the radius until k live drivers are found: in a dense centre
# the first try suffices, and where drivers are sparse the larger tries are cheap. A
# region's search is repeated with a larger COUNT only when stale members filled it.
_NEAREST = """
local k = tonumber(ARGV[4])
local cutoff = tonumber(ARGV[5])
local radius = tonumber(ARGV[3])

local function live_within(key, r)
  local count = k
  while true do
    local hits = redis.call('GEOSEARCH', key, 'FROMLONLAT', ARGV[1], ARGV[2],
      'BYRADIUS', r, 'm', 'ASC', 'COUNT', count, 'WITHDIST')
    local kept = {}
    local start = 1
    while start <= #hits do
      local stop = math.min(#hits, start + 999)
      local ids = {}
      for j = start, stop do ids[#ids + 1] = hits[j][1] end
      local seen = redis.call('ZMSCORE', KEYS[1], unpack(ids))
      for j = start, stop do
        local score = seen[j - start + 1]
        if score and tonumber(score) >= cutoff and #kept < k then
          kept[#kept + 1] = hits[j]
        end
      end
      start = stop + 1
    end
    if #kept >= k or #hits < count then return kept end
    count = count * 4
  end
end

local r = math.min(radius, tonumber(ARGV[6]))
local found
while true do
  found = {}
  for i = 2, #KEYS do
    for _, hit in ipairs(live_within(KEYS[i], r)) do found[#found + 1] = hit end
  end
  if #found >= k or r >= radius then break end
  r = math.min(radius, r * 2)
end

local function closer(a, b)
  local da, db = tonumber(a[2]), tonumber(b[2])
  if da ~= db then return da < db end
  return a[1] < b[1]
end
table.sort(found, closer)
local result = {}
for i = 1, math.min(k, #found) do
  result[#result + 1] = found[i][1]
  result[#result + 1] = found[i][2]
end
return result
"""

# KEYS: geo set, seen. ARGV: ZSCAN cursor, count, live cutoff ms, driver prefix. Returns
# the next cursor and the live, available drivers of this step as one string, a line per
# driver: id, then the status hash's fields in _DRIVER_FIELDS order, separated by '|'.
# One string instead of nested replies: the client splits it in C instead of parsing
# eleven replies per driver in Python. ZSCAN, unlike paging by rank, cannot skip a driver
# whose position (and so rank) changes between steps; it may repeat one.
_REGION_DRIVERS = """
local step = redis.call('ZSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local ids = {}
for j = 1, #step[2], 2 do ids[#ids + 1] = step[2][j] end
if #ids == 0 then return {step[1], ''} end
local seen = redis.call('ZMSCORE', KEYS[2], unpack(ids))
local cutoff = tonumber(ARGV[3])
local rows = {}
for j, id in ipairs(ids) do
  if seen[j] and tonumber(seen[j]) >= cutoff then
    local v = redis.call('HMGET', ARGV[4] .. id, 'status', 'region', 'lat', 'lng',
      'heading', 'speed', 'accuracy', 'recorded_at', 'last_seen', 'available_since')
    if v[1] == 'available' and v[2] and v[3] and v[4] then
      local row = {id}
      for f = 1, 10 do row[f + 1] = v[f] or '' end
      rows[#rows + 1] = table.concat(row, '|')
    end
  end
end
return {step[1], table.concat(rows, '\\n')}
"""

# KEYS: seen. ARGV: cutoff ms, batch, driver prefix, geo prefix, forget after ms.
_DROP_STALE = """
local ids = redis.call('ZRANGE', KEYS[1], '-inf', '(' .. ARGV[1], 'BYSCORE', 'LIMIT', 0,
  tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local hash = ARGV[3] .. id
  local region = redis.call('HGET', hash, 'region')
  if region then
    redis.call('ZREM', ARGV[4] .. region, id)
    redis.call('PEXPIRE', hash, ARGV[5])
  end
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"""

# KEYS: offer, driver's offer, ride's offer. ARGV: offer id, ride id, driver id, expires
# at ms. Putting the same offer again is harmless.
_PUT_OFFER = """
local held_by_driver = redis.call('GET', KEYS[2])
local held_by_ride = redis.call('GET', KEYS[3])
if held_by_driver == ARGV[1] and held_by_ride == ARGV[1] then return 1 end
if held_by_driver or held_by_ride then return 0 end
redis.call('HSET', KEYS[1], 'ride_id', ARGV[2], 'driver_id', ARGV[3], 'expires_at', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[1], 'PXAT', ARGV[4])
redis.call('SET', KEYS[3], ARGV[1], 'PXAT', ARGV[4])
return 1
"""

# KEYS: offer. ARGV: offer id, driver id or '' for anyone, driver-offer prefix,
# ride-offer prefix.
_TAKE_OFFER = """
local offer = redis.call('HMGET', KEYS[1], 'ride_id', 'driver_id', 'expires_at')
if not offer[1] then return false end
if ARGV[2] ~= '' and offer[2] ~= ARGV[2] then return false end
redis.call('DEL', KEYS[1])
local by_driver = ARGV[3] .. offer[2]
if redis.call('GET', by_driver) == ARGV[1] then redis.call('DEL', by_driver) end
local by_ride = ARGV[4] .. offer[1]
if redis.call('GET', by_ride) == ARGV[1] then redis.call('DEL', by_ride) end
return offer
"""

# KEYS: driver's offer. ARGV: offer prefix.
_OFFER_FOR_DRIVER = """
local offer_id = redis.call('GET', KEYS[1])
if not offer_id then return false end
local offer = redis.call('HMGET', ARGV[1] .. offer_id, 'ride_id', 'driver_id', 'expires_at')
if not offer[1] then return false end
return {offer_id, offer[1], offer[2], offer[3]}
"""

# KEYS: lease. ARGV: owner, ttl ms.
_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: owner.
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# KEYS: the drivers' outboxes. ARGV: max length, retention ms, then for each outbox its
# message (a JSON object) and the pub/sub channel to nudge. Each message is kept in its
# outbox, then published with its new id as "message_id" (spliced in front of the
# object's first member): one round trip for a whole window's pushes.
_DELIVER = """
local ids = {}
for i, key in ipairs(KEYS) do
  local body = ARGV[2 * i + 1]
  local id = redis.call('XADD', key, 'MAXLEN', ARGV[1], '*', 'body', body)
  redis.call('PEXPIRE', key, ARGV[2])
  local rest = string.sub(body, 2)
  if rest ~= '}' then rest = ',' .. rest end
  redis.call('PUBLISH', ARGV[2 * i + 2], '{"message_id":"' .. id .. '"' .. rest)
  ids[i] = id
end
return ids
"""


class LiveState:
    """The live state of dispatch in one Redis; see the module docstring for the keys."""

    def __init__(
        self,
        redis: Redis,
        *,
        liveness_s: float = 30.0,
        offer_ttl_s: float = 15.0,
        forget_after_s: float = 3_600.0,
        outbox_max_len: int = 100,
        outbox_retention_s: float = 3_600.0,
        nearest_first_radius_m: float = 100.0,
    ) -> None:
        if not redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("LiveState needs a Redis client with decode_responses=True")
        for name, value in {
            "liveness_s": liveness_s,
            "offer_ttl_s": offer_ttl_s,
            "forget_after_s": forget_after_s,
            "outbox_retention_s": outbox_retention_s,
            "nearest_first_radius_m": nearest_first_radius_m,
        }.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0")
        if outbox_max_len < 1:
            raise ValueError("outbox_max_len must be at least 1")
        self.redis = redis
        self.liveness_s = liveness_s
        self.offer_ttl_s = offer_ttl_s
        self.forget_after_s = forget_after_s
        self.outbox_max_len = outbox_max_len
        self.outbox_retention_s = outbox_retention_s
        # Where nearest_available's search starts before it widens. Small suits a dense
        # centre, where a search costs in proportion to the drivers it passes; in sparse
        # areas the extra widening steps are cheap. With bench/dispatch_live.py's 50k
        # drivers (43k around Manhattan), Redis spent about 80 us a query starting at
        # 100 m, 130 us at 200 m and 380 us at 500 m.
        self.nearest_first_radius_m = nearest_first_radius_m
        self._set_online = redis.register_script(_SET_ONLINE)
        self._set_offline = redis.register_script(_SET_OFFLINE)
        self._update_location = redis.register_script(_UPDATE_LOCATION)
        self._mark_busy = redis.register_script(_MARK_BUSY)
        self._mark_available = redis.register_script(_MARK_AVAILABLE)
        self._nearest = redis.register_script(_NEAREST)
        self._region_drivers = redis.register_script(_REGION_DRIVERS)
        self._drop_stale = redis.register_script(_DROP_STALE)
        self._put_offer = redis.register_script(_PUT_OFFER)
        self._take_offer = redis.register_script(_TAKE_OFFER)
        self._offer_for_driver = redis.register_script(_OFFER_FOR_DRIVER)
        self._renew_lease = redis.register_script(_RENEW_LEASE)
        self._release_lease = redis.register_script(_RELEASE_LEASE)
        self._deliver = redis.register_script(_DELIVER)

    # Drivers

    async def set_online(
        self, driver_id: uuid.UUID, region: str, lat: float, lng: float, now: datetime
    ) -> DriverStatus:
        """Marks the driver online at (lat, lng) in ``region``; returns their status, which
        stays ``busy`` for a driver who was busy (a reconnect mid-trip). Raises
        ``ValueError`` if ``region`` is not the point's region."""
        _require_storable(lat, lng)
        if region != region_of(lat, lng):
            raise ValueError(f"({lat}, {lng}) is not in region {region}")
        status = await self._set_online(
            keys=[driver_key(driver_id), SEEN_KEY, geo_key(region)],
            args=[str(driver_id), region, repr(lat), repr(lng), _ms(now), GEO_PREFIX],
        )
        return "busy" if status == "busy" else "available"

    async def set_offline(self, driver_id: uuid.UUID) -> bool:
        """Forgets the driver's live state; False if there was none."""
        deleted = await self._set_offline(
            keys=[driver_key(driver_id), SEEN_KEY], args=[str(driver_id), GEO_PREFIX]
        )
        return bool(deleted)

    async def update_location(
        self, driver_id: uuid.UUID, update: LocationUpdate, now: datetime
    ) -> str | None:
        """Stores a validated position seen at ``now`` and returns the driver's region, or
        None (and stores nothing) if the driver is not online. One round trip."""
        region = _region(update)
        result = await self._update_location(
            keys=[driver_key(driver_id), SEEN_KEY, geo_key(region)],
            args=_update_args(driver_id, region, update, now),
        )
        return str(result) if result else None

    async def update_locations(
        self, updates: Sequence[tuple[uuid.UUID, LocationUpdate]], now: datetime
    ) -> list[str | None]:
        """:meth:`update_location` for many drivers in one pipeline; results in order."""
        if not updates:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for driver_id, update in updates:
                region = _region(update)
                await self._update_location(
                    keys=[driver_key(driver_id), SEEN_KEY, geo_key(region)],
                    args=_update_args(driver_id, region, update, now),
                    client=pipe,
                )
            results = await pipe.execute()
        return [str(result) if result else None for result in results]

    async def mark_busy(self, driver_id: uuid.UUID) -> bool:
        """Takes the driver out of the geo index of available drivers; False if not online."""
        done = await self._mark_busy(
            keys=[driver_key(driver_id)], args=[str(driver_id), GEO_PREFIX]
        )
        return bool(done)

    async def mark_available(self, driver_id: uuid.UUID, now: datetime) -> bool:
        """Puts the driver back into the geo index, available since ``now`` unless they
        already were; False if not online."""
        done = await self._mark_available(
            keys=[driver_key(driver_id), SEEN_KEY], args=[str(driver_id), _ms(now), GEO_PREFIX]
        )
        return bool(done)

    async def position(self, driver_id: uuid.UUID) -> LiveDriver | None:
        """The driver's last stored state, live or not (see :meth:`is_live`)."""
        values = await self.redis.hmget(driver_key(driver_id), list(_DRIVER_FIELDS))
        return _live_driver(driver_id, cast("list[str | None]", values))

    async def positions(self, driver_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, LiveDriver]:
        """:meth:`position` of many drivers in one round trip; the unknown are left out."""
        wanted = list(dict.fromkeys(driver_ids))
        if not wanted:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for driver_id in wanted:
                pipe.hmget(driver_key(driver_id), list(_DRIVER_FIELDS))
            rows = await pipe.execute()
        found = (
            _live_driver(driver_id, values) for driver_id, values in zip(wanted, rows, strict=True)
        )
        return {driver.driver_id: driver for driver in found if driver is not None}

    def is_live(self, driver: LiveDriver, now: datetime) -> bool:
        return driver.last_seen_at >= now - timedelta(seconds=self.liveness_s)

    async def nearest_available(
        self,
        regions: Iterable[str],
        lat: float,
        lng: float,
        radius_m: float,
        k: int,
        now: datetime,
    ) -> list[NearbyDriver]:
        """The ``k`` nearest live, available drivers within ``radius_m`` of (lat, lng) in
        any of ``regions``, nearest first (ties by id). One round trip."""
        _require_storable(lat, lng)
        if not radius_m > 0:
            raise ValueError("radius_m must be > 0")
        if k < 1:
            raise ValueError("k must be at least 1")
        keys = [SEEN_KEY, *(geo_key(region) for region in dict.fromkeys(regions))]
        if len(keys) == 1:
            return []
        flat = await self._nearest(
            keys=keys,
            args=[
                repr(lng),
                repr(lat),
                repr(radius_m),
                k,
                self._live_cutoff_ms(now),
                repr(self.nearest_first_radius_m),
            ],
        )
        return [
            NearbyDriver(uuid.UUID(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)
        ]

    async def drivers_in_region(self, region: str, now: datetime) -> list[LiveDriver]:
        """Every live, available driver in the region, for the matcher: a snapshot taken
        in steps of ``_REGION_SCAN_COUNT``, each atomic, so a driver who changes between
        steps appears as of the step that found them."""
        keys = [geo_key(region), SEEN_KEY]
        cutoff = self._live_cutoff_ms(now)
        drivers: dict[uuid.UUID, LiveDriver] = {}
        cursor = "0"
        while True:
            cursor, packed = await self._region_drivers(
                keys=keys, args=[cursor, _REGION_SCAN_COUNT, cutoff, DRIVER_PREFIX]
            )
            for row in packed.split("\n") if packed else ():
                member, *values = row.split("|")
                driver = _live_driver(uuid.UUID(member), values)
                if driver is not None:
                    drivers[driver.driver_id] = driver
            if cursor == "0":
                return list(drivers.values())

    async def drop_stale(self, now: datetime) -> int:
        """Removes drivers not seen for ``liveness_s`` from the geo sets and the liveness
        index, in batches; returns how many. Their status hashes are forgotten after
        ``forget_after_s`` unless they send again."""
        cutoff = self._live_cutoff_ms(now)
        forget_ms = _duration_ms(self.forget_after_s)
        dropped = 0
        while True:
            removed = int(
                await self._drop_stale(
                    keys=[SEEN_KEY],
                    args=[cutoff, _SWEEP_BATCH, DRIVER_PREFIX, GEO_PREFIX, forget_ms],
                )
            )
            dropped += removed
            if removed < _SWEEP_BATCH:
                return dropped

    def _live_cutoff_ms(self, now: datetime) -> int:
        return _ms(now) - _duration_ms(self.liveness_s)

    # Offers

    def offer_expiry(self, now: datetime) -> datetime:
        """When an offer made at ``now`` expires."""
        return now + timedelta(seconds=self.offer_ttl_s)

    async def put_offer(
        self,
        offer_id: uuid.UUID,
        ride_id: uuid.UUID,
        driver_id: uuid.UUID,
        expires_at: datetime,
    ) -> bool:
        """Records an open offer until ``expires_at``. False, and nothing stored, when the
        driver or the ride already has another live offer."""
        stored = await self._put_offer(
            keys=[offer_key(offer_id), driver_offer_key(driver_id), ride_offer_key(ride_id)],
            args=[str(offer_id), str(ride_id), str(driver_id), _ms(expires_at)],
        )
        return bool(stored)

    async def offer_for_driver(self, driver_id: uuid.UUID) -> LiveOffer | None:
        found = await self._offer_for_driver(
            keys=[driver_offer_key(driver_id)], args=[OFFER_PREFIX]
        )
        if not found:
            return None
        offer_id, ride_id, holder_id, expires_ms = found
        return LiveOffer(
            uuid.UUID(offer_id), uuid.UUID(ride_id), uuid.UUID(holder_id), _at(expires_ms)
        )

    async def take_offer(
        self, offer_id: uuid.UUID, driver_id: uuid.UUID | None = None
    ) -> LiveOffer | None:
        """Removes the open offer and returns it: exactly one caller gets it. None if it
        expired, was taken already, or (when ``driver_id`` is given) is another
        driver's, in which case it stays open."""
        taken = await self._take_offer(
            keys=[offer_key(offer_id)],
            args=[
                str(offer_id),
                "" if driver_id is None else str(driver_id),
                DRIVER_OFFER_PREFIX,
                RIDE_OFFER_PREFIX,
            ],
        )
        if not taken:
            return None
        ride_id, holder_id, expires_ms = taken
        return LiveOffer(offer_id, uuid.UUID(ride_id), uuid.UUID(holder_id), _at(expires_ms))

    # Region leases

    async def acquire_lease(self, region: str, owner: str, ttl_s: float) -> bool:
        acquired = await self.redis.set(lease_key(region), owner, nx=True, px=_ttl_ms(ttl_s))
        return bool(acquired)

    async def renew_lease(self, region: str, owner: str, ttl_s: float) -> bool:
        """Extends the lease only if ``owner`` holds it."""
        renewed = await self._renew_lease(keys=[lease_key(region)], args=[owner, _ttl_ms(ttl_s)])
        return bool(renewed)

    async def release_lease(self, region: str, owner: str) -> bool:
        """Drops the lease only if ``owner`` holds it."""
        released = await self._release_lease(keys=[lease_key(region)], args=[owner])
        return bool(released)

    async def lease_owner(self, region: str) -> str | None:
        owner = await self.redis.get(lease_key(region))
        return None if owner is None else str(owner)

    # Driver outbox

    async def push_to_driver(self, driver_id: uuid.UUID, message: Mapping[str, Any]) -> str:
        """Keeps ``message`` until the driver acknowledges it, without a nudge; returns
        its id, which orders the driver's messages. Pushes go out through
        :meth:`deliver_to_drivers`; this is the outbox half alone."""
        key = outbox_key(driver_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"body": _json(message)}, maxlen=self.outbox_max_len, approximate=False)
            pipe.pexpire(key, _duration_ms(self.outbox_retention_s))
            message_id, _ = await pipe.execute()
        return str(message_id)

    async def deliver_to_drivers(
        self, messages: Sequence[tuple[uuid.UUID, Mapping[str, Any]]]
    ) -> list[str]:
        """Pushes each message to its driver's outbox (as :meth:`push_to_driver`) and
        publishes it with its ``message_id`` on the driver's user channel, which wakes the
        api worker holding their websocket: one round trip for them all. The ids in
        order."""
        if not messages:
            return []
        args: list[str | int] = [self.outbox_max_len, _duration_ms(self.outbox_retention_s)]
        for driver_id, message in messages:
            args += [_json(message), user_channel(driver_id)]
        ids = await self._deliver(keys=[outbox_key(d) for d, _ in messages], args=args)
        return [str(message_id) for message_id in ids]

    async def unacked(self, driver_id: uuid.UUID) -> list[OutboxMessage]:
        """The driver's messages not yet acknowledged, oldest first: what a reconnect
        delivers again."""
        entries = cast(
            "list[tuple[str, dict[str, str]]]", await self.redis.xrange(outbox_key(driver_id))
        )
        return [
            OutboxMessage(str(message_id), json.loads(fields["body"]))
            for message_id, fields in entries
        ]

    async def ack(self, driver_id: uuid.UUID, message_id: str) -> bool:
        """Forgets an acknowledged message; False for an unknown or malformed id."""
        if not _STREAM_ID.match(message_id):
            return False
        return bool(await self.redis.xdel(outbox_key(driver_id), message_id))

    # Trips: the ride a driver is on, so that their positions become the ride's
    # breadcrumbs and reach its rider. Set by whoever moves the ride, after the commit.

    async def set_trip(self, driver_id: uuid.UUID, trip: LiveTrip) -> None:
        """Links the driver to the ride under way; set again at each transition with the
        ride's new status. Forgotten after ``TRIP_TTL_S`` should :meth:`clear_trip`
        never come, so a lost end of a ride cannot show a driver to a rider for long."""
        key = trip_key(driver_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "ride_id": str(trip.ride_id),
                    "rider_id": str(trip.rider_id),
                    "status": trip.status,
                    "pickup_lat": repr(trip.pickup_lat),
                    "pickup_lng": repr(trip.pickup_lng),
                },
            )
            pipe.expire(key, TRIP_TTL_S)
            await pipe.execute()

    async def clear_trip(self, driver_id: uuid.UUID, ride_id: uuid.UUID | None = None) -> bool:
        """Unlinks the driver from their ride; when ``ride_id`` is given, only from that
        one, so a late call for an earlier ride cannot unlink the next. False if nothing
        was unlinked."""
        cleared = await self.redis.register_script(_CLEAR_TRIP)(
            keys=[trip_key(driver_id)], args=["" if ride_id is None else str(ride_id)]
        )
        return bool(cleared)

    async def trip_of(self, driver_id: uuid.UUID) -> LiveTrip | None:
        values = await self.redis.hmget(trip_key(driver_id), list(_TRIP_FIELDS))
        return _live_trip(cast("list[str | None]", values))

    async def update_locations_with_trips(
        self, updates: Sequence[tuple[uuid.UUID, LocationUpdate]], now: datetime
    ) -> list[tuple[str | None, LiveTrip | None]]:
        """:meth:`update_locations`, each result with the driver's trip (None when on
        none), in the same single round trip."""
        if not updates:
            return []
        # One command per update, not two: the client's packing and parsing of commands
        # is most of what a position costs the api process.
        script = self.redis.register_script(_UPDATE_LOCATION_WITH_TRIP)
        async with self.redis.pipeline(transaction=False) as pipe:
            for driver_id, update in updates:
                region = _region(update)
                await script(
                    keys=[driver_key(driver_id), SEEN_KEY, geo_key(region), trip_key(driver_id)],
                    args=_update_args(driver_id, region, update, now),
                    client=pipe,
                )
            results = await pipe.execute()
        return [_stored_with_trip(result) for result in results]


def _region(update: LocationUpdate) -> str:
    _require_storable(update.lat, update.lng)
    return region_of(update.lat, update.lng)


def _update_args(
    driver_id: uuid.UUID, region: str, update: LocationUpdate, now: datetime
) -> list[str | int]:
    return [
        str(driver_id),
        region,
        repr(update.lat),
        repr(update.lng),
        _optional(update.heading_deg),
        _optional(update.speed_mps),
        _optional(update.accuracy_m),
        _ms(update.recorded_at),
        _ms(now),
        GEO_PREFIX,
    ]


def _live_driver(driver_id: uuid.UUID, values: Sequence[str | None]) -> LiveDriver | None:
    (status, region, lat, lng, heading, speed, accuracy, recorded, seen, since) = values
    if status is None or region is None or lat is None or lng is None:
        return None
    return LiveDriver(
        driver_id=driver_id,
        status="busy" if status == "busy" else "available",
        region=region,
        location=LocationUpdate(
            lat=float(lat),
            lng=float(lng),
            heading_deg=_float_or_none(heading),
            speed_mps=_float_or_none(speed),
            accuracy_m=_float_or_none(accuracy),
            recorded_at=_at(recorded or 0),
        ),
        last_seen_at=_at(seen or 0),
        available_since=_at(since) if since else None,
    )


def _require_storable(lat: float, lng: float) -> None:
    # Checked before any script runs: Redis does not roll back a script that fails
    # halfway, so a GEOADD refused mid-script would leave a half-written driver.
    if not storable_coordinates(lat, lng):
        raise ValueError(f"({lat}, {lng}) cannot be stored in the geo index")


def _optional(value: float | None) -> str:
    return "" if value is None else repr(value)


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value else None


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("live state needs timezone-aware datetimes")
    return int(moment.timestamp() * 1000)


def _at(ms: str | int) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def _json(message: Mapping[str, Any]) -> str:
    return json.dumps(dict(message), separators=(",", ":"))


def _duration_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _ttl_ms(ttl_s: float) -> int:
    if not ttl_s > 0:
        raise ValueError("ttl_s must be > 0")
    return _duration_ms(ttl_s)


# Trips (appended with the driver channel).

TRIP_PREFIX = f"{PREFIX}trip:"
# Longer than any trip: the link outlives a ride whose end was never recorded only so long.
TRIP_TTL_S = 12 * 3600

TripStatus = Literal["driver_assigned", "driver_arrived", "in_progress"]
_TRIP_STATUSES: tuple[TripStatus, ...] = ("driver_assigned", "driver_arrived", "in_progress")
_TRIP_FIELDS = ("ride_id", "rider_id", "status", "pickup_lat", "pickup_lng")

# KEYS: the driver's trip. ARGV: ride id or '' for any.
_CLEAR_TRIP = """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'ride_id') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


# _UPDATE_LOCATION, then the driver's trip (KEYS[4]), as one string: false when the
# driver is not online, else the region, followed by '|' and the trip's fields in
# _TRIP_FIELDS order when they are on one.
_UPDATE_LOCATION_WITH_TRIP = (
    "local function update()\n"
    + _UPDATE_LOCATION
    + """
end
local region = update()
if not region then return false end
local trip = redis.call('HMGET', KEYS[4], 'ride_id', 'rider_id', 'status', 'pickup_lat',
  'pickup_lng')
if not trip[1] then return region end
return region .. '|' .. table.concat(trip, '|')
"""
)


def trip_key(driver_id: uuid.UUID) -> str:
    return f"{TRIP_PREFIX}{driver_id}"


@dataclass(frozen=True, slots=True)
class LiveTrip:
    """The ride a driver is on, as live state knows it: ``live:trip:{driver_id}``, a hash
    of these fields, from assignment until the ride ends."""

    ride_id: uuid.UUID
    rider_id: uuid.UUID
    status: TripStatus
    pickup_lat: float
    pickup_lng: float

    def __post_init__(self) -> None:
        if self.status not in _TRIP_STATUSES:
            raise ValueError(f"a driver is on a trip only while it is one of {_TRIP_STATUSES}")
        _require_storable(self.pickup_lat, self.pickup_lng)


def _stored_with_trip(result: str | None) -> tuple[str | None, LiveTrip | None]:
    if not result:
        return None, None
    region, _, trip = result.partition("|")
    return region, _live_trip(trip.split("|")) if trip else None


def _live_trip(values: Sequence[str | None]) -> LiveTrip | None:
    ride_id, rider_id, status, lat, lng = values
    if not (ride_id and rider_id and lat and lng) or status not in _TRIP_STATUSES:
        return None
    return LiveTrip(uuid.UUID(ride_id), uuid.UUID(rider_id), status, float(lat), float(lng))
