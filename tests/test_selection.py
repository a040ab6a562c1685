"""The choice rule and the guard on constructed histories; the chosen checkpoint's weights become the adapter."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from lorallama.recipe import load_recipe
from lorallama.training import selection

# Base general loss 2.0: the checkpoints drift 1.025×, 1.075×, 1.15×, 1.25× while domain loss falls, then rises.
HISTORY = [
    {"step": 0, "domain_loss": 3.0, "general_loss": 2.0},
    {"step": 50, "domain_loss": 2.8, "general_loss": 2.05},
    {"step": 100, "domain_loss": 2.5, "general_loss": 2.15},
    {"step": 150, "domain_loss": 2.2, "general_loss": 2.3},
    {"step": 200, "domain_loss": 2.3, "general_loss": 2.5},
]


@pytest.mark.parametrize(
    ("rule", "limit", "step", "words"),
    [
        (
            "best_domain_within_general",
            1.10,
            100,
            "among the 2 of 4 checkpoints whose general chat loss stayed within 1.10×",
        ),
        ("best_domain_within_general", 1.20, 150, "lowest domain loss (2.2000)"),
        ("best_domain_within_general", 1.00, 50, "no checkpoint kept general chat loss within 1.00× the base's"),
        ("lowest_eval", None, 150, "lowest domain loss (2.2000) of 4 checkpoints"),
        ("last", None, 200, "the newest checkpoint"),
    ],
)
def test_the_rule_picks_the_right_checkpoint(rule, limit, step, words):
    choice = selection.choose(HISTORY, rule, limit)
    assert choice.step == step
    assert words in choice.reason


def test_the_base_is_never_chosen_and_no_checkpoint_means_no_choice():
    assert selection.choose(HISTORY[:1], "lowest_eval") is None
    better_base = [{"step": 0, "domain_loss": 1.0, "general_loss": 1.0}, *HISTORY[1:]]
    assert selection.choose(better_base, "lowest_eval").step == 150
    # Without a domain set, lowest_eval ranks by general chat loss.
    general_only = [{k: v for k, v in r.items() if k != "domain_loss"} for r in HISTORY]
    assert selection.choose(general_only, "lowest_eval").step == 50


def test_the_guard_fires_only_past_its_limit():
    assert selection.guard(HISTORY[:4], 1.20) is None  # 1.15× so far
    reason = selection.guard(HISTORY, 1.20)
    assert reason == ("general chat loss 2.5000 is 1.25× the base's 2.0000, past eval.stop_if_general_worse_than 1.20")
    assert selection.guard(HISTORY, None) is None


def checkpoint(folder: Path, step: int, value: float) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"lora_B": torch.full((2, 2), value)}, path / selection.ADAPTER_WEIGHTS)
    return path


def quality_recipe(tmp_path: Path, select) -> object:
    path = tmp_path / "r.yaml"
    data = {"source": "x.jsonl", "eval_rows": 2}
    path.write_text(yaml.safe_dump({"model": {"base": "a/b"}, "data": data, "eval": {"select": select}}))
    return load_recipe(str(path))


def test_publish_puts_the_chosen_checkpoints_weights_in_the_adapter(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for step, value in ((100, 1.0), (150, 1.5), (200, 2.0)):
        checkpoint(checkpoints, step, value)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file({"lora_B": torch.full((2, 2), 2.0)}, adapter / selection.ADAPTER_WEIGHTS)  # the final weights
    quality = SimpleNamespace(records=HISTORY, prompts=["hi"], stopped=None)
    recipe = quality_recipe(tmp_path, {"best_domain_within_general": 1.10})

    out = selection.publish(quality, recipe, adapter, checkpoints, {"global_step": 200})["quality"]
    assert out["chosen_step"] == 100 and out["kept_steps"] == [100, 150, 200]
    assert load_file(adapter / selection.ADAPTER_WEIGHTS)["lora_B"].eq(1.0).all()
    assert (adapter / selection.TRADEOFF_PNG).stat().st_size > 1000
    json.dumps(out)  # run.json holds it as it is

    # Resumed on a machine that never had checkpoint 100: the choice is made among what is there, and said so.
    adapter2 = tmp_path / "adapter2"
    adapter2.mkdir()
    save_file({"lora_B": torch.full((2, 2), 2.0)}, adapter2 / selection.ADAPTER_WEIGHTS)
    for step in (100, 150):
        for f in (checkpoints / f"checkpoint-{step}").iterdir():
            f.unlink()
    out = selection.publish(quality, recipe, adapter2, checkpoints, {"global_step": 200})["quality"]
    assert (
        out["chosen_step"] == 200 and "checkpoint 100, the rule's first choice, is not on this machine" in out["reason"]
    )
    assert load_file(adapter2 / selection.ADAPTER_WEIGHTS)["lora_B"].eq(2.0).all()


def test_no_eval_section_publishes_the_last_step_as_before(tmp_path):
    recipe = quality_recipe(tmp_path, "last")
    assert selection.publish(None, recipe, tmp_path, tmp_path, {"global_step": 5}) == {}
