"""inferwatch: incident logging and anomaly monitoring for AI inference services."""

from pathlib import Path as _Path

from inferwatch._version import __version__

# In a source checkout the folders agent/, collectors/ and detectors/ sit beside this one and
# install as inferwatch.agent etc. When Python imports this folder straight from the checkout
# (``python -c`` or ``python -m`` run at the repository root), let it find them there too,
# instead of failing with "No module named 'inferwatch.collectors'".
_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "collectors" / "__init__.py").is_file():
    __path__.append(str(_root))

__all__ = ["__version__"]
