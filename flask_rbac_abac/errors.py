"""The library's errors: one base class and a few subclasses."""

from __future__ import annotations


class RBACABACError(Exception):
    """Base class of every error this library raises."""


class ConfigurationError(RBACABACError, ValueError):
    """A configuration value is missing or malformed; the message names the key."""


class InvalidKeyPart(RBACABACError, ValueError):
    """A service name or user id cannot be used in a cache key."""


class DecodeError(RBACABACError, ValueError):
    """A cached value or an identity provider answer is not valid attribute JSON."""


class AttributesUnavailable(RBACABACError):
    """Attributes could not be obtained (Redis and the identity provider both failed)."""


class IdentityProviderError(AttributesUnavailable):
    """The identity provider failed, timed out, or answered something unusable.

    :param reason: what went wrong, for programs: ``unreachable``, ``breaker_open``, ``peer_failed``
        (another process's refresh of the same key failed moments ago),
        ``server_error``, ``redirect``, ``bad_answer`` or ``refused``.
    :param status: the HTTP status, when there was an answer.
    :param code: the IdP's machine-readable error code (e.g. ``service_not_registered``).
    """

    def __init__(
        self, message: str, *, reason: str, status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.code = code


class InvalidIdentity(RBACABACError, ValueError):
    """A verified token names a subject that is not a user id (the caller answers 401)."""


class IdentityUnavailable(RBACABACError):
    """A token cannot be verified because its keys cannot be fetched (the caller answers 503).

    Not the caller's fault and never an allow: the request is refused as unavailable, like
    attributes that cannot be obtained.
    """
