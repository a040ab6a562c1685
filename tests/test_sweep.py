"""`lorallama sweep`: trials locally and as parallel Jobs on the Hub double, ranked by the recipe's choice rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lorallama.recipe import load_recipe
from lorallama.training import selection, sweep
from support.recipes import write_recipe
from support.runs import run_command

GENERAL = [
    {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
    for q, a in [("Count to three.", "1, 2, 3."), ("Say hello.", "Hello! How can I help?")]
]


def sweep_recipe(tmp_path: Path, base: Path, **sections) -> Path:
    path = write_recipe(tmp_path, base, save_steps=2)
    raw = yaml.safe_load(path.read_text())
    (tmp_path / "general.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GENERAL))
    raw["data"]["eval_rows"] = 2
    raw["eval"] = {"general_eval": "general.jsonl", "max_new_tokens": 4, "select": {"best_domain_within_general": 1.5}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(raw))
    return path


def expected_order(report: dict) -> list[str]:
    """The rule applied by hand: trials within the general limit by domain loss of their chosen checkpoint."""
    scored = []
    for t in report["trials"]:
        records = t["quality"]["records"]
        chosen = next(r for r in records if r["step"] == t["quality"]["chosen_step"])
        ratio = selection.general_ratio(chosen, records[0])
        scored.append(((0, chosen["domain_loss"]) if ratio <= 1.5 else (1, ratio), t["name"]))
    return [name for _, name in sorted(scored)]


def test_a_local_sweep_ranks_its_trials_and_writes_the_best_recipe(tmp_path, tiny_chatml, capsys):
    path = sweep_recipe(tmp_path, tiny_chatml)
    out = tmp_path / "sweep"
    code = run_command(
        "sweep", str(path), "--grid", "trainer.learning_rate=1e-4,5e-2", "--max-steps", "4", "--output", str(out)
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / "sweep.json").read_text())
    names = [t["name"] for t in report["trials"]]
    assert sorted(names) == ["t00-learning-rate1e-4", "t01-learning-rate5e-2"]
    assert names == expected_order(report) and [t["rank"] for t in report["trials"]] == [1, 2]
    for t in report["trials"]:  # every trial ran its 4 steps and was evaluated at 0, 2 and 4
        assert [r["step"] for r in t["quality"]["records"]] == [0, 2, 4]
        assert (out / t["name"] / "adapter" / "adapter_model.safetensors").is_file()
    # The same base, measured once per trial, gives the same step-0 numbers.
    bases = {t["quality"]["records"][0]["general_loss"] for t in report["trials"]}
    assert len(bases) == 1
    table = (out / "sweep.md").read_text()
    assert table.index(names[0]) < table.index(names[1]) and "| rank | trial | trainer.learning_rate |" in table
    assert (out / "sweep.png").stat().st_size > 1000
    best = load_recipe(str(out / "best.yaml"))
    assert best.trainer.learning_rate == float(report["trials"][0]["values"]["trainer.learning_rate"])
    assert best.trainer.max_steps == 4 and Path(best.data.source).is_absolute()
    assert f"best: {names[0]}" in printed
    # Running the sweep again retrains nothing: each trial is already finished.
    assert (
        run_command(
            "sweep", str(path), "--grid", "trainer.learning_rate=1e-4,5e-2", "--max-steps", "4", "--output", str(out)
        )
        == 0
    )
    assert json.loads((out / "sweep.json").read_text())["trials"] == report["trials"]


def test_sweep_trials_as_parallel_jobs_with_labels_on_the_hub(hub, tmp_path, tiny_chatml, capsys):
    path = sweep_recipe(tmp_path, tiny_chatml, hub={"model_repo": "tester/tiny"})
    out = tmp_path / "sweep"
    grid = ["--grid", "trainer.learning_rate=1e-4,5e-2"]
    argv = ["sweep", str(path), *grid, "--max-steps", "4", "--jobs", "--max-parallel", "2", "--poll", "0.5"]
    code = run_command(*argv, "--output", str(out), "--timeout", "10m")
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / "sweep.json").read_text())
    assert names_of(report) == expected_order(report)
    jobs = [hub.job(j) for t in report["trials"] for j in t["job_ids"]]
    assert len(jobs) == 2 and all(j.stage == "COMPLETED" for j in jobs)
    labels = [j.spec["labels"] for j in jobs]
    assert {lab["lorallama-trial"] for lab in labels} == set(names_of(report))
    assert len({lab["lorallama-sweep"] for lab in labels}) == 1 and all(lab["lorallama"] == "tiny" for lab in labels)
    for t in report["trials"]:  # each trial trained into its own repo, general chat set and all
        assert t["output"] == f"tester/tiny-{t['name']}"
        files = hub.files(t["output"])
        assert json.loads(files["run.json"])["finished"] and "job/data/general.jsonl" in files
        assert [r["step"] for r in t["quality"]["records"]] == [0, 2, 4]


def names_of(report: dict) -> list[str]:
    return [t["name"] for t in report["trials"]]


def test_sweep_errors_are_one_line_naming_the_fix(tmp_path, tiny_chatml, capsys):
    path = write_recipe(tmp_path, tiny_chatml)  # no eval: section
    assert run_command("sweep", str(path), "--grid", "trainer.learning_rate=1e-4,2e-4") == 2
    assert "has no eval: section, and a sweep ranks trials by eval.select: add one" in capsys.readouterr().err
    assert run_command("sweep", str(path), "--grid", "trainer.learning_rate") == 2
    assert "--grid 'trainer.learning_rate' must look like section.key=V1,V2" in capsys.readouterr().err
    path = sweep_recipe(tmp_path, tiny_chatml)
    assert run_command("sweep", str(path), "--grid", "trainer.learning_rate=1e-4,2") == 2
    assert "trial t01-learning-rate2 (trainer.learning_rate=2): " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("grid", "overrides"),
    [
        (["data.replay.fraction=0,0.2"], [["data.replay=null"], ["data.replay.fraction=0.2"]]),
        (
            ["lora.r=8,16", "trainer.learning_rate=1e-4"],
            [["lora.r=8", "trainer.learning_rate=1e-4"], ["lora.r=16", "trainer.learning_rate=1e-4"]],
        ),
    ],
)
def test_the_grid_is_every_combination_and_zero_replay_means_none(grid, overrides):
    trials = sweep.make_trials(sweep.parse_grid(grid))
    assert [t.overrides() for t in trials] == overrides
    assert len({t.name for t in trials}) == len(trials)
