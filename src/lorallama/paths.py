"""Where things live: the checkout, the recipes folder, a run's folder, the cache.

Every other module asks here instead of computing ``Path(__file__).parents[2]`` or reading an environment variable
that another command set.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
RECIPES = "train_jobs"
RUNS = Path("runs")
ADAPTER = "adapter"


def checkout_root() -> Path | None:
    """The project checkout this package runs from (``src/lorallama`` inside it), or None when installed."""
    root = PACKAGE_DIR.parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / RECIPES).is_dir() else None


JOB_SCRIPTS = ("train.py", "watch.py")  # in train_jobs/: what a training job and a watcher job run
WHEELS = "dist"  # where a Space that launches jobs keeps the prebuilt lorallama wheel (``lorallama sync`` builds it)


def job_files_root() -> Path | None:
    """Where the files a job bundle takes lie (``train_jobs/`` with the job scripts and recipes, the throughput
    table): the checkout, else the folder a Space's vendored package sits in, when ``lorallama sync`` put them
    beside it (the studio Space, which launches jobs without a checkout)."""
    root = checkout_root()
    if root is not None:
        return root
    beside = PACKAGE_DIR.parent
    return beside if all((beside / RECIPES / name).is_file() for name in JOB_SCRIPTS) else None


def recipes_dir() -> Path:
    """``$LORALLAMA_RECIPES`` (a user's own folder), else ``./train_jobs``, else the checkout's ``train_jobs`` (or
    the one ``lorallama sync`` put beside a Space's vendored package)."""
    if env := os.environ.get("LORALLAMA_RECIPES"):
        return Path(env)
    local = Path.cwd() / RECIPES
    if local.is_dir():
        return local
    root = job_files_root()
    return root / RECIPES if root is not None else local


def run_dir(slug: str) -> Path:
    """A recipe's default output folder: ``runs/<slug>`` (relative to the current folder)."""
    return RUNS / slug


def adapter_dir(slug: str) -> Path:
    """Where a recipe's finished adapter lands by default: ``runs/<slug>/adapter``."""
    return run_dir(slug) / ADAPTER


def cache_root() -> Path:
    """``$LORALLAMA_CACHE``, else ``~/.cache/lorallama``: the converted bundled model and merged bases."""
    return Path(os.environ.get("LORALLAMA_CACHE", Path.home() / ".cache" / "lorallama"))


def find_project_file(relative: str, root: Path | None = None) -> Path | None:
    """``relative`` in ``root``, the current folder or the checkout, first found (card templates, data files)."""
    for base in (root, Path.cwd(), checkout_root()):
        if base is not None and (candidate := Path(base) / relative).is_file():
            return candidate
    return None
