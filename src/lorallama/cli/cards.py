"""``lorallama cards``: render a finished run's model card, and push it without touching the weights."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    """``lorallama cards``."""

    p = subparsers.add_parser(
        "cards",
        help="render a model card from a finished run (and push it without touching the weights)",
        description=(
            "Render the model card of a finished run from model_cards/<slug>.md: hyperparameters actually used, "
            "hardware, backend and duration, loss curve, eval losses, base-vs-tuned answers, data report, how to "
            "use it and the one-line re-run command. The run comes from an adapter folder, runs/<slug>/adapter, or "
            "the recipe's model repo."
        ),
        epilog=(
            "examples:\n"
            "  lorallama cards runs/demo/adapter --compute-samples   # writes runs/demo/adapter/README.md\n"
            "  lorallama cards finetome --output card.md\n"
            "  lorallama cards marx --push                          # README.md (+ loss.png) to the model repo"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", help="recipe slug or adapter folder (one holding run.json)")
    p.add_argument(
        "--output", type=Path, help="write the card here (default: the adapter folder's README.md, or stdout)"
    )
    p.add_argument("--samples", type=Path, help='base-vs-tuned answers as JSON: [{"prompt", "base", "tuned"}, ...]')
    p.add_argument(
        "--compute-samples",
        action="store_true",
        help="answer the three original prompts with the base and the tuned model (greedy) and record them",
    )
    p.add_argument(
        "--push",
        action="store_true",
        help="upload README.md, loss.png, tradeoff.png and samples.json to the model repo",
    )
    p.add_argument("--repo", help="model repo to push to (default: the recipe's hub.model_repo, HF_NAMESPACE applied)")
    p.add_argument("--template", type=Path, help="card template (default: model_cards/<slug>.md, else the built-in)")
    p.set_defaults(func=cmd_cards)


def cmd_cards(args) -> int:
    from .. import hub
    from ..errors import CardError
    from ..names import namespace_override, with_namespace
    from ..plots import loss_png, tradeoff_png
    from ..publishing import cards

    run, recipe, folder = cards.locate_run(args.target)
    samples = run.samples
    if args.samples:
        samples = cards.read_samples(args.samples.read_bytes())
    if args.compute_samples:
        if folder is None:
            raise CardError("--compute-samples needs the adapter locally: pass its folder (runs/<slug>/adapter)")
        samples = cards.compute_samples(folder)
    namespace = namespace_override()
    text = cards.model_card(
        recipe, run.meta, history=run.history, samples=samples, namespace=namespace, template=args.template
    )
    files: dict[str, Path | bytes] = {"README.md": text.encode()}
    if samples is not None and samples != run.samples:
        files[cards.SAMPLES_FILE] = json.dumps(samples, indent=1, ensure_ascii=False).encode()
    if folder is not None:
        for name, data in files.items():
            (folder / name).write_bytes(data)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"card written to {args.output}")
    elif folder is not None:
        print(f"card written to {folder / 'README.md'}")
    elif not args.push:
        sys.stdout.write(text)
    if args.push:
        repo = args.repo or with_namespace(recipe.hub.model_repo, namespace)
        if not repo:
            raise CardError(f"recipe {recipe.slug!r} names no hub.model_repo: pass --repo namespace/name")
        png = run.loss_png or (loss_png(run.history, f"{recipe.slug}: training loss") if run.history else None)
        if png is not None:
            files["loss.png"] = png
        if folder is not None and (folder / cards.TRADEOFF_PNG).is_file():
            files[cards.TRADEOFF_PNG] = (folder / cards.TRADEOFF_PNG).read_bytes()
        elif (run.meta.get("quality") or {}).get("records"):
            files[cards.TRADEOFF_PNG] = tradeoff_png(run.meta["quality"], f"{recipe.slug}: domain vs general chat loss")
        if folder is not None and (folder / cards.SAMPLES_FILE).is_file():
            files[cards.SAMPLES_FILE] = (folder / cards.SAMPLES_FILE).read_bytes()
        commit = hub.upload_files(repo, files, f"Model card for {recipe.slug} (lorallama cards)")
        print(f"pushed {', '.join(sorted(files))} to {repo} ({commit[:12]}); weights untouched")
    return 0
