"""inferwatch: incident logging and anomaly monitoring for AI inference services."""

from inferwatch._version import __version__

__all__ = ["__version__"]
