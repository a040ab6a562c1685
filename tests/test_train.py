"""Training on tiny random Llamas: the LoRA smoke test, resume equivalence, the output folder, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lorallama.errors import TrainError
from lorallama.recipe import load_recipe
from lorallama.training.backend import choose_backend
from lorallama.training.resume import ResumePlan, last_checkpoint, plan_resume, resume_conflicts
from lorallama.training.run import train
from lorallama.training.trainer import build_trainer, sft_config
from support.recipes import ROWS, Crash, crash_at, write_recipe

REPO = Path(__file__).resolve().parents[1]


def snapshot(trainer_holder: dict):
    from transformers import TrainerCallback

    class Snapshot(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            trainer_holder["initial"] = {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}

    return Snapshot()


def test_lora_smoke_base_unchanged_adapter_changed_loss_falls(tmp_path, tiny_chatml):
    """TRL's smoke test: the base stays as it was, the adapter moves, and the loss falls on a repeated batch."""
    recipe = load_recipe(
        str(
            write_recipe(
                tmp_path, tiny_chatml, per_device_train_batch_size=8, gradient_accumulation_steps=1, learning_rate=5e-2
            )
        )
    )
    held: dict = {}
    result = train(recipe, tmp_path / "out", max_steps=25, callbacks=[snapshot(held)])

    base = load_file(tiny_chatml / "model.safetensors")
    trained = {}
    for name, tensor in load_file(result.adapter_dir / "adapter_model.safetensors").items():
        trained[name] = tensor
    assert trained, "the adapter file holds no tensors"
    assert all("lora_A" in k or "lora_B" in k for k in trained)
    # 7 projections × 2 layers × (A, B)
    assert len(trained) == 7 * 2 * 2

    # Adapter changed: every lora_B left zero-init, and lora_A moved.
    initial = {k.replace(".default", ""): v for k, v in held["initial"].items()}
    for name, tensor in trained.items():
        start = next(v for k, v in initial.items() if k.endswith(name.split("base_model.model.", 1)[-1]))
        assert not torch.allclose(start, tensor), f"{name} did not change"

    # Base unchanged: the weights the run saw are the ones on disk (PEFT never writes the base back).
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tiny_chatml)
    for name, tensor in reloaded.state_dict().items():
        if name in base:
            assert torch.equal(tensor, base[name]), name

    losses = [h["loss"] for h in result.loss_history if "loss" in h]
    assert len(losses) == 25
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_resume_after_crash_equals_uninterrupted_run(tmp_path, tiny_chatml):
    """Crash after the step-3 checkpoint, resume: same final adapter (≤1e-5) and the same loss history."""
    recipe = load_recipe(str(write_recipe(tmp_path, tiny_chatml)))

    straight = train(recipe, tmp_path / "straight", max_steps=8)
    assert straight.finished and straight.global_step == 8

    with pytest.raises(Crash):
        train(recipe, tmp_path / "crashed", max_steps=8, callbacks=[crash_at(4)])
    assert last_checkpoint(tmp_path / "crashed" / "checkpoints").name == "checkpoint-3"
    assert not (tmp_path / "crashed" / "adapter").exists(), "a crashed run must not leave an adapter behind"

    resumed = train(recipe, tmp_path / "crashed", max_steps=8)
    assert resumed.resumed_from.endswith("checkpoint-3")
    assert resumed.finished and resumed.global_step == 8

    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-5, worst

    def losses(run):
        return [(h["step"], round(h["loss"], 6)) for h in run.loss_history if "loss" in h]

    assert losses(straight) == losses(resumed)
    assert [s for s, _ in losses(resumed)] == list(range(1, 9))


def test_output_folder_holds_adapter_metadata_loss_and_tensorboard(tmp_path, tiny_chatml):
    recipe = load_recipe(str(write_recipe(tmp_path, tiny_chatml, report_to=["tensorboard"])))
    result = train(recipe, tmp_path / "out", max_steps=4)
    adapter = result.adapter_dir
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "recipe.yaml",
        "run.json",
        "loss.json",
        "loss.png",
    ):
        assert (adapter / name).is_file(), name
    assert (adapter / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((adapter / "run.json").read_text())
    assert meta["backend"]["name"] == "cpu" and meta["backend"]["optim"] == "adamw_torch"  # adamw_8bit fell back
    assert meta["recipe"]["trainer"]["optim"] == "adamw_8bit"
    assert meta["global_step"] == 4 and meta["finished"] is True
    assert meta["data_report"]["kept"] == len(ROWS)
    # What ran, as the run saw it: the libraries imported and the checkout's commit (None outside a checkout).
    import peft
    import transformers
    import trl

    assert meta["versions"] | {"trl": trl.__version__, "transformers": transformers.__version__} == meta["versions"]
    assert meta["versions"]["peft"] == peft.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert meta["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    history = json.loads((adapter / "loss.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]
    assert yaml.safe_load((adapter / "recipe.yaml").read_text())["model"]["base"] == str(tiny_chatml)
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    events = list((tmp_path / "out" / "tb").glob("events.out.tfevents.*"))
    assert events and sum(e.stat().st_size for e in events) > 0
    checkpoints = sorted(p.name for p in (tmp_path / "out" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-3", "checkpoint-4"]


def test_resume_order_is_explicit_then_local_then_fresh(tmp_path):
    out = tmp_path / "run"
    assert plan_resume(out, "auto") == ResumePlan("fresh", "fresh start (no checkpoint found)")
    for step in (3, 6):
        (out / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    (out / "checkpoints" / "checkpoint-9").mkdir()  # half-written: no trainer_state.json
    (out / "checkpoints" / "checkpoint-12").mkdir()  # killed while writing it: a truncated trainer_state.json
    (out / "checkpoints" / "checkpoint-12" / "trainer_state.json").write_text('{"global_st')
    plan = plan_resume(out, "auto")
    assert (plan.kind, plan.source, plan.checkpoint.name) == ("checkpoint", "local", "checkpoint-6")
    plan = plan_resume(out, str(out / "checkpoints" / "checkpoint-3"))
    assert (plan.kind, plan.source, plan.checkpoint.name) == ("checkpoint", "explicit", "checkpoint-3")
    assert plan.resume_from == str(out / "checkpoints" / "checkpoint-3")
    assert plan_resume(out, "never").kind == "fresh"
    with pytest.raises(TrainError, match="not a checkpoint folder"):
        plan_resume(out, str(tmp_path))


def test_unwritable_output_is_refused_before_any_work(tmp_path, tiny_chatml):
    # /proc refuses new folders even to root (CI runs as root, so chmod alone would not do).
    recipe = load_recipe(str(write_recipe(tmp_path, tiny_chatml)))
    with pytest.raises(TrainError, match="cannot write to output folder /proc/lorallama-out"):
        train(recipe, Path("/proc/lorallama-out"), max_steps=1)


def test_output_that_is_a_file_is_refused(tmp_path, tiny_chatml):
    (tmp_path / "taken").write_text("not a folder")
    recipe = load_recipe(str(write_recipe(tmp_path, tiny_chatml)))
    with pytest.raises(TrainError, match="cannot write to output folder .*taken"):
        train(recipe, tmp_path / "taken", max_steps=1)


def test_time_budget_stops_with_a_checkpoint(tmp_path, tiny_chatml):
    recipe = load_recipe(str(write_recipe(tmp_path, tiny_chatml, save_steps=100)))
    result = train(recipe, tmp_path / "out", max_steps=50, time_budget=0)
    assert result.global_step == 1 and not result.finished
    assert last_checkpoint(tmp_path / "out" / "checkpoints").name == "checkpoint-1"
    assert json.loads((result.adapter_dir / "run.json").read_text())["finished"] is False


def test_gpus_n_runs_data_parallel_workers(tmp_path, tiny_chatml):
    """--gpus 2 relaunches under accelerate (DDP); here on two CPU workers, as CI has no GPU."""
    import subprocess
    import sys

    recipe = write_recipe(tmp_path, tiny_chatml)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lorallama.cli", "train", str(recipe), "--gpus", "2", "--backend", "cpu"]
    proc = subprocess.run([*cmd, "--max-steps", "3", "--output", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "adapter" / "run.json").read_text())
    assert (meta["world_size"], meta["global_step"], meta["finished"]) == (2, 3, True)
    # Each worker takes its own 2 × 2 examples a step: 8 rows a step in all, so 3 steps cover 3 epochs of the
    # 8 rows (one worker alone would be at 1.5).
    history = json.loads((out / "adapter" / "loss.json").read_text())
    assert history[-1]["step"] == 3 and history[-1]["epoch"] == pytest.approx(3.0)


def test_packing_without_varlen_attention_trains_on_length_balanced_batches(tmp_path, tiny_chatml):
    """Packing needs a padding-free attention kernel (CUDA); on CPU the run trains unpacked on batch_rebalance batches."""
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    recipe = load_recipe(str(write_recipe(tmp_path, tiny_chatml, packing=True)))
    trainer = build_trainer(recipe, tmp_path / "out", max_steps=2).trainer
    assert (trainer.args.packing, trainer.args.train_sampling_strategy) == (False, "batch_rebalance")
    loader = trainer.get_train_dataloader()
    assert isinstance(loader.batch_sampler, BatchRebalanceSampler) or isinstance(
        getattr(loader.batch_sampler, "batch_sampler", None), BatchRebalanceSampler
    )
    # The sampler sorts each step's examples by length before cutting micro-batches: every micro-batch of a step
    # holds lengths that do not overlap another's (a random batch would mix short and long).
    lengths = [sorted(int(n) for n in batch["attention_mask"].sum(1)) for batch in list(loader)[:2]]
    assert len({n for batch in lengths for n in batch}) > 1, lengths  # distinct lengths, or the check says nothing
    assert lengths[0][0] >= lengths[1][-1] or lengths[1][0] >= lengths[0][-1], lengths
    trainer.train()
    assert trainer.state.global_step == 2

    # A strategy the recipe names is kept.
    recipe = load_recipe(str(write_recipe(tmp_path, tiny_chatml, packing=True, train_sampling_strategy="sequential")))
    assert sft_config(recipe, choose_backend(recipe), tmp_path / "o2", 2).train_sampling_strategy == ("sequential")


def test_resume_treats_keys_an_older_run_lacked_as_their_defaults():
    old = {"trainer": {"learning_rate": 2e-4}}  # written before trainer.train_sampling_strategy existed
    assert resume_conflicts(old, {"trainer": {"learning_rate": 2e-4, "train_sampling_strategy": "random"}}) == []
    changed = {"trainer": {"learning_rate": 2e-4, "train_sampling_strategy": "group_by_length"}}
    assert resume_conflicts(old, changed) == ["trainer.train_sampling_strategy ('random' → 'group_by_length')"]
