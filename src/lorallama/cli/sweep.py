"""``lorallama sweep``: a grid of short trials, locally or as parallel Hugging Face Jobs, ranked by eval.select."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="train a grid of short trials (locally or as parallel Jobs) and rank them by the recipe's eval.select",
        description=(
            "Train one short trial per point of a grid of recipe values and rank the trials by the recipe's choice "
            "rule (eval.select) applied to each trial's published checkpoint. Trials run locally one after another "
            "(or --parallel N at a time), or with --jobs as Hugging Face Jobs, each into its own model repo "
            "<hub.model_repo>-<trial>, at most --max-parallel at once. Every trial resumes like any run: running the "
            "same sweep again finishes what is unfinished. Writes sweep.json, sweep.md, sweep.png and best.yaml."
        ),
        epilog=(
            "examples:\n"
            "  lorallama sweep demo --grid trainer.learning_rate=1e-4,2e-4,5e-4 --max-steps 60\n"
            "  lorallama sweep marx --grid data.replay.fraction=0,0.1,0.2 --grid trainer.learning_rate=1e-4,2e-4 "
            "--jobs --max-parallel 6\n"
            "A value of 0 for data.replay.fraction means a trial without replay."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="recipe slug or YAML path (it needs an eval: section)")
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="values of one recipe key (repeatable)"
    )
    p.add_argument("--max-steps", type=int, help="train each trial this many optimizer steps (trainer.max_steps)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key for every trial")
    p.add_argument("--output", type=Path, help="sweep folder (default runs/<slug>-sweep)")
    p.add_argument("--parallel", type=int, default=1, help="local trials at a time (as separate processes)")
    p.add_argument("--jobs", action="store_true", help="run the trials as Hugging Face Jobs, one model repo each")
    p.add_argument("--max-parallel", type=int, default=4, help="with --jobs: jobs running at once")
    p.add_argument("--flavor", help="with --jobs: hardware (default: the recipe's job.flavor)")
    p.add_argument("--timeout", help="with --jobs: each job's time limit (default: the recipe's job.timeout)")
    p.add_argument("--max-attempts", type=int, default=3, help="with --jobs: jobs per trial before giving up")
    p.add_argument("--poll", type=float, default=10.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from ..errors import RecipeError
    from ..paths import run_dir
    from ..training import sweep

    overrides = list(args.set)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise RecipeError(f"--max-steps {args.max_steps} is not valid: use a step count >= 1")
        overrides.append(f"trainer.max_steps={args.max_steps}")
    trials = sweep.make_trials(sweep.parse_grid(args.grid))
    recipe = sweep.trial_recipe(args.recipe, overrides, trials[0])
    for trial in trials[1:]:  # every point is a valid recipe before anything trains
        sweep.trial_recipe(args.recipe, overrides, trial)
    folder = args.output or Path(f"{run_dir(recipe.slug)}-sweep")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{len(trials)} trials of {recipe.slug}, ranked by eval.select: {recipe.eval.select}", flush=True)
    if args.jobs:
        sweep_id = f"{recipe.slug}-{time.strftime('%Y%m%d-%H%M%S')}"
        sweep.run_jobs(
            args.recipe,
            trials,
            overrides,
            sweep_id,
            max_parallel=args.max_parallel,
            flavor=args.flavor,
            timeout=args.timeout,
            max_attempts=args.max_attempts,
            poll=args.poll,
            on_event=lambda line: print(line, flush=True),
        )
    else:
        sweep.run_local(args.recipe, trials, overrides, folder, parallel=args.parallel)
    best = sweep.write_report(trials, recipe, args.recipe, overrides, folder)
    print(sweep.table(sweep.rank(trials, recipe), recipe))
    print(f"report: {folder / 'sweep.md'}, plot: {folder / 'sweep.png'}, data: {folder / 'sweep.json'}")
    if best is None:
        print("no trial finished: nothing to rank")
        return 1
    print(f"best: {best.name} ({', '.join(best.overrides())}); its recipe: {folder / 'best.yaml'}")
    return 0
