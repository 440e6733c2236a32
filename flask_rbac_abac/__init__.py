"""flask-rbac-abac: role-, permission- and attribute-based authorization for Flask."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .codec import UserAttributes
from .errors import (
    AttributesUnavailable,
    ConfigurationError,
    DecodeError,
    IdentityProviderError,
    InvalidKeyPart,
    RBACABACError,
)

try:
    __version__ = version("flask-rbac-abac")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AttributesUnavailable",
    "ConfigurationError",
    "DecodeError",
    "IdentityProviderError",
    "InvalidKeyPart",
    "RBACABACError",
    "UserAttributes",
    "__version__",
]
