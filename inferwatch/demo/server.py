"""The demo's model server: a scikit-learn iris classifier and a deterministic chat endpoint.

Both are ordinary Starlette routes; the only inferwatch code is the middleware wrapped around
the app, exactly as a user would add it to their own FastAPI or Starlette service.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import numpy as np
import uvicorn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class IrisModel:
    """A logistic regression on the iris data set that ships with scikit-learn."""

    def __init__(self) -> None:
        data = load_iris()
        self.data = np.asarray(data.data, dtype=float)
        self.names = [str(n) for n in data.target_names]
        self.model = LogisticRegression(max_iter=500).fit(self.data, data.target)

    def predict(self, features: dict[str, Any]) -> dict[str, Any]:
        row = np.array([[float(features[name]) for name in FEATURES]])
        proba = self.model.predict_proba(row)[0]
        best = int(np.argmax(proba))
        return {"label": self.names[best], "score": round(float(proba[best]), 4)}


def chat_reply(messages: list[dict[str, Any]]) -> str:
    """A deterministic answer: the same prompt always gets the same reply."""
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    digest = hashlib.sha256(str(last).encode()).hexdigest()[:8]
    return f"Here is a short answer to your question (ref {digest})."


def build_app(model: IrisModel) -> Starlette:
    """The model server's routes, without any monitoring."""

    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            return JSONResponse(model.predict(body.get("features", body)))
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": f"bad features: {exc}"}, status_code=422)

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        text = chat_reply(body.get("messages", []))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(text.split())
        return JSONResponse({
            "id": "chatcmpl-demo",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "demo-chat"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    return Starlette(routes=[
        Route("/v1/models/iris/predict", predict, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ])


class BackgroundServer:
    """uvicorn on a free loopback port, in a thread; ``with`` it to start and stop."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="demo-model-server", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the demo model server did not start")
            time.sleep(0.02)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
