"""Model cards: the README a run leaves in its adapter folder and pushes to its model repo."""

from __future__ import annotations

from typing import Any

from . import __version__
from .recipe import Recipe


def wheel_name() -> str:
    """The name of the lorallama wheel a job bundle carries (pure Python, so one name fits every machine)."""
    return f"lorallama-{__version__}-py3-none-any.whl"


def rerun_command(repo: str, flavor: str, timeout: str) -> str:
    """The one line that re-runs training from the model repo alone."""
    from huggingface_hub import hf_hub_url

    wheel = hf_hub_url(repo, f"job/{wheel_name()}")
    script = hf_hub_url(repo, "train.py")
    return (
        f'hf jobs uv run --flavor {flavor} --timeout {timeout} --secrets HF_TOKEN --with "lorallama @ {wheel}" '
        f"{script} --repo {repo}"
    )


def model_card(recipe: Recipe, meta: dict[str, Any]) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    from .models import hub_id_of

    base = hub_id_of(meta["base"])
    data = recipe.data.source if "/" in recipe.data.source and not recipe.data.source.startswith(".") else None
    card_data = ModelCardData(
        base_model=base,
        library_name="peft",
        pipeline_tag="text-generation",
        datasets=[data] if data and recipe.data.source.count("/") == 1 else None,
        tags=["lora", "trl", "sft", "lorallama"] + (["unsloth"] if meta["backend"]["name"] == "unsloth" else []),
    )
    repo = recipe.hub.model_repo
    status = "finished" if meta["finished"] else f"stopped at step {meta['global_step']} (resumable)"
    lines = [
        f"# {recipe.slug}",
        "",
        recipe.description or f"A LoRA adapter for {base}.",
        "",
        f"- base model: `{base}`"
        + (f" with {', '.join(meta['merged_adapters'])} merged in" if meta["merged_adapters"] else ""),
        f"- data: `{recipe.data.source}` ({recipe.data.format})",
        f"- training: {status}, {meta['global_step']} steps on {meta['hardware']} ({meta['backend']['name']} backend)",
        "",
        "![training loss](loss.png)",
        "",
        "## Use it",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        f'model = AutoPeftModelForCausalLM.from_pretrained("{repo or "path/to/adapter"}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo or "path/to/adapter"}")',
        "```",
    ]
    if repo:
        lines += [
            "",
            "## Re-run training from this repo",
            "",
            "It resumes from `last-checkpoint/` when the run is unfinished:",
            "",
            "```bash",
            rerun_command(repo, recipe.job.flavor, recipe.job.timeout),
            "```",
        ]
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))
