"""Base resolution, stop tokens, training templates, backends, recipes on top of recipes, and the bundled model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from lorallama import models
from lorallama.recipe import load_recipe
from lorallama.serving import chat
from lorallama.training import chat_templates
from lorallama.training.backend import choose_backend
from lorallama.training.run import train
from support.models import make_adapter
from support.recipes import write_recipe


def force_next_token(model, token_id: int) -> None:
    """Make greedy decoding always pick ``token_id`` (an untied head with a one-hot bias)."""
    hidden = model.config.hidden_size
    head = torch.nn.Linear(hidden, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token_id] = 10.0
    model.lm_head = head
    model.config.tie_word_embeddings = False


def test_llama3_generation_stops_at_eot_not_only_end_of_text(tiny_llama3):
    """Llama 3 ends turns with <|eot_id|>; a config that knows only <|end_of_text|> never stops."""
    from transformers import AutoModelForCausalLM

    tokenizer = models.load_tokenizer(str(tiny_llama3))
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert models.stop_token_ids(tokenizer) == [eot, tokenizer.eos_token_id]

    model = AutoModelForCausalLM.from_pretrained(tiny_llama3)
    force_next_token(model, eot)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    prompt = inputs["input_ids"].shape[1]
    unfixed = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert unfixed.shape[1] - prompt == 12  # the pitfall, reproduced

    models.configure_generation(model, tokenizer)
    fixed = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert fixed[0, prompt:].tolist() == [eot]


def test_chat_stream_stops_at_template_end_token(tiny_llama3):
    cm = chat.load_chat_model(str(tiny_llama3))
    eot = cm.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    # After one ordinary token the model wants to end the turn.
    force_next_token(cm.model, eot)
    assert chat.answer(cm, "Hello", max_new_tokens=50) == ""


def test_training_templates_render_like_the_originals(tiny_chatml, tiny_llama3):
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Fair winds!"},
    ]
    for folder, end in ((tiny_chatml, "<|im_end|>"), (tiny_llama3, "<|eot_id|>")):
        tokenizer = models.load_tokenizer(str(folder))
        template = chat_templates.training_chat_template(tokenizer)
        assert "{% generation %}" in template.replace("{%-", "{%").replace("-%}", "%}")
        assert tokenizer.apply_chat_template(conv, tokenize=False) == tokenizer.apply_chat_template(
            conv, tokenize=False, chat_template=template
        )
        out = tokenizer.apply_chat_template(
            conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, chat_template=template
        )
        trained = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
        assert tokenizer.decode(trained) == f"Hello!{end}Fair winds!{end}"


def test_unknown_template_without_markers_is_explained(tiny_chatml):
    tokenizer = models.load_tokenizer(str(tiny_chatml))
    tokenizer.chat_template = "{% for m in messages %}<<{{ m['role'] }}>>{{ m['content'] }}{% endfor %}"
    with pytest.raises(models.ModelError, match="model.chat_template.*assistant_only_loss: false"):
        chat_templates.training_chat_template(tokenizer)


@pytest.mark.parametrize(
    "base, message",
    [
        ("./no/such/folder", "neither a folder here nor a Hub id"),
        ("justaword", "neither a folder here nor a Hub id"),
        ("bundled:gpt-5", "unknown bundled model 'gpt-5'"),
    ],
)
def test_unknown_bases_are_explained(base, message):
    with pytest.raises(models.ModelError, match=message):
        models.resolve_base(base)


def test_folder_without_config_is_explained(tmp_path):
    with pytest.raises(models.ModelError, match="has no config.json"):
        models.resolve_base(str(tmp_path))


def test_hub_ids_pass_through_and_bundled_maps_to_its_hub_id():
    assert models.resolve_base("unsloth/Llama-3.2-1B-Instruct") == "unsloth/Llama-3.2-1B-Instruct"
    assert models.hub_id_of("bundled:smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_cpu_backend_falls_back_from_8bit_optim(in_tmp):
    recipe = load_recipe("finetome")
    backend = choose_backend(recipe)
    assert (backend.name, backend.device, backend.optim, backend.load_in_4bit) == ("cpu", "cpu", "adamw_torch", False)
    with pytest.raises(models.ModelError, match="needs a CUDA GPU"):
        choose_backend(recipe, "unsloth")
    with pytest.raises(models.ModelError, match="unknown backend"):
        choose_backend(recipe, "tpu")


def test_marx_trains_on_finetome_base_plus_its_adapter(in_tmp):
    chain = models.base_chain(load_recipe("marx"))
    assert chain.base == "unsloth/Llama-3.2-1B-Instruct"
    assert chain.adapters == ["lorallama/llama-3.2-1b-finetome"]


def test_recipe_on_top_of_a_recipe_merges_the_parent_adapter(tmp_path, tiny_chatml, monkeypatch):
    """parent trains an adapter; child names the parent as its base and trains a new adapter on the merge."""
    monkeypatch.chdir(tmp_path)
    recipes = tmp_path / "train_jobs"
    recipes.mkdir()
    monkeypatch.setenv("LORALLAMA_RECIPES", str(recipes))
    parent_file = write_recipe(tmp_path, tiny_chatml)
    parent = yaml.safe_load(parent_file.read_text()) | {"slug": "parent"}
    (recipes / "parent.yaml").write_text(yaml.safe_dump(parent))
    child = dict(parent, slug="child", model={"base": "parent"})
    (recipes / "child.yaml").write_text(yaml.safe_dump(child))

    with pytest.raises(models.ModelError, match="train it first"):
        models.base_chain(load_recipe("child"))
    train(load_recipe("parent"), tmp_path / "runs" / "parent", max_steps=3)
    chain = models.base_chain(load_recipe("child"))
    assert chain.base == str(tiny_chatml) and chain.adapters == ["runs/parent/adapter"]

    # The merged base answers exactly like base + parent adapter.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(models.merged_base(chain))
    stacked = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chatml), "runs/parent/adapter")
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, stacked(ids).logits, atol=1e-5)

    result = train(load_recipe("child"), tmp_path / "runs" / "child", max_steps=2)
    meta = json.loads((result.adapter_dir / "run.json").read_text())
    assert meta["merged_adapters"] == ["runs/parent/adapter"]

    # A loop is refused with the chain named.
    (recipes / "parent.yaml").write_text(yaml.safe_dump(dict(parent, model={"base": "child"})))
    with pytest.raises(models.ModelError, match="loop: child → parent → child"):
        models.base_chain(load_recipe("child"))


@pytest.mark.slow
def test_bundled_model_loads_and_streams_an_answer_that_ends(bundled_dir):
    assert (bundled_dir / "model.safetensors").is_file()
    cm = chat.load_chat_model("bundled:smollm2-135m-instruct")
    assert cm.tokenizer.eos_token == "<|im_end|>"  # the GGUF said <|im_start|>; the model ends turns with <|im_end|>
    pieces = list(
        chat.stream_chat(cm, [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=64)
    )
    text = "".join(pieces)
    assert len(pieces) > 3, pieces  # streamed, not delivered at once
    assert "Paris" in text
    assert "<|im_end|>" not in text and "<|im_start|>" not in text
    # It stopped by itself, well before the limit.
    assert len(cm.tokenizer(text)["input_ids"]) < 60


def logits_of(path, ids):
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(path)(ids).logits


def stacked_logits(base, adapter, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))(ids).logits


def test_a_retrained_parent_adapter_gives_a_new_merged_base(tmp_path, tiny_chatml, monkeypatch):
    """The merged base is keyed by the adapter's content: retraining the parent in the same folder is picked up."""
    monkeypatch.setenv("LORALLAMA_CACHE", str(tmp_path / "cache"))
    adapter = tmp_path / "runs" / "parent" / "adapter"
    make_adapter(tiny_chatml, adapter, seed=1)
    chain = models.BaseChain(str(tiny_chatml), [str(adapter)])
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    first = models.merged_base(chain)
    assert torch.allclose(logits_of(first, ids), stacked_logits(tiny_chatml, adapter, ids), atol=1e-5)
    assert models.merged_base(chain) == first  # unchanged adapter: the cache answers

    shutil.rmtree(adapter)
    make_adapter(tiny_chatml, adapter, seed=2)  # retrained: same path, new weights
    second = models.merged_base(chain)
    assert second != first
    assert torch.allclose(logits_of(second, ids), stacked_logits(tiny_chatml, adapter, ids), atol=1e-5)
    assert not torch.allclose(logits_of(second, ids), logits_of(first, ids), atol=1e-3)


def test_a_new_commit_to_a_hub_adapter_gives_a_new_merged_base(hub, tmp_path, tiny_chatml, monkeypatch):
    """An adapter named by its Hub repo is merged as the repo's head is now, not as it was when first cached."""
    monkeypatch.setenv("LORALLAMA_CACHE", str(tmp_path / "cache"))
    repo = "tester/parent-adapter"

    def push(seed: int) -> Path:
        folder = make_adapter(tiny_chatml, tmp_path / f"adapter-{seed}", seed=seed)
        hub.seed_repo(repo, {p.name: p.read_bytes() for p in folder.iterdir()}, message=f"seed {seed}")
        return folder

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    one = push(1)
    chain = models.BaseChain(str(tiny_chatml), [repo])
    first = models.merged_base(chain)
    assert torch.allclose(logits_of(first, ids), stacked_logits(tiny_chatml, one, ids), atol=1e-5)
    two = push(2)
    second = models.merged_base(chain)
    assert second != first
    assert torch.allclose(logits_of(second, ids), stacked_logits(tiny_chatml, two, ids), atol=1e-5)
