"""The admin CLI commands through Flask's CLI runner: tables for people, ``--json`` for scripts,
every change audited as ``cli``; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import ADMIN, Api


@pytest.fixture
def runner(app: Any) -> Any:
    return app.test_cli_runner()


def _run(runner: Any, *args: str) -> Any:
    return runner.invoke(args=list(args))


def _last_audit(client: Any) -> dict[str, Any]:
    return dict(client.get("/api/audit/?limit=1", headers=ADMIN).json["entries"][0])


def test_list_users_table_json_and_pages(runner: Any, api: Api) -> None:
    api.service()
    alice = api.user("alice", {"team": "a"})
    bob = api.user("bob")
    api.roles(bob, ["viewer"])

    result = _run(runner, "list-users")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["id", "username", "active", "attributes", "updated_at"]
    assert lines[1].split()[:4] == [str(alice), "alice", "true", '{"team":']
    assert lines[2].split()[:3] == [str(bob), "bob", "true"]

    page = json.loads(_run(runner, "list-users", "--json", "--limit", "1").output)
    assert [u["id"] for u in page["users"]] == [alice]
    rest = json.loads(_run(runner, "list-users", "--json", "--cursor", page["next_cursor"]).output)
    assert [u["id"] for u in rest["users"]] == [bob]
    assert rest["next_cursor"] is None
    only = json.loads(_run(runner, "list-users", "--json", "--service", "billing_api").output)
    assert [u["username"] for u in only["users"]] == ["bob"]
    assert (
        json.loads(_run(runner, "list-users", "--json", "--q", "LI").output)["users"][0]["id"]
        == alice
    )

    bad = _run(runner, "list-users", "--cursor", "nonsense")
    assert bad.exit_code == 1
    assert "Error: cursor is not a cursor from a previous page" in bad.output


def test_show_user_by_id_or_name(runner: Any, api: Api) -> None:
    api.service()
    alice = api.user("alice", {"team": "a"})
    api.roles(alice, ["viewer"])
    detail = json.loads(_run(runner, "show-user", "alice", "--json").output)
    assert detail["id"] == alice
    assert detail["services"] == {"billing_api": {"roles": ["viewer"], "version": 1}}
    assert detail["attributes"] == {"team": "a"}
    table = _run(runner, "show-user", str(alice))
    assert table.exit_code == 0
    assert "billing_api" in table.output
    assert '["viewer"]' in table.output
    missing = _run(runner, "show-user", "nobody")
    assert missing.exit_code == 1
    assert "Error: user 'nobody' not found" in missing.output
    assert "Error: user 99 not found or inactive" in _run(runner, "show-user", "99").output


def test_deactivate_activate_remove_role_set_attribute(runner: Any, api: Api) -> None:
    api.service()
    alice = api.user("alice")
    api.roles(alice, ["viewer"])

    result = _run(runner, "deactivate", "alice")
    assert (result.exit_code, result.output) == (0, f"user {alice} deactivated\n")
    assert api.refresh(alice).status_code == 404
    assert _last_audit(api.client)["actor"] == "cli"
    assert _run(runner, "deactivate", "alice").exit_code == 1

    result = _run(runner, "activate", str(alice))
    assert (result.exit_code, result.output) == (0, f"user {alice} activated\n")
    assert api.refresh(alice).status_code == 200

    result = _run(runner, "set-attribute", "alice", "team=ops", "level=3", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["attributes"] == {"level": 3, "team": "ops"}
    assert api.refresh(alice).json["attributes"]["attributes"] == {"level": 3, "team": "ops"}
    entry = _last_audit(api.client)
    assert (entry["action"], entry["actor"], entry["after"]) == (
        "update_attributes",
        "cli",
        {"attributes": {"level": 3, "team": "ops"}},
    )
    assert _run(runner, "set-attribute", "alice", "oops").exit_code == 2

    result = _run(runner, "remove-role", "alice", "billing_api")
    assert (result.exit_code, result.output) == (0, f"user {alice} has no role in billing_api\n")
    assert api.refresh(alice).status_code == 404
    bad = _run(runner, "remove-role", "alice", "nope")
    assert bad.exit_code == 1
    assert "Error: service 'nope' is not registered" in bad.output


def test_rotate_token(runner: Any, api: Api) -> None:
    old = api.service()
    alice = api.user("alice")
    api.roles(alice, ["viewer"])

    result = _run(runner, "rotate-token", "billing_api")
    assert result.exit_code == 0, result.output
    new = result.output.strip()
    assert new.startswith("svc_")
    assert api.refresh(alice, token=old).status_code == 200
    assert api.refresh(alice, token=new).status_code == 200

    result = _run(runner, "rotate-token", "billing_api", "--revoke-old", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert len(body["revoked"]) == 2
    assert api.refresh(alice, token=old).status_code == 401
    assert api.refresh(alice, token=new).status_code == 401
    assert api.refresh(alice, token=body["token"]).status_code == 200
    entries = api.client.get("/api/audit/", headers=ADMIN).json["entries"]
    text = json.dumps(entries)
    for token in (old, new, body["token"]):
        assert token not in text

    missing = _run(runner, "rotate-token", "nope")
    assert missing.exit_code == 1
    assert "Error: service 'nope' is not registered" in missing.output
