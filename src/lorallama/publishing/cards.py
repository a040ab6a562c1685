"""Model and dataset cards, rendered with ``huggingface_hub``'s ``ModelCard``/``DatasetCard`` from templates.

    lorallama cards finetome                          # render from runs/finetome/adapter, else from the model repo
    lorallama cards runs/demo/adapter --compute-samples
    lorallama cards marx --push                       # push README.md (+ loss.png) to the model repo; weights untouched

A model card comes from ``model_cards/<slug>.md`` (a Jinja template with ``{{ card_data }}`` as its YAML header; the
package's ``templates/model_card.jinja`` when a slug has none) and a finished run: ``run.json`` (the resolved recipe,
backend, hardware, duration, data report), ``loss.json``, ``loss.png`` and, when recorded, ``samples.json`` (base vs
tuned answers to the three original prompts). Dataset cards come from ``datasets_cards/<name>.md`` the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import __version__, hub
from ..errors import CardError, RecipeError
from ..models import hub_id_of
from ..names import (
    STUDIO_SPACE,
    hub_url,
    is_repo_id,
    license_for,
    namespace_override,
    rerun_command,
    space_host,
    with_namespace,
)
from ..paths import adapter_dir, find_project_file
from ..prompts import COMPARISON_PROMPTS
from ..recipe import GENERAL_CHAT, VIRTUAL_TOKEN_METHODS, Recipe, build, find_recipe, load_parent, load_recipe
from ..training.adapters import describe as describe_adapter

log = logging.getLogger("lorallama")

DEFAULT_MODEL_TEMPLATE = Path(__file__).parent / "templates" / "model_card.jinja"
MODEL_CARDS = "model_cards"
DATASET_CARDS = "datasets_cards"
TAGS = ["lora", "unsloth", "trl", "sft", "lorallama"]
SAMPLES_FILE = "samples.json"
# Files a card push may write to a model repo: never weights, never the checkpoint.
TRADEOFF_PNG = "tradeoff.png"
CARD_FILES = ("README.md", "loss.png", TRADEOFF_PNG, SAMPLES_FILE)
SAMPLE_TOKENS = 60


def find_template(folder: str, name: str, root: Path | None = None) -> Path | None:
    """``<folder>/<name>.md`` in ``root``, the current folder or the checkout, first found."""
    return find_project_file(f"{folder}/{name}.md", root)


# ---------------------------------------------------------------------------------------------------------------
# A finished run: what the card is rendered from


@dataclass
class Run:
    """The files a run leaves in its adapter folder (and pushes to its model repo)."""

    meta: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, str]] | None = None
    loss_png: bytes | None = None
    source: str = ""

    @property
    def recipe_dict(self) -> dict[str, Any]:
        return self.meta.get("recipe") or {}


def _complete(meta: dict[str, Any] | None) -> bool:
    """A run.json written at the end of a run (checkpoints only carry a stub with the slug)."""
    return bool(meta) and "global_step" in meta and "recipe" in meta and "backend" in meta


def read_samples(raw: bytes | str | None) -> list[dict[str, str]] | None:
    """samples.json: ``[{"prompt", "base", "tuned"}, ...]`` or ``{"samples": [...]}``."""
    if not raw:
        return None
    value = json.loads(raw)
    items = value.get("samples") if isinstance(value, dict) else value
    if not isinstance(items, list) or not all(isinstance(i, dict) and "prompt" in i for i in items):
        raise CardError('samples must be a list of {"prompt": …, "base": …, "tuned": …} objects')
    return items


def load_run(folder: Path) -> Run:
    """The run in an adapter folder (``runs/<slug>/adapter``)."""
    folder = Path(folder)
    meta_file = folder / "run.json"
    if not meta_file.is_file():
        raise CardError(f"{folder} holds no run.json: point at a finished run's adapter folder (runs/<slug>/adapter)")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if not _complete(meta):
        raise CardError(f"{meta_file} is a checkpoint stub, not a finished run: train to the end first")
    history = json.loads((folder / "loss.json").read_text()) if (folder / "loss.json").is_file() else []
    samples = read_samples((folder / SAMPLES_FILE).read_bytes()) if (folder / SAMPLES_FILE).is_file() else None
    png = (folder / "loss.png").read_bytes() if (folder / "loss.png").is_file() else None
    return Run(meta, history, samples, png, str(folder))


def run_from_hub(repo: str) -> Run | None:
    """The run a model repo holds, or None when it has no finished (or stopped) run yet."""
    raw = hub.read_file(repo, "run.json")
    meta = json.loads(raw) if raw else None
    if not _complete(meta):
        return None
    history = hub.read_file(repo, "loss.json")
    return Run(
        meta,
        json.loads(history) if history else [],
        read_samples(hub.read_file(repo, SAMPLES_FILE)),
        hub.read_file(repo, "loss.png"),
        repo,
    )


def recipe_from_run(run: Run) -> Recipe:
    try:
        return build(Recipe, run.recipe_dict, "")
    except RecipeError as e:
        raise CardError(f"the recipe recorded in {run.source} cannot be read: {e}") from e


# ---------------------------------------------------------------------------------------------------------------
# Model cards


def _final(history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in history if key in h and h[key] is not None]
    return values[-1] if values else None


def eval_losses(history: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged eval losses: ``{"domain": …, "chat": …}`` (or ``{"eval": …}``)."""
    out = {}
    for key, name in (("eval_domain_loss", "domain"), ("eval_chat_loss", "chat"), ("eval_loss", "eval")):
        if (value := _final(history, key)) is not None:
            out[name] = round(float(value), 4)
    return out


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "an unrecorded time"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return " ".join(f"{v} {u}" for v, u in ((h, "h"), (m, "min"), (s, "s")) if v) or "0 s"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>").strip() or "—"


def _table(rows: list[tuple[Any, Any]], head: tuple[str, str] = ("setting", "value")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "| --- | --- |"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows]
    return "\n".join(lines)


def hyperparameters(meta: dict[str, Any]) -> str:
    """The values the run actually used (the recipe as resolved, and what the backend changed)."""
    recipe = meta.get("recipe") or {}
    t, lora, model = recipe.get("trainer") or {}, recipe.get("lora") or {}, recipe.get("model") or {}
    backend = meta.get("backend") or {}
    optim = t.get("optim")
    if backend.get("optim") and backend["optim"] != optim:
        optim = f"{backend['optim']} (recipe: {optim}; {backend.get('reason', '')})"
    batch = t.get("per_device_train_batch_size", 0) * t.get("gradient_accumulation_steps", 0)
    planned = (
        f"{t.get('max_steps')} steps" if (t.get("max_steps") or -1) > 0 else f"{t.get('num_train_epochs')} epoch(s)"
    )
    length = f"{meta['max_steps']} optimizer steps (recipe: {planned})" if meta.get("max_steps") else planned
    virtual = lora.get("method") in VIRTUAL_TOKEN_METHODS
    schedule = str(t.get("lr_scheduler_type"))
    if schedule == "cosine_with_restarts":
        schedule += f", {t.get('num_cycles', 1)} cycles"
    warmup = f"{t['warmup_ratio']:.0%} of steps warmup" if t.get("warmup_ratio") is not None else None
    rows = [
        ("adapter method", describe_adapter(lora)),
        ("target modules", "none (virtual tokens)" if virtual else ", ".join(lora.get("target_modules") or [])),
        (
            "batch",
            f"{t.get('per_device_train_batch_size')} × {t.get('gradient_accumulation_steps')} accumulation = {batch}",
        ),
        (
            "learning rate",
            f"{t.get('learning_rate')} ({schedule}, {warmup or str(t.get('warmup_steps')) + ' warmup steps'})",
        ),
        ("label smoothing", t.get("label_smoothing", 0.0)),
        ("length", length),
        ("optimizer", optim),
        ("weight decay", t.get("weight_decay")),
        ("max length (tokens)", t.get("max_length")),
        ("packing", t.get("packing")),
        ("loss on assistant tokens only", t.get("assistant_only_loss")),
        ("seed", t.get("seed")),
        (
            "precision",
            f"{backend.get('dtype')}"
            + (" weights, base loaded in 4-bit (QLoRA)" if backend.get("load_in_4bit") else "")
            + (" weights, base loaded in 8-bit" if backend.get("load_in_8bit") else ""),
        ),
        ("recipe asked for 4-bit", model.get("load_in_4bit")),
    ]
    return _table(rows)


def run_summary(meta: dict[str, Any]) -> str:
    backend = meta.get("backend") or {}
    versions = meta.get("versions") or {}
    state = (
        f"Finished after {meta.get('global_step')} steps"
        if meta.get("finished")
        else f"Stopped at step {meta.get('global_step')} of {meta.get('max_steps')} (resumable)"
    )
    lines = [
        f"{state} in {_duration(meta.get('train_seconds'))} of training on **{meta.get('hardware')}** with the "
        f"**{backend.get('name')}** backend ({backend.get('reason')}).",
    ]
    speed = meta.get("throughput") or {}
    if speed.get("tokens_per_s"):
        how = "packed rows" if speed.get("packed") else "unpacked rows"
        if speed.get("attention"):
            how += f", attention `{speed['attention']}`"
        line = f"Throughput: {speed['tokens']:,} training tokens at **{speed['tokens_per_s']:,.0f} tokens/s** ({how})"
        if speed.get("cost_usd") is not None:
            line += (
                f"; on the `{speed['flavor']}` Jobs flavor (${speed['usd_per_hour']:.2f}/h) this training cost "
                f"**${speed['cost_usd']:,.2f}**"
            )
        lines.append(line + ("." if not meta.get("resumed_from") else " (this job's share of a resumed run)."))
    if versions:
        lines.append("")
        lines.append("Software: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f", lorallama {__version__}.")
    if meta.get("git_commit"):
        lines.append(f"Recipe and code at lorallama commit `{meta['git_commit'][:12]}`.")
    if meta.get("resumed_from"):
        lines.append("The run resumed from a checkpoint at least once; resuming is exact (same data order and state).")
    return "\n".join(lines)


def data_section(meta: dict[str, Any]) -> str:
    recipe = meta.get("recipe") or {}
    data = recipe.get("data") or {}
    report = meta.get("data_report") or {}
    rows = [
        ("source", f"`{data.get('source')}` ({data.get('format')})"),
        ("rows read", report.get("total")),
        ("rows kept", report.get("kept")),
    ]
    first = report.get("first_rows") or {}

    def _count(name: str, count: int) -> str:  # "3 (rows 4, 9, 12)": row numbers are 1-based, in reading order
        numbers = first.get(name) or []
        more = "…" if count > len(numbers) else ""
        return f"{count} (row{'s' * (count > 1)} {', '.join(map(str, numbers))}{more})" if numbers else str(count)

    for kind, count in sorted((report.get("repaired") or {}).items()):
        rows.append((f"repaired: {kind}", _count(kind, count)))
    for reason, count in sorted((report.get("dropped") or {}).items()):
        rows.append((f"dropped: {reason}", _count(reason, count)))
    if report.get("unknown_roles"):
        rows.append(("unknown roles", ", ".join(f"`{r}` {n}" for r, n in report["unknown_roles"].items())))
    for name, count in (report.get("filtered") or {}).items():
        rows.append((f"filtered: {name}", _count(name, count)))
    stats = report.get("token_stats") or {}
    if stats:
        rows.append(
            (
                "tokens per example",
                f"min {stats['min']}, median {stats['median']}, p95 {stats['p95']}, max {stats['max']}; "
                f"{stats['tokens']} in all",
            )
        )
    if data.get("eval_rows"):
        rows.append(("held out for evaluation", f"{data['eval_rows']} rows"))
    if data.get("shard"):
        rows.append(("shard", data["shard"]))
    replay = data.get("replay")
    if replay:
        rows.append(("chat replay", f"`{replay.get('source')}`, {replay.get('fraction', 0):.0%} of the training mix"))
    if data.get("trim"):
        rows.append(("boilerplate cut", f"{len(data['trim'])} pattern(s)"))
    text = _table(rows, ("", ""))
    if first:
        text += "\n\nRow numbers count the rows of the source from 1, in reading order."
    notes = report.get("notes") or []
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return text


def eval_table(losses: dict[str, float], meta: dict[str, Any]) -> str:
    if not losses:
        return ""
    data = (meta.get("recipe") or {}).get("data") or {}
    replay = data.get("replay") or {}
    labels = {
        "domain": f"held-out rows of `{data.get('source')}` (domain)",
        "chat": f"held-out rows of `{replay.get('source')}` (general chat)",
        "eval": f"held-out rows of `{data.get('source')}`",
    }
    return _table([(labels[k], v) for k, v in losses.items()], ("evaluation loss on", "final value"))


def quality_table(meta: dict[str, Any]) -> str:
    """Every evaluated checkpoint (step 0 is the base): domain loss, general chat loss and its ratio to the base's,
    and which one the run published."""
    quality = meta.get("quality") or {}
    records = quality.get("records") or []
    if not records:
        return ""
    base = next((r for r in records if r["step"] == 0), {})

    def loss(r: dict[str, Any], key: str) -> str:
        if r.get(key) is None:
            return "—"
        return f"{r[key]:.4f}" + (f" ({r[key] / base[key]:.2f}×)" if base.get(key) and r["step"] else "")

    has_chat = any("chat_loss" in r for r in records)
    has_probe = any("probe_accuracy" in r for r in records)
    head = "| step | epoch | domain loss | general chat loss |" + (" replay chat loss |" * has_chat)
    head += " knowledge probe |" * has_probe + " chosen |"
    lines = [head, "|" + " ---: |" * (4 + has_chat + has_probe) + " :-: |"]
    for r in records:
        cells = [
            "0 (base)" if r["step"] == 0 else str(r["step"]),
            f"{r.get('epoch') or 0:.2f}",
            loss(r, "domain_loss"),
            loss(r, "general_loss"),
            *([loss(r, "chat_loss")] if has_chat else []),
            *([f"{r['probe_accuracy']:.1%}" if "probe_accuracy" in r else "—"] if has_probe else []),
            "**✓**" if r["step"] == quality.get("chosen_step") else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    text += f"\n\nPublished: step {quality.get('chosen_step')}, by `eval.select: {_rule_text(quality.get('rule'))}` — "
    text += f"{quality.get('reason')}."
    if quality.get("stopped_early"):
        text += f" The run stopped early: {quality['stopped_early']}."
    return text


def _general_eval_name(source: str | None) -> str | None:
    return "train_jobs/data/general_chat.jsonl, the project's set" if source == GENERAL_CHAT else source


def _rule_text(rule: Any) -> str:
    if isinstance(rule, dict):
        return ", ".join(f"{k}: {v}" for k, v in rule.items())
    return str(rule)


def checkpoint_answers(meta: dict[str, Any]) -> str:
    """Each prompt answered by the base and by every checkpoint still kept (greedy, as evaluated during the run)."""
    quality = meta.get("quality") or {}
    kept = set(quality.get("kept_steps") or [])
    records = [r for r in quality.get("records") or [] if r.get("answers") and (r["step"] == 0 or r["step"] in kept)]
    if len(records) < 2:
        return ""
    parts = []
    for i, prompt in enumerate(quality.get("prompts") or []):
        rows = []
        for r in records:
            label = "base" if r["step"] == 0 else f"step {r['step']}"
            if r["step"] == quality.get("chosen_step"):
                label += " (published)"
            rows.append((label, r["answers"][i] if i < len(r["answers"]) else ""))
        parts += [f"**{_cell(prompt)}**\n", _table(rows, ("checkpoint", "answer")), ""]
    return "\n".join(parts).strip()


def samples_section(samples: list[dict[str, str]] | None, base_label: str) -> str:
    if not samples:
        return ""
    parts = []
    for s in samples:
        parts.append(f"**{_cell(s['prompt'])}**\n")
        parts.append(_table([(base_label, s.get("base", "")), ("this model", s.get("tuned", ""))], ("", "answer")))
        parts.append("")
    return "\n".join(parts).strip()


def usage_snippet(repo: str | None, base: str | None, parents: list[str]) -> str:
    target = repo or "path/to/adapter"
    prompt = 'messages = [{"role": "user", "content": "What is the tallest mountain in the world ?"}]'
    generate = [
        prompt,
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
        "output = model.generate(**inputs, max_new_tokens=256)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
    ]
    if not parents:
        lines = [
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{target}")  # downloads the base model too',
            f'tokenizer = AutoTokenizer.from_pretrained("{target}")',
        ]
    else:
        lines = [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{base}", dtype="auto")',
        ]
        for parent in parents:
            lines.append(
                f'model = PeftModel.from_pretrained(model, "{parent}").merge_and_unload()  # trained on top of it'
            )
        lines += [
            f'model = PeftModel.from_pretrained(model, "{target}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{target}")',
        ]
    return "```python\n" + "\n".join([*lines, *generate]) + "\n```"


def embed_snippet(space: str | None) -> str:
    if not space:
        return ""
    host = space_host(space)
    return "\n".join(
        [
            "A chat bubble, served by the Space itself (one line, anywhere in your page):",
            "",
            "```html",
            f'<script src="{host}/lorallama/widget.js" defer></script>',
            "```",
            "",
            "or the whole chat in a frame:",
            "",
            "```html",
            f'<iframe src="{host}" width="100%" height="680" style="border:0" title="{space} chat"></iframe>',
            "```",
            "",
            "From Python, with `gradio_client`:",
            "",
            "```python",
            "from gradio_client import Client",
            "",
            f'client = Client("{space}")',
            'print(client.predict("What is the tallest mountain in the world ?", api_name="/chat"))',
            "```",
        ]
    )


def _parent_repos(recipe: Recipe, meta: dict[str, Any], namespace: str | None) -> list[str]:
    """The Hub repos of the adapters merged into the base before training (``marx`` → finetome's repo)."""
    out: list[str] = []
    current = recipe
    try:
        while (parent := load_parent(current)) is not None and len(out) < 16:
            current = parent
            older = [current.model.adapter] if current.model.adapter else []
            if current.hub.model_repo:
                older.append(with_namespace(current.hub.model_repo, namespace))
            out = older + out  # oldest first, as they are merged
    except Exception:  # no recipes here (a job, a Space): fall back to what the run recorded
        out = []
    if not out:
        out = [hub_id_of(a) for a in meta.get("merged_adapters") or []]
    if recipe.model.adapter:
        out.append(recipe.model.adapter)
    return [a for a in out if a]


def card_data(recipe: Recipe, meta: dict[str, Any], history: list[dict[str, Any]], repo: str | None, extra=None):
    """``ModelCardData`` for the run: base, licence, datasets, tags, eval results."""
    from huggingface_hub import EvalResult, ModelCardData

    base = hub_id_of(meta.get("base") or recipe.model.base)
    data = (meta.get("recipe") or {}).get("data") or {}
    replay = data.get("replay") or {}
    datasets = [s for s in (data.get("source"), replay.get("source")) if is_repo_id(s)]
    losses = eval_losses(history)
    results = []
    for name, value in losses.items():
        source = replay.get("source") if name == "chat" else data.get("source")
        results.append(
            EvalResult(
                task_type="text-generation",
                task_name="Causal language modelling (held-out loss)",
                dataset_type=source if is_repo_id(source) else "held-out",
                dataset_name=f"{source} (held out)",
                dataset_split=data.get("split", "train"),
                metric_type="loss",
                metric_name={"domain": "domain loss", "chat": "general chat loss"}.get(name, "loss"),
                metric_value=value,
            )
        )
    fields: dict[str, Any] = {
        "base_model": base if is_repo_id(base) else None,
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "license": license_for(base),
        "language": ["en"],
        "datasets": datasets or None,
        "tags": list(TAGS),
        "model_name": (repo or recipe.slug).split("/")[-1],
        "eval_results": results or None,
    }
    for key, value in (extra or {}).items():  # the template's own YAML header: explicit beats inferred
        fields[key] = list(dict.fromkeys([*fields["tags"], *value])) if key == "tags" else value
    return ModelCardData(**{k: v for k, v in fields.items() if v is not None})


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """A template's literal YAML header (other than ``{{ card_data }}``) and its body."""
    m = re.match(r"^---[ \t]*\n(.*?)\n---[ \t]*\n", text, re.S)
    if not m:
        return {}, text
    header = m.group(1)
    body = text[m.end() :]
    extra = {}
    literal = "\n".join(line for line in header.splitlines() if "{{" not in line)
    if literal.strip():
        try:
            extra = yaml.safe_load(literal) or {}
        except yaml.YAMLError as e:
            raise CardError(f"the YAML header of the card template is not valid: {e}") from e
    return extra, body


def render(card_cls, data, template: Path, context: dict[str, Any]):
    """``Card.from_template`` with the template's literal header merged into ``data``; tidy blank lines."""
    _, body = split_front_matter(template.read_text(encoding="utf-8"))
    card = card_cls.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body, **context)
    text = str(card)
    head, sep, rest = text.partition("\n---\n")
    rest = re.sub(r"\n{3,}", "\n\n", rest).strip() + "\n"
    return card_cls(head + sep + "\n" + rest)


def model_card(
    recipe: Recipe,
    meta: dict[str, Any],
    *,
    history: list[dict[str, Any]] | None = None,
    samples: list[dict[str, str]] | None = None,
    folder: Path | None = None,
    namespace: str | None = None,
    template: Path | None = None,
    root: Path | None = None,
) -> str:
    """The model card of a run, as README.md text.

    ``folder`` (an adapter folder) supplies loss.json and samples.json when ``history``/``samples`` are not given.
    ``namespace`` replaces the namespace of the recipe's repos (``HF_NAMESPACE``); the template is
    ``model_cards/<slug>.md`` when one exists (in ``root``, the current folder or the checkout), else the package's.
    """
    from huggingface_hub import ModelCard

    if folder is not None:
        folder = Path(folder)
        if history is None and (folder / "loss.json").is_file():
            history = json.loads((folder / "loss.json").read_text())
        if samples is None and (folder / SAMPLES_FILE).is_file():
            samples = read_samples((folder / SAMPLES_FILE).read_bytes())
    history = history or []
    template = Path(template) if template else find_template(MODEL_CARDS, recipe.slug, root) or DEFAULT_MODEL_TEMPLATE
    extra, _ = split_front_matter(template.read_text(encoding="utf-8"))
    repo = with_namespace(recipe.hub.model_repo, namespace)
    space = with_namespace(recipe.hub.space, namespace)
    base = hub_id_of(meta.get("base") or recipe.model.base)
    parents = _parent_repos(recipe, meta, namespace)
    data = card_data(recipe, meta, history, repo, extra)
    losses = eval_losses(history)
    run_recipe = meta.get("recipe") or recipe.to_dict()
    base_label = "base" + (f" (`{base}`" + (" + " + ", ".join(f"`{p}`" for p in parents) if parents else "") + ")")
    context = {
        "title": repo.split("/")[-1] if repo else recipe.slug,
        "slug": recipe.slug,
        "description": recipe.description,
        "repo": repo,
        "repo_url": hub_url(repo) if repo else None,
        "space": space,
        "space_url": hub_url(space, "space") if space else None,
        "space_host": space_host(space) if space else None,
        "base": base,
        "base_is_hub": is_repo_id(base),
        "parents": parents,
        "dataset": run_recipe["data"]["source"],
        "data_format": run_recipe["data"]["format"],
        "replay": run_recipe["data"].get("replay"),
        "finished": bool(meta.get("finished")),
        "global_step": meta.get("global_step"),
        "hardware": meta.get("hardware"),
        "backend": meta.get("backend") or {},
        "train_time": _duration(meta.get("train_seconds")),
        "run_summary": run_summary(meta),
        "hyperparameters": hyperparameters(meta),
        "eval": losses,
        "eval_table": eval_table(losses, meta),
        "quality_table": quality_table(meta),
        "checkpoint_answers": checkpoint_answers(meta),
        "general_eval": _general_eval_name((run_recipe.get("eval") or {}).get("general_eval")),
        "samples": samples or [],
        "samples_section": samples_section(samples, base_label),
        "sample_tokens": SAMPLE_TOKENS,
        "data_section": data_section(meta),
        "usage": usage_snippet(repo, base, parents),
        "embed": embed_snippet(space),
        "studio": with_namespace(STUDIO_SPACE, namespace),
        "studio_url": hub_url(with_namespace(STUDIO_SPACE, namespace), "space"),
        "rerun": rerun_command(repo, recipe.job.flavor, recipe.job.timeout) if repo else None,
        "lorallama_version": __version__,
    }
    return str(render(ModelCard, data, template, context))


def adapter_card(recipe: Recipe, meta: dict[str, Any], folder: Path) -> str:
    """The README.md a training run writes into its adapter folder (``training.run.train(card=…)``)."""
    return model_card(recipe, meta, folder=folder)


def compute_samples(adapter_dir: Path, prompts=None, max_new_tokens: int = SAMPLE_TOKENS) -> list[dict[str, str]]:
    """Base vs tuned answers (greedy) to the three original prompts, from one copy of the weights."""
    from ..serving import chat

    cm = chat.load_chat_model(str(adapter_dir))
    out = []
    for prompt in prompts or COMPARISON_PROMPTS:
        with cm.base_only():
            base = chat.answer(cm, prompt, max_new_tokens=max_new_tokens)
        tuned = chat.answer(cm, prompt, max_new_tokens=max_new_tokens)
        out.append({"prompt": prompt, "base": base.strip(), "tuned": tuned.strip()})
    return out


# ---------------------------------------------------------------------------------------------------------------
# Dataset cards


def size_category(rows: int | None) -> str | None:
    if rows is None:
        return None
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M" if rows < 10_000_000 else "10M<n<100M"


def dataset_card(
    name: str,
    stats: dict[str, Any] | None,
    context: dict[str, Any] | None = None,
    root: Path | None = None,
    data_files: str | list[str] | None = None,
) -> str:
    """``datasets_cards/<name>.md`` rendered with ``DatasetCardData``: the template's header (licence, language,
    task categories, sources, pretty name) plus what the data says (size category, split sizes, data files)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    template = find_template(DATASET_CARDS, name, root)
    if template is None:
        raise CardError(f"no dataset card template {DATASET_CARDS}/{name}.md: write one (see the others for the shape)")
    extra, _ = split_front_matter(template.read_text(encoding="utf-8"))
    stats = stats or {}
    fields = dict(extra)
    if stats.get("rows") is not None:
        fields["size_categories"] = [size_category(stats["rows"])]
        fields["dataset_info"] = {
            "splits": [{"name": "train", "num_examples": stats["rows"], "num_bytes": stats.get("bytes", 0)}]
        }
    if data_files:
        fields["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}]
    data = DatasetCardData(**fields)
    ctx = {"stats": stats, "name": name, **(context or {})}
    return str(render(DatasetCard, data, template, ctx))


# ---------------------------------------------------------------------------------------------------------------
# Finding a run to render


def locate_run(target: str) -> tuple[Run, Recipe, Path | None]:
    """(run, recipe, local adapter folder or None) for a slug or an adapter folder."""
    path = Path(target)
    if path.is_dir():
        folder = path / "adapter" if (path / "adapter" / "run.json").is_file() else path
        run = load_run(folder)
        recipe = recipe_from_run(run)
        with contextlib.suppress(RecipeError):  # the checkout's recipe knows the current repo names and job settings
            recipe = load_recipe(recipe.slug) if find_recipe(recipe.slug) else recipe
        return run, recipe, folder
    recipe = load_recipe(target)
    local = adapter_dir(recipe.slug)
    if (local / "run.json").is_file():
        return load_run(local), recipe, local
    repo = with_namespace(recipe.hub.model_repo, namespace_override())
    if not repo:
        raise CardError(f"no finished run of {recipe.slug!r}: {local} is empty and the recipe names no hub.model_repo")
    run = run_from_hub(repo)
    if run is None:
        raise CardError(f"no finished run of {recipe.slug!r} in {local} or in {repo}: train it first")
    return run, recipe, None
