"""Hyperparameter sweeps: a grid of recipe overrides, one short trial per point, ranked by the recipe's choice rule.

    lorallama sweep demo --grid trainer.learning_rate=1e-4,2e-4,5e-4 --max-steps 60
    lorallama sweep marx --grid data.replay.fraction=0,0.1,0.2 --grid trainer.learning_rate=1e-4,2e-4 --jobs

Every trial is an ordinary run with its own output folder (``<sweep>/<trial>/``) or, with ``--jobs``, its own model
repo (``<hub.model_repo>-<trial>``) trained as a Hugging Face Job: so each resumes as any run does, and running the
same sweep again finishes what is unfinished and retrains nothing. Each trial's published checkpoint (chosen by
``eval.select``) is what the sweep ranks: under ``best_domain_within_general`` first the trials whose general chat
loss stayed within the limit, by domain loss, then the others by how close they came. The sweep writes
``sweep.json``, ``sweep.md`` (the ranked table), ``sweep.png`` (domain vs general loss of every trial's checkpoints)
and ``best.yaml`` (the recipe with the best trial's values, ready for ``lorallama train``).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import hub
from ..errors import JobError, RecipeError
from ..plots import plot_sweep
from ..recipe import Recipe, load_recipe
from .selection import general_ratio

log = logging.getLogger("lorallama")

NO_REPLAY = "data.replay.fraction"  # a grid value of 0 here means a trial without replay


@dataclass
class Trial:
    name: str
    values: dict[str, str]
    """The grid point: dotted key → value as written."""
    status: str = "pending"  # pending | running | finished | failed
    output: str | None = None  # local output folder, or the model repo with --jobs
    job_ids: list[str] = field(default_factory=list)
    quality: dict[str, Any] | None = None
    rank: int | None = None

    def overrides(self) -> list[str]:
        out = []
        for key, value in self.values.items():
            if key == NO_REPLAY and float(value) == 0:
                out.append("data.replay=null")  # replay's fraction must be above 0: no replay is no replay section
            else:
                out.append(f"{key}={value}")
        return out

    def chosen(self) -> dict[str, Any] | None:
        quality = self.quality or {}
        return next((r for r in quality.get("records") or [] if r["step"] == quality.get("chosen_step")), None)


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["trainer.learning_rate=1e-4,2e-4"]`` → ``[("trainer.learning_rate", ["1e-4", "2e-4"])]``."""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        parts = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or "." not in key or not parts:
            raise RecipeError(f"--grid {item!r} must look like section.key=V1,V2, e.g. trainer.learning_rate=1e-4,2e-4")
        if any(k == key.strip() for k, _ in grid):
            raise RecipeError(f"--grid names {key.strip()!r} twice: give all its values in one --grid")
        grid.append((key.strip(), parts))
    if not grid:
        raise RecipeError("a sweep needs at least one --grid KEY=V1,V2")
    return grid


def make_trials(grid: list[tuple[str, list[str]]]) -> list[Trial]:
    keys = [k for k, _ in grid]
    trials = []
    for i, point in enumerate(itertools.product(*(v for _, v in grid))):
        label = "-".join(f"{k.split('.')[-1]}{v}" for k, v in zip(keys, point, strict=True))
        name = f"t{i:02d}-" + re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")
        trials.append(Trial(name[:60].rstrip("-."), dict(zip(keys, point, strict=True))))
    return trials


def trial_recipe(recipe_name: str, base_overrides: list[str], trial: Trial) -> Recipe:
    try:
        recipe = load_recipe(recipe_name, [*base_overrides, *trial.overrides()])
    except RecipeError as e:
        raise RecipeError(f"trial {trial.name} ({', '.join(trial.overrides())}): {e}") from None
    if recipe.eval is None:
        raise RecipeError(
            f"recipe {recipe.slug!r} has no eval: section, and a sweep ranks trials by eval.select: add one "
            "(eval: {} takes the defaults) or pass --set eval.select=lowest_eval"
        )
    return recipe


# ---------------------------------------------------------------------------------------------------------------
# Running


def run_local(
    recipe_name: str,
    trials: list[Trial],
    base_overrides: list[str],
    folder: Path,
    parallel: int = 1,
    on_finish: Callable[[Trial], None] | None = None,
):
    """Trials one after another in this process, or ``parallel`` at a time as ``lorallama train`` processes;
    ``on_finish`` hears of each trial as it ends."""
    from .run import train

    pending = list(trials)
    running: list[tuple[Trial, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < max(1, parallel):
            trial = pending.pop(0)
            trial.output = str(folder / trial.name)
            trial.status = "running"
            recipe = trial_recipe(recipe_name, base_overrides, trial)
            if parallel <= 1:
                train(recipe, Path(trial.output), push=False)
                _finish_local(trial)
                if on_finish:
                    on_finish(trial)
                continue
            command = [sys.executable, "-m", "lorallama.cli", "train", recipe_name, "--no-push", "--output"]
            command += [trial.output, *(a for o in [*base_overrides, *trial.overrides()] for a in ("--set", o))]
            log_file = open(folder / f"{trial.name}.log", "w")  # noqa: SIM115  (closed when the process ends)
            running.append((trial, subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)))
        for trial, proc in list(running):
            if proc.poll() is not None:
                running.remove((trial, proc))
                _finish_local(trial, proc.returncode)
                if on_finish:
                    on_finish(trial)
        if running:
            time.sleep(1)


def _finish_local(trial: Trial, returncode: int = 0) -> None:
    meta_file = Path(trial.output) / "adapter" / "run.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    trial.quality = meta.get("quality")
    trial.status = "finished" if returncode == 0 and meta.get("finished") else "failed"
    log.info("trial %s: %s", trial.name, trial.status)


def run_jobs(
    recipe_name: str,
    trials: list[Trial],
    base_overrides: list[str],
    sweep_id: str,
    max_parallel: int = 4,
    flavor: str | None = None,
    timeout: str | None = None,
    max_attempts: int = 3,
    poll: float = 5.0,
    on_event: Callable[[str], None] | None = None,
) -> None:
    """Each trial as Hugging Face Jobs into its own repo, at most ``max_parallel`` at once; a trial whose job ends
    unfinished (error, timeout, preemption) is relaunched and resumes from its repo's last checkpoint."""
    from . import jobs

    say = on_event or log.info
    recipes = {}
    for trial in trials:
        recipe = trial_recipe(recipe_name, base_overrides, trial)
        if not recipe.hub.model_repo:
            raise JobError(
                f"sweep --jobs needs hub.model_repo in recipe {recipe.slug!r}: each trial trains into "
                "<hub.model_repo>-<trial>; set it, e.g. --set hub.model_repo=you/name"
            )
        recipe.hub.model_repo = f"{recipe.hub.model_repo}-{trial.name}"[:96]
        trial.output = recipe.hub.model_repo
        recipes[trial.name] = recipe
    pending = [t for t in trials if not _finished_on_hub(t)]
    running: dict[str, Trial] = {}
    while pending or running:
        while pending and len(running) < max(1, max_parallel):
            trial = pending.pop(0)
            labels = {"lorallama-sweep": sweep_id, "lorallama-trial": trial.name}
            job_id = jobs.launch(recipes[trial.name], flavor, timeout, labels=labels)
            trial.job_ids.append(job_id)
            trial.status = "running"
            running[job_id] = trial
            say(f"{trial.name}: job {job_id} launched ({', '.join(trial.overrides())})")
        for job_id, trial in list(running.items()):
            stage, message = jobs.stage(job_id)
            if stage not in jobs.TERMINAL:
                continue
            del running[job_id]
            if _finished_on_hub(trial):
                say(f"{trial.name}: finished ({job_id} {stage})")
            elif stage == "CANCELED" or len(trial.job_ids) >= max_attempts:
                trial.status = "failed"
                say(f"{trial.name}: unfinished after {len(trial.job_ids)} job(s), last {stage} {message or ''}")
            else:
                say(f"{trial.name}: job {job_id} ended {stage} unfinished; relaunching (it resumes)")
                pending.insert(0, trial)
        if running:
            time.sleep(poll)


def _finished_on_hub(trial: Trial) -> bool:
    raw = hub.read_file(trial.output, "run.json")
    meta = json.loads(raw) if raw else {}
    if meta.get("finished") and meta.get("quality"):
        trial.quality, trial.status = meta["quality"], "finished"
        return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# Ranking and the report


def rank(trials: list[Trial], recipe: Recipe) -> list[Trial]:
    """Finished trials best first by ``eval.select`` (see the module docstring); unfinished ones last."""
    rule, limit = recipe.eval.select_rule()

    def key(trial: Trial):
        chosen = trial.chosen()
        if trial.status != "finished" or chosen is None:
            return (3, 0.0)
        base = next((r for r in trial.quality["records"] if r["step"] == 0), {})
        loss = chosen.get("domain_loss", chosen.get("general_loss"))
        if rule != "best_domain_within_general":
            return (0, loss if loss is not None else float("inf"))
        ratio = general_ratio(chosen, base)
        if ratio is not None and ratio <= limit:
            return (0, loss)
        return (1, ratio if ratio is not None else float("inf"))

    ordered = sorted(trials, key=key)
    for i, trial in enumerate(ordered, 1):
        trial.rank = i if trial.status == "finished" else None
    return ordered


def table(trials: list[Trial], recipe: Recipe) -> str:
    keys = list(trials[0].values) if trials else []
    _, limit = recipe.eval.select_rule()
    head = ["rank", "trial", *keys, "chosen step", "domain loss", "general chat loss", "within limit"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for t in trials:
        chosen = t.chosen() or {}
        base = next((r for r in (t.quality or {}).get("records") or [] if r["step"] == 0), {})
        ratio = general_ratio(chosen, base) if chosen else None
        cells = [
            str(t.rank or "—"),
            t.name,
            *(t.values[k] for k in keys),
            str(chosen.get("step", "—")) if t.status == "finished" else t.status,
            _fmt(chosen.get("domain_loss"), base.get("domain_loss")),
            _fmt(chosen.get("general_loss"), base.get("general_loss")),
            "—" if ratio is None or limit is None else ("yes" if ratio <= limit else "no"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None, base: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" + (f" ({value / base:.2f}×)" if base else "")


def write_report(trials: list[Trial], recipe: Recipe, recipe_name: str, base_overrides: list[str], folder: Path):
    """sweep.json, sweep.md, sweep.png and best.yaml in ``folder``; returns the best trial (or None)."""
    folder.mkdir(parents=True, exist_ok=True)
    ordered = rank(trials, recipe)
    best = ordered[0] if ordered and ordered[0].rank == 1 else None
    report = {"recipe": recipe_name, "rule": recipe.eval.select, "overrides": base_overrides}
    report["trials"] = [asdict(t) for t in ordered]
    report["best"] = best.name if best else None
    (folder / "sweep.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    text = f"# Sweep of {recipe.slug}\n\nRanked by `eval.select: {recipe.eval.select}`.\n\n{table(ordered, recipe)}\n"
    (folder / "sweep.md").write_text(text, encoding="utf-8")
    series = {t.name: t.quality["records"] for t in ordered if t.quality}
    title = f"sweep of {recipe.slug}: domain vs general chat loss"
    plot_sweep(series, folder / "sweep.png", title, best and best.name, recipe.eval.select_rule()[1])
    if best is not None:
        winner = trial_recipe(recipe_name, base_overrides, best)
        raw = winner.to_dict()
        # Paths in a recipe are relative to its file; best.yaml lives elsewhere, so local ones become absolute.
        for spec, key in (
            (raw["data"], "source"),
            (raw["data"].get("replay"), "source"),
            (raw["eval"], "general_eval"),
        ):
            if spec and spec.get(key) and Path(winner.resolve_path(spec[key])).exists():
                spec[key] = str(Path(winner.resolve_path(spec[key])).resolve())
        header = f"# The best trial of a sweep ({best.name}: {', '.join(best.overrides())}), by eval.select.\n"
        (folder / "best.yaml").write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return best
