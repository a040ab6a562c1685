"""The general-knowledge probe: multiple-choice items scored by log-likelihood, so forgetting is not only a loss.

Each item is a question asked as a chat turn and two to four short choices. The model's score for a choice is the
mean log-probability of the choice's tokens as its reply (mean, not sum, so a longer choice is not punished for its
length); the item counts as right when the right choice scores highest. The probe's accuracy is reported next to
the losses at step 0 and at every checkpoint (``eval.knowledge_probe``). The project ships 333 items
(``train_jobs/data/knowledge_probe.jsonl``, written by ``bench/make_knowledge_probe.py``); any JSONL file of
``{"question", "choices", "answer"}`` lines works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..chat_encoding import encode_prompt
from ..errors import DataError
from ..paths import RECIPES, find_project_file, recipes_dir
from ..recipe import KNOWLEDGE_PROBE, Recipe

PROBE_FILE = "data/knowledge_probe.jsonl"  # in the recipes folder


def probe_source(recipe: Recipe) -> str | None:
    """Where ``eval.knowledge_probe`` points: the shipped items, a file relative to the recipe, or None (off)."""
    value = recipe.eval.knowledge_probe if recipe.eval else None
    if value is None:
        return None
    if value == KNOWLEDGE_PROBE:
        found = find_project_file(f"{RECIPES}/{PROBE_FILE}") or recipes_dir() / PROBE_FILE
    else:
        folder = recipe.path.parent if recipe.path is not None else recipes_dir()
        found = Path(value) if Path(value).is_absolute() else folder / value
    if not found.is_file():
        raise DataError(
            f"eval.knowledge_probe: {found} is not a file: name a JSONL file of "
            '{"question", "choices", "answer"} lines, or set eval.knowledge_probe: null to go without the probe'
        )
    return str(found)


def load_items(path: str, rows: int | None = None) -> list[dict[str, Any]]:
    """The probe's items, checked line by line: a bad line names its line number and what is wrong with it."""
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"eval.knowledge_probe {path}, line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not JSON ({e.msg})") from None
        choices = item.get("choices") if isinstance(item, dict) else None
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("question"), str)
            and item["question"].strip()
            and isinstance(choices, list)
            and len(choices) >= 2
            and all(isinstance(c, str) and c.strip() for c in choices)
            and len(set(choices)) == len(choices)
            and isinstance(item.get("answer"), int)
            and not isinstance(item.get("answer"), bool)
            and 0 <= item["answer"] < len(choices)
        )
        if not ok:
            raise DataError(
                f"{where}: each line needs a non-empty 'question', two or more different non-empty 'choices' and "
                "'answer', the index of the right choice (0 for the first)"
            )
        items.append(item)
        if rows is not None and len(items) >= rows:
            break
    if not items:
        raise DataError(f"eval.knowledge_probe {path}: no items")
    return items


def encode(items: list[dict[str, Any]], tokenizer) -> list[tuple[list[int], list[list[int]], int]]:
    """Per item: the prompt's ids (the question as a user turn, up to the reply's start), each choice's ids, the
    answer. User text goes through the chat template as content, never as control tokens."""
    encoded = []
    for item in items:
        prompt = encode_prompt(tokenizer, [{"role": "user", "content": item["question"]}])
        choices = [
            tokenizer(c, add_special_tokens=False, split_special_tokens=True)["input_ids"] for c in item["choices"]
        ]
        encoded.append((prompt, choices, item["answer"]))
    return encoded


def choice_scores(model, sequences: list[tuple[list[int], list[int]]], batch: int = 32) -> list[float]:
    """Mean log-probability of each ``(prompt, choice)``'s choice tokens, in batches padded on the right."""
    import torch

    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(sequences), batch):
        chunk = sequences[start : start + batch]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (p, c) in enumerate(chunk):
            ids[row, : len(p) + len(c)] = torch.tensor(p + c)
            mask[row, : len(p) + len(c)] = 1
        with torch.no_grad():  # no labels: Unsloth's fused-loss path (which drops logits) stays off
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        if logits is None or logits.dim() != 3 or logits.shape[1] < width:
            raise RuntimeError("the knowledge probe needs the model's logits, and this forward returned none")
        # Prompt tuning prepends its virtual tokens' positions: the text's positions are the last ``width``.
        offset = logits.shape[1] - width
        for row, (p, c) in enumerate(chunk):
            # The token at position i is predicted by the logits at i - 1: only those rows need a softmax.
            start_at = offset + len(p) - 1
            rows = logits[row, start_at : start_at + len(c)].float().log_softmax(dim=-1)
            picked = rows.gather(-1, torch.tensor(c, device=rows.device)[:, None])
            scores.append(float(picked.mean()))
    return scores


def accuracy(model, encoded: list[tuple[list[int], list[list[int]], int]], batch: int = 32) -> float:
    """The share of ``encode``d items whose right choice the model scores highest (the model is put back as found)."""
    sequences = [(prompt, choice) for prompt, choices, _ in encoded for choice in choices]
    was_training = model.training
    model.eval()
    try:
        scores = choice_scores(model, sequences, batch)
    finally:
        model.train(was_training)
    right, at = 0, 0
    for _, choices, answer in encoded:
        mine = scores[at : at + len(choices)]
        at += len(choices)
        right += max(range(len(mine)), key=mine.__getitem__) == answer
    return right / len(encoded)
