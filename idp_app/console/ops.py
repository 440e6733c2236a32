"""The operations the console calls: the admin API's own, so both validate and record alike.

One indirection while the admin API's additions to :mod:`idp_app.operations` and
:mod:`idp_app.audit` are being merged: each name is taken from there when present, else from
:mod:`._pending_ops`. Once merged, this module re-exports only.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from .. import operations as _operations
from ..operations import UNCHANGED, Sync, deactivate_user, register_service, set_roles
from ..operations import update_attributes as update_attributes
from . import _pending_ops as _pending


def _pick(name: str) -> Any:
    found = getattr(_operations, name, None)
    pending = getattr(_pending, name)
    # ``issue_service_token`` exists already, taking a Service: the new one takes its name.
    if found is None or list(inspect.signature(found).parameters) != list(
        inspect.signature(pending).parameters
    ):
        return pending
    return found


def _audit_module() -> Any:
    try:
        return importlib.import_module("idp_app.audit")
    except ModuleNotFoundError:
        return _pending.audit


list_users = _pick("list_users")
user_detail = _pick("user_detail")
activate_user = _pick("activate_user")
remove_roles = _pick("remove_roles")
list_services = _pick("list_services")
service_detail = _pick("service_detail")
issue_service_token = _pick("issue_service_token")
revoke_service_token = _pick("revoke_service_token")
audit = _audit_module()

__all__ = [
    "UNCHANGED",
    "Sync",
    "activate_user",
    "audit",
    "deactivate_user",
    "issue_service_token",
    "list_services",
    "list_users",
    "register_service",
    "remove_roles",
    "revoke_service_token",
    "service_detail",
    "set_roles",
    "update_attributes",
    "user_detail",
]
