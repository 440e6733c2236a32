"""The API reference keeps up with the public names (``make docs`` builds it; this finds gaps)."""

from __future__ import annotations

import re
from pathlib import Path

import flask_rbac_abac

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"
DIRECTIVE = re.compile(r"^\.\. (?:auto)?(?:class|function|exception|data):: (\w+)$", re.MULTILINE)


def test_every_public_name_is_in_the_api_reference() -> None:
    documented = set(DIRECTIVE.findall(API_PAGE.read_text()))
    assert sorted(set(flask_rbac_abac.__all__) - documented) == []


def test_the_api_reference_documents_only_public_names() -> None:
    documented = set(DIRECTIVE.findall(API_PAGE.read_text()))
    assert sorted(documented - set(flask_rbac_abac.__all__)) == []
