"""Every adapter method trains, saves, reloads to the same outputs, resumes exactly, and merges where it can; the
recipe keys for methods, 8-bit, schedules and label smoothing are validated and reach the trainer."""

from __future__ import annotations

import json
import types

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lorallama.errors import ExportError, ModelError, RecipeError
from lorallama.publishing import cards
from lorallama.publishing.export import export_merged
from lorallama.recipe import load_recipe
from lorallama.serving import chat
from lorallama.training import backend as backend_mod
from lorallama.training.run import train
from lorallama.training.trainer import build_trainer
from support.recipes import Crash, crash_at, write_recipe

METHODS = ["lora", "dora", "rslora", "ia3", "prefix", "prompt"]
PEFT_TYPES = {
    "lora": "LORA",
    "dora": "LORA",
    "rslora": "LORA",
    "ia3": "IA3",
    "prefix": "PREFIX_TUNING",
    "prompt": "PROMPT_TUNING",
}
PROBE = "Ahoy! What is the capital of France?"


def recipe_for(folder, base, method: str, lora: dict | None = None, **trainer):
    path = write_recipe(folder, base, **trainer)
    raw = yaml.safe_load(path.read_text())
    raw["lora"].update({"method": method, "num_virtual_tokens": 4, **(lora or {})})
    path.write_text(yaml.safe_dump(raw))
    return load_recipe(str(path))


def logits_on_train_end(held: dict, ids: torch.Tensor):
    """The in-memory model's logits on ``ids`` when training ends (what the saved adapter must reproduce)."""
    from transformers import TrainerCallback

    class Capture(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            model.eval()
            with torch.no_grad():
                held["logits"] = model(input_ids=ids.to(model.device)).logits.float().cpu()

    return Capture()


def probe_ids(base) -> torch.Tensor:
    from transformers import AutoTokenizer

    return torch.tensor([AutoTokenizer.from_pretrained(base)(PROBE)["input_ids"]])


def logits(cm: chat.ChatModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return cm.model(input_ids=ids).logits.float()


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_saves_reloads_resumes_and_merges_where_it_can(tmp_path, tiny_chatml, method):
    recipe = recipe_for(tmp_path, tiny_chatml, method, learning_rate=5e-2, save_steps=2)
    ids = probe_ids(tiny_chatml)
    held: dict = {}
    straight = train(recipe, tmp_path / "straight", max_steps=4, callbacks=[logits_on_train_end(held, ids)])
    assert straight.finished
    config = json.loads((straight.adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == PEFT_TYPES[method]
    assert config.get("use_dora", False) is (method == "dora")
    assert config.get("use_rslora", False) is (method == "rslora")

    # Reloads to the outputs the trained model had, and those are not the base's.
    cm = chat.load_model(str(tiny_chatml), [str(straight.adapter_dir)], merge=False)
    reloaded = logits(cm, ids)
    n = ids.shape[1]
    assert torch.allclose(reloaded[:, -n:], held["logits"][:, -n:], atol=1e-5)
    with cm.base_only():
        assert not torch.allclose(logits(cm, ids)[:, -n:], reloaded[:, -n:], atol=1e-3), "the adapter did nothing"

    # Resumes exactly: a crash after the step-2 checkpoint, resumed, ends where the straight run ended.
    with pytest.raises(Crash):
        train(recipe, tmp_path / "crashed", max_steps=4, callbacks=[crash_at(3)])
    resumed = train(recipe, tmp_path / "crashed", max_steps=4)
    assert resumed.resumed_from.endswith("checkpoint-2")
    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5

    # Merges where the method can; prompt-learning adapters load unmerged and say so.
    merged = chat.load_model(str(tiny_chatml), [str(straight.adapter_dir)], merge=True)
    if method in ("prefix", "prompt"):
        assert merged.merged == [] and merged.adapter == str(straight.adapter_dir)
        assert f"{method} tuning adapter is loaded unmerged" in merged.unmerged_note
        with pytest.raises(ExportError, match=f"is a {method} tuning adapter.*cannot be merged"):
            export_merged(str(straight.adapter_dir), tmp_path / "export")
        assert not (tmp_path / "export").exists(), "a refused export must leave nothing behind"
    else:
        assert merged.merged == [str(straight.adapter_dir)] and merged.unmerged_note is None
        assert "PeftModel" not in type(merged.model).__name__
        assert torch.allclose(logits(merged, ids), reloaded, atol=1e-4)


def test_rslora_scales_by_alpha_over_sqrt_r(tmp_path, tiny_chatml):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from lorallama.training.adapters import peft_config

    for method, expected in (("lora", 8 / 4), ("rslora", 8 / 4**0.5)):
        recipe = recipe_for(tmp_path, tiny_chatml, method)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_chatml), peft_config(recipe))
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        assert layer.scaling["default"] == pytest.approx(expected)


def test_prompt_tuning_starts_from_text(tmp_path, tiny_chatml):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorallama.training.adapters import peft_config

    recipe = recipe_for(tmp_path, tiny_chatml, "prompt", {"prompt_init_text": "Answer as a sea captain."})
    base = AutoModelForCausalLM.from_pretrained(tiny_chatml)
    text_ids = AutoTokenizer.from_pretrained(tiny_chatml)("Answer as a sea captain.")["input_ids"]
    expected = base.get_input_embeddings().weight[text_ids[:4]].detach().clone()
    model = get_peft_model(base, peft_config(recipe, str(tiny_chatml)))
    virtual = model.prompt_encoder["default"].embedding.weight.detach()
    assert torch.equal(virtual, expected)


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("lora", {"method": "qlora"}, "lora.method = 'qlora' is not valid: use one of lora, dora, rslora, ia3"),
        ("lora", {"num_virtual_tokens": 0}, "lora.num_virtual_tokens = 0 is not valid: use a count between 1"),
        ("lora", {"prompt_init_text": "hi"}, "lora.prompt_init_text = 'hi' is not valid: it is for method prompt"),
        (
            "lora",
            {"method": "ia3", "target_modules": ["q_proj"], "feedforward_modules": ["down_proj"]},
            r"add \['down_proj'\] to target_modules",
        ),
        ("model", {"load_in_8bit": True}, "load_in_8bit and model.load_in_4bit are both true: pick one"),
        ("trainer", {"num_cycles": 3}, "cycles need trainer.lr_scheduler_type: cosine_with_restarts"),
        ("trainer", {"warmup_ratio": 1.5}, "trainer.warmup_ratio = 1.5 is not valid: use a share in"),
        ("trainer", {"label_smoothing": 1.0}, "trainer.label_smoothing = 1.0 is not valid"),
    ],
)
def test_bad_adapter_and_schedule_keys_say_what_to_write(tmp_path, tiny_chatml, section, values, message):
    path = write_recipe(tmp_path, tiny_chatml)
    raw = yaml.safe_load(path.read_text())
    raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match=message):
        load_recipe(str(path))


def test_cosine_restarts_warmup_ratio_and_label_smoothing_reach_the_trainer(tmp_path, tiny_chatml):
    recipe = recipe_for(
        tmp_path,
        tiny_chatml,
        "lora",
        lr_scheduler_type="cosine_with_restarts",
        num_cycles=2,
        warmup_ratio=0.25,
        label_smoothing=0.1,
        learning_rate=1e-2,
    )
    setup = build_trainer(recipe, tmp_path / "out", max_steps=12)
    trainer = setup.trainer
    assert trainer.label_smoother is not None and trainer.label_smoother.epsilon == 0.1
    trainer.train()
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    # 3 warmup steps (a quarter of 12) climb to the peak, then two cosine cycles: down, back up, down again.
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] == pytest.approx(1e-2)
    falls = [i for i in range(4, len(lrs)) if lrs[i] > lrs[i - 1]]
    assert len(falls) == 1, f"expected one warm restart, learning rates were {lrs}"

    (tmp_path / "plain").mkdir()
    plain = recipe_for(tmp_path / "plain", tiny_chatml, "lora", learning_rate=1e-2)
    smoothed_first = trainer.state.log_history[0]["loss"]
    base_setup = build_trainer(plain, tmp_path / "plain-out", max_steps=1)
    assert base_setup.trainer.label_smoother is None
    base_setup.trainer.train()
    assert base_setup.trainer.state.log_history[0]["loss"] != pytest.approx(smoothed_first, abs=1e-4)


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA machine with unsloth and bitsandbytes installed, as far as the backend choice can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    real = backend_mod.importlib.util.find_spec
    monkeypatch.setattr(
        backend_mod.importlib.util,
        "find_spec",
        lambda name, *a: types.SimpleNamespace(name=name) if name in ("unsloth", "bitsandbytes") else real(name, *a),
    )


def test_unsloth_takes_lora_and_rslora_and_the_rest_fall_back_with_the_reason(tmp_path, tiny_chatml, fake_cuda):
    for method in ("lora", "rslora"):
        assert backend_mod.choose_backend(recipe_for(tmp_path, tiny_chatml, method)).name == "unsloth"
    for method in ("dora", "ia3", "prefix", "prompt"):
        chosen = backend_mod.choose_backend(recipe_for(tmp_path, tiny_chatml, method))
        assert chosen.name == "transformers"
        assert f"not Unsloth: lora.method {method}" in chosen.reason
    with pytest.raises(ModelError, match="backend 'unsloth' cannot train this recipe: lora.method dora.*--backend"):
        backend_mod.choose_backend(recipe_for(tmp_path, tiny_chatml, "dora"), prefer="unsloth")


def test_8bit_is_chosen_on_cuda_and_ignored_on_cpu(tmp_path, tiny_chatml, monkeypatch):
    path = write_recipe(tmp_path, tiny_chatml)
    recipe = load_recipe(str(path), ["model.load_in_8bit=true", "model.load_in_4bit=false"])
    cpu = backend_mod.choose_backend(recipe, prefer="cpu")
    assert (cpu.name, cpu.load_in_8bit, cpu.load_in_4bit) == ("cpu", False, False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    real = backend_mod.importlib.util.find_spec
    monkeypatch.setattr(
        backend_mod.importlib.util,
        "find_spec",
        lambda name, *a: (
            types.SimpleNamespace() if name == "bitsandbytes" else None if name == "unsloth" else real(name, *a)
        ),
    )
    chosen = backend_mod.choose_backend(recipe)
    assert (chosen.name, chosen.load_in_8bit, chosen.load_in_4bit) == ("transformers", True, False)


def test_model_card_names_the_method():
    meta = {
        "recipe": {
            "lora": {"method": "dora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj"]},
            "trainer": {"lr_scheduler_type": "cosine_with_restarts", "num_cycles": 3, "warmup_ratio": 0.03},
            "model": {},
        },
        "backend": {"dtype": "bfloat16", "load_in_8bit": True},
    }
    table = cards.hyperparameters(meta)
    assert "DoRA, rank 8, alpha 16, dropout 0.05" in table
    assert "cosine_with_restarts, 3 cycles, 3% of steps warmup" in table
    assert "base loaded in 8-bit" in table
    meta["recipe"]["lora"] = {"method": "prompt", "num_virtual_tokens": 20}
    assert "prompt tuning, 20 virtual tokens (not mergeable" in cards.hyperparameters(meta)


def test_a_prompt_learning_parent_cannot_be_built_on(tmp_path, tiny_chatml):
    from lorallama import models

    recipe = recipe_for(tmp_path, tiny_chatml, "prefix", max_steps=1)
    run = train(recipe, tmp_path / "out")
    with pytest.raises(ModelError, match="is prefix tuning, which cannot be merged"):
        models.merged_base(models.BaseChain(str(tiny_chatml), [str(run.adapter_dir)]))
    with pytest.raises(ModelError, match="is prefix tuning, which cannot be merged into the base of the adapter"):
        chat.load_model(str(tiny_chatml), [str(run.adapter_dir), str(run.adapter_dir)])


def test_the_chat_space_says_a_prompt_learning_adapter_runs_unmerged(tmp_path, tiny_chatml):
    import gradio as gr

    from lorallama.serving.chat_app import build_chat_app
    from lorallama.serving.config import ChatConfig

    run = train(recipe_for(tmp_path, tiny_chatml, "prompt", max_steps=1), tmp_path / "out")
    config = ChatConfig(base=str(tiny_chatml), adapter=str(run.adapter_dir))
    cm = chat.load_model(config.base, config.adapters, merge=True)
    demo = build_chat_app(config, model=cm)
    header = next(b for b in demo.blocks.values() if isinstance(b, gr.Markdown) and b.elem_id == "lorallama-header")
    assert "The prompt tuning adapter is loaded unmerged" in header.value


def test_prompt_tuning_with_label_smoothing_scores_the_text_positions_only(tmp_path, tiny_chatml):
    """Prompt tuning's logits carry its virtual tokens in front; the smoothed loss must be over the text's own."""
    from transformers.trainer_pt_utils import LabelSmoother

    from lorallama.training import adapters

    recipe = recipe_for(tmp_path, tiny_chatml, "prompt", label_smoothing=0.1)
    trainer = build_trainer(recipe, tmp_path / "out", max_steps=2).trainer
    model = trainer.model.eval()  # no dropout: the two forward passes below must see the same logits
    assert adapters.prepended_positions(model) == 4
    batch = {k: v.to(model.device) for k, v in next(iter(trainer.get_train_dataloader())).items()}
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        labels = batch["labels"]
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        assert logits.shape[1] == labels.shape[1] + 4
        expected = LabelSmoother(epsilon=0.1)({"logits": logits[:, 4:]}, labels, shift_labels=True)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    trainer.train()
    assert all(h["loss"] == h["loss"] for h in trainer.state.log_history if "loss" in h)


@pytest.mark.parametrize(("method", "positions"), [("lora", 0), ("prefix", 0), ("ia3", 0)])
def test_only_prompt_tuning_puts_positions_before_the_text(tmp_path, tiny_chatml, method, positions):
    from lorallama.training import adapters

    setup = build_trainer(recipe_for(tmp_path, tiny_chatml, method), tmp_path / "out", max_steps=1)
    assert adapters.prepended_positions(setup.trainer.model) == positions
