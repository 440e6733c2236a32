"""Invoices: ``GET /invoices``, ``POST /invoices`` and the ABAC-protected ``GET /invoices/<id>``."""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request

from flask_rbac_abac import (
    current_attributes,
    predicate,
    requires,
    requires_permission,
    requires_role,
    role,
)

bp = Blueprint("invoices", __name__, url_prefix="/invoices")

_DEPARTMENT_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_FIELDS = {"customer", "amount", "department", "currency"}
_CURRENCIES = {"EUR", "USD", "GBP"}
MAX_AMOUNT = 1_000_000_000


@dataclass(frozen=True)
class Invoice:
    id: int
    department: str
    customer: str
    amount: float
    currency: str
    created_by: int | str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InvoiceStore:
    """A thread-safe in-memory invoice table (one per app and per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, Invoice] = {}
        self._next_id = 1

    @classmethod
    def seeded(cls) -> InvoiceStore:
        store = cls()
        for department, customer, amount in (
            ("finance", "Acme Corp", 1200.0),
            ("finance", "Globex", 830.5),
            ("sales", "Initech", 450.0),
            ("sales", "Umbrella", 99.9),
            ("support", "Hooli", 75.0),
        ):
            store.add(department=department, customer=customer, amount=amount, currency="EUR")
        return store

    def add(self, **fields: Any) -> Invoice:
        with self._lock:
            invoice = Invoice(id=self._next_id, **fields)
            self._items[invoice.id] = invoice
            self._next_id += 1
            return invoice

    def get(self, invoice_id: int) -> Invoice | None:
        with self._lock:
            return self._items.get(invoice_id)

    def all(self) -> list[Invoice]:
        with self._lock:
            return list(self._items.values())


def store() -> InvoiceStore:
    result: InvoiceStore = current_app.extensions["billing_api"]
    return result


def load_invoice(**view_kwargs: Any) -> dict[str, Any] | None:
    """The resource an ABAC rule sees: the invoice as a dict, or ``None`` when there is none."""
    invoice = store().get(view_kwargs["invoice_id"])
    return invoice.to_dict() if invoice is not None else None


def same_department(user: Any, resource: dict[str, Any] | None) -> bool:
    department = user.get("department")
    return resource is not None and department is not None and department == resource["department"]


#: Admins see every invoice; everyone else only the invoices of their own department.
can_read_invoice = role("admin") | predicate(same_department, "department mismatch")


@bp.get("")
@requires_permission("invoice:read")
def list_invoices() -> Any:
    department = request.args.get("department")
    items = [i.to_dict() for i in store().all() if department in (None, i.department)]
    return jsonify({"success": True, "invoices": items, "count": len(items)})


@bp.post("")
@requires_role("admin", "accountant")
def create_invoice() -> Any:
    own_department = current_attributes.get("department")
    fields = validate_invoice(request.get_json(silent=True), own_department)
    if fields["department"] != own_department and not current_attributes.has_role("admin"):
        abort(403, description="only admins create invoices for another department")
    invoice = store().add(created_by=current_attributes.user_id, **fields)
    return jsonify({"success": True, "invoice": invoice.to_dict()}), 201


@bp.get("/<int:invoice_id>")
@requires(can_read_invoice, resource=load_invoice)
def get_invoice(invoice_id: int) -> Any:
    invoice = store().get(invoice_id)
    if invoice is None:
        abort(404, description=f"invoice {invoice_id} not found")
    return jsonify({"success": True, "invoice": invoice.to_dict()})


def validate_invoice(body: object, default_department: object) -> dict[str, Any]:
    """The fields of a new invoice, or a 400 naming the first problem."""
    if not isinstance(body, dict):
        abort(400, description="request body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        abort(400, description=f"unknown field(s): {', '.join(unknown)}")
    customer = body.get("customer")
    if not isinstance(customer, str) or not customer.strip() or len(customer) > 200:
        abort(400, description="customer must be a non-empty string of at most 200 characters")
    amount = body.get("amount")
    if (
        not isinstance(amount, (int, float))
        or isinstance(amount, bool)
        or not 0 < amount <= MAX_AMOUNT
    ):
        abort(400, description=f"amount must be a number greater than 0 and at most {MAX_AMOUNT}")
    currency = body.get("currency", "EUR")
    if currency not in _CURRENCIES:
        abort(400, description=f"currency must be one of {', '.join(sorted(_CURRENCIES))}")
    department = body.get("department", default_department)
    if not isinstance(department, str) or not _DEPARTMENT_RE.fullmatch(department):
        abort(400, description="department must be a short lowercase name like 'finance'")
    return {
        "customer": customer.strip(),
        "amount": float(amount),
        "currency": currency,
        "department": department,
    }
