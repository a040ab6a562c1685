"""Recipes: the shipped YAML files, CLI overrides, and every validation message (key named, fix stated)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from lorallama import recipe as R
from lorallama.recipe import RecipeError, load_recipe, parse_duration

pytestmark = pytest.mark.usefixtures("in_tmp")  # cwd = tmp_path, LORALLAMA_RECIPES = the repository's train_jobs

BASE = {"model": {"base": "someone/base-model"}, "data": {"source": "rows.jsonl"}}


def merged(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def write_recipe(tmp_path: Path, extra: dict | None = None, name: str = "mine", raw: str | None = None) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(raw if raw is not None else yaml.safe_dump(merged(BASE, extra or {})), encoding="utf-8")
    return path


def nested(dotted: str, value) -> dict:
    """``"data.replay.fraction", 2`` → ``{"data": {"replay": {"fraction": 2}}}``."""
    out: dict = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def error_of(name: str, overrides=()) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(name, overrides)
    return str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# The shipped recipes


def test_finetome_recipe_has_the_original_hyperparameters():
    r = load_recipe("finetome")
    assert r.slug == "finetome"
    assert r.model.base == "unsloth/Llama-3.2-1B-Instruct"
    assert r.model.load_in_4bit is False  # 16-bit LoRA measured faster within 6 GiB (docs/benchmarks.md)
    assert r.data.source == "mlabonne/FineTome-100k"
    assert (r.data.format, r.data.messages_field, r.data.shard) == ("chat", "conversations", None)
    assert (r.lora.r, r.lora.alpha, r.lora.dropout) == (16, 16, 0.0)
    assert r.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert r.lora.target_modules == R.ALL_LINEAR
    t = r.trainer
    # Packed 2048-token rows, 16 a step: the fastest setting within 6 GiB on the benchmark (docs/benchmarks.md).
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.warmup_steps) == (16, 1, 5)
    assert t.learning_rate == pytest.approx(2e-4) and isinstance(t.learning_rate, float)
    assert (t.optim, t.weight_decay, t.lr_scheduler_type, t.seed) == ("adamw_8bit", 0.01, "linear", 3407)
    assert (t.save_steps, t.save_total_limit, t.logging_steps) == (50, 5, 50)
    assert t.report_to == ["tensorboard"]
    assert t.max_length == 2048 and t.assistant_only_loss is True and t.packing is True
    assert r.hub.model_repo == "lorallama/llama-3.2-1b-finetome"
    assert (r.job.flavor, parse_duration(r.job.timeout)) == ("t4-small", 4 * 3600)
    assert R.parent_slug(r) is None
    assert r.path == (Path(R.recipes_dir()) / "finetome.yaml").absolute()


def test_marx_recipe_is_raw_text_with_replay_on_top_of_finetome():
    r = load_recipe("marx")
    assert r.model.base == "finetome"
    assert R.parent_slug(r) == "finetome"
    assert (r.data.format, r.data.text_field, r.data.eval_rows) == ("text", "text", 100)
    assert r.data.replay is not None
    assert r.data.replay == R.ReplaySpec(
        source="mlabonne/FineTome-100k", fraction=0.2, split="train", messages_field="conversations", max_rows=20000
    )
    assert len(r.data.trim) == 1
    assert r.hub.model_repo == "lorallama/llama-3.2-1b-marx"


def test_demo_recipe_uses_the_bundled_model_and_a_local_file():
    r = load_recipe("demo")
    assert r.model.base == "bundled:smollm2-135m-instruct"
    assert R.parent_slug(r) is None
    assert (r.data.format, r.data.messages_field) == ("chat", "conversations")
    assert (r.trainer.per_device_train_batch_size, r.trainer.max_length) == (4, 512)
    assert r.trainer.learning_rate == pytest.approx(1e-3)
    # relative data paths resolve against the recipe's folder, whatever the working directory
    resolved = Path(r.resolve_path(r.data.source))
    assert resolved == r.path.parent / "data" / "demo_chat.jsonl" and resolved.is_file()
    assert r.resolve_path("bundled:x") == "bundled:x"
    assert r.resolve_path("mlabonne/FineTome-100k") == "mlabonne/FineTome-100k"
    assert parse_duration(r.job.timeout) == 3600


@pytest.mark.parametrize("slug", ["demo", "finetome", "marx"])
def test_recipe_round_trips_through_to_dict(slug):
    r = load_recipe(slug)
    d = r.to_dict()
    assert "path" not in d and d["slug"] == slug
    again = R.build(R.Recipe, d, "")
    assert again == r


def test_slug_defaults_to_the_file_name_and_can_be_set(tmp_path):
    assert load_recipe(str(write_recipe(tmp_path, name="my-model_2"))).slug == "my-model_2"
    assert load_recipe(str(write_recipe(tmp_path, {"slug": "other"}, name="x"))).slug == "other"


# ---------------------------------------------------------------------------------------------------------------
# Overrides


def test_overrides_set_values_with_yaml_types():
    r = load_recipe(
        "demo",
        [
            "trainer.learning_rate=1e-4",
            "lora.r=8",
            "trainer.report_to=[tensorboard, wandb]",
            "lora.target_modules=[q_proj, v_proj]",
            "trainer.packing=true",
            "data.shard=2/8",
            "model.dtype=bfloat16",
        ],
    )
    assert r.trainer.learning_rate == pytest.approx(1e-4) and isinstance(r.trainer.learning_rate, float)
    assert r.lora.r == 8 and isinstance(r.lora.r, int)
    assert r.trainer.report_to == ["tensorboard", "wandb"]
    assert r.lora.target_modules == ["q_proj", "v_proj"]
    assert r.trainer.packing is True
    assert r.data.shard_index() == (2, 8)
    assert r.model.dtype == "bfloat16"
    # the file on disk is untouched
    assert load_recipe("demo").trainer.learning_rate == pytest.approx(1e-3)


def test_override_2e_minus_4_is_read_as_a_float():
    # YAML 1.1 reads "2e-4" (no dot) as a string; the recipe still wants a number
    assert yaml.safe_load("2e-4") == "2e-4"
    r = load_recipe("demo", ["trainer.learning_rate=2e-4"])
    assert r.trainer.learning_rate == 0.0002 and isinstance(r.trainer.learning_rate, float)


def test_override_with_a_single_word_becomes_a_list():
    assert load_recipe("demo", ["lora.target_modules=q_proj"]).lora.target_modules == ["q_proj"]


def test_override_can_create_an_absent_section(tmp_path):
    path = write_recipe(tmp_path)  # no hub:, no job:
    assert load_recipe(str(path)).hub.model_repo is None
    r = load_recipe(str(path), ["hub.model_repo=a/b", "job.flavor=a10g-small"])
    assert r.hub.model_repo == "a/b" and r.hub.space is None
    assert r.job.flavor == "a10g-small"


def test_override_can_create_a_nested_replay_section(tmp_path):
    path = write_recipe(tmp_path, {"data": {"format": "text"}})
    r = load_recipe(str(path), ["data.replay.source=chat.jsonl", "data.replay.fraction=0.3"])
    assert r.data.replay == R.ReplaySpec(source="chat.jsonl", fraction=0.3)


def test_override_with_an_empty_value_sets_null():
    assert load_recipe("finetome", ["data.shard=1/8"]).data.shard == "1/8"
    assert load_recipe("demo", ["hub.space="]).hub.space is None


@pytest.mark.parametrize("item", ["nokey", "=3", " =3", "trainer.learning_rate"])
def test_malformed_override_says_how_to_write_one(item):
    msg = error_of("demo", [item])
    assert msg == f"override {item!r} must look like section.key=value, e.g. trainer.learning_rate=1e-4"


def test_override_through_a_value_that_is_not_a_section():
    msg = error_of("demo", ["trainer.learning_rate.x=1"])
    assert msg == "override 'trainer.learning_rate.x=1': learning_rate is not a section"


def test_override_with_a_misspelt_key_suggests_the_right_one():
    msg = error_of("demo", ["trainer.learning_rat=1e-4"])
    assert msg.endswith("unknown key 'trainer.learning_rat': did you mean 'trainer.learning_rate'?")


def test_override_with_malformed_yaml_value_is_a_recipe_error():
    msg = error_of("demo", ["data.trim=[unclosed"])
    assert "data.trim" in msg


# ---------------------------------------------------------------------------------------------------------------
# Validation: one message per check, naming the dotted key and the fix

FLOAT_KEYS = {"lora.dropout", "trainer.num_train_epochs", "trainer.learning_rate", "trainer.weight_decay"}
REPO_FIX = "write namespace/name, e.g. your-name/llama-3.2-1b-finetome"
WHOLE = "use a whole number >= 1"
SHARD_FIX = "write i/n with 0 <= i < n, e.g. 0/8"

VALUE_CASES = [
    ("slug", "Bad Slug", "use lowercase letters, digits, - and _ (it names the model everywhere)"),
    ("slug", "-lead", "use lowercase letters, digits, - and _ (it names the model everywhere)"),
    ("model.base", "", "name a Hub id, a folder or a slug"),
    ("model.base", "   ", "name a Hub id, a folder or a slug"),
    ("model.dtype", "fp16", "use auto, float32, bfloat16 or float16"),
    ("data.format", "csv", "use chat or text"),
    ("data.shard", "8/8", SHARD_FIX),
    ("data.shard", "1-8", SHARD_FIX),
    ("data.shard", "a/b", SHARD_FIX),
    ("data.shard", "0/0", SHARD_FIX),
    ("data.max_rows", 0, "use a positive count"),
    ("data.max_rows", -3, "use a positive count"),
    ("data.eval_rows", -1, "use 0 or a positive count"),
    ("lora.r", 0, "use a positive rank such as 8, 16 or 32"),
    ("lora.alpha", -16, "use a positive value, usually equal to r"),
    ("lora.dropout", 1.0, "use a value in [0, 1), e.g. 0 or 0.05"),
    ("lora.dropout", -0.1, "use a value in [0, 1), e.g. 0 or 0.05"),
    ("lora.target_modules", [], "list at least one module"),
    ("trainer.per_device_train_batch_size", 0, WHOLE),
    ("trainer.gradient_accumulation_steps", 0, WHOLE),
    ("trainer.save_steps", 0, WHOLE),
    ("trainer.logging_steps", -5, WHOLE),
    ("trainer.save_total_limit", 0, "keep at least 1"),
    ("trainer.warmup_steps", -1, "use 0 or more"),
    ("trainer.max_steps", 0, "use -1 (epochs) or > 0"),
    ("trainer.max_steps", -2, "use -1 (epochs) or > 0"),
    ("trainer.num_train_epochs", 0, "use a value > 0"),
    ("trainer.learning_rate", 0, "use e.g. 2.0e-4"),
    ("trainer.learning_rate", 1, "use e.g. 2.0e-4"),
    ("trainer.learning_rate", 3.5, "use e.g. 2.0e-4"),
    ("trainer.weight_decay", -0.01, "use 0 or more, e.g. 0.01"),
    ("trainer.optim", "adam", "use one of " + ", ".join(R.OPTIMIZERS)),
    ("trainer.lr_scheduler_type", "step", "use one of " + ", ".join(R.SCHEDULERS)),
    ("trainer.max_length", 8, "use a token count such as 2048"),
    ("trainer.train_sampling_strategy", "shortest_first", "use one of " + ", ".join(R.SAMPLERS)),
    ("hub.model_repo", "noslash", REPO_FIX),
    ("hub.model_repo", "a/b/c", REPO_FIX),
    ("hub.dataset_repo", "my name/data", REPO_FIX),
    ("hub.space", "team/", REPO_FIX),
]


@pytest.mark.parametrize(("key", "value", "fix"), VALUE_CASES, ids=[f"{k}={v!r}" for k, v, _ in VALUE_CASES])
def test_invalid_value_names_the_key_and_the_fix(tmp_path, key, value, fix):
    path = write_recipe(tmp_path, nested(key, value))
    msg = error_of(str(path))
    expected_value = float(value) if key in FLOAT_KEYS else value  # float fields hold floats (0 → 0.0)
    assert msg == f"{path}: {key} = {expected_value!r} is not valid: {fix}"


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.2])
def test_replay_fraction_must_be_a_share(tmp_path, fraction):
    path = write_recipe(
        tmp_path, {"data": {"format": "text", "replay": {"source": "chat.jsonl", "fraction": fraction}}}
    )
    msg = error_of(str(path))
    assert msg == (
        f"{path}: data.replay.fraction = {float(fraction)!r} is not valid: use a share between 0 and 1, e.g. 0.1"
    )


def test_replay_on_chat_data_is_refused(tmp_path):
    path = write_recipe(tmp_path, {"data": {"format": "chat", "replay": {"source": "chat.jsonl"}}})
    assert error_of(str(path)) == (
        f"{path}: data.replay is for raw-text training (data.format: text); chat data needs no replay"
    )


def test_bad_trim_regex_is_named(tmp_path):
    path = write_recipe(tmp_path, {"data": {"format": "text", "trim": ["^ok$", "(unclosed"]}})
    msg = error_of(str(path))
    assert msg.startswith(f"{path}: data.trim pattern '(unclosed' is not a valid regular expression: ")
    assert "missing )" in msg


@pytest.mark.parametrize("timeout", ["soon", "4 hours", "h", "-5m"])
def test_bad_job_timeout_says_how_to_write_a_duration(tmp_path, timeout):
    path = write_recipe(tmp_path, {"job": {"timeout": timeout}})
    assert error_of(str(path)) == f"{path}: job.timeout = {timeout!r} is not valid: write it like 4h, 3h50m or 90m"


def test_bad_job_timeout_names_the_key(tmp_path):
    path = write_recipe(tmp_path, {"job": {"timeout": "soon"}})
    assert "job.timeout" in error_of(str(path))


def test_job_timeout_as_plain_seconds(tmp_path):
    path = write_recipe(tmp_path, {"job": {"timeout": 3600}})
    assert parse_duration(load_recipe(str(path)).job.timeout) == 3600


def test_replay_max_rows_must_be_positive():
    msg = error_of("marx", ["data.replay.max_rows=-1"])
    assert "data.replay.max_rows" in msg


# ---------------------------------------------------------------------------------------------------------------
# Unknown keys, types, missing keys, files


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"trainer": {"learning_rat": 1e-4}},
            "unknown key 'trainer.learning_rat': did you mean 'trainer.learning_rate'?",
        ),
        ({"lora": {"alpah": 8}}, "unknown key 'lora.alpah': did you mean 'lora.alpha'?"),
        ({"trainr": {}}, "unknown key 'trainr': did you mean 'trainer'?"),
        (
            {"data": {"format": "text", "replay": {"source": "c.jsonl", "fractoin": 0.2}}},
            "unknown key 'data.replay.fractoin': did you mean 'data.replay.fraction'?",
        ),
        (
            {"learning_rate": 1e-4},
            "unknown key 'learning_rate': it belongs in its section: write it as 'trainer.learning_rate'",
        ),
        (
            {"lora": {"max_length": 512}},
            "unknown key 'lora.max_length': it belongs in its section: write it as 'trainer.max_length'",
        ),
        ({"data": {"seed": 1}}, "unknown key 'data.seed': it belongs in its section: write it as 'trainer.seed'"),
    ],
)
def test_unknown_key_gets_a_suggestion(tmp_path, extra, expected):
    path = write_recipe(tmp_path, extra)
    assert error_of(str(path)) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("extra", "right"),
    [
        ({"format": "text"}, "data.format"),  # today: did you mean 'lora'?
        ({"flavor": "t4-small"}, "job.flavor"),  # today: did you mean 'lora'?
        ({"model_repo": "a/b"}, "hub.model_repo"),  # today: did you mean 'model'?
        ({"data": {"optim": "sgd"}}, "trainer.optim"),  # today: did you mean 'data.trim'?
    ],
)
def test_key_of_another_section_is_named_even_when_a_local_key_looks_alike(tmp_path, extra, right):
    path = write_recipe(tmp_path, extra)
    assert error_of(str(path)).endswith(f"it belongs in its section: write it as {right!r}")


def test_unknown_key_without_a_close_match_lists_the_valid_keys(tmp_path):
    path = write_recipe(tmp_path, {"trainer": {"zzz": 1}})
    names = [f.name for f in dataclasses.fields(R.TrainerSpec)]
    assert error_of(str(path)) == f"{path}: unknown key 'trainer.zzz': valid keys here: {', '.join(names)}"
    path = write_recipe(tmp_path, {"zzz": "red"})
    assert error_of(str(path)) == (
        f"{path}: unknown key 'zzz': valid keys here: slug, model, data, description, lora, trainer, hub, job, eval"
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("lora.r", True, "lora.r must be a number, got True"),
        ("trainer.learning_rate", False, "trainer.learning_rate must be a number, got False"),
        ("trainer.learning_rate", "fast", "trainer.learning_rate must be a number, got 'fast'"),
        ("lora.r", 8.5, "lora.r must be a whole number, got 8.5"),
        ("trainer.packing", "yes please", "trainer.packing must be true or false, got 'yes please'"),
        ("data.strict", 1, "data.strict must be true or false, got 1"),
        ("lora.target_modules", {"q_proj": 1}, "lora.target_modules must be a list, e.g. [a, b]; got {'q_proj': 1}"),
        ("trainer.report_to", {"tb": True}, "trainer.report_to must be a list, e.g. [a, b]; got {'tb': True}"),
        ("model.base", ["a/b"], "model.base must be text, got ['a/b']"),
        ("model.base", None, "model.base must be text, got None"),
        ("model", "a/b", "model must be a mapping, got str 'a/b'"),
        ("data.replay", ["x"], "data.replay must be a mapping, got list ['x']"),
    ],
)
def test_wrong_type_is_named(tmp_path, key, value, expected):
    extra = nested(key, value)
    if key == "data.replay":
        extra["data"]["format"] = "text"
    path = write_recipe(tmp_path, extra)
    assert error_of(str(path)) == f"{path}: {expected}"


def test_numbers_given_as_text_are_accepted(tmp_path):
    path = write_recipe(tmp_path, {"lora": {"r": "32"}, "trainer": {"learning_rate": "5e-5", "num_train_epochs": 2}})
    r = load_recipe(str(path))
    assert r.lora.r == 32 and r.trainer.learning_rate == pytest.approx(5e-5)
    assert r.trainer.num_train_epochs == 2.0 and isinstance(r.trainer.num_train_epochs, float)


@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_infinite_whole_number_is_a_recipe_error(value):
    with pytest.raises(RecipeError, match="lora.r"):
        load_recipe("demo", [f"lora.r={value}"])


@pytest.mark.parametrize(
    ("drop", "section", "key"),
    [("model.base", "model", "base"), ("data.source", "data", "source")],
)
def test_missing_required_key(tmp_path, drop, section, key):
    raw = copy.deepcopy(BASE)
    del raw[section][key]
    path = write_recipe(tmp_path, raw=yaml.safe_dump(raw))
    assert error_of(str(path)).startswith(f"{path}: {section}.{key} is missing (required): add it to the recipe, e.g. ")


def test_missing_required_sections(tmp_path):
    path = write_recipe(tmp_path, raw="description: nothing else\n")
    expected = f"{path}: model, data are missing (required): add it to the recipe, e.g. model: {{base: "
    assert error_of(str(path)).startswith(expected)
    path = write_recipe(tmp_path, raw="")  # an empty file is an empty mapping
    assert error_of(str(path)).startswith(expected)


def test_missing_required_key_names_the_dotted_key(tmp_path):
    path = write_recipe(tmp_path, raw=yaml.safe_dump({"model": {}, "data": {"source": "x.jsonl"}}))
    assert "model.base" in error_of(str(path))


def test_invalid_yaml(tmp_path):
    path = write_recipe(tmp_path, raw="model: [unclosed\ndata: {source: x}\n")
    msg = error_of(str(path))
    assert msg.startswith(f"{path} is not valid YAML: ")


def test_yaml_that_is_a_list(tmp_path):
    path = write_recipe(tmp_path, raw="- model\n- data\n")
    assert error_of(str(path)) == f"{path} must be a mapping of sections (model:, data:, lora:, trainer:, ...)"


def test_unknown_slug_suggests_a_close_one():
    msg = error_of("finetom")
    assert msg.startswith(f"no recipe named 'finetom' in {R.recipes_dir()}: did you mean 'finetome'? known recipes: ")
    known = msg.rsplit("known recipes: ", 1)[1].split(", ")
    assert {"demo", "finetome", "marx"} <= set(known)


def test_unknown_slug_without_a_close_one():
    msg = error_of("zzzzzz")
    assert "did you mean" not in msg
    assert msg.startswith("no recipe named 'zzzzzz' in ")


def test_missing_recipe_file():
    assert error_of("nowhere/mine.yaml") == (
        "recipe file nowhere/mine.yaml does not exist: check the path, or name a slug"
    )


def test_recipes_dir_follows_the_environment(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    write_recipe(tmp_path / "recipes", name="only")
    monkeypatch.setenv("LORALLAMA_RECIPES", str(tmp_path / "recipes"))
    assert R.available_slugs() == ["only"]
    assert load_recipe("only").slug == "only"
    assert error_of("onyl").startswith(f"no recipe named 'onyl' in {tmp_path / 'recipes'}: did you mean 'only'?")


# ---------------------------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("4h", 14400),
        ("3h50m", 13800),
        ("90m", 5400),
        ("45s", 45),
        (30, 30),
        (12.0, 12),
        ("1d2h", 93600),
        (" 2h ", 7200),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "4 hours", "m5"])
def test_parse_duration_rejects_text(text):
    with pytest.raises(RecipeError) as info:
        parse_duration(text)
    assert str(info.value) == f"cannot read duration {text!r}: write it like 4h, 3h50m, 90m or 45s"


def test_trainer_defaults_are_the_original_authors_values():
    t = R.TrainerSpec()
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.warmup_steps, t.num_train_epochs) == (
        2,
        4,
        5,
        1,
    )
    assert (t.learning_rate, t.optim, t.weight_decay, t.lr_scheduler_type, t.seed) == (
        2e-4,
        "adamw_8bit",
        0.01,
        "linear",
        3407,
    )
    assert (t.save_steps, t.save_total_limit, t.logging_steps, t.report_to) == (50, 5, 50, ["tensorboard"])
    lora = R.LoraSpec()
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (16, 16, 0.0, R.ALL_LINEAR)
