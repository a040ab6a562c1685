"""Before anything is spent: the plan's data checked on a sample, with the same report as ``lorallama data inspect``,
and the tokens, steps, ETA and cost per flavor of the whole run (the ``--dry-run`` table).

A Hub dataset is read with the visitor's token through huggingface_hub: its file list (a missing dataset, or a
private one the token cannot read, is refused here), then the first ``sample_rows`` rows of the split's first data
file. The rows go through the training pipeline itself (``training.data.prepare``: repairs, bad rows per reason,
filters, tokens with the recipe's chat template), so what the page shows is what the job will find. The whole
dataset's size is estimated from that file's row count and the split's bytes; a sample that is the whole split
gives exact counts. Data files the recipe ships (the demo's) are checked whole.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import hub, models
from ..errors import DataError, StudioError
from ..names import is_repo_id
from ..recipe import Recipe
from ..training import data as data_mod
from ..training import estimate
from ..training.chat_templates import training_chat_template
from ..training.readers import LOCAL_SUFFIXES, iter_rows
from .form import Plan

TOKENIZER_FILES = [
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.*",
    "config.json",
    "generation_config.json",
    "vocab*",
    "merges.txt",
    "*.model",
]


@dataclass
class Check:
    """A passed check: the report, the whole run's estimated size, and the ETA and cost table."""

    plan_key: str
    report: str
    histogram: str
    sample_rows: int
    kept: int
    rows: int
    exact: bool
    examples: int
    tokens: int
    table: str
    estimates: dict[str, estimate.Estimate] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        scope = "the whole dataset" if self.exact else f"a sample of {self.sample_rows:,} rows"
        size = "" if self.exact else f" (≈{self.rows:,} rows in all, estimated)"
        return (
            f"checked {scope}{size}: {self.kept:,} of {self.sample_rows:,} rows usable; the run trains on "
            f"≈{self.examples:,} examples, ≈{self.tokens:,} tokens"
        )


@dataclass
class _Sample:
    path: Path
    rows: int  # rows in the sample
    rows_total: int  # estimated rows of the whole split
    exact: bool


def _data_files(dataset: str, split: str) -> list[tuple[str, int]]:
    """(path, size) of the dataset's data files for ``split``, in order; refused when it is missing or unreadable."""
    from huggingface_hub import RepoFile
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    def listing():
        return list(hub.api().list_repo_tree(dataset, repo_type="dataset", recursive=True))

    try:
        entries = hub.with_retries(listing, f"listing dataset {dataset}", repo_id=dataset, repo_type="dataset")
    except hub.HubError as e:
        cause = e.__cause__
        if isinstance(cause, GatedRepoError):
            raise StudioError(
                f"dataset {dataset} is gated: accept its conditions on its page with your account, then check again"
            ) from None
        if isinstance(cause, RepositoryNotFoundError) or e.status in (401, 403, 404):
            raise StudioError(
                f"dataset {dataset} was not found, or it is private and your sign-in cannot read it: check the id "
                "(owner/name, as in its URL); for a private dataset of yours grant read-repos when signing in"
            ) from None
        raise StudioError(str(e)) from None
    files = [(e.path, e.size or 0) for e in entries if isinstance(e, RepoFile)]
    data = [(p, s) for p, s in files if Path(p).suffix.lower() in LOCAL_SUFFIXES and not p.startswith(".")]
    data = [(p, s) for p, s in data if Path(p).name.lower() not in ("readme.txt", "license.txt")]
    named = [(p, s) for p, s in data if split.lower() in Path(p).as_posix().lower()]
    chosen = sorted(named or (data if split == "train" else []))
    if not chosen:
        kinds = ", ".join(LOCAL_SUFFIXES)
        raise StudioError(
            f"dataset {dataset} holds no data file ({kinds}) for split {split!r}: check the split name, or convert "
            "the data to one of those formats"
        )
    return chosen


def _count_rows(path: Path) -> int:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return sum(1 for _ in iter_rows(str(path), progress=False))


def _hub_sample(dataset: str, split: str, rows: int, folder: Path) -> _Sample:
    """The first ``rows`` rows of the split's first data file, as a JSON Lines file in ``folder``."""
    files = _data_files(dataset, split)
    first, first_size = files[0]
    local = hub.download_files(dataset, [first], f"{first} of {dataset}", repo_type="dataset") / first
    sample = folder / "sample.jsonl"
    taken = 0
    with open(sample, "w", encoding="utf-8") as out:
        if local.suffix.lower() == ".jsonl":  # copied as is: bad lines stay bad lines
            with open(local, encoding="utf-8", errors="surrogateescape") as fh:
                for line in itertools.islice((ln for ln in fh if ln.strip()), rows):
                    out.write(line if line.endswith("\n") else line + "\n")
                    taken += 1
        else:
            try:
                for row in itertools.islice(iter_rows(str(local), progress=False), rows):
                    out.write(
                        "{not json: unreadable row}\n" if row.error else json.dumps(row.value, default=str) + "\n"
                    )
                    taken += 1
            except DataError as e:
                raise StudioError(f"dataset {dataset}: {e}") from None
    if taken == 0:
        raise StudioError(f"dataset {dataset}: {first} holds no rows: point at a dataset with data")
    in_first = taken if taken < rows else _count_rows(local)
    total_size = sum(s for _, s in files)
    exact = len(files) == 1 and taken == in_first
    estimated = in_first if len(files) == 1 else math.ceil(in_first * total_size / max(first_size, 1))
    return _Sample(sample, taken, estimated, exact)


def _tokenizer(recipe: Recipe):
    """The base's tokenizer, downloaded with the visitor's token when it is a Hub model."""
    base = models.base_chain(recipe).base
    if is_repo_id(base) and not Path(base).exists():
        base = str(hub.download_files(base, TOKENIZER_FILES, f"the tokenizer of {base}"))
    tokenizer = models.load_tokenizer(base, recipe.model.chat_template)
    template = training_chat_template(tokenizer) if recipe.trainer.assistant_only_loss else None
    return tokenizer, template


def check(plan: Plan, token: str, sample_rows: int = 200) -> Check:
    """Check ``plan``'s data as the run will read it, with ``token`` (the visitor's) for every Hub read; a
    ``StudioError`` when nothing usable is left (or the data cannot be read), so no job starts on it."""
    recipe = plan.recipe
    spec = recipe.data
    notes: list[str] = []
    with hub.acting_for(token), tempfile.TemporaryDirectory() as tmp:
        probe = copy.deepcopy(recipe)
        source = data_mod.source_path(recipe, spec.source)
        if Path(source).exists():
            sample = _Sample(Path(source), 0, 0, True)
        elif is_repo_id(spec.source):
            sample = _hub_sample(spec.source, spec.split, sample_rows, Path(tmp))
        else:
            raise StudioError(f"data.source {spec.source!r} is neither a Hub dataset id nor a file the recipe ships")
        probe.data.source = str(sample.path)
        probe.data.shard, probe.data.eval_rows, probe.data.max_rows = None, 0, None
        if probe.data.judge is not None:
            probe.data.judge = None
            notes.append("the quality judge (data.judge) runs in the job: its drops are not counted here")
        if probe.data.replay is not None:
            probe.data.replay = None
            notes.append(f"replay rows come from {spec.replay.source}; the job mixes them in")
        tokenizer, template = _tokenizer(recipe)
        try:
            prepared = data_mod.prepare(probe, tokenizer, template, strict=False)
        except DataError as e:
            raise StudioError(f"your data cannot train this recipe: {e}") from None
    report = prepared.report
    lengths = data_mod.example_lengths(prepared.train)
    read = report.total
    rows = read if sample.exact else sample.rows_total
    share = rows / max(read, 1)
    examples = len(lengths) * share
    tokens = sum(lengths) * share
    if spec.shard:
        _, n = spec.shard_index()
        examples, tokens = examples / n, tokens / n
    if spec.max_rows is not None and spec.format == "chat" and examples > spec.max_rows:
        tokens, examples = tokens * spec.max_rows / examples, spec.max_rows
    if spec.eval_rows:
        if examples <= spec.eval_rows:
            raise StudioError(
                f"data.eval_rows = {spec.eval_rows} would hold out every usable row (≈{examples:,.0f}): use a bigger "
                "dataset, or a recipe that holds fewer rows out"
            )
        tokens, examples = tokens * (1 - spec.eval_rows / examples), examples - spec.eval_rows
    examples, tokens = max(1, round(examples)), max(1, round(tokens))
    table_data = estimate.load_table()
    flavors = [plan.flavor, *(f for f in estimate.DEFAULT_FLAVORS if f != plan.flavor)]
    estimates = {f: estimate.estimate(recipe, examples, tokens, f, plan.timeout, table_data) for f in flavors}
    table = estimate.format_table(recipe, examples, tokens, flavors, plan.timeout, table_data)
    return Check(
        plan_key=plan.key,
        report=report.format(),
        histogram=data_mod.length_histogram(lengths, None, "tokens per training example"),
        sample_rows=read,
        kept=report.kept,
        rows=rows,
        exact=sample.exact,
        examples=examples,
        tokens=tokens,
        table=table,
        estimates=estimates,
        notes=notes,
    )
