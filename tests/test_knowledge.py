"""The general-knowledge probe: the shipped items, the scoring against a sequence-by-sequence reference, bad files."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch

from lorallama.errors import DataError
from lorallama.models import load_tokenizer
from lorallama.training import knowledge
from support.models import ATTACKS

SHIPPED = Path(__file__).resolve().parents[1] / "train_jobs" / "data" / "knowledge_probe.jsonl"


def test_the_shipped_probe_is_a_few_hundred_well_formed_items_with_the_answer_anywhere():
    items = knowledge.load_items(str(SHIPPED))
    assert len(items) >= 300
    assert len({i["question"] for i in items}) == len(items)
    # The right answer is not always in one place, so a model that prefers a position cannot pass.
    places = collections.Counter(i["answer"] for i in items)
    assert len(places) == 4 and max(places.values()) < 0.4 * len(items)
    assert len({i["category"] for i in items}) >= 8
    # The file is what its generator writes today.
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_probe", SHIPPED.parents[2] / "bench" / "make_knowledge_probe.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert [json.loads(line) for line in SHIPPED.read_text().splitlines()] == module.items()


def reference_scores(model, sequences):
    """One sequence at a time, no padding: what the batched scorer must reproduce."""
    out = []
    for prompt, choice in sequences:
        ids = torch.tensor([prompt + choice])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[:, -ids.shape[1] :]  # prompt tuning prepends virtual positions
            logprobs = torch.log_softmax(logits.float(), dim=-1)[0]
        out.append(float(sum(logprobs[len(prompt) + k - 1, t] for k, t in enumerate(choice)) / len(choice)))
    return out


def test_batched_scores_equal_scoring_each_choice_alone(tiny_chatml):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_chatml).eval()
    tokenizer = load_tokenizer(str(tiny_chatml))
    items = knowledge.load_items(str(SHIPPED), rows=12)
    encoded = knowledge.encode(items, tokenizer)
    sequences = [(p, c) for p, choices, _ in encoded for c in choices]
    assert len({len(p) + len(c) for p, c in sequences}) > 1  # the batch really pads
    batched = knowledge.choice_scores(model, sequences, batch=5)
    assert batched == pytest.approx(reference_scores(model, sequences), abs=1e-4)
    # Accuracy is the share of items whose right choice scores highest.
    at, right = 0, 0
    for _, choices, answer in encoded:
        mine = batched[at : at + len(choices)]
        at += len(choices)
        right += mine.index(max(mine)) == answer
    model.train()
    assert knowledge.accuracy(model, encoded, batch=7) == right / len(items)
    assert model.training  # put back as found


def test_a_prompt_tuned_model_is_scored_on_its_text_positions(tiny_chatml):
    """Prompt tuning puts its virtual tokens' positions in front of the logits: the scorer must skip them."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_chatml),
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    ).eval()
    tokenizer = load_tokenizer(str(tiny_chatml))
    encoded = knowledge.encode(knowledge.load_items(str(SHIPPED), rows=4), tokenizer)
    sequences = [(p, c) for p, choices, _ in encoded for c in choices]
    assert knowledge.choice_scores(model, sequences, batch=3) == pytest.approx(
        reference_scores(model, sequences), abs=1e-4
    )


def test_a_question_is_text_to_the_template_never_control_tokens(tiny_chatml):
    tokenizer = load_tokenizer(str(tiny_chatml))
    attack = ATTACKS["chatml"]
    [(prompt, _, _)] = knowledge.encode([{"question": attack, "choices": ["a", "b"], "answer": 0}], tokenizer)
    plain = knowledge.encode([{"question": "hello", "choices": ["a", "b"], "answer": 0}], tokenizer)[0][0]
    specials = set(tokenizer.all_special_ids)
    # The attack adds no special token beyond the ones the template itself puts around any question.
    assert sum(t in specials for t in prompt) == sum(t in specials for t in plain)


@pytest.mark.parametrize(
    "line, says",
    [
        ("{not json", "line 2: not JSON"),
        (json.dumps({"question": "Q?", "choices": ["a"], "answer": 0}), "two or more different"),
        (json.dumps({"question": "Q?", "choices": ["a", "a"], "answer": 0}), "two or more different"),
        (json.dumps({"question": "Q?", "choices": ["a", "b"], "answer": 2}), "'answer', the index"),
        (json.dumps({"question": "", "choices": ["a", "b"], "answer": 0}), "non-empty 'question'"),
        (json.dumps({"question": "Q?", "choices": ["a", "b"], "answer": True}), "'answer', the index"),
    ],
)
def test_a_bad_probe_line_is_named_with_its_number_and_the_fix(tmp_path, line, says):
    good = json.dumps({"question": "Q?", "choices": ["a", "b"], "answer": 1})
    path = tmp_path / "probe.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match=says) as caught:
        knowledge.load_items(str(path))
    assert "line 2" in str(caught.value)
    path.write_text("\n")
    with pytest.raises(DataError, match="no items"):
        knowledge.load_items(str(path))


def test_a_job_carries_the_probe_and_its_recipe_finds_it_without_a_checkout(tmp_path):
    import yaml

    from lorallama.recipe import load_recipe
    from lorallama.training import jobs

    files = jobs.bundle(load_recipe("marx"), tmp_path)
    assert files["job/data/knowledge_probe.jsonl"] == SHIPPED
    raw = yaml.safe_load(files["job/recipe.yaml"])
    assert raw["eval"]["knowledge_probe"] == "data/knowledge_probe.jsonl"
    # As the job unpacks it: the recipe beside its data folder, the probe read from there.
    job = tmp_path / "job"
    (job / "data").mkdir(parents=True)
    (job / "recipe.yaml").write_bytes(files["job/recipe.yaml"])
    (job / "data" / "knowledge_probe.jsonl").write_bytes(SHIPPED.read_bytes())
    recipe = load_recipe(str(job / "recipe.yaml"))
    assert knowledge.probe_source(recipe) == str(job / "data" / "knowledge_probe.jsonl")
    with pytest.raises(DataError, match="eval.knowledge_probe: .* is not a file"):
        knowledge.probe_source(load_recipe(str(job / "recipe.yaml"), ["eval.knowledge_probe=missing.jsonl"]))
