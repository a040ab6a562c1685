"""The data-centric filters, each a recipe key counted in the report: the score threshold (tested with FineTome's
column types in test_data_real_world), near-duplicates by MinHash/LSH, the language filter, and the pluggable
quality judge with its content-hash cache."""

from __future__ import annotations

import random

import pytest

from lorallama import cli
from lorallama.errors import RecipeError
from lorallama.recipe import load_recipe
from lorallama.training import data as D
from lorallama.training import dedupe, judge
from support import exports
from support.exports import write_jsonl, write_recipe


def qa(q: str, a: str) -> dict:
    return {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}


WORDS = [
    "anchor",
    "harbor",
    "lantern",
    "meadow",
    "quartz",
    "falcon",
    "violin",
    "glacier",
    "orchard",
    "canyon",
    "ledger",
    "tariff",
    "puzzle",
]


def essay(rng: random.Random, n: int = 60) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randint(0, 99)) for _ in range(n))


def near_dup_rows():
    """10 distinct conversations, then for rows 0-4 a copy with one word in sixty changed, then one exact copy."""
    rng = random.Random(5)
    base = [qa(f"Tell me about topic {i}.", essay(rng)) for i in range(10)]
    near = []
    for i in range(5):
        words = base[i]["conversations"][1]["value"].split()
        words[30] = "changed"
        near.append(qa(f"Tell me about topic {i}.", " ".join(words)))
    return base + near + [base[7]]


def prepare(tmp_path, tok, template, rows, **data):
    write_jsonl(tmp_path / "d.jsonl", rows)
    return D.prepare(load_recipe(str(write_recipe(tmp_path, "x/y", "d.jsonl", **data))), tok, template)


def test_near_duplicates_are_dropped_beside_exact_ones(tmp_path, tok, template):
    rows = near_dup_rows()
    report = prepare(tmp_path, tok, template, rows, near_duplicates=0.8).report
    assert report.kept == 10
    assert report.dropped == {"duplicate": 1} and report.first_rows["duplicate"] == [16]
    assert report.filtered == {"near-duplicate (similarity >= 0.8)": 5}
    assert report.first_rows["near-duplicate (similarity >= 0.8)"] == [11, 12, 13, 14, 15]  # the later copies go
    # off by default, and a threshold above the copies' similarity keeps them
    assert prepare(tmp_path, tok, template, rows).report.kept == 15
    assert prepare(tmp_path, tok, template, rows, near_duplicates=0.98).report.kept == 15
    with pytest.raises(RecipeError, match=r"data.near_duplicates = 0.99 is not valid: use a similarity above 0"):
        load_recipe(str(write_recipe(tmp_path, "x/y", "d.jsonl", near_duplicates=0.99)))


def test_near_duplicate_signatures_are_deterministic():
    text = essay(random.Random(1))
    a, b = dedupe.NearDuplicates(0.8), dedupe.NearDuplicates(0.8)
    assert (a.signature(text).hashvalues == b.signature(text).hashvalues).all()
    changed = text.replace(text.split()[10], "other", 1)
    estimate = a.signature(text).jaccard(a.signature(changed))
    exact = len(dedupe.shingles(text) & dedupe.shingles(changed)) / len(
        dedupe.shingles(text) | dedupe.shingles(changed)
    )
    assert abs(estimate - exact) < 0.15


def test_language_filter(tmp_path, tok, template):
    rows = [
        qa("What is the capital of France?", "Paris is the capital and largest city of France."),
        qa("Was ist die Hauptstadt von Deutschland?", "Berlin ist die Hauptstadt und die größte Stadt Deutschlands."),
        qa("Quelle est la capitale de l'Italie ?", "Rome est la capitale de l'Italie et sa plus grande ville."),
        qa("How do I boil an egg?", "Put the egg in boiling water for about eight minutes, then cool it."),
    ]
    report = prepare(tmp_path, tok, template, rows, language=["en"]).report
    assert (report.kept, report.filtered) == (2, {"language not en": 2})
    assert report.first_rows["language not en"] == [2, 3]
    assert prepare(tmp_path, tok, template, rows, language=["de", "fr"]).report.kept == 2
    with pytest.raises(RecipeError, match="data.language = 'english' is not valid"):
        write_recipe(tmp_path, "x/y", "d.jsonl", language=["english"]) and load_recipe(str(tmp_path / "export.yaml"))


def judge_rows():
    rng = random.Random(2)
    return [qa(f"Question {i}?", " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30)))) for i in range(12)]


def test_pluggable_judge_drops_rows_under_the_threshold_and_caches(tmp_path, tok, template):
    rows = judge_rows()
    spec = {"function": "support.exports:reply_length_judge", "threshold": 3.0, "cache": str(tmp_path / "j.sqlite")}
    exports.JUDGE_CALLS.clear()
    first = prepare(tmp_path, tok, template, rows, judge=spec)
    words = [len(r["conversations"][1]["value"].split()) for r in rows]
    low = [i + 1 for i, w in enumerate(words) if min(5.0, w / 4) < 3.0]
    assert 0 < len(low) < len(rows)
    assert first.report.filtered == {"judge score < 3.0": len(low)}
    assert first.report.first_rows["judge score < 3.0"] == low[:5]
    assert first.report.kept == len(rows) - len(low)
    assert [len(rows)] == exports.JUDGE_CALLS
    assert "12 conversations scored" in first.report.notes[-1] and "0 from the cache" in first.report.notes[-1]

    second = prepare(tmp_path, tok, template, rows, judge=spec)
    assert [len(rows)] == exports.JUDGE_CALLS  # nothing judged again
    assert second.report.filtered == first.report.filtered
    assert second.train["input_ids"] == first.train["input_ids"]
    assert "12 from the cache" in second.report.notes[-1]
    # a changed conversation is judged, the rest come from the cache
    rows[0] = qa("Question 0?", "a brand new reply of many words, long enough to pass the judge easily")
    prepare(tmp_path, tok, template, rows, judge=spec)
    assert [len(rows), 1] == exports.JUDGE_CALLS


def test_model_judge_scores_and_a_second_run_loads_no_model(tmp_path, tok, template, tiny_chatml, monkeypatch):
    rows = judge_rows()
    spec = judge.JudgeSpec(model=str(tiny_chatml), batch_size=5, cache=str(tmp_path / "j.sqlite"))
    messages = [D.normalise_turns(r["conversations"])[0] for r in rows]
    scores = judge.ModelJudge(spec)(messages)
    assert all(1.0 <= s <= 5.0 for s in scores)
    one_by_one = [judge.ModelJudge(judge.JudgeSpec(model=str(tiny_chatml), batch_size=1))([m])[0] for m in messages[:3]]
    assert one_by_one == pytest.approx(scores[:3], abs=1e-4)  # left padding changes nothing
    threshold = sorted(scores)[len(scores) // 2]
    data = {"judge": {"model": str(tiny_chatml), "threshold": threshold, "batch_size": 5, "cache": spec.cache}}
    first = prepare(tmp_path, tok, template, rows, **data).report
    low = [i + 1 for i, s in enumerate(scores) if s < threshold]
    assert first.filtered == {f"judge score < {threshold}": len(low)} and first.kept == len(rows) - len(low)

    def no_model(*a, **k):
        raise AssertionError("the judge model was loaded again")

    monkeypatch.setattr(judge, "ModelJudge", no_model)
    second = prepare(tmp_path, tok, template, rows, **data).report
    assert second.filtered == first.filtered and "12 from the cache" in second.notes[-1]


@pytest.mark.slow
def test_bundled_model_judges_a_conversation(tmp_path, bundled_dir):
    spec = judge.JudgeSpec(model=str(bundled_dir), cache=str(tmp_path / "j.sqlite"))
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
        [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "banana banana purple the the the of of"},
        ],
    ]
    j = judge.Judge(spec)
    scores = j.scores(conversations)
    assert all(1.0 <= s <= 5.0 for s in scores) and scores[0] != scores[1]
    # 135M parameters rate both about the same (docs/data.md): the test holds the mechanics, not the judgement
    single = judge.ModelJudge(judge.JudgeSpec(model=str(bundled_dir), batch_size=1))
    assert [single([c])[0] for c in conversations] == pytest.approx(scores, abs=1e-4)
    assert j.scores(conversations) == scores and (j.hits, j.misses) == (2, 2)
    j.close()


@pytest.mark.parametrize(
    ("judge_keys", "message"),
    [
        ({}, "set exactly one of data.judge.model"),
        ({"model": "a/b", "function": "m:f"}, "set exactly one of data.judge.model"),
        ({"function": "not a function"}, "write package.module:function"),
        ({"model": "a/b", "prompt": "Rate this."}, "put {conversation} in it"),
    ],
)
def test_judge_keys_are_checked(tmp_path, judge_keys, message):
    with pytest.raises(RecipeError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_recipe(str(write_recipe(tmp_path, "x/y", "d.jsonl", judge=judge_keys)))


def test_unimportable_judge_function_is_one_line(tmp_path, tiny_chatml, capsys):
    write_jsonl(tmp_path / "d.jsonl", judge_rows())
    recipe = write_recipe(tmp_path, tiny_chatml, "d.jsonl", judge={"function": "nowhere.module:score"})
    assert cli.main(["data", "inspect", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lorallama: error: data.judge.function nowhere.module:score: cannot import it")
    assert err.count("\n") == 1


def test_inspect_lists_every_filter(tmp_path, tiny_chatml, capsys):
    rows = near_dup_rows() + [qa("Wie spät ist es?", "Es ist genau drei Uhr am Nachmittag, mein Freund.")]
    write_jsonl(tmp_path / "d.jsonl", [{**r, "score": 4.5} for r in rows] + [{**qa("Low", "score"), "score": 2}])
    recipe = write_recipe(tmp_path, tiny_chatml, "d.jsonl", near_duplicates=0.8, language=["en"], min_score=3)
    assert cli.main(["data", "inspect", str(recipe), "--png", str(tmp_path / "h.png")]) == 0
    out = capsys.readouterr().out
    assert "  filtered     1  score < 3.0 (row 18)" in out
    assert "  filtered     1  language not en (row 17)" in out
    assert "  filtered     5  near-duplicate (similarity >= 0.8) (rows 11, 12, 13, 14, 15)" in out
