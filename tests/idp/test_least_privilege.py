"""Least privilege at the IdP: a service sees only users it gave a role, and only its attributes.

Issue 7, section 4, on SQLite and on PostgreSQL with real Redis.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import UserAttributes

from .conftest import ADMIN, MANIFEST, Api

NOT_FOUND = "user {} not found or inactive"


def cached(real_redis: Any, prefix: str, uid: int, service: str = "billing_api") -> Any:
    raw = real_redis.get(attributes_key(prefix, service, uid))
    return None if raw is None else json.loads(raw)


def plant(real_redis: Any, prefix: str, uid: int, service: str = "billing_api") -> None:
    """A value left in Redis for a user the service must no longer know."""
    attrs = UserAttributes(uid, service, attributes={"salary": 99}, version=0)
    real_redis.set(attributes_key(prefix, service, uid), attrs.to_json(), ex=3600)


def register(api: Api, body: dict[str, Any]) -> Any:
    return api.client.post("/api/services/", json=body, headers=ADMIN)


# -- a user without a role in a service is unknown to it ------------------------------------


def test_refresh_of_a_user_without_roles_is_404_and_deletes_the_value(
    api, real_redis, key_prefix, subscriber
):
    token = api.service()
    uid = api.user("dave", {"department": "support"})
    plant(real_redis, key_prefix, uid)
    r = api.refresh(uid, token=token)
    assert r.status_code == 404
    assert r.json == {"success": False, "error": NOT_FOUND.format(uid), "code": "user_not_found"}
    assert cached(real_redis, key_prefix, uid) is None
    assert {"user_id": uid, "service_name": "billing_api", "version": None}.items() <= (
        subscriber.messages()[0].items()
    )
    # Remembered for the coalescing window like any unknown user, and answered the same way.
    assert api.refresh(uid, token=token).status_code == 404


def test_a_role_in_another_service_is_not_a_role_here(api, real_redis, key_prefix):
    billing = api.service()
    api.service("shipping_api", {"clerk": ["parcel:read"]})
    uid = api.user("erin", {"department": "logistics"})
    api.roles(uid, ["clerk"], "shipping_api")
    r = api.refresh(uid, token=billing)
    assert r.status_code == 404
    assert r.json["code"] == "user_not_found"
    assert cached(real_redis, key_prefix, uid) is None
    assert api.refresh(uid, "shipping_api").status_code == 200


def test_removing_the_last_role_deletes_the_value(api, real_redis, key_prefix):
    token = api.service()
    uid = api.user("bob", {"department": "finance"})
    api.roles(uid, ["viewer"])
    assert cached(real_redis, key_prefix, uid)["roles"] == ["viewer"]
    body = api.roles(uid, [])
    assert body["roles"] == [] and body["cached"] is True
    assert cached(real_redis, key_prefix, uid) is None
    assert api.refresh(uid, token=token).status_code == 404


def test_attribute_change_evicts_services_without_a_role(api, real_redis, key_prefix):
    api.service()
    api.service("shipping_api", {"clerk": ["parcel:read"]})
    uid = api.user("carol", {"department": "sales"})
    api.roles(uid, ["clerk"], "shipping_api")
    plant(real_redis, key_prefix, uid, "billing_api")
    r = api.client.patch(f"/api/users/{uid}/attributes", json={"clearance": 4}, headers=ADMIN)
    assert r.status_code == 200
    assert r.json["cached"] is True
    assert cached(real_redis, key_prefix, uid, "billing_api") is None
    shipping = cached(real_redis, key_prefix, uid, "shipping_api")
    assert shipping["attributes"] == {"department": "sales", "clearance": 4}
    assert shipping["version"] == r.json["versions"]["shipping_api"]


def test_manifest_change_removing_the_only_role_deletes_the_value(api, real_redis, key_prefix):
    api.service()
    uid = api.user("bob")
    api.roles(uid, ["viewer"])
    r = register(api, {"name": "billing_api", "roles": {"admin": ["invoice:read"]}})
    assert r.status_code == 200 and r.json["cached"] is True
    assert cached(real_redis, key_prefix, uid) is None
    assert api.refresh(uid).status_code == 404


def test_coalesced_refresh_never_serves_a_role_less_leftover(api, real_redis, key_prefix):
    token = api.service()
    uid = api.user("dave")
    api.roles(uid, ["viewer"])
    assert api.refresh(uid, token=token).status_code == 200  # claims the coalescing window
    plant(real_redis, key_prefix, uid)  # a role-less value, as the old IdP wrote
    r = api.refresh(uid, token=token)
    assert r.status_code == 200
    assert r.json["coalesced"] is False
    assert r.json["attributes"]["roles"] == ["viewer"]
    assert cached(real_redis, key_prefix, uid)["roles"] == ["viewer"]


# -- a service sees only the attributes it lists --------------------------------------------


def test_listed_attributes_are_the_only_ones_a_service_sees(api, real_redis, key_prefix):
    r = register(api, {"name": "billing_api", "roles": MANIFEST, "attributes": ["department"]})
    assert r.status_code == 201
    assert r.json["attributes"] == ["department"]
    uid = api.user("alice", {"department": "finance", "clearance": 5, "salary": 1})
    api.roles(uid, ["viewer"])
    assert cached(real_redis, key_prefix, uid)["attributes"] == {"department": "finance"}
    r = api.refresh(uid, token=r.json["token"])
    assert r.json["attributes"]["attributes"] == {"department": "finance"}


def test_without_a_list_a_service_sees_every_attribute(api, real_redis, key_prefix):
    r = register(api, {"name": "billing_api", "roles": MANIFEST})
    assert r.json["attributes"] is None
    uid = api.user("alice", {"department": "finance", "clearance": 5})
    api.roles(uid, ["viewer"])
    assert api.refresh(uid).json["attributes"]["attributes"] == {
        "department": "finance",
        "clearance": 5,
    }


def test_an_empty_list_shows_roles_only(api):
    register(api, {"name": "billing_api", "roles": MANIFEST, "attributes": []})
    uid = api.user("alice", {"department": "finance"})
    api.roles(uid, ["viewer"])
    body = api.refresh(uid).json["attributes"]
    assert body["attributes"] == {}
    assert body["roles"] == ["viewer"]


def test_a_role_named_attributes_is_just_a_role(api):
    roles = {"attributes": ["attr:read"], "viewer": ["invoice:read"]}
    r = register(api, {"name": "billing_api", "roles": roles, "attributes": ["team"]})
    assert r.status_code == 201
    assert r.json["roles"] == roles
    assert r.json["attributes"] == ["team"]
    uid = api.user("alice", {"team": "a", "other": "b"})
    api.roles(uid, ["attributes"])
    body = api.refresh(uid).json["attributes"]
    assert body["roles"] == ["attributes"]
    assert body["permissions"] == ["attr:read"]
    assert body["attributes"] == {"team": "a"}


def test_changing_the_list_rewrites_cached_values(api, real_redis, key_prefix, subscriber):
    api.service()
    uid = api.user("alice", {"department": "finance", "clearance": 5})
    api.roles(uid, ["viewer"])
    before = cached(real_redis, key_prefix, uid)
    assert before["attributes"] == {"department": "finance", "clearance": 5}
    subscriber.messages(0.3)  # drain the role change's message
    r = register(api, {"name": "billing_api", "roles": MANIFEST, "attributes": ["clearance"]})
    assert r.status_code == 200
    assert r.json["cached"] is True
    after = cached(real_redis, key_prefix, uid)
    assert after["attributes"] == {"clearance": 5}
    assert after["version"] == before["version"] + 1
    assert [(m["user_id"], m["service_name"], m["version"]) for m in subscriber.messages()] == [
        (uid, "billing_api", after["version"])
    ]


def test_re_registering_without_the_field_keeps_the_list_and_null_means_all(
    api, real_redis, key_prefix
):
    register(api, {"name": "billing_api", "roles": MANIFEST, "attributes": ["department"]})
    uid = api.user("alice", {"department": "finance", "clearance": 5})
    api.roles(uid, ["viewer"])
    version = cached(real_redis, key_prefix, uid)["version"]
    kept = register(api, {"name": "billing_api", "roles": MANIFEST})
    assert kept.status_code == 200
    assert kept.json["attributes"] == ["department"]
    assert cached(real_redis, key_prefix, uid)["version"] == version  # nothing changed
    everything = register(api, {"name": "billing_api", "roles": MANIFEST, "attributes": None})
    assert everything.json["attributes"] is None
    assert cached(real_redis, key_prefix, uid)["attributes"] == {
        "department": "finance",
        "clearance": 5,
    }


@pytest.mark.parametrize(
    ("attributes", "error"),
    [
        ("department", "attributes must be null or a list of at most 256 attribute names"),
        ({"department": True}, "attributes must be null or a list of at most 256 attribute names"),
        (["a"] * 257, "attributes must be null or a list of at most 256 attribute names"),
        (["department", ""], "attributes[1] must be an attribute name of 1-128 characters"),
        ([7], "attributes[0] must be an attribute name of 1-128 characters"),
        ([None], "attributes[0] must be an attribute name of 1-128 characters"),
        (["x" * 129], "attributes[0] must be an attribute name of 1-128 characters"),
    ],
)
def test_bad_attribute_lists_are_400_naming_the_problem(api, attributes, error):
    r = register(api, {"name": "billing_api", "roles": MANIFEST, "attributes": attributes})
    assert r.status_code == 400
    assert r.json == {"success": False, "error": error}


def test_cli_create_service_with_attributes(app, api):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "create-service",
            "shipping_api",
            "--role",
            "clerk=parcel:read",
            "--attributes",
            "a,b",
        ]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    uid = api.user("erin", {"a": 1, "b": 2, "c": 3})
    api.roles(uid, ["clerk"], "shipping_api")
    assert api.refresh(uid, "shipping_api", token=token).json["attributes"]["attributes"] == {
        "a": 1,
        "b": 2,
    }
    none = runner.invoke(args=["create-service", "audit_api", "--attributes", ""])
    assert none.exit_code == 0, none.output
    bad = runner.invoke(args=["create-service", "other_api", "--attributes", "x" * 129])
    assert bad.exit_code == 1
    assert "attributes[0] must be an attribute name of 1-128 characters" in bad.output


def test_refresh_400_for_a_non_integer_id_carries_a_code(api):
    api.service()
    r = api.refresh("alice")
    assert r.status_code == 400
    assert r.json == {
        "success": False,
        "error": "user_id must be an integer between 1 and 2**63-1",
        "code": "invalid_user_id",
    }


def test_removing_the_last_role_announces_the_value_gone(api, subscriber):
    api.service()
    uid = api.user("dave")
    api.roles(uid, ["viewer"])
    assert subscriber.messages() == [
        {"schema": 1, "user_id": uid, "service_name": "billing_api", "version": 1}
    ]
    api.roles(uid, [])  # the services' processes may deny her without asking the IdP
    assert subscriber.messages() == [
        {"schema": 1, "user_id": uid, "service_name": "billing_api", "version": None, "gone": True}
    ]
    api.roles(uid, ["viewer"])  # granted again: a plain message, her new value is in Redis
    assert [m.get("gone") for m in subscriber.messages()] == [None]
