"""Serving a built app: ``launch`` (what a Space's ``app.py`` calls) with the project's own routes, and ``serve``.

Routes beside Gradio's: the embeddable chat bubble at ``/lorallama/widget.js``, Gradio's ``<gradio-app>`` web
component loader at ``/lorallama/gradio.js`` (docs/embed.md) and the OpenAI-compatible API at ``/v1/models`` and
``/v1/chat/completions`` (``openai_api``). They are handed to the FastAPI app through ``launch(app_kwargs={"routes":
…})``, Gradio's public way in, so ZeroGPU's own start-up hook on ``launch`` still runs.

``launch`` also sets up each model's decoding before serving (``decoding.prepare``: compiled ahead of time on
ZeroGPU, compiled and captured in CUDA graphs on other GPUs, ``generate`` on CPU), so no visitor waits for it.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import gradio as gr

from .. import __version__
from ..paths import PACKAGE_DIR
from . import chat, decoding, openai_api, ui
from .chat_app import WIDGET_ROUTE, build_chat_app
from .config import ChatConfig

STATIC = Path(__file__).parent / "static"
WEB_COMPONENT_ROUTE = "/lorallama/gradio.js"


def widget_file() -> Path:
    return STATIC / "widget.js"


def widget_js():
    """The embed bubble's script (built by ``make widget`` into ``serving/static``)."""
    from fastapi.responses import FileResponse, PlainTextResponse

    path = widget_file()
    if not path.is_file():
        return PlainTextResponse(
            "// the lorallama widget was not built: run `make widget` (npm) before serving or syncing the Space\n",
            status_code=404,
            media_type="text/javascript",
        )
    etag = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return FileResponse(
        path,
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=600", "ETag": etag, "Access-Control-Allow-Origin": "*"},
    )


def gradio_js():
    """Gradio's ``<gradio-app>`` web component, loaded from the Space itself instead of Gradio's CDN.

    Gradio ships ``gradio.js`` (one line: ``import("./assets/index-….js")``) and the Space already serves
    ``/assets/``; this hands out that line with the path made absolute, so it works from ``/lorallama/``.
    """
    from fastapi.responses import PlainTextResponse

    source = Path(gr.__file__).parent / "templates" / "frontend" / "gradio.js"
    text = source.read_text(encoding="utf-8") if source.is_file() else ""
    if "./assets/" not in text:
        return PlainTextResponse("// this Gradio build has no web component loader\n", 404)
    return PlainTextResponse(
        text.replace("./assets/", "/assets/"),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=600", "Access-Control-Allow-Origin": "*"},
    )


def routes(demo: gr.Blocks | None = None) -> list:
    """The project's routes, for ``FastAPI(routes=…)``; with a built app, its OpenAI-compatible API too."""
    from fastapi.routing import APIRoute

    state = getattr(demo, "lorallama", None)
    return [
        APIRoute(WIDGET_ROUTE, widget_js, methods=["GET"], include_in_schema=False),
        APIRoute(WEB_COMPONENT_ROUTE, gradio_js, methods=["GET"], include_in_schema=False),
        *(openai_api.routes(state) if state is not None else []),
    ]


def prepare_decoding(demo: gr.Blocks) -> None:
    """Each model's decoding set up now (compiled and warmed where the hardware allows), at most once."""
    state = getattr(demo, "lorallama", None)
    if state is None:
        return
    for cm in {id(m): m for m in state.models.values()}.values():
        if cm.decoder is None and not getattr(cm, "decoding_prepared", False):
            decoding.prepare(cm, max_len=ui.window_for(state.config, cm))
            cm.decoding_prepared = True


def launch(demo: gr.Blocks, **kwargs: Any):
    """``demo.launch(**kwargs)`` with decoding prepared and the project's routes added to Gradio's FastAPI app."""
    prepare_decoding(demo)
    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs["routes"] = [*routes(demo), *app_kwargs.get("routes", [])]
    state = getattr(demo, "lorallama", None)
    if state is not None and not kwargs.get("quiet"):
        models_ = {f"{m.base}{''.join(f' + {a}' for a in m.merged)}" for m in state.models.values()}
        # The log names the package folder: a Space runs its vendored copy, and this shows which one it is.
        print(f"lorallama {__version__} ({PACKAGE_DIR}) serving {', '.join(sorted(models_))}", flush=True)
    kwargs.setdefault("show_error", True)
    return demo.launch(app_kwargs=app_kwargs, **kwargs)


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True, out=None) -> str:
    """Serve ``demo`` locally and print its URL; with ``block`` wait until Ctrl-C, then stop it."""
    out = out or sys.stdout
    _, url, _ = launch(demo, server_name=host, server_port=port, prevent_thread_lock=True, quiet=True)
    base = url.rstrip("/")
    print(f"chat Space running at {url}  (embed widget: {base}{WIDGET_ROUTE})", file=out, flush=True)
    print(f"OpenAI-compatible API: {base}/v1  (POST /v1/chat/completions, GET /v1/models)", file=out, flush=True)
    if block:
        print("press Ctrl-C to stop it", file=out, flush=True)
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()
    return url


def serve_demo(
    adapter_dir: str | Path,
    *,
    model: chat.ChatModel | None = None,
    block: bool = True,
    port: int | None = None,
    out=None,
) -> str:
    """The demo Space (bundled SmolLM2 + the adapter ``make demo`` just trained), served locally."""
    config = ChatConfig.from_target(str(adapter_dir), slug="demo", title="lorallama · demo (Captain Lora)")
    return serve(build_chat_app(config, model=model), port=port, block=block, out=out)
