"""The studio's form → a validated plan: the recipe with the visitor's overrides, their adapter repo, the flavor.

Every value is checked here, before anything is spent: a bad one is refused with its recipe key, the range it
must lie in, the recipe's default and the fix, and all bad values are reported at once. The form starts from the
recipe's own values (``defaults``), so launching it unchanged trains the recipe as the project does.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from ..errors import RecipeError, StudioError
from ..names import is_repo_id
from ..recipe import Recipe, load_recipe
from ..training.estimate import FLAVORS

RECIPE_DATA = "the recipe's data"
OWN_DATA = "your Hub dataset"
FORMATS = ("chat", "text")
# (recipe key, low, high, what it is): the knobs the form offers.
RANGES = {
    "trainer.num_train_epochs": (0.1, 10.0, "epochs"),
    "trainer.learning_rate": (1e-6, 1e-2, "learning rate"),
    "lora.r": (1, 256, "LoRA rank"),
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_FIELD = re.compile(r"[A-Za-z_][\w.-]{0,63}")
_SPLIT = re.compile(r"[A-Za-z0-9_][\w.-]{0,63}")


@dataclass
class FormInput:
    """What the page sends (text and numbers as the visitor typed them)."""

    recipe: str
    data: str = RECIPE_DATA
    dataset: str = ""
    format: str = "chat"
    messages_field: str = "auto"
    text_field: str = "text"
    split: str = "train"
    epochs: float | str | None = None
    learning_rate: float | str | None = None
    lora_r: float | str | None = None
    flavor: str = ""
    adapter_name: str = ""


@dataclass
class Plan:
    """A launch that passed the form: the recipe as it will train, where, and on what."""

    recipe: Recipe
    repo: str
    flavor: str
    timeout: str
    overrides: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Equal for equal launches: a dataset check passed for one plan lets that plan, and only it, launch."""
        raw = json.dumps([self.recipe.slug, self.repo, self.flavor, self.timeout, self.overrides])
        return hashlib.sha256(raw.encode()).hexdigest()[:20]


def defaults(slug: str) -> dict:
    """The form's starting values: the recipe's own."""
    recipe = load_recipe(slug)
    return {
        "epochs": recipe.trainer.num_train_epochs,
        "learning_rate": recipe.trainer.learning_rate,
        "lora_r": recipe.lora.r,
        "flavor": recipe.job.flavor,
        "format": recipe.data.format,
        "messages_field": recipe.data.messages_field,
        "text_field": recipe.data.text_field,
        "split": recipe.data.split,
        "adapter_name": (recipe.hub.model_repo or f"x/{slug}").split("/", 1)[1],
        "source": recipe.data.source,
    }


def flavors_for(recipe: Recipe) -> list[str]:
    """The hardware offered: the Jobs flavors the estimates know, and the recipe's own."""
    return list(dict.fromkeys([recipe.job.flavor, *FLAVORS]))


def flavors_for_slug(slug: str) -> list[str]:
    return flavors_for(load_recipe(slug))


def _number(value, key: str, default: float, errors: list[str], whole: bool = False) -> float | None:
    low, high, what = RANGES[key]
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    ok = number is not None and number == number and low <= number <= high and (not whole or number == int(number))
    if not ok:
        kind = "a whole number" if whole else "a number"
        errors.append(
            f"{key} ({what}) = {value!r} is out of range: use {kind} from {low:g} to {high:g} (the recipe's "
            f"default is {default:g})"
        )
        return None
    return int(number) if whole else number


def plan(form: FormInput, namespace: str, offered: list[str]) -> Plan:
    """Check the form and build the plan, or raise a ``StudioError`` listing every bad value and its fix."""
    if form.recipe not in offered:
        raise StudioError(f"recipe {form.recipe!r} is not offered here: pick one of {', '.join(offered)}")
    base = load_recipe(form.recipe)
    errors: list[str] = []
    overrides: list[str] = []
    epochs = _number(form.epochs, "trainer.num_train_epochs", base.trainer.num_train_epochs, errors)
    lr = _number(form.learning_rate, "trainer.learning_rate", base.trainer.learning_rate, errors)
    rank = _number(form.lora_r, "lora.r", base.lora.r, errors, whole=True)
    if epochs is not None and epochs != base.trainer.num_train_epochs:
        overrides.append(f"trainer.num_train_epochs={epochs:g}")
    if lr is not None and lr != base.trainer.learning_rate:
        overrides.append(f"trainer.learning_rate={lr:g}")
    if rank is not None and rank != base.lora.r:
        overrides += [f"lora.r={rank}", f"lora.alpha={rank}"] if base.lora.alpha == base.lora.r else [f"lora.r={rank}"]
    flavor = (form.flavor or base.job.flavor).strip()
    if flavor not in flavors_for(base):
        errors.append(f"job.flavor = {flavor!r} is not offered: use one of {', '.join(flavors_for(base))}")
    name = (form.adapter_name or "").strip()
    if not _NAME.fullmatch(name) or "--" in name or ".." in name or name.endswith((".git", ".")):
        errors.append(
            f"adapter name = {name!r} is not a repo name: use letters, digits, '-', '_' or '.' (up to 96, no '--' "
            "or '..'), e.g. my-finetome"
        )
    if form.data == OWN_DATA:
        dataset = (form.dataset or "").strip()
        if not is_repo_id(dataset):
            errors.append(f"data.source = {dataset!r} is not a Hub dataset id: write it as owner/name")
        if form.format not in FORMATS:
            errors.append(f"data.format = {form.format!r}: use chat or text")
        field_key, field_value = (
            ("data.messages_field", form.messages_field or "auto")
            if form.format == "chat"
            else ("data.text_field", form.text_field or "text")
        )
        if not _FIELD.fullmatch(field_value):
            errors.append(f"{field_key} = {field_value!r} is not a column name: write the column as it is spelled")
        split = (form.split or "train").strip()
        if not _SPLIT.fullmatch(split):
            errors.append(f"data.split = {split!r} is not a split name: write e.g. train")
        overrides += [f"data.source={dataset}", f"data.format={form.format}", f"{field_key}={field_value}"]
        overrides += [f"data.split={split}", "data.shard=null"]
        if form.format != base.data.format:
            overrides.append("data.replay=null")  # replay mixes chat into raw text: it belongs to the recipe's data
    elif form.data != RECIPE_DATA:
        errors.append(f"data = {form.data!r}: choose {RECIPE_DATA!r} or {OWN_DATA!r}")
    if errors:
        raise StudioError("; ".join(errors))
    repo = f"{namespace}/{name}"
    try:
        recipe = load_recipe(form.recipe, [*overrides, f"hub.model_repo={repo}"])
    except RecipeError as e:
        raise StudioError(f"{e} (from the form's values)") from None
    return Plan(recipe, repo, flavor, recipe.job.timeout, overrides)
