"""Chat prompts as token ids where only the template's own special tokens are special.

Shared by serving (every visitor's message) and training (the knowledge probe's questions): text typed as
``<|im_end|>`` stays text and never ends a turn.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence


def encode_prompt(tokenizer, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the chat template applied to ``messages``, with message text never read as special tokens.

    ``apply_chat_template`` renders a string and tokenizes it whole, so ``<|im_end|>`` typed by a user becomes the
    real end-of-turn token. Here each message's text is replaced by an unguessable placeholder, the template is
    rendered and cut at the placeholders, the template's pieces are tokenized with special tokens and the text with
    ``split_special_tokens=True``. For ordinary text the ids are those of ``apply_chat_template``.
    """
    nonce = secrets.token_hex(8)
    holders = [{"role": m["role"], "content": f"\ue000{nonce}:{i}\ue001"} for i, m in enumerate(messages)]
    rendered = tokenizer.apply_chat_template(holders, tokenize=False, add_generation_prompt=add_generation_prompt)
    parts = re.split(f"\ue000{nonce}:(\\d+)\ue001", rendered)
    found = [int(p) for p in parts[1::2]]
    if sorted(found) != list(range(len(messages))):
        # The template changes message text (it does more than insert it): neutralise special-token strings in the
        # text instead, so they still cannot act as control tokens.
        safe = [{"role": m["role"], "content": _defuse(tokenizer, m["content"])} for m in messages]
        text = tokenizer.apply_chat_template(safe, tokenize=False, add_generation_prompt=add_generation_prompt)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids: list[int] = []
    for j, part in enumerate(parts):
        if j % 2 == 0:
            if part:
                ids += tokenizer(part, add_special_tokens=False)["input_ids"]
        else:
            text = messages[int(part)]["content"]
            if text:
                ids += tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids


def _defuse(tokenizer, text: str) -> str:
    for token in getattr(tokenizer, "all_special_tokens", []) + list(getattr(tokenizer, "added_tokens_encoder", {})):
        if len(token) > 1 and token in text:
            text = text.replace(token, token[0] + "\u200b" + token[1:])
    return text
