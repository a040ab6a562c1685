"""Preemption chaos at length: one run as Jobs on the Hub double, preempted N times at random moments under random
Hub faults, relaunched until done; checks it ends as an uninterrupted run and reports what the preemptions cost.

    python bench/chaos.py --kills 100                  # checkpoints on a Storage Bucket volume (job.checkpoint_volume)
    python bench/chaos.py --kills 100 --no-volume      # checkpoints on the model repo only

Writes bench/results/chaos_<volume|repo>.json: kills survived, steps redone per preemption (max, mean), commit faults
hit, pushes that failed and how many of them the job retried (or let a newer checkpoint supersede) before it was
killed, checkpoint commits, adapter max abs diff against an uninterrupted run, whether the loss history matched, and
the wall time. A run of 100 kills takes about 8 minutes on 2 shared CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--save-steps", type=int, default=3)
    parser.add_argument(
        "--max-steps",
        type=int,
        help="steps of the run (default 4 per kill, at least 75: the kills come before the end)",
    )
    parser.add_argument("--steps-before", type=int, default=6, help="kill within this many trained steps")
    parser.add_argument("--no-volume", action="store_true", help="model repo only, no bucket volume")
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = make_parser().parse_args(argv)
    args.max_steps = args.max_steps or max(75, 4 * args.kills)
    sys.path.insert(0, str(ROOT / "tests"))
    from support.hub_double import HubDouble

    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    hub = HubDouble(root=work / "store").start()
    # The client reads these once, at import: set them first.
    os.environ.update(HF_ENDPOINT=hub.url, HF_HOME=str(work / "hf"), HF_TOKEN=hub.token, HF_HUB_DISABLE_XET="1")
    os.environ.update(HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    from safetensors.torch import load, load_file

    from lorallama import hub as hub_mod
    from lorallama.recipe import load_recipe
    from lorallama.training import jobs
    from lorallama.training.run import train
    from support.chaos import REPO, chaos_model, chaos_recipe, one_thread, prepare_jobs, run_chaos

    prepare_jobs(hub)  # imports what a job imports, then forks the warm interpreter the jobs fork from
    hub_mod.RETRY_DELAY = 0.05  # this process's relaunch loop; the jobs keep the real backoff
    built = jobs.build_wheel(work / "wheel")  # once: every relaunch uploads the same bundle
    jobs.build_wheel = lambda dest: Path(shutil.copy(built, Path(dest) / built.name))
    base = chaos_model(work / "tiny")
    volume = not args.no_volume
    recipe_path = chaos_recipe(work, base, max_steps=args.max_steps, save_steps=args.save_steps, volume=volume)
    with one_thread():
        straight = train(load_recipe(str(recipe_path)), work / "straight", push=False)
    report = run_chaos(hub, recipe_path, kills=args.kills, seed=args.seed, max_steps_before=args.steps_before)
    files = hub.files(REPO)
    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load(files["adapter_model.safetensors"])
    history = json.loads(files["loss.json"])

    def losses(h):
        return [(x["step"], round(x["loss"], 6)) for x in h if "loss" in x]

    result = report.summary(args.save_steps) | {
        "mode": "bucket volume" if volume else "model repo only",
        "max_steps": args.max_steps,
        "seed": args.seed,
        "adapter_max_abs_diff": max((a[k] - b[k]).abs().max().item() for k in a),
        "loss_history_equal": losses(history) == losses(straight.loss_history),
        "finished": json.loads(files["run.json"])["finished"],
        "wall_s": round(time.monotonic() - started, 1),
        "machine": f"{os.cpu_count()} CPU cores, the Hub double; load average at the end {os.getloadavg()[0]:.1f}",
        "redone_per_preemption": report.redone(args.save_steps),
    }
    out = ROOT / "bench" / "results" / f"chaos_{'volume' if volume else 'repo'}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "redone_per_preemption"}, indent=1))
    print(f"written to {out}")
    hub.stop()
    shutil.rmtree(work, ignore_errors=True)
    return 0 if result["finished"] and result["loss_history_equal"] and result["adapter_max_abs_diff"] <= 1e-5 else 1


if __name__ == "__main__":  # the warm interpreter is a forkserver: this guard keeps it from re-running main
    sys.exit(main())
