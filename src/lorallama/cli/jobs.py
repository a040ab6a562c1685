"""``lorallama jobs``: train as Hugging Face Jobs that push checkpoints and resume from the Hub."""

from __future__ import annotations

from ..errors import JobError


def register(sub) -> None:
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
    q.add_argument(
        "--dry-run",
        action="store_true",
        help="launch nothing: the data's tokens and steps, ETA, cost and relaunches per flavor (this one first)",
    )
    q.set_defaults(func=cmd_jobs_run)
    q = jsub.add_parser("status", help="a job's stage and its run's newest checkpoint on the Hub")
    q.add_argument("job_id")
    q.set_defaults(func=cmd_jobs_status)
    q = jsub.add_parser("logs", help="a job's logs")
    q.add_argument("job_id")
    q.add_argument("--follow", action="store_true", help="keep streaming until the job ends")
    q.set_defaults(func=cmd_jobs_logs)
    q = jsub.add_parser("cancel", help="cancel a job (it saves and pushes a checkpoint first)")
    q.add_argument("job_id")
    q.set_defaults(func=cmd_jobs_cancel)


def cmd_jobs_run(args) -> int:
    from ..names import namespace_override, with_namespace
    from ..recipe import load_recipe
    from ..training import jobs

    recipe = load_recipe(args.recipe, args.set)
    # A fork trains into its own namespace (HF_NAMESPACE), as `lorallama sync` publishes there, without editing recipes.
    namespace = namespace_override()
    recipe.hub.model_repo = with_namespace(recipe.hub.model_repo, namespace)
    recipe.job.checkpoint_volume = with_namespace(recipe.job.checkpoint_volume, namespace)
    if args.dry_run:
        from ..training.estimate import dry_run

        print(dry_run(recipe, args.flavor, args.timeout))
        return 0
    if not args.until_done:
        job_id = jobs.launch(recipe, args.flavor, args.timeout, restart=args.restart)
        print(f"job {job_id} launched; follow it with: lorallama jobs logs {job_id} --follow")
        return 0
    if args.restart:
        raise JobError("--restart and --until-done do not mix: restart once, then watch")
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
    from ..training import jobs

    print(f"{args.job_id}: {jobs.status(args.job_id).describe()}")
    return 0


def cmd_jobs_logs(args) -> int:
    from ..training import jobs

    for line in jobs.logs(args.job_id, follow=args.follow):
        print(line, flush=True)
    return 0


def cmd_jobs_cancel(args) -> int:
    from ..training import jobs

    jobs.cancel(args.job_id)
    print(f"cancel sent to {args.job_id}")
    return 0
