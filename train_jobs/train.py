# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "transformers==5.17.0",
#     "trl==1.15.0",
#     "peft==0.21.2",
#     "datasets>=4.8,<4.9",
#     "huggingface_hub>=1.30,<2",
#     "accelerate>=1.10",
#     "bitsandbytes>=0.50,<0.51",
#     "tensorboard>=2.18",
#     "matplotlib>=3.9",
#     "gguf>=0.17",
#     "pyyaml>=6",
#     "unsloth==2026.10.9; sys_platform == 'linux'",
#     "unsloth_zoo; sys_platform == 'linux'",
# ]
# ///
"""Train a lorallama model from its Hub repo alone: the job entry point.

`lorallama jobs run <slug>` uploads this script, the recipe and the lorallama wheel into the model repo under
``job/``, then launches it as a Hugging Face Job. Re-run training from the repo alone (the model card shows the
exact line):

    hf jobs uv run --flavor t4-small --timeout 4h --secrets HF_TOKEN \\
        --with "lorallama @ https://huggingface.co/<repo>/resolve/main/job/<wheel>" \\
        https://huggingface.co/<repo>/resolve/main/train.py --repo <repo>

The run resumes from the repo's last checkpoint when one exists and pushes a new one every save_steps.
"""

from __future__ import annotations

import argparse
import os
import sys


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, help="the model repo holding job/recipe.yaml")
    parser.add_argument("--time-budget", help="stop cleanly with a checkpoint after this long, e.g. 3h50m")
    parser.add_argument("--restart", action="store_true", help="ignore the repo's checkpoint and start over")
    parser.add_argument("--output", help="output folder, e.g. on a mounted bucket volume (default runs/<slug>)")
    parser.add_argument("--flavor", help="the Jobs flavor this runs on: the run records its cost at that price")
    parser.add_argument("--gpus", type=int, help="DDP workers, one per GPU (default: every visible GPU)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from pathlib import Path

    from huggingface_hub import snapshot_download

    from lorallama import cli

    bundle = Path(snapshot_download(args.repo, allow_patterns=["job/*", "job/**"], local_dir="bundle")) / "job"
    command = ["train", str(bundle / "recipe.yaml"), "--set", f"hub.model_repo={args.repo}"]
    if args.time_budget:
        command += ["--time-budget", args.time_budget]
    if args.restart:
        command.append("--restart")
    if args.output:
        command += ["--output", args.output]
    gpus = args.gpus or _visible_gpus()
    if gpus > 1:  # a multi-GPU flavor: one DDP worker per GPU
        command += ["--gpus", str(gpus)]
    if args.flavor:
        os.environ["LORALLAMA_JOB_FLAVOR"] = args.flavor  # the workers inherit it
    return cli.main(command)


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


if __name__ == "__main__":
    sys.exit(main())
