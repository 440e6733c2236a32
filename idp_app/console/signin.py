"""Sign in and sign out; creating console admins (the ``create-admin`` command)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import click
from flask import current_app, flash, g, redirect, render_template, request, session, url_for
from flask.cli import with_appcontext
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response as BaseResponse

from .. import validation
from ..domain_errors import AlreadyExists
from ..errors import ApiError
from ..extensions import db
from ..models import ConsoleAdmin
from .blueprint import bp

#: Compared against when the username is unknown, so both cases take the same time.
_DUMMY_HASH = generate_password_hash("not a password", method="scrypt")


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never an open redirect to another site."""
    if target and target.startswith("/admin/") and not urlsplit(target).netloc:
        return target
    return url_for("console.dashboard")


def check_credentials(username: str, password: str) -> ConsoleAdmin | None:
    admin = db.session.execute(
        select(ConsoleAdmin).where(ConsoleAdmin.username == username)
    ).scalar_one_or_none()
    digest = admin.password_hash if admin is not None else _DUMMY_HASH
    if check_password_hash(digest, password) and admin is not None:
        return admin
    return None


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> BaseResponse | str | tuple[str, int]:
    if request.method == "POST":
        admin = check_credentials(
            request.form.get("username", ""), request.form.get("password", "")
        )
        if admin is None:
            flash("invalid username or password", "error")
            return render_template("console/sign_in.html"), 401
        session.clear()  # a fresh session (and CSRF token) for the signed-in admin
        session["admin_id"] = admin.id
        session["signed_in_at"] = time.time()
        session.permanent = True
        return redirect(_safe_next(request.args.get("next")))
    return render_template("console/sign_in.html")


@bp.post("/sign-out")
def sign_out() -> BaseResponse:
    """End every session of this admin (a copied cookie included), not only this browser's."""
    g.console_admin.signed_out_at = time.time()
    db.session.commit()
    session.clear()
    flash("signed out", "info")
    return redirect(url_for("console.sign_in"))


def create_admin(username: str, password: str) -> ConsoleAdmin:
    if db.session.execute(
        select(ConsoleAdmin).where(ConsoleAdmin.username == username)
    ).scalar_one_or_none():
        raise AlreadyExists("console admin", username)
    admin = ConsoleAdmin(
        username=username,
        password_hash=generate_password_hash(
            password, method=current_app.config["IDP_PASSWORD_HASH_METHOD"]
        ),
    )
    db.session.add(admin)
    db.session.flush()
    return admin


@click.command("create-admin")
@with_appcontext
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_admin_command(username: str, password: str) -> None:
    """Create a console admin who signs in at /admin/ with USERNAME and the password."""
    try:
        admin = create_admin(validation.username(username), validation.password(password))
    except (ApiError, AlreadyExists) as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"created console admin {admin.username}")
