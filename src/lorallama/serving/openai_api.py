"""An OpenAI-compatible API on every Space: ``POST /v1/chat/completions`` (streaming or not) and ``GET /v1/models``.

    from openai import OpenAI
    client = OpenAI(base_url="https://<owner>-<space>.hf.space/v1", api_key="unused")
    client.chat.completions.create(model="finetome", messages=[{"role": "user", "content": "Hi"}], stream=True)

A request goes the way a message typed in the page goes: the same checks (``ui.check_message``), the same caps on
sampling (``ui.sampling_for``), the same context fitting and safe prompt encoding (``chat.fit_prompt`` →
``chat.encode_prompt``: control tokens typed in a message stay text), the same ``spaces.GPU`` call with the GPU time
computed from the request and the same GPU lock as the page. At most ``config.queue_size`` API requests wait at once
(then 429). Supported: ``messages`` (text, or text parts), ``max_tokens`` / ``max_completion_tokens``, ``temperature``,
``top_p``, ``seed``, ``stop`` (up to 4 strings), ``stream`` (+ ``stream_options.include_usage``), ``n`` = 1. Errors are
4xx with OpenAI's JSON error body, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
from fastapi import Request  # at module level: FastAPI resolves the handler's annotations from here

from . import chat, ui
from .ui import GPU_LOCK

ROLES = ("system", "user", "assistant")
MAX_STOPS = 4
MAX_MESSAGES = 400


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str = ""):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _json_error(e: RequestError):
    from fastapi.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status)


# ---------------------------------------------------------------------------------------------------------------
# Reading a request


def _number(body: dict, key: str, low: float, high: float, integer: bool = False) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(400, f"'{key}' must be a number", key, "invalid_type")
    if integer and int(value) != value:
        raise RequestError(400, f"'{key}' must be an integer", key, "invalid_type")
    if not low <= value <= high:
        raise RequestError(400, f"'{key}' must be between {low:g} and {high:g}; got {value}", key, "invalid_value")
    return int(value) if integer else float(value)


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(400, f"{where}: only text content parts are supported", where, "invalid_content")
            texts.append(part["text"])
        return "".join(texts)
    raise RequestError(400, f"{where}: 'content' must be a string or a list of text parts", where, "invalid_content")


def _messages(body: dict) -> tuple[str, list[dict[str, str]], str]:
    """(system prompt, earlier turns, the message to answer) from OpenAI ``messages``."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content}", "messages", "invalid_type")
    system: list[str] = []
    turns: list[dict[str, str]] = []
    for i, message in enumerate(messages[-MAX_MESSAGES:]):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(400, f"{where} must be an object with 'role' and 'content'", where, "invalid_type")
        role = "system" if message.get("role") == "developer" else message.get("role")
        if role not in ROLES:
            raise RequestError(
                400,
                f"{where}: role must be system, user or assistant; got {message.get('role')!r}",
                where,
                "invalid_role",
            )
        text = _text(message.get("content"), where)
        if role == "system":
            system.append(text)
        else:
            turns.append({"role": role, "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise RequestError(400, "the last message must be the user's", "messages", "invalid_value")
    return "\n\n".join(s for s in system if s.strip()), turns[:-1], turns[-1]["content"]


def _stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOPS:
        raise RequestError(
            400, f"'stop' must be a string or a list of up to {MAX_STOPS} strings", "stop", "invalid_value"
        )
    return [s for s in stops if s]


# ---------------------------------------------------------------------------------------------------------------
# Answering


class Api:
    """The API of one built app (its ``AppState``): the models it serves by id, and one generation at a time."""

    def __init__(self, state: ui.AppState):
        self.state = state
        config = state.config
        if set(state.models) == {"model"}:  # the chat Space: one model, named by its slug
            self.models = {getattr(config, "slug", "chat"): state.models["model"]}
        else:  # the compare arena: one model per column
            self.models = dict(state.models)
        self.waiting = threading.BoundedSemaphore(max(1, int(getattr(config, "queue_size", 16))))

        @ui.gpu()
        def generate(model_id: str, input_ids: list[int], sampling: dict[str, Any]) -> Iterator[str]:
            with GPU_LOCK:
                yield from chat.stream_ids(self.models[model_id], input_ids, chat.Sampling(**sampling))

        self.generate = generate

    def model_list(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "lorallama"} for m in self.models],
        }

    def plan(self, body: Any) -> dict[str, Any]:
        """Everything checked and the prompt encoded; raises ``RequestError``."""
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object", None, "invalid_json")
        model_id = body.get("model")
        if model_id is None and len(self.models) == 1:
            model_id = next(iter(self.models))
        if model_id not in self.models:
            raise RequestError(
                404,
                f"model {model_id!r} is not served here; GET /v1/models lists: {', '.join(self.models)}",
                "model",
                "model_not_found",
            )
        if body.get("n", 1) != 1:
            raise RequestError(400, "only n=1 is supported", "n", "invalid_value")
        config, cm = self.state.config, self.models[model_id]
        system, earlier, text = _messages(body)
        max_tokens = _number(body, "max_completion_tokens", 1, 1e9, True) or _number(body, "max_tokens", 1, 1e9, True)
        temperature = _number(body, "temperature", 0, 2)
        top_p = _number(body, "top_p", 0, 1)
        seed = _number(body, "seed", -(2**63), 2**63, True)
        stops = _stops(body)
        if not isinstance(body.get("stream", False), bool):
            raise RequestError(400, "'stream' must be true or false", "stream", "invalid_type")
        try:
            ui.check_message(text.strip(), config.max_message_chars, system)
            sampling = ui.sampling_for(
                config,
                max_tokens if max_tokens is not None else config.max_new_tokens,
                temperature if temperature is not None else config.temperature,
                top_p if top_p is not None else config.top_p,
                config.repetition_penalty,
                seed,
                ui.window_for(config, cm),
            )
            history = chat.history_messages(earlier, config.max_message_chars)
            messages = ui.with_system(system, history + [{"role": "user", "content": text.strip()}])
            prompt = ui.fit_or_refuse(config, cm, messages, sampling)
        except gr.Error as e:
            raise RequestError(400, e.message, "messages", "invalid_value") from None
        return {"model": model_id, "cm": cm, "prompt": prompt, "sampling": sampling, "stops": stops, "body": body}

    def admit(self) -> None:
        """A place among the waiting requests (``pieces`` gives it back), or 429."""
        if not self.waiting.acquire(blocking=False):
            raise RequestError(429, "the Space is busy: too many requests are waiting; try again shortly", None, "busy")

    def pieces(self, plan: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
        """``(text, None)`` pieces of the answer, cut before a stop sequence, then ``("", finish_reason)``.

        Runs after ``admit``; gives the place back when done."""
        import contextlib
        import dataclasses

        stops: list[str] = plan["stops"]
        hold = max((len(s) for s in stops), default=1) - 1
        answer, sent = "", 0
        reason = None
        ui.count(self.state, True)
        try:
            stream = self.generate(plan["model"], plan["prompt"].input_ids, dataclasses.asdict(plan["sampling"]))
            with contextlib.closing(stream):
                for piece in stream:
                    answer += piece
                    cut = min((i for i in (answer.find(s, max(0, sent - hold)) for s in stops) if i >= 0), default=-1)
                    if cut >= 0:
                        answer, reason = answer[:cut], "stop"
                        if cut > sent:
                            yield answer[sent:cut], None
                        sent = cut
                        break
                    ready = len(answer) - hold if stops else len(answer)
                    if ready > sent:
                        yield answer[sent:ready], None
                        sent = ready
        except gr.Error as e:
            status = 429 if getattr(e, "title", None) == ui.QUOTA_TITLE else 400
            raise RequestError(status, e.message, None, "quota_exceeded" if status == 429 else None) from None
        finally:
            ui.count(self.state, False)
            self.waiting.release()
        if sent < len(answer):
            yield answer[sent:], None
        tokens = len(plan["cm"].tokenizer(answer, add_special_tokens=False)["input_ids"]) if answer else 0
        plan["usage"] = {
            "prompt_tokens": len(plan["prompt"].input_ids),
            "completion_tokens": tokens,
            "total_tokens": len(plan["prompt"].input_ids) + tokens,
        }
        if reason is None:
            reason = "length" if tokens >= plan["sampling"].max_new_tokens else "stop"
        yield "", reason


def _completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def routes(state: ui.AppState) -> list:
    """``/v1/models`` and ``/v1/chat/completions`` for a built app's state, as FastAPI routes."""
    from fastapi.responses import JSONResponse, StreamingResponse
    from fastapi.routing import APIRoute

    api = Api(state)

    def models_route():
        return JSONResponse(api.model_list())

    async def completions_route(request: Request):
        try:
            try:
                body = json.loads(await request.body() or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RequestError(400, f"the request body is not valid JSON: {e}", None, "invalid_json") from None
            plan = api.plan(body)
            api.admit()
        except RequestError as e:
            return _json_error(e)
        created, cid = int(time.time()), _completion_id()
        if body.get("stream"):
            return StreamingResponse(_sse(api, plan, cid, created), media_type="text/event-stream")
        from starlette.concurrency import run_in_threadpool

        try:
            parts = await run_in_threadpool(lambda: list(api.pieces(plan)))
        except RequestError as e:
            return _json_error(e)
        text = "".join(p for p, _ in parts)
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": plan["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": parts[-1][1],
                        "logprobs": None,
                    }
                ],
                "usage": plan["usage"],
            }
        )

    return [
        APIRoute("/v1/models", models_route, methods=["GET"], include_in_schema=False),
        APIRoute("/v1/chat/completions", completions_route, methods=["POST"], include_in_schema=False),
    ]


def _sse(api: Api, plan: dict[str, Any], cid: str, created: int) -> Iterator[str]:
    def chunk(delta: dict, reason: str | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": plan["model"]}
        return "data: " + json.dumps({**body, "choices": [choice], **extra}) + "\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        for text, reason in api.pieces(plan):
            yield chunk({"content": text} if text else {}, reason)
    except RequestError as e:
        yield "data: " + json.dumps(e.body()) + "\n\n"
        return
    options = plan["body"].get("stream_options") or {}
    if isinstance(options, dict) and options.get("include_usage"):
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": plan["model"]}
        yield "data: " + json.dumps({**body, "choices": [], "usage": plan["usage"]}) + "\n\n"
    yield "data: [DONE]\n\n"
