"""Time and cost of a run before it starts: the data's tokens, the optimizer steps, and an ETA and cost per Jobs flavor.

    lorallama train finetome --dry-run
    lorallama jobs run finetome --dry-run --flavor a100-large

Throughput comes from ``bench/throughput_table.json``: tokens/s measured by ``bench/train_throughput.py`` on a card,
per training path. A card without a measurement gets an estimate scaled from a measured one by the card's dense
16-bit FLOP/s and memory bandwidth (``COMPUTE_SHARE`` of the measured step time scales with FLOP/s, the rest with
bandwidth), and says so. A flavor with several GPUs trains as DDP workers (transformers + PEFT, ``--gpus N``), so
its path is that backend's, times the GPU count times ``DDP_EFFICIENCY`` per doubling (2 H200s measured 1.97–2.00×).
A job's time limit caps each job; a run longer than one job's useful time relaunches, and each job pays a start-up
(``STARTUP_S``: installing the packages, downloading the base, tokenising the data) that the cost includes.

Prices are the Hub's Jobs price list (https://huggingface.co/docs/hub/jobs-pricing, read 2026-12-01), billed per
minute while a job starts or runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..paths import job_files_root
from ..recipe import Recipe, parse_duration

TABLE = "bench/throughput_table.json"
COMPUTE_SHARE = 0.6  # of a step's GPU time in matrix multiplies (the H200 profile: ~55–60% in mm/addmm kernels)
DDP_EFFICIENCY = 0.985  # per doubling of GPUs (measured 1.965–1.997× on two H200s)
STARTUP_S = 8 * 60  # per job: uv installs the packages, the base model downloads, the data is tokenised
SAVE_MARGIN_S = 600  # a job trains until ten minutes before its limit, then saves and pushes (jobs.launch)


@dataclass(frozen=True)
class Card:
    name: str
    tflops: float  # dense 16-bit tensor-core peak (bfloat16, or float16 where the card has no bfloat16)
    bandwidth_gbs: float
    memory_gib: float
    capability: tuple[int, int]

    @property
    def bf16(self) -> bool:
        return self.capability >= (8, 0)


CARDS = {
    c.name: c
    for c in (
        Card("T4", 65, 320, 16, (7, 5)),
        Card("L4", 121, 300, 24, (8, 9)),
        Card("A10G", 70, 600, 24, (8, 6)),
        Card("L40S", 362, 864, 48, (8, 9)),
        Card("A100", 312, 2039, 80, (8, 0)),
        Card("H100", 989, 3350, 80, (9, 0)),
        Card("H200", 989, 4800, 141, (9, 0)),
    )
}


@dataclass(frozen=True)
class Flavor:
    name: str
    card: str
    gpus: int
    usd_per_hour: float


FLAVORS = {
    f.name: f
    for f in (
        Flavor("t4-small", "T4", 1, 0.40),
        Flavor("t4-medium", "T4", 1, 0.60),
        Flavor("l4x1", "L4", 1, 0.80),
        Flavor("l4x4", "L4", 4, 3.80),
        Flavor("a10g-small", "A10G", 1, 1.00),
        Flavor("a10g-large", "A10G", 1, 1.50),
        Flavor("a10g-largex2", "A10G", 2, 3.00),
        Flavor("a10g-largex4", "A10G", 4, 5.00),
        Flavor("l40sx1", "L40S", 1, 1.80),
        Flavor("l40sx4", "L40S", 4, 8.30),
        Flavor("l40sx8", "L40S", 8, 23.50),
        Flavor("a100-large", "A100", 1, 2.50),
        Flavor("a100x4", "A100", 4, 10.00),
        Flavor("a100x8", "A100", 8, 20.00),
        Flavor("h200", "H200", 1, 5.00),
        Flavor("h200x2", "H200", 2, 10.00),
        Flavor("h200x4", "H200", 4, 20.00),
        Flavor("h200x8", "H200", 8, 40.00),
    )
}
DEFAULT_FLAVORS = ("t4-small", "l4x1", "a10g-large", "l40sx1", "a100-large", "h200", "l4x4", "a100x8", "h200x8")


def gpus_of(flavor: str) -> int:
    """GPUs of a Jobs flavor (1 for CPU flavors and names this list does not know)."""
    f = FLAVORS.get(flavor)
    return f.gpus if f is not None else 1


def path_for(card: Card, gpus: int) -> str:
    """The training path a job takes on this hardware: Unsloth on one GPU, DDP transformers + PEFT on several; the
    padding-free varlen kernel on sm80+, Unsloth's per-segment attention (one GPU) or unpacked batches below."""
    if gpus > 1:
        return "transformers-varlen" if card.capability >= (8, 0) else "transformers-unpacked"
    return "unsloth-varlen" if card.capability >= (8, 0) else "unsloth-segments"


FALLBACK = {"unsloth-varlen": "unsloth-segments", "transformers-varlen": "transformers-unpacked"}


def load_table(path: Path | None = None) -> dict:
    """The throughput table (``bench/throughput_table.json`` in the checkout, or beside the vendored package of a
    Space that launches jobs); an empty one without either."""
    if path is None:
        root = job_files_root()
        path = root / TABLE if root is not None else None
    if path is None or not Path(path).is_file():
        return {"rows": []}
    return json.loads(Path(path).read_text())


@dataclass
class Throughput:
    tokens_per_s: float
    basis: str  # "measured on H200 (unsloth-varlen)" or "estimate: H200 measurement × FLOP/s and bandwidth"
    measured: bool


def throughput(flavor: Flavor, table: dict) -> Throughput | None:
    """Tokens/s of the flavor (all its GPUs), measured where the table has its card, else estimated."""
    card = CARDS[flavor.card]
    wanted = path_for(card, flavor.gpus)
    rows = table.get("rows", [])
    for path in (wanted, FALLBACK.get(wanted)):
        if path is None:
            continue
        same = [r for r in rows if r["path"] == path and r["card"] == card.name]
        others = [r for r in rows if r["path"] == path and r["card"] in CARDS]
        note = "" if path == wanted else f"; {wanted} not measured yet, {path} used"
        scale = flavor.gpus * DDP_EFFICIENCY ** math.log2(flavor.gpus) if flavor.gpus > 1 else 1.0
        gpus = f" × {flavor.gpus} GPUs (DDP, {DDP_EFFICIENCY} per doubling)" if flavor.gpus > 1 else ""
        if same:
            row = same[0]
            return Throughput(row["tokens_per_s"] * scale, f"measured on {card.name} ({path}){gpus}{note}", True)
        if others:
            row = max(others, key=lambda r: r["tokens_per_s"])
            ref = CARDS[row["card"]]
            slower = (
                COMPUTE_SHARE * ref.tflops / card.tflops + (1 - COMPUTE_SHARE) * ref.bandwidth_gbs / card.bandwidth_gbs
            )
            basis = f"estimate: {ref.name} measurement ({path}) × {card.name}'s FLOP/s and bandwidth{gpus}{note}"
            return Throughput(row["tokens_per_s"] / slower * scale, basis, False)
    return None


@dataclass
class Plan:
    """What a recipe's run amounts to before it starts."""

    examples: int
    tokens: int
    packed: bool
    steps: int
    world_size: int

    def to_dict(self) -> dict:
        return asdict(self)


def epoch_steps(recipe: Recipe, examples: int, tokens: int, world_size: int = 1, packed: bool | None = None) -> int:
    """Optimizer steps in one epoch: packed rows of ``max_length`` tokens (best-fit packing fills ~98% of a row) or
    one example per row, over batch × accumulation × workers."""
    t = recipe.trainer
    packed = t.packing if packed is None else packed
    rows = math.ceil(tokens / (t.max_length * 0.98)) if packed else examples
    return max(1, math.ceil(rows / (t.per_device_train_batch_size * t.gradient_accumulation_steps * world_size)))


def plan_steps(recipe: Recipe, examples: int, tokens: int, world_size: int = 1, packed: bool | None = None) -> Plan:
    """The run's optimizer steps: the epochs' (or the recipe's max_steps)."""
    t = recipe.trainer
    per_epoch = epoch_steps(recipe, examples, tokens, world_size, packed)
    steps = t.max_steps if t.max_steps > 0 else math.ceil(per_epoch * t.num_train_epochs)
    return Plan(examples, tokens, t.packing if packed is None else packed, steps, world_size)


@dataclass
class Estimate:
    flavor: str
    gpus: int
    steps: int
    tokens_per_s: float | None
    basis: str
    train_seconds: float | None
    jobs: int | None
    relaunches: int | None
    cost_usd: float | None


def estimate(
    recipe: Recipe, examples: int, tokens: int, flavor_name: str, timeout: str | None, table: dict
) -> Estimate:
    """ETA and cost of the recipe's run on one flavor, the relaunches its time limit implies included."""
    flavor = FLAVORS.get(flavor_name)
    if flavor is None:
        known = ", ".join(FLAVORS)
        return Estimate(flavor_name, 1, 0, None, f"no price or card for {flavor_name!r} (known: {known})", *[None] * 4)
    plan = plan_steps(recipe, examples, tokens, flavor.gpus)
    tp = throughput(flavor, table)
    if tp is None:
        return Estimate(flavor.name, flavor.gpus, plan.steps, None, "no measurement to scale from", *[None] * 4)
    trained = tokens * plan.steps / epoch_steps(recipe, examples, tokens, flavor.gpus)  # epochs' worth of tokens
    seconds = trained / tp.tokens_per_s
    limit = parse_duration(timeout or recipe.job.timeout)
    useful = max(limit - SAVE_MARGIN_S, int(limit * 0.9)) - STARTUP_S
    jobs = math.ceil(seconds / useful) if useful > 0 else None
    cost = (seconds + (jobs or 1) * STARTUP_S) / 3600 * flavor.usd_per_hour
    return Estimate(
        flavor.name,
        flavor.gpus,
        plan.steps,
        round(tp.tokens_per_s),
        tp.basis,
        round(seconds),
        jobs,
        None if jobs is None else jobs - 1,
        round(cost, 2),
    )


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def format_table(recipe: Recipe, examples: int, tokens: int, flavors, timeout: str | None, table: dict) -> str:
    """The dry run's report: data, steps, then one line per flavor with ETA, cost and relaunches."""
    one = plan_steps(recipe, examples, tokens, 1)
    limit = timeout or recipe.job.timeout
    lines = [
        f"data: {examples:,} examples, {tokens:,} tokens; {'packed' if one.packed else 'unpacked'} rows of up to "
        f"{recipe.trainer.max_length} tokens, {recipe.trainer.num_train_epochs:g} epoch(s)",
        f"steps: {one.steps:,} on one GPU (batch {recipe.trainer.per_device_train_batch_size} × accumulation "
        f"{recipe.trainer.gradient_accumulation_steps}); with N GPUs the batch grows N× and the steps shrink",
        f"job time limit: {limit} (each job trains until {SAVE_MARGIN_S // 60} min before it, after ~{STARTUP_S // 60} "
        "min of start-up)",
        "",
        f"{'flavor':<14} {'GPUs':>4} {'steps':>7} {'tokens/s':>9} {'ETA':>8} {'jobs':>4} {'relaunches':>10} "
        f"{'cost':>9}  basis",
    ]
    for name in flavors:
        e = estimate(recipe, examples, tokens, name, timeout, table)
        tps = f"{e.tokens_per_s:,}" if e.tokens_per_s else "—"
        cost = f"${e.cost_usd:,.2f}" if e.cost_usd is not None else "—"
        jobs = str(e.jobs) if e.jobs is not None else "—"
        relaunch = str(e.relaunches) if e.relaunches is not None else "—"
        lines.append(
            f"{e.flavor:<14} {e.gpus:>4} {e.steps:>7,} {tps:>9} {_hms(e.train_seconds):>8} {jobs:>4} {relaunch:>10} "
            f"{cost:>9}  {e.basis}"
        )
    return "\n".join(lines)


def dry_run(recipe: Recipe, flavor: str | None = None, timeout: str | None = None) -> str:
    """What ``--dry-run`` prints: the data counted as the run will tokenise it, then the table, the chosen flavor
    (``flavor`` or the recipe's ``job.flavor``) first."""
    examples, tokens = count_data(recipe)
    chosen = flavor or recipe.job.flavor
    flavors = [chosen, *(f for f in DEFAULT_FLAVORS if f != chosen)]
    return format_table(recipe, examples, tokens, flavors, timeout, load_table())


def count_data(recipe: Recipe) -> tuple[int, int]:
    """(training examples, training tokens) of the recipe's data, tokenised as the run will tokenise it."""
    from .. import models
    from . import data as data_mod
    from .chat_templates import training_chat_template

    chain = models.base_chain(recipe)
    tokenizer = models.load_tokenizer(chain.base, recipe.model.chat_template)
    template = training_chat_template(tokenizer) if recipe.trainer.assistant_only_loss else None
    prepared = data_mod.prepare(recipe, tokenizer, template)
    lengths = [len(ids) for ids in prepared.train["input_ids"]]
    return len(lengths), sum(lengths)


def run_cost(seconds: float, flavor: str | None) -> float | None:
    """What a run's training time cost on a Jobs flavor (None off the Jobs price list)."""
    f = FLAVORS.get(flavor or "")
    return None if f is None else round(seconds / 3600 * f.usd_per_hour, 2)


class RunMeter:
    """This session's useful training tokens and wall time, first step to last (model loading and the final push
    left out): the run's real tokens/s, and its cost at the Jobs flavor's price when it ran as a job."""

    def __init__(self) -> None:
        self.tokens0 = self.tokens = 0
        self.t0: float | None = None
        self.t1: float | None = None

    def callback(self):
        import time

        from transformers import TrainerCallback

        meter = self

        class Meter(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                meter.tokens0 = meter.tokens = state.num_input_tokens_seen  # a resumed run starts from its count
                meter.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                meter.tokens, meter.t1 = state.num_input_tokens_seen, time.perf_counter()

        return Meter()

    def summary(self, flavor: str | None) -> dict:
        seconds = (self.t1 - self.t0) if self.t0 is not None and self.t1 is not None else 0.0
        tokens = self.tokens - self.tokens0
        f = FLAVORS.get(flavor or "")
        return {
            "tokens": tokens,
            "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
            "flavor": flavor,
            "usd_per_hour": f.usd_per_hour if f else None,
            "cost_usd": run_cost(seconds, flavor),
        }
