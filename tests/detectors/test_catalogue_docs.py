"""docs/detectors.md is checked against the registry: every detector and option, with its default."""

import inspect
import re
from pathlib import Path

from inferwatch.detectors.registry import available

DOC = Path(__file__).resolve().parents[2] / "docs" / "detectors.md"


def _sections() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^## `(\w+)`", line)
        if heading:
            current = heading.group(1)
            out[current] = {}
        row = re.match(r"^\| `(\w+)` \| ([^|]+) \|", line)
        if row and current:
            out[current][row.group(1)] = row.group(2).strip()
    return out


def test_every_registered_detector_and_option_is_documented():
    documented = _sections()
    for name, entry in available().items():
        params = inspect.signature(entry.load().__init__).parameters
        options = {p.name: p.default for p in params.values() if p.name != "self"}
        assert name in documented, f"docs/detectors.md has no section for {name}"
        assert set(documented[name]) == set(options), name
        for option, default in options.items():
            assert documented[name][option] == str(default), f"{name}.{option}"
