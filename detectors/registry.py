"""Finding and building detectors through the ``inferwatch.detectors`` entry-point group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from inferwatch.detectors.base import Detector

ENTRY_POINT_GROUP = "inferwatch.detectors"


class DetectorConfigError(ValueError):
    """A detector named in the settings is unknown, fails to load, or rejects its options."""


def available() -> dict[str, EntryPoint]:
    """Registered detectors by name (this package's and third parties')."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def build_detectors(
    enabled: Sequence[str] | None = None, options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Detector]:
    """Instantiate the enabled detectors (all registered ones when ``enabled`` is None).

    Each is built as ``cls(**options[name])``; a bad option raises
    :class:`DetectorConfigError` naming the settings key to fix.
    """
    registry = available()
    options = options or {}
    names = sorted(registry) if enabled is None else list(enabled)
    unknown = [n for n in [*names, *options] if n not in registry]
    if unknown:
        raise DetectorConfigError(
            f"unknown detector(s) {', '.join(sorted(set(unknown)))} in detect.enabled/detect.options; "
            f"registered: {', '.join(sorted(registry))}"
        )
    detectors: list[Detector] = []
    for name in names:
        try:
            cls = registry[name].load()
        except Exception as exc:  # a broken plug-in must name itself
            raise DetectorConfigError(f"detector {name!r} failed to load: {exc}") from exc
        try:
            detector = cls(**dict(options.get(name, {})))
        except (TypeError, ValueError) as exc:
            raise DetectorConfigError(f"detect.options.{name}: {exc}") from exc
        if not isinstance(detector, Detector):
            raise DetectorConfigError(f"detector {name!r} lacks observe()/close_window()/name")
        detectors.append(detector)
    return detectors
