# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "huggingface_hub>=1.30,<2",
#     "pyyaml>=6",
# ]
# ///
"""Relaunch a lorallama run's training job until the run on the Hub is finished: the watcher job's entry point.

The studio Space launches the training job and then this script as a small CPU job in the same namespace, with the
run owner's token as its HF_TOKEN secret, so a preempted or failed training job is relaunched without any browser
or terminal staying open. It needs only the model repo: the lorallama wheel of the repo's ``job/`` bundle is
unpacked (a pure-Python wheel installs by plain extraction) and put on the path, without the training stack, which
the watcher does not use. By hand:

    hf jobs uv run --flavor cpu-basic --timeout 20h --secrets HF_TOKEN \\
        https://huggingface.co/<repo>/resolve/main/watch.py --repo <repo> --job <training-job-id>
"""

from __future__ import annotations

import argparse
import sys


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, help="the model repo holding the job bundle (job/recipe.yaml)")
    parser.add_argument("--job", help="the training job already running: watched first, relaunched if it fails")
    parser.add_argument("--flavor", help="hardware of the relaunched training jobs (default: the recipe's)")
    parser.add_argument("--timeout", help="time limit of each training job, e.g. 4h (default: the recipe's)")
    parser.add_argument("--max-attempts", type=int, default=5, help="give up after this many training jobs")
    parser.add_argument("--backoff", type=float, default=30.0, help="first wait between jobs, seconds")
    parser.add_argument("--namespace", help="where the training jobs run (default: the token's user)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    import logging
    import zipfile
    from pathlib import Path

    from huggingface_hub import HfApi, hf_hub_download

    wheels = [f for f in HfApi().list_repo_files(args.repo) if f.startswith("job/") and f.endswith(".whl")]
    if not wheels:
        print(f"{args.repo} holds no job/*.whl: launch the run first", file=sys.stderr)
        return 2
    unpacked = Path("lorallama-wheel")
    with zipfile.ZipFile(hf_hub_download(args.repo, sorted(wheels)[-1])) as wheel:
        wheel.extractall(unpacked)
    sys.path.insert(0, str(unpacked.resolve()))

    import lorallama
    from lorallama.errors import LorallamaError
    from lorallama.training import jobs

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"lorallama {lorallama.__version__} from {Path(lorallama.__file__).parent}", flush=True)
    try:
        attempts = jobs.watch(
            args.repo,
            first_job=args.job,
            flavor=args.flavor,
            timeout=args.timeout,
            max_attempts=args.max_attempts,
            backoff=args.backoff,
            namespace=args.namespace,
        )
    except LorallamaError as e:
        print(f"watcher: {e}", file=sys.stderr)
        return 2
    print(f"run finished after {len(attempts)} job(s): {', '.join(f'{a.job_id} {a.stage}' for a in attempts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
