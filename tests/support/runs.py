"""A finished tiny run, the real command line, and model repos as a finished job leaves them."""

from __future__ import annotations

from pathlib import Path

import yaml

from lorallama.publishing import cards
from lorallama.recipe import load_recipe
from lorallama.training.run import train

from .recipes import write_recipe

REPO_ROOT = Path(__file__).resolve().parents[2]


def finished_run(folder: Path, base: Path, **recipe) -> Path:
    """A tiny run with held-out rows, trained 2 steps with a lively learning rate; returns its adapter folder."""
    path = write_recipe(folder, base, learning_rate=5e-2, logging_steps=1, max_steps=2)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["eval_rows"] = 2
    for key, value in recipe.items():
        raw.setdefault(key.split(".")[0], {})[key.split(".")[1]] = value
    path.write_text(yaml.safe_dump(raw))
    result = train(load_recipe(str(path)), folder / "out", push=False, card=cards.adapter_card)
    assert result.finished
    return result.adapter_dir


def run_command(*argv: str) -> int:
    """The real command line, error boundary included."""
    from lorallama import cli

    return cli.main(list(argv))


def seed_model_repo(hub, repo: str, tiny_run: Path) -> dict[str, bytes]:
    """A model repo as a finished job leaves it: weights, checkpoint, run files, an old card; no loss.png."""
    files = {
        "adapter_model.safetensors": (tiny_run / "adapter_model.safetensors").read_bytes(),
        "adapter_config.json": (tiny_run / "adapter_config.json").read_bytes(),
        "last-checkpoint/adapter_model.safetensors": (tiny_run / "adapter_model.safetensors").read_bytes(),
        "last-checkpoint/optimizer.pt": b"optimizer state",
        "run.json": (tiny_run / "run.json").read_bytes(),
        "loss.json": (tiny_run / "loss.json").read_bytes(),
        "recipe.yaml": (tiny_run / "recipe.yaml").read_bytes(),
        "README.md": b"---\nlibrary_name: peft\n---\nold card\n",
    }
    hub.seed_repo(repo, files, message="Finished at step 2")
    return files


def changed_in_last_commit(hub, repo: str, repo_type: str = "model") -> set[str]:
    new, old = hub.commits(repo, repo_type)[:2]
    return {p for p in set(new.tree) | set(old.tree) if new.tree.get(p) != old.tree.get(p)}
