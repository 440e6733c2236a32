"""A bad entry in Redis never sticks: the IdP overwrites it, counts it and logs it (no contents).

On the real Redis; the rule itself is tested on fakeredis, Redis and a cluster in
``tests/test_store.py``.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_rbac_abac import ConfigurationError
from flask_rbac_abac.codec import decode_value
from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import UserAttributes

from .conftest import ADMIN, Api

ADMIN_ENTRY = {
    "schema": 1,
    "service_name": "billing_api",
    "roles": ["admin"],
    "permissions": ["invoice:read", "invoice:write", "report:read"],
    "attributes": {},
    "fetched_at": 1.0,
}


def plant(real_redis: Any, prefix: str, uid: int, raw: str | bytes, ttl: int | None) -> str:
    key = attributes_key(prefix, "billing_api", uid)
    real_redis.set(key, raw, ex=ttl)
    return key


def value(real_redis: Any, key: str) -> UserAttributes:
    return UserAttributes.from_json(real_redis.get(key))


def repaired(api: Api) -> int:
    return int(api.client.get("/healthz").json["redis"]["repaired_entries"])


def test_forged_admin_ahead_without_ttl_is_overwritten_by_the_revocation(
    api, real_redis, key_prefix, caplog
):
    api.service()
    uid = api.user("mallory")
    api.roles(uid, ["viewer"])
    forged = json.dumps({**ADMIN_ENTRY, "user_id": uid, "version": 10**15})
    key = plant(real_redis, key_prefix, uid, forged, ttl=None)

    with caplog.at_level(logging.WARNING, logger="idp_app.cache"):
        body = api.roles(uid, ["viewer"])
    assert body["cached"] is True
    now = value(real_redis, key)
    assert (now.roles, now.version) == (("viewer",), 2)
    assert 0 < real_redis.ttl(key) <= 86400
    assert repaired(api) == 1
    [record] = [r for r in caplog.records if r.name == "idp_app.cache"]
    assert record.getMessage() == (
        f"overwrote a corrupt cached value for billing_api/{uid} "
        "(undecodable, unsigned, no TTL or ahead of the database)"
    )
    assert "admin" not in record.getMessage()


def test_forged_admin_ahead_with_a_ttl_is_overwritten_by_the_revocation(
    api, real_redis, key_prefix
):
    api.service()
    uid = api.user("mallory")
    forged = json.dumps({**ADMIN_ENTRY, "user_id": uid, "version": 10**15})
    key = plant(real_redis, key_prefix, uid, forged, ttl=86400)
    assert api.roles(uid, ["viewer"])["cached"] is True
    assert value(real_redis, key).roles == ("viewer",)
    assert repaired(api) == 1


def test_junk_with_a_huge_version_is_overwritten(api, real_redis, key_prefix):
    api.service()
    uid = api.user("alice")
    key = plant(real_redis, key_prefix, uid, '{"version": 1e18, "junk": true}', ttl=3600)
    assert api.roles(uid, ["viewer"])["cached"] is True
    assert value(real_redis, key).version == 1
    assert repaired(api) == 1


def test_undecodable_bytes_are_overwritten_by_a_change(api, real_redis, key_prefix):
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    key = plant(real_redis, key_prefix, uid, b"\x80\x81 not json", ttl=3600)
    r = api.client.patch(f"/api/users/{uid}/attributes", json={"team": "x"}, headers=ADMIN)
    assert (r.status_code, r.json["cached"]) == (200, True)
    assert value(real_redis, key).attributes == {"team": "x"}
    assert repaired(api) == 1


def test_revoking_every_role_deletes_a_forged_entry(api, real_redis, key_prefix):
    api.service()
    uid = api.user("mallory")
    api.roles(uid, ["viewer"])
    forged = json.dumps({**ADMIN_ENTRY, "user_id": uid, "version": 10**15})
    key = plant(real_redis, key_prefix, uid, forged, ttl=None)
    assert api.roles(uid, [])["cached"] is True
    assert real_redis.get(key) is None  # no role: the service may not know the user at all


def test_a_refresh_overwrites_an_entry_without_ttl(api, real_redis, key_prefix):
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    forged = json.dumps({**ADMIN_ENTRY, "user_id": uid, "version": 10**15})
    key = plant(real_redis, key_prefix, uid, forged, ttl=None)
    r = api.refresh(uid)
    assert (r.status_code, r.json["cached"], r.json["version"]) == (200, True, 1)
    assert value(real_redis, key).roles == ("viewer",)
    assert repaired(api) == 1


def test_a_valid_entry_is_not_counted_as_corrupt(api, real_redis, key_prefix):
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    api.roles(uid, ["admin"])
    assert api.refresh(uid).json["cached"] is True
    assert repaired(api) == 0


junk = st.binary(max_size=48) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["version", "roles", "schema", "x"]), inner, max_size=4)
    ),
    max_leaves=10,
).map(json.dumps)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=junk, ttl=st.none() | st.integers(min_value=1, max_value=86400))
def test_any_junk_is_overwritten_by_a_revocation(make_app, tmp_path, real_redis, raw, ttl):
    app = make_app(f"sqlite:///{tmp_path / uuid.uuid4().hex}.sqlite3")  # a database per example
    api = Api(app.test_client())
    api.service()
    uid = api.user("alice")
    real_redis.delete(attributes_key(app.config["RBAC_ABAC_KEY_PREFIX"], "billing_api", uid))
    api.roles(uid, ["admin"])  # (a previous example's value would be ahead of this database)
    key = plant(real_redis, app.config["RBAC_ABAC_KEY_PREFIX"], uid, raw, ttl=ttl)
    assert api.roles(uid, ["viewer"])["cached"] is True
    now = value(real_redis, key)
    assert (now.roles, now.version) == (("viewer",), 2)
    assert repaired(api) == 1


SIGNING = {"RBAC_ABAC_VALUE_KEYS": "idp1:" + "k" * 40}


def test_with_value_keys_every_value_is_signed_and_an_unsigned_one_replaced(
    make_app, database_url, real_redis, key_prefix
):
    app = make_app(database_url, **SIGNING)
    keys = app.config["RBAC_ABAC_VALUE_KEYS"]
    api = Api(app.test_client())
    api.service()
    uid = api.user("mallory")
    api.roles(uid, ["viewer"])
    key = attributes_key(key_prefix, "billing_api", uid)
    assert decode_value(real_redis.get(key), keys).roles == ("viewer",)
    # A valid-looking, newer, unsigned value with a TTL: only the signature tells it apart.
    forged = json.dumps({**ADMIN_ENTRY, "user_id": uid, "version": 2})
    real_redis.set(key, forged, ex=3600)
    r = api.refresh(uid)
    assert (r.status_code, r.json["cached"], r.json["attributes"]["roles"]) == (
        200,
        True,
        ["viewer"],
    )
    assert decode_value(real_redis.get(key), keys).roles == ("viewer",)
    assert repaired(api) == 1


def test_idp_refuses_a_bad_value_key(make_app, sqlite_url):
    with pytest.raises(ConfigurationError, match="RBAC_ABAC_VALUE_KEYS: invalid key id 'a b'"):
        make_app(sqlite_url, RBAC_ABAC_VALUE_KEYS="a b:" + "k" * 40)
