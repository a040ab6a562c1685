"""Tiny random Llama models with real chat templates, built in a fraction of a second, for fast tests.

``make_tiny_llama(folder, style)`` writes a complete transformers folder: a byte-level BPE tokenizer trained on a
few sentences (so every string round-trips), the real chat template of the style, and a 2-layer random
LlamaForCausalLM. ``style="llama3"`` uses the Llama 3.2 template (turns end with ``<|eot_id|>`` while eos is
``<|end_of_text|>``); ``style="chatml"`` uses SmolLM2-Instruct's ChatML template.
"""

from __future__ import annotations

from pathlib import Path

import trl

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ahoy! Mount Everest is the tallest mountain on Earth. Fair winds!",
    "Continue the sequence: 1, 1, 2, 3, 5, 8, 13, 21.",
    "What is the capital of France? Paris is the capital of France.",
    "You are a helpful assistant. Be brief. Hello! How can I help?",
    "user assistant system Cutting Knowledge Date: December 2023 Today Date: 26 Jul 2024",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()[]{}-+*/=<>|_\n\t",
]

STYLES = {
    "llama3": {
        "special": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "bos": "<|begin_of_text|>",
        "eos": "<|end_of_text|>",
        "template": lambda: (TRL_TEMPLATES / "llama3_2.jinja").read_text(),
    },
    "chatml": {
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": "<|im_start|>",
        "eos": "<|im_end|>",
        "template": lambda: SMOLLM2_TEMPLATE,
    },
}


def make_tokenizer(style: str = "chatml", vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = STYLES[style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=spec["special"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=spec["bos"], eos_token=spec["eos"])
    fast.chat_template = spec["template"]()
    return fast


def make_tiny_llama(folder: Path, style: str = "chatml", seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = make_tokenizer(style)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        # Default init (0.02) leaves logits near uniform and a LoRA on top nearly powerless; wider is livelier.
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Llama 3's shipped generation config knows only <|end_of_text|>: the never-stopping pitfall, kept on purpose.
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
