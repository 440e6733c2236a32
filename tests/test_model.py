"""The value model's validators: each bad field is refused with a message naming it exactly."""

from __future__ import annotations

import json
import math

import pytest

from flask_rbac_abac.errors import DecodeError, InvalidKeyPart
from flask_rbac_abac.model import SCHEMA_VERSION, Invalidation, UserAttributes, validate_user_id


def make(**fields: object) -> UserAttributes:
    base: dict[str, object] = {"user_id": 7, "service_name": "billing_api"}
    return UserAttributes(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"roles": "admin"}, "roles must be a list of strings, not a string"),
        ({"permissions": "x"}, "permissions must be a list of strings, not a string"),
        ({"roles": [""]}, "roles must be non-empty strings of at most 128 characters"),
        ({"roles": ["r" * 129]}, "roles must be non-empty strings of at most 128 characters"),
        ({"permissions": [1]}, "permissions must be non-empty strings of at most 128 characters"),
        ({"attributes": []}, "attributes must be a JSON object"),
        ({"attributes": {"a": math.inf}}, "attributes.a: non-finite number"),
        ({"attributes": {"a": {1: 2}}}, "attributes.a: keys must be strings"),
        ({"attributes": {"a": [{1, 2}]}}, "attributes.a: set is not a JSON value"),
        ({"version": -1}, "version must be a non-negative integer"),
        ({"fetched_at": True}, "fetched_at must be a number"),
        ({"fetched_at": "1"}, "fetched_at must be a number"),
    ],
)
def test_a_bad_field_is_refused_by_name(fields: dict[str, object], message: str) -> None:
    with pytest.raises(DecodeError, match=f"^{message}$".replace(".", r"\.")):
        make(**fields)


def test_fields_are_normalised_in_place() -> None:
    value = make(user_id="7", roles=["b", "a", "a", "r" * 128], fetched_at=2)
    assert value.user_id == 7 and value.service_name == "billing_api"
    assert value.roles == ("a", "b", "r" * 128)
    assert type(value.fetched_at) is float and value.fetched_at == 2.0


@pytest.mark.parametrize(
    ("user_id", "message"),
    [
        ("1" * 20, "^invalid user_id: too large$"),
        (2**63, r"^invalid user_id 9223372036854775808: must be between 1 and 2\*\*63-1$"),
        (
            "a b",
            r"^invalid user_id 'a b': expected a positive integer or "
            r"1-128 characters from A-Z a-z 0-9 _ \. @ -$",
        ),
    ],
)
def test_bad_user_ids_are_refused_with_the_reason(user_id: object, message: str) -> None:
    with pytest.raises(InvalidKeyPart, match=message):
        validate_user_id(user_id)


def test_the_largest_user_ids() -> None:
    assert validate_user_id(2**63 - 1) == 2**63 - 1
    assert validate_user_id("1" * 19) == int("1" * 19)


def test_from_dict_defaults_and_compact_json() -> None:
    data = {
        "schema": SCHEMA_VERSION,
        "user_id": 7,
        "service_name": "billing_api",
        "roles": [],
        "permissions": [],
        "attributes": {},
    }
    value = UserAttributes.from_dict(data)
    assert (value.version, value.fetched_at) == (0, 0.0)
    text = value.to_json()
    assert ", " not in text and ": " not in text
    assert json.loads(text) == {**data, "version": 0, "fetched_at": 0.0}
    with pytest.raises(DecodeError, match=r"^attributes value must be a JSON object$"):
        UserAttributes.from_dict([data])


def test_an_invalidation_says_gone_only_for_one_service_and_old_messages_read_unchanged() -> None:
    gone = Invalidation(7, "billing_api", None, gone=True)
    assert Invalidation.from_json(gone.to_json()) == gone
    assert '"gone":true' in gone.to_json()
    plain = Invalidation(7, "billing_api", 3)
    assert "gone" not in plain.to_json()  # what processes of an older release read
    assert Invalidation.from_json(plain.to_json()).gone is False
    # "every service" cannot be gone, and only a JSON true counts
    assert Invalidation.from_json(Invalidation(7, None, None, gone=True).to_json()).gone is False
    raw = plain.to_json().replace("}", ',"gone":"yes"}')
    assert Invalidation.from_json(raw).gone is False


def test_to_json_is_canonical_sorted_keys_at_every_level() -> None:
    attributes = {"z": 1, "a": {"y": 2, "b": 3}}
    value = make(roles=["b", "a"], attributes=attributes, version=3, fetched_at=1.5)
    assert value.to_json() == (
        '{"attributes":{"a":{"b":3,"y":2},"z":1},"fetched_at":1.5,"permissions":[],'
        f'"roles":["a","b"],"schema":{SCHEMA_VERSION},"service_name":"billing_api",'
        '"user_id":7,"version":3}'
    )


def test_from_json_takes_exactly_max_value_bytes_and_not_one_more() -> None:
    from flask_rbac_abac.model import MAX_VALUE_BYTES

    text = make().to_json()
    largest = text + " " * (MAX_VALUE_BYTES - len(text))  # JSON allows trailing blanks
    assert UserAttributes.from_json(largest) == UserAttributes.from_json(text)
    assert UserAttributes.from_json(largest.encode()) == UserAttributes.from_json(text)
    with pytest.raises(DecodeError, match=r"^attributes value too large$"):
        UserAttributes.from_json(largest + " ")
