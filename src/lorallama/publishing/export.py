"""Exports: a merged 16-bit model for serving, and an AutoTrain Advanced config equivalent to a recipe.

    lorallama export merged finetome --output exports/finetome-merged
    lorallama export merged runs/demo/adapter --push you/captain-lora-merged
    lorallama export autotrain finetome --output autotrain/finetome.yml

``merged`` folds the adapter (and any parent adapters, e.g. finetome under marx) into the base and saves a plain
transformers model in bfloat16 (or float16) that TGI, vLLM and Inference Endpoints load without PEFT. Before it
writes, it checks that the merged model answers the three original prompts with exactly the greedy tokens of
base + adapter, and it checks the written 16-bit copy the same way.

``autotrain`` writes the ``autotrain --config`` YAML for the ``llm-sft`` task with the recipe's base, data, LoRA
shape and trainer values; what AutoTrain cannot express (warmup in steps, assistant-only loss, raw-text replay) is
said in comments in the file.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import models
from ..errors import ExportError
from ..names import is_repo_id, license_for
from ..prompts import COMPARISON_PROMPTS
from ..recipe import ALL_LINEAR, load_parent
from ..training import data as data_mod

log = logging.getLogger("lorallama")

CHECK_TOKENS = 24
DTYPES = ("bfloat16", "float16", "float32")


# ---------------------------------------------------------------------------------------------------------------
# What to export


def locate(target: str) -> models.ModelRef:
    """A recipe slug (its local run, else its model repo) or an adapter folder: the model to export."""
    ref = models.resolve_target(target)
    if ref.adapter is None:
        raise ExportError(f"{target} names no adapter: point at an adapter folder (runs/<slug>/adapter) or a recipe")
    return ref


def require_mergeable(ref: models.ModelRef) -> None:
    """Refuse an adapter of virtual tokens (prefix or prompt tuning): there are no weights to fold into the base."""
    kind = models.prompt_learning_kind(models.local_adapter(ref.adapter))
    if kind:
        raise ExportError(
            f"{ref.label} is a {kind} adapter: its trained virtual tokens run beside the base and cannot be merged "
            "into it, so there is no merged model to export. Serve it as it is (`lorallama chat` loads it unmerged), "
            "or train with lora.method lora, dora, rslora or ia3 to export"
        )


# ---------------------------------------------------------------------------------------------------------------
# Merged


def greedy_tokens(model, tokenizer, prompts, n: int = CHECK_TOKENS) -> list[list[int]]:
    import torch

    out = []
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(model.device)
        with torch.inference_mode():
            ids = model.generate(**inputs, max_new_tokens=n, do_sample=False, min_new_tokens=n)
        out.append(ids[0, inputs["input_ids"].shape[1] :].tolist())
    return out


@dataclass
class MergeReport:
    output: Path
    dtype: str
    reference: list[list[int]]
    merged: list[list[int]]
    written: list[list[int]]

    @property
    def written_matches(self) -> bool:
        return self.written == self.reference


def export_merged(
    target: str, output: Path, dtype: str = "bfloat16", prompts=None, check_tokens: int = CHECK_TOKENS
) -> MergeReport:
    """Merge, check greedy tokens against base + adapter, save in ``dtype``, reload and check the written copy."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    prompts = list(prompts or COMPARISON_PROMPTS)
    source = locate(target)
    require_mergeable(source)
    base_path = models.merged_base(models.BaseChain(source.base, source.parents), "float32")
    tokenizer = models.load_tokenizer(source.base)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, source.adapter)
    model.eval()
    models.configure_generation(model, tokenizer)
    reference = greedy_tokens(model, tokenizer, prompts, check_tokens)
    merged = model.merge_and_unload()
    models.configure_generation(merged, tokenizer)
    merged_tokens = greedy_tokens(merged, tokenizer, prompts, check_tokens)
    if merged_tokens != reference:
        raise ExportError(
            f"the merged model answers differently from base + adapter (first prompt that differs: "
            f"{prompts[next(i for i, (a, b) in enumerate(zip(merged_tokens, reference, strict=True)) if a != b)]!r}); "
            "nothing was written"
        )
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ExportError(f"{output} is not empty: pick a new --output folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}-"))
    except OSError as e:
        raise ExportError(f"cannot write the export to {output}: {e.strerror or e}. Pick another --output") from e
    try:
        merged.to(getattr(torch, dtype)).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=getattr(torch, dtype))
        models.configure_generation(reloaded, tokenizer)
        written = greedy_tokens(reloaded.eval(), tokenizer, prompts, check_tokens)
        report = MergeReport(output, dtype, reference, merged_tokens, written)
        (tmp / "README.md").write_text(merged_card(source, report, prompts), encoding="utf-8")
        for f in tmp.iterdir():
            f.chmod(0o644)  # save_pretrained leaves some files private to the user; servers run as others
            shutil.move(str(f), output / f.name)
    except OSError as e:
        raise ExportError(f"writing the export to {output} failed: {e.strerror or e} (disk full?)") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def derived_card_data(source: models.ModelRef, relation: str, library: str, tags: list[str]):
    """Card metadata of a model made from ``source`` (its base and Hub adapters as ``base_model``)."""
    from huggingface_hub import ModelCardData

    base = models.hub_id_of(source.base)
    adapters = [a for a in [*source.parents, source.adapter] if is_repo_id(a)]
    return ModelCardData(
        base_model=[base, *adapters] if is_repo_id(base) else adapters or None,
        base_model_relation=relation,
        library_name=library,
        pipeline_tag="text-generation",
        license=license_for(base),
        language=["en"],
        tags=["lorallama", *tags],
    )


def merged_card(source: models.ModelRef, report: MergeReport, prompts: list[str]) -> str:
    from huggingface_hub import ModelCard

    base = models.hub_id_of(source.base)
    data = derived_card_data(source, "merge", "transformers", ["merged", "lora", "text-generation-inference"])
    same = sum(a == b for a, b in zip(report.written, report.reference, strict=True))
    chain = " + ".join(f"`{x}`" for x in [base, *source.parents, source.adapter])
    body = f"""
# {source.label} (merged, {report.dtype})

{chain} folded into one plain transformers model, saved in {report.dtype} for serving without PEFT: Text Generation
Inference, vLLM or Inference Endpoints load it like any Llama.

Checked at export, greedy decoding of the {len(prompts)} prompts of the original comparison ({CHECK_TOKENS} tokens each):

- merged model (float32) vs base + adapter: identical on {len(prompts)} of {len(prompts)} prompts
- written {report.dtype} copy vs base + adapter: identical on {same} of {len(prompts)} prompts{"" if same == len(prompts) else " (16-bit rounding moves near-ties)"}

```bash
vllm serve <this-repo>
docker run --gpus all -p 8080:80 ghcr.io/huggingface/text-generation-inference --model-id <this-repo>
```

The generation config stops at the chat template's end-of-turn token. Licence and limitations are those of the
adapter's model card.
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


# ---------------------------------------------------------------------------------------------------------------
# AutoTrain


def _mixed_precision(flavor: str) -> str | None:
    if flavor.startswith("cpu"):
        return None
    return "fp16" if flavor.startswith("t4") else "bf16"  # T4s have no bfloat16


def _quantization(recipe) -> str | None:
    if recipe.job.flavor.startswith("cpu"):
        return None
    return "int4" if recipe.model.load_in_4bit else "int8" if recipe.model.load_in_8bit else None


def autotrain_config(recipe, base_model: str | None = None, data_dir: Path | None = None) -> tuple[dict, list[str]]:
    """The ``autotrain --config`` mapping for ``recipe`` and the notes on what differs (comments for the file).

    ``data_dir``: where converted local data goes (AutoTrain's ``tokenizer`` chat template needs role/content turns).
    """
    notes: list[str] = []
    t, lora, d = recipe.trainer, recipe.lora, recipe.data
    if base_model is None:
        parent_recipe = load_parent(recipe)
        if parent_recipe is not None:
            parent = parent_recipe.slug
            parent_repo = parent_recipe.hub.model_repo or parent
            base_model = f"{parent_repo}-merged"
            notes.append(
                f"base_model: {recipe.slug} trains on {parent}'s model with its adapter merged; export that first: "
                f"lorallama export merged {parent} --push {base_model}"
            )
        else:
            base_model = models.hub_id_of(recipe.model.base)
    project = (recipe.hub.model_repo or recipe.slug).split("/")[-1]
    text_column = "text"
    chat_template = None
    data_path, train_split = d.source, d.split
    local = Path(recipe.resolve_path(d.source))
    if d.format == "chat":
        chat_template = "tokenizer"
        text_column = "messages"
        if local.is_file():
            rows = data_mod.load_rows(str(local))
            report = data_mod.DataReport(source=local.name, total=len(rows))
            kept = data_mod.validate_chat(rows, d, report, strict=False)
            if data_dir is not None:
                data_dir.mkdir(parents=True, exist_ok=True)
                lines = [json.dumps({"messages": k["messages"]}, ensure_ascii=False) for k in kept]
                (data_dir / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
                data_path, train_split = str(data_dir), "train"
                notes.append(
                    f"data: the {len(kept)} valid conversations of {local.name} converted to role/content `messages` "
                    f"in {data_dir}/train.jsonl (AutoTrain's tokenizer chat template cannot read ShareGPT from/value)"
                )
            else:
                data_path, train_split = str(local.parent), local.stem
                notes.append(
                    f"data: {local.name} holds ShareGPT from/value turns; AutoTrain's tokenizer chat template needs "
                    "role/content `messages`: run `lorallama export autotrain` with --output to convert it"
                )
            steps = math.ceil(len(kept) / (t.per_device_train_batch_size * t.gradient_accumulation_steps))
            total = t.max_steps if t.max_steps > 0 else math.ceil(steps * t.num_train_epochs)
        else:
            total = None
            notes.append(
                f"data: {d.source} holds ShareGPT `{d.messages_field}` turns (from/value); AutoTrain's tokenizer chat "
                "template needs role/content `messages`: convert the dataset first (e.g. a map over rows)"
            )
    else:
        total = None
        text_column = d.text_field
        notes.append(
            "data: raw text; AutoTrain chunks it into block_size blocks but cannot cut the recipe's boilerplate "
            "patterns (publish the cleaned corpus with `lorallama data publish marx-corpus FILE` and train on that)"
        )
        if d.replay is not None:
            notes.append(
                f"data.replay: AutoTrain cannot mix {d.replay.fraction:.0%} chat replay from {d.replay.source} into "
                "raw-text training; without it the model forgets how to chat (see the marx model card)"
            )
    if total:
        warmup_ratio = round(min(1.0, t.warmup_steps / total), 6)
        notes.append(f"warmup_ratio: {t.warmup_steps} warmup steps of {total} optimizer steps")
    else:
        warmup_ratio = 0.0
        notes.append(
            f"warmup_ratio: the recipe warms up for {t.warmup_steps} steps; AutoTrain takes a ratio: set it to "
            f"{t.warmup_steps} / total optimizer steps"
        )
    if t.max_steps > 0:
        notes.append(f"max_steps: the recipe stops at {t.max_steps} steps; AutoTrain trains whole epochs")
    if t.packing:
        notes.append("packing: the recipe packs rows into max_length blocks; LLMTrainingParams has no packing switch")
    if t.assistant_only_loss and d.format == "chat":
        notes.append("assistant_only_loss: AutoTrain's SFT trains on whole conversations, lorallama on replies only")
    if d.eval_rows:
        notes.append(f"data.eval_rows: the recipe holds {d.eval_rows} rows out; AutoTrain needs a valid_split instead")
    if t.num_train_epochs != int(t.num_train_epochs):
        notes.append(f"epochs: AutoTrain takes whole epochs; the recipe trains {t.num_train_epochs}")
    if lora.method != "lora":
        notes.append(f"lora.method {lora.method}: AutoTrain's llm-sft trains plain LoRA with the values below")
    if t.label_smoothing or t.warmup_ratio is not None or t.num_cycles != 1:
        notes.append("label_smoothing, warmup_ratio, num_cycles: LLMTrainingParams has no field for them")
    targets = list(lora.target_modules)
    params = {
        "block_size": t.max_length,
        "model_max_length": t.max_length,
        "padding": "right",
        "add_eos_token": d.format == "text",  # chat turns already end with the template's end-of-turn token
        "epochs": max(1, round(t.num_train_epochs)),
        "batch_size": t.per_device_train_batch_size,
        "gradient_accumulation": t.gradient_accumulation_steps,
        "lr": t.learning_rate,
        "warmup_ratio": warmup_ratio,
        "optimizer": t.optim,
        "scheduler": t.lr_scheduler_type,
        "weight_decay": t.weight_decay,
        "seed": t.seed,
        "logging_steps": t.logging_steps,
        "save_total_limit": t.save_total_limit,
        "mixed_precision": _mixed_precision(recipe.job.flavor),
        "disable_gradient_checkpointing": not t.gradient_checkpointing,
        "peft": True,
        "quantization": _quantization(recipe),
        "target_modules": "all-linear" if sorted(targets) == sorted(ALL_LINEAR) else ",".join(targets),
        "lora_r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "merge_adapter": False,
        "unsloth": False,
    }
    notes.append("unsloth: set true where unsloth is installed (lorallama's own jobs pick it automatically)")
    config = {
        "task": "llm-sft",
        "base_model": base_model,
        "project_name": project,
        "log": "tensorboard" if "tensorboard" in t.report_to else "none",
        "backend": "local",
        "data": {
            "path": data_path,
            "train_split": train_split,
            "valid_split": None,
            "chat_template": chat_template,
            "column_mapping": {"text_column": text_column},
        },
        "params": params,
        "hub": {
            "username": "${HF_USERNAME}",
            "token": "${HF_TOKEN}",  # AutoTrain reads the environment variable; no token is ever written here
            "push_to_hub": bool(recipe.hub.model_repo),
        },
    }
    return config, notes


def autotrain_yaml(recipe, base_model: str | None = None, data_dir: Path | None = None) -> str:
    config, notes = autotrain_config(recipe, base_model, data_dir)
    header = [
        f"# AutoTrain Advanced config (LLM SFT) equivalent to lorallama recipe {recipe.slug!r}.",
        "# Run it where autotrain-advanced is installed (it pins its own transformers):",
        "#   export HF_USERNAME=you HF_TOKEN=hf_...   # read from the environment, never stored here",
        "#   autotrain --config this-file.yml",
        "# Where AutoTrain differs from the recipe:",
        *[f"#   - {n}" for n in notes],
    ]
    return "\n".join(header) + "\n\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
