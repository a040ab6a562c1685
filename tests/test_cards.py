"""Model and dataset cards: metadata, what a finished run puts in them, pushes that never touch weights or data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from lorallama import names
from lorallama.publishing import cards
from lorallama.recipe import load_recipe
from support.runs import REPO_ROOT, changed_in_last_commit, run_command, seed_model_repo

LLAMA = "unsloth/Llama-3.2-1B-Instruct"


def project_meta(tiny_run: Path, slug: str, base: str = LLAMA) -> dict:
    """The tiny run's run.json as if it had trained the project's recipe ``slug`` on ``base``."""
    meta = json.loads((tiny_run / "run.json").read_text())
    meta = copy.deepcopy(meta)
    meta["recipe"] = load_recipe(slug).to_dict()
    meta["base"] = base
    meta["merged_adapters"] = ["runs/finetome/adapter"] if slug == "marx" else []
    meta["backend"] = {
        "name": "unsloth",
        "device": "cuda",
        "dtype": "float16",
        "load_in_4bit": True,
        "optim": "adamw_8bit",
        "reason": "CUDA + unsloth installed",
    }
    meta["hardware"] = "Tesla T4"
    meta["train_seconds"] = 3 * 3600 + 125
    return meta


@pytest.fixture
def repo_recipes(monkeypatch):
    monkeypatch.setenv("LORALLAMA_RECIPES", str(REPO_ROOT / "train_jobs"))
    monkeypatch.delenv("HF_NAMESPACE", raising=False)


def parse(text: str):
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    return card, card.data.to_dict()


# ---------------------------------------------------------------------------------------------------------------
# Model cards


def test_finetome_card_metadata_and_sections(tiny_run, repo_recipes):
    recipe = load_recipe("finetome")
    history = [{"step": 10, "loss": 1.9}, {"step": 50, "loss": 1.2}, {"step": 50, "eval_loss": 1.31234}]
    samples = [
        {"prompt": "What is the tallest mountain in the world ?", "base": "Everest.", "tuned": "Mount | Everest"}
    ]
    text = cards.model_card(recipe, project_meta(tiny_run, "finetome"), history=history, samples=samples)
    card, meta = parse(text)

    assert meta["base_model"] == LLAMA
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert meta["license"] == "llama3.2"  # the Llama 3.2 Community License
    assert meta["datasets"] == ["mlabonne/FineTome-100k"] and meta["language"] == ["en"]
    assert {"lora", "unsloth", "trl", "sft"} <= set(meta["tags"])
    [result] = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_type) == ("loss", 1.3123, "mlabonne/FineTome-100k")

    body = card.text
    assert "FineTome is English" in body  # from model_cards/finetome.md, not the generic template
    t = recipe.trainer
    batch = t.per_device_train_batch_size * t.gradient_accumulation_steps
    assert (
        f"| batch | {t.per_device_train_batch_size} × {t.gradient_accumulation_steps} accumulation = {batch} |" in body
    )
    assert f"| packing | {t.packing} |" in body
    assert f"| learning rate | {t.learning_rate} ({t.lr_scheduler_type}, {t.warmup_steps} warmup steps) |" in body
    assert "Tesla T4" in body and "**unsloth** backend" in body and "3 h 2 min 5 s" in body
    assert "![Training loss](loss.png)" in body
    assert "| this model | Mount \\| Everest |" in body  # answers escaped inside the table
    assert 'AutoPeftModelForCausalLM.from_pretrained("lorallama/llama-3.2-1b-finetome")' in body
    assert "https://lorallama-finetome.hf.space" in body and "/spaces/lorallama/finetome" in body
    rerun = next(line for line in body.splitlines() if line.startswith("hf jobs uv run"))
    assert rerun == names.rerun_command("lorallama/llama-3.2-1b-finetome", "t4-small", "4h")
    assert "Llama 3.2 Community License" in body


def test_marx_card_explains_forgetting_and_reports_both_losses(tiny_run, repo_recipes):
    recipe = load_recipe("marx")
    history = [{"step": 50, "loss": 2.5}, {"step": 50, "eval_domain_loss": 2.61, "eval_chat_loss": 1.42}]
    text = cards.model_card(recipe, project_meta(tiny_run, "marx"), history=history)
    card, meta = parse(text)

    assert meta["base_model"] == LLAMA and meta["license"] == "llama3.2"
    assert meta["datasets"] == ["mallam-ai/marx-engels", "mlabonne/FineTome-100k"]
    losses = {r.metric_name: (r.metric_value, r.dataset_type) for r in card.data.eval_results}
    assert losses == {
        "domain loss": (2.61, "mallam-ai/marx-engels"),
        "general chat loss": (1.42, "mlabonne/FineTome-100k"),
    }
    body = card.text
    every = int(1 / recipe.data.replay.fraction)
    assert "**Forgetting.**" in body and f"one training row in {every} is a chat conversation" in body
    assert "| held-out rows of `mlabonne/FineTome-100k` (general chat) | 1.42 |" in body
    # The adapter was trained on the base with finetome merged in: the snippet loads them in that order.
    lines = body.splitlines()
    merge = lines.index(
        'model = PeftModel.from_pretrained(model, "lorallama/llama-3.2-1b-finetome").merge_and_unload()  # trained on top of it'
    )
    assert lines[merge + 1] == 'model = PeftModel.from_pretrained(model, "lorallama/llama-3.2-1b-marx")'
    assert "No comparison was recorded" in body  # no samples: the card says how to add them


def test_namespace_replaces_every_project_repo(tiny_run, repo_recipes):
    text = cards.model_card(load_recipe("marx"), project_meta(tiny_run, "marx"), namespace="alice")
    assert "lorallama/llama-3.2-1b" not in text and "lorallama/marx" not in text
    assert "alice/llama-3.2-1b-finetome" in text and "--repo alice/llama-3.2-1b-marx" in text
    assert "https://alice-marx.hf.space" in text


def test_smollm2_demo_card_has_its_own_license(tiny_run, repo_recipes):
    meta = project_meta(tiny_run, "demo", base="bundled:smollm2-135m-instruct")
    _, data = parse(cards.model_card(load_recipe("demo"), meta))
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and data["license"] == "apache-2.0"
    assert "datasets" not in data  # local data is not a Hub dataset


def test_the_card_a_run_writes_is_the_template_card_with_what_it_used(tiny_run):
    text = (tiny_run / "README.md").read_text()
    card, meta = parse(text)
    assert "base_model" not in meta  # a local folder is not a Hub id
    assert meta["library_name"] == "peft" and {"lora", "trl", "sft"} <= set(meta["tags"])
    assert "### Hyperparameters" in text and "## How to use" in text and "## Limitations" in text
    # What actually ran: adamw_8bit fell back to adamw_torch on CPU, and the card says so.
    assert "adamw_torch (recipe: adamw_8bit; no CUDA device)" in text
    assert "Finished after 2 steps" in text and "CPU (" in text
    report = json.loads((tiny_run / "run.json").read_text())["data_report"]
    assert f"| rows kept | {report['kept']} |" in text


def test_cards_command_computes_samples_and_renders_eval_results(tiny_run, tmp_path, capsys):
    folder = tmp_path / "adapter"
    import shutil

    shutil.copytree(tiny_run, folder)
    assert run_command("cards", str(folder), "--compute-samples") == 0
    samples = json.loads((folder / "samples.json").read_text())
    from lorallama.prompts import COMPARISON_PROMPTS

    assert [s["prompt"] for s in samples] == list(COMPARISON_PROMPTS)
    assert any(s["base"] != s["tuned"] for s in samples), "the adapter changed no answer"
    card, _ = parse((folder / "README.md").read_text())
    assert "**Continue the fibonnaci sequence: 1, 1, 2, 3, 5, 8,**" in card.text
    history = json.loads((folder / "loss.json").read_text())
    domain = round([h for h in history if "eval_domain_loss" in h][-1]["eval_domain_loss"], 4)
    [result] = card.data.eval_results
    assert result.metric_value == domain and result.metric_name == "domain loss"
    assert f"card written to {folder / 'README.md'}" in capsys.readouterr().out


def test_cards_command_errors_name_the_fix(tmp_path, in_tmp, capsys):
    assert run_command("cards", str(tmp_path)) == 2
    assert "holds no run.json" in capsys.readouterr().err
    assert run_command("cards", "finetom") == 2
    assert "did you mean 'finetome'" in capsys.readouterr().err


def test_card_push_from_the_hub_touches_no_weights(hub, tiny_run, tmp_path, monkeypatch, capsys):
    repo = "tester/tiny-model"
    before = seed_model_repo(hub, repo, tiny_run)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    raw = yaml.safe_load((tiny_run / "recipe.yaml").read_text())
    raw["hub"]["model_repo"] = repo
    (recipes / "tiny.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LORALLAMA_RECIPES", str(recipes))
    monkeypatch.chdir(tmp_path)  # no runs/tiny/adapter here: the run comes from the repo

    assert run_command("cards", "tiny", "--push") == 0, capsys.readouterr().err
    after = hub.files(repo)
    assert changed_in_last_commit(hub, repo) == {"README.md", "loss.png"}
    for path in ("adapter_model.safetensors", "last-checkpoint/adapter_model.safetensors", "adapter_config.json"):
        assert after[path] == before[path], path
    assert after["loss.png"][:8] == b"\x89PNG\r\n\x1a\n"
    card, meta = parse(after["README.md"].decode())
    assert meta["library_name"] == "peft" and card.data.eval_results
    assert f"--repo {repo}" in card.text and hub.token not in after["README.md"].decode()
    assert "weights untouched" in capsys.readouterr().out


def test_card_push_from_a_local_run_uploads_its_loss_curve_and_samples(hub, tiny_run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "adapter"
    shutil.copytree(tiny_run, folder)
    (folder / "samples.json").write_text(json.dumps([{"prompt": "Hi", "base": "Hello.", "tuned": "Ahoy!"}]))
    hub.seed_repo("tester/local-run", {"adapter_model.safetensors": b"weights"})
    assert run_command("cards", str(folder), "--push", "--repo", "tester/local-run") == 0, capsys.readouterr().err
    files = hub.files("tester/local-run")
    assert files["loss.png"] == (folder / "loss.png").read_bytes()
    assert json.loads(files["samples.json"])[0]["tuned"] == "Ahoy!"
    assert "| this model | Ahoy! |" in files["README.md"].decode()
    assert files["adapter_model.safetensors"] == b"weights"


# ---------------------------------------------------------------------------------------------------------------
# Dataset cards and `data publish`


def dataset_meta(text: str) -> dict:
    from huggingface_hub import DatasetCard

    return DatasetCard(text).data.to_dict()


def test_publish_the_demo_sample_with_its_card(hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_NAMESPACE", "tester")
    assert run_command("data", "publish", "demo-chat") == 0, capsys.readouterr().err
    files = hub.files("tester/demo-chat", "dataset")
    assert set(files) == {".gitattributes", "README.md", "stats.json", "data/train.jsonl"}
    rows = [json.loads(line) for line in files["data/train.jsonl"].decode().splitlines()]
    source = (REPO_ROOT / "train_jobs" / "data" / "demo_chat.jsonl").read_text().splitlines()
    assert rows == [json.loads(line) for line in source]  # every row was valid: all published, unchanged
    meta = dataset_meta(files["README.md"].decode())
    assert meta["license"] == "apache-2.0" and meta["language"] == ["en"]
    assert meta["task_categories"] == ["text-generation"] and meta["size_categories"] == ["n<1K"]
    assert meta["source_datasets"] == ["original"] and meta["pretty_name"].startswith("Captain Lora")
    assert meta["dataset_info"]["splits"][0]["num_examples"] == len(rows)
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train.jsonl"
    assert f"**{len(rows)} conversations**" in files["README.md"].decode()
    assert 'load_dataset("tester/demo-chat"' in files["README.md"].decode()


def test_publish_dry_run_writes_locally_and_pushes_nothing(hub, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_command("data", "publish", "demo-chat", "--dry-run", "--output", str(out)) == 0
    assert not hub.repo_exists("lorallama/demo-chat", "dataset") and hub.count("POST") == 0
    assert (out / "README.md").is_file() and (out / "data" / "train.jsonl").is_file()
    assert "dry run: nothing pushed" in capsys.readouterr().out


def test_publish_the_marx_corpus_cleans_it_as_the_recipe_does(hub, tmp_path, repo_recipes, capsys):
    raw = tmp_path / "marx.jsonl"
    docs = [
        {
            "text": "Transcribed: by Andy Blunden\nA spectre is haunting Europe.\n\n\n\nThe spectre of communism.",
            "title": "Manifesto",
        },
        {"text": "A spectre is haunting Europe.\n\nThe spectre of communism.", "title": "Manifesto (copy)"},
        {"text": "Source: marxists.org\n   ", "title": "Only boilerplate"},
        {"text": "Capital is dead labour.", "title": "Capital"},
    ]
    raw.write_text("".join(json.dumps(d) + "\n" for d in docs) + "{broken\n")
    assert run_command("data", "publish", "marx-corpus", str(raw), "--repo", "tester/marx") == 0, (
        capsys.readouterr().err
    )
    files = hub.files("tester/marx", "dataset")
    rows = [json.loads(line) for line in files["data/train.jsonl"].decode().splitlines()]
    assert rows == [
        {"text": "A spectre is haunting Europe.\n\nThe spectre of communism.", "title": "Manifesto"},
        {"text": "Capital is dead labour.", "title": "Capital"},
    ]
    stats = json.loads(files["stats.json"])
    assert stats["dropped"] == {"duplicate": 1, "empty_text": 1, "invalid_json": 1}
    meta = dataset_meta(files["README.md"].decode())
    assert meta["source_datasets"] == ["mallam-ai/marx-engels"] and meta["license"] == "other"
    assert "**2 documents**" in files["README.md"].decode()


def test_publish_needs_a_file_for_the_corpus_and_names_it(capsys):
    assert run_command("data", "publish", "marx-corpus") == 2
    assert "marx-corpus needs a local file" in capsys.readouterr().err


def test_publish_feedback_counts_the_rows_the_spaces_write(hub, tmp_path, capsys):
    """The rows come from the schema the Spaces write (feedback_schema.make_row): like, dislike, edit."""
    from lorallama.feedback_schema import make_row

    hi = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    sum_ = [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "5"}]
    bye = [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye"}]
    rows = [
        make_row("like", hi, index=1, session="s1"),
        make_row("dislike", sum_, index=1, session="s1"),
        make_row("edit", sum_, index=1, session="s1", edited="4", previous="5"),
        make_row("like", bye, index=1, session="s2"),
        {"messages": hi, "liked": True},  # not a row the Spaces write: dropped, not counted
    ]
    file = tmp_path / "feedback.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_command("data", "publish", "chat-feedback", str(file), "--repo", "tester/feedback") == 0
    assert "4 rows kept of 5 (dropped: unknown_kind 1)" in capsys.readouterr().out
    files = hub.files("tester/feedback", "dataset")
    text = files["README.md"].decode()
    assert "**4 rows** — 2 liked, 1 disliked, 1 with an edited answer" in text
    assert json.loads(files["stats.json"])["liked"] == 2
    assert dataset_meta(text)["configs"][0]["data_files"][0]["path"] == "data/*.jsonl"
