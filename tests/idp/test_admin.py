"""The admin API: listing and showing users and services, activation, role removal, service
token rotation, and the audit trail of every change; on SQLite and PostgreSQL, real Redis.
"""

from __future__ import annotations

from typing import Any

import pytest

from idp_app import db
from idp_app.models import AuditEntry, ServiceToken, User

from .conftest import ADMIN, Api, bearer


def _ids(body: Any) -> list[int]:
    return [user["id"] for user in body["users"]]


def _all_pages(client: Any, query: str, limit: int, between: Any = None) -> list[int]:
    seen: list[int] = []
    url = f"/api/users/?limit={limit}{query}"
    while True:
        r = client.get(url, headers=ADMIN)
        assert r.status_code == 200, r.json
        seen += _ids(r.json)
        if between is not None:
            between()
        if r.json["next_cursor"] is None:
            return seen
        url = f"/api/users/?limit={limit}{query}&cursor={r.json['next_cursor']}"


def test_list_users_filters_and_pages(api: Api, client: Any) -> None:
    api.service()
    alice = api.user("alice", {"department": "sales"})
    bob = api.user("bob")
    alicia = api.user("Alicia_2")
    api.roles(bob, ["viewer"])
    assert client.delete(f"/api/users/{alicia}", headers=ADMIN).status_code == 200

    r = client.get("/api/users/", headers=ADMIN)
    assert r.status_code == 200
    assert _ids(r.json) == [alice, bob, alicia]
    assert r.json["next_cursor"] is None
    first = r.json["users"][0]
    assert first["username"] == "alice"
    assert first["attributes"] == {"department": "sales"}
    assert first["active"] is True
    assert "password_hash" not in first
    assert _ids(client.get("/api/users/?q=ALI", headers=ADMIN).json) == [alice, alicia]
    assert _ids(client.get("/api/users/?q=_", headers=ADMIN).json) == [alicia]
    assert _ids(client.get("/api/users/?q=%25", headers=ADMIN).json) == []
    assert _ids(client.get("/api/users/?active=false", headers=ADMIN).json) == [alicia]
    assert _ids(client.get("/api/users/?active=true", headers=ADMIN).json) == [alice, bob]
    assert _ids(client.get("/api/users/?service=billing_api", headers=ADMIN).json) == [bob]
    assert _all_pages(client, "", 1) == [alice, bob, alicia]


def test_paging_is_stable_while_users_are_created(api: Api, client: Any) -> None:
    first = [api.user(f"user{i}") for i in range(5)]
    added: list[int] = []
    seen = _all_pages(client, "", 2, between=lambda: added.append(api.user(f"late{len(added)}")))
    assert seen[:5] == first
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))
    assert set(seen) <= set(first) | set(added)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("limit=0", "limit must be an integer from 1 to 200"),
        ("limit=201", "limit must be an integer from 1 to 200"),
        ("limit=x", "limit must be an integer from 1 to 200"),
        ("active=yes", "active must be true or false"),
        ("cursor=abc", "cursor is not a cursor from a previous page"),
        ("cursor=" + "a" * 65, "cursor is not a cursor from a previous page"),
        ("q=%C3%A9", "q must be at most 64 printable ASCII characters"),
        ("service=bad%20name", None),
        ("limit=1&limit=2", "limit must be given at most once"),
        ("colour=red", "unknown query parameter 'colour'"),
    ],
)
def test_list_users_bad_parameters_are_400_naming_them(
    client: Any, query: str, error: str | None
) -> None:
    r = client.get(f"/api/users/?{query}", headers=ADMIN)
    assert r.status_code == 400
    assert r.json["success"] is False
    if error is None:
        assert "service" in r.json["error"]
    else:
        assert r.json["error"] == error


def test_list_users_of_an_unknown_service_is_404(client: Any) -> None:
    r = client.get("/api/users/?service=nope", headers=ADMIN)
    assert r.status_code == 404
    assert r.json["code"] == "service_not_registered"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/users/"),
        ("get", "/api/users/1"),
        ("post", "/api/users/1/activate"),
        ("post", "/api/users/1/deactivate"),
        ("delete", "/api/users/1/roles/billing_api"),
        ("get", "/api/services/"),
        ("get", "/api/services/billing_api"),
        ("post", "/api/services/billing_api/tokens"),
        ("delete", "/api/services/billing_api/tokens/1"),
        ("get", "/api/audit/"),
    ],
)
def test_admin_endpoints_need_the_admin_token(
    api: Api, client: Any, method: str, path: str
) -> None:
    token = api.service()
    api.user("alice")
    assert getattr(client, method)(path).status_code == 401
    r = getattr(client, method)(path, headers=bearer(token))
    assert r.status_code == 403
    assert r.json["error"] == "this endpoint needs the admin token"


def test_user_detail(api: Api, client: Any) -> None:
    api.service()
    api.service("other_api")
    alice = api.user("alice", {"clearance": 3})
    api.roles(alice, ["admin", "viewer"])
    r = client.get(f"/api/users/{alice}", headers=ADMIN)
    assert r.status_code == 200
    body = r.json
    assert body["username"] == "alice"
    assert body["active"] is True
    assert body["attributes"] == {"clearance": 3}
    assert body["services"] == {"billing_api": {"roles": ["admin", "viewer"], "version": 1}}
    assert body["created_at"].endswith("+00:00")
    assert body["updated_at"] >= body["created_at"]
    assert "password_hash" not in body

    r = client.get("/api/users/999", headers=ADMIN)
    assert r.status_code == 404
    assert r.json["code"] == "user_not_found"


def test_deactivate_and_activate(api: Api, client: Any, app: Any) -> None:
    api.service()
    alice = api.user("alice")
    api.roles(alice, ["viewer"])
    assert api.refresh(alice).status_code == 200
    r = client.post(f"/api/users/{alice}/deactivate", headers=ADMIN)
    assert r.status_code == 200
    assert r.json == {"success": True, "user_id": alice, "active": False, "cached": True}
    assert api.refresh(alice).status_code == 404
    assert client.post(f"/api/users/{alice}/deactivate", headers=ADMIN).status_code == 404

    r = client.post(f"/api/users/{alice}/activate", headers=ADMIN)
    assert r.status_code == 200
    assert r.json == {"success": True, "user_id": alice, "active": True, "cached": True}
    refreshed = api.refresh(alice)
    assert refreshed.status_code == 200
    assert refreshed.json["attributes"]["roles"] == ["viewer"]
    assert client.get(f"/api/users/{alice}", headers=ADMIN).json["active"] is True
    assert client.post("/api/users/999/activate", headers=ADMIN).status_code == 404
    with app.app_context():
        assert db.session.get(User, alice).updated_at is not None


def test_remove_roles(api: Api, client: Any) -> None:
    api.service()
    alice = api.user("alice")
    api.roles(alice, ["viewer"])
    r = client.delete(f"/api/users/{alice}/roles/billing_api", headers=ADMIN)
    assert r.status_code == 200
    assert r.json == {
        "success": True,
        "user_id": alice,
        "service_name": "billing_api",
        "roles": [],
        "cached": True,
    }
    assert api.refresh(alice).status_code == 404
    detail = client.get(f"/api/users/{alice}", headers=ADMIN).json
    assert detail["services"] == {"billing_api": {"roles": [], "version": 2}}
    r = client.delete(f"/api/users/{alice}/roles/nope", headers=ADMIN)
    assert r.status_code == 404
    assert r.json["code"] == "service_not_registered"
    r = client.delete("/api/users/999/roles/billing_api", headers=ADMIN)
    assert r.status_code == 404
    assert r.json["code"] == "user_not_found"


def test_services_list_and_detail(api: Api, client: Any) -> None:
    api.service()
    r = client.post(
        "/api/services/",
        json={"name": "other_api", "roles": {"r": ["p"]}, "attributes": ["team"]},
        headers=ADMIN,
    )
    assert r.status_code == 201
    r = client.get("/api/services/", headers=ADMIN)
    assert r.status_code == 200
    assert [s["name"] for s in r.json["services"]] == ["billing_api", "other_api"]
    assert r.json["services"][1]["attributes"] == ["team"]
    r = client.get("/api/services/other_api", headers=ADMIN)
    assert r.status_code == 200
    assert r.json["roles"] == {"r": ["p"]}
    assert [set(t) for t in r.json["tokens"]] == [{"id", "created_at"}]
    r = client.get("/api/services/nope", headers=ADMIN)
    assert r.status_code == 404
    assert r.json["code"] == "service_not_registered"


def test_token_rotation_without_downtime(api: Api, client: Any) -> None:
    old = api.service()
    alice = api.user("alice")
    api.roles(alice, ["viewer"])
    (old_id,) = [
        t["id"] for t in client.get("/api/services/billing_api", headers=ADMIN).json["tokens"]
    ]

    r = client.post("/api/services/billing_api/tokens", headers=ADMIN)
    assert r.status_code == 201
    new, new_id = r.json["token"], r.json["token_id"]
    assert new != old
    assert r.json["service_name"] == "billing_api"
    assert api.refresh(alice, token=old).status_code == 200
    assert api.refresh(alice, token=new).status_code == 200
    tokens = client.get("/api/services/billing_api", headers=ADMIN).json["tokens"]
    assert [t["id"] for t in tokens] == [old_id, new_id]

    r = client.delete(f"/api/services/billing_api/tokens/{old_id}", headers=ADMIN)
    assert r.status_code == 200
    assert r.json == {"success": True, "service_name": "billing_api", "token_id": old_id}
    assert api.refresh(alice, token=old).status_code == 401
    assert api.refresh(alice, token=new).status_code == 200

    r = client.delete(f"/api/services/billing_api/tokens/{old_id}", headers=ADMIN)
    assert r.status_code == 404
    assert r.json == {
        "success": False,
        "error": f"service 'billing_api' has no token {old_id}",
        "code": "token_not_found",
    }
    assert (
        client.delete("/api/services/billing_api/tokens/99999999999", headers=ADMIN).status_code
        == 404
    )
    assert client.post("/api/services/nope/tokens", headers=ADMIN).status_code == 404


def test_a_token_of_another_service_is_not_revoked_through_this_one(
    api: Api, client: Any, app: Any
) -> None:
    api.service()
    other = api.service("other_api")
    with app.app_context():
        other_id = (
            db.session.execute(db.select(ServiceToken.id).order_by(ServiceToken.id.desc()))
            .scalars()
            .first()
        )
    r = client.delete(f"/api/services/billing_api/tokens/{other_id}", headers=ADMIN)
    assert r.status_code == 404
    refreshed = Api(client).refresh(1, "other_api", token=other)  # the token still works
    assert refreshed.status_code == 404
    assert refreshed.json["code"] == "user_not_found"


def _audit(client: Any, query: str = "") -> list[dict[str, Any]]:
    r = client.get(f"/api/audit/?limit=200{query}", headers=ADMIN)
    assert r.status_code == 200, r.json
    return list(r.json["entries"])


def test_every_change_is_audited_without_a_secret(api: Api, client: Any, app: Any) -> None:
    token = api.service()
    alice = api.user("alice", {"team": "a"})
    api.roles(alice, ["viewer"])
    client.patch(f"/api/users/{alice}/attributes", json={"team": "b"}, headers=ADMIN)
    client.post(f"/api/users/{alice}/deactivate", headers=ADMIN)
    client.post(f"/api/users/{alice}/activate", headers=ADMIN)
    client.delete(f"/api/users/{alice}/roles/billing_api", headers=ADMIN)
    client.post(
        "/api/services/", json={"name": "billing_api", "roles": {"viewer": ["x"]}}, headers=ADMIN
    )
    new = client.post("/api/services/billing_api/tokens", headers=ADMIN).json
    client.delete(f"/api/services/billing_api/tokens/{new['token_id']}", headers=ADMIN)

    entries = list(reversed(_audit(client)))
    assert [(e["action"], e["before"], e["after"]) for e in entries] == [
        (
            "register_service",
            None,
            {"roles": {k: sorted(v) for k, v in api_manifest().items()}, "attributes": None},
        ),
        ("create_user", None, {"username": "alice", "active": True, "attributes": {"team": "a"}}),
        ("set_roles", {"roles": []}, {"roles": ["viewer"]}),
        ("update_attributes", {"attributes": {"team": "a"}}, {"attributes": {"team": "b"}}),
        ("deactivate_user", {"active": True}, {"active": False}),
        ("activate_user", {"active": False}, {"active": True}),
        ("remove_roles", {"roles": ["viewer"]}, {"roles": []}),
        (
            "register_service",
            {"roles": api_manifest(), "attributes": None},
            {"roles": {"viewer": ["x"]}, "attributes": None},
        ),
        ("issue_service_token", None, {"token_id": new["token_id"]}),
        ("revoke_service_token", {"token_id": new["token_id"]}, None),
    ]
    assert {e["actor"] for e in entries} == {"admin-token"}
    assert [e["target"] for e in entries][:3] == [
        "service:billing_api",
        f"user:{alice}",
        f"user:{alice}/service:billing_api",
    ]
    assert all(e["created_at"].endswith("+00:00") for e in entries)
    assert [e["action"] for e in _audit(client, f"&user_id={alice}")][-1] == "create_user"
    assert len(_audit(client, f"&user_id={alice}")) == 6

    with app.app_context():
        rows = db.session.execute(db.select(AuditEntry)).scalars().all()
        hashes = [u.password_hash for u in db.session.execute(db.select(User)).scalars()]
        text = repr([(r.actor, r.action, r.target, r.before, r.after) for r in rows])
    for secret in [token, new["token"], "alice-pass", *hashes]:
        assert secret not in text
        assert secret[-16:] not in text


def api_manifest() -> dict[str, list[str]]:
    from .conftest import MANIFEST

    return MANIFEST


def test_audit_pages_newest_first_and_bad_parameters(api: Api, client: Any) -> None:
    for i in range(5):
        api.user(f"user{i}")
    r = client.get("/api/audit/?limit=2", headers=ADMIN)
    first = [e["id"] for e in r.json["entries"]]
    api.user("late")  # a new entry never shifts the pages already handed out
    seen = first
    cursor = r.json["next_cursor"]
    while cursor is not None:
        r = client.get(f"/api/audit/?limit=2&cursor={cursor}", headers=ADMIN)
        seen += [e["id"] for e in r.json["entries"]]
        cursor = r.json["next_cursor"]
    assert seen == [5, 4, 3, 2, 1]
    for query, error in [
        ("user_id=x", "user_id must be an integer between 1 and 2**63-1"),
        ("limit=0", "limit must be an integer from 1 to 200"),
        ("cursor=%21", "cursor is not a cursor from a previous page"),
    ]:
        r = client.get(f"/api/audit/?{query}", headers=ADMIN)
        assert r.status_code == 400
        assert r.json["error"] == error
    assert client.get("/api/audit/?user_id=9999999999999", headers=ADMIN).json["entries"] == []
