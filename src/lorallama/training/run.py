"""A training run, start to end: resume decision, trainer, signals, the adapter folder, the final push.

    lorallama train demo --max-steps 20
    lorallama train train_jobs/finetome.yaml --output runs/finetome --set trainer.learning_rate=1e-4

The output folder holds ``checkpoints/`` (every ``save_steps``, resumable), ``tb/`` (TensorBoard) and ``adapter/``:
the adapter, tokenizer, ``recipe.yaml``, ``run.json`` (resolved recipe, versions, backend, data report, git
commit), ``loss.json`` and ``loss.png``. Resume order, logged at start: explicit ``--resume`` > Hub checkpoint >
newest local checkpoint > fresh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import hub, models
from ..errors import TrainError
from ..paths import ADAPTER, checkout_root, run_dir
from ..plots import plot_loss
from ..recipe import Recipe
from . import evaluation, selection
from .backend import Backend
from .checkpoint_push import CheckpointPusher, check_hub_access
from .estimate import RunMeter
from .resume import CHECKPOINTS, ResumePlan, checkpoint_step, last_checkpoint, plan_resume
from .trainer import StopControl, TrainerSetup, build_trainer

log = logging.getLogger("lorallama")

CardRenderer = Callable[[Recipe, dict, Path], str]
"""(recipe, run metadata, adapter folder) → README.md text."""


@dataclass
class RunResult:
    output_dir: Path
    adapter_dir: Path
    global_step: int
    finished: bool
    resumed_from: str | None
    loss_history: list[dict[str, Any]]
    backend: Backend | None
    interrupted_by: int | None = None
    hub_step: int | None = None
    """The newest checkpoint step safely on the Hub (None without a repo, or when none got there)."""


def check_writable(folder: Path) -> None:
    """Fail before any work when the output folder cannot be written (and say which folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise TrainError(
            f"cannot write to output folder {folder}: {e.strerror or e}. Pick another with --output"
        ) from e


@contextlib.contextmanager
def handle_sigterm(request: StopControl):
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers live on the main thread only
        return
    previous = signal.signal(signal.SIGTERM, request)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(
    recipe: Recipe,
    output_dir: Path | None = None,
    *,
    max_steps: int | None = None,
    resume: str | None = "auto",
    backend: Backend | None = None,
    callbacks: list | None = None,
    time_budget: float | None = None,
    push: bool | None = None,
    card: CardRenderer | None = None,
) -> RunResult:
    """Train ``recipe`` into ``output_dir``, resuming where a previous run stopped.

    With ``hub.model_repo`` set (and ``push`` not False), the token's write access is checked before anything else,
    checkpoints go to the Hub every ``save_steps`` in the background (retried and verified, see checkpoint_push), the
    run resumes from the Hub's last checkpoint, and the adapter and metadata are pushed at the end. ``card`` renders the
    adapter's README.md from the recipe, the run's metadata and the adapter folder (the command line passes the
    model-card renderer; training itself knows nothing of cards).
    """
    output_dir = Path(output_dir or run_dir(recipe.slug))
    check_writable(output_dir)
    hub_repo = recipe.hub.model_repo if push is not False else None
    if push and not hub_repo:
        raise TrainError(
            f"pushing needs hub.model_repo in recipe {recipe.slug!r}: set it, e.g. --set hub.model_repo=you/name"
        )
    if hub_repo:
        check_hub_access(hub_repo, recipe.hub.private)  # a run that cannot push stops here, not after hours
    plan = plan_resume(output_dir, resume, recipe, hub_repo)
    if resume == "never" and (output_dir / CHECKPOINTS).exists():
        shutil.rmtree(output_dir / CHECKPOINTS)
    log.info("resume order: explicit --resume > Hub checkpoint > local checkpoint > fresh → %s", plan.reason)
    done = _finished_locally(output_dir, plan)
    if plan.kind == "finished" or done is not None:
        # Trainer would run one more step when resumed at its last one; a finished run only needs its final push.
        if done is not None and hub_repo:
            done.hub_step = _push_final(hub_repo, done.adapter_dir, output_dir, done.global_step, True)
        log.info("nothing to train: %s", plan.reason if plan.kind == "finished" else "the local run already finished")
        return done or RunResult(output_dir, output_dir / ADAPTER, -1, True, plan.reason, [], None)
    pusher = _start_pusher(recipe, hub_repo, output_dir, plan) if hub_repo else None
    started = time.time()
    stop = StopControl(time_budget)
    meter = RunMeter()  # real tokens/s and, on a Jobs flavor, the cost: run.json "throughput", the card
    callbacks = [*(callbacks or []), stop.callback(), meter.callback(), *([pusher.callback()] if pusher else [])]
    setup = build_trainer(
        recipe, output_dir, max_steps=max_steps, backend=backend, callbacks=callbacks, push=hub_repo is not None
    )
    trainer = setup.trainer
    quality = evaluation.attach(setup, recipe)  # step 0 and every checkpoint, with an eval: section
    checkpoint = plan.resume_from
    with handle_sigterm(stop):
        trainer.train(resume_from_checkpoint=checkpoint)
    state = trainer.state
    finished = state.max_steps > 0 and state.global_step >= state.max_steps
    finished = finished or (quality is not None and quality.stopped is not None)  # the guard ends a run for good
    adapter_dir = output_dir / ADAPTER
    history = loss_history(state.log_history)
    # Checkpoint pushes still queued finish first (with their retries), so the final commit comes last.
    report = pusher.close() if pusher else None
    hub_step = None
    if trainer.is_world_process_zero():  # under DDP, one worker writes and pushes
        meta_extra = {"hub_checkpoint": report.to_dict()} if report else {}
        meta_extra["throughput"] = meter.summary(os.environ.get("LORALLAMA_JOB_FLAVOR")) | {
            "packed": bool(trainer.args.packing),
            "attention": getattr(trainer.model.config, "_attn_implementation", None),
        }
        _save_adapter(
            trainer, recipe, setup, adapter_dir, history, finished, checkpoint, time.time() - started, card, meta_extra
        )
        if hub_repo:
            hub_step = _push_final(hub_repo, adapter_dir, output_dir, state.global_step, finished, report)
    result = RunResult(output_dir, adapter_dir, state.global_step, finished, checkpoint, history, setup.backend)
    result.interrupted_by = stop.signal
    result.hub_step = hub_step
    return result


def _start_pusher(recipe: Recipe, repo: str, output_dir: Path, plan: ResumePlan) -> CheckpointPusher:
    """The background pusher; the recipe and an unfinished run.json ride along with every checkpoint."""
    run_files = {
        "recipe.yaml": yaml.safe_dump(recipe.to_dict(), sort_keys=False).encode(),
        "run.json": json.dumps({"slug": recipe.slug, "finished": False}).encode(),
    }
    on_hub = None
    if plan.source == "hub" and plan.checkpoint is not None:  # what the Hub held when this run started
        on_hub = json.loads((plan.checkpoint / "trainer_state.json").read_text())["global_step"]
    return CheckpointPusher(
        repo, output_dir / CHECKPOINTS, run_files, recipe.trainer.save_total_limit, start_step=on_hub
    )


def _finished_locally(output_dir: Path, plan: ResumePlan) -> RunResult | None:
    """The finished run in ``output_dir`` when the plan's checkpoint is its last step."""
    meta_file = output_dir / ADAPTER / "run.json"
    if plan.kind != "checkpoint" or plan.checkpoint is None or not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    checkpoint = str(plan.checkpoint)
    step = json.loads((plan.checkpoint / "trainer_state.json").read_text())["global_step"]
    if not meta.get("finished") or meta.get("global_step") != step:
        return None
    history = json.loads((output_dir / ADAPTER / "loss.json").read_text())
    backend = Backend(**meta["backend"])
    return RunResult(output_dir, output_dir / ADAPTER, step, True, checkpoint, history, backend)


def _push_final(repo: str, adapter_dir: Path, output_dir: Path, step: int, finished: bool, report=None) -> int | None:
    """The adapter, metadata and newest checkpoint in one commit; on failure, say where the local copy is and which
    checkpoint the Hub holds. Returns the checkpoint step now on the Hub, and logs it as the run's last line."""
    folders = {"": adapter_dir}
    newest = last_checkpoint(output_dir / CHECKPOINTS)
    if newest is not None:
        folders[hub.CHECKPOINT_DIR] = newest
    message = f"{'Finished' if finished else 'Stopped'} at step {step}: adapter, metadata and last checkpoint"
    try:
        hub.push_folders(repo, folders, message)
    except Exception as e:
        safe = f"step {report.step}" if report and report.step is not None else "none"
        raise TrainError(
            f"the final push to {repo} failed ({type(e).__name__}: {e}). Nothing is lost: the adapter is in "
            f"{adapter_dir} and the checkpoint in {newest}; newest checkpoint on the Hub: {safe}. Run the same "
            "command again to retry the push (training resumes at the last step and does not repeat work)"
        ) from e
    hub_step = checkpoint_step(newest) if newest is not None else (report.step if report else None)
    log.info("pushed adapter and checkpoint (step %d) to %s", step, repo)
    if report:
        log.info(
            "checkpoint pushes: %d verified, %d retried, %d superseded, %d failed",
            report.pushes,
            report.retries,
            report.superseded,
            report.failed,
        )
    log.info("newest checkpoint on the Hub: step %s (%s@%s)", hub_step, repo, hub.CHECKPOINT_DIR)
    return hub_step


def loss_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The logged training/eval losses, one entry per logging step."""
    keep = ("loss", "eval_loss", "eval_domain_loss", "eval_chat_loss", "learning_rate", "grad_norm")
    out = []
    for entry in log_history:
        row = {k: entry[k] for k in keep if k in entry}
        if row:
            out.append({"step": entry.get("step"), "epoch": entry.get("epoch"), **row})
    return out


def _save_adapter(
    trainer, recipe, setup: TrainerSetup, adapter_dir: Path, history, finished, resumed_from, seconds, card, extra=None
) -> None:
    """Write the adapter folder atomically: a crash never leaves a half-written adapter."""
    tmp = Path(tempfile.mkdtemp(dir=adapter_dir.parent, prefix=".adapter-"))
    try:
        trainer.model.save_pretrained(tmp)
        setup.tokenizer.save_pretrained(tmp)
        _point_adapter_at_hub_base(tmp / "adapter_config.json", setup.chain.base)
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
        (tmp / "loss.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
        plot_loss(history, tmp / "loss.png", title=f"{recipe.slug}: training loss")
        meta = run_metadata(recipe, setup, trainer.state, finished, resumed_from, seconds)
        meta["world_size"] = trainer.args.world_size  # data-parallel workers (--gpus)
        meta.update(extra or {})  # hub_checkpoint: the newest step the Hub held before the final push, push counts
        # The checkpoint eval.select chose becomes the published adapter; run.json records why.
        meta.update(selection.publish(evaluation.find(trainer), recipe, tmp, adapter_dir.parent / CHECKPOINTS, meta))
        (tmp / "run.json").write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        if card is not None:
            (tmp / "README.md").write_text(card(recipe, meta, tmp), encoding="utf-8")
        else:  # PEFT's own placeholder card names the local base path: never push it as the model card
            (tmp / "README.md").unlink(missing_ok=True)
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        os.replace(tmp, adapter_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _point_adapter_at_hub_base(config_path: Path, base: str) -> None:
    """PEFT records the local cache path of the base; users of the adapter need its Hub id."""
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = models.hub_id_of(base)
    config_path.write_text(json.dumps(config, indent=2))


def run_metadata(recipe, setup: TrainerSetup, state, finished, resumed_from, seconds) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    return {
        "slug": recipe.slug,
        "recipe": recipe.to_dict(),
        "base": setup.chain.base,
        "merged_adapters": setup.chain.adapters,
        "backend": setup.backend.to_dict(),
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "finished": finished,
        "resumed_from": resumed_from,
        "train_seconds": round(seconds, 1),
        "data_report": setup.report.to_dict() | {"token_lengths": None},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
        "hardware": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)",
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def git_commit() -> str | None:
    """The commit of the lorallama checkout the code runs from (None for an installed wheel, as in a job)."""
    root = checkout_root()
    if root is None:
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
