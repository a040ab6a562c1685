"""Datasets the project publishes: validated data plus a card from ``datasets_cards/<name>.md``, in one commit.

    lorallama data publish demo-chat --dry-run            # the demo sample (train_jobs/data/demo_chat.jsonl)
    lorallama data publish demo-chat                      # push it to lorallama/demo-chat (HF_NAMESPACE applies)
    lorallama data publish marx-corpus marx.jsonl         # the Marx corpus, cleaned as the marx recipe cleans it
    lorallama data publish chat-feedback feedback.jsonl   # feedback rows the chat Spaces collected
    lorallama data publish demo-chat --output out/        # write data, stats.json and README.md locally

Beside the data each repo gets ``stats.json`` (the numbers the card shows), so ``lorallama sync`` can re-render the
card from its template later without downloading the data again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import feedback_schema, hub
from ..errors import PublishError, RecipeError
from ..names import hub_url, with_namespace
from ..paths import find_project_file
from ..recipe import DataSpec, load_recipe
from ..training import data as data_mod
from . import cards

STATS_FILE = "stats.json"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    repo: str
    """Default repo id; ``HF_NAMESPACE`` replaces its namespace."""
    kind: str
    """chat (ShareGPT/OpenAI conversations), text (raw documents) or feedback (rows logged by the chat Spaces)."""
    summary: str
    default_file: str | None = None
    """Relative to the checkout; None means the file must be given."""
    recipe: str | None = None
    """The recipe whose data settings (text field, boilerplate patterns) the processing follows."""
    data_path: str = "data/train.jsonl"
    data_files: str = "data/train.jsonl"
    """What the card's ``configs`` point the dataset viewer and ``load_dataset`` at."""


DATASETS = {
    "demo-chat": DatasetSpec(
        "demo-chat",
        "lorallama/demo-chat",
        "chat",
        "the demo sample: 335 conversations in Captain Lora's voice (train_jobs/data/demo_chat.jsonl)",
        default_file="train_jobs/data/demo_chat.jsonl",
    ),
    "marx-corpus": DatasetSpec(
        "marx-corpus",
        "lorallama/marx-corpus",
        "text",
        "Marx's works as the marx recipe trains on them: cleaned, boilerplate cut, deduplicated (give the raw file)",
        recipe="marx",
    ),
    "chat-feedback": DatasetSpec(
        "chat-feedback",
        "lorallama/chat-feedback",
        "feedback",
        "likes, dislikes and edited answers from the chat Spaces (give a JSONL export)",
        data_path="data/feedback.jsonl",
        data_files="data/*.jsonl",  # the Spaces append their own files beside it
    ),
}


def repo_for(name: str, namespace: str | None = None) -> str:
    return with_namespace(DATASETS[name].repo, namespace)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def prepare(name: str, file: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The files for the dataset repo (path → bytes) and the numbers its card shows."""
    spec = DATASETS[name]
    rows = data_mod.load_rows(str(file))
    report = data_mod.DataReport(source=file.name, total=len(rows))
    stats: dict[str, Any] = {"source_file": file.name, "rows_read": len(rows)}
    if spec.kind == "chat":
        kept = data_mod.validate_chat(rows, DataSpec(source=str(file)), report, strict=False)
        out = [k["row"] for k in kept]
        turns = [len(k["messages"]) for k in kept]
        stats.update(turns=sum(turns), max_turns=max(turns, default=0))
    elif spec.kind == "text":
        out = _clean_documents(rows, spec, report)
        stats.update(
            characters=sum(len(r["text"]) for r in out),
            words=sum(len(r["text"].split()) for r in out),
            trim_patterns=_recipe_data(spec).trim,
        )
    else:  # feedback rows: kept only when they are rows the Spaces write (feedback_schema)
        out = []
        for r in rows:
            problem = r.error or feedback_schema.row_problem(r.value)
            if problem is None:
                out.append(r.value)
            else:
                report.drop(r.index, problem)
        stats.update(feedback_schema.counts(out))
    if not out:
        raise PublishError(f"{file} holds no usable rows for {name} ({spec.kind}): {report.format()}")
    body = _jsonl(out)
    stats.update(
        rows=len(out),
        dropped=dict(report.dropped),
        files=[spec.data_path],
        bytes=len(body),
    )
    return {spec.data_path: body}, stats


def _recipe_data(spec: DatasetSpec):
    if spec.recipe is None:
        return DataSpec(source="", format="text")
    try:
        return load_recipe(spec.recipe).data
    except RecipeError:
        return DataSpec(source="", format="text")


def _clean_documents(rows, spec: DatasetSpec, report) -> list[dict[str, Any]]:
    """The text the recipe trains on: each document cleaned, empty ones and duplicates dropped; other columns kept."""
    settings = _recipe_data(spec)
    field = settings.text_field or "text"
    out, seen = [], set()
    for row in rows:
        value = row.value
        if row.error is not None:
            report.drop(row.index, row.error)
            continue
        if not isinstance(value, dict) or not isinstance(value.get(field), str):
            report.drop(row.index, "missing_field")
            continue
        text = data_mod.clean_text(value[field], settings.trim)
        if not text:
            report.drop(row.index, "empty_text")
            continue
        if text in seen:
            report.drop(row.index, "duplicate")
            continue
        seen.add(text)
        extra = {k: v for k, v in value.items() if k != field and isinstance(v, str | int | float | bool)}
        out.append({"text": text, **extra})
    return out


def render_card(name: str, stats: dict[str, Any] | None, namespace: str | None = None, root=None) -> str:
    spec = DATASETS[name]
    repo = repo_for(name, namespace)
    context = {
        "repo": repo,
        "repo_url": hub_url(repo, "dataset"),
        "kind": spec.kind,
        "data_path": spec.data_path,
        "summary": spec.summary,
    }
    return cards.dataset_card(name, stats, context, root=root, data_files=spec.data_files)


def publish(
    name: str,
    file: Path | None = None,
    *,
    repo: str | None = None,
    namespace: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    output: Path | None = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Validate and push one dataset with its card. Returns what was (or would be) done."""
    if name not in DATASETS:
        raise PublishError(f"unknown dataset {name!r}: publish one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if file is None:
        if spec.default_file is None:
            raise PublishError(f"{name} needs a local file: lorallama data publish {name} PATH ({spec.summary})")
        file = find_project_file(spec.default_file, root) or Path(spec.default_file)
    file = Path(file)
    if not file.exists():
        raise PublishError(f"{file} does not exist: pass the file to publish")
    files, stats = prepare(name, file)
    repo = repo or repo_for(name, namespace)
    card = render_card(name, stats, namespace, root)
    files["README.md"] = card.encode("utf-8")
    files[STATS_FILE] = json.dumps(stats, indent=1, ensure_ascii=False).encode("utf-8")
    result = {"repo": repo, "files": {p: len(b) for p, b in files.items()}, "stats": stats, "commit": None}
    if output is not None:
        for path, data in files.items():
            target = Path(output) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    if not dry_run:
        hub.ensure_repo(repo, "dataset", private=private)
        result["commit"] = hub.upload_files(
            repo, files, f"Publish {name}: {stats['rows']} rows and card (lorallama data publish)", "dataset"
        )
    return result
