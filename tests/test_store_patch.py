"""The in-place partial update: a patched entry is what a full rebuild of the new state would be.

Runs on fakeredis, the real Redis and a Redis Cluster (the ``backend`` fixture): the rule lives in
a Lua script and each of them runs it. Every result is read back with the library's own decoder.
Hypothesis generates the attributes and the changes.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_rbac_abac.codec import decode_value, encode_value
from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import UserAttributes
from flask_rbac_abac.store import PatchResult, patch_attributes, write_attributes

_users = itertools.count(1)
SERVICE = "billing_api"
NOW = 1795729581.456809


def value(user_id: int, version: int, attributes: Mapping[str, Any], *roles: str) -> UserAttributes:
    return UserAttributes(
        user_id,
        SERVICE,
        roles=roles,
        permissions=[f"{r}:read" for r in roles],
        attributes=attributes,
        version=version,
        fetched_at=1.5,
    )


def seed(backend: Any, prefix: str, attributes: Mapping[str, Any], *roles: str) -> int:
    user_id = next(_users)
    write_attributes(backend, value(user_id, 4, attributes, *roles), 600, prefix)
    return user_id


def stored(backend: Any, prefix: str, user_id: int) -> UserAttributes:
    return decode_value(backend.get(attributes_key(prefix, SERVICE, user_id)))


def patch(backend: Any, prefix: str, user_id: int, version: int = 5, **change: Any) -> PatchResult:
    return patch_attributes(
        backend, prefix, SERVICE, user_id, version=version, ttl=900, fetched_at=NOW, **change
    )


def rebuilt(user_id: int, attributes: Mapping[str, Any], *roles: str) -> UserAttributes:
    """What a full rebuild of the new state writes (fetched_at as the patch sets it)."""
    full = value(user_id, 5, attributes, *roles)
    return UserAttributes(**{**full.__dict__, "fetched_at": NOW})


def test_setting_one_attribute_keeps_the_rest_and_bumps_version_ttl_and_fetched_at(
    backend, key_prefix
):
    user_id = seed(backend, key_prefix, {"dept": "ops", "level": 3, "tags": ["a", "b"]}, "admin")
    assert patch(backend, key_prefix, user_id, set_attributes={"dept": "sales"}) is (
        PatchResult.PATCHED
    )
    got = stored(backend, key_prefix, user_id)
    assert got == rebuilt(user_id, {"dept": "sales", "level": 3, "tags": ["a", "b"]}, "admin")
    assert (got.version, got.fetched_at) == (5, NOW)
    assert 600 < backend.ttl(attributes_key(key_prefix, SERVICE, user_id)) <= 900
    # Byte for byte the canonical encoding the identity provider writes.
    raw = backend.get(attributes_key(key_prefix, SERVICE, user_id))
    assert raw.decode() == encode_value(got)


def test_removing_an_attribute_and_adding_a_new_one(backend, key_prefix):
    user_id = seed(backend, key_prefix, {"dept": "ops", "level": 3}, "viewer")
    result = patch(
        backend,
        key_prefix,
        user_id,
        set_attributes={"region": {"name": "eu", "zones": [1, 2]}},
        remove_attributes=["level", "never-there"],
    )
    assert result is PatchResult.PATCHED
    expected = {"dept": "ops", "region": {"name": "eu", "zones": [1, 2]}}
    assert stored(backend, key_prefix, user_id) == rebuilt(user_id, expected, "viewer")


def test_removing_the_last_attribute_leaves_an_empty_object(backend, key_prefix):
    user_id = seed(backend, key_prefix, {"dept": "ops"}, "viewer")
    assert patch(backend, key_prefix, user_id, remove_attributes=["dept"]) is PatchResult.PATCHED
    raw = json.loads(backend.get(attributes_key(key_prefix, SERVICE, user_id)))
    assert raw["attributes"] == {}


def test_replacing_roles_and_permissions_keeps_the_attributes(backend, key_prefix):
    user_id = seed(backend, key_prefix, {"dept": "ops", "ratio": 0.1}, "viewer")
    result = patch(
        backend,
        key_prefix,
        user_id,
        roles=["viewer", "admin", "admin"],
        permissions=["admin:read", "viewer:read"],
    )
    assert result is PatchResult.PATCHED
    expected = rebuilt(user_id, {"dept": "ops", "ratio": 0.1}, "admin", "viewer")
    assert stored(backend, key_prefix, user_id) == expected


def test_empty_roles_stay_a_json_array(backend, key_prefix):
    user_id = seed(backend, key_prefix, {"dept": "ops"}, "viewer")
    assert patch(backend, key_prefix, user_id, roles=[], permissions=[]) is PatchResult.PATCHED
    raw = json.loads(backend.get(attributes_key(key_prefix, SERVICE, user_id)))
    assert (raw["roles"], raw["permissions"]) == ([], [])
    # And a later patch of the role-less entry keeps them arrays (cjson would write {}).
    assert patch(backend, key_prefix, user_id, version=6, set_attributes={"x": 1}) is (
        PatchResult.PATCHED
    )
    raw = json.loads(backend.get(attributes_key(key_prefix, SERVICE, user_id)))
    assert (raw["roles"], raw["permissions"], raw["attributes"]) == (
        [],
        [],
        {"dept": "ops", "x": 1},
    )


def test_replacing_every_attribute(backend, key_prefix):
    user_id = seed(backend, key_prefix, {"dept": "ops", "empty": []}, "viewer")
    result = patch(backend, key_prefix, user_id, attributes={"level": 2, "none": {}})
    assert result is PatchResult.PATCHED
    assert stored(backend, key_prefix, user_id) == rebuilt(
        user_id, {"level": 2, "none": {}}, "viewer"
    )


@pytest.mark.parametrize("version", [4, 6, 7])
def test_another_version_is_refused_and_left_alone(backend, key_prefix, version):
    """Stored 4: only the change to 5 applies; 4 -> 4, 4 -> 6 or 7 would mix two states."""
    user_id = seed(backend, key_prefix, {"dept": "ops"}, "viewer")
    before = backend.get(attributes_key(key_prefix, SERVICE, user_id))
    result = patch(backend, key_prefix, user_id, version=version, set_attributes={"dept": "x"})
    assert result is PatchResult.OTHER_VERSION
    assert backend.get(attributes_key(key_prefix, SERVICE, user_id)) == before


def test_a_missing_entry_is_refused_and_not_created(backend, key_prefix):
    user_id = next(_users)
    assert patch(backend, key_prefix, user_id, set_attributes={"a": 1}) is PatchResult.MISSING
    assert backend.get(attributes_key(key_prefix, SERVICE, user_id)) is None


def _entry(user_id: int, **changes: Any) -> str:
    data = value(user_id, 4, {"a": 1}, "viewer").to_dict()
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        "CORRUPT_SCHEMA",
        "CORRUPT_VERSION_STRING",
        "CORRUPT_VERSION_FRACTION",
        "CORRUPT_NO_VERSION",
        "CORRUPT_ROLES",
        "SIGNED",
    ],
)
def test_a_corrupt_or_signed_entry_is_refused_and_left_alone(backend, key_prefix, raw):
    user_id = next(_users)
    planted = {
        "CORRUPT_SCHEMA": lambda: _entry(user_id, schema=2),
        "CORRUPT_VERSION_STRING": lambda: _entry(user_id, version="4"),
        "CORRUPT_VERSION_FRACTION": lambda: _entry(user_id, version=4.5),
        "CORRUPT_NO_VERSION": lambda: _entry(user_id, version=...),
        "CORRUPT_ROLES": lambda: _entry(user_id, roles="viewer"),
        "SIGNED": lambda: encode_value(value(user_id, 4, {"a": 1}), {"k1": b"s" * 32}),
    }.get(raw, lambda: raw)()
    key = attributes_key(key_prefix, SERVICE, user_id)
    backend.set(key, planted, ex=600)
    assert patch(backend, key_prefix, user_id, set_attributes={"a": 2}) is PatchResult.CORRUPT
    assert backend.get(key) == planted.encode()


def test_an_entry_without_ttl_is_corrupt(backend, key_prefix):
    user_id = next(_users)
    key = attributes_key(key_prefix, SERVICE, user_id)
    backend.set(key, value(user_id, 4, {}, "viewer").to_json())
    assert patch(backend, key_prefix, user_id, set_attributes={"a": 2}) is PatchResult.CORRUPT


@pytest.mark.parametrize(
    "attributes", [{"empty": []}, {"nested": {"empty": {}}}, {"big": 2**60}, {"big": 1e300}]
)
def test_what_lua_cannot_write_back_exactly_is_refused(backend, key_prefix, attributes):
    """cjson decodes [] and {} alike, and numbers past 2**53 are not exact in Lua."""
    user_id = seed(backend, key_prefix, attributes, "viewer")
    before = backend.get(attributes_key(key_prefix, SERVICE, user_id))
    assert patch(backend, key_prefix, user_id, set_attributes={"x": 1}) is (PatchResult.UNENCODABLE)
    assert backend.get(attributes_key(key_prefix, SERVICE, user_id)) == before


# -- the property: patching gives what a full rebuild gives -----------------------------------

_names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)


def _json_values(*, empty: bool, floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**53) + 1, 2**53 - 1)
        | floats
        | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
    )
    least = 0 if empty else 1
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, min_size=least, max_size=3)
            | st.dictionaries(_names, inner, min_size=least, max_size=3)
        ),
        max_leaves=8,
    )


#: What a stored value may hold for a patch to apply: no empty list or object (cjson cannot tell
#: them apart) and no integral number past 2**53 (tested above); any float below.
_stored = _json_values(
    empty=False, floats=st.floats(min_value=-(2.0**52), max_value=2.0**52, allow_nan=False)
)
#: What a change may set: anything JSON (it is spliced in as encoded, never decoded by Lua).
_new = _json_values(empty=True, floats=st.floats(allow_nan=False, allow_infinity=False))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.dictionaries(_names, _stored, max_size=5),
    changes=st.dictionaries(_names, st.none() | _new, max_size=4),
)
def test_a_patch_equals_the_full_rebuild_of_the_new_state(backend, key_prefix, before, changes):
    user_id = seed(backend, key_prefix, before, "viewer")
    after = dict(before)
    for k, v in changes.items():
        if v is None:
            after.pop(k, None)
        else:
            after[k] = v
    result = patch(
        backend,
        key_prefix,
        user_id,
        set_attributes={k: v for k, v in changes.items() if v is not None},
        remove_attributes=sorted(k for k, v in changes.items() if v is None),
    )
    assert result is PatchResult.PATCHED
    assert stored(backend, key_prefix, user_id) == rebuilt(user_id, after, "viewer")


def test_a_nested_value_is_written_in_canonical_key_order(backend, key_prefix):
    """A patched-in object is encoded with sorted keys, as the full encoding sorts them."""
    user_id = seed(backend, key_prefix, {"dept": "ops"}, "admin")
    nested = {"zone": "eu", "alpha": 1, "mid": {"y": 2, "b": 3}}
    assert patch(backend, key_prefix, user_id, set_attributes={"office": nested}) is (
        PatchResult.PATCHED
    )
    raw = backend.get(attributes_key(key_prefix, SERVICE, user_id)).decode()
    assert raw == encode_value(rebuilt(user_id, {"dept": "ops", "office": nested}, "admin"))
    assert '"office":{"alpha":1,"mid":{"b":3,"y":2},"zone":"eu"}' in raw


@pytest.mark.parametrize(
    "change",
    [
        {"set_attributes": {"limit": float("nan")}},
        {"attributes": {"limit": float("inf")}},
        {"fetched_at": float("nan")},
    ],
)
def test_a_value_json_cannot_carry_is_refused_before_redis(backend, key_prefix, change):
    # NaN and infinity are not JSON: written, the entry would not decode, so nothing is sent.
    user_id = seed(backend, key_prefix, {"limit": 10}, "admin")
    before = backend.get(attributes_key(key_prefix, SERVICE, user_id))
    arguments = {"version": 5, "ttl": 900, "fetched_at": NOW, **change}
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        patch_attributes(backend, key_prefix, SERVICE, user_id, **arguments)
    assert backend.get(attributes_key(key_prefix, SERVICE, user_id)) == before
