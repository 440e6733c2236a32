"""What an operation can refuse, in the domain's words.

Operations (:mod:`.operations`, :mod:`.refresh`, :mod:`.tokens`) raise these and know nothing of
HTTP; :mod:`.errors` maps each to its status and machine-readable code at the edge, and the CLI
prints the message. The message is the one the API answers with, so it names what was refused.
"""

from __future__ import annotations

from collections.abc import Iterable


class OperationError(Exception):
    """Base class: an operation refused what it was asked to do."""


class UserNotFound(OperationError):
    """The user does not exist or is deactivated."""

    def __init__(self, user_id: int) -> None:
        super().__init__(f"user {user_id} not found or inactive")
        self.user_id = user_id


class ServiceNotRegistered(OperationError):
    """No service of that name is registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"service {name!r} is not registered")
        self.name = name


class AlreadyExists(OperationError):
    """A service or user of that name exists already."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} already exists")
        self.kind = kind
        self.name = name


class UnknownRoles(OperationError):
    """Roles that the service's manifest does not declare."""

    def __init__(self, service_name: str, roles: Iterable[str]) -> None:
        self.roles = list(roles)
        super().__init__(f"unknown role(s) for service {service_name!r}: {', '.join(self.roles)}")
        self.service_name = service_name


class InvalidCursor(OperationError):
    """A page cursor that no listing handed out."""

    def __init__(self) -> None:
        super().__init__("cursor is not a cursor from a previous page")


class TokenNotFound(OperationError):
    """The service holds no token with that id."""

    def __init__(self, service_name: str, token_id: int) -> None:
        super().__init__(f"service {service_name!r} has no token {token_id}")
        self.service_name = service_name
        self.token_id = token_id


class InvalidCredentials(OperationError):
    """Unknown username, wrong password or a deactivated user (never said which)."""

    def __init__(self) -> None:
        super().__init__("invalid username or password")


class TokenIssuingNotConfigured(OperationError):
    """No signing key is configured or generated."""

    def __init__(self) -> None:
        super().__init__(
            "token issuing is not configured: no signing key (run `flask --app idp_app "
            "init-db` or `rotate-signing-key`, or set RBAC_ABAC_JWT_PRIVATE_KEY or "
            "RBAC_ABAC_JWT_SECRET)"
        )


class SigningKeyFromConfiguration(OperationError):
    """The signing key is set in configuration, so it cannot be rotated here."""

    def __init__(self) -> None:
        super().__init__(
            "the signing key comes from configuration (RBAC_ABAC_JWT_SECRET or "
            "RBAC_ABAC_JWT_PRIVATE_KEY): rotate it there"
        )


class RedisUnavailable(OperationError):
    """Redis failed part way through a bulk write (what was written before stays)."""
