"""The ``lorallama`` command.

lorallama demo                                   # fine-tune the bundled SmolLM2 on CPU, compare answers
lorallama train demo --max-steps 20              # train a recipe (slug or YAML path)
lorallama train finetome --set trainer.learning_rate=1e-4 --output runs/ft
lorallama chat demo --prompt "What is the tallest mountain in the world ?"
lorallama chat --ui demo                         # the model's chat Space, served locally
lorallama data inspect finetome                  # validation report + token-length histogram
lorallama sweep demo --grid trainer.learning_rate=1e-4,5e-4 --max-steps 40   # ranked trials
lorallama data from-feedback you/feedback        # liked / corrected Space conversations → ShareGPT JSONL
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from . import cards, chat, data, demo, export, jobs, sweep, sync, train

COMMANDS = (train, chat, data, jobs, sweep, demo, sync, cards, export)  # each registers its own sub-commands


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorallama",
        description="Fine-tune small Llama models with LoRA and chat with them. Recipes live in train_jobs/<slug>.yaml.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__ + "\nErrors print one line naming the thing and the fix; LORALLAMA_DEBUG=1 adds the traceback.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The one error boundary: a ``LorallamaError`` becomes one line on stderr and exit code 2."""
    from ..errors import LorallamaError

    args = make_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # Our own progress at INFO; libraries (httpx logs every request at INFO) only when they warn.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("lorallama").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except LorallamaError as e:
        if os.environ.get("LORALLAMA_DEBUG", "").strip() not in ("", "0"):
            traceback.print_exc()
        print(f"lorallama: error: {e}", file=sys.stderr)
        return e.exit_code
