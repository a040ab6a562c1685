"""Padding-free attention on CUDA with the real kernels: packed conversations never attend across a boundary.

    pytest -m gpu tests/test_gpu_attention.py

The kernels (torch's varlen_attn, compiled FlexAttention) against one SDPA call per conversation, forward and
backward, with grouped-query heads; then a model: loss and LoRA gradients of a packed batch against its conversations
run one by one, through the registered attention functions; then the trainer's own packed path on the transformers
backend, and Unsloth's packed path taking torch's varlen kernel. Skipped without CUDA.

Tolerances (bfloat16): a kernel's error against per-conversation SDPA in bfloat16 may be at most twice SDPA's own
error against a float32 computation, plus 1e-3; a packed batch's loss within 1% of the one-by-one loss, and every
LoRA gradient at cosine similarity ≥ 0.999 with the one-by-one gradient. The same batch without position ids (one
causal sequence) fails those bounds, which the model test checks too.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from lorallama.training import attention
from support.packing import packed_batch, tokenised_examples

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _capability():
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else (0, 0)


def _kernels():
    out = []
    if attention.varlen_available():
        out.append(pytest.param("varlen", marks=pytest.mark.skipif(_capability() < (8, 0), reason="flash needs sm80+")))
    if attention.flex_available():
        out.append("flex")
    return out


def _segmented(q, k, v, lengths):
    outs, s = [], 0
    for n in lengths:
        part = F.scaled_dot_product_attention(
            q[:, :, s : s + n], k[:, :, s : s + n], v[:, :, s : s + n], is_causal=True, enable_gqa=True
        )
        outs.append(part.transpose(1, 2))
        s += n
    return torch.cat(outs, 1)


def _fwd_bwd(fn, tensors, grad_out, dtype):
    leaves = [t.detach().to(dtype).requires_grad_() for t in tensors]
    out = fn(*leaves)
    out.backward(grad_out.to(dtype))
    return [out.float()] + [t.grad.float() for t in leaves]


@pytest.mark.parametrize("kernel", _kernels())
def test_kernel_matches_attention_conversation_by_conversation(kernel):
    torch.manual_seed(0)
    lengths = [300, 17, 1024, 129, 64, 700, 1]  # odd sizes, one token alone, not multiples of any block
    total = sum(lengths)
    pos = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0).cuda()
    seg = attention.segments(pos)
    q, k, v = (torch.randn(1, h, total, 64, device="cuda") for h in (32, 8, 8))
    grad_out = torch.randn(1, total, 32, 64, device="cuda")
    if kernel == "varlen":
        fn = lambda q, k, v: attention.varlen(q, k, v, seg, None)  # noqa: E731
    else:
        fn = lambda q, k, v: attention.flex(q, k, v, seg, None, compiled=True)  # noqa: E731
    exact = _fwd_bwd(lambda q, k, v: _segmented(q, k, v, lengths), (q, k, v), grad_out, torch.float32)
    sdpa16 = _fwd_bwd(lambda q, k, v: _segmented(q, k, v, lengths), (q, k, v), grad_out, torch.bfloat16)
    ours = _fwd_bwd(fn, (q, k, v), grad_out, torch.bfloat16)
    for name, e, s, o in zip(("out", "dq", "dk", "dv"), exact, sdpa16, ours, strict=True):
        budget = 2 * float((s - e).abs().max()) + 1e-3
        assert float((o - e).abs().max()) <= budget, name


def _small_llama(tmp_path):
    from support.tiny import make_tiny_llama

    return make_tiny_llama(tmp_path / "llama", "chatml", hidden=256, layers=2)  # head_dim 64, 4 / 2 heads


def _lora(tiny, attn):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    attention.register()
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.bfloat16, attn_implementation=attn).cuda()
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    config.init_lora_weights = False
    return get_peft_model(model, config)


def _loss_grads(model, batch):
    model.zero_grad()
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return float(loss), {n: p.grad.float().flatten() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kernel", _kernels())
def test_packed_batch_trains_like_its_conversations_one_by_one(kernel, tmp_path):
    tiny = _small_llama(tmp_path)
    examples, tokenizer = tokenised_examples(tiny, n=8)
    batch, _ = packed_batch(examples, tokenizer.pad_token_id or 0, seq_length=256)
    batch = {k: v.cuda() for k, v in batch.items()}
    model = _lora(tiny, attention.NAMES[kernel])
    packed_loss, packed_grads = _loss_grads(model, batch)

    reference = _lora(tiny, "sdpa")  # same weights, each conversation alone
    counts = [sum(1 for t in e["labels"][1:] if t != -100) for e in examples]
    ref_loss, ref_grads = 0.0, {}
    for e, n in zip(examples, counts, strict=True):
        loss, grads = _loss_grads(reference, {k: torch.tensor([v], device="cuda") for k, v in e.items()})
        ref_loss += loss * n / sum(counts)
        for name, g in grads.items():
            ref_grads[name] = ref_grads.get(name, 0) + g * n / sum(counts)

    def agrees(loss, grads):
        cos = min(float(F.cosine_similarity(grads[n], ref_grads[n], dim=0)) for n in ref_grads)
        return abs(loss - ref_loss) <= 0.01 * ref_loss and cos >= 0.999

    assert agrees(packed_loss, packed_grads), (packed_loss, ref_loss)
    mixed = {"input_ids": batch["input_ids"], "labels": batch["labels"]}  # no position ids: one causal sequence
    assert not agrees(*_loss_grads(model, mixed))


def test_trainer_packs_with_the_kernel_on_the_transformers_backend(tmp_path):
    from lorallama.recipe import load_recipe
    from lorallama.training.backend import choose_backend
    from lorallama.training.trainer import build_trainer
    from support.recipes import write_recipe

    choice = attention.choose("cuda", dtype="bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    if choice.kernel is None:
        pytest.skip(choice.reason)
    tiny = _small_llama(tmp_path)
    path = write_recipe(tmp_path, tiny, per_device_train_batch_size=4, gradient_accumulation_steps=1, packing=True)
    recipe = load_recipe(str(path), ["model.load_in_4bit=false", "trainer.learning_rate=5e-3"])
    trainer = build_trainer(
        recipe, tmp_path / "out", max_steps=15, backend=choose_backend(recipe, "transformers")
    ).trainer
    assert trainer.args.packing is True
    assert trainer.model.config._attn_implementation == choice.attn_implementation
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and int((batch["position_ids"] == 0).sum()) > 1  # padding-free rows
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses


@pytest.mark.unsloth
@pytest.mark.skipif(importlib.util.find_spec("unsloth") is None, reason="unsloth not installed")
def test_unsloth_packed_path_takes_torch_varlen(tmp_path):
    """The one private hook into Unsloth still exists, is set, and its packed training goes through it."""
    import unsloth  # noqa: F401
    from unsloth.utils import attention_dispatch

    from lorallama.recipe import load_recipe
    from lorallama.training.backend import choose_backend
    from lorallama.training.trainer import build_trainer
    from support.recipes import write_recipe

    assert hasattr(attention_dispatch, "_TORCH_VARLEN_ATTN"), "Unsloth renamed its varlen hook: update attention.py"
    if _capability() < (8, 0):
        pytest.skip("torch's flash varlen kernel needs sm80+: Unsloth keeps its own path here")
    tiny = _small_llama(tmp_path)
    path = write_recipe(tmp_path, tiny, per_device_train_batch_size=4, gradient_accumulation_steps=1, packing=True)
    recipe = load_recipe(str(path), ["model.load_in_4bit=false", "trainer.learning_rate=5e-3"])
    trainer = build_trainer(recipe, tmp_path / "out", max_steps=15, backend=choose_backend(recipe, "unsloth")).trainer
    assert attention_dispatch._TORCH_VARLEN_ATTN is not None
    calls = {"n": 0}
    hooked = attention_dispatch._TORCH_VARLEN_ATTN

    def counting(*args, **kwargs):
        calls["n"] += 1
        return hooked(*args, **kwargs)

    attention_dispatch._TORCH_VARLEN_ATTN = counting
    try:
        trainer.train()
    finally:
        attention_dispatch._TORCH_VARLEN_ATTN = hooked
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    if not getattr(attention_dispatch, "_LEAN_VARLEN", False):  # torch 2.12+: Unsloth calls the flash op itself
        assert calls["n"] > 0, "Unsloth's packed path did not call torch's varlen kernel"
