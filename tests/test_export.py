"""Exports: a merged 16-bit model that answers like base + adapter, and an AutoTrain config equal to the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from lorallama.publishing import export
from lorallama.recipe import load_recipe
from support.runs import REPO_ROOT, finished_run, run_command

# The fields of AutoTrain Advanced's `LLMTrainingParams`, as documented (48 parameters) in the AutoTrain docs,
# "LLM Finetuning with AutoTrain Advanced" → Parameters → `autotrain.trainers.clm.params.LLMTrainingParams`
# (docs for autotrain-advanced v0.8.24 / main; source: src/autotrain/trainers/clm/params.py). AutoTrain pins
# transformers 4.48, so it is never installed here: the list is the contract.
LLM_TRAINING_PARAMS = {
    "model": str,
    "project_name": str,
    "data_path": str,
    "train_split": str,
    "valid_split": (str, type(None)),
    "add_eos_token": bool,
    "block_size": (int, list),
    "model_max_length": int,
    "padding": (str, type(None)),
    "trainer": str,
    "use_flash_attention_2": bool,
    "log": str,
    "disable_gradient_checkpointing": bool,
    "logging_steps": int,
    "eval_strategy": str,
    "save_total_limit": int,
    "auto_find_batch_size": bool,
    "mixed_precision": (str, type(None)),
    "lr": float,
    "epochs": int,
    "batch_size": int,
    "warmup_ratio": float,
    "gradient_accumulation": int,
    "optimizer": str,
    "scheduler": str,
    "weight_decay": float,
    "max_grad_norm": float,
    "seed": int,
    "chat_template": (str, type(None)),
    "quantization": (str, type(None)),
    "target_modules": (str, type(None)),
    "merge_adapter": bool,
    "peft": bool,
    "lora_r": int,
    "lora_alpha": int,
    "lora_dropout": float,
    "model_ref": (str, type(None)),
    "dpo_beta": float,
    "max_prompt_length": int,
    "max_completion_length": (int, type(None)),
    "prompt_text_column": (str, type(None)),
    "text_column": str,
    "rejected_text_column": (str, type(None)),
    "push_to_hub": bool,
    "username": (str, type(None)),
    "token": (str, type(None)),
    "unsloth": bool,
    "distributed_backend": (str, type(None)),
}
# The config file's own keys, as AutoTrain's `AutoTrainConfigParser._parse_config` (src/autotrain/parser.py) reads
# them; `params:` entries are passed to LLMTrainingParams as they are.
CONFIG_KEYS = {"task", "base_model", "project_name", "log", "backend", "data", "params", "hub"}
DATA_KEYS = {"path", "train_split", "valid_split", "chat_template", "column_mapping"}
CHAT_TEMPLATES = {None, "zephyr", "chatml", "tokenizer"}
SCHEDULERS = {"linear", "cosine", "cosine_warmup", "constant"}


def autotrain_params(config: dict) -> dict:
    """What AutoTrain's parser hands to LLMTrainingParams for this config (its _parse_config, for task llm-*)."""
    assert set(config) == CONFIG_KEYS
    assert set(config["data"]) == DATA_KEYS and config["task"] == "llm-sft" and config["backend"] == "local"
    params = {
        "model": config["base_model"],
        "project_name": config["project_name"],
        "data_path": config["data"]["path"],
        "chat_template": config["data"]["chat_template"],
        **config["data"]["column_mapping"],
        "train_split": config["data"]["train_split"],
        "valid_split": config["data"]["valid_split"],
        "log": config["log"],
        "username": config["hub"]["username"],
        "token": config["hub"]["token"],
        "push_to_hub": config["hub"]["push_to_hub"],
        "trainer": config["task"].split("-", 1)[1],
    }
    clash = set(params) & set(config["params"])
    assert not clash, f"params repeat what the parser fills in: {clash}"
    params.update(config["params"])
    return params


def check_against_documented_fields(params: dict) -> None:
    unknown = set(params) - set(LLM_TRAINING_PARAMS)
    assert not unknown, f"not LLMTrainingParams fields: {unknown}"
    for key, value in params.items():
        assert isinstance(value, LLM_TRAINING_PARAMS[key]), (key, value)
        if isinstance(value, bool) and LLM_TRAINING_PARAMS[key] in (int, float):
            raise AssertionError(f"{key} is a bool, documented as a number")
    assert params["chat_template"] in CHAT_TEMPLATES and params["scheduler"] in SCHEDULERS


@pytest.fixture
def repo_recipes(monkeypatch):
    monkeypatch.setenv("LORALLAMA_RECIPES", str(REPO_ROOT / "train_jobs"))
    monkeypatch.setenv("HF_TOKEN", "hf_sentinel_token_never_written")


def read_config(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    return yaml.safe_load(text), text


def test_autotrain_config_for_finetome_matches_the_recipe(tmp_path, repo_recipes):
    out = tmp_path / "finetome.yml"
    assert run_command("export", "autotrain", "finetome", "--output", str(out)) == 0
    config, text = read_config(out)
    params = autotrain_params(config)
    check_against_documented_fields(params)
    r = load_recipe("finetome")
    t = r.trainer
    assert params["model"] == "unsloth/Llama-3.2-1B-Instruct" and params["data_path"] == "mlabonne/FineTome-100k"
    assert (params["lr"], params["epochs"], params["batch_size"], params["gradient_accumulation"]) == (
        t.learning_rate,
        1,
        t.per_device_train_batch_size,
        t.gradient_accumulation_steps,
    )
    assert (params["optimizer"], params["scheduler"], params["weight_decay"], params["seed"]) == (
        t.optim,
        t.lr_scheduler_type,
        t.weight_decay,
        t.seed,
    )
    quantization = "int4" if r.model.load_in_4bit else None  # finetome trains 16-bit LoRA
    assert (params["peft"], params["quantization"], params["target_modules"]) == (True, quantization, "all-linear")
    assert (params["lora_r"], params["lora_alpha"], params["lora_dropout"]) == (r.lora.r, r.lora.alpha, 0.0)
    assert params["block_size"] == params["model_max_length"] == t.max_length == 2048
    assert params["chat_template"] == "tokenizer" and params["text_column"] == "messages"
    assert params["mixed_precision"] == "fp16"  # the recipe's job runs on a T4, which has no bfloat16
    assert params["trainer"] == "sft" and params["push_to_hub"] is True
    assert params["token"] == "${HF_TOKEN}" and "hf_sentinel_token_never_written" not in text
    # What AutoTrain cannot express is said, not silently dropped.
    assert "ShareGPT" in text and "assistant_only_loss" in text and "warmup_ratio: the recipe warms up for 5" in text


def test_autotrain_config_for_the_demo_converts_its_local_data(tmp_path, repo_recipes):
    out = tmp_path / "at" / "demo.yml"
    assert run_command("export", "autotrain", "demo", "--output", str(out)) == 0
    config, text = read_config(out)
    params = autotrain_params(config)
    check_against_documented_fields(params)
    data = tmp_path / "at" / "demo-data" / "train.jsonl"
    assert params["data_path"] == str(data.parent) and params["train_split"] == "train"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) == 335 and rows[0]["messages"][0]["role"] == "user" and "content" in rows[0]["messages"][0]
    assert params["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert params["quantization"] is None and params["mixed_precision"] is None  # a cpu-basic job
    t = load_recipe("demo").trainer
    steps = -(-335 // (t.per_device_train_batch_size * t.gradient_accumulation_steps))  # ceil: optimizer steps
    assert params["warmup_ratio"] == round(t.warmup_steps / steps, 6)
    assert params["disable_gradient_checkpointing"] is True and params["lr"] == 1e-3


def test_autotrain_config_for_marx_names_what_autotrain_cannot_do(tmp_path, repo_recipes, capsys):
    assert run_command("export", "autotrain", "marx") == 0
    text = capsys.readouterr().out
    config = yaml.safe_load(text)
    params = autotrain_params(config)
    check_against_documented_fields(params)
    assert params["model"] == "lorallama/llama-3.2-1b-finetome-merged"
    assert "lorallama export merged finetome --push lorallama/llama-3.2-1b-finetome-merged" in text
    assert params["text_column"] == "text" and params["chat_template"] is None and params["add_eos_token"] is True
    assert "cannot mix 20% chat replay" in text


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_llama3) -> Path:
    return finished_run(tmp_path_factory.mktemp("llama3-run"), tiny_llama3)


def test_merged_export_answers_like_base_plus_adapter_and_pushes(hub, tmp_path, adapter, tiny_llama3, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    assert run_command("export", "merged", str(adapter), "--output", str(out), "--dtype", "float16",
                       "--push", "tester/tiny-merged") == 0, capsys.readouterr().err  # fmt: skip
    printed = capsys.readouterr().out
    assert "merged vs base + adapter: identical on 3 prompts" in printed
    assert "written float16 copy: identical on 3 of 3 prompts" in printed

    # A plain transformers model: no adapter files, weights in float16, stop tokens in the generation config.
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md"} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors"}
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = list(f.keys())
        assert {f.get_tensor(k).dtype for k in keys} == {torch.float16}
        assert not any("lora" in k for k in keys)
    tokenizer = AutoTokenizer.from_pretrained(out)
    eos = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in eos  # stops at the end of the turn

    # Loaded from the Hub repo by a plain transformers client, it gives base + adapter's greedy tokens.
    from peft import PeftModel

    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama3), str(adapter)).eval()
    served = AutoModelForCausalLM.from_pretrained("tester/tiny-merged").eval()
    prompts = ["What is the tallest mountain in the world ?", "Continue the fibonnaci sequence: 1, 1, 2, 3, 5, 8,"]
    expected = export.greedy_tokens(reference, tokenizer, prompts)
    assert export.greedy_tokens(served, tokenizer, prompts) == expected
    with reference.disable_adapter():
        assert export.greedy_tokens(reference, tokenizer, prompts) != expected, "the adapter changed nothing"
    card = hub.files("tester/tiny-merged")["README.md"].decode()
    assert "base_model_relation: merge" in card and "library_name: transformers" in card


def test_bfloat16_export_reports_what_rounding_changed(tmp_path, adapter):
    report = export.export_merged(str(adapter), tmp_path / "bf16")
    assert report.merged == report.reference  # the merge itself is exact; this is what fails an export
    same = sum(a == b for a, b in zip(report.written, report.reference, strict=True))
    card = (tmp_path / "bf16" / "README.md").read_text()
    assert f"- written bfloat16 copy vs base + adapter: identical on {same} of 3 prompts" in card
    with safe_open(tmp_path / "bf16" / "model.safetensors", "pt") as f:
        assert str(f.get_tensor(next(iter(f.keys()))).dtype) == "torch.bfloat16"


def test_export_refuses_a_folder_that_is_not_an_adapter(tmp_path, capsys):
    assert run_command("export", "merged", str(tmp_path), "--output", str(tmp_path / "x")) == 2
    assert "holds no adapter_config.json" in capsys.readouterr().err
