"""The studio's world on the Hub double: a visitor with a canary token, the Space's own (other) token, the
visitor's chat dataset, a tiny recipe the studio offers, and the project's chat Space to duplicate."""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from support.recipes import ROWS

VISITOR = "visitor"
CANARY = "hf_CANARY_visitor_9b1f4c7e2d8a6f3b5c0e"  # the visitor's token: found nowhere it should not be
SPACE_OWNER = "lorallama"
SPACE_TOKEN = "hf_studio_space_own_token_5e1d"  # the studio Space's own HF_TOKEN: never does a visitor's work
DATASET = f"{VISITOR}/captain-chats"
CHAT_SPACE = f"{SPACE_OWNER}/finetome"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StudioWorld:
    recipes: Path  # the folder LORALLAMA_RECIPES points at: the recipes the studio offers
    visitor_token: str
    space_token: str
    read_token: str  # a read-only token of the visitor


def chat_rows(n: int = 24) -> list[dict]:
    return [ROWS[i % len(ROWS)] | {"id": i} for i in range(n)]


def make_world(hub, tmp_path: Path, tiny_base: Path, *, max_steps: int = 12, save_steps: int = 3) -> StudioWorld:
    visitor = hub.add_user(VISITOR, token=CANARY)
    read_only = hub.add_user(VISITOR, role="read", token="hf_visitor_read_only_71c2")
    space = hub.add_user(SPACE_OWNER, token=SPACE_TOKEN)
    rows = chat_rows()
    hub.seed_repo(DATASET, {"data/train.jsonl": "".join(json.dumps(r) + "\n" for r in rows)}, repo_type="dataset")
    # The project's chat Space as sync uploads it (its app.py and the vendored package): the one a visitor copies.
    hub.seed_repo(CHAT_SPACE, chat_space_files(), repo_type="space", sdk="gradio")
    recipes = tmp_path / "recipes"
    (recipes / "data").mkdir(parents=True)
    (recipes / "data" / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = {
        "description": "A tiny Llama taught to answer as Captain Lora.",
        "model": {"base": str(tiny_base)},
        "data": {"source": "data/chat.jsonl", "format": "chat", "messages_field": "conversations"},
        "lora": {"r": 4, "alpha": 8},
        "trainer": {
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "learning_rate": 5e-3,
            "warmup_steps": 1,
            "max_steps": max_steps,
            "save_steps": save_steps,
            "logging_steps": 1,
            "max_length": 128,
            "gradient_checkpointing": False,
            "report_to": [],
        },
        "hub": {"model_repo": f"{SPACE_OWNER}/tiny-captain", "space": CHAT_SPACE},
        "job": {"flavor": "cpu-basic", "timeout": "10m"},
    }
    (recipes / "tiny.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return StudioWorld(recipes, visitor, space, read_only)


@functools.cache
def chat_space_files() -> dict[str, bytes]:
    from lorallama.publishing import sync

    return sync.space_files(REPO_ROOT, "finetome")


def copy_space(hub, space_id: str, dest: Path) -> Path:
    """A Space's files from the double into ``dest`` (as the Spaces runtime checks them out)."""
    if dest.exists():
        shutil.rmtree(dest)
    for path, data in hub.files(space_id, repo_type="space").items():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest
