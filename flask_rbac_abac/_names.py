"""The names the extension leaves on Flask objects, each defined once.

The extension, the decorators, the route guard and the CLI all find each other through these:
the extension's key in ``app.extensions``, the per-request values on ``g``, the markers on
protected and public views, and the methods that are never authorized. Plain constants, so every
module can import them (this one imports nothing).
"""

from __future__ import annotations

#: The extension's key in ``app.extensions``.
EXTENSION_KEY = "rbac_abac"
#: The key in ``app.extensions`` of the app's own state: its settings, client and verifier.
STATE_KEY = "rbac_abac.state"
#: The key in ``app.extensions`` of the app's hot path (:mod:`.hotpath`), when it has one.
HOT_PATH_KEY = "rbac_abac.hot_path"
#: The logger of the decisions (allows at DEBUG, denials at INFO).
AUDIT_LOGGER = "flask_rbac_abac.audit"
#: The request attribute holding the caller's user id, once resolved in this request.
REQUEST_IDENTITY = "_rbac_abac_identity"
#: The request attribute holding the caller's :class:`UserAttributes`, once loaded for it.
REQUEST_ATTRIBUTES = "_rbac_abac_attributes"
#: The attribute ``requires`` sets on the wrapper it returns: the rules it enforces.
RULES_ATTR = "_rbac_abac_rules"
#: The attribute ``requires`` sets on a wrapper the hot path may call past (:func:`.hotpath.bound`):
#: ``(wrapper, rule, view, full)``, ``full`` the wrapper's full path (decision, then view);
#: ``None`` on a wrapper with a resource loader or an async view.
HOT_VIEW_ATTR = "_rbac_abac_hot_view"
#: The attribute :func:`~flask_rbac_abac.public` sets on a view function or class.
PUBLIC_ATTR = "_rbac_abac_public"
#: Methods that pass through without authorization: a CORS preflight carries no credentials.
PASS_THROUGH_METHODS = frozenset({"OPTIONS"})
