"""A recipe becomes a TRL ``SFTTrainer`` with a PEFT LoRA adapter: the config, the adapter, the trainer, the stop.

``build_trainer`` returns a typed ``TrainerSetup`` (the trainer and what the run records about it); ``StopControl``
is the one callback that ends a run cleanly, with a checkpoint, when its time budget is spent or a signal asks.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .. import models
from ..models import BaseChain
from ..recipe import Recipe
from . import adapters, attention
from . import data as data_mod
from .backend import Backend, choose_backend, load_model
from .chat_templates import training_chat_template
from .data import DataReport
from .resume import CHECKPOINTS

log = logging.getLogger("lorallama")


@dataclass
class TrainerSetup:
    """What ``build_trainer`` made: the trainer, and the parts the run's metadata and adapter folder record."""

    trainer: object  # trl.SFTTrainer
    backend: Backend
    tokenizer: object
    report: DataReport
    chain: BaseChain


class StopControl:
    """Ends training after the current step, with a checkpoint: when a time budget is spent, or when asked (SIGTERM,
    which a job's timeout or cancel sends). One object, one callback, whatever the reason."""

    def __init__(self, time_budget: float | None = None) -> None:
        self.deadline = time.monotonic() + time_budget if time_budget is not None else None
        self.signal: int | None = None
        self.reason: str | None = None

    def __call__(self, signum, frame) -> None:  # a signal handler
        self.signal = signum
        self.request(f"signal {signum}")
        log.warning("received signal %d: finishing this step, then saving and pushing a checkpoint", signum)

    def request(self, reason: str) -> None:
        self.reason = self.reason or reason

    def callback(self):
        from transformers import TrainerCallback

        control_ = self

        class StopWhenAsked(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if control_.deadline is not None and time.monotonic() >= control_.deadline and control_.reason is None:
                    control_.request("time budget spent")
                    log.info("time budget spent at step %d: saving a checkpoint and stopping", state.global_step)
                if control_.reason is not None:
                    control.should_save = True
                    control.should_training_stop = True
                return control

        return StopWhenAsked()


def packing_plan(recipe: Recipe, backend: Backend) -> tuple[bool, str]:
    """(packing, train_sampling_strategy) on this backend: padding-free packing where a kernel keeps packed
    conversations apart (training/attention.py, or Unsloth's own packed attention), else unpacked batches of like
    lengths (little padding, and equal work for every GPU)."""
    t = recipe.trainer
    if not t.packing or backend.name == "unsloth":
        return t.packing, t.train_sampling_strategy
    choice = attention.for_backend(backend)
    if choice.kernel is not None:
        log.info("packing: padding-free batches, attention %s (%s)", choice.attn_implementation, choice.reason)
        return True, t.train_sampling_strategy
    sampling = "batch_rebalance" if t.train_sampling_strategy == "random" else t.train_sampling_strategy
    log.warning(
        "packing needs a padding-free attention kernel and none runs here (%s): training unpacked, "
        "batches built with train_sampling_strategy=%s",
        choice.reason,
        sampling,
    )
    return False, sampling


def sft_config(recipe: Recipe, backend: Backend, output_dir: Path, max_steps: int | None, push: bool = False):
    from trl import SFTConfig

    t = recipe.trainer
    cuda = backend.device == "cuda"
    packing, sampling = packing_plan(recipe, backend)
    config = SFTConfig(
        output_dir=str(output_dir / CHECKPOINTS),
        # Checkpoints reach <repo>/last-checkpoint through training/checkpoint_push.py (retried, verified, reported),
        # not Trainer's push, which dropped a failed push silently.
        push_to_hub=False,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        # transformers reads a warmup_steps below 1 as a share of all steps: that is how a ratio is given.
        warmup_steps=t.warmup_ratio if t.warmup_ratio is not None else t.warmup_steps,
        num_train_epochs=t.num_train_epochs,
        max_steps=max_steps if max_steps is not None else t.max_steps,
        learning_rate=t.learning_rate,
        optim=backend.optim,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler_type,
        lr_scheduler_kwargs={"num_cycles": t.num_cycles} if t.lr_scheduler_type == "cosine_with_restarts" else None,
        label_smoothing_factor=t.label_smoothing,
        seed=t.seed,
        data_seed=t.seed,
        save_strategy="steps",
        save_steps=t.save_steps,
        # With a Hub repo the pusher rotates instead: it never deletes a checkpoint the Hub does not hold yet.
        save_total_limit=None if push else t.save_total_limit,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",  # the run's real tokens/s (estimate.RunMeter)
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


def lora_config(recipe: Recipe, tokenizer_path: str | None = None):
    """The PEFT config of the recipe's adapter method (training/adapters.py)."""
    return adapters.peft_config(recipe, tokenizer_path)


def fused_loss_available(model) -> bool:
    """TRL's fused LM-head loss is a Triton kernel: CUDA only."""
    return importlib.util.find_spec("triton") is not None and next(model.parameters()).is_cuda


def trainer_class():
    """``SFTTrainer``, with transformers' own loss where TRL's Triton kernel cannot run (CPU)."""
    from transformers import Trainer
    from trl import SFTTrainer

    class LoraSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # Label smoothing needs the full logits: TRL would run a second forward pass for its fused loss.
            if fused_loss_available(model) and self.label_smoother is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            smoother = self.label_smoother
            extra = adapters.prepended_positions(self.accelerator.unwrap_model(model))
            if smoother is not None and extra:
                # PEFT pads the labels for its virtual tokens only when it is given them, and the smoother takes
                # them away first: the logits are trimmed back to the text's positions instead. Trainer also reads
                # such a model's name as the bare LlamaModel and would not shift the labels; a causal LM needs it.
                def trimmed(out, labels, **kw):
                    return smoother({"logits": out["logits"][:, extra:]}, labels, **{**kw, "shift_labels": True})

                self.label_smoother = trimmed
            try:
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            finally:
                self.label_smoother = smoother

    return LoraSFTTrainer


def build_trainer(
    recipe: Recipe,
    output_dir: Path,
    *,
    max_steps: int | None = None,
    backend: Backend | None = None,
    callbacks: list | None = None,
    push: bool = False,
) -> TrainerSetup:
    """Everything up to ``trainer.train()``: backend, tokenizer, data, model, LoRA."""
    backend = backend or choose_backend(recipe)
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
    template = training_chat_template(tokenizer) if recipe.trainer.assistant_only_loss else None
    prepared = data_mod.prepare(recipe, tokenizer, template)
    log.info("%s", prepared.report.format())
    model = load_model(recipe, backend)
    models.configure_generation(model, tokenizer)
    peft_config = lora_config(recipe, models.resolve_base(chain.base))
    log.info("adapter: %s", adapters.describe(recipe.to_dict()["lora"]))
    if backend.name == "unsloth":
        from unsloth import FastLanguageModel

        model = FastLanguageModel.get_peft_model(
            model,
            **adapters.unsloth_kwargs(recipe),
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
    return TrainerSetup(trainer, backend, tokenizer, prepared.report, chain)
