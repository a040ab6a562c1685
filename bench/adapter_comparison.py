"""Adapter methods compared at equal steps on the demo data, bundled SmolLM2-135M-Instruct, CPU.

    python bench/adapter_comparison.py                            # lora dora rslora prefix prompt, 20 steps each
    python bench/adapter_comparison.py --methods lora,ia3 --steps 40
    python bench/adapter_comparison.py --set lora.r=8             # any recipe override, for every method

Each method trains through the real path (``build_trainer``: the demo recipe, its tokenisation and masks) for the
same number of optimizer steps from the same seed, then the held-out rows are evaluated. Reported per method:
final eval loss (and the base model's, before training), trainable parameters, median seconds per optimizer step.
Learning rates differ by family, as each is usually run: the demo's 1e-3 for the weight methods, 1e-2 for the
virtual-token methods and (IA)³, whose few parameters move slowly at LoRA's rate (``--lr`` sets one for all).
Results go to ``bench/results/adapter_comparison-cpu.json``; the table is in docs/quality.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

LEARNING_RATES = {"lora": 1e-3, "dora": 1e-3, "rslora": 1e-3, "ia3": 1e-2, "prefix": 1e-2, "prompt": 1e-2}


def step_timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    return Timer()


def eval_loss(trainer) -> float:
    """The held-out chat rows' loss (``eval_domain_loss``: the run names its eval sets)."""
    metrics = trainer.evaluate()
    return next(v for k, v in metrics.items() if k.startswith("eval_") and k.endswith("loss"))


def run_method(method: str, args, work: Path, base_loss: bool = False) -> dict:
    import torch

    from lorallama.recipe import load_recipe
    from lorallama.training.trainer import build_trainer

    lr = args.lr or LEARNING_RATES[method]
    overrides = [
        f"lora.method={method}",
        f"trainer.learning_rate={lr}",
        f"data.eval_rows={args.eval_rows}",
        f"trainer.per_device_train_batch_size={args.batch}",
        "trainer.gradient_accumulation_steps=1",
        f"trainer.max_length={args.max_length}",
        "trainer.save_steps=100000",
        "trainer.logging_steps=5",
        "trainer.report_to=[]",
        *args.set,
    ]
    recipe = load_recipe("demo", overrides)
    torch.manual_seed(recipe.trainer.seed)
    timer = step_timer()
    setup = build_trainer(recipe, work / method, max_steps=args.steps, callbacks=[timer])
    trainer = setup.trainer
    trainable, total = trainer.model.get_nb_trainable_parameters()
    before = eval_loss(trainer) if base_loss else None
    trainer.train()
    after = eval_loss(trainer)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "method": method,
        "learning_rate": lr,
        "steps": trainer.state.global_step,
        "eval_loss": round(after, 4),
        "eval_loss_before": round(before, 4) if before is not None else None,
        "first_train_loss": round(losses[0], 4),
        "last_train_loss": round(losses[-1], 4),
        "trainable_params": trainable,
        "trainable_share": trainable / total,
        "step_s": round(statistics.median(timer.times[1:] or timer.times), 3),
        "backend": setup.backend.name,
    }


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="lora,dora,rslora,prefix,prompt")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--eval-rows", type=int, default=24)
    p.add_argument("--lr", type=float, help="one learning rate for every method")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-base-loss", dest="base_loss", action="store_false", help="skip the eval before training")
    p.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    return p


def main(argv: list[str] | None = None) -> int:
    import torch
    import transformers

    args = make_parser().parse_args(argv)
    rows = []
    settings = {k: v for k, v in vars(args).items() if k != "output"}
    with tempfile.TemporaryDirectory() as tmp:
        for i, method in enumerate(args.methods.split(",")):
            row = run_method(method, args, Path(tmp), base_loss=args.base_loss and i == 0)  # same base for all
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": __import__("peft").__version__,
        "date": time.strftime("%Y-%m-%d"),
        "load_average_after": round(__import__("os").getloadavg()[0], 2),
        "settings": settings,
        "rows": rows,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / "adapter_comparison-cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
