"""``lorallama chat``: stream one answer from base + adapter, or serve the model's chat Space (``--ui``)."""

from __future__ import annotations

import contextlib
import sys


def register(sub) -> None:
    p = sub.add_parser("chat", help="stream an answer from base + adapter, or serve the model's chat Space (--ui)")
    p.add_argument("target", help="recipe slug, adapter folder, or a base (bundled:smollm2-135m-instruct, Hub id)")
    p.add_argument("--prompt", help="the user message (required without --ui)")
    p.add_argument("--ui", action="store_true", help="serve the model's chat Space locally and print its URL")
    p.add_argument("--host", default="127.0.0.1", help="with --ui: address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="with --ui: port (default: the first free one from 7860)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--base-only", action="store_true", help="answer with the adapter switched off")
    p.set_defaults(func=cmd_chat)


SERVE_EXTRA = ("gradio", "gradio_client", "spaces")  # what `pip install 'lorallama[serve]'` brings


def _ui_modules():
    """The chat Space's parts; without the ``serve`` extra, an error that names the fix instead of an ImportError."""
    from ..errors import SpaceError

    try:
        from ..serving.chat_app import build_chat_app
        from ..serving.config import ChatConfig
        from ..serving.web import serve
    except ImportError as e:
        if (e.name or "").split(".")[0] not in SERVE_EXTRA:
            raise
        raise SpaceError(
            f"chat --ui serves the chat Space with Gradio, and {e.name} is not installed: "
            "pip install 'lorallama[serve]' (or chat in the terminal with --prompt)"
        ) from e
    return build_chat_app, ChatConfig, serve


def cmd_chat(args) -> int:
    from ..errors import LorallamaError

    if args.ui:
        build_chat_app, ChatConfig, serve = _ui_modules()
        serve(build_chat_app(ChatConfig.from_target(args.target)), host=args.host, port=args.port)
        return 0
    if not args.prompt:
        raise LorallamaError('give --prompt "…" to get one answer, or --ui to chat in the browser')
    from ..serving import chat

    cm = chat.load_chat_model(args.target)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    ctx = cm.base_only() if args.base_only else contextlib.nullcontext()
    with ctx:
        for piece in chat.stream_chat(
            cm, messages, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p
        ):
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
