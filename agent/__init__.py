"""The agent that runs beside a model server (light: no ML or Elasticsearch imports).

>>> import inferwatch.agent as agent_api
>>> sorted(agent_api.__all__)  # doctest: +NORMALIZE_WHITESPACE
['Agent', 'InferwatchMiddleware', 'InferwatchWSGIMiddleware', 'configure', 'context', 'get_agent',
 'monitor', 'set_attributes', 'set_model', 'set_principal']

Typical use in a FastAPI app::

    from inferwatch.agent import InferwatchMiddleware, configure

    configure()                        # settings from INFERWATCH_... and the config file
    app.add_middleware(InferwatchMiddleware)

and in a Flask (any WSGI) app: ``app.wsgi_app = InferwatchWSGIMiddleware(app.wsgi_app)``.
"""

from inferwatch.agent.asgi import InferwatchMiddleware
from inferwatch.agent.context import context, set_attributes, set_model, set_principal
from inferwatch.agent.core import Agent, configure, get_agent
from inferwatch.agent.decorator import monitor
from inferwatch.agent.wsgi import InferwatchWSGIMiddleware

__all__ = [
    "Agent",
    "InferwatchMiddleware",
    "InferwatchWSGIMiddleware",
    "configure",
    "context",
    "get_agent",
    "monitor",
    "set_attributes",
    "set_model",
    "set_principal",
]
