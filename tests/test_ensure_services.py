"""Real services are required whenever ``CI`` is set to any true value, not only ``true``."""

from __future__ import annotations

import pytest
from ensure_services import in_ci


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "1", "yes", "on", " true "])
def test_any_true_ci_value_requires_the_real_services(value: str) -> None:
    assert in_ci({"CI": value}) is True


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "maybe"])
def test_unset_or_false_ci_lets_a_developer_skip(value: str) -> None:
    assert in_ci({"CI": value}) is False
    assert in_ci({}) is False
