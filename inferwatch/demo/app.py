"""The demo model server as an importable ASGI app, with the agent configured from settings.

This is what a user's own service looks like with inferwatch added: run it with
``uvicorn inferwatch.demo.app:app`` and point ``INFERWATCH_*`` variables at the bus
(the Docker Compose file in ``deploy/`` does exactly that).
"""

from __future__ import annotations

from inferwatch.agent import InferwatchMiddleware, configure
from inferwatch.demo.server import IrisModel, build_app

app = InferwatchMiddleware(build_app(IrisModel()), agent=configure())
