"""L1: freshness, the stale window, version ordering and the eviction race."""

from __future__ import annotations

from flask_rbac_abac import UserAttributes
from flask_rbac_abac.local_cache import LocalCache

KEY = ("billing_api", 7)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def attrs(version: int, *roles: str) -> UserAttributes:
    return UserAttributes(
        user_id=7, service_name="billing_api", roles=roles, version=version, fetched_at=1.0
    )


def test_fresh_then_stale_then_gone() -> None:
    clock = Clock()
    cache = LocalCache(10, ttl=60, max_stale=30, timer=clock)
    cache.put(KEY, attrs(1), cache.ticket(KEY))
    assert cache.get(KEY) == attrs(1)
    clock.now = 61
    assert cache.get(KEY) is None
    assert cache.get_stale(KEY) == (attrs(1), 61)
    clock.now = 91
    assert cache.get_stale(KEY) is None


def test_older_version_never_replaces_newer() -> None:
    cache = LocalCache(10, ttl=60)
    assert cache.put(KEY, attrs(5, "admin"), cache.ticket(KEY))
    assert not cache.put(KEY, attrs(4, "viewer"), cache.ticket(KEY))
    assert cache.get(KEY).roles == ("admin",)
    assert cache.put(KEY, attrs(5, "admin"), cache.ticket(KEY))


def test_value_read_before_an_eviction_is_not_stored_after_it() -> None:
    cache = LocalCache(10, ttl=60)
    ticket = cache.ticket(KEY)  # a reader starts, fetches the old value from Redis ...
    cache.evict(KEY)  # ... the IdP announces a change ...
    assert not cache.put(KEY, attrs(1, "revoked"), ticket)  # ... the old value is refused
    assert cache.get(KEY) is None
    assert cache.put(KEY, attrs(2), cache.ticket(KEY))


def test_user_wide_eviction_and_flush_also_invalidate_tickets() -> None:
    cache = LocalCache(10, ttl=60)
    other = ("other_api", 7)
    cache.put(KEY, attrs(1), cache.ticket(KEY))
    ticket = cache.ticket(other)
    assert cache.evict_user(7) == 1
    assert cache.get(KEY) is None
    assert not cache.put(other, attrs(1), ticket)
    ticket = cache.ticket(KEY)
    cache.clear()
    assert not cache.put(KEY, attrs(1), ticket)


def test_versioned_eviction_keeps_an_entry_already_that_new() -> None:
    cache = LocalCache(10, ttl=60)
    cache.put(KEY, attrs(3), cache.ticket(KEY))
    assert cache.evict(KEY, version=3) is False
    assert cache.get(KEY) is not None
    assert cache.evict(KEY, version=4) is True
    assert cache.get(KEY) is None


def test_bounded() -> None:
    cache = LocalCache(2, ttl=60)
    for user in (1, 2, 3):
        key = ("s", user)
        cache.put(key, UserAttributes(user_id=user, service_name="s"), cache.ticket(key))
    assert len(cache) == 2


def test_unknown_users_are_forgotten_on_any_eviction_or_value() -> None:
    clock = Clock()
    cache = LocalCache(10, ttl=60, timer=clock)
    assert cache.put_unknown(KEY, cache.ticket(KEY))
    assert cache.is_unknown(KEY)
    clock.now = 6
    assert not cache.is_unknown(KEY)  # remembered 5 s only
    for forget in (
        lambda: cache.evict(KEY, version=1),
        lambda: cache.evict_user(7),
        cache.clear,
        lambda: cache.put(KEY, attrs(1), cache.ticket(KEY)),
    ):
        assert cache.put_unknown(KEY, cache.ticket(KEY))
        forget()
        assert not cache.is_unknown(KEY)
    ticket = cache.ticket(KEY)
    cache.evict(KEY)
    assert not cache.put_unknown(KEY, ticket)  # an answer from before the eviction


def test_a_stale_entry_reports_its_age_since_it_was_stored() -> None:
    clock = Clock()
    cache = LocalCache(10, ttl=60, max_stale=30, timer=clock)
    clock.now = 10
    cache.put(KEY, attrs(1), cache.ticket(KEY))
    clock.now = 80
    assert cache.get_stale(KEY) == (attrs(1), 70)


def test_every_user_wide_eviction_invalidates_the_tickets_taken_before_it() -> None:
    cache = LocalCache(10, ttl=60)
    cache.evict_user(7)
    ticket = cache.ticket(KEY)  # taken after the first eviction ...
    cache.evict_user(7)  # ... and outdated by the second
    assert not cache.put(KEY, attrs(1), ticket)
    assert cache.get(KEY) is None


def test_an_unknown_user_drops_the_value_held_for_it() -> None:
    cache = LocalCache(10, ttl=60)
    cache.put(KEY, attrs(1), cache.ticket(KEY))
    assert cache.put_unknown(KEY, cache.ticket(KEY))
    assert cache.get(KEY) is None
    assert cache.is_unknown(KEY)


def test_every_flush_invalidates_the_tickets_taken_before_it() -> None:
    cache = LocalCache(10, ttl=60)
    cache.clear()
    ticket = cache.ticket(KEY)  # taken after the first flush ...
    cache.clear()  # ... and outdated by the second
    assert not cache.put(KEY, attrs(1), ticket)


def test_entries_past_the_stale_window_are_dropped_as_new_ones_arrive() -> None:
    clock = Clock()
    cache = LocalCache(10, ttl=60, max_stale=30, timer=clock)
    cache.put(KEY, attrs(1), cache.ticket(KEY))
    clock.now = 89.5
    other = ("billing_api", 8)
    cache.put(other, attrs(1), cache.ticket(other))
    assert len(cache) == 2  # 89.5 s old: still within fresh + stale
    clock.now = 90.0  # exactly ttl + max_stale: gone, not merely unservable
    assert len(cache) == 1 and KEY not in cache.entries
    assert cache.get_stale(other) == (attrs(1), 0.5)


def test_the_bound_drops_the_entry_stored_longest_ago() -> None:
    cache = LocalCache(2, ttl=60)
    keys = [("s", user) for user in (1, 2, 3)]
    for key in keys[:2]:
        cache.put(key, UserAttributes(user_id=key[1], service_name="s"), cache.ticket(key))
    # storing key 1 again makes key 2 the oldest
    cache.put(
        keys[0], UserAttributes(user_id=1, service_name="s", version=1), cache.ticket(keys[0])
    )
    cache.put(keys[2], UserAttributes(user_id=3, service_name="s"), cache.ticket(keys[2]))
    assert list(cache.entries) == [keys[0], keys[2]]


def test_reschedule_records_the_new_expiry_and_next_look_within_freshness() -> None:
    clock = Clock()
    cache = LocalCache(10, ttl=60, timer=clock)
    clock.now = 10
    value = attrs(1)
    cache.put(KEY, value, cache.ticket(KEY), expires=100, limit=500, due=30)
    clock.now = 20
    cache.reschedule(KEY, value, expires=200, due=50)
    assert cache.get_entry(KEY) == (value, 10, 200, 500, 50)
    # the next look is never later than the end of the entry's freshness (stored_at + ttl)
    cache.reschedule(KEY, value, expires=300, due=1000)
    assert cache.get_entry(KEY) == (value, 10, 300, 500, 70)
    assert len(cache) == 1


def test_reschedule_leaves_a_replaced_or_missing_entry_alone() -> None:
    cache = LocalCache(10, ttl=60)
    old, new = attrs(1), attrs(2)
    cache.put(KEY, new, cache.ticket(KEY), expires=100, due=30)
    cache.reschedule(KEY, old, expires=200, due=50)  # a look at a value since replaced
    assert cache.get_entry(KEY)[2:] == (100, float("inf"), 30)
    cache.reschedule(KEY, attrs(2), expires=200, due=50)  # equal, but not the value held
    assert cache.get_entry(KEY)[2:] == (100, float("inf"), 30)
    other = ("billing_api", 8)
    cache.reschedule(other, new, expires=200, due=50)
    assert cache.get_entry(other) is None and other not in cache.entries


def test_put_caps_the_next_look_at_the_end_of_freshness() -> None:
    clock = Clock()
    cache = LocalCache(10, ttl=60, timer=clock)
    clock.now = 5
    cache.put(KEY, attrs(1), cache.ticket(KEY), expires=40, limit=90, due=20)
    assert cache.get_entry(KEY) == (attrs(1), 5, 40, 90, 20)
    cache.put(KEY, attrs(1), cache.ticket(KEY))
    assert cache.get_entry(KEY) == (attrs(1), 5, float("inf"), float("inf"), 65)


def test_eviction_generations_are_remembered_for_a_bounded_time_on_the_cache_clock() -> None:
    clock = Clock()
    cache = LocalCache(10, ttl=60, max_stale=30, timer=clock)
    before = cache.ticket(KEY)
    cache.evict(KEY)
    clock.now = 299
    assert cache.ticket(KEY) != before  # still remembered: an in-flight reader is refused
    clock.now = 300  # _GENERATION_MEMORY later (on the injected clock), the memory is gone
    assert cache.ticket(KEY) == before
    # a window longer than the generation memory keeps generations as long as entries live
    long = LocalCache(10, ttl=250, max_stale=100, timer=clock)
    before = long.ticket(KEY)
    long.evict(KEY)
    clock.now = 300 + 349
    assert long.ticket(KEY) != before
    clock.now = 300 + 350
    assert long.ticket(KEY) == before


def test_freshness_and_the_stale_window_end_exactly_at_their_length() -> None:
    clock = Clock()
    cache = LocalCache(10, ttl=60, max_stale=30, timer=clock)
    cache.put(KEY, attrs(1), cache.ticket(KEY))
    clock.now = 59.5
    assert cache.get_entry(KEY) is not None
    clock.now = 60
    assert cache.get_entry(KEY) is None
    assert cache.get_stale(KEY) == (attrs(1), 60)
    clock.now = 90
    assert cache.get_stale(KEY) is None
    # without max_stale nothing is served past freshness
    plain = LocalCache(10, ttl=60, timer=clock)
    plain.put(KEY, attrs(1), plain.ticket(KEY))
    clock.now = 150.5
    assert plain.get_stale(KEY) is None


def test_a_forgotten_user_is_dropped_unknown_and_refuses_tickets_taken_before() -> None:
    cache = LocalCache(10, ttl=60)
    cache.put(KEY, attrs(1), cache.ticket(KEY))
    ticket = cache.ticket(KEY)
    cache.forget(KEY)
    assert cache.get(KEY) is None and KEY not in cache.entries
    assert cache.is_unknown(KEY)
    assert not cache.put(KEY, attrs(2), ticket)
    ticket = cache.ticket(KEY)  # taken after the first forget ...
    cache.forget(KEY)  # ... and outdated by the second
    assert not cache.put(KEY, attrs(2), ticket)
    assert cache.put(KEY, attrs(2), cache.ticket(KEY))
