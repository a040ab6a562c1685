"""Padding-free attention on CPU: packed conversations never attend across a boundary.

A packed batch (TRL's best-fit packing and padding-free collator, the trainer's own path) must give the same loss and
the same LoRA gradients as its conversations run one at a time. On CPU that is transformers' SDPA, which turns the
restarting ``position_ids`` into a block-diagonal mask; the project's FlexAttention function runs here too, forward
only (FlexAttention has no CPU backward). torch's varlen kernel is CUDA-only: ``tests/test_gpu_attention.py``.

Tolerance: float32 throughout; loss within 1e-5 relative, every LoRA gradient within 1e-4 relative (of the largest
entry) of the one-by-one figure. A packed batch without its position ids (one long causal sequence) misses by
orders of magnitude more, which the tests check too, so they can fail.
"""

from __future__ import annotations

import pytest
import torch

from lorallama.training import attention
from support.packing import packed_batch, tokenised_examples


def _lora_model(tiny, attn):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    attention.register()
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32, attn_implementation=attn)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    config.init_lora_weights = False  # B ≠ 0, so both A and B get gradients and the adapter changes attention
    return get_peft_model(model, config)


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch, use_cache=False).loss  # as SFTTrainer calls it: with a cache, transformers ignores packing
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def _one_by_one(model, examples):
    """Loss and gradients of the examples run alone, weighted by their target tokens as one batch weighs them."""
    counts = [sum(1 for t in e["labels"][1:] if t != -100) for e in examples]
    total = sum(counts)
    loss, grads = 0.0, None
    for e, n in zip(examples, counts, strict=True):
        batch = {k: torch.tensor([v]) for k, v in e.items()}
        one, g = _loss_and_grads(model, batch)
        loss += one * n / total
        grads = (
            {k: v * n / total for k, v in g.items()}
            if grads is None
            else {k: grads[k] + v * n / total for k, v in g.items()}
        )
    return loss, grads


def _max_rel(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in b)


def test_packed_batch_trains_like_its_conversations_one_by_one(tiny_chatml):
    examples, tokenizer = tokenised_examples(tiny_chatml)
    batch, rows = packed_batch(examples, tokenizer.pad_token_id or 0, seq_length=160)
    assert batch["input_ids"].shape[0] == 1 and rows >= 2  # padding-free: every packed row in one sequence
    starts = int((batch["position_ids"][0] == 0).sum())
    assert starts == len(examples)  # every conversation starts its own count

    model = _lora_model(tiny_chatml, "sdpa")
    packed_loss, packed_grads = _loss_and_grads(model, batch)
    ref_loss, ref_grads = _one_by_one(model, examples)
    assert float(packed_loss) == pytest.approx(float(ref_loss), rel=1e-5)
    assert _max_rel(packed_grads, ref_grads) < 1e-4
    assert len(packed_grads) == 2 * 4 * 2  # A and B of four projections in both layers, all compared

    # The same tokens as one causal sequence (no position ids): attention crosses the boundaries, and it shows.
    mixed = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
    mixed_loss, mixed_grads = _loss_and_grads(model, mixed)
    assert abs(float(mixed_loss) - float(ref_loss)) > 100 * 1e-5 * float(ref_loss)
    assert _max_rel(mixed_grads, ref_grads) > 100 * 1e-4


def test_flex_attention_function_keeps_conversations_apart(tiny_chatml):
    """The registered FlexAttention function, through the model, on CPU (forward: FlexAttention has no CPU backward)."""
    examples, tokenizer = tokenised_examples(tiny_chatml, n=4)
    batch, _ = packed_batch(examples, tokenizer.pad_token_id or 0, seq_length=160)
    model = _lora_model(tiny_chatml, attention.NAMES["flex"])
    reference = _lora_model(tiny_chatml, "sdpa")  # the same weights (same seed), SDPA's own kernel
    assert model.config._attn_implementation == "lorallama_flex"
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        # Packing reorders conversations: find each one by its position-id run and compare it with its solo run.
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [packed.shape[0]]
        solo = {tuple(e["input_ids"]): reference(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples}
        for a, b in zip(starts, starts[1:], strict=False):
            ids = tuple(batch["input_ids"][0, a:b].tolist())
            torch.testing.assert_close(packed[a:b], solo[ids], rtol=1e-4, atol=1e-5)
        crossed = model(input_ids=batch["input_ids"], use_cache=False).logits[0]  # one causal sequence
    later = slice(starts[1], starts[2])
    assert (crossed[later] - packed[later]).abs().max() > 1e-2


def test_segments_follow_restarting_position_ids():
    # Three conversations (4, 2, 3 tokens), then two padding tokens with position 0 each, as TRL pads.
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 0, 1, 2, 0, 0]])
    seg = attention.segments(pos)
    assert seg.cu_seqlens.tolist() == [0, 4, 6, 9, 10, 11]
    assert seg.cu_seqlens.dtype == torch.int32
    assert seg.max_len == 4 and seg.total == 11
    assert seg.doc_ids.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 4]
    assert attention.segments(pos) is seg  # every layer of one forward shares it
    assert attention.segments(pos.clone()) is not seg  # a new batch, even an equal one, gets its own


def test_flex_kernel_matches_attention_run_segment_by_segment():
    """Grouped-query heads (8 query, 2 key/value), causal within each segment, nothing across."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    lengths = [5, 17, 3, 11]
    pos = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    q, k, v = torch.randn(1, 8, 36, 16), torch.randn(1, 2, 36, 16), torch.randn(1, 2, 36, 16)
    out = attention.flex(q, k, v, attention.segments(pos), scale=None, compiled=False)
    ref, s = [], 0
    for n in lengths:
        part = F.scaled_dot_product_attention(
            q[:, :, s : s + n], k[:, :, s : s + n], v[:, :, s : s + n], is_causal=True, enable_gqa=True
        )
        ref.append(part.transpose(1, 2))
        s += n
    assert out.shape == (1, 36, 8, 16)
    torch.testing.assert_close(out, torch.cat(ref, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("device", "capability", "dtype", "varlen", "flex", "kernel"),
    [
        ("cuda", (9, 0), "bfloat16", True, True, attention.KERNEL),  # H100/H200: the measured choice
        ("cuda", (8, 0), "bfloat16", True, False, "varlen"),  # A100 without Triton
        ("cuda", (8, 9), "float16", False, True, "flex"),  # L4/L40S on a torch without varlen_attn
        ("cuda", (7, 5), "float16", True, True, "flex"),  # T4: no flash kernel below sm80
        ("cuda", (7, 5), "float16", True, False, None),
        ("cuda", (7, 0), "float16", True, True, None),  # V100
        ("cuda", (9, 0), "float32", True, False, None),  # flash takes 16-bit only
        ("cpu", None, "float32", True, True, None),
    ],
)
def test_choice_of_kernel(monkeypatch, device, capability, dtype, varlen, flex, kernel):
    monkeypatch.delenv(attention.ENV, raising=False)
    choice = attention.choose(device, capability, dtype, has_varlen=varlen, has_flex=flex)
    assert choice.kernel == kernel
    assert choice.attn_implementation == (attention.NAMES[kernel] if kernel else None)
    assert choice.reason  # what runs, or why nothing does, is always said


def test_kernel_override_for_benchmarks(monkeypatch):
    monkeypatch.setenv(attention.ENV, "flex")
    assert attention.choose("cuda", (9, 0), "bfloat16", has_varlen=True, has_flex=True).kernel == "flex"
    monkeypatch.setenv(attention.ENV, "varlen")
    assert attention.choose("cuda", (7, 5), "float16", has_varlen=True, has_flex=True).kernel is None
    monkeypatch.setenv(attention.ENV, "off")
    assert attention.choose("cuda", (9, 0), "bfloat16", has_varlen=True, has_flex=True).kernel is None
    monkeypatch.setenv(attention.ENV, "flash")
    with pytest.raises(ValueError, match="varlen, flex or off"):
        attention.choose("cuda", (9, 0))


def test_packing_on_cpu_falls_back_to_length_balanced_batches(tiny_chatml, tmp_path, caplog):
    from lorallama.recipe import load_recipe
    from lorallama.training.backend import choose_backend
    from lorallama.training.trainer import packing_plan
    from support.recipes import write_recipe

    recipe = load_recipe(str(write_recipe(tmp_path, tiny_chatml, packing=True)))
    with caplog.at_level("WARNING", logger="lorallama"):
        assert packing_plan(recipe, choose_backend(recipe, "cpu")) == (False, "batch_rebalance")
    assert "no CUDA" in caplog.text
