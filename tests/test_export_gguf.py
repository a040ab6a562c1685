"""``export gguf`` in a closed loop: the file reads back through transformers to the merged model's outputs, its
Ollama template renders the chat template's prompt, the LoRA file rebuilds the merged weights, the push leaves a
repo whose card says how to run it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from lorallama import models
from lorallama.errors import ExportError
from lorallama.prompts import COMPARISON_PROMPTS
from lorallama.publishing import gguf, ollama
from lorallama.publishing.export import greedy_tokens
from support.go_template import render
from support.models import make_adapter
from support.runs import run_command

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Name a dog."},
        {"role": "assistant", "content": "The lazy dog."},
        {"role": "user", "content": "And a fox?"},
    ],
]


def base_model(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("style", ["chatml", "llama3"])
def test_gguf_reads_back_to_the_same_model_and_tokenizer(tmp_path, style, request):
    folder = request.getfixturevalue(f"tiny_{style}")
    tokenizer = models.load_tokenizer(str(folder))
    model = base_model(folder)
    ids = torch.tensor([tokenizer.apply_chat_template(CONVERSATIONS[2], add_generation_prompt=True)["input_ids"]])
    with torch.no_grad():
        expected = model(ids).logits
    for quant, tolerance in (("f32", 0.0), ("f16", 0.05), ("q8_0", 0.6)):
        path = tmp_path / f"{style}-{quant}.gguf"
        gguf.write_gguf(model, tokenizer, path, quant, "tiny")
        loaded, loaded_tokenizer = gguf.read_back(path)
        assert loaded_tokenizer.chat_template == tokenizer.chat_template
        for conversation in CONVERSATIONS:
            text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
            assert (
                loaded_tokenizer(text, add_special_tokens=False)["input_ids"]
                == tokenizer(text, add_special_tokens=False)["input_ids"]
            )
        with torch.no_grad():
            worst = (loaded(ids).logits - expected).abs().max().item()
        # f32 is exact: names, the query/key row order (GQA: 4 heads, 2 key/value heads) and tied embeddings right.
        assert worst <= tolerance, (quant, worst)
    assert {t.name for t in __import__("gguf").GGUFReader(tmp_path / f"{style}-q8_0.gguf").tensors} >= {
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "output_norm.weight",
    }


def test_a_read_back_parses_the_file_once_and_leaves_the_gguf_package_as_it_was(tmp_path, tiny_chatml, monkeypatch):
    """transformers opens the file for the config, the tokenizer and the weights, and builds the tensor-name table
    for every module; one parse and one table serve them all, and the package is itself again afterwards."""
    import gguf as gguf_package

    tokenizer = models.load_tokenizer(str(tiny_chatml))
    path = tmp_path / "tiny.gguf"
    written = base_model(tiny_chatml)
    gguf.write_gguf(written, tokenizer, path, "f32", "tiny")
    opened, tables = [], []

    class Counting(gguf_package.GGUFReader):
        def __init__(self, *args, **kwargs):
            opened.append(args[0])
            super().__init__(*args, **kwargs)

    original_table = gguf_package.get_tensor_name_map

    def counting_table(arch, n_blocks):
        tables.append((arch, n_blocks))
        return original_table(arch, n_blocks)

    monkeypatch.setattr(gguf_package, "GGUFReader", Counting)
    monkeypatch.setattr(gguf_package, "get_tensor_name_map", counting_table)
    model, loaded_tokenizer = gguf.read_back(path)
    assert len(opened) == 1 and model.config.vocab_size == len(loaded_tokenizer)
    assert len(tables) == 1 and tables[0][1] == model.config.num_hidden_layers
    for name, weight in written.state_dict().items():  # every tensor found its module through the one table
        assert torch.equal(model.state_dict()[name], weight), name
    assert gguf_package.GGUFReader is Counting and gguf_package.get_tensor_name_map is counting_table  # restored
    gguf_package.GGUFReader(path)
    assert len(opened) == 2


@pytest.mark.parametrize("style", ["chatml", "llama3"])
def test_ollama_template_renders_the_chat_templates_prompt(style, request):
    tokenizer = models.load_tokenizer(str(request.getfixturevalue(f"tiny_{style}")))
    template = ollama.go_template(tokenizer)
    system = ollama.default_system(tokenizer)
    for conversation in CONVERSATIONS:
        expected = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        expected = expected.removeprefix("<|begin_of_text|>")  # llama.cpp adds Llama 3's BOS token itself
        go = [{"Role": m["role"], "Content": m["content"]} for m in conversation]
        assert render(template, {"Messages": go}) == expected
        if system and conversation[0]["role"] != "system":  # Ollama puts the Modelfile's SYSTEM first
            assert render(template, {"Messages": [{"Role": "system", "Content": system}, *go]}) == expected
    modelfile = ollama.modelfile(tokenizer, "m.gguf", types_config())
    assert modelfile.startswith('FROM ./m.gguf\nTEMPLATE """')
    stops = {"chatml": ['"<|im_end|>"'], "llama3": ['"<|eot_id|>"', '"<|end_of_text|>"']}[style]
    assert [line.split(" ", 2)[2] for line in modelfile.splitlines() if line.startswith("PARAMETER stop")] == stops
    assert ('SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile) is (style == "chatml")


def types_config():
    from types import SimpleNamespace

    return SimpleNamespace(max_position_embeddings=131072)


def test_export_writes_checks_and_pushes_a_repo_that_says_how_to_run_it(hub, tmp_path, tiny_run, capsys):
    out = tmp_path / "gguf"
    assert run_command("export", "gguf", str(tiny_run), "--quant", "f16", "--ollama", "--output", str(out)) == 0
    printed = capsys.readouterr().out
    assert "read back by transformers vs the merged model: identical on 3 of 3 prompts" in printed
    names = sorted(p.name for p in out.iterdir())
    assert names == ["Modelfile", "README.md", "params", "system", "template", "tiny-F16.gguf"]
    params = json.loads((out / "params").read_text())
    assert params["stop"] == ["<|im_end|>"] and params["num_ctx"] <= 8192
    assert (out / "template").read_text() in (out / "Modelfile").read_text()

    report = gguf.GGUFReport(out, out / "tiny-F16.gguf", "f16", [[1]], [[1]], sorted(out.iterdir()))
    commit = gguf.push_gguf(report, models.resolve_target(str(tiny_run)), "tester/tiny-GGUF")
    files = hub.files("tester/tiny-GGUF")
    assert set(files) - {".gitattributes"} == set(names) and commit
    assert files["tiny-F16.gguf"] == (out / "tiny-F16.gguf").read_bytes()
    card = files["README.md"].decode()
    assert "ollama run hf.co/tester/tiny-GGUF:F16" in card and "llama-server -hf tester/tiny-GGUF:F16" in card
    assert "library_name: gguf" in card


def test_lora_only_rebuilds_the_merged_weights_in_llama_cpp_order(tmp_path, tiny_chatml):
    import gguf as gguf_lib
    from peft import PeftModel

    adapter = make_adapter(tiny_chatml, tmp_path / "adapter", seed=3)
    report = gguf.export_gguf_lora(str(adapter), tmp_path / "out", "f32", prompts=COMPARISON_PROMPTS[:1])
    assert report.same == 1
    lora = gguf_lib.GGUFReader(report.gguf)
    assert lora.fields["general.type"].contents() == "adapter"
    alpha = lora.fields["adapter.lora.alpha"].contents()
    tensors = {t.name: np.array(t.data) for t in lora.tensors}
    base = {t.name: np.array(t.data) for t in gguf_lib.GGUFReader(tmp_path / "out" / "adapter-base-F32.gguf").tensors}
    merged_model = PeftModel.from_pretrained(base_model(tiny_chatml), str(adapter)).merge_and_unload()
    merged_file = tmp_path / "merged.gguf"
    gguf.write_gguf(merged_model, models.load_tokenizer(str(tiny_chatml)), merged_file, "f32", "m")
    merged = {t.name: np.array(t.data) for t in gguf_lib.GGUFReader(merged_file).tensors}
    assert {n.removesuffix(".lora_a") for n in tensors if n.endswith(".lora_a")} == {
        f"blk.{i}.{m}.weight" for i in (0, 1) for m in ("attn_q", "attn_v", "attn_output")
    }
    for name in ("blk.0.attn_q.weight", "blk.1.attn_v.weight"):
        a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
        rebuilt = base[name] + (alpha / a.shape[0]) * (b @ a)  # what llama-server --lora computes
        assert np.allclose(rebuilt, merged[name], atol=1e-5), name


def test_exports_that_cannot_work_are_refused_before_writing(tmp_path, tiny_chatml, tiny_run, monkeypatch):
    from peft import LoraConfig, get_peft_model

    dora = tmp_path / "dora"
    model = AutoModelForCausalLM.from_pretrained(tiny_chatml)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)).save_pretrained(dora)
    with pytest.raises(ExportError, match="--lora-only writes plain LoRA.*DoRA adapter has no such form"):
        gguf.export_gguf_lora(str(dora), tmp_path / "a")
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-quantize
    with pytest.raises(ExportError, match="--quant q4_k_m needs llama.cpp's llama-quantize on PATH"):
        gguf.export_gguf(str(tiny_run), tmp_path / "b", "q4_k_m", prompts=COMPARISON_PROMPTS[:1], check_tokens=2)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ExportError, match="is not empty: pick a new --output folder"):
        gguf.export_gguf(str(tiny_run), tmp_path / "full")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert run_command("export", "gguf", str(tiny_run), "--lora-only", "--push", "you/x") == 2


def test_gguf_help_text(capsys):
    with pytest.raises(SystemExit):
        run_command("export", "gguf", "--help")
    text = capsys.readouterr().out
    for needle in ("ollama create demo -f Modelfile", "ollama run hf.co/", "llama-server", "llama-quantize", "q8_0"):
        assert needle in text


@pytest.mark.slow
def test_bundled_model_gguf_gives_the_merged_models_greedy_tokens_in_f16_and_q8_0(tmp_path, bundled_dir):
    from safetensors.torch import load_file, save_file

    adapter = make_adapter(bundled_dir, tmp_path / "adapter", seed=1)
    weights = load_file(adapter / "adapter_model.safetensors")  # a moderate update, as training leaves one
    save_file(
        {k: v * (0.3 if "lora_B" in k else 1.0) for k, v in weights.items()}, adapter / "adapter_model.safetensors"
    )
    report = gguf.export_gguf(str(adapter), tmp_path / "f16", "f16", modelfile=True)
    assert report.written == report.reference and report.same == 3
    base_tokens = greedy_tokens(*load_base(bundled_dir), COMPARISON_PROMPTS[:1], len(report.reference[0]))
    assert base_tokens != report.reference[:1], "the adapter must change the answer, or the check proves nothing"

    model, tokenizer = gguf.merged_model(models.resolve_target(str(adapter)))
    gguf.write_gguf(model, tokenizer, tmp_path / "q8.gguf", "q8_0", "bundled")
    assert greedy_tokens(*gguf.read_back(tmp_path / "q8.gguf"), COMPARISON_PROMPTS) == report.reference
    text = (tmp_path / "f16" / "template").read_text()
    for conversation in CONVERSATIONS:
        expected = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        go = [{"Role": m["role"], "Content": m["content"]} for m in conversation]
        assert render(text, {"Messages": go}) == expected


def load_base(folder):
    tokenizer = models.load_tokenizer(str(folder))
    model = base_model(folder)
    models.configure_generation(model, tokenizer)
    return model, tokenizer
