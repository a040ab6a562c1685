"""What the studio Space offers, from ``app.py``'s defaults and Space variables (``LORALLAMA_STUDIO_<FIELD>``)."""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..models import BUNDLED_PREFIX
from ..recipe import available_slugs, load_recipe
from ..serving.config import from_environ

ENV_PREFIX = "LORALLAMA_STUDIO_"


@dataclass
class StudioConfig:
    recipes: list[str] = field(default_factory=list)
    """Recipe slugs offered (default: every recipe in train_jobs/ whose base a Job can download)."""
    chat_space: str = "lorallama/finetome"
    """The chat Space duplicated for a recipe that names none (``hub.space``)."""
    max_attempts: int = 5
    """Training jobs the watcher may start for one run (the first included)."""
    backoff: float = 30.0
    """Seconds the watcher waits before its first relaunch; doubles each time."""
    refresh: float = 10.0
    """Seconds between two refreshes of the watch panel while the page is open."""
    sample_rows: int = 200
    """Rows of a Hub dataset checked before a launch (the first ones of its first data file)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: typing.Any) -> StudioConfig:
        environ = os.environ if environ is None else environ
        values = from_environ(cls, dict(defaults), environ, ENV_PREFIX)
        config = cls(**values)
        if not config.recipes:
            config.recipes = trainable_recipes()
        return config


def trainable_recipes() -> list[str]:
    """The recipes a Job can train from the Hub alone: not on the bundled model, which only a local install has."""
    out = []
    for slug in available_slugs():
        recipe = load_recipe(slug)
        if recipe.hub.model_repo and not recipe.model.base.startswith(BUNDLED_PREFIX):
            out.append(slug)
    return out
