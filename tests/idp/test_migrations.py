"""The schema comes from Alembic's migrations: they agree with the models, revision 0001 is the
schema ``create_all()`` made before them, ``init-db`` adopts such a database without losing a
row, and ``flask db ...`` works as Flask-Migrate users expect. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text

import idp_app
from idp_app import db, schema
from idp_app.extensions import MIGRATIONS_DIRECTORY
from tests.conftest import REDIS_URL

from . import legacy_models
from .conftest import ADMIN_TOKEN, Api, postgres_database

ROOT = Path(__file__).resolve().parents[2]

#: Every table of the latest revision, and what is left after ``db downgrade base``.
TABLES = {
    "alembic_version",
    "users",
    "services",
    "service_tokens",
    "role_assignments",
    "user_service_versions",
    "sync_outbox",
    "audit_entries",
    "signing_keys",
    "console_admins",
}
#: What revision 0002 adds, as :func:`summary` names it going back to revision 0001's schema.
REVISION_0002 = {
    ("remove_table", "sync_outbox"),
    ("remove_index", "ix_sync_outbox_user_id"),
    ("remove_table", "signing_keys"),
    ("remove_column", "services.attributes"),
    ("remove_column", "users.last_seen_at"),
    ("remove_index", "ix_users_last_seen_at"),
}
#: What revision 0003 adds (the admin API's audit table and ``users.updated_at``).
REVISION_0003 = {
    ("remove_table", "audit_entries"),
    ("remove_index", "ix_audit_entries_user_id"),
    ("remove_column", "users.updated_at"),
}
#: What revision 0003c adds (the admin console's sign-in accounts).
REVISION_0003C = {("remove_table", "console_admins")}
#: What the revisions after 0001 add, together (0003p's column is on 0002's sync_outbox table).
AFTER_0001 = REVISION_0002 | REVISION_0003 | REVISION_0003C
#: The latest revision.
HEAD = "0003p"
ADOPTED = "Adopted a database made before migrations: stamped at 0001."


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A database with nothing in it, of its own (not the session's migrated one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def empty_app(make_app: Any, empty_url: str, real_redis: Any) -> Any:
    """An app on an empty database; the IdP signs with its own keys (``init-db`` makes one)."""
    return make_app(empty_url, migrated=False, RBAC_ABAC_JWT_SECRET=None)


def cli(app: Any, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=list(args))


def differences(app: Any, metadata: MetaData | None = None) -> list[Any]:
    """What Alembic's autogenerate would write to turn the database into ``metadata``."""
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata if metadata is not None else db.metadata))


def summary(diffs: list[Any]) -> set[tuple[str, str]]:
    """``("remove_column", "users.last_seen_at")`` for each of autogenerate's differences."""
    out = set()
    for diff in diffs:
        if diff[0] in ("add_column", "remove_column"):
            out.add((diff[0], f"{diff[2]}.{diff[3].name}"))
        else:
            out.add((diff[0], diff[1].name))
    return out


def tables(app: Any) -> set[str]:
    with app.app_context():
        return set(inspect(db.engine).get_table_names())


def columns(app: Any, table: str) -> set[str]:
    with app.app_context():
        return {column["name"] for column in inspect(db.engine).get_columns(table)}


def revision(app: Any) -> str | None:
    with app.app_context():
        return schema.current()


def create_legacy_database(app: Any) -> int:
    """What ``init-db`` made before migrations, with a user holding a role; the user's id."""
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    with app.app_context(), db.engine.begin() as connection:
        legacy_models.metadata.create_all(connection)
        connection.execute(
            text(
                "INSERT INTO users (id, username, password_hash, active, attributes, created_at)"
                " VALUES (7, 'olga', 'pbkdf2:sha256:1000$x$y', :active, :attributes, :now)"
            ),
            {"active": True, "attributes": '{"clearance": 3}', "now": now},
        )
        connection.execute(
            text(
                "INSERT INTO services (id, name, manifest, created_at)"
                " VALUES (1, 'billing_api', :manifest, :now)"
            ),
            {"manifest": '{"viewer": ["invoice:read"]}', "now": now},
        )
        connection.execute(
            text("INSERT INTO role_assignments (user_id, service_id, role) VALUES (7, 1, 'viewer')")
        )
        connection.execute(
            text(
                "INSERT INTO user_service_versions (user_id, service_id, version) VALUES (7, 1, 4)"
            )
        )
    return 7


def test_the_models_and_the_migrations_agree(empty_app):
    assert cli(empty_app, "db", "upgrade").exit_code == 0
    assert revision(empty_app) == HEAD
    assert tables(empty_app) == TABLES
    assert differences(empty_app) == []
    # The comparison does see a difference when there is one: the pre-migration models.
    assert summary(differences(empty_app, legacy_models.metadata)) == AFTER_0001


def test_revision_0001_is_the_schema_create_all_made_before_migrations(empty_app):
    assert cli(empty_app, "db", "upgrade", "0001").exit_code == 0
    assert differences(empty_app, legacy_models.metadata) == []
    added = {(op.replace("remove", "add"), name) for op, name in AFTER_0001}
    assert summary(differences(empty_app)) == added


def test_init_db_adopts_a_database_made_before_migrations_and_keeps_its_rows(empty_app, key_prefix):
    uid = create_legacy_database(empty_app)
    assert schema.LEGACY_TABLES == {
        table.name: frozenset(table.columns.keys())
        for table in legacy_models.metadata.sorted_tables
    }

    result = cli(empty_app, "init-db")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:3] == [
        ADOPTED,
        f"Upgraded the schema from 0001 to {HEAD}.",
        "Initialized the database.",
    ]
    assert lines[3].startswith("Generated signing key ")
    assert revision(empty_app) == HEAD
    assert tables(empty_app) == TABLES
    assert {"last_seen_at"} <= columns(empty_app, "users")
    assert {"attributes"} <= columns(empty_app, "services")
    assert differences(empty_app) == []
    with empty_app.app_context():
        row = db.session.execute(
            text("SELECT username, last_seen_at FROM users WHERE id = :id"), {"id": uid}
        ).one()
        assert tuple(row) == ("olga", None)
        assert db.session.execute(text("SELECT attributes FROM services")).scalar_one() is None
    # The ORM reads the adopted rows: the refresh answers from them.
    r = Api(empty_app.test_client()).refresh(uid)
    assert r.status_code == 200, r.json
    value = r.json["attributes"]
    assert (value["roles"], value["attributes"], value["version"]) == (
        ["viewer"],
        {"clearance": 3},
        4,
    )


def test_init_db_adopts_a_database_an_interim_create_all_and_the_release_notes_changed(
    empty_app,
):
    """Tables from a later ``create_all()``, a column added by hand without its index."""
    create_legacy_database(empty_app)
    with empty_app.app_context(), db.engine.begin() as connection:
        db.metadata.tables["sync_outbox"].create(connection)
        db.metadata.tables["signing_keys"].create(connection)
        connection.execute(text("ALTER TABLE users ADD COLUMN last_seen_at FLOAT"))

    result = cli(empty_app, "init-db")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [ADOPTED, f"Upgraded the schema from 0001 to {HEAD}."]
    assert differences(empty_app) == []
    with empty_app.app_context():
        indexes = {index["name"] for index in inspect(db.engine).get_indexes("users")}
    assert "ix_users_last_seen_at" in indexes


def test_init_db_on_an_empty_database_then_again_is_a_no_op(empty_app):
    first = cli(empty_app, "init-db")
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[:2] == [
        f"Upgraded the schema from nothing to {HEAD}.",
        "Initialized the database.",
    ]
    assert differences(empty_app) == []
    kid = Api(empty_app.test_client()).client.get("/.well-known/jwks.json").json["keys"][0]["kid"]

    second = cli(empty_app, "init-db")

    assert second.exit_code == 0, second.output
    assert second.output.splitlines() == [
        f"The schema is at the latest revision ({HEAD}).",
        "Initialized the database.",
    ]
    assert revision(empty_app) == HEAD
    keys = empty_app.test_client().get("/.well-known/jwks.json").json["keys"]
    assert [key["kid"] for key in keys] == [kid]


def test_downgrade_to_base_and_upgrade_again_keeps_working(empty_app):
    assert cli(empty_app, "db", "upgrade").exit_code == 0
    with empty_app.app_context():
        db.session.execute(
            text(
                "INSERT INTO users (username, password_hash, active, attributes, created_at,"
                " last_seen_at) VALUES ('pia', 'h', :active, '{}', :now, 5.0)"
            ),
            {"active": True, "now": dt.datetime(2026, 1, 1)},
        )
        db.session.commit()

    # Down to 0001: SQLite drops the columns by copying the tables (batch mode); rows stay.
    assert cli(empty_app, "db", "downgrade", "0002").exit_code == 0
    assert revision(empty_app) == "0002"
    assert "updated_at" not in columns(empty_app, "users")
    assert cli(empty_app, "db", "downgrade").exit_code == 0
    assert revision(empty_app) == "0001"
    assert differences(empty_app, legacy_models.metadata) == []
    with empty_app.app_context():
        names = db.session.execute(text("SELECT username FROM users")).scalars().all()
        db.session.remove()
    assert names == ["pia"]

    assert cli(empty_app, "db", "downgrade", "base").exit_code == 0
    assert tables(empty_app) == {"alembic_version"}
    assert revision(empty_app) is None

    assert cli(empty_app, "db", "upgrade").exit_code == 0
    assert revision(empty_app) == HEAD
    assert differences(empty_app) == []


def test_the_flask_db_commands_in_a_process_outside_the_checkout(tmp_path, key_prefix):
    """``flask --app idp_app db ...`` as an operator runs it, from a directory of their own: the
    migrations are found in the package. (Alembic prints on the process's stdout.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "RBAC_ABAC_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'idp.sqlite3'}",
        IDP_ADMIN_TOKEN=ADMIN_TOKEN,
        RBAC_ABAC_REDIS_URL=REDIS_URL,
        RBAC_ABAC_KEY_PREFIX=key_prefix,
        PYTHONPATH=str(ROOT),
    )

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "flask"), "--app", "idp_app", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    upgrade = flask("db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "Running upgrade 0001 -> 0002" in upgrade.stderr
    assert "Running upgrade 0002 -> 0003" in upgrade.stderr
    assert "Running upgrade 0003 -> 0003c" in upgrade.stderr
    assert "Running upgrade 0003c -> 0003p" in upgrade.stderr
    assert flask("db", "current").stdout == f"{HEAD} (head)\n"
    history = flask("db", "history").stdout.splitlines()
    assert [line.split(",")[0] for line in history] == [
        "0003c -> 0003p (head)",
        "0003 -> 0003c",
        "0002 -> 0003",
        "0001 -> 0002",
        "<base> -> 0001",
    ]
    init = flask("init-db")
    assert init.returncode == 0, init.stderr
    assert init.stdout.splitlines()[:2] == [
        f"The schema is at the latest revision ({HEAD}).",
        "Initialized the database.",
    ]
    assert not (tmp_path / "migrations").exists()


def test_init_db_refuses_a_database_with_only_part_of_the_tables(empty_app):
    with empty_app.app_context(), db.engine.begin() as connection:
        legacy_models.metadata.tables["users"].create(connection)
        legacy_models.metadata.tables["services"].create(connection)
        connection.execute(text("ALTER TABLE services DROP COLUMN manifest"))

    result = cli(empty_app, "init-db")

    assert result.exit_code == 1
    assert result.output == (
        "Error: the database has some of the IdP's tables but no alembic_version, and lacks "
        "services.manifest, service_tokens, role_assignments, user_service_versions of "
        "revision 0001: it was not made by init-db, refusing to adopt it\n"
    )
    assert tables(empty_app) == {"users", "services"}


def test_init_db_refuses_a_revision_it_does_not_know(empty_app):
    assert cli(empty_app, "db", "upgrade").exit_code == 0
    with empty_app.app_context():
        db.session.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
        db.session.commit()

    result = cli(empty_app, "init-db")

    assert result.exit_code == 1
    assert result.output == (
        "Error: cannot upgrade the database from revision f00d: Can't locate revision "
        "identified by 'f00d' (was it migrated by a newer release of the IdP?)\n"
    )


def test_the_sql_of_an_upgrade_can_be_printed_without_running_it(make_app, sqlite_url):
    app = make_app(sqlite_url, migrated=False)
    result = cli(app, "db", "upgrade", "--sql")
    assert result.exit_code == 0, result.output
    for table in TABLES:
        assert f"CREATE TABLE {table} (" in result.output
    assert "ALTER TABLE users ADD COLUMN last_seen_at FLOAT" in result.output
    assert tables(app) == set()
    assert app.extensions["migrate"].directory == str(MIGRATIONS_DIRECTORY)


def test_the_migrations_ship_inside_the_package_at_importable_paths():
    """The IdP's wheel takes every file under ``idp_app/`` (packaging/idp/hatch_build.py); the
    app finds its migrations there wherever it runs, and check-wheel-contents accepts them."""
    assert MIGRATIONS_DIRECTORY == Path(idp_app.__file__).resolve().parent / "migrations"
    for name in ("alembic.ini", "env.py", "script.py.mako"):
        assert (MIGRATIONS_DIRECTORY / name).is_file()
    modules = sorted(
        p.relative_to(MIGRATIONS_DIRECTORY.parent.parent)
        for p in MIGRATIONS_DIRECTORY.rglob("*.py")
    )
    assert len(modules) == 6  # env.py and one module per revision
    for path in modules:
        assert all(part.isidentifier() for part in path.with_suffix("").parts), path
