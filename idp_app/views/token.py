"""``POST /api/token``: a user's access token for username and password.

``"audience"`` (optional) names the registered service the token is for; it becomes ``aud``, so
the token is refused by every other service. Without it, ``aud`` is ``RBAC_ABAC_JWT_AUDIENCE``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from werkzeug.security import check_password_hash, generate_password_hash

from .. import activity, operations, tokens, validation
from ..errors import ApiError

bp = Blueprint("token", __name__)

_dummy_hashes: dict[str, str] = {}


def _dummy_hash() -> str:
    method = current_app.config["IDP_PASSWORD_HASH_METHOD"]
    if method not in _dummy_hashes:
        _dummy_hashes[method] = generate_password_hash("not-a-password", method=method)
    return _dummy_hashes[method]


def _audience(value: object) -> str | None:
    """The service a token is asked for: ``None`` (the default audience) or a registered name."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "audience must be a string: the name of a registered service")
    name = validation.service_name(value)
    try:
        operations.get_service(name)
    except ApiError:
        raise ApiError(400, f"audience {name!r} is not a registered service") from None
    return name


@bp.post("")
def issue_token() -> Any:
    data = validation.json_object()
    validation.only_keys(data, {"username", "password", "audience"}, {"username", "password"})
    username, password = data["username"], data["password"]
    if not isinstance(username, str) or not isinstance(password, str):
        raise ApiError(400, "username and password must be strings")
    audience = _audience(data.get("audience"))
    user = operations.user_by_name(username) if len(username) <= 64 else None
    # Hash even for an unknown user, so timing does not tell which usernames exist.
    valid = check_password_hash(user.password_hash if user else _dummy_hash(), password)
    if user is None or not valid or not user.active:
        raise ApiError(401, "invalid username or password")
    token, lifetime = tokens.issue(user, audience)
    activity.seen_and_commit(user)
    return {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}
