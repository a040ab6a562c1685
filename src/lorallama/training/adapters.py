"""Adapter methods: the recipe's ``lora.method`` as a PEFT config, which backend can train it, whether it merges.

    lora    low-rank update of each target weight (alpha / r scaling)
    dora    LoRA split into magnitude and direction (``use_dora``): closer to full fine-tuning at small ranks
    rslora  LoRA scaled by alpha / sqrt(r) (``use_rslora``): higher ranks keep learning instead of stalling
    ia3     learned vectors that scale activations: a few thousand parameters
    prefix  trained key/value prefixes in every attention layer
    prompt  trained embeddings of virtual tokens before the input

The first four change weights and can be merged into the base; prefix and prompt tuning add virtual tokens, so
chat loads them unmerged and ``export merged`` / ``export gguf`` refuse them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..recipe import VIRTUAL_TOKEN_METHODS, Recipe

# Unsloth's get_peft_model builds LoRA (and rsLoRA with use_rslora) on its fused kernels; the other methods are
# not optimised there, so they train on transformers + PEFT.
UNSLOTH_METHODS = ("lora", "rslora")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    mergeable: bool


METHODS = {
    "lora": Method("lora", "LoRA", True),
    "dora": Method("dora", "DoRA", True),
    "rslora": Method("rslora", "rsLoRA", True),
    "ia3": Method("ia3", "(IA)³", True),
    "prefix": Method("prefix", "prefix tuning", False),
    "prompt": Method("prompt", "prompt tuning", False),
}


def method(recipe: Recipe) -> Method:
    return METHODS[recipe.lora.method]


def unsloth_fallback(recipe: Recipe) -> str | None:
    """Why this recipe's adapter cannot train on Unsloth (``None`` when it can)."""
    if recipe.lora.method in UNSLOTH_METHODS:
        return None
    return (
        f"lora.method {recipe.lora.method} ({method(recipe).label}) is not among the methods Unsloth trains "
        f"({', '.join(UNSLOTH_METHODS)})"
    )


def peft_config(recipe: Recipe, tokenizer_path: str | None = None):
    """The PEFT config for the recipe's adapter. ``tokenizer_path``: for prompt tuning started from text."""
    lora = recipe.lora
    if lora.method in ("lora", "dora", "rslora"):
        from peft import LoraConfig

        return LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            use_dora=lora.method == "dora",
            use_rslora=lora.method == "rslora",
            bias="none",
            task_type="CAUSAL_LM",
        )
    if lora.method == "ia3":
        from peft import IA3Config

        feedforward = lora.feedforward_modules
        if feedforward is None:
            feedforward = [m for m in lora.target_modules if m in MLP_MODULES]
        return IA3Config(
            target_modules=list(lora.target_modules), feedforward_modules=list(feedforward), task_type="CAUSAL_LM"
        )
    if lora.method == "prefix":
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(num_virtual_tokens=lora.num_virtual_tokens, task_type="CAUSAL_LM")
    from peft import PromptTuningConfig, PromptTuningInit

    if lora.prompt_init_text:
        return PromptTuningConfig(
            num_virtual_tokens=lora.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=lora.prompt_init_text,
            tokenizer_name_or_path=tokenizer_path,
            task_type="CAUSAL_LM",
        )
    return PromptTuningConfig(num_virtual_tokens=lora.num_virtual_tokens, task_type="CAUSAL_LM")


def prepended_positions(model) -> int:
    """Positions a prompt-learning adapter puts before the text (prompt tuning's virtual tokens): its logits have
    them too. Prefix tuning adds keys and values, not positions: 0, as for every other method."""
    config = getattr(model, "active_peft_config", None)
    if config is None or not getattr(config, "is_prompt_learning", False):
        return 0
    return 0 if str(config.peft_type).endswith("PREFIX_TUNING") else int(config.num_virtual_tokens)


def unsloth_kwargs(recipe: Recipe) -> dict:
    """What ``FastLanguageModel.get_peft_model`` takes for the recipe's adapter (lora or rslora)."""
    lora = recipe.lora
    return {
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": list(lora.target_modules),
        "use_rslora": lora.method == "rslora",
    }


def describe(lora: dict) -> str:
    """One line naming the method and its shape, for cards and logs (``lora`` is the recipe's section as a dict)."""
    name = lora.get("method") or "lora"
    label = METHODS[name].label if name in METHODS else name
    if name in VIRTUAL_TOKEN_METHODS:
        return f"{label}, {lora.get('num_virtual_tokens')} virtual tokens (not mergeable: loaded beside the base)"
    if name == "ia3":
        return f"{label} on {', '.join(lora.get('target_modules') or [])}"
    return f"{label}, rank {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}"
