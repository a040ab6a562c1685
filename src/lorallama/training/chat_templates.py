"""Chat templates for training: the model's own template with ``{% generation %}`` markers for assistant-only loss."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import ModelError

TEMPLATES = Path(__file__).parent / "templates"

_PROBES = [
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6"},
    ],
]


def training_chat_template(tokenizer) -> str:
    """A template with ``{% generation %}`` markers that renders exactly like the tokenizer's own.

    Assistant-only loss needs the markers. Candidates: the model's own template, TRL's patched templates, and the
    ones shipped here; the first that renders the probe conversations identically wins.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    own = tokenizer.chat_template
    if has_generation_markers(own):
        return own
    candidates = []
    with contextlib.suppress(ValueError):
        candidates.append(get_training_chat_template(tokenizer))
    candidates += [p.read_text(encoding="utf-8") for p in sorted(TEMPLATES.glob("*_training.jinja"))]
    for candidate in candidates:
        if candidate and _renders_like(tokenizer, candidate):
            return candidate
    raise ModelError(
        "the chat template has no {% generation %} markers and none of the known training templates matches it: "
        "set model.chat_template to a copy of the template with {% generation %}…{% endgeneration %} around "
        "assistant replies, or set trainer.assistant_only_loss: false to train on whole conversations"
    )


def _renders_like(tokenizer, candidate: str) -> bool:
    try:
        for probe in _PROBES:
            for gen in (False, True):
                conv = probe[:-1] if gen else probe
                a = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
                b = tokenizer.apply_chat_template(
                    conv, tokenize=False, add_generation_prompt=gen, chat_template=candidate
                )
                if a != b:
                    return False
    except Exception:  # a template that cannot render the probes is simply not a match
        return False
    return True
