"""Which checkpoint a run publishes, and when a run that is forgetting how to chat stops.

Rules (``eval.select``), over the records ``evaluation.py`` writes (step 0 is the base, never a candidate):

- ``best_domain_within_general: 1.10`` — the lowest domain loss among checkpoints whose general chat loss is at most
  1.10 × the base's; when none is, the checkpoint that kept general loss lowest, and the reason says so;
- ``lowest_eval`` — the lowest domain loss (general loss when there is no domain set);
- ``last`` — the newest checkpoint.

The guard (``eval.stop_if_general_worse_than: 1.25``) ends the run once general loss passes that multiple of the
base's. ``publish`` puts the chosen checkpoint's weights in the adapter folder and returns what run.json records.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..plots import plot_tradeoff
from ..recipe import Recipe

log = logging.getLogger("lorallama")

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # the config is the same for every checkpoint of a run
TRADEOFF_PNG = "tradeoff.png"


@dataclass
class Choice:
    step: int
    reason: str


def _base(records: list[dict[str, Any]]) -> dict[str, Any]:
    return next((r for r in records if r["step"] == 0), {})


def general_ratio(record: dict[str, Any], base: dict[str, Any]) -> float | None:
    if record.get("general_loss") is None or not base.get("general_loss"):
        return None
    return record["general_loss"] / base["general_loss"]


def choose(records: list[dict[str, Any]], rule: str, limit: float | None = None) -> Choice | None:
    """The checkpoint ``rule`` picks from ``records``, with the reason in words; None before the first checkpoint."""
    candidates = [r for r in records if r["step"] > 0]
    if not candidates:
        return None
    base = _base(records)
    if rule == "last":
        return Choice(candidates[-1]["step"], "the rule is last: the newest checkpoint")
    key = "domain_loss" if any("domain_loss" in r for r in candidates) else "general_loss"
    scored = [r for r in candidates if r.get(key) is not None]
    if not scored:
        return Choice(candidates[-1]["step"], f"no {key.replace('_', ' ')} was measured: the newest checkpoint")
    if rule == "lowest_eval":
        best = min(scored, key=lambda r: r[key])
        return Choice(best["step"], f"lowest {key.replace('_', ' ')} ({best[key]:.4f}) of {len(scored)} checkpoints")
    within = [r for r in scored if (g := general_ratio(r, base)) is not None and g <= limit]
    if within:
        best = min(within, key=lambda r: r[key])
        return Choice(
            best["step"],
            f"lowest domain loss ({best[key]:.4f}) among the {len(within)} of {len(scored)} checkpoints whose general "
            f"chat loss stayed within {limit:.2f}× the base's ({general_ratio(best, base):.2f}×)",
        )
    measured = [r for r in scored if general_ratio(r, base) is not None]
    if not measured:
        return Choice(scored[-1]["step"], "no general chat loss was measured: the newest checkpoint")
    best = min(measured, key=lambda r: r["general_loss"])
    return Choice(
        best["step"],
        f"no checkpoint kept general chat loss within {limit:.2f}× the base's: the one that came closest "
        f"({general_ratio(best, base):.2f}×)",
    )


def guard(records: list[dict[str, Any]], limit: float | None) -> str | None:
    """Why the run should stop now (general loss past ``limit`` × the base's), or None."""
    if limit is None or len(records) < 2:
        return None
    ratio = general_ratio(records[-1], _base(records))
    if ratio is None or ratio <= limit:
        return None
    return (
        f"general chat loss {records[-1]['general_loss']:.4f} is {ratio:.2f}× the base's "
        f"{_base(records)['general_loss']:.4f}, past eval.stop_if_general_worse_than {limit:.2f}"
    )


def kept_steps(checkpoints: Path) -> list[int]:
    steps = []
    for folder in checkpoints.glob("checkpoint-*"):
        if folder.name.split("-")[-1].isdigit() and (folder / ADAPTER_WEIGHTS).is_file():
            steps.append(int(folder.name.split("-")[-1]))
    return sorted(steps)


def publish(quality, recipe: Recipe, folder: Path, checkpoints: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Put the chosen checkpoint's adapter into ``folder`` (the adapter being written) and draw the trade-off plot;
    returns ``{"quality": …}`` for run.json (empty without evaluation)."""
    if quality is None:
        return {}
    final_step = meta["global_step"]
    records = quality.records
    rule, limit = recipe.eval.select_rule()
    kept = kept_steps(checkpoints)
    choice = choose(records, rule, limit)
    if choice is not None and choice.step != final_step and choice.step not in kept:
        # Resumed on another machine: the chosen checkpoint stayed behind. Choose among what is here.
        gone = choice.step
        choice = choose([r for r in records if r["step"] in (0, final_step, *kept)], rule, limit)
        if choice is not None:
            choice.reason += f" (checkpoint {gone}, the rule's first choice, is not on this machine)"
    if choice is not None and choice.step != final_step:
        shutil.copy2(checkpoints / f"checkpoint-{choice.step}" / ADAPTER_WEIGHTS, folder / ADAPTER_WEIGHTS)
        log.info("publishing checkpoint %d, not the last step %d: %s", choice.step, final_step, choice.reason)
    elif choice is not None:
        log.info("publishing the last step %d: %s", final_step, choice.reason)
    title = f"{recipe.slug}: domain vs general chat loss"
    plot_tradeoff(records, folder / TRADEOFF_PNG, title, choice and choice.step, limit)
    return {
        "quality": {
            "records": records,
            "prompts": quality.prompts,
            "rule": recipe.eval.select,
            "chosen_step": choice.step if choice else None,
            "reason": choice.reason if choice else "no checkpoint was evaluated",
            "kept_steps": sorted({*kept, final_step}),
            "stopped_early": quality.stopped,
        }
    }
