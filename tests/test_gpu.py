"""Each CUDA backend trains a few steps, the loss falls, and the saved adapter reloads to the same outputs.

Skipped without CUDA; run on a GPU machine with ``pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lorallama.recipe import load_recipe
from lorallama.training.backend import choose_backend
from lorallama.training.trainer import build_trainer
from support.recipes import write_recipe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# Unsloth patches transformers, TRL and PEFT for the whole process when imported: it goes last (conftest moves
# every test marked ``unsloth``, in any file, behind the rest).
BACKENDS = [
    pytest.param(
        "transformers",
        True,
        marks=pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes missing"),
    ),
    pytest.param("transformers", False),
    pytest.param(
        "unsloth",
        True,
        marks=[
            pytest.mark.unsloth,
            pytest.mark.skipif(importlib.util.find_spec("unsloth") is None, reason="unsloth not installed"),
        ],
    ),
]


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory):
    """Tiny, but with head_dim 64 and widths that 4-bit kernels accept."""
    from support.tiny import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("gpu-llama"), "chatml", hidden=256, layers=2)


@pytest.mark.parametrize("backend_name, four_bit", BACKENDS)
def test_backend_trains_saves_and_reloads(backend_name, four_bit, small_llama, tmp_path):
    path = write_recipe(tmp_path, small_llama, per_device_train_batch_size=8, gradient_accumulation_steps=1)
    recipe = load_recipe(str(path), [f"model.load_in_4bit={str(four_bit).lower()}", "trainer.learning_rate=5e-3"])
    backend = choose_backend(recipe, backend_name)
    assert backend.name == backend_name and backend.load_in_4bit == four_bit
    trainer = build_trainer(recipe, tmp_path / "out", max_steps=20, backend=backend).trainer
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses

    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]], device="cuda")
    model = trainer.model.eval()
    with torch.no_grad():
        trained = model(input_ids=ids).logits.float()
    trainer.model.save_pretrained(tmp_path / "adapter")

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {"dtype": getattr(torch, backend.dtype), "device_map": {"": 0}}
    if four_bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=kwargs["dtype"],
            bnb_4bit_use_double_quant=True,
        )
    reloaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(small_llama, **kwargs), str(tmp_path / "adapter")
    )
    with torch.no_grad():
        again = reloaded.eval()(input_ids=ids).logits.float()
    # Same adapter tensors, so the same function up to kernel numerics (Unsloth's fused 4-bit paths vs bnb's).
    saved = {k: v for k, v in reloaded.state_dict().items() if "lora_" in k}
    assert saved and all(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)
    assert (trained - again).abs().mean() < 0.05 * trained.abs().mean(), (trained - again).abs().max()
    assert (trained.argmax(-1) == again.argmax(-1)).float().mean() >= 0.75


def test_chat_streams_on_gpu_without_compiling(small_llama):
    """The Spaces' decode path on CUDA: no torch.compile (ZeroGPU forbids it), the same answer as plain greedy."""
    import torch._dynamo

    from lorallama.serving import chat

    cm = chat.load_model(str(small_llama))
    assert cm.model.device.type == "cuda"
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    pieces = list(chat.stream_chat(cm, [{"role": "user", "content": "hello there"}], max_new_tokens=24))
    assert pieces, "nothing was streamed"
    assert not torch._dynamo.utils.counters["stats"]["unique_graphs"], "generate compiled the model"
    ids = torch.tensor([chat.encode_prompt(cm.tokenizer, [{"role": "user", "content": "hello there"}])], device="cuda")
    with torch.inference_mode():
        plain = cm.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False
        )
    expected = cm.tokenizer.decode(plain[0, ids.shape[1] :], skip_special_tokens=True)
    assert "".join(pieces) == expected


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_train_on_two_gpus(small_llama, tmp_path):
    """`lorallama train --gpus 2` on two GPUs: two DDP workers under accelerate, each taking its own batches."""
    import json
    import subprocess
    import sys

    recipe = write_recipe(tmp_path, small_llama)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lorallama.cli", "train", str(recipe), "--gpus", "2", "--no-push"]
    proc = subprocess.run([*cmd, "--max-steps", "3", "--output", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "adapter" / "run.json").read_text())
    assert (meta["world_size"], meta["global_step"], meta["finished"]) == (2, 3, True)
    assert meta["backend"]["name"] == "transformers" and meta["backend"]["device"] == "cuda"
    history = json.loads((out / "adapter" / "loss.json").read_text())
    assert history[-1]["epoch"] == pytest.approx(3.0)  # 2 workers × 2 × 2 rows a step over the 8 rows


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_train_on_a_multi_gpu_machine_without_gpus_flag(small_llama, tmp_path):
    """Without --gpus, one process trains on the first GPU (TRL refuses the DataParallel Trainer would pick)."""
    import json
    import os
    import subprocess
    import sys

    recipe = write_recipe(tmp_path, small_llama)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    cmd = [sys.executable, "-m", "lorallama.cli", "train", str(recipe), "--no-push", "--max-steps", "2"]
    proc = subprocess.run([*cmd, "--output", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "adapter" / "run.json").read_text())
    assert (meta["world_size"], meta["global_step"], meta["backend"]["device"]) == (1, 2, "cuda")
