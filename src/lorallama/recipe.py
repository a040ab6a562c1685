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
from .names import LOCAL_SUFFIXES
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
    load_in_8bit: bool = False
    """The base in 8-bit (bitsandbytes LLM.int8) on CUDA; needs load_in_4bit: false. Ignored on CPU."""
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
        if self.load_in_8bit and self.load_in_4bit:
            raise RecipeError(
                "model.load_in_8bit and model.load_in_4bit are both true: pick one; for 8-bit also write "
                "model.load_in_4bit: false"
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


JUDGE_PROMPT = (
    "Rate the assistant's replies in this conversation from 1 (useless, wrong or harmful) to 5 (correct, helpful "
    "and well written). Answer with one digit.\n\n{conversation}"
)


@dataclass
class JudgeSpec:
    """A quality judge: each conversation gets a score, those under ``threshold`` are dropped (scores cached)."""

    model: str | None = None
    """A base the project can load (Hub id, folder, ``bundled:smollm2-135m-instruct``): the score is its expected
    rating, the digits 1-5 weighted by their probability as the next token after ``prompt``."""
    function: str | None = None
    """Or ``package.module:function``, called with a list of conversations, returning one score each."""
    prompt: str = JUDGE_PROMPT
    """Holds ``{conversation}``; given to the model as a user turn."""
    threshold: float = 3.0
    batch_size: int = 8
    max_tokens: int = 1024
    """Longer conversations are cut to this many tokens before they are judged."""
    cache: str | None = None
    """SQLite file of scores by content hash (default ``$LORALLAMA_CACHE/judge.sqlite``)."""

    def __post_init__(self) -> None:
        _need(
            (self.model is None) != (self.function is None),
            "data.judge",
            {"model": self.model, "function": self.function},
            "set exactly one of data.judge.model (e.g. bundled:smollm2-135m-instruct) or data.judge.function",
        )
        _need(
            self.function is None or re.fullmatch(r"[\w.]+:\w+", self.function) is not None,
            "data.judge.function",
            self.function,
            "write package.module:function",
        )
        _need("{conversation}" in self.prompt, "data.judge.prompt", self.prompt[:60], "put {conversation} in it")
        _need(self.batch_size >= 1, "data.judge.batch_size", self.batch_size, "use 1 or more")
        _need(self.max_tokens >= 16, "data.judge.max_tokens", self.max_tokens, "use a token count such as 1024")


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
    near_duplicates: float | None = None
    """Drop conversations this similar (estimated Jaccard of word 3-grams, MinHash/LSH) to an earlier one, e.g. 0.8;
    at most 0.98 (higher is what the exact-duplicate drop does)."""
    judge: JudgeSpec | None = None
    language: list[str] = field(default_factory=list)
    """Keep only conversations in these languages (ISO 639-1 codes such as en, de; py3langid); empty keeps all."""
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
        _need(
            self.near_duplicates is None or 0 < self.near_duplicates <= 0.98,  # LSH needs 2+ bands of 128
            "data.near_duplicates",
            self.near_duplicates,
            "use a similarity above 0 and at most 0.98, e.g. 0.8 (or leave it out)",
        )
        for code in self.language:
            _need(re.fullmatch(r"[a-z]{2}", code) is not None, "data.language", code, "use ISO 639-1 codes like en")
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


# The adapter methods (training/adapters.py maps each to its PEFT config). Prompt-learning methods add trained
# virtual tokens instead of changing weights, so they cannot be merged into the base.
ADAPTER_METHODS = ("lora", "dora", "rslora", "ia3", "prefix", "prompt")
WEIGHT_METHODS = ("lora", "dora", "rslora", "ia3")
VIRTUAL_TOKEN_METHODS = ("prefix", "prompt")


@dataclass
class LoraSpec:
    """The adapter: ``method`` picks it; r/alpha/dropout shape lora, dora and rslora, target_modules all four
    weight methods, num_virtual_tokens prefix and prompt tuning."""

    method: str = "lora"
    """lora, dora (magnitude + direction), rslora (alpha / sqrt(r) scaling), ia3 (learned scaling vectors), prefix
    (trained key/value prefixes in every layer) or prompt (trained input embeddings)."""
    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    feedforward_modules: list[str] | None = None
    """ia3: the target modules scaled on their input (default: the MLP ones among target_modules)."""
    num_virtual_tokens: int = 20
    """prefix and prompt: how many trained virtual tokens go before every sequence."""
    prompt_init_text: str | None = None
    """prompt: start the virtual tokens from this text's embeddings instead of random ones."""

    def __post_init__(self) -> None:
        _need(self.method in ADAPTER_METHODS, "lora.method", self.method, f"use one of {', '.join(ADAPTER_METHODS)}")
        _need(self.r > 0, "lora.r", self.r, "use a positive rank such as 8, 16 or 32")
        _need(self.alpha > 0, "lora.alpha", self.alpha, "use a positive value, usually equal to r")
        _need(0 <= self.dropout < 1, "lora.dropout", self.dropout, "use a value in [0, 1), e.g. 0 or 0.05")
        _need(bool(self.target_modules), "lora.target_modules", self.target_modules, "list at least one module")
        _need(
            1 <= self.num_virtual_tokens <= 512,
            "lora.num_virtual_tokens",
            self.num_virtual_tokens,
            "use a count between 1 and 512, e.g. 20",
        )
        if self.feedforward_modules is not None:
            _need(self.method == "ia3", "lora.feedforward_modules", self.feedforward_modules, "it is for method ia3")
            extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
            _need(not extra, "lora.feedforward_modules", self.feedforward_modules, f"add {extra} to target_modules")
        if self.prompt_init_text is not None:
            _need(self.method == "prompt", "lora.prompt_init_text", self.prompt_init_text, "it is for method prompt")
            _need(bool(self.prompt_init_text.strip()), "lora.prompt_init_text", "", "write some text or remove it")


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
    num_cycles: int = 1
    """cosine_with_restarts: how many cosine cycles (warm restarts) the schedule makes."""
    warmup_ratio: float | None = None
    """Warm up for this share of all optimizer steps instead of warmup_steps (e.g. 0.03)."""
    label_smoothing: float = 0.0
    """Share of each target's probability spread over the vocabulary (0.1 is usual; 0 = plain cross-entropy)."""
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
        _need(self.num_cycles >= 1, "trainer.num_cycles", self.num_cycles, "use a whole number >= 1, e.g. 3")
        _need(
            self.num_cycles == 1 or self.lr_scheduler_type == "cosine_with_restarts",
            "trainer.num_cycles",
            self.num_cycles,
            "cycles need trainer.lr_scheduler_type: cosine_with_restarts",
        )
        _need(
            self.warmup_ratio is None or 0 <= self.warmup_ratio < 1,
            "trainer.warmup_ratio",
            self.warmup_ratio,
            "use a share in [0, 1), e.g. 0.03",
        )
        _need(0 <= self.label_smoothing < 1, "trainer.label_smoothing", self.label_smoothing, "use [0, 1), e.g. 0.1")
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
    checkpoint_volume: str | None = None
    """A Storage Bucket (``namespace/bucket`` or ``hf://buckets/namespace/bucket``) mounted read-write into the job:
    local checkpoints then outlive a preempted job; the model repo still gets the adapter and newest checkpoint."""

    def __post_init__(self) -> None:
        try:
            parse_duration(self.timeout)
        except RecipeError:
            raise RecipeError(f"job.timeout = {self.timeout!r} is not valid: write it like 4h, 3h50m or 90m") from None
        if self.checkpoint_volume is not None:
            bucket = self.checkpoint_volume.removeprefix("hf://buckets/").rstrip("/")
            _need(
                re.fullmatch(r"[\w.-]+/[\w.-]+", bucket) is not None,
                "job.checkpoint_volume",
                self.checkpoint_volume,
                "name a Storage Bucket as namespace/bucket or hf://buckets/namespace/bucket",
            )
            self.checkpoint_volume = bucket


GENERAL_CHAT = "bundled:general-chat"
"""The general chat set the project ships (``train_jobs/data/general_chat.jsonl``): varied questions answered by the
bundled SmolLM2 itself, so its loss measures drift from that base."""
KNOWLEDGE_PROBE = "bundled:knowledge-probe"
"""The general-knowledge probe the project ships (``train_jobs/data/knowledge_probe.jsonl``): 333 multiple-choice
items written for it, scored by log-likelihood."""
SELECT_RULES = ("best_domain_within_general", "lowest_eval", "last")


@dataclass
class EvalSpec:
    """Evaluation at step 0 (the base) and at every checkpoint, the rule that picks the published checkpoint, and
    the guard that stops a run that forgets how to chat. Present (even as ``eval: {}``) means on."""

    general_eval: str | None = GENERAL_CHAT
    """Any chat source (file, folder or Hub dataset) whose loss is general chat ability; null turns it off."""
    general_split: str = "train"
    general_rows: int = 200
    """Conversations of ``general_eval`` used (the first ones)."""
    knowledge_probe: str | None = None
    """Multiple-choice items scored by log-likelihood at every evaluation (``bundled:knowledge-probe``: the project's
    333; or a JSONL file of question/choices/answer); null: off. Its accuracy is forgetting as a second number."""
    knowledge_rows: int = 333
    """Items of ``knowledge_probe`` used (the first ones)."""
    prompts: list[str] = field(default_factory=list)
    """Asked greedily at every evaluation, after the three prompts of the original comparison."""
    max_new_tokens: int = 60
    select: Any = field(default_factory=lambda: {"best_domain_within_general": 1.10})
    """``{best_domain_within_general: 1.10}`` (lowest domain loss whose general loss is ≤ 1.10 × the base's),
    ``lowest_eval`` (lowest domain loss) or ``last``."""
    stop_if_general_worse_than: float | None = None
    """End the run (saved, pushed, finished) once general loss exceeds this × the base's, e.g. 1.25."""

    def __post_init__(self) -> None:
        _need(self.general_rows > 0, "eval.general_rows", self.general_rows, "use a positive count, e.g. 200")
        _need(
            isinstance(self.knowledge_rows, int) and self.knowledge_rows > 0,
            "eval.knowledge_rows",
            self.knowledge_rows,
            "use a positive count, e.g. 333",
        )
        _need(self.max_new_tokens > 0, "eval.max_new_tokens", self.max_new_tokens, "use a token count, e.g. 60")
        self.select_rule()
        limit = self.stop_if_general_worse_than
        _need(
            limit is None or (isinstance(limit, int | float) and limit > 1),
            "eval.stop_if_general_worse_than",
            limit,
            "use a ratio above 1, e.g. 1.25 (stop when general loss is 25% worse than the base's)",
        )

    def select_rule(self) -> tuple[str, float | None]:
        """``(rule, limit)``: ``("best_domain_within_general", 1.1)``, ``("lowest_eval", None)``, ``("last", None)``."""
        value = self.select
        if isinstance(value, dict) and len(value) == 1:
            ((name, limit),) = value.items()
        elif isinstance(value, str):
            name, limit = value, (1.10 if value == "best_domain_within_general" else None)
        else:
            name, limit = None, None
        number = isinstance(limit, int | float) and not isinstance(limit, bool)
        ok = name in SELECT_RULES and (
            (name == "best_domain_within_general" and number and limit >= 1)
            or (name != "best_domain_within_general" and limit is None)
        )
        _need(ok, "eval.select", value, "write {best_domain_within_general: 1.10}, lowest_eval or last")
        return str(name), (float(limit) if limit is not None else None)


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
    eval: EvalSpec | None = None
    path: Path | None = field(default=None, compare=False, metadata={"yaml": False})
    """The file it came from; relative data paths resolve against its folder."""

    def __post_init__(self) -> None:
        _need(
            re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.slug or "") is not None,
            "slug",
            self.slug,
            "use lowercase letters, digits, - and _ (it names the model everywhere)",
        )
        if self.eval is not None:
            rule, _ = self.eval.select_rule()
            if rule == "best_domain_within_general" and not (self.data.eval_rows and self.eval.general_eval):
                raise RecipeError(
                    "eval.select best_domain_within_general compares domain with general loss: it needs "
                    "data.eval_rows > 0 and eval.general_eval; set both, or use eval.select: lowest_eval or last"
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
        # a file name stays beside the recipe even when it is missing there: never one of the current folder
        local = value.startswith(".") or Path(value).suffix.lower() in LOCAL_SUFFIXES
        return str(candidate) if candidate.exists() or local else value


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
    out.update({name: f"eval.{name}" for name in _field_names(EvalSpec)})
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
