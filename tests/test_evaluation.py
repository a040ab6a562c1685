"""Quality evaluation in real tiny runs: the base at step 0, every checkpoint, raw text without replay, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lorallama.errors import DataError, RecipeError
from lorallama.prompts import COMPARISON_PROMPTS
from lorallama.publishing.cards import adapter_card
from lorallama.recipe import load_recipe
from lorallama.training.run import train
from support.recipes import Crash, crash_at, write_recipe
from support.runs import run_command

GENERAL = [
    {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
    for q, a in [
        ("Count to five.", "1, 2, 3, 4, 5."),
        ("What comes after 7?", "8 comes after 7."),
        ("Spell abc.", "a b c"),
        ("Say hello.", "Hello! How can I help?"),
    ]
]
REPO = Path(__file__).resolve().parents[1]
TEXT = (
    "The quick brown fox jumps over the lazy dog. Mount Everest is the tallest mountain on Earth. "
    "Continue the sequence: 1, 1, 2, 3, 5, 8, 13, 21. What is the capital of France? Paris is the capital. "
) * 12


def quality_recipe(tmp_path: Path, base: Path, *, text: bool = False, evaluation=None, **trainer) -> Path:
    """A tiny recipe with an eval: section and a general chat file of its own; raw text when ``text``."""
    path = write_recipe(tmp_path, base, **{"save_steps": 3, "max_steps": 6, **trainer})
    raw = yaml.safe_load(path.read_text())
    (tmp_path / "general.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GENERAL))
    raw["data"]["eval_rows"] = 2
    if text:
        (tmp_path / "book.txt").write_text(TEXT)
        raw["data"].update({"source": str(tmp_path / "book.txt"), "format": "text"})
        raw["trainer"]["max_length"] = 128
    raw["eval"] = {
        "general_eval": "general.jsonl",
        "prompts": ["Name a dog."],
        "max_new_tokens": 8,
        **(evaluation or {}),
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def quality_of(adapter: Path) -> dict:
    return json.loads((adapter / "run.json").read_text())["quality"]


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory, tiny_chatml) -> Path:
    """A finished tiny chat run with an eval: section (checkpoints at steps 3 and 6): its output folder."""
    tmp_path = tmp_path_factory.mktemp("quality")
    recipe = quality_recipe(tmp_path, tiny_chatml, evaluation={"knowledge_probe": "bundled:knowledge-probe"})
    train(load_recipe(str(recipe), ["eval.knowledge_rows=40"]), tmp_path / "out", card=adapter_card)
    return tmp_path


def test_the_base_is_measured_at_step_0_and_every_checkpoint_after(quality_run, tiny_chatml):
    tmp_path = quality_run
    quality = quality_of(tmp_path / "out/adapter")
    records = quality["records"]
    assert [r["step"] for r in records] == [0, 3, 6]
    for r in records:
        assert r["domain_loss"] > 0 and r["general_loss"] > 0
        assert len(r["answers"]) == len(COMPARISON_PROMPTS) + 1
        assert 0 <= r["probe_accuracy"] <= 1  # the knowledge probe, at the base and every checkpoint
    # The base's probe is the adapter switched off: the plain base model's accuracy on the same 40 items.
    from transformers import AutoModelForCausalLM

    from lorallama.models import load_tokenizer
    from lorallama.training import knowledge

    items = knowledge.load_items(str(REPO / "train_jobs" / "data" / "knowledge_probe.jsonl"), 40)
    base = AutoModelForCausalLM.from_pretrained(tiny_chatml)
    encoded = knowledge.encode(items, load_tokenizer(str(tiny_chatml)))
    assert records[0]["probe_accuracy"] == round(knowledge.accuracy(base, encoded), 4)
    assert quality["prompts"] == [*COMPARISON_PROMPTS, "Name a dog."]
    # Training moved the model: the domain loss at the last checkpoint is not the base's.
    assert records[-1]["domain_loss"] != records[0]["domain_loss"]
    # Each record rode in its checkpoint (so a resumed run keeps them, and the Hub gets them with the checkpoint).
    state = json.loads((tmp_path / "out/checkpoints/checkpoint-3/trainer_state.json").read_text())
    saved = state["stateful_callbacks"]["QualityEval"]["attributes"]["records"]
    assert [r["step"] for r in saved] == [0, 3]
    assert quality["chosen_step"] in (3, 6) and "within 1.10×" in quality["reason"]
    assert (tmp_path / "out/adapter/tradeoff.png").stat().st_size > 1000


def test_the_card_shows_the_table_the_plot_and_each_kept_checkpoints_answers(quality_run, hub):
    adapter = quality_run / "out/adapter"
    meta = json.loads((adapter / "run.json").read_text())
    chosen = meta["quality"]["chosen_step"]
    card = (adapter / "README.md").read_text()  # the card the run wrote
    assert "### Checkpoints: domain vs general chat" in card
    table = card[card.index("| step | epoch | domain loss | general chat loss |") :].split("\n\n")[0]
    rows = table.splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["0 (base)", "3", "6"]
    assert [("**✓**" in r) for r in rows] == [False, chosen == 3, chosen == 6]
    base_general = meta["quality"]["records"][0]["general_loss"]
    assert f"| {base_general:.4f} |" in rows[0]
    assert "knowledge probe |" in table.splitlines()[0]
    assert f"| {meta['quality']['records'][0]['probe_accuracy']:.1%} |" in rows[0]
    assert "forgetting as a second number" in card
    assert f"Published: step {chosen}, by `eval.select: best_domain_within_general: 1.1`" in card
    assert "![Domain vs general chat loss per checkpoint](tradeoff.png)" in card
    answers = card[card.index("#### The prompts, answered by the base and by each kept checkpoint") :]
    for prompt in COMPARISON_PROMPTS:
        block = answers[answers.index(f"**{prompt}**") :].split("\n\n")[1]
        labels = [line.split("|")[1].strip() for line in block.splitlines()[2:]]
        assert labels == ["base", *(f"step {s}" + (" (published)" if s == chosen else "") for s in (3, 6))]
    # `lorallama cards --push` sends the plot along with the card, and no weights.
    hub.seed_repo("tester/quality", {"README.md": b"old card"}, message="a finished job's repo")
    assert run_command("cards", str(adapter), "--push", "--repo", "tester/quality") == 0
    files = hub.files("tester/quality")
    assert files["tradeoff.png"] == (adapter / "tradeoff.png").read_bytes()
    assert "adapter_model.safetensors" not in files


def test_raw_text_without_replay_reports_general_chat_loss(tmp_path, tiny_chatml):
    recipe = load_recipe(str(quality_recipe(tmp_path, tiny_chatml, text=True)))
    assert recipe.data.replay is None
    result = train(recipe, tmp_path / "out")
    records = quality_of(result.adapter_dir)["records"]
    assert [r["step"] for r in records] == [0, 3, 6]
    assert all("general_loss" in r and "domain_loss" in r and "chat_loss" not in r for r in records)
    # Blocks too short for any conversation would leave no general loss: that is an error naming the key.
    with pytest.raises(DataError, match="longer than trainer.max_length 16 tokens: raise trainer.max_length"):
        train(
            load_recipe(str(quality_recipe(tmp_path, tiny_chatml, text=True)), ["trainer.max_length=16"]),
            tmp_path / "o2",
        )


def test_a_resumed_run_keeps_its_records_and_measures_nothing_twice(tmp_path, tiny_chatml):
    recipe = load_recipe(str(quality_recipe(tmp_path, tiny_chatml)))
    with pytest.raises(Crash):
        train(recipe, tmp_path / "out", callbacks=[crash_at(4)])
    straight = quality_of(train(recipe, tmp_path / "straight").adapter_dir)["records"]
    resumed = quality_of(train(recipe, tmp_path / "out").adapter_dir)["records"]
    assert [r["step"] for r in resumed] == [0, 3, 6]
    # Resuming is exact, so the evaluations are the same numbers as a run that never stopped.
    for a, b in zip(resumed, straight, strict=True):
        assert a["general_loss"] == pytest.approx(b["general_loss"], rel=1e-4)
        assert a["answers"] == b["answers"]


def test_the_guard_stops_the_run_for_good_and_says_why(tmp_path, tiny_chatml):
    # A base that knows the general set (an adapter trained on it, merged in), then captain talk at a lively learning
    # rate: the general replies get less likely at once, as a chat model forgets on raw text.
    path = quality_recipe(
        tmp_path,
        tiny_chatml,
        evaluation={"stop_if_general_worse_than": 1.05, "select": "last"},
        learning_rate=5e-2,
        save_steps=2,
        max_steps=20,
    )
    knows = ["data.source=general.jsonl", "data.eval_rows=0", "eval=null", "trainer.max_steps=30"]
    knowing = train(load_recipe(str(path), knows), tmp_path / "knows").adapter_dir
    recipe = load_recipe(str(path), [f"model.adapter={knowing}"])
    result = train(recipe, tmp_path / "out")
    quality = quality_of(result.adapter_dir)
    assert result.global_step < 20 and result.finished  # finished: a relaunch does not train past the guard
    assert "past eval.stop_if_general_worse_than 1.05" in quality["stopped_early"]
    last = quality["records"][-1]
    assert last["step"] == result.global_step and last["general_loss"] > 1.05 * quality["records"][0]["general_loss"]
    assert (tmp_path / "out/checkpoints" / f"checkpoint-{result.global_step}").is_dir()  # saved at the stop
    again = train(recipe, tmp_path / "out")  # nothing left to train
    assert again.global_step == result.global_step and again.finished


def test_eval_section_errors_name_the_key_and_the_fix(tmp_path, tiny_chatml):
    path = quality_recipe(tmp_path, tiny_chatml)
    with pytest.raises(RecipeError, match=r"eval.select = 'best' is not valid: write \{best_domain_within_general"):
        load_recipe(str(path), ["eval.select=best"])
    with pytest.raises(RecipeError, match="eval.stop_if_general_worse_than = 0.9 is not valid: use a ratio above 1"):
        load_recipe(str(path), ["eval.stop_if_general_worse_than=0.9"])
    with pytest.raises(RecipeError, match="needs data.eval_rows > 0 and eval.general_eval"):
        load_recipe(str(path), ["data.eval_rows=0"])
    with pytest.raises(RecipeError, match="did you mean 'eval.prompts'"):
        load_recipe(str(path), ["eval.prompt=[hi]"])
    assert load_recipe(str(path), ["data.eval_rows=0", "eval.select=last"]).eval.select_rule() == ("last", None)
    recipe = load_recipe(str(path), ["eval.general_eval=missing.jsonl"])
    with pytest.raises(DataError, match="eval.general_eval missing.jsonl does not exist"):
        train(recipe, tmp_path / "out")
