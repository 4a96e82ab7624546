"""Re-initialise per-process state in a forked child (gunicorn workers, multiprocessing)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable


def after_fork_in_child(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every child forked from now on, while its object lives.

    Only a weak reference is kept: registering must not keep a shipper or an agent alive for
    the life of the process. Does nothing where there is no ``fork`` (Windows).
    """
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.WeakMethod(method)

    def _in_child() -> None:
        bound = ref()
        if bound is not None:
            bound()

    os.register_at_fork(after_in_child=_in_child)
