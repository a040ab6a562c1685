"""Packed batches built the way training builds them, for the attention tests on CPU and on CUDA."""

from __future__ import annotations


def tokenised_examples(tiny, n=6):
    """The project's own tokenisation of real chat rows: input ids and labels on assistant tokens only."""
    from lorallama import models
    from lorallama.recipe import load_recipe
    from lorallama.training import data as data_mod
    from lorallama.training.chat_templates import training_chat_template
    from support.recipes import write_recipe

    recipe = load_recipe(str(write_recipe(tiny.parent, tiny)))
    tokenizer = models.load_tokenizer(str(tiny), None)
    prepared = data_mod.prepare(recipe, tokenizer, training_chat_template(tokenizer))
    out = []
    for row in prepared.train.select(range(n)):
        labels = [t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"], strict=True)]
        out.append({"input_ids": list(row["input_ids"]), "labels": labels})
    return out, tokenizer


def packed_batch(examples, pad_id, seq_length):
    """TRL's own packing (best-fit decreasing) and padding-free collator, as SFTTrainer builds them; and the row count."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    packed = pack_dataset(Dataset.from_list(examples), seq_length, strategy="bfd")
    rows = [packed[i] for i in range(len(packed))]
    return DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=True)(rows), len(rows)
