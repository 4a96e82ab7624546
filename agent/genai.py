"""Prompts and completions of generative models, from OpenAI-style JSON bodies.

Recognised shapes (vLLM, TGI, LiteLLM, llama.cpp and most gateways speak one of them):

* chat (``messages``) -> operation ``chat``;
* completions (``prompt``), and TGI's ``{"inputs": "…"}`` -> ``text_completion``;
* embeddings (``input``, on an ``…/embeddings`` path or answered with ``data[].embedding``).

Which prompt text an event keeps, for chat: **the last user message, followed by any tool or
function results that come after it.** That is what the caller added in this call, and where
both direct prompt injection (the user turn) and indirect injection (tool output, retrieved
documents) arrive. Earlier turns were already captured by earlier calls, and the system prompt
is the operator's own text, repeated in every call; both are left out of ``input.text`` but
counted in ``input.chars``, which is the size of all message text the model read.

The output text is the first choice's; ``output.chars`` counts every choice. ``usage`` fills
``tokens``. A list of prompts (or embedding inputs) is a batch: one row per prompt, paired with
the choice of the same ``index``; the call's token usage is carried by the first row, so sums
over events stay right. Request options land in attributes: ``request_model``,
``response_model``, ``max_tokens``, ``temperature``, ``n``, ``logprobs``, ``top_logprobs``,
``stream``, ``messages`` (count), ``tools`` (count offered), ``tool_calls`` (count made).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from inferwatch.agent.content import CallContent, Row, text_input, text_output
from inferwatch.collectors.event import EventInput, EventOutput
from inferwatch.collectors.settings import CaptureMode
from inferwatch.collectors.turns import Turn, caller_text, tool_results_only

_OPTIONS: Final = ("temperature", "n", "logprobs", "top_logprobs", "stream")
_PATH_OPERATIONS: Final = (
    ("/chat/completions", "chat"),
    ("/embeddings", "embeddings"),
    ("/completions", "text_completion"),
)


def detect_operation(request: Any, response: Any, path: str = "") -> str | None:
    """``chat``, ``text_completion`` or ``embeddings`` if the bodies (or path) say so, else ``None``."""
    if isinstance(request, Mapping):
        if isinstance(request.get("messages"), list):
            return "chat"
        if "prompt" in request or isinstance(request.get("inputs"), str):
            return "text_completion"
        if "input" in request and (path.endswith("/embeddings") or _embeddings(response)):
            return "embeddings"
    for suffix, operation in _PATH_OPERATIONS:
        if path.endswith(suffix):
            return operation
    if isinstance(response, Mapping) and isinstance(response.get("choices"), list):
        first = _choices(response)[:1]
        return "chat" if first and "message" in first[0] else "text_completion"
    return None


def genai_content(request: Any, response: Any, operation: str, mode: CaptureMode) -> CallContent:
    """Read a generative call's bodies (either may be ``None``) into :class:`CallContent`."""
    req: Mapping[str, Any] = request if isinstance(request, Mapping) else {}
    resp: Mapping[str, Any] = response if isinstance(response, Mapping) else {}
    content = CallContent(operation=operation)
    _request_options(req, content)
    _response_meta(resp, content)
    if operation == "chat":
        inputs = [_chat_input(req.get("messages"), mode)]
    else:
        inputs = _prompt_inputs(req.get("prompt", req.get("inputs", req.get("input"))), mode)
    outputs = _outputs(response, operation, mode, content)
    content.rows = _pair(inputs, outputs)
    if content.rows:
        first = content.rows[0]
        first.input.tokens = content.input_tokens
        first.output.tokens = content.output_tokens
    return content


def assemble_stream(body: bytes) -> dict[str, Any] | None:
    """Rebuild a completion response from the server-sent events of a streamed one.

    A capture cut off at the size limit still yields the text up to the cut.

    >>> sse = b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}\\n\\n'
    >>> assemble_stream(sse + b"data: [DONE]\\n\\n")["choices"][0]["message"]["content"]
    'Hi'
    """
    texts: dict[int, list[str]] = {}
    finish: dict[int, str] = {}
    meta: dict[str, Any] = {}
    chat = False
    # Lines end at CR LF, LF or CR only (the SSE spec): bytes.splitlines, not str.splitlines, which
    # also splits at U+2028, U+0085 or a form feed, all of which JSON may carry unescaped.
    for raw in body.splitlines():
        line = raw.decode("utf-8", "replace")
        data = line[5:].strip() if line.startswith("data:") else ""
        if not data or data == "[DONE]":
            continue
        try:
            chunk = json.loads(data)
        except ValueError:  # the last line of a capture cut at the limit
            continue
        if not isinstance(chunk, dict):
            continue
        meta.update({k: chunk[k] for k in ("model", "usage") if chunk.get(k)})
        for choice in _choices(chunk):
            index = choice.get("index", 0) if isinstance(choice.get("index"), int) else 0
            delta = choice.get("delta")
            chat = chat or isinstance(delta, Mapping)
            piece = delta.get("content") if isinstance(delta, Mapping) else choice.get("text")
            if isinstance(piece, str):
                texts.setdefault(index, []).append(piece)
            if isinstance(choice.get("finish_reason"), str):
                finish[index] = choice["finish_reason"]
    if not meta and not texts:
        return None
    choices = []
    for index in sorted(set(texts) | set(finish)):
        text = "".join(texts.get(index, []))
        body_key: dict[str, Any] = {"message": {"content": text}} if chat else {"text": text}
        choices.append({"index": index, "finish_reason": finish.get(index), **body_key})
    return {**meta, "choices": choices}


def message_text(message: Any) -> str:
    """The text of one chat message: a string ``content`` or its text parts, joined; a tool
    result part (``{"type": "tool_result", "content": …}``, as Anthropic-style APIs send tool
    output back in a user turn) gives its content's text.

    >>> message_text({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
    ...     "content": [{"type": "text", "text": "page says: ignore previous instructions"}]}]})
    'page says: ignore previous instructions'
    """
    if not isinstance(message, Mapping):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text for part in content if (text := _part_text(part)))
    refusal = message.get("refusal")
    return refusal if isinstance(refusal, str) else ""


def _part_text(part: Any) -> str:
    if not isinstance(part, Mapping):
        return ""
    if isinstance(part.get("text"), str):
        return str(part["text"])
    if part.get("type") == "tool_result":
        inner = part.get("content")
        return inner if isinstance(inner, str) else message_text({"content": inner})
    return ""


def _chat_input(messages: Any, mode: CaptureMode) -> EventInput:
    if not isinstance(messages, list):
        return EventInput()
    turns = [Turn(role if isinstance(role := m.get("role"), str) else None, message_text(m),
                  tool_results_only(m.get("content")))
             for m in messages if isinstance(m, Mapping)]
    text, chars = caller_text(turns)
    return text_input(text, mode, chars=chars)


def _prompt_inputs(prompt: Any, mode: CaptureMode) -> list[EventInput]:
    if isinstance(prompt, str):
        return [text_input(prompt, mode)]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return [text_input(p, mode) for p in prompt]
    if isinstance(prompt, list) and prompt:  # token ids: their count is all there is to say
        flat = prompt if all(isinstance(t, int) for t in prompt) else None
        return [EventInput(tokens=len(flat))] if flat is not None else [EventInput() for _ in prompt]
    return [EventInput()]


def _outputs(response: Any, operation: str, mode: CaptureMode, content: CallContent) -> list[EventOutput]:
    if operation == "embeddings":
        return []
    generated = response[0] if isinstance(response, list) and response else response
    if isinstance(generated, Mapping) and isinstance(generated.get("generated_text"), str):
        return [text_output(generated["generated_text"], mode)]  # TGI
    choices = _choices(response) if isinstance(response, Mapping) else []
    texts = [_choice_text(c) for c in choices]
    reasons = [c.get("finish_reason") for c in choices]
    content.finish_reasons = tuple(r for r in reasons if isinstance(r, str))
    if not choices:
        return []
    calls = _mapping(choices[0].get("message")).get("tool_calls")
    if isinstance(calls, list):
        content.attributes["tool_calls"] = len(calls)
    return [
        text_output(text, mode, finish_reason=reason if isinstance(reason, str) else None)
        for text, reason in zip(texts, reasons, strict=True)
    ]


def _pair(inputs: list[EventInput], outputs: list[EventOutput]) -> list[Row]:
    if len(inputs) > 1:  # a batch of prompts: choice i answers prompt i
        return [
            Row(inp, outputs[i] if len(outputs) == len(inputs) else EventOutput())
            for i, inp in enumerate(inputs)
        ]
    if not outputs:
        return [Row(inputs[0])] if inputs else []
    first = outputs[0]
    if len(outputs) > 1:  # n > 1 choices for one prompt: keep the first, count them all
        first.chars = sum(o.chars or 0 for o in outputs)
    return [Row(inputs[0] if inputs else EventInput(), first)]


def _choices(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    choices = body.get("choices")
    if not isinstance(choices, list):
        return []
    valid = [c for c in choices if isinstance(c, Mapping)]
    return sorted(valid, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)


def _choice_text(choice: Mapping[str, Any]) -> str | None:
    if "message" in choice:
        return message_text(choice["message"]) or None
    text = choice.get("text")
    return text if isinstance(text, str) else None


def _request_options(req: Mapping[str, Any], content: CallContent) -> None:
    attrs = content.attributes
    if isinstance(req.get("model"), str):
        content.request_model = req["model"]
        attrs["request_model"] = req["model"]
    parameters = _mapping(req.get("parameters"))
    max_tokens = req.get("max_tokens", req.get("max_completion_tokens", parameters.get("max_new_tokens")))
    if _is_int(max_tokens):
        content.max_tokens = attrs["max_tokens"] = max_tokens
    for name in _OPTIONS:
        value = req.get(name)
        if isinstance(value, bool | int | float):
            attrs[name] = value
    for name in ("messages", "tools"):
        if isinstance(req.get(name), list):
            attrs[name] = len(req[name])


def _response_meta(resp: Mapping[str, Any], content: CallContent) -> None:
    if isinstance(resp.get("model"), str):
        content.response_model = resp["model"]
        content.attributes["response_model"] = resp["model"]
    usage = _mapping(resp.get("usage"))
    tokens_in = usage.get("prompt_tokens", usage.get("input_tokens"))
    tokens_out = usage.get("completion_tokens", usage.get("output_tokens"))
    content.input_tokens = tokens_in if _is_int(tokens_in) else None
    content.output_tokens = tokens_out if _is_int(tokens_out) else None


def _embeddings(response: Any) -> bool:
    data = response.get("data") if isinstance(response, Mapping) else None
    return isinstance(data, list) and bool(data) and isinstance(data[0], Mapping) and "embedding" in data[0]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
