"""The training backend: Unsloth on CUDA when installed, else transformers + PEFT (+ bitsandbytes 4- or 8-bit), else
CPU. Adapter methods Unsloth does not train (training/adapters.py) run on transformers + PEFT.

The choice and its reason are logged and recorded in the run's metadata and card.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import asdict, dataclass

from ..errors import ModelError
from ..models import base_chain, merged_base
from ..recipe import Recipe
from . import attention
from .adapters import unsloth_fallback

log = logging.getLogger("lorallama")


@dataclass
class Backend:
    name: str  # unsloth | transformers | cpu
    device: str
    dtype: str
    load_in_4bit: bool
    optim: str
    reason: str
    load_in_8bit: bool = False

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
    fallback = unsloth_fallback(recipe)
    if prefer == "unsloth" and fallback:
        raise ModelError(f"backend 'unsloth' cannot train this recipe: {fallback}: use --backend transformers")
    optim = recipe.trainer.optim
    if cuda and prefer != "cpu":
        name = prefer or ("unsloth" if has_unsloth and not fallback else "transformers")
        bf16 = torch.cuda.is_bf16_supported()
        four_bit = recipe.model.load_in_4bit and (has_bnb or name == "unsloth")
        eight_bit = recipe.model.load_in_8bit and (has_bnb or name == "unsloth")
        if recipe.model.load_in_8bit and not eight_bit:
            raise ModelError("model.load_in_8bit needs bitsandbytes: pip install bitsandbytes (or set it to false)")
        if "8bit" in optim and not has_bnb:
            optim = "adamw_torch"
        reason = "CUDA + unsloth installed" if name == "unsloth" else "CUDA" + (" + bitsandbytes" if has_bnb else "")
        if name == "transformers" and has_unsloth and fallback and prefer is None:
            reason += f"; not Unsloth: {fallback}"
        dtype = "bfloat16" if bf16 else "float16"
        return Backend(name, "cuda", dtype, four_bit, optim, reason, eight_bit)
    if "8bit" in optim:
        optim = "adamw_torch"  # bitsandbytes' 8-bit optimizers need CUDA
    dtype = recipe.model.dtype if recipe.model.dtype != "auto" else "float32"
    return Backend("cpu", "cpu", dtype, False, optim, "no CUDA device" if not cuda else "asked for cpu")


def load_model(recipe: Recipe, backend: Backend):
    """The base model (with any parent adapters merged) ready for LoRA on ``backend``."""
    import torch
    from transformers import AutoModelForCausalLM

    chain = base_chain(recipe)
    path = merged_base(chain, "float32" if backend.device == "cpu" else backend.dtype)
    dtype = getattr(torch, backend.dtype)
    if backend.name == "unsloth":
        from unsloth import FastLanguageModel

        if recipe.trainer.packing:
            on = attention.enable_for_unsloth()
            log.info("packing under Unsloth: %s", "torch varlen_attn" if on else "Unsloth's own packed attention")
        model, _ = FastLanguageModel.from_pretrained(
            model_name=path,
            max_seq_length=recipe.trainer.max_length,
            load_in_4bit=backend.load_in_4bit,
            load_in_8bit=backend.load_in_8bit,
            dtype=dtype,
        )
        return model
    kwargs = {"dtype": dtype}
    if backend.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    elif backend.load_in_8bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    choice = attention.for_backend(backend) if recipe.trainer.packing else None
    if choice is not None and choice.kernel is not None:
        attention.register()  # padding-free batches: conversations kept apart by torch's own kernel
        kwargs["attn_implementation"] = choice.attn_implementation
    if backend.device == "cuda":
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}  # one GPU per DDP worker
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ModelError(f"cannot load base model {chain.base!r}: {e}") from e
    if backend.load_in_4bit or backend.load_in_8bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.trainer.gradient_checkpointing)
    return model
