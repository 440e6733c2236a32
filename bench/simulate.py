"""A simulated day: hit ratios and IdP calls with and without sliding expiration and refresh-ahead.

    make bench          # or: .venv/bin/python bench/simulate.py [--users N] [--requests N]

Drives the real :class:`~flask_rbac_abac.RedisAttributeClient` (its L1, its lookup path, its
refresh-ahead and sliding expiration code) through ``--requests`` lookups (default 300 000)
spread over 24 hours of *simulated* time, the users drawn from a Zipf law (``s = 1.1``) over
``--users`` users (default 100 000). Time is a fake clock given to the client as ``timer`` and
``wall_clock``, so the day takes a minute or so, not a day. Two things are simulated, not real:

- Redis is :class:`SimRedis`, a dictionary with expiry on that same clock (``GET``, ``SET``,
  ``PTTL``, ``PEXPIRE``, pipelines, and the two lease scripts of :mod:`.singleflight` by their
  meaning). fakeredis and the real Redis keep TTLs on the wall clock and cannot be fast-forwarded.
- The IdP is :class:`SimIdP`: it writes the entry with the full TTL, as the real one does, and
  counts its calls. Refresh-ahead runs inline (:class:`InlineExecutor`) instead of on the client's
  background threads, so runs are deterministic; it is counted apart from the synchronous misses
  all the same (``refresh_ahead`` against ``auto_refreshes``), which is what the figure is about.

One service process; its L1 keeps the default 10 000 entries for 60 s. Redis starts in a steady
state, as after days of running: every user has an entry with a random part of its TTL (24 h)
left, fetched that long before; with sliding expiration, fetched up to the max age (7 days) ago.

Printed per configuration (baseline, + sliding expiration, + refresh-ahead, + both): the L1 hit
ratio, the L2 hit ratio (of L1 misses), IdP calls, the synchronous ones (paid by a request), and
Redis commands. ``tests/test_simulate.py`` runs it small and checks the ordering that must hold.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_rbac_abac import RedisAttributeClient, UserAttributes
from flask_rbac_abac.defaults import DEFAULT_MAX_AGE
from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.singleflight import LEASE_FAILED

SERVICE = "billing_api"
PREFIX = "sim"
DAY = 86400.0
#: Simulated time starts here (a plausible Unix time, so ``fetched_at`` looks like one).
EPOCH = 1_800_000_000.0


class Clock:
    """The simulated time, in seconds; both the monotonic and the wall clock of the client."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SimRedis:
    """The few Redis commands the client uses, with expiry on :class:`Clock`.

    Values are kept as given (bytes or str); ``commands`` counts round trips (a pipeline is one).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.data: dict[str, tuple[Any, float]] = {}
        self.commands = 0

    def _live(self, name: str) -> tuple[Any, float] | None:
        item = self.data.get(name)
        if item is not None and item[1] <= self.clock.now:
            del self.data[name]
            return None
        return item

    def get(self, name: str) -> Any:
        self.commands += 1
        item = self._live(name)
        return None if item is None else item[0]

    def set(self, name: str, value: Any, px: int | None = None) -> bool:
        self.commands += 1
        expires = float("inf") if px is None else self.clock.now + px / 1000
        self.data[name] = (value, expires)
        return True

    def pttl(self, name: str) -> int:
        self.commands += 1
        item = self._live(name)
        if item is None:
            return -2
        return -1 if item[1] == float("inf") else int((item[1] - self.clock.now) * 1000)

    def _pexpire(self, name: str, milliseconds: int) -> bool:
        item = self._live(name)
        if item is None:
            return False
        self.data[name] = (item[0], self.clock.now + milliseconds / 1000)
        return True

    def pipeline(self, transaction: bool = True) -> SimPipeline:
        return SimPipeline(self)

    def eval(self, script: str, numkeys: int, name: str, *args: Any) -> int:
        """The lease scripts of :mod:`flask_rbac_abac.singleflight`, by what they do."""
        self.commands += 1
        item = self._live(name)
        current = None if item is None else item[0]
        if "'DEL'" not in script:  # take: free, or holding the replaceable marker
            token, milliseconds, replaceable = args
            if current is not None and current != replaceable:
                return 0
            self.data[name] = (token, self.clock.now + int(milliseconds) / 1000)
            return 1
        token, marker, milliseconds = args  # release (compare-and-delete, or leave a marker)
        if current != token:
            return 0
        if marker == "":
            del self.data[name]
        else:
            self.data[name] = (LEASE_FAILED, self.clock.now + int(milliseconds) / 1000)
        return 1

    def close(self) -> None:
        pass


class SimPipeline:
    """``PEXPIRE`` batches, sent as one round trip."""

    def __init__(self, redis: SimRedis) -> None:
        self.redis = redis
        self.queued: list[tuple[str, int]] = []

    def pexpire(self, name: str, milliseconds: int) -> None:
        self.queued.append((name, milliseconds))

    def execute(self) -> list[bool]:
        self.redis.commands += 1
        return [self.redis._pexpire(name, ms) for name, ms in self.queued]


class _Breaker:
    state = "closed"


class SimIdP:
    """Writes a fresh entry with the full TTL, as the IdP's refresh does; counts calls."""

    def __init__(self, redis: SimRedis, clock: Clock, ttl: float) -> None:
        self.redis = redis
        self.clock = clock
        self.ttl = ttl
        self.calls = 0
        self.breaker = _Breaker()

    def refresh(self, user_id: int | str, service_name: str) -> UserAttributes:
        self.calls += 1
        attrs = entry(user_id, self.clock.now)
        key = attributes_key(PREFIX, service_name, user_id)
        self.redis.set(key, attrs.to_json(), px=int(self.ttl * 1000))
        return attrs

    def close(self) -> None:
        pass


class InlineExecutor:
    """Runs a submitted refresh-ahead at once (deterministic runs; see the module docstring)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def entry(user_id: int | str, fetched_at: float) -> UserAttributes:
    return UserAttributes(
        user_id=user_id, service_name=SERVICE, roles=["viewer"], version=1, fetched_at=fetched_at
    )


@dataclass(frozen=True)
class Scenario:
    name: str
    sliding: bool
    ahead: float


SCENARIOS = (
    Scenario("baseline", sliding=False, ahead=0.0),
    Scenario("+ sliding expiration", sliding=True, ahead=0.0),
    Scenario("+ refresh-ahead", sliding=False, ahead=0.1),
    Scenario("+ both", sliding=True, ahead=0.1),
)


def workload(users: int, requests: int, s: float, seed: int) -> tuple[list[float], list[int]]:
    """``requests`` (time offset, user id) pairs over one day: Poisson arrivals, Zipf users."""
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(1 / rank**s for rank in range(1, users + 1)))
    total = cumulative[-1]
    # Rank r is user r, so the hot users are the low ids: the L1's size cut is the same in
    # every scenario.
    ids = [bisect.bisect_left(cumulative, rng.random() * total) + 1 for _ in range(requests)]
    times = sorted(rng.random() * DAY for _ in range(requests))
    return times, ids


def seed_redis(redis: SimRedis, users: int, ttl: float, seed: int, *, sliding: bool) -> None:
    """Steady state: every user has an entry with a random part of its TTL left; its age (since
    ``fetched_at``) is that of its TTL, or with sliding expiration anything below the max age."""
    rng = random.Random(seed + 1)
    now = redis.clock.now
    for user in range(1, users + 1):
        left = rng.random() * ttl
        age = rng.random() * (DEFAULT_MAX_AGE - left) if sliding else ttl - left
        value = entry(user, now - age).to_json()
        redis.data[attributes_key(PREFIX, SERVICE, user)] = (value, now + left)


def run(
    scenario: Scenario,
    times: Iterable[float],
    ids: Iterable[int],
    *,
    users: int,
    ttl: float = DAY,
    seed: int = 1,
) -> dict[str, Any]:
    clock = Clock()
    redis = SimRedis(clock)
    seed_redis(redis, users, ttl, seed, sliding=scenario.sliding)
    client = RedisAttributeClient(
        service_name=SERVICE,
        key_prefix=PREFIX,
        ttl=int(ttl),
        invalidation=False,
        redis=redis,
        refresh_ahead=scenario.ahead,
        sliding_expiration=scenario.sliding,
        timer=clock,
        wall_clock=clock,
    )
    idp = SimIdP(redis, clock, ttl)
    client.idp = idp  # type: ignore[assignment]
    client._ahead_executor = InlineExecutor()  # type: ignore[assignment]
    client.extender.every = 3600.0  # real seconds: flushed below, on simulated time
    flush_every = client.policy.interval / 2
    next_flush = EPOCH + flush_every
    start = EPOCH
    for offset, user in zip(times, ids, strict=True):
        clock.now = start + offset
        if clock.now >= next_flush:
            client.extender.flush()
            next_flush = clock.now + flush_every
        got = client.get_user_attributes(user)
        assert got is not None and got.user_id == user
    client.extender.flush()
    stats = client.stats()
    client.close()
    l1_misses = stats["l1_misses"]
    lookups = stats["l1_hits"] + l1_misses
    return {
        "scenario": scenario.name,
        "l1_hit_ratio": stats["l1_hits"] / lookups,
        "l2_hit_ratio": stats["l2_hits"] / l1_misses if l1_misses else 1.0,
        "idp_calls": idp.calls,
        "sync_idp_calls": stats["auto_refreshes"],
        "refresh_ahead": stats["refresh_ahead"],
        "redis_commands": redis.commands,
    }


def simulate(users: int, requests: int, *, s: float = 1.1, seed: int = 1) -> list[dict[str, Any]]:
    times, ids = workload(users, requests, s, seed)
    return [run(scenario, times, ids, users=users, seed=seed) for scenario in SCENARIOS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300_000)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = simulate(args.users, args.requests, s=args.zipf)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"simulated day: {args.users} users, {args.requests} requests, Zipf s={args.zipf}, "
        f"TTL 24 h, L1 10 000 entries x 60 s, one process"
    )
    header = ("scenario", "L1 hits", "L2 hits", "IdP calls", "sync IdP", "ahead", "Redis cmds")
    print("{:<22} {:>8} {:>8} {:>10} {:>9} {:>7} {:>11}".format(*header))
    for row in rows:
        print(
            f"{row['scenario']:<22} {row['l1_hit_ratio']:>8.2%} {row['l2_hit_ratio']:>8.2%} "
            f"{row['idp_calls']:>10} {row['sync_idp_calls']:>9} {row['refresh_ahead']:>7} "
            f"{row['redis_commands']:>11}"
        )
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
