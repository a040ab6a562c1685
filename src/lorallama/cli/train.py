"""``lorallama train``: a recipe into an adapter, resuming an interrupted run; ``--gpus N`` for data parallelism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("train", help="train a recipe into an adapter (resumes an interrupted run)")
    p.add_argument("recipe", help="recipe slug (train_jobs/<slug>.yaml) or path to a recipe YAML")
    p.add_argument("--output", type=Path, help="output folder (default runs/<slug>)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (overrides the recipe)")
    p.add_argument("--time-budget", help="stop cleanly with a checkpoint after this long, e.g. 3h50m")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. trainer.learning_rate=1e-4 (repeatable)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", metavar="CHECKPOINT", help="resume from this checkpoint folder")
    g.add_argument("--restart", action="store_true", help="ignore existing checkpoints and start over")
    p.add_argument(
        "--backend", choices=["unsloth", "transformers", "cpu"], help="force a backend (default: best available)"
    )
    p.add_argument(
        "--no-push",
        action="store_true",
        help="train locally only, even when the recipe names hub.model_repo (default: push checkpoints there)",
    )
    p.add_argument(
        "--gpus", type=int, default=1, help="data-parallel workers (DDP via accelerate launch, transformers+PEFT)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="train nothing: count the data's tokens and steps, and print an ETA and cost per Jobs flavor",
    )
    p.set_defaults(func=cmd_train)


def check_inputs(recipe) -> None:
    """A wrong data path or model base, refused at once: before a command's heavy imports (torch, transformers, TRL)
    and before any tokenizer or model is loaded, with the message reading them would give."""
    from .. import models
    from ..training import data

    data.check_sources(recipe)
    models.check_base(models.base_chain(recipe).base)


def cmd_train(args) -> int:
    from ..recipe import load_recipe, parse_duration

    recipe = load_recipe(args.recipe, args.set)
    check_inputs(recipe)  # before the heavy imports below

    from ..publishing.cards import adapter_card
    from ..training import distributed
    from ..training.backend import choose_backend
    from ..training.run import train

    if args.dry_run:
        from ..training.estimate import dry_run

        print(dry_run(recipe))
        return 0
    if args.gpus > 1 and not distributed.is_worker(os.environ):
        # The workers run this same command, one DDP rank each, with the backend named on their command line.
        backend = distributed.worker_backend(args.backend or os.environ.get("LORALLAMA_BACKEND"))
        command = [*distributed.launcher(args.gpus, backend), "-m", "lorallama.cli"]
        command += [*_argv_without(args.argv, "--gpus", "--backend"), "--backend", backend]
        print(f"launching {args.gpus} {backend} workers", file=sys.stderr, flush=True)
        return subprocess.run(command).returncode
    resume = "never" if args.restart else (args.resume or "auto")
    budget = parse_duration(args.time_budget) if args.time_budget else None
    result = train(
        recipe,
        args.output,
        max_steps=args.max_steps,
        resume=resume,
        backend=choose_backend(recipe, args.backend) if args.backend else None,
        time_budget=budget,
        push=False if args.no_push else None,
        card=adapter_card,
    )
    # The last line says how far the Hub has the run: what a relaunch on a fresh machine resumes from.
    on_hub = f"; last checkpoint on the Hub: step {result.hub_step}" if result.hub_step is not None else ""
    if result.interrupted_by is not None:
        print(f"interrupted at step {result.global_step}: checkpoint saved; run the same command to resume{on_hub}")
        return 128 + result.interrupted_by
    status = "finished" if result.finished else f"stopped at step {result.global_step}"
    if stopped := _stopped_early(result.adapter_dir):  # the eval guard ended the run, and says why
        status = f"stopped early at step {result.global_step}, {stopped}"
    print(f"{status}: adapter in {result.adapter_dir}, loss curve {result.adapter_dir / 'loss.png'}{on_hub}")
    return 0


def _stopped_early(adapter_dir: Path) -> str | None:
    import json

    meta = adapter_dir / "run.json"
    return (json.loads(meta.read_text()).get("quality") or {}).get("stopped_early") if meta.is_file() else None


def _argv_without(argv: list[str], *flags: str) -> list[str]:
    """``argv`` without ``--flag VALUE`` and ``--flag=VALUE`` for each flag."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        elif not any(arg.startswith(f + "=") for f in flags):
            out.append(arg)
    return out
