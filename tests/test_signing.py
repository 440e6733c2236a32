"""Signed values: with ``RBAC_ABAC_VALUE_KEYS`` a value planted in Redis without the IdP's
HMAC-SHA256 signature is a miss for the service and is overwritten by the IdP."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from flask_rbac_abac import RBACABAC, ConfigurationError, RedisAttributeClient, UserAttributes
from flask_rbac_abac.codec import decode_value, encode_value, parse_value_keys
from flask_rbac_abac.errors import DecodeError, InvalidKeyPart
from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.store import replace_if_unchanged, store_attributes

from .conftest import IDP, SERVICE

KEYS = {"k2": b"s" * 32, "k1": b"t" * 32}  # k2 signs, both verify (a rotation)


def value(**fields: object) -> UserAttributes:
    fields.setdefault("roles", ("viewer",))
    fields.setdefault("version", 3)
    return UserAttributes(7, SERVICE, fetched_at=1.5, **fields)  # type: ignore[arg-type]


def test_signed_round_trip_and_rotation() -> None:
    raw = encode_value(value(), KEYS)
    assert json.loads(raw)["sig"]["kid"] == "k2"
    assert decode_value(raw, KEYS) == value()
    assert decode_value(raw, {"k2": KEYS["k2"]}) == value()
    assert decode_value(raw) == value()  # a reader without keys ignores the signature
    assert encode_value(value()) == value().to_json()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (value(roles=("admin",)).to_json(), "value is not signed"),
        (encode_value(value(), {"other": b"o" * 32}), "value is signed with an unknown key id"),
        (encode_value(value(), {"k2": b"x" * 32}), "value has a bad signature"),
    ],
)
def test_unsigned_unknown_or_bad_signature_is_refused(raw: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_value(raw, KEYS)


@given(
    field=st.sampled_from(["roles", "permissions", "version", "user_id", "attributes"]),
    new=st.one_of(st.integers(min_value=1, max_value=10**9), st.lists(st.just("admin"))),
)
def test_any_changed_field_breaks_the_signature(field: str, new: object) -> None:
    data = json.loads(encode_value(value(), KEYS))
    if field == "attributes":
        new = {"clearance": new}
    if data[field] == new:
        return
    data[field] = new
    with pytest.raises(DecodeError):
        decode_value(json.dumps(data), KEYS)


def test_parse_value_keys() -> None:
    assert parse_value_keys(None) == {}
    assert parse_value_keys("") == {}
    assert parse_value_keys("a:" + "x" * 32 + ", b:" + "y:" * 16) == {
        "a": b"x" * 32,
        "b": b"y:" * 16,
    }
    assert list(parse_value_keys({"z": "q" * 32, "a": b"w" * 32})) == ["z", "a"]
    for bad, message in [
        ("a:short", "the secret of key 'a' must have at least 32 bytes"),
        ("a b:" + "x" * 32, "invalid key id 'a b'"),
        (5, "must be 'kid:secret,...' or a mapping"),
    ]:
        with pytest.raises(InvalidKeyPart, match=message):
            parse_value_keys(bad)


def test_library_config_names_the_key() -> None:
    app = Flask(__name__)
    app.config.update(SERVICE_NAME=SERVICE, RBAC_ABAC_VALUE_KEYS="k:short")
    with pytest.raises(ConfigurationError, match="RBAC_ABAC_VALUE_KEYS: the secret of key 'k'"):
        RBACABAC(app)


def test_replace_if_unchanged(backend, key_prefix) -> None:
    key = attributes_key(key_prefix, SERVICE, 7)
    backend.set(key, b"planted", ex=60)
    assert replace_if_unchanged(backend, value(), 60, key_prefix, b"other", KEYS) is False
    assert backend.get(key) == b"planted"
    assert replace_if_unchanged(backend, value(), 60, key_prefix, b"planted", KEYS) is True
    assert decode_value(backend.get(key), KEYS) == value()


def test_a_service_with_keys_treats_a_planted_value_as_a_miss(backend, key_prefix, idp) -> None:
    planted = UserAttributes(7, SERVICE, roles=("admin",), version=10**6)
    store_attributes(backend, planted, 3600, key_prefix)  # valid, newer, but unsigned
    idp.add(7, roles=["viewer"], version=3)
    client = RedisAttributeClient(
        service_name=SERVICE,
        identity_provider_url=IDP,
        key_prefix=key_prefix,
        invalidation=False,
        redis=backend,
        value_keys=KEYS,
    )
    try:
        found = client.get_user_attributes(7)
        assert found is not None and found.roles == ("viewer",)
        assert client.stats()["decode_errors"] == 1
        assert len(idp.requests) == 1
        # Its own writes are signed, so it reads them back as hits.
        assert client.set_user_attributes(value(version=10**7)) is True
        client.local.clear()
        assert client.get_user_attributes(7) == value(version=10**7)
        assert len(idp.requests) == 1
    finally:
        client.close()
