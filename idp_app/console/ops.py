"""The operations the console calls: the admin API's own, so both validate, audit and deliver
alike (every change here is the same function the JSON API calls)."""

from __future__ import annotations

from .. import audit
from ..operations import (
    UNCHANGED,
    Sync,
    activate_user,
    deactivate_user,
    issue_service_token,
    list_services,
    list_users,
    register_service,
    remove_roles,
    revoke_service_token,
    service_detail,
    set_roles,
    update_attributes,
    user_detail,
)

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
