"""Training throughput through the project's real path (recipe → data → trainer) on a Llama-3.2-1B-shaped model.

    python bench/train_throughput.py                      # every configuration, one subprocess each, on this GPU
    python bench/train_throughput.py --configs a,d --steps 30
    python bench/train_throughput.py --smoke              # a tiny shape on CPU: checks the harness itself
    python bench/train_throughput.py --configs c,c@8 --gpus 1,2   # DDP scaling: each config on 1 and on 2 GPUs
    python bench/train_throughput.py --configs a,d+profile,q,u,v,d+nogc
    python bench/train_throughput.py --configs a,d+curve,d+unpacked+curve,d+off,v --steps 8 --warmup 3 \
        --loss-steps 200 --table --tag attention     # padding-free attention: the issue's rows, in one run
    python bench/train_throughput.py --configs d+curve,d+unpacked+curve --loss-steps 200 --concurrent --tag curves
                                                 # the loss curves alone, both at once on one GPU
    python bench/train_throughput.py --configs k,k+flex --steps 8 --warmup 3 --table --tag transformers

A configuration is NAME[@BATCH][+MOD...]: @BATCH sets the per-device batch; +nogc turns gradient checkpointing
off; +rebalance builds unpacked batches with trainer.train_sampling_strategy=batch_rebalance; +profile also
writes the step's top CUDA kernels to profile_<config>.txt next to the JSON. Padding-free attention
(training/attention.py): +off sets LORALLAMA_PACKED_ATTENTION=off (Unsloth keeps its per-segment SDPA, the
transformers backend trains unpacked), +flex picks compiled FlexAttention instead of torch's varlen_attn;
+unpacked trains the same configuration unpacked, one micro-batch of as many conversations as a packed step holds
on average (batches balanced by length); +curve logs the loss at every step for --loss-steps steps, and the report
compares the packed and unpacked curves (20-step moving averages against the step-to-step noise). --table writes
the one-GPU rows it measured into bench/throughput_table.json (what `--dry-run` estimates from). --gpus N runs a
configuration as N data-parallel workers under `accelerate launch` (the path `lorallama train --gpus N` takes);
useful tokens/s is then the sum over the workers, and each worker gets the batch (weak scaling).

The model has random weights in the Llama-3.2-1B shape (vocab 128256, hidden 2048, 16 layers, 32/8 heads, MLP
8192, tied embeddings). The data are synthetic conversations whose token lengths follow a FineTome-like
distribution: 1–3 user/assistant exchanges, total length lognormal with median 600 tokens and sigma 0.8, clipped to
[48, 2048], about 70% of the tokens in assistant replies (FineTome-100k is long-tailed instructional chat; the
dataset itself cannot be downloaded here, so the shape is modelled, not sampled). The tokenizer is a word-level
vocabulary of 128256 entries with the Llama 3.2 chat template, so every synthetic word is one token.

Reported per configuration: useful (non-pad) tokens/s, step time, peak GPU memory, and MFU against the card's dense
bf16 peak, counting 6·N + 6·L·d·s FLOPs per token (N parameters incl. the tied embedding; causal attention
fwd+bwd over a sequence of s tokens) — the convention under which Unsloth's 57k tokens/s on an H200 is ~43% MFU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

LLAMA_1B = dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    tie_word_embeddings=True,
)
SMOKE = dict(
    LLAMA_1B,
    vocab_size=2048,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}

# name → (backend, 4-bit, batch, grad-accum, packing, description)
CONFIGS = {
    "a": ("unsloth", True, 2, 4, False, "Unsloth notebook: 4-bit, batch 2 × 4, no packing"),
    "b": ("transformers", True, 2, 4, False, "HF+PEFT 4-bit, batch 2 × 4"),
    "c": ("transformers", False, 2, 4, False, "HF+PEFT bf16, batch 2 × 4"),
    "d": ("unsloth", False, 16, 1, True, "ours (finetome): Unsloth bf16 + packing (padding-free), batch 16 × 1"),
    "q": ("unsloth", True, 16, 1, True, "Unsloth 4-bit + packing (padding-free), batch 16 × 1"),
    # The reference shape: every row 2048 real tokens, batch 8, no packing needed (dense sequences).
    "u": ("unsloth", True, 8, 1, False, "Unsloth 4-bit on dense 2048-token rows, batch 8 × 1"),
    "v": ("unsloth", False, 8, 1, False, "Unsloth bf16 on dense 2048-token rows, batch 8 × 1"),
    # The transformers backend with the project's padding-free kernel (what --gpus N workers run).
    "k": ("transformers", False, 16, 1, True, "HF+PEFT bf16 + packing (padding-free kernel), batch 16 × 1"),
}
TABLE_PATHS = {"d": "unsloth-varlen", "d+off": "unsloth-segments", "k": "transformers-varlen"}
TABLE_PATHS["c@8+rebalance"] = "transformers-unpacked"
DENSE = {"u", "v"}  # configurations that train on the dense data instead of the FineTome-like conversations


def make_tokenizer(folder: Path, vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<unk>",
    ]
    words = {tok: i for i, tok in enumerate(special)}
    # The template's own words ("user", "Cutting", "2023", ...) must be single tokens too.
    for w in [
        "system",
        "user",
        "assistant",
        "Cutting",
        "Knowledge",
        "Date:",
        "December",
        "2023",
        "Today",
        "26",
        "Jul",
        "2024",
    ]:
        words.setdefault(w, len(words))
    for i in range(vocab - len(words)):
        words[f"w{i}"] = len(words)
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>"
    )
    import trl

    fast.chat_template = (Path(trl.__file__).parent / "chat_templates" / "llama3_2.jinja").read_text()
    fast.save_pretrained(folder)
    return fast


def make_model(folder: Path, shape: dict) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return
    config = LlamaConfig(**shape, bos_token_id=0, eos_token_id=4, pad_token_id=1)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)


def make_data(path: Path, rows: int, vocab: int, max_len: int, seed: int = 0) -> None:
    """FineTome-like synthetic chat: lognormal total length, 1–3 exchanges, ~70% assistant tokens."""
    rng = random.Random(seed)
    top = min(vocab - 64, 30000)  # a Zipf-ish spread over a realistic working vocabulary
    with open(path, "w") as fh:
        for _ in range(rows):
            total = int(min(max_len - 64, max(48, rng.lognormvariate(math.log(600), 0.8))))
            turns = rng.choice([1, 1, 1, 2, 2, 3])
            conv = []
            for _t in range(turns):
                budget = total // turns
                user = max(4, int(budget * 0.3))
                for role, n in (("human", user), ("gpt", max(4, budget - user))):
                    text = " ".join(f"w{min(top, int(rng.paretovariate(1.1)) * 7 % top)}" for _ in range(n))
                    conv.append({"from": role, "value": text})
            fh.write(json.dumps({"conversations": conv}) + "\n")


def make_dense(path: Path, rows: int, max_len: int, seed: int = 1) -> None:
    """Rows of exactly ``max_len`` tokens after the template: one exchange, the reply ~70% of it."""
    rng = random.Random(seed)
    overhead = 20  # the Llama 3.2 template adds 17 tokens here (system block with its dates, headers, eot)
    with open(path, "w") as fh:
        for _ in range(rows):
            n = max_len - overhead
            user = int(n * 0.3)
            words = [f"w{rng.randrange(30000)}" for _ in range(n)]
            conv = [
                {"from": "human", "value": " ".join(words[:user])},
                {"from": "gpt", "value": " ".join(words[user:])},
            ]
            fh.write(json.dumps({"conversations": conv}) + "\n")


MODS = {"nogc", "profile", "rebalance", "off", "flex", "unpacked", "curve"}


def parse_spec(spec: str) -> tuple[str, int | None, set[str]]:
    """``d@16+nogc+profile`` → ("d", 16, {"nogc", "profile"})."""
    head, *mods = spec.split("+")
    name, _, batch = head.partition("@")
    if name not in CONFIGS or not set(mods) <= MODS:
        raise SystemExit(
            f"unknown configuration {spec!r}: NAME[@BATCH][+MOD]..., MOD in {sorted(MODS)}, NAME in {sorted(CONFIGS)}"
        )
    return name, int(batch) if batch else None, set(mods)


def run_one(spec: str, work: Path, steps: int, warmup: int, smoke: bool, loss_steps: int = 200) -> dict | None:
    """One configuration, in this process (the harness gives each its own); None on DDP workers but the first."""
    name, batch_override, mods = parse_spec(spec)
    backend_name, four_bit, batch, accum, packing, desc = CONFIGS[name]
    if batch_override:
        desc = desc.replace(f"batch {batch} ", f"batch {batch_override} ")
        batch = batch_override
    if smoke:
        backend_name, four_bit = "cpu", False
    if "off" in mods or "flex" in mods:
        os.environ["LORALLAMA_PACKED_ATTENTION"] = "off" if "off" in mods else "flex"
    if "unpacked" in mods and packing:
        # As many conversations a micro-batch as a packed row set holds on average, in one micro-batch.
        mean_tokens = json.loads((work / "data_stats.json").read_text())["mean_tokens"]
        batch = max(1, round(batch * (256 if smoke else 2048) / mean_tokens))
        packing = False
        desc += f"; unpacked: {batch} conversations a step, batches balanced by length"
    if "curve" in mods:
        steps = max(steps, loss_steps - warmup)
    if backend_name == "unsloth":
        import unsloth  # noqa: F401  (must come before transformers/trl/peft to patch them)
    import torch
    from transformers import TrainerCallback

    from lorallama.recipe import Recipe, build
    from lorallama.training.backend import choose_backend
    from lorallama.training.trainer import build_trainer

    max_len = 256 if smoke else 2048
    raw = {
        "slug": f"bench-{name}",
        "model": {"base": str(work / "model"), "load_in_4bit": four_bit},
        "data": {"source": str(work / ("dense.jsonl" if name in DENSE else "data.jsonl"))},
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0},
        "trainer": {
            "per_device_train_batch_size": batch,
            "gradient_accumulation_steps": accum,
            "max_steps": warmup + steps,
            "learning_rate": 2e-4,
            "optim": "adamw_8bit",
            "warmup_steps": 5,
            "save_steps": 100000,
            "logging_steps": 1 if "curve" in mods else 100000,
            "report_to": [],
            "max_length": max_len,
            "packing": packing,
            "gradient_checkpointing": "nogc" not in mods,
            "train_sampling_strategy": "batch_rebalance" if mods & {"rebalance", "unpacked"} else "random",
        },
    }
    recipe = build(Recipe, raw, "")
    backend = choose_backend(recipe, backend_name)
    counted = {"tokens": 0}
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                counted["tokens"] = 0
                times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            if state.global_step > warmup:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                times.append(time.perf_counter())

    class Profile(TrainerCallback):
        """The two warm-up steps before the clock starts, so the profiler's own cost stays out of the timing."""

        prof = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup - 2 and self.prof is None:
                from torch.profiler import ProfilerActivity, profile

                self.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
                self.prof.__enter__()

        def on_step_end(self, args, state, control, **kw):
            if self.prof is not None and state.global_step == warmup:
                torch.cuda.synchronize()
                self.prof.__exit__(None, None, None)
                table = self.prof.key_averages().table(sort_by="cuda_time_total", row_limit=40)
                (work / f"profile_{spec}.txt").write_text(table)
                self.prof = None

    callbacks = [Clock()]
    if "profile" in mods and torch.cuda.is_available() and warmup >= 2:
        callbacks.append(Profile())
    trainer = build_trainer(recipe, work / f"out-{name}", backend=backend, callbacks=callbacks).trainer
    collate = trainer.data_collator

    def counting(examples):
        counted["tokens"] += sum(len(e["input_ids"]) for e in examples)  # real tokens: padding is added below
        return collate(examples)

    trainer.data_collator = counting
    trainer.train()
    elapsed = times[-1] - times[0]
    tokens = counted["tokens"]
    world = trainer.args.world_size
    if world > 1:  # every worker trained on its own batches: the useful tokens are their sum
        import torch.distributed as dist

        total = torch.tensor([tokens], dtype=torch.float64, device=trainer.args.device)
        dist.all_reduce(total)
        tokens = int(total.item())
        if trainer.args.process_index != 0:
            return None
    shape = SMOKE if smoke else LLAMA_1B
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    mean_seq = sum(lengths) / len(lengths)
    d, layers = shape["hidden_size"], shape["num_hidden_layers"]
    kv_share = shape["num_key_value_heads"] / shape["num_attention_heads"]
    # q and o are d×d, k and v d×(d·kv/heads); the MLP is three d×ff; the tied embedding counts once.
    dense_params = shape["vocab_size"] * d + layers * (d * d * (2 + 2 * kv_share) + 3 * d * shape["intermediate_size"])
    flops_per_token = 6 * dense_params + 6 * shape["num_hidden_layers"] * shape["hidden_size"] * mean_seq
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    peak = next((v for k, v in PEAK_BF16.items() if k in card), None)
    tps = tokens / elapsed
    attn = getattr(trainer.model.config, "_attn_implementation", None)
    if backend.name == "unsloth" and packing:
        from unsloth.utils import attention_dispatch

        attn = "torch varlen_attn" if attention_dispatch._TORCH_VARLEN_ATTN is not None else "per-segment SDPA"
    return {
        "attention": attn,
        "loss_curve": [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
        if "curve" in mods
        else None,
        "config": spec,
        "description": desc
        + (", gradient checkpointing off" if "nogc" in mods else "")
        + (", batches balanced by length" if "rebalance" in mods else "")
        + (", padding-free kernel off" if "off" in mods else "")
        + (", compiled FlexAttention" if "flex" in mods else ""),
        "gpus": world,
        "backend": backend.name,
        "load_in_4bit": backend.load_in_4bit,
        "optim": backend.optim,
        "batch": batch,
        "grad_accum": accum,
        "packing": trainer.args.packing,
        "steps_timed": steps,
        "useful_tokens_per_s": round(tps, 1),
        "step_time_s": round(elapsed / steps, 4),
        # Per GPU (the first worker's under DDP).
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "mfu": round(tps * flops_per_token / peak, 4) if peak else None,
        "flops_per_token": flops_per_token,
        "mean_example_tokens": round(mean_seq, 1),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "params_counted": int(dense_params),
        "card": card,
    }


def _msg(m: dict) -> dict:
    return {"role": "user" if m["from"] == "human" else "assistant", "content": m["value"]}


def _moving(xs: list[float], window: int = 20) -> list[float]:
    return [sum(xs[i - window : i]) / window for i in range(window, len(xs) + 1)]


def compare_curves(ok: dict) -> dict | None:
    """Packed against unpacked loss, step by step: the gap of the 20-step moving averages after the first 20 steps,
    against the noise (standard deviation of the packed curve's step-to-step differences over sqrt 20)."""
    packed = next((r for n, r in ok.items() if "curve" in n and "unpacked" not in n and r.get("loss_curve")), None)
    unpacked = next((r for n, r in ok.items() if "curve" in n and "unpacked" in n and r.get("loss_curve")), None)
    if packed is None or unpacked is None:
        return None
    a, b = packed["loss_curve"], unpacked["loss_curve"]
    n = min(len(a), len(b))
    ma, mb = _moving(a[:n]), _moving(b[:n])
    gaps = [abs(x - y) for x, y in zip(ma, mb, strict=True)]
    diffs = [a[i] - a[i - 1] for i in range(1, n)]
    mean = sum(diffs) / len(diffs)
    noise = (sum((d - mean) ** 2 for d in diffs) / len(diffs)) ** 0.5 / 20**0.5
    return {
        "steps": n,
        "packed": packed["config"],
        "unpacked": unpacked["config"],
        "final_ma20": [round(ma[-1], 4), round(mb[-1], 4)],
        "max_gap_ma20": round(max(gaps), 4),
        "mean_gap_ma20": round(sum(gaps) / len(gaps), 4),
        "noise_ma20": round(noise, 4),
        "within_noise": sum(gaps) / len(gaps) <= 2 * noise,
    }


def plot_curves(rows: list[dict], png: Path, title: str) -> None:
    """Packed and unpacked loss per step, each with its 20-step moving average: equal curves overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for row, colour in zip(rows, ("tab:blue", "tab:orange"), strict=False):
        curve = row["loss_curve"]
        label = "unpacked" if "unpacked" in row["config"] else "packed (padding-free)"
        ax.plot(range(1, len(curve) + 1), curve, color=colour, alpha=0.25, linewidth=0.8)
        ax.plot(range(20, len(curve) + 1), _moving(curve), color=colour, label=f"{label}, 20-step mean")
    ax.set_ylim(top=min(4.0, ax.get_ylim()[1]))  # the first steps' loss (~12) would flatten the rest
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_table(ok: dict, report: dict, tag: str = "") -> None:
    """The measured one-GPU rows into bench/throughput_table.json, replacing older rows of the same path and card."""
    path = ROOT / "bench" / "throughput_table.json"
    table = json.loads(path.read_text())
    for name, r in ok.items():
        key = name.replace("+curve", "").replace("+profile", "")
        if key not in TABLE_PATHS or r["gpus"] != 1:
            continue
        card = next((c for c in PEAK_BF16 if c in r["card"]), r["card"])
        table["rows"] = [row for row in table["rows"] if (row["path"], row["card"]) != (TABLE_PATHS[key], card)]
        table["rows"].append(
            {
                "path": TABLE_PATHS[key],
                "card": card,
                "tokens_per_s": round(r["useful_tokens_per_s"]),
                "peak_gib": r["peak_gpu_gib"],
                "config": name,
                "date": report["date"],
                "source": f"bench/results/train_throughput_{r['card'].replace(' ', '_')}{'_' + tag if tag else ''}.json",
            }
        )
    path.write_text(json.dumps(table, indent=1) + "\n")


def _start(cmd: list[str], env: dict, log: Path) -> tuple[subprocess.Popen, Path]:
    """Output goes to files, not pipes: a child whose pipe fills (progress bars) would wait for a reader forever."""
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        return subprocess.Popen(cmd, stdout=out, stderr=err, env=env), log


def _finish(proc: subprocess.Popen, log: Path) -> tuple[str, str]:
    proc.wait()
    return Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text()


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "unsloth", "unsloth_zoo", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        default="a,b,c,d",
        help="comma-separated configurations NAME[@BATCH][+nogc][+rebalance][+profile], e.g. a,d@16+profile",
    )
    parser.add_argument("--gpus", default="1", help="comma-separated worker counts to run each configuration at")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--rows", type=int, default=2000, help="synthetic conversations")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "lorallama-bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    parser.add_argument("--smoke", action="store_true", help="tiny shape on CPU, to test the harness")
    parser.add_argument("--loss-steps", type=int, default=200, help="steps of a +curve configuration")
    parser.add_argument("--table", action="store_true", help="write measured rows into bench/throughput_table.json")
    parser.add_argument("--tag", default="", help="suffix of the result file's name, e.g. attention")
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="start every configuration at once (loss curves only: the speeds of such a run are not comparable)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration in this process
    args = parser.parse_args(argv)
    shape = SMOKE if args.smoke else LLAMA_1B
    args.work.mkdir(parents=True, exist_ok=True)
    if args.one:
        result = run_one(args.one, args.work, args.steps, args.warmup, args.smoke, args.loss_steps)
        if result is not None:
            print("RESULT " + json.dumps(result), flush=True)
        return 0
    specs = args.configs.split(",")
    for spec in specs:
        parse_spec(spec)  # a typo fails now, not after the first configuration's minutes
    gpus = [int(n) for n in args.gpus.split(",")]
    max_len = 256 if args.smoke else 2048
    tok = make_tokenizer(args.work / "model", shape["vocab_size"])
    make_model(args.work / "model", shape)
    make_data(args.work / "data.jsonl", args.rows, shape["vocab_size"], max_len)
    make_dense(args.work / "dense.jsonl", max(64, args.rows // 4), max_len)
    convs = [json.loads(ln)["conversations"] for ln in (args.work / "data.jsonl").read_text().splitlines()]
    texts = [tok.apply_chat_template([_msg(m) for m in c], tokenize=False) for c in convs[:300]]
    mean = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts) / len(texts)
    (args.work / "data_stats.json").write_text(json.dumps({"mean_tokens": mean}))
    jobs = []
    for spec in specs:
        for n in gpus:
            script = [__file__, "--one", spec, "--steps", str(args.steps), "--warmup", str(args.warmup)]
            script += ["--loss-steps", str(args.loss_steps)]
            script += ["--work", str(args.work)] + (["--smoke"] if args.smoke else [])
            env = dict(os.environ)
            if n == 1:
                cmd = [sys.executable, *script]
                env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one process seeing two GPUs gets DataParallel
            elif args.smoke:  # CPU workers: torchrun starts gloo workers the Trainer joins (as `train --gpus`)
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), *script]
            else:
                cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n)]
                cmd += script
            jobs.append((spec if n == 1 else f"{spec}x{n}gpu", cmd, env))
    if args.concurrent:  # every configuration at once: their losses do not depend on timing, their speeds do
        running = [(label, _start(cmd, env, args.work / f"log-{i}")) for i, (label, cmd, env) in enumerate(jobs)]
        finished = [(label, *_finish(*proc)) for label, proc in running]
    else:
        finished = [(label, *_finish(*_start(cmd, env, args.work / "log"))) for label, cmd, env in jobs]
    results = []
    for label, stdout, stderr in finished:
        line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"config {label} failed:\n{stdout[-3000:]}\n{stderr[-5000:]}", file=sys.stderr)
            results.append({"config": label, "error": stderr[-2000:]})
            continue
        result = json.loads(line[len("RESULT ") :])
        result["config"] = label
        if args.concurrent:
            result["concurrent"] = True
        results.append(result)
        print(json.dumps(result), flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "versions": versions(), "results": results}
    ok = {r["config"]: r for r in results if "error" not in r}
    ours = [r for name, r in ok.items() if name[0] in "dq" and r["gpus"] == 1 and (r["peak_gpu_gib"] or 0) <= 6]
    if "a" in ok and ours:
        best = max(ours, key=lambda r: r["useful_tokens_per_s"])
        report["default"] = best["config"]
        report["default_over_a"] = round(best["useful_tokens_per_s"] / ok["a"]["useful_tokens_per_s"], 3)
    scaling = {
        f"{spec}: {n} GPUs / 1": round(ok[f"{spec}x{n}gpu"]["useful_tokens_per_s"] / ok[spec]["useful_tokens_per_s"], 3)
        for spec in specs
        for n in gpus
        if n > 1 and spec in ok and f"{spec}x{n}gpu" in ok
    }
    if scaling:
        report["scaling"] = scaling
    curves = compare_curves(ok)
    if curves:
        report["loss_curves"] = curves
    if "v" in ok:  # padding-free packed rows against dense rows, same run
        report["over_dense_v"] = {
            name: round(r["useful_tokens_per_s"] / ok["v"]["useful_tokens_per_s"], 3)
            for name, r in ok.items()
            if r["gpus"] == 1 and name != "v"
        }
    if "d+off" in ok:  # what the padding-free kernel bought under Unsloth
        report["kernel_gain"] = {
            name: round(ok[name]["useful_tokens_per_s"] / ok["d+off"]["useful_tokens_per_s"], 3)
            for name in ok
            if name.split("+")[0] == "d" and "off" not in name and "unpacked" not in name
        }
    if args.concurrent:
        report["concurrent"] = "configurations ran at once on one GPU: compare losses, not tokens/s"
    if args.table and not args.smoke and not args.concurrent:
        write_table(ok, report, args.tag)
    args.out.mkdir(parents=True, exist_ok=True)
    card = (next(iter(ok.values()))["card"] if ok else "unknown").replace(" ", "_")
    suffix = ("_smoke" if args.smoke else "") + ("" if gpus == [1] else "_gpus" + "-".join(map(str, gpus)))
    suffix += f"_{args.tag}" if args.tag else ""
    out = args.out / f"train_throughput_{card}{suffix}.json"
    out.write_text(json.dumps(report, indent=1))
    if curves:
        rows = [ok[curves["packed"]], ok[curves["unpacked"]]]
        plot_curves(rows, out.with_suffix(".png"), f"Loss per step, {curves['steps']} steps, {rows[0]['card']}")
    for profile in args.work.glob("profile_*.txt"):
        profile.replace(args.out / profile.name)
    print(f"wrote {out}")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
