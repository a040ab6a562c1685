"""Training: a recipe becomes a TRL ``SFTTrainer`` with a PEFT LoRA adapter.

    lorallama train demo --max-steps 20
    lorallama train train_jobs/finetome.yaml --output runs/finetome --set trainer.learning_rate=1e-4

The output folder holds ``checkpoints/`` (every ``save_steps``, resumable), ``tb/`` (TensorBoard) and ``adapter/``:
the adapter, tokenizer, ``recipe.yaml``, ``run.json`` (resolved recipe, versions, backend, data report, git
commit), ``loss.json`` and ``loss.png``. Resume order, logged at start: explicit ``--resume`` > newest local
checkpoint > fresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import cards, models
from . import data as data_mod
from .recipe import DataSpec, LoraSpec, ModelSpec, Recipe, TrainerSpec

log = logging.getLogger("lorallama")

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"


class TrainError(RuntimeError):
    """A run that cannot start or finish as asked; the message says why and what to do."""


@dataclass
class RunResult:
    output_dir: Path
    adapter_dir: Path
    global_step: int
    finished: bool
    resumed_from: str | None
    loss_history: list[dict[str, Any]]
    backend: models.Backend
    interrupted_by: int | None = None


def launch_distributed(argv: list[str], processes: int, backend: str | None) -> int:
    """Re-run ``lorallama <argv>`` as ``processes`` DDP workers under ``accelerate launch`` (transformers+PEFT)."""
    import torch

    cpu = backend == "cpu"
    if not cpu and torch.cuda.device_count() < processes:
        raise TrainError(
            f"--gpus {processes} needs {processes} CUDA GPUs and {torch.cuda.device_count()} are visible: "
            "lower --gpus, or add --backend cpu to run that many CPU processes"
        )
    if backend == "unsloth":
        raise TrainError(
            "--gpus runs the transformers+PEFT backend (Unsloth trains on one GPU): drop --backend unsloth"
        )
    if cpu:  # accelerate launches CPU workers only through MPI; torchrun starts gloo workers the Trainer joins
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
    command += ["-m", "lorallama.cli", *argv]
    env = {**os.environ, "LORALLAMA_BACKEND": "cpu" if cpu else "transformers"}
    log.info("launching %d %s workers: %s", processes, "CPU" if cpu else "GPU", " ".join(command))
    return subprocess.run(command, env=env).returncode


def default_output(recipe: Recipe) -> Path:
    return Path("runs") / recipe.slug


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


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (one whose trainer_state.json, written last, exists)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


FINISHED = "finished"  # resolve_resume's answer when there is nothing left to train

# Keys whose change makes an old checkpoint meaningless for the new recipe (data order, shapes, base, schedule).
SAFE_TO_CHANGE = {"save_steps", "save_total_limit", "logging_steps", "report_to", "gradient_checkpointing"}


def resume_conflicts(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys that differ between two recipes in a way that makes resuming unsafe."""
    out = []
    for section in ("model", "data", "lora", "trainer"):
        a, b = old.get(section) or {}, new.get(section) or {}
        # A key the old run's recipe predates had its default value then.
        a = {**{k: v for k, v in _defaults(section).items() if k in b}, **a}
        for key in sorted(set(a) | set(b)):
            if section == "trainer" and key in SAFE_TO_CHANGE:
                continue
            if a.get(key) != b.get(key):
                out.append(f"{section}.{key} ({a.get(key)!r} → {b.get(key)!r})")
    return out


def _defaults(section: str) -> dict[str, Any]:
    spec = {"model": ModelSpec, "data": DataSpec, "lora": LoraSpec, "trainer": TrainerSpec}[section]
    return {f.name: f.default for f in dataclasses.fields(spec) if f.default is not dataclasses.MISSING}


def resolve_resume(
    output_dir: Path, resume: str | None, recipe: Recipe | None = None, hub_repo: str | None = None
) -> tuple[str | None, str]:
    """Resume order: explicit path > Hub last-checkpoint > newest local checkpoint > fresh. Returns (checkpoint, why).

    A local checkpoint newer than the Hub's (its push failed) wins over the Hub's.
    """
    if resume == "never":
        return None, "fresh start (--restart)"
    if resume not in (None, "auto"):
        path = Path(resume)
        if not (path / "trainer_state.json").is_file():
            raise TrainError(f"--resume {resume}: not a checkpoint folder (no trainer_state.json in it)")
        return str(path), f"explicit checkpoint {path}"
    local = last_checkpoint(output_dir / CHECKPOINTS)
    local_step = int(local.name.split("-")[-1]) if local else -1
    if hub_repo:
        from . import hub

        try:
            remote = hub.remote_run(hub_repo)
        except Exception as e:
            raise TrainError(
                f"cannot look for a checkpoint in {hub_repo} ({type(e).__name__}: {e}): check HF_TOKEN and the "
                "network, or train locally with --no-push"
            ) from e
        if remote.checkpoint_step is not None and recipe is not None and remote.recipe is not None:
            conflicts = resume_conflicts(remote.recipe, recipe.to_dict())
            if conflicts:
                raise TrainError(
                    f"the unfinished run in {hub_repo} used a different recipe, so resuming it is unsafe: "
                    f"{'; '.join(conflicts)}. Restore those values, or pass --restart to start over"
                )
        if remote.finished and remote.checkpoint_step is not None:
            return FINISHED, f"the run in {hub_repo} already finished at step {remote.checkpoint_step}"
        if remote.checkpoint_step is not None and remote.checkpoint_step > local_step:
            path = hub.download_checkpoint(hub_repo, output_dir / "hub")
            return str(path), f"Hub checkpoint {hub_repo}@{hub.CHECKPOINT_DIR} (step {remote.checkpoint_step})"
    if local is not None:
        return str(local), f"newest local checkpoint {local}"
    return None, "fresh start (no checkpoint found)"


def sft_config(recipe: Recipe, backend: models.Backend, output_dir: Path, max_steps: int | None, push: bool = False):
    from trl import SFTConfig

    t = recipe.trainer
    cuda = backend.device == "cuda"
    packing, sampling = t.packing, t.train_sampling_strategy
    if packing and backend.name != "unsloth" and importlib.util.find_spec("flash_attn") is None:
        # Padding-free packing keeps documents apart only with varlen attention (Unsloth's, or flash-attn).
        # The next best thing is batches of like lengths: little padding, and equal work for every GPU.
        packing = False
        if sampling == "random":
            sampling = "batch_rebalance"
        log.warning(
            "packing needs Unsloth or flash-attn to keep packed conversations apart: training unpacked, "
            "batches built with train_sampling_strategy=%s",
            sampling,
        )
    hub_repo = recipe.hub.model_repo if push else None
    config = SFTConfig(
        output_dir=str(output_dir / CHECKPOINTS),
        # Every checkpoint goes to <repo>/last-checkpoint. hub_always_push queues a push even while the previous
        # one is still uploading (HfApi runs them one at a time, in order), so no checkpoint is silently skipped.
        push_to_hub=hub_repo is not None,
        hub_model_id=hub_repo,
        hub_strategy="checkpoint",
        hub_always_push=True,
        hub_private_repo=recipe.hub.private,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        warmup_steps=t.warmup_steps,
        num_train_epochs=t.num_train_epochs,
        max_steps=max_steps if max_steps is not None else t.max_steps,
        learning_rate=t.learning_rate,
        optim=backend.optim,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler_type,
        seed=t.seed,
        data_seed=t.seed,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        # TensorBoard gets its own callback (see tensorboard_callback) so its logs land in <output>/tb.
        report_to=[r for r in t.report_to if r not in ("none", "tensorboard")],
        max_length=t.max_length,
        packing=packing,
        train_sampling_strategy=sampling,
        # Masks come from our own tokenisation (data.py): TRL's flag is only for untokenised chat rows.
        assistant_only_loss=False,
        gradient_checkpointing=t.gradient_checkpointing and cuda,
        bf16=cuda and backend.dtype == "bfloat16",
        fp16=cuda and backend.dtype == "float16",
        use_cpu=not cuda,
        eval_strategy="steps" if recipe.data.eval_rows else "no",
        eval_steps=t.save_steps if recipe.data.eval_rows else None,
        per_device_eval_batch_size=t.per_device_train_batch_size,
        dataloader_num_workers=0,
        # Every LoRA weight takes part in every step, so DDP need not walk the graph for unused ones (--gpus N).
        ddp_find_unused_parameters=False,
        save_only_model=False,
        disable_tqdm=False,
    )
    if cuda and config.world_size == 1:
        # One process on a machine with several GPUs: Trainer would wrap the model in DataParallel, which TRL
        # refuses. Train on the first GPU (Trainer does the same for device_map models); --gpus N is DDP.
        config._n_gpu = 1
    return config


def tensorboard_callback(recipe: Recipe, output_dir: Path) -> list:
    if "tensorboard" not in recipe.trainer.report_to:
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(output_dir / "tb")))]


def lora_config(recipe: Recipe):
    from peft import LoraConfig

    lora = recipe.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def time_budget_callback(seconds: float):
    """Stop with a checkpoint once the budget is spent, leaving time to save before a job's hard limit."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.deadline = time.monotonic() + seconds

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() >= self.deadline:
                log.info("time budget spent at step %d: saving a checkpoint and stopping", state.global_step)
                control.should_save = True
                control.should_training_stop = True
            return control

    return TimeBudget()


def fused_loss_available(model) -> bool:
    """TRL's fused LM-head loss is a Triton kernel: CUDA only."""
    return importlib.util.find_spec("triton") is not None and next(model.parameters()).is_cuda


def trainer_class():
    """``SFTTrainer``, with transformers' own loss where TRL's Triton kernel cannot run (CPU)."""
    from transformers import Trainer
    from trl import SFTTrainer

    class LoraSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if fused_loss_available(model):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return LoraSFTTrainer


def build_trainer(
    recipe: Recipe,
    output_dir: Path,
    *,
    max_steps: int | None = None,
    backend: models.Backend | None = None,
    callbacks: list | None = None,
    push: bool = False,
):
    """Everything up to ``trainer.train()``: backend, tokenizer, data, model, LoRA. Returns (trainer, context)."""
    backend = backend or models.choose_backend(recipe)
    if backend.name == "unsloth":
        import unsloth  # noqa: F401  (patches transformers, TRL and PEFT; it must load before they are used)
    log.info(
        "backend: %s on %s (%s), %s, optimizer %s",
        backend.name,
        backend.device,
        backend.reason,
        backend.dtype,
        backend.optim,
    )
    chain = models.base_chain(recipe)
    tokenizer = models.load_tokenizer(chain.base, recipe.model.chat_template)
    template = models.training_chat_template(tokenizer) if recipe.trainer.assistant_only_loss else None
    prepared = data_mod.prepare(recipe, tokenizer, template)
    log.info("%s", prepared.report.format())
    model = models.load_model(recipe, backend)
    models.configure_generation(model, tokenizer)
    peft_config = lora_config(recipe)
    if backend.name == "unsloth":
        from unsloth import FastLanguageModel

        lora = recipe.lora
        model = FastLanguageModel.get_peft_model(
            model,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            use_gradient_checkpointing="unsloth" if recipe.trainer.gradient_checkpointing else False,
            random_state=recipe.trainer.seed,
        )
        peft_config = None
    trainer = trainer_class()(
        model=model,
        args=sft_config(recipe, backend, output_dir, max_steps, push),
        train_dataset=prepared.train,
        eval_dataset=prepared.eval or None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[*tensorboard_callback(recipe, output_dir), *(callbacks or [])],
    )
    return trainer, {"backend": backend, "tokenizer": tokenizer, "report": prepared.report, "chain": chain}


class StopRequest:
    """SIGTERM (what a job's timeout or cancel sends) asks the run to save, push and stop after the current step."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum, frame) -> None:
        self.signal = signum
        log.warning("received signal %d: finishing this step, then saving and pushing a checkpoint", signum)

    def callback(self):
        from transformers import TrainerCallback

        request = self

        class StopOnSignal(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if request.signal is not None:
                    control.should_save = True
                    control.should_training_stop = True
                return control

        return StopOnSignal()


@contextlib.contextmanager
def handle_sigterm(request: StopRequest):
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
    backend: models.Backend | None = None,
    callbacks: list | None = None,
    time_budget: float | None = None,
    push: bool | None = None,
) -> RunResult:
    """Train ``recipe`` into ``output_dir``, resuming where a previous run stopped.

    With ``hub.model_repo`` set (and ``push`` not False), checkpoints go to the Hub every ``save_steps``, the run
    resumes from the Hub's last checkpoint, and the adapter and metadata are pushed at the end.
    """
    output_dir = Path(output_dir or default_output(recipe))
    check_writable(output_dir)
    hub_repo = recipe.hub.model_repo if push is not False else None
    if push and not hub_repo:
        raise TrainError(
            f"pushing needs hub.model_repo in recipe {recipe.slug!r}: set it, e.g. --set hub.model_repo=you/name"
        )
    checkpoint, why = resolve_resume(output_dir, resume, recipe, hub_repo)
    if resume == "never" and (output_dir / CHECKPOINTS).exists():
        shutil.rmtree(output_dir / CHECKPOINTS)
    log.info("resume order: explicit --resume > Hub checkpoint > local checkpoint > fresh → %s", why)
    done = _finished_locally(output_dir, checkpoint)
    if checkpoint == FINISHED or done is not None:
        # Trainer would run one more step when resumed at its last one; a finished run only needs its final push.
        if done is not None and hub_repo:
            _push_final(hub_repo, done.adapter_dir, output_dir, done.global_step, True)
        log.info("nothing to train: %s", why if checkpoint == FINISHED else "the local run already finished")
        return done or RunResult(output_dir, output_dir / ADAPTER, -1, True, why, [], None)
    if hub_repo:
        _stage_run_files(recipe, output_dir / CHECKPOINTS)
    started = time.time()
    stop = StopRequest()
    callbacks = [*(callbacks or []), stop.callback()]
    if time_budget is not None:
        callbacks.append(time_budget_callback(time_budget))
    trainer, ctx = build_trainer(
        recipe, output_dir, max_steps=max_steps, backend=backend, callbacks=callbacks, push=hub_repo is not None
    )
    with handle_sigterm(stop):
        trainer.train(resume_from_checkpoint=checkpoint)
    state = trainer.state
    finished = state.max_steps > 0 and state.global_step >= state.max_steps
    adapter_dir = output_dir / ADAPTER
    history = loss_history(state.log_history)
    if trainer.is_world_process_zero():  # under DDP, one worker writes and pushes
        _save_adapter(trainer, recipe, ctx, adapter_dir, history, finished, checkpoint, time.time() - started)
        if hub_repo:
            _push_final(hub_repo, adapter_dir, output_dir, state.global_step, finished)
    result = RunResult(output_dir, adapter_dir, state.global_step, finished, checkpoint, history, ctx["backend"])
    result.interrupted_by = stop.signal
    return result


def _finished_locally(output_dir: Path, checkpoint: str | None) -> RunResult | None:
    """The finished run in ``output_dir`` when ``checkpoint`` is its last step."""
    meta_file = output_dir / ADAPTER / "run.json"
    if checkpoint in (None, FINISHED) or not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    step = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]
    if not meta.get("finished") or meta.get("global_step") != step:
        return None
    history = json.loads((output_dir / ADAPTER / "loss.json").read_text())
    backend = models.Backend(**meta["backend"])
    return RunResult(output_dir, output_dir / ADAPTER, step, True, checkpoint, history, backend)


def _stage_run_files(recipe: Recipe, folder: Path) -> None:
    """The recipe and an unfinished run.json ride along with every checkpoint push (Trainer pushes this folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
    (folder / "run.json").write_text(json.dumps({"slug": recipe.slug, "finished": False}), encoding="utf-8")


def _push_final(repo: str, adapter_dir: Path, output_dir: Path, step: int, finished: bool) -> None:
    """The adapter, metadata and newest checkpoint in one commit; on failure, say where the local copy is."""
    from . import hub

    folders = {"": adapter_dir}
    newest = last_checkpoint(output_dir / CHECKPOINTS)
    if newest is not None:
        folders[hub.CHECKPOINT_DIR] = newest
    message = f"{'Finished' if finished else 'Stopped'} at step {step}: adapter, metadata and last checkpoint"
    try:
        hub.push_folders(repo, folders, message)
    except Exception as e:
        raise TrainError(
            f"the final push to {repo} failed ({type(e).__name__}: {e}). Nothing is lost: the adapter is in "
            f"{adapter_dir} and the checkpoint in {newest}. Run the same command again to retry the push "
            "(training resumes at the last step and does not repeat work)"
        ) from e
    log.info("pushed adapter and checkpoint (step %d) to %s", step, repo)


def loss_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The logged training/eval losses, one entry per logging step."""
    keep = ("loss", "eval_loss", "eval_domain_loss", "eval_chat_loss", "learning_rate", "grad_norm")
    out = []
    for entry in log_history:
        row = {k: entry[k] for k in keep if k in entry}
        if row:
            out.append({"step": entry.get("step"), "epoch": entry.get("epoch"), **row})
    return out


def _save_adapter(trainer, recipe, ctx, adapter_dir: Path, history, finished, resumed_from, seconds) -> None:
    """Write the adapter folder atomically: a crash never leaves a half-written adapter."""
    tmp = Path(tempfile.mkdtemp(dir=adapter_dir.parent, prefix=".adapter-"))
    try:
        trainer.model.save_pretrained(tmp)
        ctx["tokenizer"].save_pretrained(tmp)
        _point_adapter_at_hub_base(tmp / "adapter_config.json", ctx["chain"].base)
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
        (tmp / "loss.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
        plot_loss(history, tmp / "loss.png", title=f"{recipe.slug}: training loss")
        meta = run_metadata(recipe, ctx, trainer.state, finished, resumed_from, seconds)
        meta["world_size"] = trainer.args.world_size  # data-parallel workers (--gpus)
        (tmp / "run.json").write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        (tmp / "README.md").write_text(cards.model_card(recipe, meta, folder=tmp), encoding="utf-8")
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


def run_metadata(recipe, ctx, state, finished, resumed_from, seconds) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    return {
        "slug": recipe.slug,
        "recipe": recipe.to_dict(),
        "base": ctx["chain"].base,
        "merged_adapters": ctx["chain"].adapters,
        "backend": ctx["backend"].to_dict(),
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "finished": finished,
        "resumed_from": resumed_from,
        "train_seconds": round(seconds, 1),
        "data_report": ctx["report"].to_dict() | {"token_lengths": None},
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
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def plot_loss(history: list[dict[str, Any]], png: Path, title: str) -> None:
    """Loss against step: training loss, and every eval loss the run logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for key, label in (
        ("loss", "train"),
        ("eval_loss", "eval"),
        ("eval_domain_loss", "eval: domain"),
        ("eval_chat_loss", "eval: general chat"),
    ):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
