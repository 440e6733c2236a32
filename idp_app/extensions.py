"""Extensions, created once at import and bound to each app in :func:`idp_app.create_app`."""

from __future__ import annotations

from pathlib import Path

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

#: Alembic's scripts ship inside the package, so an installed IdP finds them wherever it runs
#: (Flask-Migrate's default, ``./migrations``, depends on the working directory).
MIGRATIONS_DIRECTORY = Path(__file__).resolve().with_name("migrations")


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
#: ``flask --app idp_app db ...``. Batch mode (the default) lets SQLite alter tables by copying.
migrate = Migrate(directory=MIGRATIONS_DIRECTORY, render_as_batch=True)
