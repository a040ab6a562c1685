"""The ``lorallama`` command.

lorallama demo                                   # fine-tune the bundled SmolLM2 on CPU, compare answers
lorallama train demo --max-steps 20              # train a recipe (slug or YAML path)
lorallama train finetome --set trainer.learning_rate=1e-4 --output runs/ft
lorallama chat demo --prompt "What is the tallest mountain in the world ?"
lorallama chat --ui demo                         # the model's chat Space, served locally
lorallama data inspect finetome                  # validation report + token-length histogram
lorallama data from-feedback you/feedback        # liked / corrected Space conversations → ShareGPT JSONL
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

COMPARISON_PROMPTS = (
    "The problem with current economy is",
    "What is the tallest mountain in the world ?",
    "Continue the fibonnaci sequence: 1, 1, 2, 3, 5, 8,",
)


def make_parser() -> argparse.ArgumentParser:
    from . import cards, export, publish, sync  # light: argparse wiring only, no torch

    parser = argparse.ArgumentParser(
        prog="lorallama",
        description="Fine-tune small Llama models with LoRA and chat with them. Recipes live in train_jobs/<slug>.yaml.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    p.set_defaults(func=cmd_train)

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

    p = sub.add_parser("data", help="look at a recipe's training data")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = dsub.add_parser("inspect", help="validation report and token-length histogram (also written as a PNG)")
    q.add_argument("recipe", help="recipe slug or YAML path")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    q.add_argument("--strict", action="store_true", help="stop at the first bad row")
    q.add_argument("--png", type=Path, help="where to write the histogram (default runs/<slug>/token_lengths.png)")
    q.set_defaults(func=cmd_data_inspect)
    q = dsub.add_parser(
        "from-feedback",
        help="turn a Space's feedback dataset into ShareGPT training data (liked + disliked-and-corrected answers)",
    )
    q.add_argument("dataset", help="the Hub dataset LORALLAMA_FEEDBACK_DATASET names, or a local .jsonl file/folder")
    q.add_argument("--output", type=Path, help="JSONL to write (default runs/feedback/<dataset name>.jsonl)")
    q.set_defaults(func=cmd_data_from_feedback)
    publish.add_data_commands(dsub)

    p = sub.add_parser("jobs", help="train as Hugging Face Jobs that push checkpoints and resume from the Hub")
    jsub = p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    q = jsub.add_parser("run", help="upload the job bundle to the model repo and launch training")
    q.add_argument("recipe", help="recipe slug or YAML path (needs hub.model_repo)")
    q.add_argument("--flavor", help="hardware, e.g. t4-small, a10g-small, cpu-basic (default: the recipe's job.flavor)")
    q.add_argument("--timeout", help="job time limit, e.g. 4h (default: the recipe's job.timeout)")
    q.add_argument("--until-done", action="store_true", help="watch and relaunch after errors, timeouts or preemption")
    q.add_argument("--max-attempts", type=int, default=5, help="with --until-done: give up after this many jobs")
    q.add_argument("--backoff", type=float, default=30.0, help="with --until-done: first wait between jobs, seconds")
    q.add_argument("--restart", action="store_true", help="ignore the repo's checkpoint and start the run over")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    q.set_defaults(func=cmd_jobs_run)
    q = jsub.add_parser("status", help="a job's stage")
    q.add_argument("job_id")
    q.set_defaults(func=cmd_jobs_status)
    q = jsub.add_parser("logs", help="a job's logs")
    q.add_argument("job_id")
    q.add_argument("--follow", action="store_true", help="keep streaming until the job ends")
    q.set_defaults(func=cmd_jobs_logs)
    q = jsub.add_parser("cancel", help="cancel a job (it saves and pushes a checkpoint first)")
    q.add_argument("job_id")
    q.set_defaults(func=cmd_jobs_cancel)

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

    for module in (sync, cards, export):  # their commands live beside their code
        module.add_commands(sub)
    return parser


def cmd_train(args) -> int:
    from . import train
    from .recipe import load_recipe, parse_duration

    recipe = load_recipe(args.recipe, args.set)
    if args.gpus > 1 and "LOCAL_RANK" not in os.environ:
        return train.launch_distributed(_argv_without_gpus(args.argv), args.gpus, args.backend)
    resume = "never" if args.restart else (args.resume or "auto")
    budget = parse_duration(args.time_budget) if args.time_budget else None
    result = train.train(
        recipe,
        args.output,
        max_steps=args.max_steps,
        resume=resume,
        backend=_backend(recipe, args.backend),
        time_budget=budget,
        push=False if args.no_push else None,
    )
    if result.interrupted_by is not None:
        print(f"interrupted at step {result.global_step}: checkpoint saved; run the same command to resume")
        return 128 + result.interrupted_by
    status = "finished" if result.finished else f"stopped at step {result.global_step}"
    print(f"{status}: adapter in {result.adapter_dir}, loss curve {result.adapter_dir / 'loss.png'}")
    return 0


def _argv_without_gpus(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            out.append(arg)
    return out


def _backend(recipe, name):
    from . import models

    return models.choose_backend(recipe, name) if name else None


def cmd_chat(args) -> int:
    from . import chat

    if args.ui:
        from . import space

        config = space.ChatConfig.from_target(args.target)
        space.serve(space.build_chat_app(config), host=args.host, port=args.port)
        return 0
    if not args.prompt:
        print('lorallama: error: give --prompt "…" to get one answer, or --ui to chat in the browser', file=sys.stderr)
        return 2
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


def cmd_data_inspect(args) -> int:
    from . import data, models
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    chain = models.base_chain(recipe)
    tokenizer = models.load_tokenizer(chain.base, recipe.model.chat_template)
    template = models.training_chat_template(tokenizer) if recipe.trainer.assistant_only_loss else None
    prepared = data.prepare(recipe, tokenizer, template, strict=args.strict or None)
    png = args.png or Path("runs") / recipe.slug / "token_lengths.png"
    lengths = [len(ids) for ids in prepared.train["input_ids"]]
    print(prepared.report.format())
    print(
        f"\ntraining examples: {len(lengths)}; held out: {', '.join(f'{k} {len(v)}' for k, v in prepared.eval.items()) or 'none'}"
    )
    print("token lengths:")
    print(data.length_histogram(lengths, png, title=f"{recipe.slug}: tokens per training example"))
    print(f"\nhistogram written to {png}")
    return 0


def cmd_data_from_feedback(args) -> int:
    from . import feedback

    name = Path(args.dataset.rstrip("/")).name.removesuffix(".jsonl") or "feedback"
    output = args.output or Path("runs") / "feedback" / f"{name}.jsonl"
    conversion = feedback.from_feedback(args.dataset, output)
    print(conversion.summary())
    print(f"written to {output}; train on it with: lorallama train <recipe> --set data.source={output}")
    return 0


def cmd_jobs_run(args) -> int:
    from . import jobs
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    if not args.until_done:
        job_id = jobs.launch(recipe, args.flavor, args.timeout, restart=args.restart)
        print(f"job {job_id} launched; follow it with: lorallama jobs logs {job_id} --follow")
        return 0
    if args.restart:
        print("lorallama: error: --restart and --until-done do not mix: restart once, then watch", file=sys.stderr)
        return 2
    attempts = jobs.run_until_done(
        recipe,
        args.flavor,
        args.timeout,
        max_attempts=args.max_attempts,
        backoff=args.backoff,
        on_launch=lambda job_id: print(f"job {job_id} launched", flush=True),
        on_log=lambda line: print(line, flush=True),
    )
    print(f"run finished after {len(attempts)} job(s): {', '.join(f'{a.job_id} {a.stage}' for a in attempts)}")
    return 0


def cmd_jobs_status(args) -> int:
    from . import jobs

    stage, message = jobs.stage(args.job_id)
    print(f"{args.job_id}: {stage}" + (f" ({message})" if message else ""))
    return 0


def cmd_jobs_logs(args) -> int:
    from . import hub

    for line in hub.api().fetch_job_logs(job_id=args.job_id, follow=args.follow):
        print(line, flush=True)
    return 0


def cmd_jobs_cancel(args) -> int:
    from . import jobs

    jobs.cancel(args.job_id)
    print(f"cancel sent to {args.job_id}")
    return 0


def cmd_demo(args) -> int:
    from . import chat, train
    from .recipe import load_recipe, parse_duration

    recipe = load_recipe("demo")
    started = time.time()
    result = train.train(
        recipe,
        args.output,
        resume="never" if args.restart else "auto",
        time_budget=parse_duration(args.time_budget),
        push=False,  # the demo runs offline
    )
    print(f"\ntrained {result.global_step} steps in {time.time() - started:.0f} s on {result.backend.device}")
    cm = chat.load_chat_model(str(result.adapter_dir))
    for prompt in COMPARISON_PROMPTS:
        with cm.base_only():
            base = chat.answer(cm, prompt, max_new_tokens=60)
        tuned = chat.answer(cm, prompt, max_new_tokens=60)
        print(f"\n### {prompt}\n  base : {_one_line(base)}\n  tuned: {_one_line(tuned)}")
    print(f"\nloss curve: {result.adapter_dir / 'loss.png'}\nadapter:    {result.adapter_dir}")
    serve = sys.stdin.isatty() and sys.stdout.isatty() if args.serve is None else args.serve
    if serve:
        from . import space

        print("\nthe demo chat Space (bundled model + this adapter):")
        space.serve_demo(result.adapter_dir, model=cm)
    else:
        print(f"\nchat with it in the browser: lorallama chat --ui {result.adapter_dir}")
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # Our own progress at INFO; libraries (httpx logs every request at INFO) only when they warn.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("lorallama").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    from .data import DataError
    from .feedback import FeedbackError
    from .hub import HubError
    from .jobs import JobError
    from .models import ModelError
    from .recipe import RecipeError
    from .train import TrainError

    try:
        return args.func(args)
    except (RecipeError, DataError, ModelError, TrainError, JobError, HubError, FeedbackError) as e:
        print(f"lorallama: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
