"""Alembic's environment for the IdP: the app's engine and models, batch mode for SQLite.

Flask-Migrate runs this inside the app context, so the database is the app's ``DATABASE_URL``
and the target is :data:`idp_app.extensions.db`'s metadata (every model imported by
:mod:`idp_app.models`). Options such as ``render_as_batch`` (SQLite cannot ``ALTER`` most things,
so Alembic copies the table) come from :class:`flask_migrate.Migrate` in
:mod:`idp_app.extensions`.

Unlike Flask-Migrate's template this never calls ``logging.config.fileConfig``: that would
replace the logging of the process running it (the IdP's, or a test run's). Alembic's progress
lines are printed only when nobody has configured logging for them.
"""

from __future__ import annotations

import logging
from typing import Any

from alembic import context
from flask import current_app

from idp_app import models  # noqa: F401 - registers every table on db.metadata
from idp_app.extensions import db


def _show_progress() -> None:
    logger = logging.getLogger("alembic")
    # Alembic gives its logger a NullHandler of its own; any other handler means "configured".
    configured = [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
    if configured or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)-5.5s [%(name)s] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _skip_empty_autogenerate(_context: Any, _revision: Any, directives: list[Any]) -> None:
    """``flask db migrate`` with no model change writes no empty revision file."""
    if (
        getattr(context.config.cmd_opts, "autogenerate", False)
        and directives[0].upgrade_ops.is_empty()
    ):
        directives[:] = []
        logging.getLogger("alembic.env").info("No changes in schema detected.")


def run_offline() -> None:
    """``flask db upgrade --sql``: print the SQL for the app's dialect instead of running it."""
    options = dict(current_app.extensions["migrate"].configure_args)
    context.configure(url=db.engine.url, target_metadata=db.metadata, literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    options = dict(current_app.extensions["migrate"].configure_args)
    options.setdefault("process_revision_directives", _skip_empty_autogenerate)
    with db.engine.connect() as connection:
        context.configure(connection=connection, target_metadata=db.metadata, **options)
        with context.begin_transaction():
            context.run_migrations()


_show_progress()
if context.is_offline_mode():
    run_offline()
else:
    run_online()
