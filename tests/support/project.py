"""A project checkout in a temp folder: two Spaces, a recipe, card templates, committed with git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


ALPHA_README = """---
title: Alpha chat
emoji: 🦙
colorFrom: indigo
colorTo: purple
sdk: gradio
sdk_version: 6.31.0
python_version: "3.11"
app_file: app.py
models:
- lorallama/tiny-alpha
- HuggingFaceTB/SmolLM2-135M-Instruct
datasets:
- lorallama/demo-chat
license: apache-2.0
short_description: A tiny chat for the sync tests
---

# Alpha chat

Chat with lorallama/tiny-alpha.
"""


BETA_README = "---\ntitle: Beta\nsdk: gradio\napp_file: main.py\n---\n\nThe second Space.\n"


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def make_project(root: Path) -> Path:
    """A checkout with two Spaces (one with a recipe), a model card template and a dataset card template."""
    alpha = root / "spaces" / "alpha"
    (alpha / "assets").mkdir(parents=True)
    (alpha / "README.md").write_text(ALPHA_README)
    (alpha / "app.py").write_text(
        "from lorallama.serving.config import ChatConfig\n\nADAPTER = 'lorallama/tiny-alpha'\n"
    )
    (alpha / "requirements.txt").write_text("gradio==6.31.0\n")
    (alpha / "assets" / "logo.png").write_bytes(PNG)
    (alpha / "__pycache__").mkdir()
    (alpha / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    beta = root / "spaces" / "beta"
    beta.mkdir()
    (beta / "README.md").write_text(BETA_README)
    (beta / "main.py").write_text("print('beta')\n")
    (root / "train_jobs").mkdir()
    recipe = {
        "description": "A tiny recipe.",
        "model": {"base": "bundled:smollm2-135m-instruct"},
        "data": {"source": "data/chat.jsonl"},
        "hub": {"model_repo": "lorallama/tiny-alpha", "space": "lorallama/alpha-chat"},
    }
    (root / "train_jobs" / "alpha.yaml").write_text("# the alpha recipe\n" + yaml.safe_dump(recipe, sort_keys=False))
    (root / "model_cards").mkdir()
    shutil.copy(
        REPO_ROOT / "src" / "lorallama" / "publishing" / "templates" / "model_card.jinja",
        root / "model_cards" / "alpha.md",
    )
    (root / "datasets_cards").mkdir()
    shutil.copy(REPO_ROOT / "datasets_cards" / "demo-chat.md", root / "datasets_cards" / "demo-chat.md")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    return root
