"""The chart's README documents every value, and no value that does not exist."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.chart import CHART, value_keys

pytestmark = pytest.mark.unit


def test_readme_values_table_lists_every_key_of_values_yaml() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    leaves = {k for k in value_keys(values) if not any(o.startswith(k + ".") for o in value_keys(values))}
    documented = set(re.findall(r"^\| `([^`]+)` \|", (CHART / "README.md").read_text(), re.MULTILINE))
    assert not leaves - documented, f"values.yaml keys missing from README.md: {sorted(leaves - documented)}"
    assert not documented - leaves, (
        f"README.md documents keys values.yaml lacks: {sorted(documented - leaves)}"
    )
