"""Where a run starts: explicit checkpoint > the Hub's last checkpoint > the newest local one > fresh.

``plan_resume`` answers with a typed ``ResumePlan`` (fresh, from a checkpoint, or nothing left to train) and the
reason, which the run logs; a recipe change that makes an old checkpoint meaningless is refused, naming the keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import hub
from ..errors import TrainError
from ..recipe import DataSpec, LoraSpec, ModelSpec, Recipe, TrainerSpec

CHECKPOINTS = "checkpoints"
HUB_CHECKPOINT_FOLDER = "hub"

# Keys whose change does not make an old checkpoint meaningless (saving, logging, memory trade-offs).
SAFE_TO_CHANGE = {"save_steps", "save_total_limit", "logging_steps", "report_to", "gradient_checkpointing"}


@dataclass(frozen=True)
class ResumePlan:
    """What the run does about earlier work. ``kind``: fresh | checkpoint | finished."""

    kind: Literal["fresh", "checkpoint", "finished"]
    reason: str
    checkpoint: Path | None = None
    """The checkpoint folder to resume from (kind == "checkpoint"), or the finished run's last one when known."""
    source: Literal["explicit", "hub", "local"] | None = None

    @property
    def resume_from(self) -> str | None:
        """What ``Trainer.train(resume_from_checkpoint=…)`` takes."""
        return str(self.checkpoint) if self.kind == "checkpoint" and self.checkpoint is not None else None


def checkpoint_step(folder: Path) -> int:
    return int(folder.name.split("-")[-1])


def is_complete(folder: Path) -> bool:
    """Trainer writes trainer_state.json last: a checkpoint is complete when it exists and parses (a machine killed
    while writing it leaves a truncated file, which would make every later resume fail)."""
    try:
        return isinstance(json.loads((folder / "trainer_state.json").read_text()).get("global_step"), int)
    except (OSError, ValueError, AttributeError):
        return False


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and is_complete(p)]
    return max(done, key=checkpoint_step, default=None)


def _defaults(section: str) -> dict[str, Any]:
    spec = {"model": ModelSpec, "data": DataSpec, "lora": LoraSpec, "trainer": TrainerSpec}[section]
    return {f.name: f.default for f in dataclasses.fields(spec) if f.default is not dataclasses.MISSING}


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


def plan_resume(
    output_dir: Path,
    resume: str | None,
    recipe: Recipe | None = None,
    hub_repo: str | None = None,
) -> ResumePlan:
    """``resume``: "never" (--restart), "auto"/None, or a checkpoint folder. A local checkpoint newer than the
    Hub's (its push failed) wins over the Hub's."""
    if resume == "never":
        return ResumePlan("fresh", "fresh start (--restart)")
    if resume not in (None, "auto"):
        path = Path(resume)
        if not (path / "trainer_state.json").is_file():
            raise TrainError(f"--resume {resume}: not a checkpoint folder (no trainer_state.json in it)")
        return ResumePlan("checkpoint", f"explicit checkpoint {path}", path, "explicit")
    local = last_checkpoint(output_dir / CHECKPOINTS)
    local_step = checkpoint_step(local) if local else -1
    if hub_repo:
        remote = hub.remote_run(hub_repo)
        if remote.checkpoint_step is not None and recipe is not None and remote.recipe is not None:
            conflicts = resume_conflicts(remote.recipe, recipe.to_dict())
            if conflicts:
                raise TrainError(
                    f"the unfinished run in {hub_repo} used a different recipe, so resuming it is unsafe: "
                    f"{'; '.join(conflicts)}. Restore those values, or pass --restart to start over"
                )
        if remote.finished and remote.checkpoint_step is not None:
            return ResumePlan("finished", f"the run in {hub_repo} already finished at step {remote.checkpoint_step}")
        if remote.checkpoint_step is not None and remote.checkpoint_step > local_step:
            path = hub.download_checkpoint(hub_repo, output_dir / HUB_CHECKPOINT_FOLDER)
            why = f"Hub checkpoint {hub_repo}@{hub.CHECKPOINT_DIR} (step {remote.checkpoint_step})"
            return ResumePlan("checkpoint", why, path, "hub")
    if local is not None:
        return ResumePlan("checkpoint", f"newest local checkpoint {local}", local, "local")
    return ResumePlan("fresh", "fresh start (no checkpoint found)")
