"""Quality at step 0 (the base) and at every checkpoint: domain loss, general chat loss, greedy answers.

A recipe with an ``eval:`` section gets one ``QualityEval`` callback. It evaluates the base before the first step
(with the adapter switched off, so a resumed run that never measured its base still gets one), then at every step
that saves a checkpoint, just before the save — so each record rides in that checkpoint's ``trainer_state.json``
(resumable, pushed with it). One record holds:

- ``domain_loss``: held-out rows of ``data.source`` (``data.eval_rows``), raw text or chat alike;
- ``chat_loss``: held-out replay rows, when the recipe replays chat;
- ``general_loss``: ``eval.general_eval``, any chat source (by default the set the project ships: questions answered
  by the bundled base itself, so the loss measures drift from that base), with or without replay;
- ``probe_accuracy``: with ``eval.knowledge_probe``, the share of multiple-choice items answered right by
  log-likelihood (``knowledge.py``): forgetting as a second number, not only a loss;
- ``answers``: greedy replies to the three prompts of the original comparison plus ``eval.prompts``.

Losses come from ``Trainer.evaluate`` (the trainer's own data collator and masks); answers from ``generate`` on the
same weights. The run's choice of checkpoint and its guard against forgetting live in ``selection.py``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from ..errors import DataError
from ..paths import RECIPES, find_project_file, recipes_dir
from ..prompts import COMPARISON_PROMPTS
from ..recipe import GENERAL_CHAT, Recipe
from . import data as data_mod
from . import knowledge
from .chat_templates import training_chat_template

log = logging.getLogger("lorallama")

GENERAL_CHAT_FILE = "data/general_chat.jsonl"  # in the recipes folder
STATE_NAME = "QualityEval"  # the callback's key in trainer_state.json's stateful_callbacks
LOSS_KEYS = {"domain": "domain_loss", "chat": "chat_loss", "general": "general_loss"}


def general_source(recipe: Recipe) -> str | None:
    """Where ``eval.general_eval`` points: the shipped set, or the recipe's own source (paths relative to it)."""
    value = recipe.eval.general_eval if recipe.eval else None
    if value is None:
        return None
    if value != GENERAL_CHAT:
        return data_mod.source_path(recipe, value, "eval.general_eval")
    found = find_project_file(f"{RECIPES}/{GENERAL_CHAT_FILE}") or recipes_dir() / GENERAL_CHAT_FILE
    if not found.is_file():
        raise DataError(
            f"eval.general_eval: the shipped general chat set ({RECIPES}/{GENERAL_CHAT_FILE}) is not here: name a chat "
            "file or Hub dataset instead, or set eval.general_eval: null to go without a general loss"
        )
    return str(found)


def general_dataset(recipe: Recipe, tokenizer, template: str | None):
    """The first ``eval.general_rows`` good conversations of the general chat set, tokenised like training chat
    (assistant tokens scored, those longer than trainer.max_length left out), or None when the set is off."""
    import datasets

    source = general_source(recipe)
    if source is None:
        return None
    spec = recipe.eval
    report = data_mod.DataReport(source=source)
    rows = data_mod.load_rows(source, spec.general_split)
    kept = data_mod.validate_chat(rows, SimpleNamespace(messages_field="auto", dedupe=True), report, strict=False)
    examples = [data_mod.tokenize_chat(item["messages"], tokenizer, template) for item in kept[: spec.general_rows]]
    examples = [e for e in examples if any(e["assistant_masks"])]
    if not examples:
        raise DataError(f"eval.general_eval {source!r} holds no usable chat conversation:\n{report.format()}")
    fitting = [e for e in examples if len(e["input_ids"]) <= recipe.trainer.max_length]
    if not fitting:  # Trainer would cut away every reply and report no general loss at all
        raise DataError(
            f"every conversation of eval.general_eval {source!r} is longer than trainer.max_length "
            f"{recipe.trainer.max_length} tokens: raise trainer.max_length or use a set of shorter conversations"
        )
    if len(fitting) < len(examples):
        log.warning(
            "general chat eval: %d conversations longer than trainer.max_length left out", len(examples) - len(fitting)
        )
    examples = fitting
    log.info("general chat eval: %d conversations of %s", len(examples), source)
    return datasets.Dataset.from_dict({k: [e[k] for e in examples] for k in ("input_ids", "assistant_masks")})


def prompts_of(recipe: Recipe) -> list[str]:
    return list(dict.fromkeys([*COMPARISON_PROMPTS, *(recipe.eval.prompts if recipe.eval else [])]))


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy replies from the weights as they are now (transformers ``generate``; the model is put back as found)."""
    import torch

    was_training = model.training
    model.eval()
    out = []
    try:
        device = next(model.parameters()).device
        for prompt in prompts:
            inputs = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(device)
            with torch.no_grad():
                ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True)
            out.append(tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    finally:
        model.train(was_training)
    return out


def quality_callback(trainer, recipe: Recipe, general, guard: float | None, probe: list | None = None):
    """The ``QualityEval`` callback bound to ``trainer`` (a class built here: transformers loads lazily)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    from . import selection

    class QualityEval(TrainerCallback, ExportableState):
        def __init__(self) -> None:
            self.records: list[dict[str, Any]] = []
            self.stopped: str | None = None
            self.prompts = prompts_of(recipe)

        def state(self) -> dict:
            return {"args": {}, "attributes": {"records": self.records, "stopped": self.stopped}}

        def on_train_begin(self, args, state, control, **kwargs):
            saved = state.stateful_callbacks.get(STATE_NAME)
            saved = saved[-1] if isinstance(saved, list) else saved
            if saved:  # resumed: the records so far came back with the checkpoint
                self.records = list(saved.get("attributes", {}).get("records") or [])
                self.stopped = saved.get("attributes", {}).get("stopped")
            # A checkpoint written without this callback has no entry; Trainer's save expects one.
            state.stateful_callbacks.setdefault(STATE_NAME, self.state())
            if not any(r["step"] == 0 for r in self.records):
                self.records.insert(0, self.evaluate(state, base=True))
                base = self.records[0]
                log.info("base (step 0): %s", _losses_text(base))
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if not control.should_save:
                return control
            control.should_evaluate = False  # this callback evaluates; Trainer's own pass would repeat it
            if self.records and self.records[-1]["step"] == state.global_step:
                return control
            record = self.evaluate(state)
            self.records.append(record)
            rule, limit = recipe.eval.select_rule()
            choice = selection.choose(self.records, rule, limit)
            if choice is not None and choice.step == state.global_step:
                state.best_global_step = state.global_step  # Trainer keeps this checkpoint out of its rotation
            log.info("step %d: %s", state.global_step, _losses_text(record, self.records[0]))
            reason = selection.guard(self.records, guard)
            if reason is not None and self.stopped is None:
                self.stopped = reason
                log.warning("stopping early at step %d: %s", state.global_step, reason)
                control.should_training_stop = True
            return control

        def evaluate(self, state, base: bool = False) -> dict[str, Any]:
            import contextlib

            model = trainer.model
            off = model.disable_adapter() if base and hasattr(model, "disable_adapter") else contextlib.nullcontext()
            sets = {**(trainer.eval_dataset or {}), **({"general": general} if general is not None else {})}
            record: dict[str, Any] = {"step": 0 if base else state.global_step, "epoch": 0.0 if base else state.epoch}
            with off:
                if sets:
                    metrics = trainer.evaluate(eval_dataset=sets)
                    for name, key in LOSS_KEYS.items():
                        if f"eval_{name}_loss" in metrics:
                            record[key] = round(float(metrics[f"eval_{name}_loss"]), 5)
                if state.is_world_process_zero:
                    if probe:
                        record["probe_accuracy"] = round(knowledge.accuracy(model, probe), 4)
                    record["answers"] = greedy_answers(
                        model, trainer.processing_class, self.prompts, recipe.eval.max_new_tokens
                    )
            return record

    return QualityEval()


def _losses_text(record: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    parts = []
    for key in LOSS_KEYS.values():
        if key in record:
            ratio = f" ({record[key] / base[key]:.2f}× base)" if base and base.get(key) else ""
            parts.append(f"{key.replace('_', ' ')} {record[key]:.4f}{ratio}")
    if "probe_accuracy" in record:
        before = f" (base {base['probe_accuracy']:.1%})" if base and "probe_accuracy" in base else ""
        parts.append(f"knowledge probe {record['probe_accuracy']:.1%}{before}")
    return ", ".join(parts) or "answers only"


def attach(setup, recipe: Recipe):
    """Add the quality callback to the run's trainer; None when the recipe has no ``eval:`` section."""
    if recipe.eval is None:
        return None
    template = training_chat_template(setup.tokenizer) if recipe.trainer.assistant_only_loss else None
    probe = knowledge.probe_source(recipe)
    callback = quality_callback(
        setup.trainer,
        recipe,
        general_dataset(recipe, setup.tokenizer, template),
        recipe.eval.stop_if_general_worse_than,
        # Encoded once here; each evaluation only runs the model.
        knowledge.encode(knowledge.load_items(probe, recipe.eval.knowledge_rows), setup.tokenizer) if probe else None,
    )
    setup.trainer.add_callback(callback)
    return callback


def find(trainer):
    """The run's quality callback, if it has one."""
    return next((cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == STATE_NAME), None)
