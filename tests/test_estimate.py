"""Time and cost before a run starts (``--dry-run``), multi-GPU flavors as DDP workers, and what a run records.

The rules under test are the ones ``training/estimate.py`` states: measured throughput where the table has the card,
an estimate from FLOP/s and bandwidth where it does not (and said so), GPUs × DDP efficiency, one start-up per job,
a job's useful time its limit less ten minutes for the final save and the start-up.
"""

from __future__ import annotations

import io
import json
import math
import sys

import pytest
import yaml

from lorallama.recipe import load_recipe
from lorallama.training import estimate as est
from support.recipes import write_recipe
from support.runs import run_command

TABLE = {
    "rows": [
        {"path": "unsloth-varlen", "card": "H200", "tokens_per_s": 50000},
        {"path": "unsloth-segments", "card": "H200", "tokens_per_s": 25000},
        {"path": "unsloth-segments", "card": "T4", "tokens_per_s": 1000},
        {"path": "transformers-varlen", "card": "H200", "tokens_per_s": 40000},
    ]
}


def _recipe(tmp_path, tiny, **trainer):
    return load_recipe(str(write_recipe(tmp_path, tiny, **trainer)))


def test_steps_packed_unpacked_workers_and_max_steps(tmp_path, tiny_chatml):
    packed = _recipe(tmp_path, tiny_chatml, packing=True, max_length=1000, per_device_train_batch_size=4)
    # 98,000 tokens fill 100 packed rows of 1,000 at 98%; 4 × 2 accumulation = 8 rows a step → 13 steps.
    assert est.plan_steps(packed, examples=400, tokens=98_000).steps == 13
    assert est.plan_steps(packed, examples=400, tokens=98_000, world_size=4).steps == 4  # 32 rows a step
    unpacked = _recipe(tmp_path, tiny_chatml, per_device_train_batch_size=4, num_train_epochs=2)
    assert est.plan_steps(unpacked, examples=400, tokens=98_000).steps == 100  # 50 a epoch, two epochs
    fixed = _recipe(tmp_path, tiny_chatml, max_steps=7)
    assert est.plan_steps(fixed, examples=400, tokens=98_000).steps == 7


def test_measured_where_the_card_was_measured_estimated_elsewhere():
    h200 = est.throughput(est.FLAVORS["h200"], TABLE)
    assert (h200.tokens_per_s, h200.measured) == (50000, True) and "measured on H200" in h200.basis
    t4 = est.throughput(est.FLAVORS["t4-small"], TABLE)  # sm75: Unsloth's per-segment path, measured on a T4
    assert (t4.tokens_per_s, t4.measured) == (1000, True)
    l4, a100 = (est.throughput(est.FLAVORS[f], TABLE) for f in ("l4x1", "a100-large"))
    assert not l4.measured and l4.basis.startswith("estimate: H200 measurement (unsloth-varlen)")
    assert l4.tokens_per_s < a100.tokens_per_s < h200.tokens_per_s  # slower cards, fewer tokens
    # Scaled by FLOP/s and bandwidth: never faster than FLOP/s alone would allow, never slower than both together.
    a100_card, h200_card = est.CARDS["A100"], est.CARDS["H200"]
    assert 50000 * min(a100_card.tflops / h200_card.tflops, a100_card.bandwidth_gbs / h200_card.bandwidth_gbs) <= (
        a100.tokens_per_s
    )
    assert a100.tokens_per_s <= 50000 * max(a100_card.tflops / h200_card.tflops, a100_card.bandwidth_gbs / 4800)


def test_multi_gpu_flavors_train_as_ddp_workers_in_the_estimate():
    one = est.throughput(est.FLAVORS["h200"], TABLE)
    two, eight = (est.throughput(est.FLAVORS[f], TABLE) for f in ("h200x2", "h200x8"))
    assert "transformers-varlen" in two.basis and "DDP" in two.basis  # --gpus N runs transformers + PEFT
    assert two.tokens_per_s == pytest.approx(2 * 40000 * est.DDP_EFFICIENCY)
    assert eight.tokens_per_s == pytest.approx(8 * 40000 * est.DDP_EFFICIENCY**3)
    assert one.tokens_per_s == 50000
    # A path not measured yet falls back to the one that was, and says so.
    only_unpacked = {"rows": [{"path": "transformers-unpacked", "card": "H200", "tokens_per_s": 10000}]}
    fallback = est.throughput(est.FLAVORS["a100x4"], only_unpacked)
    assert "transformers-varlen not measured yet, transformers-unpacked used" in fallback.basis
    assert [est.gpus_of(f) for f in ("t4-small", "l4x4", "a100x8", "h200x2", "cpu-basic")] == [1, 4, 8, 2, 1]


def test_eta_cost_and_relaunches_follow_the_job_time_limit(tmp_path, tiny_chatml):
    recipe = _recipe(tmp_path, tiny_chatml, packing=True, max_length=2048)
    # 36 M tokens at the T4's 1,000 tokens/s: 10 h of training. A 4 h job trains 4 h − 10 min − 8 min = 3 h 42 min.
    e = est.estimate(recipe, examples=40_000, tokens=36_000_000, flavor_name="t4-small", timeout="4h", table=TABLE)
    assert e.train_seconds == 36_000
    assert (e.jobs, e.relaunches) == (3, 2)
    assert e.cost_usd == round((36_000 + 3 * est.STARTUP_S) / 3600 * 0.40, 2)
    longer = est.estimate(recipe, 40_000, 36_000_000, "t4-small", "12h", TABLE)
    assert (longer.jobs, longer.relaunches) == (1, 0)
    h200 = est.estimate(recipe, 40_000, 36_000_000, "h200", "4h", TABLE)
    assert h200.train_seconds == 720 and h200.relaunches == 0
    unknown = est.estimate(recipe, 40_000, 36_000_000, "tpu-v5", "4h", TABLE)
    assert unknown.cost_usd is None and "no price or card for 'tpu-v5'" in unknown.basis


def test_every_flavor_in_the_price_list_has_a_card():
    assert set(est.DEFAULT_FLAVORS) <= set(est.FLAVORS)
    assert {f.card for f in est.FLAVORS.values()} <= set(est.CARDS)
    assert est.FLAVORS["t4-small"].usd_per_hour == 0.40 and est.FLAVORS["h200x8"].usd_per_hour == 40.0
    kept = est.load_table()  # the table in bench/: every row names a path, a known card and a source
    assert kept["rows"] and all(
        r["path"] in kept["paths"] and r["card"] in est.CARDS and r["source"] for r in kept["rows"]
    )


def _capture(monkeypatch, *argv) -> tuple[int, str]:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    code = run_command(*argv)
    monkeypatch.undo()
    return code, out.getvalue()


def test_train_dry_run_counts_the_data_and_trains_nothing(tmp_path, tiny_chatml, monkeypatch):
    from lorallama import models
    from lorallama.training import data as data_mod
    from lorallama.training.chat_templates import training_chat_template

    path = write_recipe(tmp_path, tiny_chatml, packing=True)
    monkeypatch.chdir(tmp_path)
    code, text = _capture(monkeypatch, "train", str(path), "--dry-run")
    assert code == 0, text
    recipe = load_recipe(str(path))
    tokenizer = models.load_tokenizer(str(tiny_chatml), None)
    rows = data_mod.prepare(recipe, tokenizer, training_chat_template(tokenizer)).train["input_ids"]
    tokens = sum(len(r) for r in rows)
    assert f"data: {len(rows):,} examples, {tokens:,} tokens; packed rows" in text
    steps = math.ceil(math.ceil(tokens / (128 * 0.98)) / 4)  # batch 2 × accumulation 2
    assert f"steps: {steps:,} on one GPU" in text
    table = [ln.split() for ln in text.splitlines() if ln.split() and ln.split()[0] in est.FLAVORS]
    assert table[0][0] == "t4-small"  # the recipe's own job.flavor first
    assert {row[0] for row in table} == set(est.DEFAULT_FLAVORS)
    assert all(row[-1] != "—" for row in table)  # every line has its basis
    assert not (tmp_path / "runs").exists()


def test_jobs_dry_run_launches_nothing(tmp_path, tiny_chatml, monkeypatch, hub):
    path = write_recipe(tmp_path, tiny_chatml)
    raw = yaml.safe_load(path.read_text())
    raw["hub"] = {"model_repo": "someone/tiny"}
    path.write_text(yaml.safe_dump(raw))
    code, text = _capture(monkeypatch, "jobs", "run", str(path), "--dry-run", "--flavor", "a100x8", "--timeout", "1h")
    assert code == 0, text
    first = next(ln for ln in text.splitlines() if ln.split() and ln.split()[0] in est.FLAVORS)
    assert first.split()[:2] == ["a100x8", "8"]
    assert "job time limit: 1h" in text
    assert hub.jobs.jobs == {} and not hub.repo_exists("someone/tiny")


def test_a_multi_gpu_flavor_trains_as_ddp_workers_on_the_hub(hub, tmp_path, tiny_chatml):
    """A two-GPU flavor launches two DDP workers (CPU workers here: the double runs jobs on this machine)."""
    from lorallama.training import jobs

    path = write_recipe(tmp_path, tiny_chatml, max_steps=3, save_steps=3)
    raw = yaml.safe_load(path.read_text())
    raw["hub"] = {"model_repo": "tester/tiny-ddp"}
    path.write_text(yaml.safe_dump(raw))
    hub.jobs.extra_env["LORALLAMA_BACKEND"] = "cpu"
    job_id = jobs.launch(load_recipe(str(path)), "a10g-largex2", "30m", restart=True)
    job = hub.wait_job(job_id, timeout=300)
    logs = "\n".join(hub.job_logs(job_id))
    assert job.stage == "COMPLETED", logs[-3000:]
    assert "launching 2 cpu workers" in logs
    meta = json.loads(hub.files("tester/tiny-ddp")["run.json"])
    assert (meta["world_size"], meta["global_step"], meta["finished"]) == (2, 3, True)
    speed = meta["throughput"]
    assert speed["flavor"] == "a10g-largex2" and speed["usd_per_hour"] == 3.00
    assert speed["tokens"] > 0 and speed["tokens_per_s"] > 0
    assert speed["cost_usd"] == est.run_cost(speed["seconds"], "a10g-largex2")
    card = hub.files("tester/tiny-ddp")["README.md"].decode()
    assert f"{speed['tokens']:,} training tokens" in card and "a10g-largex2" in card


def test_a_run_records_its_real_tokens_per_second(tiny_run):
    meta = json.loads((tiny_run / "run.json").read_text())
    speed = meta["throughput"]
    assert speed["tokens"] > 0 and speed["seconds"] > 0
    assert speed["tokens_per_s"] == pytest.approx(speed["tokens"] / speed["seconds"], rel=0.01)
    assert (speed["flavor"], speed["cost_usd"]) == (None, None)  # not a Jobs run: no price to state
    card = (tiny_run / "README.md").read_text()
    assert (
        f"{speed['tokens']:,} training tokens at" in card and "cost" not in card.split("Throughput:")[1].split("\n")[0]
    )
