"""The compare-and-set store: a newer valid entry is kept, a corrupt one never sticks.

Runs on fakeredis, the real Redis and a Redis Cluster (the ``backend`` fixture), because the rule
lives in a Lua script and each of them runs it. Hypothesis generates the junk.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import UserAttributes
from flask_rbac_abac.store import (
    StoreResult,
    store_attributes,
    write_attributes,
    write_attributes_batch,
)

from .conftest import examples

_users = itertools.count(1)
JUNK_SETTINGS = settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def attrs(user_id: int, version: int, *roles: str) -> UserAttributes:
    return UserAttributes(user_id, "billing_api", roles=roles, version=version, fetched_at=1.0)


def key(prefix: str, user_id: int) -> str:
    return attributes_key(prefix, "billing_api", user_id)


def stored(backend: Any, prefix: str, user_id: int) -> UserAttributes:
    return UserAttributes.from_json(backend.get(key(prefix, user_id)))


def plant(backend: Any, prefix: str, raw: str | bytes, ttl: int | None) -> int:
    """A fresh user whose key holds ``raw`` (with ``ttl`` seconds, or none)."""
    user_id = next(_users)
    backend.set(key(prefix, user_id), raw, ex=ttl)
    return user_id


def entry(user_id: int, version: Any, **extra: Any) -> str:
    data = attrs(user_id, 0, "admin").to_dict()
    data["version"] = version
    data.update(extra)
    return json.dumps(data)


def test_version_ahead_without_ttl_is_overwritten_and_the_revocation_lands(backend, key_prefix):
    user_id = plant(backend, key_prefix, entry(1, 10**15), ttl=None)
    revoked = attrs(user_id, 3, "viewer")
    assert write_attributes(backend, revoked, 60, key_prefix, authority=3) is StoreResult.REPAIRED
    assert stored(backend, key_prefix, user_id) == revoked
    assert 0 < backend.ttl(key(key_prefix, user_id)) <= 60


def test_without_a_ttl_even_a_plain_writer_overwrites(backend, key_prefix):
    user_id = plant(backend, key_prefix, entry(1, 10**15), ttl=None)
    assert store_attributes(backend, attrs(user_id, 3), 60, key_prefix) is True
    assert stored(backend, key_prefix, user_id).version == 3


def test_version_ahead_of_the_authority_is_overwritten_even_with_a_ttl(backend, key_prefix):
    user_id = plant(backend, key_prefix, entry(1, 10**15), ttl=3600)
    value = attrs(user_id, 3, "viewer")
    # A writer that does not know the newest version cannot tell: it keeps the entry.
    assert write_attributes(backend, value, 60, key_prefix) is StoreResult.KEPT_NEWER
    assert write_attributes(backend, value, 60, key_prefix, authority=3) is StoreResult.REPAIRED
    assert stored(backend, key_prefix, user_id) == value


def test_junk_with_a_huge_version_is_overwritten(backend, key_prefix):
    user_id = plant(backend, key_prefix, '{"version": 1e18, "junk": true}', ttl=3600)
    assert write_attributes(backend, attrs(user_id, 1), 60, key_prefix) is StoreResult.REPAIRED
    assert stored(backend, key_prefix, user_id).version == 1


def test_undecodable_bytes_are_overwritten(backend, key_prefix):
    user_id = plant(backend, key_prefix, b"\x80\xff{not json", ttl=3600)
    assert write_attributes(backend, attrs(user_id, 1), 60, key_prefix) is StoreResult.REPAIRED
    assert stored(backend, key_prefix, user_id).version == 1


def test_a_legit_newer_value_is_never_replaced_by_an_older_one(backend, key_prefix):
    user_id = next(_users)
    newer = attrs(user_id, 8, "admin")
    assert write_attributes(backend, newer, 60, key_prefix) is StoreResult.WRITTEN
    older = attrs(user_id, 7, "viewer")
    assert write_attributes(backend, older, 60, key_prefix) is StoreResult.KEPT_NEWER
    assert write_attributes(backend, older, 60, key_prefix, authority=8) is StoreResult.KEPT_NEWER
    assert store_attributes(backend, older, 60, key_prefix) is False
    assert stored(backend, key_prefix, user_id) == newer


def test_the_same_version_is_written_again(backend, key_prefix):
    user_id = next(_users)
    assert write_attributes(backend, attrs(user_id, 4), 60, key_prefix) is StoreResult.WRITTEN
    again = UserAttributes(user_id, "billing_api", version=4, fetched_at=2.0)
    assert write_attributes(backend, again, 60, key_prefix, authority=4) is StoreResult.WRITTEN
    assert stored(backend, key_prefix, user_id) == again


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["version", "schema", "roles", "junk", "attributes"])
            | st.text(max_size=4),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


def _is_version(number: float) -> bool:
    return number == number and abs(number) != float("inf") and number == int(number) >= 0


bad_versions = (
    st.floats().filter(lambda v: not (_is_version(v) and v < 2**53))
    | st.integers(max_value=-1)
    | st.integers(min_value=2**53)
    | st.text(max_size=6)
    | st.none()
    | st.lists(st.integers(), max_size=2)
)


@JUNK_SETTINGS
@given(raw=st.binary(max_size=64) | json_values.map(json.dumps), authority=st.booleans())
def test_any_value_without_a_ttl_is_overwritten(backend, key_prefix, raw, authority):
    user_id = plant(backend, key_prefix, raw, ttl=None)
    value = attrs(user_id, 5, "viewer")
    result = write_attributes(backend, value, 60, key_prefix, authority=5 if authority else None)
    assert result is StoreResult.REPAIRED
    assert stored(backend, key_prefix, user_id) == value


@JUNK_SETTINGS
@given(raw=st.binary(max_size=64) | json_values.map(json.dumps))
def test_anything_that_is_not_an_entry_is_overwritten(backend, key_prefix, raw):
    try:
        UserAttributes.from_json(raw)
    except Exception:
        pass
    else:  # pragma: no cover - the generators make no valid entries in practice
        return
    user_id = plant(backend, key_prefix, raw, ttl=3600)
    value = attrs(user_id, 5, "viewer")
    assert write_attributes(backend, value, 60, key_prefix) is StoreResult.REPAIRED
    assert stored(backend, key_prefix, user_id) == value


@JUNK_SETTINGS
@given(version=bad_versions)
def test_an_entry_whose_version_is_not_a_small_non_negative_integer_is_overwritten(
    backend, key_prefix, version
):
    user_id = plant(backend, key_prefix, entry(1, version), ttl=3600)
    value = attrs(user_id, 5, "viewer")
    assert write_attributes(backend, value, 60, key_prefix) is StoreResult.REPAIRED
    assert stored(backend, key_prefix, user_id) == value


@JUNK_SETTINGS
@given(
    there=st.integers(min_value=0, max_value=2**53 - 1),
    ours=st.integers(min_value=0, max_value=2**40),
    lead=st.integers(min_value=0, max_value=2**40),
)
def test_valid_entries_follow_the_version_rule(backend, key_prefix, there, ours, lead):
    """Kept only when newer than ours and not ahead of the authority; else overwritten."""
    user_id = plant(backend, key_prefix, entry(1, there), ttl=3600)
    authority = ours + lead
    value = attrs(user_id, ours, "viewer")
    result = write_attributes(backend, value, 60, key_prefix, authority=authority)
    if there <= ours:
        assert result is StoreResult.WRITTEN
    elif there <= authority:
        assert result is StoreResult.KEPT_NEWER
    else:
        assert result is StoreResult.REPAIRED
    assert stored(backend, key_prefix, user_id).version == (ours if result.landed else there)


@pytest.mark.parametrize("result", list(StoreResult))
def test_landed_means_the_value_is_in_redis(result):
    assert result.landed is (result is not StoreResult.KEPT_NEWER)


def test_the_largest_exact_version_is_valid_and_the_next_one_is_corrupt(backend, key_prefix):
    """The bound is 2**53 - 1 exactly (Lua numbers are doubles); off by one either way fails."""
    largest = plant(backend, key_prefix, entry(1, 2**53 - 1), ttl=3600)
    assert write_attributes(backend, attrs(largest, 5), 60, key_prefix) is StoreResult.KEPT_NEWER
    assert stored(backend, key_prefix, largest).version == 2**53 - 1
    beyond = plant(backend, key_prefix, entry(1, 2**53), ttl=3600)
    assert write_attributes(backend, attrs(beyond, 5), 60, key_prefix) is StoreResult.REPAIRED
    assert stored(backend, key_prefix, beyond).version == 5


def test_a_batch_writes_each_entry_by_the_version_rule_with_its_own_ttl(backend, key_prefix):
    """Like write_attributes, per entry: the script loaded on NOSCRIPT, the results in order."""
    if type(backend).__module__.startswith("fakeredis"):  # never SCRIPT FLUSH the shared Redis
        backend.script_flush()  # so the batch meets NOSCRIPT and loads the script itself
    newer = plant(backend, key_prefix, entry(1, 9), ttl=3600)
    corrupt = plant(backend, key_prefix, b"junk", ttl=3600)
    fresh = next(_users)
    batch = [(attrs(newer, 5), 60), (attrs(corrupt, 5), 120), (attrs(fresh, 5, "viewer"), 300)]
    results = write_attributes_batch(backend, batch, key_prefix)
    assert results == [StoreResult.KEPT_NEWER, StoreResult.REPAIRED, StoreResult.WRITTEN]
    assert stored(backend, key_prefix, newer).version == 9
    assert stored(backend, key_prefix, corrupt) == attrs(corrupt, 5)
    assert stored(backend, key_prefix, fresh) == attrs(fresh, 5, "viewer")
    assert 3590 <= backend.ttl(key(key_prefix, newer)) <= 3600
    assert 110 <= backend.ttl(key(key_prefix, corrupt)) <= 120
    assert 290 <= backend.ttl(key(key_prefix, fresh)) <= 300
    # The script is loaded now: a second batch needs no reload and answers the same way.
    again = write_attributes_batch(backend, [(attrs(fresh, 6), 300)], key_prefix)
    assert again == [StoreResult.WRITTEN]
    assert write_attributes_batch(backend, [], key_prefix) == []


def test_a_batch_sends_each_entry_once_when_the_script_is_loaded(backend, key_prefix):
    """Only an entry answered NOSCRIPT is sent again: a repaired one stays "repaired"."""
    write_attributes_batch(backend, [(attrs(next(_users), 1), 60)], key_prefix)  # loads it
    corrupt = plant(backend, key_prefix, b"junk", ttl=3600)
    fresh = next(_users)
    batch = [(attrs(corrupt, 5), 60), (attrs(fresh, 5), 60)]
    assert write_attributes_batch(backend, batch, key_prefix) == [
        StoreResult.REPAIRED,
        StoreResult.WRITTEN,
    ]


def test_a_batch_signs_the_values_with_the_first_key(backend, key_prefix):
    from flask_rbac_abac.codec import decode_value
    from flask_rbac_abac.errors import DecodeError

    keys = {"k2": b"s" * 32, "k1": b"t" * 32}
    user_id = next(_users)
    value = attrs(user_id, 4, "viewer")
    assert write_attributes_batch(backend, [(value, 60)], key_prefix, keys=keys) == [
        StoreResult.WRITTEN
    ]
    raw = backend.get(key(key_prefix, user_id))
    assert decode_value(raw, {"k2": b"s" * 32}) == value
    with pytest.raises(DecodeError):  # signed with k2 only
        decode_value(raw, {"k1": b"t" * 32})


class NoTransactions:
    """A client whose pipelines cannot be transactions, as a Redis Cluster's cannot span slots."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def pipeline(self, transaction: bool = True, **options: Any) -> Any:
        if transaction:
            raise AssertionError("a transaction pipeline: CROSSSLOT on a Redis Cluster")
        return self._client.pipeline(transaction=transaction, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_batch_is_not_a_transaction(backend, key_prefix):
    batch = [(attrs(next(_users), 1), 60) for _ in range(3)]
    results = write_attributes_batch(NoTransactions(backend), batch, key_prefix)
    assert results == [StoreResult.WRITTEN] * 3


def test_a_batch_raises_an_entrys_error_after_writing_the_others(backend, key_prefix):
    fine = next(_users)
    wrong_type = next(_users)
    backend.hset(key(key_prefix, wrong_type), "field", "value")  # GET on a hash: WRONGTYPE
    batch = [(attrs(fine, 1), 60), (attrs(wrong_type, 1), 60)]
    with pytest.raises(Exception, match="WRONGTYPE"):
        write_attributes_batch(backend, batch, key_prefix)
    assert stored(backend, key_prefix, fine) == attrs(fine, 1)
