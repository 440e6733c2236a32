"""What the library and the IdP share: model, JSON encoding, key schema, invalidation messages,
CAS writes (``model``, ``codec``, ``keys``, ``store``)."""

from __future__ import annotations

import json

import fakeredis
import pytest

from flask_rbac_abac.errors import DecodeError, InvalidKeyPart
from flask_rbac_abac.keys import attributes_key, invalidation_channel, lease_key
from flask_rbac_abac.model import (
    SCHEMA_VERSION,
    Invalidation,
    UserAttributes,
    validate_service_name,
    validate_user_id,
)
from flask_rbac_abac.store import store_attributes


def sample(**overrides) -> UserAttributes:
    fields = {
        "user_id": 123,
        "service_name": "billing_api",
        "roles": ["admin", "accountant", "admin"],
        "permissions": ["invoice:read"],
        "attributes": {"department": "finance", "clearance": 3, "tags": ["a", {"b": 1}]},
        "version": 7,
        "fetched_at": 1700000000.5,
    }
    fields.update(overrides)
    return UserAttributes(**fields)


def test_round_trip_and_schema_version() -> None:
    attrs = sample()
    data = json.loads(attrs.to_json())
    assert data["schema"] == SCHEMA_VERSION
    assert data["roles"] == ["accountant", "admin"]
    assert data["attributes"]["tags"] == ["a", {"b": 1}]
    assert UserAttributes.from_json(attrs.to_json()) == attrs


def test_defaults() -> None:
    attrs = UserAttributes(user_id=1, service_name="svc")
    assert attrs.roles == () and attrs.permissions == () and dict(attrs.attributes) == {}
    assert attrs.version == 0 and attrs.fetched_at > 0


def test_immutable_all_the_way_down() -> None:
    attrs = sample()
    with pytest.raises(AttributeError):
        attrs.roles = ("x",)  # type: ignore[misc]
    with pytest.raises(TypeError):
        attrs.attributes["department"] = "sales"  # type: ignore[index]
    with pytest.raises(TypeError):
        attrs.get("tags")[1]["b"] = 2
    source = {"department": "finance"}
    attrs = UserAttributes(user_id=1, service_name="svc", attributes=source)
    source["department"] = "sales"
    assert attrs.get("department") == "finance"


def test_queries() -> None:
    attrs = sample()
    assert attrs.has_role("viewer", "admin") and not attrs.has_role("viewer")
    assert attrs.has_permission("invoice:read")
    assert not attrs.has_permission("invoice:read", "invoice:write")
    assert attrs.get("clearance") == 3 and attrs.get("missing", "d") == "d"


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x80\x04pickle", "not JSON"),
        ("[]", "must be a JSON object"),
        ('{"schema": 99}', "unsupported schema version 99"),
        ('{"schema": 1, "user_id": 1}', "lacks attributes, permissions, roles, service_name"),
        (
            '{"schema":1,"user_id":1,"service_name":"a:b","roles":[],"permissions":[],'
            '"attributes":{}}',
            "invalid service_name",
        ),
        (
            '{"schema":1,"user_id":1,"service_name":"s","roles":"admin","permissions":[],'
            '"attributes":{}}',
            "roles must be a list",
        ),
        (
            '{"schema":1,"user_id":1,"service_name":"s","roles":[1],"permissions":[],'
            '"attributes":{}}',
            "roles must be non-empty strings",
        ),
        (
            '{"schema":1,"user_id":1,"service_name":"s","roles":[],"permissions":[],'
            '"attributes":[]}',
            "attributes must be a JSON object",
        ),
        (
            '{"schema":1,"user_id":1,"service_name":"s","roles":[],"permissions":[],'
            '"attributes":{},"version":-1}',
            "version must be a non-negative integer",
        ),
        ("x" * 300_000, "too large"),
    ],
)
def test_decode_rejects(raw, message) -> None:
    with pytest.raises(DecodeError, match=message):
        UserAttributes.from_json(raw)


@pytest.mark.parametrize("name", ["", "a:b", "a*", "a b", "x" * 65, None, 5, "é"])
def test_service_name_validation(name) -> None:
    with pytest.raises(InvalidKeyPart, match="invalid service_name"):
        validate_service_name(name)


@pytest.mark.parametrize("user_id", [0, -1, True, 2**63, "a:b", "a*b", "", "x" * 129, 1.5, None])
def test_user_id_validation(user_id) -> None:
    with pytest.raises(InvalidKeyPart, match="user_id"):
        validate_user_id(user_id)


def test_user_id_normalisation() -> None:
    assert validate_user_id("123") == 123
    assert validate_user_id("alice@example.com") == "alice@example.com"


def test_key_schema() -> None:
    assert attributes_key("rbac_abac", "billing_api", 123) == "rbac_abac:attrs:billing_api:123"
    assert lease_key("p", "s", 1) == "p:lease:s:1"
    assert invalidation_channel("p") == "p:invalidate"


def test_invalidation_round_trip_and_rejects() -> None:
    message = Invalidation(user_id=5, service_name=None, version=3)
    assert Invalidation.from_json(message.to_json()) == message
    for raw in ("nope", '{"schema":1,"user_id":"a:b"}', '{"schema":1,"user_id":1,"version":"x"}'):
        with pytest.raises(DecodeError):
            Invalidation.from_json(raw)


def test_store_never_replaces_a_newer_version() -> None:
    client = fakeredis.FakeRedis()
    key = attributes_key("p", "billing_api", 123)
    assert store_attributes(client, sample(version=7), 100, "p") is True
    assert store_attributes(client, sample(version=6, roles=["old"]), 100, "p") is False
    assert UserAttributes.from_json(client.get(key)).version == 7
    assert store_attributes(client, sample(version=8), 50, "p") is True
    assert UserAttributes.from_json(client.get(key)).version == 8
    assert 0 < client.ttl(key) <= 50
    client.set(key, "garbage")
    assert store_attributes(client, sample(version=1), 100, "p") is True


def test_an_invalidation_is_compact_json_of_the_current_schema() -> None:
    from flask_rbac_abac.model import SCHEMA_VERSION, Invalidation

    message = Invalidation(7, "billing_api", 3).to_json()
    assert message == (
        f'{{"schema":{SCHEMA_VERSION},"user_id":7,"service_name":"billing_api","version":3}}'
    )
    assert Invalidation.from_json(message) == Invalidation(7, "billing_api", 3)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", r"^invalidation is not JSON: "),
        ("[1]", r"^invalidation has no supported schema version$"),
        ('{"schema": -1, "user_id": 7}', r"^invalidation has no supported schema version$"),
        ("VERSIONED:true", r"^invalidation version must be an integer$"),
        ("VERSIONED:1.5", r"^invalidation version must be an integer$"),
        ("USER:true", r"^invalid user_id True: expected"),
        ('SERVICE:"bad name!"', r"^invalid service_name 'bad name!': expected"),
    ],
)
def test_a_bad_invalidation_says_what_is_wrong(raw: str | bytes, message: str) -> None:
    from flask_rbac_abac.model import SCHEMA_VERSION, Invalidation

    if isinstance(raw, str) and ":" in raw and raw.split(":", 1)[0].isupper():
        field, value = raw.split(":", 1)
        body = {"schema": SCHEMA_VERSION, "user_id": 7, "service_name": "s", "version": 1}
        body[{"VERSIONED": "version", "USER": "user_id", "SERVICE": "service_name"}[field]] = (
            json.loads(value)
        )
        raw = json.dumps(body)
    with pytest.raises(DecodeError, match=message):
        Invalidation.from_json(raw)


@pytest.mark.parametrize("prefix", [5, None, b"rbac", "", "a b", "x" * 65])
def test_a_bad_key_prefix_is_refused_with_the_alphabet(prefix: object) -> None:
    from flask_rbac_abac.keys import validate_prefix

    with pytest.raises(InvalidKeyPart, match=r"expected 1-64 characters from A-Z a-z 0-9 _ \. -"):
        validate_prefix(prefix)


def test_the_largest_user_id_a_token_may_name() -> None:
    from flask_rbac_abac.errors import InvalidIdentity
    from flask_rbac_abac.identity import MAX_SUBJECT_ID, subject_user_id

    assert subject_user_id(str(MAX_SUBJECT_ID)) == 2**63 - 1
    with pytest.raises(InvalidIdentity, match="the token's sub is not a user id"):
        subject_user_id(str(MAX_SUBJECT_ID + 1))
