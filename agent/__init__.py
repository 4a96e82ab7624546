"""The agent that runs beside a model server (light: no ML or Elasticsearch imports).

>>> import inferwatch.agent as agent_api
>>> sorted(agent_api.__all__)
['Agent', 'InferwatchMiddleware', 'configure', 'get_agent', 'monitor']

Typical use in a FastAPI app::

    from inferwatch.agent import InferwatchMiddleware, configure

    configure()                        # settings from INFERWATCH_... and the config file
    app.add_middleware(InferwatchMiddleware)
"""

from inferwatch.agent.asgi import InferwatchMiddleware
from inferwatch.agent.core import Agent, configure, get_agent
from inferwatch.agent.decorator import monitor

__all__ = ["Agent", "InferwatchMiddleware", "configure", "get_agent", "monitor"]
