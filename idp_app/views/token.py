"""``POST /api/token``: a user's access token for username and password.

``"audience"`` (optional) names the registered service the token is for; it becomes ``aud``, so
the token is refused by every other service. Without it, ``aud`` is ``RBAC_ABAC_JWT_AUDIENCE``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .. import activity, operations, tokens, validation
from ..domain_errors import ServiceNotRegistered
from ..errors import ApiError

bp = Blueprint("token", __name__)


def _audience(value: object) -> str | None:
    """The service a token is asked for: ``None`` (the default audience) or a registered name."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "audience must be a string: the name of a registered service")
    name = validation.service_name(value)
    try:
        operations.get_service(name)
    except ServiceNotRegistered:
        raise ApiError(400, f"audience {name!r} is not a registered service") from None
    return name


@bp.post("")
def issue_token() -> Any:
    """``200`` with a bearer token; ``401`` for any wrong credential (never says which)."""
    data = validation.json_object()
    validation.only_keys(data, {"username", "password", "audience"}, {"username", "password"})
    username, password = data["username"], data["password"]
    if not isinstance(username, str) or not isinstance(password, str):
        raise ApiError(400, "username and password must be strings")
    audience = _audience(data.get("audience"))
    user = tokens.authenticate(username, password)
    token, lifetime = tokens.issue(user, audience)
    activity.seen_and_commit(user)
    return {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}
