"""``flask --app idp_app ...`` commands: schema, services, users, roles, demo data, the outbox."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from . import operations, outbox, schema, signing_keys, validation, warming
from .domain_errors import AlreadyExists, OperationError
from .errors import ApiError
from .extensions import db
from .models import Service

DEMO_SERVICE = "billing_api"
DEMO_MANIFEST = {
    "admin": ["invoice:read", "invoice:write", "report:read"],
    "accountant": ["invoice:read", "invoice:write"],
    "viewer": ["invoice:read"],
}
DEMO_USERS: list[tuple[str, str, list[str], dict[str, Any]]] = [
    ("alice", "alice-pass", ["admin"], {"department": "finance", "clearance": 5}),
    ("bob", "bob-pass", ["accountant"], {"department": "finance", "clearance": 2}),
    ("carol", "carol-pass", ["viewer"], {"department": "sales", "clearance": 3}),
    ("dave", "dave-pass", [], {"department": "support", "clearance": 1}),
]


def _value(text: str) -> Any:
    """``5`` -> 5, ``true`` -> True, ``"x"`` -> "x"; anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not {what}=...")
        out.append((key, value))
    return out


def _fail(exc: ApiError | OperationError) -> click.ClickException:
    db.session.rollback()
    return click.ClickException(str(exc))


def _sync_note(ok: bool) -> None:
    if not ok:
        click.echo("warning: Redis did not take the change; cached values may be stale", err=True)


def _upgrade_schema() -> schema.Upgrade:
    try:
        return schema.upgrade()
    except schema.SchemaError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("init-db")
@with_appcontext
def init_db() -> None:
    """Create or upgrade the schema to the latest revision, and the first signing key if needed.

    Safe to run again, and on a database made before migrations (it is adopted, data kept).
    """
    done = _upgrade_schema()
    if done.adopted:
        click.echo(
            f"Adopted a database made before migrations: stamped at {schema.LEGACY_REVISION}."
        )
    if done.before == done.after:
        click.echo(f"The schema is at the latest revision ({done.after}).")
    else:
        click.echo(f"Upgraded the schema from {done.before or 'nothing'} to {done.after}.")
    key = signing_keys.ensure_key()
    db.session.commit()
    click.echo("Initialized the database.")
    if key is not None:
        click.echo(f"Generated signing key {key.kid} ({key.algorithm}).")


@click.command("rotate-signing-key")
@with_appcontext
def rotate_signing_key() -> None:
    """Sign with a new key from now on; the old one stays published until its tokens expire."""
    try:
        key, retired = signing_keys.rotate()
    except (ApiError, OperationError) as exc:
        raise _fail(exc) from None
    db.session.commit()
    click.echo(f"New signing key {key.kid} ({key.algorithm}).")
    for old in retired:
        until = old.expires_at.isoformat() if old.expires_at else "now"
        click.echo(f"Retired {old.kid}: published until {until}.")


@click.command("create-service")
@with_appcontext
@click.argument("name")
@click.option("--role", "roles", multiple=True, help="ROLE=perm1,perm2 (repeatable)")
@click.option(
    "--attributes",
    "visible",
    default=None,
    help="attr1,attr2: the only attributes the service sees (default: all; '' for none)",
)
def create_service(name: str, roles: tuple[str, ...], visible: str | None) -> None:
    """Register service NAME and print its token (shown only this once)."""
    try:
        name = validation.service_name(name)
        manifest = {
            role: [p for p in perms.split(",") if p] for role, perms in _pairs(roles, "ROLE")
        }
        manifest = validation.manifest(manifest)
        attributes = validation.visible_attributes(
            None if visible is None else [a for a in visible.split(",") if a]
        )
        if db.session.execute(db.select(Service).where(Service.name == name)).first():
            raise AlreadyExists("service", name)
        result = operations.register_service(name, manifest, attributes)
    except (ApiError, OperationError) as exc:
        raise _fail(exc) from None
    db.session.commit()
    click.echo(result.token)


@click.command("create-user")
@with_appcontext
@click.argument("username")
@click.option("--password", required=True)
@click.option("--attr", "attrs", multiple=True, help="KEY=VALUE (JSON values, repeatable)")
def create_user(username: str, password: str, attrs: tuple[str, ...]) -> None:
    """Create a user and print its id."""
    try:
        attributes = validation.attributes({k: _value(v) for k, v in _pairs(attrs, "KEY")})
        user = operations.create_user(
            validation.username(username), validation.password(password), attributes
        )
    except (ApiError, OperationError) as exc:
        raise _fail(exc) from None
    db.session.commit()
    click.echo(f"created user {user.username} with id {user.id}")


@click.command("assign-role")
@with_appcontext
@click.argument("username")
@click.argument("service")
@click.argument("roles", nargs=-1, required=True)
def assign_role(username: str, service: str, roles: tuple[str, ...]) -> None:
    """Add ROLES to USERNAME in SERVICE (keeping the roles it has)."""
    try:
        user = operations.user_by_name(username)
        if user is None:
            raise ApiError(404, f"user {username!r} not found")
        svc = operations.get_service(validation.service_name(service))
        current = operations.roles_of(user.id, svc)
        attrs, sync = operations.set_roles(user.id, svc.name, [*current, *roles])
    except (ApiError, OperationError) as exc:
        raise _fail(exc) from None
    db.session.commit()
    _sync_note(outbox.deliver(sync))
    click.echo(f"{username} in {service}: {', '.join(attrs.roles)} (version {attrs.version})")


@click.command("seed-demo")
@with_appcontext
@click.option("--token-out", type=click.Path(dir_okay=False), help="write the token JSON here")
def seed_demo(token_out: str | None) -> None:
    """Create billing_api and the demo users; safe to run again (issues a fresh token)."""
    _upgrade_schema()
    result = operations.register_service(DEMO_SERVICE, DEMO_MANIFEST)
    token = result.token or operations.issue_service_token(result.service.name)[1]
    syncs = [result.sync]
    for username, password, roles, attributes in DEMO_USERS:
        user = operations.user_by_name(username)
        if user is None:
            user = operations.create_user(username, password, attributes)
        elif not user.active or user.attributes != attributes:
            user.active = True
            db.session.flush()
            _, _, sync = operations.update_attributes(user.id, attributes)
            syncs.append(sync)
        if operations.roles_of(user.id, result.service) != sorted(roles):
            syncs.append(operations.set_roles(user.id, DEMO_SERVICE, roles)[1])
    db.session.commit()
    _sync_note(all([outbox.deliver(sync) for sync in syncs]))
    if token_out:
        fd = os.open(token_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({DEMO_SERVICE: token}, fh)
    click.echo(f"{DEMO_SERVICE} token: {token}")


@click.command("sync-outbox")
@with_appcontext
@click.option("--loop", is_flag=True, help="keep delivering (as the IdP's thread does)")
def sync_outbox(loop: bool) -> None:
    """Deliver the changes Redis has not yet taken (for cron); exit 1 while some remain."""
    if loop:
        stop = threading.Event()
        try:
            outbox.run(current_app._get_current_object(), stop)  # type: ignore[attr-defined]
        except KeyboardInterrupt:
            stop.set()
        return
    delivered = 0
    while True:
        result = outbox.deliver_pending()
        delivered += result.delivered
        if result.failed or result.delivered == 0:
            break
    left = outbox.backlog()
    click.echo(f"delivered {delivered}; {left.rows} pending")
    if left.rows:
        raise SystemExit(1)


def _selection(all_users: bool, active_since: str | None, users: str | None) -> warming.Selection:
    given = [
        flag
        for flag, value in (
            ("--all", all_users),
            ("--active-since", active_since),
            ("--users", users),
        )
        if value
    ]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --all, --active-since, --users")
    if all_users:
        return warming.Selection()
    try:
        if active_since is not None:
            return warming.Selection(
                active_since=validation.date_time(active_since, "--active-since")
            )
        ids = [part.strip() for part in (users or "").split(",")]
        if not all(part.isascii() and part.isdigit() for part in ids):
            raise ApiError(400, "--users must be user ids separated by commas, like 1,2,3")
        return warming.Selection(user_ids=tuple(validation.user_id(int(i)) for i in ids))
    except ApiError as exc:
        raise click.BadParameter(exc.message) from None


def _on_a_terminal() -> bool:
    return sys.stdout.isatty()


@click.command("warm-cache")
@with_appcontext
@click.option("--service", "service_name", required=True, help="the service to warm")
@click.option("--all", "all_users", is_flag=True, help="every user with a role in the service")
@click.option("--active-since", help="users seen since this ISO 8601 time, e.g. 2026-11-26T08:00Z")
@click.option("--users", help="user ids: 1,2,3")
def warm_cache(
    service_name: str, all_users: bool, active_since: str | None, users: str | None
) -> None:
    """Write the service's cached values for the selected users to Redis, in batches."""
    selection = _selection(all_users, active_since, users)
    try:
        service = operations.get_service(validation.service_name(service_name))
        if _on_a_terminal():
            total = warming.count(service, selection)
            with click.progressbar(length=total, label=f"warming {service.name}") as bar:
                result = warming.warm(service.name, selection, progress=bar.update)
        else:
            result = warming.warm(service.name, selection)
    except (ApiError, OperationError) as exc:
        raise _fail(exc) from None
    click.echo(
        f"warmed {result.warmed} users for {result.service_name} in {result.seconds:.2f} s "
        f"({len(result.unknown)} unknown)"
    )


def _user_id(user: str) -> int:
    """A user named by id (ASCII digits) or by username."""
    if user.isascii() and user.isdigit():
        return validation.user_id(int(user))
    found = operations.user_by_name(user)
    if found is None:
        raise ApiError(404, f"user {user!r} not found")
    return found.id


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """``rows`` as a plain-text table for people; ``--json`` is for scripts."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _emit(as_json: bool, data: Any, text: str) -> None:
    click.echo(json.dumps(data, sort_keys=True) if as_json else text)


_json_option = click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts)")


@click.command("list-users")
@with_appcontext
@click.option("--q", "q", help="case-insensitive substring of the username")
@click.option("--active/--inactive", default=None, help="only active (or inactive) users")
@click.option("--service", help="only users holding a role in this service")
@click.option("--limit", type=click.IntRange(1, validation.MAX_PAGE), default=50)
@click.option("--cursor", help="the next_cursor of the previous page")
@_json_option
def list_users(
    q: str | None,
    active: bool | None,
    service: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List users in id order, a page at a time."""
    try:
        users, next_cursor = operations.list_users(
            q,
            active,
            None if service is None else validation.service_name(service),
            limit,
            cursor,
        )
    except (ApiError, OperationError) as exc:
        raise _fail(exc) from None
    rows = [operations.user_summary(user) for user in users]
    text = _table(rows, ["id", "username", "active", "attributes", "updated_at"])
    if next_cursor:
        text += f"\nnext page: --cursor {next_cursor}"
    _emit(as_json, {"users": rows, "next_cursor": next_cursor}, text)


@click.command("show-user")
@with_appcontext
@click.argument("user")
@_json_option
def show_user(user: str, as_json: bool) -> None:
    """Show USER (an id or a username): attributes, and roles and version per service."""
    try:
        detail = operations.user_detail(_user_id(user))
    except (ApiError, OperationError) as exc:
        raise _fail(exc) from None
    services = [{"service": name, **value} for name, value in detail["services"].items()]
    text = _table([detail], ["id", "username", "active", "created_at", "updated_at"])
    text += "\n\n" + _table([{"attributes": detail["attributes"]}], ["attributes"])
    text += "\n\n" + _table(services, ["service", "roles", "version"])
    _emit(as_json, detail, text)


def _change(user: str, change: Callable[[int], operations.Sync], done: str) -> None:
    try:
        user_id = _user_id(user)
        sync = change(user_id)
    except (ApiError, OperationError) as exc:
        raise _fail(exc) from None
    db.session.commit()
    _sync_note(outbox.deliver(sync))
    click.echo(f"user {user_id} {done}")


@click.command("deactivate")
@with_appcontext
@click.argument("user")
def deactivate(user: str) -> None:
    """Deactivate USER (an id or a username); their cached values are deleted."""
    _change(user, operations.deactivate_user, "deactivated")


@click.command("activate")
@with_appcontext
@click.argument("user")
def activate(user: str) -> None:
    """Activate USER (an id or a username) again."""
    _change(user, operations.activate_user, "activated")


@click.command("remove-role")
@with_appcontext
@click.argument("user")
@click.argument("service")
def remove_role(user: str, service: str) -> None:
    """Remove every role of USER in SERVICE."""
    try:
        name = validation.service_name(service)
    except ApiError as exc:
        raise _fail(exc) from None
    _change(user, lambda user_id: operations.remove_roles(user_id, name), f"has no role in {name}")


@click.command("set-attribute")
@with_appcontext
@click.argument("user")
@click.argument("pairs", nargs=-1, required=True)
@_json_option
def set_attribute(user: str, pairs: tuple[str, ...], as_json: bool) -> None:
    """Set attributes of USER: KEY=VALUE (JSON values; KEY=null removes one)."""
    try:
        changes = validation.attributes({k: _value(v) for k, v in _pairs(pairs, "KEY")})
        updated, versions, sync = operations.update_attributes(_user_id(user), changes)
    except (ApiError, OperationError) as exc:
        raise _fail(exc) from None
    db.session.commit()
    _sync_note(outbox.deliver(sync))
    attributes = dict(updated.attributes or {})
    _emit(
        as_json,
        {"user_id": updated.id, "attributes": attributes, "versions": versions},
        f"user {updated.id}: {json.dumps(attributes, sort_keys=True)}",
    )


@click.command("rotate-token")
@with_appcontext
@click.argument("service")
@click.option("--revoke-old", is_flag=True, help="revoke every other token of the service")
@_json_option
def rotate_token(service: str, revoke_old: bool, as_json: bool) -> None:
    """Issue a new token for SERVICE and print it (shown only this once).

    The old tokens keep working until revoked: deploy the new one, then run again with
    ``--revoke-old`` or revoke the old one by id (``DELETE /api/services/<name>/tokens/<id>``).
    """
    try:
        name = validation.service_name(service)
        old = [t["id"] for t in operations.service_detail(name)["tokens"]]
        token_id, token = operations.issue_service_token(name)
        revoked = old if revoke_old else []
        for old_id in revoked:
            operations.revoke_service_token(name, old_id)
    except (ApiError, OperationError) as exc:
        raise _fail(exc) from None
    db.session.commit()
    _emit(
        as_json,
        {"service_name": name, "token_id": token_id, "token": token, "revoked": revoked},
        token,
    )
    if revoked and not as_json:
        click.echo(f"revoked token(s) {', '.join(map(str, revoked))}", err=True)


def register(app: Flask) -> None:
    commands = (
        init_db,
        rotate_signing_key,
        create_service,
        create_user,
        assign_role,
        seed_demo,
        sync_outbox,
        warm_cache,
        list_users,
        show_user,
        deactivate,
        activate,
        remove_role,
        set_attribute,
        rotate_token,
    )
    for command in commands:
        app.cli.add_command(command)
