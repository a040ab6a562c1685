"""Recipes: one YAML per model under ``train_jobs/<slug>.yaml``, parsed into dataclasses.

A recipe says everything a run needs: the base model, the data, the LoRA shape, the trainer arguments, the Hub
repos and the job flavor. Command-line overrides use dotted keys (``trainer.learning_rate=1e-4``). Unknown or
misspelled keys are errors that suggest the right one; values are checked in ``__post_init__`` with a message that
says what to write instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import RecipeError
from .paths import recipes_dir

__all__ = ["RecipeError", "Recipe", "load_recipe", "find_recipe", "parse_duration", "recipes_dir"]

BUNDLED_PREFIX = "bundled:"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str | int | float) -> int:
    """``"3h50m"`` → seconds. Plain numbers are seconds."""
    if isinstance(text, int | float):
        return int(text)
    if str(text).strip().isdigit():
        return int(str(text).strip())
    m = _DURATION.match(str(text).strip())
    if not m or not any(m.groups()):
        raise RecipeError(f"cannot read duration {text!r}: write it like 4h, 3h50m, 90m or 45s")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def _need(cond: bool, key: str, got: Any, fix: str) -> None:
    if not cond:
        raise RecipeError(f"{key} = {got!r} is not valid: {fix}")


@dataclass
class ModelSpec:
    base: str
    """Hub id (``unsloth/Llama-3.2-1B-Instruct``), local folder, ``bundled:smollm2-135m-instruct``, or another
    recipe's slug (that recipe's base with its adapter merged in)."""
    adapter: str | None = None
    """An adapter (Hub id or folder) merged into the base before training; set for you when base is a slug."""
    load_in_4bit: bool = True
    """QLoRA on CUDA with bitsandbytes; ignored on CPU, where training runs unquantized."""
    dtype: str = "auto"
    chat_template: str | None = None
    """Path to a Jinja chat template that replaces the tokenizer's own."""

    def __post_init__(self) -> None:
        _need(bool(self.base and str(self.base).strip()), "model.base", self.base, "name a Hub id, a folder or a slug")
        _need(
            self.dtype in ("auto", "float32", "bfloat16", "float16"),
            "model.dtype",
            self.dtype,
            "use auto, float32, bfloat16 or float16",
        )


@dataclass
class ReplaySpec:
    """Chat rows mixed into raw-text training so the model keeps its chat ability."""

    source: str
    fraction: float = 0.1
    """Share of replay rows in the final training mix (0.1 = one row in ten is chat)."""
    split: str = "train"
    messages_field: str = "auto"
    max_rows: int | None = None
    min_score: float | None = None
    score_field: str = "score"

    def __post_init__(self) -> None:
        _need(0 < self.fraction < 1, "data.replay.fraction", self.fraction, "use a share between 0 and 1, e.g. 0.1")
        _need(self.max_rows is None or self.max_rows > 0, "data.replay.max_rows", self.max_rows, "use a positive count")


@dataclass
class DataSpec:
    source: str
    """Hub dataset id (``mlabonne/FineTome-100k``) or a local .jsonl/.json/.parquet/.csv/.txt file or folder."""
    format: str = "chat"
    """``chat`` (ShareGPT ``conversations`` or OpenAI ``messages``) or ``text`` (raw text, chunked into blocks)."""
    split: str = "train"
    messages_field: str = "auto"
    """Column holding the conversation; ``auto`` finds ``messages`` or ``conversations``."""
    text_field: str = "text"
    strict: bool = False
    """Raise at the first bad row (naming its index and reason) instead of dropping and counting."""
    shard: str | None = None
    """Train on one deterministic slice, ``i/n`` with 0 <= i < n (``0/8`` is the first of eight)."""
    max_rows: int | None = None
    min_score: float | None = None
    score_field: str = "score"
    dedupe: bool = True
    eval_rows: int = 0
    """Rows held out for evaluation (domain loss; with replay also general chat loss)."""
    trim: list[str] = field(default_factory=list)
    """Regular expressions cut out of raw text before chunking (licence headers and other boilerplate)."""
    replay: ReplaySpec | None = None

    def __post_init__(self) -> None:
        _need(self.format in ("chat", "text"), "data.format", self.format, "use chat or text")
        if self.shard is not None:
            self.shard_index()
        _need(self.max_rows is None or self.max_rows > 0, "data.max_rows", self.max_rows, "use a positive count")
        _need(self.eval_rows >= 0, "data.eval_rows", self.eval_rows, "use 0 or a positive count")
        if self.replay is not None and self.format != "text":
            raise RecipeError("data.replay is for raw-text training (data.format: text); chat data needs no replay")
        for pattern in self.trim:
            try:
                re.compile(pattern)
            except re.error as e:
                raise RecipeError(f"data.trim pattern {pattern!r} is not a valid regular expression: {e}") from e

    def shard_index(self) -> tuple[int, int]:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(self.shard))
        if not m or not int(m.group(1)) < int(m.group(2)):
            raise RecipeError(f"data.shard = {self.shard!r} is not valid: write i/n with 0 <= i < n, e.g. 0/8")
        return int(m.group(1)), int(m.group(2))


@dataclass
class LoraSpec:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))

    def __post_init__(self) -> None:
        _need(self.r > 0, "lora.r", self.r, "use a positive rank such as 8, 16 or 32")
        _need(self.alpha > 0, "lora.alpha", self.alpha, "use a positive value, usually equal to r")
        _need(0 <= self.dropout < 1, "lora.dropout", self.dropout, "use a value in [0, 1), e.g. 0 or 0.05")
        _need(bool(self.target_modules), "lora.target_modules", self.target_modules, "list at least one module")


OPTIMIZERS = ("adamw_8bit", "adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "sgd", "adafactor")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
SAMPLERS = ("random", "group_by_length", "batch_rebalance", "sequential")


@dataclass
class TrainerSpec:
    """The original author's values are the defaults (batch 2 × accumulation 4, lr 2e-4, adamw_8bit, seed 3407)."""

    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    warmup_steps: int = 5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    optim: str = "adamw_8bit"
    """adamw_8bit needs bitsandbytes on CUDA; elsewhere the run falls back to adamw_torch and says so."""
    weight_decay: float = 0.01
    lr_scheduler_type: str = "linear"
    seed: int = 3407
    save_steps: int = 50
    save_total_limit: int = 5
    logging_steps: int = 50
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    max_length: int = 2048
    packing: bool = False
    train_sampling_strategy: str = "random"
    """How unpacked examples are batched: batch_rebalance evens out padding and the work of each GPU (--gpus N)."""
    assistant_only_loss: bool = True
    gradient_checkpointing: bool = True

    def __post_init__(self) -> None:
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps", "logging_steps"):
            _need(getattr(self, key) >= 1, f"trainer.{key}", getattr(self, key), "use a whole number >= 1")
        _need(self.save_total_limit >= 1, "trainer.save_total_limit", self.save_total_limit, "keep at least 1")
        _need(self.warmup_steps >= 0, "trainer.warmup_steps", self.warmup_steps, "use 0 or more")
        _need(self.max_steps == -1 or self.max_steps > 0, "trainer.max_steps", self.max_steps, "use -1 (epochs) or > 0")
        _need(self.num_train_epochs > 0, "trainer.num_train_epochs", self.num_train_epochs, "use a value > 0")
        _need(0 < self.learning_rate < 1, "trainer.learning_rate", self.learning_rate, "use e.g. 2.0e-4")
        _need(self.weight_decay >= 0, "trainer.weight_decay", self.weight_decay, "use 0 or more, e.g. 0.01")
        _need(self.optim in OPTIMIZERS, "trainer.optim", self.optim, f"use one of {', '.join(OPTIMIZERS)}")
        _need(
            self.lr_scheduler_type in SCHEDULERS,
            "trainer.lr_scheduler_type",
            self.lr_scheduler_type,
            f"use one of {', '.join(SCHEDULERS)}",
        )
        _need(self.max_length >= 16, "trainer.max_length", self.max_length, "use a token count such as 2048")
        _need(
            self.train_sampling_strategy in SAMPLERS,
            "trainer.train_sampling_strategy",
            self.train_sampling_strategy,
            f"use one of {', '.join(SAMPLERS)}",
        )


@dataclass
class HubSpec:
    model_repo: str | None = None
    """Where checkpoints, the adapter and the card go, e.g. ``your-name/llama-3.2-1b-finetome``."""
    dataset_repo: str | None = None
    space: str | None = None
    private: bool = False

    def __post_init__(self) -> None:
        for key in ("model_repo", "dataset_repo", "space"):
            value = getattr(self, key)
            _need(
                value is None or re.fullmatch(r"[\w.-]+/[\w.-]+", value) is not None,
                f"hub.{key}",
                value,
                "write namespace/name, e.g. your-name/llama-3.2-1b-finetome",
            )


@dataclass
class JobSpec:
    flavor: str = "t4-small"
    timeout: str = "4h"

    def __post_init__(self) -> None:
        try:
            parse_duration(self.timeout)
        except RecipeError:
            raise RecipeError(f"job.timeout = {self.timeout!r} is not valid: write it like 4h, 3h50m or 90m") from None


@dataclass
class Recipe:
    slug: str
    model: ModelSpec
    data: DataSpec
    description: str = ""
    lora: LoraSpec = field(default_factory=LoraSpec)
    trainer: TrainerSpec = field(default_factory=TrainerSpec)
    hub: HubSpec = field(default_factory=HubSpec)
    job: JobSpec = field(default_factory=JobSpec)
    path: Path | None = field(default=None, compare=False, metadata={"yaml": False})
    """The file it came from; relative data paths resolve against its folder."""

    def __post_init__(self) -> None:
        _need(
            re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.slug or "") is not None,
            "slug",
            self.slug,
            "use lowercase letters, digits, - and _ (it names the model everywhere)",
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("path")
        return out

    def resolve_path(self, value: str) -> str:
        """A relative local path in the recipe is relative to the recipe's folder."""
        if self.path is None or value.startswith(BUNDLED_PREFIX) or Path(value).is_absolute():
            return value
        candidate = Path(os.path.normpath(self.path.parent / value))  # no symlink following (Hub cache blobs)
        return str(candidate) if candidate.exists() or value.startswith(".") else value


# ---------------------------------------------------------------------------------------------------------------
# Loading


def available_slugs(folder: Path | None = None) -> list[str]:
    d = folder or recipes_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def find_recipe(name: str, near: Path | None = None) -> Path:
    """A path to a YAML file, or the slug of a recipe: beside ``near`` (the folder of the recipe that names it)
    first, then in the recipes folder."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise RecipeError(f"recipe file {name} does not exist: check the path, or name a slug")
        return p
    folders = [f for f in (near, recipes_dir()) if f is not None]
    for folder in folders:
        candidate = Path(folder) / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    slugs = sorted({s for f in folders for s in available_slugs(Path(f))})
    close = difflib.get_close_matches(name, slugs, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    where = " or ".join(str(f) for f in dict.fromkeys(folders))
    raise RecipeError(f"no recipe named {name!r} in {where}: {hint}known recipes: {', '.join(slugs) or 'none'}")


def load_recipe(name: str, overrides: typing.Iterable[str] = (), near: Path | None = None) -> Recipe:
    """Load a recipe by slug or path and apply ``section.key=value`` overrides (``near``: see ``find_recipe``)."""
    path = find_recipe(name, near)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise RecipeError(f"{path} must be a mapping of sections (model:, data:, lora:, trainer:, ...)")
    raw.setdefault("slug", path.stem)
    for item in overrides:
        apply_override(raw, item)
    try:
        recipe = build(Recipe, raw, "")
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    recipe.path = path.absolute()  # not resolve(): Hub caches symlink files into a blobs folder
    return recipe


def apply_override(raw: dict[str, Any], item: str) -> None:
    """``trainer.learning_rate=1e-4`` → raw["trainer"]["learning_rate"] = 1e-4 (value parsed as YAML)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {item!r} must look like section.key=value, e.g. trainer.learning_rate=1e-4")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise RecipeError(f"override {item!r}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise RecipeError(f"override {item!r}: the value is not valid YAML ({e.problem}); quote it or fix it") from None


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)]


def _all_keys() -> dict[str, str]:
    """Every valid dotted key, for suggesting a misplaced one (``learning_rate`` → ``trainer.learning_rate``)."""
    out = {}
    for section, cls in (("model", ModelSpec), ("data", DataSpec), ("lora", LoraSpec), ("trainer", TrainerSpec)):
        out.update({name: f"{section}.{name}" for name in _field_names(cls)})
    out.update({name: f"hub.{name}" for name in _field_names(HubSpec)})
    out.update({name: f"job.{name}" for name in _field_names(JobSpec)})
    return out


_EXAMPLES = {
    "base": "model: {base: unsloth/Llama-3.2-1B-Instruct}",
    "source": "data: {source: mlabonne/FineTome-100k}",
    "model": "model: {base: unsloth/Llama-3.2-1B-Instruct}",
    "data": "data: {source: mlabonne/FineTome-100k}",
}


def build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a YAML mapping, rejecting unknown keys with a suggestion."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{where or 'recipe'} must be a mapping, got {type(raw).__name__} {raw!r}")
    names = _field_names(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            if str(key) in _all_keys():
                fix = f"it belongs in its section: write it as {_all_keys()[str(key)]!r}"
            elif close:
                fix = f"did you mean {(where + '.' if where else '') + close[0]!r}?"
            else:
                fix = f"valid keys here: {', '.join(names)}"
            raise RecipeError(f"unknown key {dotted!r}: {fix}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        keys = ", ".join(f"{where}.{m}" if where else m for m in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise RecipeError(f"{keys} {verb} missing (required): add it to the recipe, e.g. {_EXAMPLES[missing[0]]}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        return build(tp, {} if value is None else value, where)  # a section with every line commented out
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise RecipeError(f"{where} must be a list, e.g. [a, b]; got {value!r}")
        return [_coerce(args[0], v, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{where} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise RecipeError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)  # YAML reads 2e-4 as a string; accept it
        except (TypeError, ValueError):
            raise RecipeError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise RecipeError(f"{where} must be a finite number, got {value!r}")
        if tp is int:
            if number != int(number):
                raise RecipeError(f"{where} must be a whole number, got {value!r}")
            return int(number)
        return number
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise RecipeError(f"{where} must be text, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def parent_slug(recipe: Recipe) -> str | None:
    """When ``model.base`` names another recipe, its slug (``marx`` trains on top of ``finetome``)."""
    base = recipe.model.base
    if base.startswith(BUNDLED_PREFIX) or "/" in base or Path(base).exists():
        return None
    near = recipe.path.parent if recipe.path is not None else None
    known = set(available_slugs(near)) if near is not None else set()
    return base if base in known | set(available_slugs()) else None


def load_parent(recipe: Recipe) -> Recipe | None:
    """The recipe ``model.base`` names, found beside ``recipe`` first (so a checkout's recipes stay together)."""
    slug = parent_slug(recipe)
    if slug is None:
        return None
    return load_recipe(slug, near=recipe.path.parent if recipe.path is not None else None)
