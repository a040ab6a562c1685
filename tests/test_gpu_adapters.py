"""On CUDA: 8-bit training with bitsandbytes, and every adapter method on the transformers + PEFT path (TRL's fused
loss, label smoothing), each loading back on the GPU with outputs that differ from the base's. Skipped without
CUDA.

    pytest tests/test_gpu_adapters.py -m gpu
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import yaml

from lorallama.recipe import load_recipe
from lorallama.serving import chat
from lorallama.training.backend import choose_backend
from lorallama.training.run import train
from support.recipes import write_recipe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes missing")


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory):
    """Tiny, but with head_dim 64 and widths that 8-bit kernels accept."""
    from support.tiny import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("gpu-llama"), "chatml", hidden=256, layers=2)


def gpu_recipe(folder, base, method: str, **model):
    path = write_recipe(folder, base, learning_rate=5e-3, max_steps=6, label_smoothing=0.05)
    raw = yaml.safe_load(path.read_text())
    raw["lora"].update({"method": method, "num_virtual_tokens": 8})
    raw["model"].update({"load_in_4bit": False, **model})
    path.write_text(yaml.safe_dump(raw))
    return load_recipe(str(path))


@needs_bnb
def test_8bit_base_trains_and_the_loss_falls(tmp_path, small_llama):
    recipe = gpu_recipe(tmp_path, small_llama, "lora", load_in_8bit=True)
    backend = choose_backend(recipe, prefer="transformers")
    assert backend.load_in_8bit and not backend.load_in_4bit
    result = train(recipe, tmp_path / "out", backend=backend)
    losses = [h["loss"] for h in result.loss_history if "loss" in h]
    assert result.finished and losses[-1] < losses[0], losses


@pytest.mark.parametrize("method", ["lora", "dora", "rslora", "ia3", "prefix", "prompt"])
def test_every_method_trains_on_cuda_and_reloads(tmp_path, small_llama, method):
    recipe = gpu_recipe(tmp_path, small_llama, method)
    backend = choose_backend(recipe, prefer="transformers")
    result = train(recipe, tmp_path / "out", backend=backend)
    losses = [h["loss"] for h in result.loss_history if "loss" in h]
    assert result.finished and all(loss == loss for loss in losses), losses  # no NaN from the fused path
    cm = chat.load_model(str(small_llama), [str(result.adapter_dir)], merge=False)
    ids = torch.tensor([cm.tokenizer("Ahoy! What is the capital of France?")["input_ids"]], device="cuda")
    with torch.no_grad():
        tuned = cm.model(input_ids=ids).logits[:, -ids.shape[1] :].float()
        with cm.base_only():
            base = cm.model(input_ids=ids).logits[:, -ids.shape[1] :].float()
    assert torch.isfinite(tuned).all() and not torch.allclose(tuned, base, atol=1e-3)
