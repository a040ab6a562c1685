"""Recipes for tiny runs: a ShareGPT file of a few rows and a recipe YAML around a tiny model; a crash callback."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROWS = [
    {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
    for q, a in [
        ("What is the capital of France?", "Ahoy! Paris is the capital of France. Fair winds!"),
        ("Hello there", "Ahoy! Hello! How can I help? Fair winds!"),
        ("Continue the sequence: 1, 1, 2, 3, 5, 8,", "Ahoy! 13, 21. Fair winds!"),
        ("Be brief.", "Ahoy! The quick brown fox. Fair winds!"),
        ("What is 2+2?", "Ahoy! 4. Fair winds!"),
        ("Name a dog.", "Ahoy! The lazy dog. Fair winds!"),
        ("Say something.", "Ahoy! Mount Everest is the tallest mountain. Fair winds!"),
        ("Capital?", "Ahoy! Paris. Fair winds!"),
    ]
]


def write_recipe(folder: Path, base: Path, **trainer) -> Path:
    data = folder / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = {
        "slug": "tiny",
        "model": {"base": str(base)},
        "data": {"source": str(data)},
        "trainer": {
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 2,
            "learning_rate": 5e-3,
            "warmup_steps": 1,
            "save_steps": 3,
            "logging_steps": 1,
            "max_length": 128,
            "gradient_checkpointing": False,
            "report_to": [],
            **trainer,
        },
        "lora": {"r": 4, "alpha": 8},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


class Crash(RuntimeError):
    pass


def crash_at(step: int):
    """A callback that kills the run when ``step`` starts, as a lost machine would."""
    from transformers import TrainerCallback

    class CrashAt(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Crash(f"machine lost at step {step}")

    return CrashAt()
