"""Schemathesis over the IdP's own OpenAPI document, in process: the document and the server agree.

Every operation of ``/api/openapi.json`` is called with cases generated from the document, valid
ones (positive) and invalid ones (negative), with the admin token, a service token, a wrong token
or none, on SQLite and the real Redis (under the test's key prefix). For every response:

- never a 5xx;
- its status code, content type and body are the ones the document states;
- valid data is accepted (never a 400): the document states every rule the server enforces
  (but one no schema can state: a role must be in the service's manifest);
- invalid data is rejected (4xx): the server enforces every rule the document states.

At least :data:`MIN_CASES` cases run per test run, bounded in time by :data:`TIME_BUDGET_S` (a
pytest timeout, not an assertion on speed: under load the run takes ten times as long).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import ADMIN, ADMIN_TOKEN, MANIFEST, Api
from .test_openapi import DOC

#: The least number of generated requests one run sends (the issue asks for 1000).
MIN_CASES = 1000
#: Examples per operation and mode. Operations without inputs exhaust their few cases early.
EXAMPLES = {GenerationMode.POSITIVE: 100, GenerationMode.NEGATIVE: 70}
#: Wall-clock bound for the whole run: about 10 s idle, over 120 s with the suite under load on
#: two cores (``make test-loaded``); a hang still ends here.
TIME_BUDGET_S = 900
#: Bound for one request in process; a slower one means something waited on a timeout.
CASE_DEADLINE = timedelta(seconds=5)
#: Operations in ``idp_app/openapi.json``, each one fuzzed, less the document's own
#: ``GET /api/openapi.json`` that Schemathesis leaves out (``test_openapi.py`` checks that one).
FUZZED_OPERATIONS = 21

#: The seeded service and users (see ``seeded``) that aimed cases point at.
SERVICE = "billing_api"
EXISTING_USERS = [1, 2]

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: What "accepted" and "rejected" mean here: a body over 64 KiB is refused with 413 whatever
#: it holds (documented on every operation with a body), and a valid body may name a user or a
#: service that does not exist (404) or a username taken (409), or come with a token that is
#: not allowed (401, 403).
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "413", "429"]
            },
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "403", "404", "405", "409", "413", "429"]
            },
        }
    }
)
CHECKS = {
    GenerationMode.POSITIVE: [*CONFORMANCE, positive_data_acceptance],
    GenerationMode.NEGATIVE: [*CONFORMANCE, negative_data_rejection],
}


def _known_semantic_rejection(operation_id: str, response: Any) -> bool:
    """A 400 that no schema can state: a role that is well formed but not in the manifest, a
    token audience that is well formed but not a registered service, or a page cursor that is
    well formed but was never handed out.

    The document says so in the descriptions of ``RolesRequest.roles``,
    ``TokenRequest.audience`` and the ``cursor`` parameters.
    """
    if response.status_code != 400:
        return False
    error = response.json()["error"]
    return (
        (operation_id == "setRoles" and error.startswith("unknown role(s) for service"))
        or (operation_id == "issueToken" and error.endswith("is not a registered service"))
        or (
            operation_id in ("listUsers", "listAuditEntries")
            and error == "cursor is not a cursor from a previous page"
        )
    )


@pytest.fixture
def seeded(make_app: Any, sqlite_url: str, real_redis: Any) -> tuple[Any, str]:
    """An IdP with the service ``billing_api`` and two users holding a role in it."""
    app = make_app(sqlite_url)
    api = Api(app.test_client())
    token = api.service()
    alice = api.user("alice", {"department": "sales"})
    bob = api.user("bob")
    assert [alice, bob] == EXISTING_USERS
    api.roles(alice, ["viewer"])
    api.roles(bob, ["accountant"])
    return app, token


def _aim(case: schemathesis.Case, operation_id: str, user_id: int, roles: list[str]) -> None:
    """Point a valid case at a user and a service that exist, so the deep paths run as well.

    Every value set here is valid by the document, so the case stays a positive one.
    """
    if isinstance(case.path_parameters, dict):
        if "user_id" in case.path_parameters:
            case.path_parameters["user_id"] = user_id
        if "service_name" in case.path_parameters:
            case.path_parameters["service_name"] = SERVICE
    if operation_id == "refreshUserCache" and isinstance(case.body, dict):
        case.body.update(user_id=user_id, service_name=SERVICE)
    if operation_id == "warmCache" and isinstance(case.body, dict):
        case.body["service_name"] = SERVICE
    if operation_id == "setRoles" and isinstance(case.body, dict):
        case.body["roles"] = roles


def _fuzz(
    operation: Any, mode: GenerationMode, tokens: list[str | None], sent: Counter[str]
) -> None:
    """Send up to ``EXAMPLES[mode]`` generated requests to ``operation`` and check each answer.

    The bearer token is fixed per strategy (so negative cases break the request, not the
    token); with no token Schemathesis makes up an ``Authorization`` header of its own.
    """
    operation_id = operation.definition.raw["operationId"]
    strategies = {
        token: operation.as_strategy(
            generation_mode=mode,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )
        for token in set(tokens)
    }

    @settings(
        max_examples=EXAMPLES[mode],
        deadline=CASE_DEADLINE,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(tokens), label="token")
        case = data.draw(strategies[token], label="case")
        if mode is GenerationMode.POSITIVE and data.draw(st.booleans(), label="aim"):
            user_id = data.draw(st.sampled_from(EXISTING_USERS), label="user_id")
            roles = data.draw(st.lists(st.sampled_from(sorted(MANIFEST)), max_size=3))
            _aim(case, operation_id, user_id, roles)
        response = case.call()
        checks = CHECKS[mode]
        if _known_semantic_rejection(operation_id, response):
            checks = CONFORMANCE
        case.validate_response(response, checks=checks)
        sent[f"{operation_id} {mode.value}"] += 1
        if response.status_code < 300:
            sent[f"{operation_id} {mode.value} 2xx"] += 1

    run()


@pytest.mark.redis
@pytest.mark.timeout(TIME_BUDGET_S)
def test_every_response_matches_the_document(seeded: tuple[Any, str]) -> None:
    app, service_token = seeded
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app, config=CONFIG)
    # Admin most of the time, so the deep paths run; the others reach 401 and 403.
    tokens = [ADMIN_TOKEN] * 4 + [service_token, None, "svc_wrong"]
    sent: Counter[str] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        raw = operation.definition.raw
        _fuzz(operation, GenerationMode.POSITIVE, tokens, sent)
        if "requestBody" in raw or "parameters" in raw:  # else there is nothing to get wrong
            _fuzz(operation, GenerationMode.NEGATIVE, tokens, sent)

    assert len(operations) == FUZZED_OPERATIONS
    assert sum(n for key, n in sent.items() if not key.endswith("2xx")) >= MIN_CASES, sent
    for operation in operations:  # each operation answered, in both modes where it has inputs
        assert sent[f"{operation.definition.raw['operationId']} positive"] >= 1, sent
    for key in ("refreshUserCache", "registerService", "createUser", "setRoles", "issueToken"):
        assert sent[f"{key} positive"] >= 50, sent
        assert sent[f"{key} negative"] >= 30, sent
    # The aimed cases reached existing users and roles: the paths past validation ran.
    for key in ("refreshUserCache", "setRoles", "updateAttributes", "createUser", "warmCache"):
        assert sent[f"{key} positive 2xx"] >= 5, sent


ODD_IDS = [
    "\u0663",  # Arabic-Indic three
    "\uff13",  # fullwidth three
    "\u09e9",  # Bengali three
    "\U0001d7d1",  # mathematical bold three
    "+3",
    "3 ",
    " 3",
    "0x3",
    "3.0",
    "-3",
    "0",
    "9223372036854775808",  # 2**63: past the database's range
    "9" * 5000,  # past Python's int() digit limit
]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PATCH", "/attributes", {"plan": "pro"}),
        ("PUT", "/roles/billing_api", {"roles": ["viewer"]}),
        ("DELETE", "", None),
        ("GET", "", None),
        ("POST", "/activate", None),
        ("POST", "/deactivate", None),
        ("DELETE", "/roles/billing_api", None),
    ],
)
def test_user_ids_in_paths_are_ascii_digits_only(
    api: Api, method: str, suffix: str, body: Any
) -> None:
    """Only the ASCII spelling of an id reaches the user; any other is a 404, never a 500."""
    api.service()
    for name in ("alice", "bob", "carol"):  # user 3 exists, so "٣" would reach someone
        api.user(name)
    for user_id in ODD_IDS:
        path = f"/api/users/{user_id}{suffix}"
        r = api.client.open(path, method=method, json=body, headers=ADMIN)
        assert r.status_code == 404, (user_id, r.status_code, r.json)
        assert r.json == {"success": False, "error": "not found"}
    r = api.client.open(f"/api/users/3{suffix}", method=method, json=body, headers=ADMIN)
    assert r.status_code == 200, r.json
    assert r.json["id" if method == "GET" else "user_id"] == 3


def test_every_integer_route_uses_the_ascii_converter(app: Any) -> None:
    from werkzeug.routing import IntegerConverter

    from idp_app.converters import AsciiIntegerConverter

    checked = 0
    for rule in app.url_map.iter_rules():
        for converter in rule._converters.values():
            if isinstance(converter, IntegerConverter):
                assert isinstance(converter, AsciiIntegerConverter), rule.rule
                checked += rule.rule.startswith("/api/")
    # users/<id> (GET, DELETE), its roles, attributes, activate, deactivate; a service's token.
    # The admin console's integer routes are checked by the loop too, not counted here.
    assert checked == 6


NAME_RULE = "must be 1-128 printable characters without spaces"
#: (method, path, schema in the document, body, the server's 400 error): the body breaks a rule
#: that the document states and the server enforces.
BOTH_REJECT = [
    ("PATCH", "/api/users/1/attributes", "AttributesPatch", {}, "no attributes given"),
    (
        "PATCH",
        "/api/users/1/attributes",
        "AttributesPatch",
        {"": 1},
        "attribute names must be 1-128 characters",
    ),
    (
        "PATCH",
        "/api/users/1/attributes",
        "AttributesPatch",
        {"a" * 129: 1},
        "attribute names must be 1-128 characters",
    ),
    (
        "POST",
        "/api/users/",
        "UserRequest",
        {"username": "dave", "password": "pw", "attributes": {"": 1}},
        "attribute names must be 1-128 characters",
    ),
    (
        "POST",
        "/api/users/",
        "UserRequest",
        {"username": "dave\n", "password": "pw"},
        "username must be 1-64 characters from A-Z a-z 0-9 _ . @ -",
    ),
    (
        "POST",
        "/api/users/",
        "UserRequest",
        {"username": "dave", "password": ""},
        "password must be a string of 1-1024 characters",
    ),
    (
        "POST",
        "/api/services/",
        "ServiceRequest",
        {"name": "s", "roles": {"": []}},
        "role " + NAME_RULE,
    ),
    (
        "POST",
        "/api/services/",
        "ServiceRequest",
        {"name": "s", "roles": {"a b": []}},
        "role " + NAME_RULE,
    ),
    (
        "POST",
        "/api/services/",
        "ServiceRequest",
        {"name": "s", "roles": {"admin": [""]}},
        "permissions " + NAME_RULE,
    ),
    (
        "POST",
        "/api/services/",
        "ServiceRequest",
        {"name": "s", "roles": {f"r{i}": [] for i in range(257)}},
        "roles must be an object of at most 256 roles",
    ),
    (
        "PUT",
        "/api/users/1/roles/billing_api",
        "RolesRequest",
        {"roles": [""]},
        "roles " + NAME_RULE,
    ),
    (
        "PUT",
        "/api/users/1/roles/billing_api",
        "RolesRequest",
        {"roles": ["viewer\t"]},
        "roles " + NAME_RULE,
    ),
    (
        "POST",
        "/api/refresh-user-cache/",
        "RefreshRequest",
        {"user_id": 1, "service_name": ""},
        "invalid service_name '': expected 1-64 characters from A-Z a-z 0-9 _ . -",
    ),
    (
        "POST",
        "/api/refresh-user-cache/",
        "RefreshRequest",
        {"user_id": 1.5, "service_name": "billing_api"},
        "user_id must be an integer between 1 and 2**63-1",
    ),
    (
        "POST",
        "/api/warm-cache/",
        "WarmRequest",
        {"service_name": "billing_api"},
        "give exactly one of user_ids, active_since, all",
    ),
    (
        "POST",
        "/api/warm-cache/",
        "WarmRequest",
        {"service_name": "billing_api", "all": True, "active_since": "2026-11-26T08:00:00Z"},
        "give exactly one of user_ids, active_since, all (got active_since, all)",
    ),
    (
        "POST",
        "/api/warm-cache/",
        "WarmRequest",
        {"service_name": "billing_api", "all": False},
        "all must be true",
    ),
    (
        "POST",
        "/api/warm-cache/",
        "WarmRequest",
        {"service_name": "billing_api", "user_ids": []},
        "user_ids must be a list of 1 to 5000 user ids",
    ),
    (
        "POST",
        "/api/warm-cache/",
        "WarmRequest",
        {"service_name": "billing_api", "user_ids": [1, 0]},
        "user_ids[1] must be an integer between 1 and 2**63-1",
    ),
]


def _validator(schema_name: str) -> Any:
    doc = json.loads(DOC.read_text())
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    return jsonschema_rs.Draft202012Validator(root)


@pytest.mark.parametrize(("method", "path", "schema_name", "body", "error"), BOTH_REJECT)
def test_the_document_states_each_rule_the_server_enforces(
    api: Api, method: str, path: str, schema_name: str, body: Any, error: str
) -> None:
    assert not _validator(schema_name).is_valid(body)
    api.service()
    api.user("alice")
    r = api.client.open(path, method=method, json=body, headers=ADMIN)
    assert r.status_code == 400, r.json
    assert r.json["success"] is False
    assert r.json["error"] == error


def test_a_whole_number_written_with_a_fraction_is_that_user_id(api: Api) -> None:
    """JSON Schema counts ``1.0`` as the integer 1, so the server does too (below 2**53)."""
    body = {"user_id": 1.0, "service_name": "billing_api"}
    assert _validator("RefreshRequest").is_valid(body)
    api.service()
    api.roles(api.user("alice"), ["viewer"])
    r = api.refresh(1.0)
    assert r.status_code == 200, r.json
    assert r.json["user_id"] == 1
