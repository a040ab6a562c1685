"""``lorallama demo``: fine-tune the bundled SmolLM2 on the demo data offline, compare answers, serve the chat."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("demo", help="fine-tune the bundled SmolLM2 on the demo data and compare base vs tuned")
    p.add_argument("--output", type=Path, default=Path("runs/demo"))
    p.add_argument("--time-budget", default="4m30s", help="training time limit (default 4m30s)")
    p.add_argument("--restart", action="store_true", help="train again even if a finished run exists")
    p.add_argument(
        "--serve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="end by serving the demo chat Space locally (default: when run from a terminal)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..errors import SpaceError
    from ..prompts import COMPARISON_PROMPTS
    from ..publishing.cards import adapter_card
    from ..recipe import load_recipe, parse_duration
    from ..serving import chat
    from ..training.run import train

    serve = sys.stdin.isatty() and sys.stdout.isatty() if args.serve is None else args.serve
    if serve and args.serve and not _gradio_installed():
        # Asked for explicitly: say so before minutes of training, not after. From a terminal the chat is skipped.
        raise SpaceError(
            "demo --serve serves the chat Space with Gradio, and gradio is not installed: "
            "pip install 'lorallama[serve]' (or run the demo with --no-serve)"
        )
    serve = serve and _gradio_installed()
    recipe = load_recipe("demo")
    started = time.time()
    result = train(
        recipe,
        args.output,
        resume="never" if args.restart else "auto",
        time_budget=parse_duration(args.time_budget),
        push=False,  # the demo runs offline
        card=adapter_card,
    )
    print(f"\ntrained {result.global_step} steps in {time.time() - started:.0f} s on {result.backend.device}")
    cm = chat.load_chat_model(str(result.adapter_dir))
    for prompt in COMPARISON_PROMPTS:
        with cm.base_only():
            base = chat.answer(cm, prompt, max_new_tokens=60)
        tuned = chat.answer(cm, prompt, max_new_tokens=60)
        print(f"\n### {prompt}\n  base : {_one_line(base)}\n  tuned: {_one_line(tuned)}")
    print(f"\nloss curve: {result.adapter_dir / 'loss.png'}\nadapter:    {result.adapter_dir}")
    if serve:
        from ..serving.web import serve_demo

        print("\nthe demo chat Space (bundled model + this adapter):")
        serve_demo(result.adapter_dir, model=cm)
    else:
        print(f"\nchat with it in the browser: lorallama chat --ui {result.adapter_dir}")
    return 0


def _gradio_installed() -> bool:
    try:
        import gradio  # noqa: F401
    except ImportError:
        return False
    return True


def _one_line(text: str) -> str:
    return " ".join(text.split())
