"""flask-rbac-abac: role-, permission- and attribute-based authorization for Flask."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .answers import AuthorizationUnavailable, NotAuthenticated, NotAuthorized
from .client import RedisAttributeClient
from .decorators import (
    current_attributes,
    current_identity,
    enforce,
    protect_blueprint,
    public,
    requires,
    requires_attribute,
    requires_permission,
    requires_role,
)
from .errors import (
    AttributesUnavailable,
    ConfigurationError,
    DecodeError,
    IdentityProviderError,
    InvalidKeyPart,
    RBACABACError,
)
from .extension import RBACABAC
from .model import UserAttributes
from .rules import Decision, Rule, attribute, permission, predicate, role

try:
    __version__ = version("flask-rbac-abac")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "RBACABAC",
    "AttributesUnavailable",
    "AuthorizationUnavailable",
    "ConfigurationError",
    "Decision",
    "DecodeError",
    "IdentityProviderError",
    "InvalidKeyPart",
    "NotAuthenticated",
    "NotAuthorized",
    "RBACABACError",
    "RedisAttributeClient",
    "Rule",
    "UserAttributes",
    "__version__",
    "attribute",
    "current_attributes",
    "current_identity",
    "enforce",
    "permission",
    "predicate",
    "protect_blueprint",
    "public",
    "requires",
    "requires_attribute",
    "requires_permission",
    "requires_role",
    "role",
]
