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
    """The identity provider failed, timed out, or answered something unusable."""
