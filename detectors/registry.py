"""Finding and building detectors through the ``inferwatch.detectors`` entry-point group."""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import TypeAdapter, ValidationError

from inferwatch.collectors.durations import parse_duration
from inferwatch.collectors.settings import shown_value
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
    if not all(n.strip() for n in names):
        raise DetectorConfigError(f"detect.enabled holds an empty name ({names!r}); "
                                  f"registered: {', '.join(sorted(registry))}")
    unknown = [n for n in [*names, *options] if n not in registry]
    if unknown:
        guesses = {n: difflib.get_close_matches(n, list(registry), n=1, cutoff=0.75) for n in set(unknown)}
        meant = "; ".join(f"did you mean {g[0]} for {n}?" for n, g in sorted(guesses.items()) if g)
        raise DetectorConfigError(
            f"unknown detector(s) {', '.join(sorted(set(unknown)))} in detect.enabled/detect.options"
            + (f" ({meant})" if meant else "") + f"; registered: {', '.join(sorted(registry))}"
        )
    detectors: list[Detector] = []
    for name in names:
        try:
            cls = registry[name].load()
        except Exception as exc:  # a broken plug-in must name itself
            raise DetectorConfigError(f"detector {name!r} failed to load: {exc}") from exc
        try:
            detector = cls(**_checked_options(cls, name, dict(options.get(name, {}))))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, DetectorConfigError):
                raise
            raise DetectorConfigError(f"detect.options.{name}: {exc}") from exc
        if not isinstance(detector, Detector):
            raise DetectorConfigError(f"detector {name!r} lacks observe()/close_window()/name")
        detectors.append(detector)
    return detectors


def _checked_options(cls: type, name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` checked against the parameters of ``cls``'s constructor: an unknown name, or a value
    that is not of the parameter's type, raises :class:`DetectorConfigError` naming
    ``detect.options.<detector>.<option>``; values are converted as the settings are (``"50"``
    for an ``int`` is 50). A plug-in whose annotations cannot be resolved is passed ``given`` as is.
    """
    try:
        params = inspect.signature(cls).parameters
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except (TypeError, ValueError, NameError):
        return given
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = [key for key in given if key not in params]
        if unknown:
            named = ", ".join(sorted(k for k, p in params.items()
                                     if p.kind is not inspect.Parameter.VAR_POSITIONAL))
            raise DetectorConfigError(f"detect.options.{name}.{unknown[0]}: no such option; "
                                      f"{name} takes {named or 'none'}")
    out = dict(given)
    for key, value in given.items():
        if key not in hints:
            continue
        if key.endswith("_s") and isinstance(value, str):  # seconds, also written 30s, 5m or 1h30m
            try:
                value = parse_duration(value)
            except ValueError as exc:
                raise DetectorConfigError(f"detect.options.{name}.{key}: {exc}") from None
        try:
            out[key] = TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]["msg"]
            raise DetectorConfigError(
                f"detect.options.{name}.{key}: {problem}{shown_value(key, value)}") from None
        except Exception:  # a type pydantic cannot check (a plug-in's own class): left to the detector
            continue
    return out
