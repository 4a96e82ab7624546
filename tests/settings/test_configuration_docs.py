"""docs/configuration.md is checked against the settings model, so neither drifts from the other."""

import re
from pathlib import Path

from pydantic import BaseModel

from inferwatch.collectors.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _documented() -> dict[str, set[str]]:
    sections: dict[str, set[str]] = {}
    current = "top"
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^## `(\w+)`", line)
        if heading:
            current = heading.group(1)
        elif line.startswith("## Top level"):
            current = "top"
        row = re.match(r"^\| `(\w+)` \|", line)
        if row:
            sections.setdefault(current, set()).add(row.group(1))
    return sections


def test_every_setting_is_documented_and_nothing_else():
    documented = _documented()
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            assert documented.get(name) == set(annotation.model_fields), name
        else:
            assert name in documented["top"]
