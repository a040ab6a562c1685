"""Keep the Hub in step with this repository: every Space, model card and dataset card comes from here.

    lorallama sync                            # all Spaces, model cards and dataset cards
    lorallama sync --dry-run                  # print the plan, write nothing
    lorallama sync --only spaces              # or: --only cards
    lorallama sync --changed-since HEAD~1     # only what changed since a commit (what the sync workflow runs)
    HF_NAMESPACE=you lorallama sync           # into your own namespace (a fork)

Spaces: each ``spaces/<slug>/`` goes to its Space (the recipe's ``hub.space``, else ``<namespace>/<slug>``) with the
part of the package its app imports vendored in as ``lorallama/`` (serving and the ground modules for a chat Space,
never training, publishing or the command line), so a duplicated Space runs unchanged. A Space whose app launches
training jobs (``spaces/studio``: its app reaches ``training/jobs.py``) also gets what a job bundle takes, laid out
as in the checkout: ``train_jobs/`` (the job and watcher scripts, the recipes and their data), the throughput table
and the lorallama wheel in ``dist/``, built here the same way each time.
The repo is created (sdk gradio) when missing, files removed here are deleted there, and unchanged files are skipped
by comparing git blob ids (sha256 for LFS files) with the Space's file tree. One commit per Space, none when nothing
changed.

Cards: a model card is rendered from ``model_cards/<slug>.md`` and the finished run in the model repo (run.json,
loss.json, samples.json) and pushed as README.md (plus loss.png when the repo lacks it): weights are never touched.
A dataset card is rendered from ``datasets_cards/<name>.md`` and the repo's ``stats.json``.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import hub
from ..errors import SyncError
from ..names import namespace_override, with_namespace
from ..paths import PACKAGE_DIR
from ..plots import loss_png
from ..recipe import load_recipe
from . import cards
from .vendoring import space_package_files

log = logging.getLogger("lorallama")

JUNK_NAMES = {"__pycache__", ".DS_Store", ".git", ".venv", "node_modules", ".ipynb_checkpoints", ".pytest_cache"}
JUNK_SUFFIXES = (".pyc", ".pyo", ".swp")
KEEP_REMOTE = {".gitattributes"}  # the Hub writes it when it creates a repo
SPACE_SDKS = ("gradio", "docker", "static", "streamlit")
TEXT_SUFFIXES = {".md", ".py", ".txt", ".yaml", ".yml", ".json", ".toml", ".html", ".css", ".js"}
ALL = "all"
STUDIO = "studio"  # spaces/studio: the Space where visitors fine-tune their own model (spaces link to it)


# ---------------------------------------------------------------------------------------------------------------
# Where things are


def project_root(start: Path | None = None) -> Path:
    """The git checkout around ``start`` (default: the current folder), or ``start`` itself."""
    start = Path(start or Path.cwd())
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True, timeout=10, check=True
        )
        return Path(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return start


def _recipes(root: Path) -> dict:
    """The recipes of ``root``; a recipe naming another finds it beside itself (``recipe.load_parent``)."""
    out = {}
    for path in sorted((root / "train_jobs").glob("*.yaml")):
        out[path.stem] = load_recipe(str(path))
    return out


def default_namespace(recipes: dict, namespace: str | None) -> str:
    """HF_NAMESPACE, else the namespace most recipes publish under, else ``lorallama``."""
    if namespace:
        return namespace
    seen = collections.Counter(
        repo.split("/")[0] for r in recipes.values() for repo in (r.hub.space, r.hub.model_repo) if repo
    )
    return seen.most_common(1)[0][0] if seen else "lorallama"


def repo_mapping(recipes: dict, namespace: str | None) -> dict[str, str]:
    """Project repo id → the id it has in ``namespace`` (empty without an override)."""
    if not namespace:
        return {}
    from .datasets import DATASETS

    ids = [r for rec in recipes.values() for r in (rec.hub.model_repo, rec.hub.space, rec.hub.dataset_repo) if r]
    ids += [d.repo for d in DATASETS.values()]
    ids.append(f"{default_namespace(recipes, None)}/{STUDIO}")  # every page links to the studio Space
    return {i: with_namespace(i, namespace) for i in ids if with_namespace(i, namespace) != i}


def space_repo(slug: str, recipes: dict, namespace: str | None) -> str:
    recipe = recipes.get(slug)
    if recipe is not None and recipe.hub.space:
        return with_namespace(recipe.hub.space, namespace)
    return f"{default_namespace(recipes, namespace)}/{slug}"


# ---------------------------------------------------------------------------------------------------------------
# What a Space receives


def _walk(folder: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in JUNK_NAMES for part in rel.parts) or path.suffix in JUNK_SUFFIXES or not path.is_file():
            continue
        yield rel.as_posix(), path


def package_dir(root: Path) -> Path:
    """The package to vendor: the checkout's ``src/lorallama``, else the one running."""
    local = root / "src" / "lorallama"
    return local if (local / "__init__.py").is_file() else PACKAGE_DIR


def _rewrite_ids(text: str, mapping: dict[str, str]) -> str:
    for old, new in mapping.items():
        # Whole ids only (not lorallama/demo inside lorallama/demo-chat); URLs and sentence ends count as ends.
        text = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w-]|\.\w)", new, text)
    return text


def _front_matter(text: str) -> tuple[str, str] | None:
    m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    return (m.group(1), text[m.end() :]) if m else None


def check_space_readme(slug: str, text: str, files: dict[str, bytes]) -> dict:
    """The Space's README YAML: a mapping with a known sdk, and the app file it names."""
    parts = _front_matter(text)
    if parts is None:
        raise SyncError(f"spaces/{slug}/README.md has no YAML header (---): the Hub needs one with sdk: gradio")
    try:
        meta = yaml.safe_load(parts[0])
    except yaml.YAMLError as e:
        raise SyncError(f"spaces/{slug}/README.md: the YAML header is not valid: {e}") from e
    if not isinstance(meta, dict):
        raise SyncError(f"spaces/{slug}/README.md: the YAML header must be a mapping (key: value lines)")
    if meta.get("sdk") not in SPACE_SDKS:
        raise SyncError(f"spaces/{slug}/README.md: sdk is {meta.get('sdk')!r}; use one of {', '.join(SPACE_SDKS)}")
    if meta["sdk"] in ("gradio", "streamlit") and (app := meta.get("app_file", "app.py")) not in files:
        raise SyncError(f"spaces/{slug}/README.md names app_file {app!r}, which is not in spaces/{slug}/")
    return meta


def space_files(root: Path, slug: str, recipes: dict | None = None, namespace: str | None = None) -> dict[str, bytes]:
    """Everything the Space ``slug`` receives (path → bytes): its folder, and of the package only what its Python
    files import (``vendoring.space_package_files``): the serving layer and the ground modules under it."""
    folder = root / "spaces" / slug
    if not folder.is_dir():
        raise SyncError(f"no Space folder spaces/{slug}/")
    if recipes is None:
        recipes = _recipes(root)
    mapping = repo_mapping(recipes, namespace)
    files = {rel: path.read_bytes() for rel, path in _walk(folder)}
    for reserved in ("lorallama/",):
        if any(p.startswith(reserved) for p in files):
            raise SyncError(f"spaces/{slug}/{reserved} would be overwritten by the vendored copy: rename it")
    if "README.md" not in files:
        raise SyncError(f"spaces/{slug}/ has no README.md: a Space needs one with a YAML header (sdk: gradio, ...)")
    if mapping:  # a fork's Space points at the fork's model, dataset and Space repos, in its README and code
        for rel in [r for r in files if Path(r).suffix in TEXT_SUFFIXES]:
            files[rel] = _rewrite_ids(files[rel].decode("utf-8"), mapping).encode("utf-8")
    check_space_readme(slug, files["README.md"].decode("utf-8"), files)
    sources = [files[rel].decode("utf-8") for rel in files if rel.endswith(".py")]
    vendored = space_package_files(package_dir(root), sources)
    for rel, path in vendored.items():
        files[rel] = path.read_bytes()
    if "lorallama/training/jobs.py" in vendored:
        for rel, data in job_files(root, mapping).items():
            if rel in files:
                raise SyncError(f"spaces/{slug}/{rel} would be overwritten by the job files sync adds: rename it")
            files[rel] = data
    return files


def job_files(root: Path, mapping: dict[str, str] | None = None) -> dict[str, bytes]:
    """What a Space that launches jobs needs beside its vendored package, at the checkout's paths: the job and
    watcher scripts and every recipe with its data (``train_jobs/``; a fork's repo ids rewritten), the throughput
    table the estimates read, and the lorallama wheel (``dist/``, built reproducibly)."""
    import tempfile

    from ..names import wheel_name
    from ..paths import JOB_SCRIPTS, RECIPES, WHEELS
    from ..training import estimate, jobs

    files: dict[str, bytes] = {}
    recipes = root / RECIPES
    for name in JOB_SCRIPTS:
        if not (recipes / name).is_file():
            raise SyncError(f"{RECIPES}/{name} is missing: a Space that launches jobs uploads it into each model repo")
        files[f"{RECIPES}/{name}"] = (recipes / name).read_bytes()
    for rel, path in _walk(recipes):
        if rel.endswith((".yaml", ".yml")) or rel.startswith("data/"):
            data = path.read_bytes()
            if mapping and rel.endswith((".yaml", ".yml")):
                data = _rewrite_ids(data.decode("utf-8"), mapping).encode("utf-8")
            files[f"{RECIPES}/{rel}"] = data
    table = root / estimate.TABLE
    if table.is_file():
        files[estimate.TABLE] = table.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        files[f"{WHEELS}/{wheel_name()}"] = jobs.build_wheel(Path(tmp)).read_bytes()
    return files


def prune_preload(text: str, present) -> tuple[str, list[str]]:
    """The Space README without the ``preload_from_hub`` entries whose repo ``present(repo_id)`` says is not on the
    Hub (a fork before its first training run): the build would fail on them. Returns (text, the entries dropped).
    An entry is ``repo_id`` or ``repo_id file,file revision``; the rest of the header is left as written."""
    parts = _front_matter(text)
    if parts is None:
        return text, []
    kept: list[str] = []
    dropped: list[str] = []
    inside = False
    for line in parts[0].split("\n"):
        if re.match(r"^preload_from_hub:\s*$", line):
            inside = True
        elif inside and (item := re.match(r"^\s+-\s+(\S+)", line)):
            repo = item.group(1).strip("'\"")
            if not present(repo):
                dropped.append(repo)
                continue
        elif inside and line.strip() and not line.startswith((" ", "\t")):
            inside = False
        kept.append(line)
    if not dropped:
        return text, []
    header = "\n".join(kept)
    header = re.sub(r"^preload_from_hub:\s*\n(?![ \t]+-)", "", header + "\n", flags=re.M).rstrip("\n")
    return f"---\n{header}\n---\n{parts[1]}", dropped


def model_repo_present(repo_id: str) -> bool:
    """Whether the model repo ``repo_id`` is on the Hub (a preload entry of a fork may name one not made yet)."""
    return remote_files(repo_id, "model") is not None


def stage_space(root: Path, slug: str, dest: Path, namespace: str | None = None) -> Path:
    """Write exactly what ``sync`` uploads for ``spaces/<slug>`` into ``dest`` (to run or inspect it locally)."""
    for rel, data in space_files(root, slug, namespace=namespace).items():
        target = Path(dest) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return Path(dest)


# ---------------------------------------------------------------------------------------------------------------
# Plans: what differs between here and there


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def same_content(data: bytes, remote) -> bool:
    """A local file against a ``RepoFile`` of ``list_repo_tree``: sizes, then git blob id (sha256 for LFS)."""
    if remote.size != len(data):
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == hashlib.sha256(data).hexdigest()
    return remote.blob_id == git_blob_id(data)


def remote_files(repo_id: str, repo_type: str) -> dict | None:
    """path → RepoFile at the head of main, or None when the repo does not exist."""
    from huggingface_hub import RepoFile
    from huggingface_hub.errors import RepositoryNotFoundError

    def listing():
        try:
            return list(hub.api().list_repo_tree(repo_id, repo_type=repo_type, recursive=True))
        except RepositoryNotFoundError:
            return None

    entries = hub.with_retries(listing, f"listing {repo_type} {repo_id}", repo_id=repo_id, repo_type=repo_type)
    return None if entries is None else {e.path: e for e in entries if isinstance(e, RepoFile)}


@dataclass
class Target:
    kind: str  # space | model card | dataset card
    name: str
    repo_id: str
    repo_type: str
    files: dict[str, bytes] = field(default_factory=dict)
    mirror: bool = False  # delete remote files that are not in `files`
    private: bool = False  # when the repo has to be created
    skip: str | None = None
    error: str | None = None


@dataclass
class Plan:
    exists: bool
    add: list[str]
    update: list[str]
    delete: list[str]
    unchanged: int

    @property
    def changed(self) -> bool:
        return bool(self.add or self.update or self.delete) or not self.exists


def plan(target: Target) -> Plan:
    remote = remote_files(target.repo_id, target.repo_type)
    if remote is None:
        return Plan(False, sorted(target.files), [], [], 0)
    add = sorted(p for p in target.files if p not in remote)
    update = sorted(p for p in target.files if p in remote and not same_content(target.files[p], remote[p]))
    delete = (
        sorted(p for p in remote if p not in target.files and p not in KEEP_REMOTE and not p.startswith(".git/"))
        if target.mirror
        else []
    )
    return Plan(True, add, update, delete, len(target.files) - len(add) - len(update))


def apply(target: Target, p: Plan, message: str) -> str | None:
    """Create the repo if needed and make one commit of the plan; None when there was nothing to commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    if not p.exists:
        hub.ensure_repo(
            target.repo_id,
            target.repo_type,
            private=target.private,
            space_sdk="gradio" if target.repo_type == "space" else None,
        )
    ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=target.files[f]) for f in [*p.add, *p.update]]
    ops += [CommitOperationDelete(path_in_repo=f) for f in p.delete]
    if not ops:
        return None
    info = hub.api().create_commit(target.repo_id, operations=ops, commit_message=message, repo_type=target.repo_type)
    return info.oid


def sync_target(target: Target, message: str) -> tuple[Plan, str | None]:
    """Plan and apply, re-planning on each retry: a commit whose answer was lost is found done, not made twice.

    Returns the first plan (what differed before this sync) and the commit, if one was made.
    """
    first: list[Plan] = []

    def once():
        p = plan(target)
        first.append(p)
        return apply(target, p, message) if p.changed else None

    commit = hub.with_retries(once, f"syncing {target.kind} {target.repo_id}")
    return first[0], commit


def describe(p: Plan) -> str:
    if not p.exists:
        return f"create repo; add {len(p.add)} files"
    if not (p.add or p.update or p.delete):
        return f"{p.unchanged} file(s) already up to date"

    def some(paths: list[str]) -> str:
        return ", ".join(paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")

    changes = (("add", p.add), ("update", p.update), ("delete", p.delete))
    return "; ".join(f"{verb} {some(paths)}" for verb, paths in changes if paths) + f"; {p.unchanged} unchanged"


# ---------------------------------------------------------------------------------------------------------------
# What changed since a commit


def changed_paths(root: Path, ref: str | None) -> set[str] | None:
    """Paths changed (added, modified, deleted, untracked) since ``ref``; None means everything (no usable ref)."""
    if not ref or not ref.strip() or set(ref.strip()) == {"0"}:
        return None  # a new branch's push has no "before": sync everything
    ref = ref.strip()

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60, check=True).stdout

    try:
        git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except (OSError, subprocess.SubprocessError):
        print(f"sync: {ref} is not a commit here (shallow clone or force push?): syncing everything", file=sys.stderr)
        return None
    diff = git("diff", "--name-only", "--no-renames", ref, "--")
    untracked = git("ls-files", "--others", "--exclude-standard")
    return {line.strip() for line in (diff + untracked).splitlines() if line.strip()}


@dataclass
class Selection:
    spaces: set[str] | str = ALL
    models: set[str] | str = ALL
    datasets: set[str] | str = ALL

    @classmethod
    def from_paths(cls, paths: set[str] | None) -> Selection:
        if paths is None:
            return cls()
        sel = cls(set(), set(), set())
        for path in paths:
            parts = path.split("/")
            if parts[0] == "src" or path in ("pyproject.toml",):
                return cls()  # the vendored package and the card renderer changed: everything
            if parts[0] == "spaces":
                sel.add("spaces", parts[1] if len(parts) > 2 else ALL)
            elif parts[0] == "train_jobs" and path.endswith((".yaml", ".yml")):
                sel.add("spaces", ALL)  # a recipe names the repos a Space's files are rewritten to
                sel.add("models", ALL)  # and the repos other cards link to
            elif parts[0] == "train_jobs" or path == "bench/throughput_table.json":
                sel.add("spaces", STUDIO)  # the job files the studio Space carries
            elif parts[0] == cards.MODEL_CARDS:
                sel.add("models", Path(parts[1]).stem if len(parts) == 2 and parts[1].endswith(".md") else ALL)
            elif parts[0] == cards.DATASET_CARDS:
                sel.add("datasets", Path(parts[1]).stem if len(parts) == 2 and parts[1].endswith(".md") else ALL)
        return sel

    def add(self, kind: str, name: str) -> None:
        current = getattr(self, kind)
        if name == ALL or current == ALL:
            setattr(self, kind, ALL)
        else:
            current.add(name)

    def wants(self, kind: str, name: str) -> bool:
        chosen = getattr(self, kind)
        return chosen == ALL or name in chosen


# ---------------------------------------------------------------------------------------------------------------
# Targets


def space_targets(root: Path, recipes: dict, namespace: str | None, sel: Selection) -> list[Target]:
    out = []
    base = root / "spaces"
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and p.name not in JUNK_NAMES) if base.is_dir() else []:
        if not sel.wants("spaces", folder.name):
            continue
        recipe = recipes.get(folder.name)
        target = Target(
            "space",
            folder.name,
            space_repo(folder.name, recipes, namespace),
            "space",
            mirror=True,
            private=bool(recipe and recipe.hub.private),
        )
        try:
            target.files = space_files(root, folder.name, recipes, namespace)
            readme, dropped = prune_preload(target.files["README.md"].decode("utf-8"), model_repo_present)
            if dropped:
                target.files["README.md"] = readme.encode("utf-8")
                print(
                    f"sync: spaces/{folder.name}: preload_from_hub leaves out {', '.join(dropped)}, not on the Hub yet "
                    "(the Space starts with the base model and says how to train the adapter)"
                )
        except SyncError as e:
            target.error = str(e)
        except hub.HubError as e:
            target.error = f"cannot check the preload_from_hub repos: {e}"
        out.append(target)
    return out


def model_card_targets(root: Path, recipes: dict, namespace: str | None, sel: Selection) -> list[Target]:
    out = []
    for slug, recipe in recipes.items():
        template = root / cards.MODEL_CARDS / f"{slug}.md"
        if not template.is_file() or not recipe.hub.model_repo or not sel.wants("models", slug):
            continue
        repo = with_namespace(recipe.hub.model_repo, namespace)
        target = Target("model card", slug, repo, "model")
        try:
            run = cards.run_from_hub(repo)
        except Exception as e:  # a Hub that answers badly for one repo should not stop the rest
            target.error = f"cannot read the run in {repo}: {type(e).__name__}: {e}"
            out.append(target)
            continue
        if run is None:
            target.skip = f"no finished run in {repo} yet (train it: lorallama jobs run {slug} --until-done)"
            out.append(target)
            continue
        try:
            text = cards.model_card(
                recipe, run.meta, history=run.history, samples=run.samples, namespace=namespace, template=template
            )
        except Exception as e:
            target.error = f"cannot render model_cards/{slug}.md: {type(e).__name__}: {e}"
            out.append(target)
            continue
        target.files = {"README.md": text.encode("utf-8")}
        if run.loss_png is None and run.history:
            target.files["loss.png"] = loss_png(run.history, f"{slug}: training loss")
        out.append(target)
    return out


def dataset_card_targets(root: Path, namespace: str | None, sel: Selection) -> list[Target]:
    import json

    from .datasets import DATASETS, STATS_FILE, render_card, repo_for

    out = []
    for template in sorted((root / cards.DATASET_CARDS).glob("*.md")):
        name = template.stem
        if not sel.wants("datasets", name):
            continue
        if name not in DATASETS:
            print(f"sync: {template.relative_to(root)} names no known dataset ({', '.join(DATASETS)}): skipped")
            continue
        repo = repo_for(name, namespace)
        target = Target("dataset card", name, repo, "dataset")
        if remote_files(repo, "dataset") is None:
            target.skip = f"not published yet (lorallama data publish {name})"
            out.append(target)
            continue
        raw = hub.read_file(repo, STATS_FILE, repo_type="dataset")
        try:
            text = render_card(name, json.loads(raw) if raw else None, namespace, root)
        except Exception as e:
            target.error = f"cannot render {template.relative_to(root)}: {type(e).__name__}: {e}"
            out.append(target)
            continue
        target.files = {"README.md": text.encode("utf-8")}
        out.append(target)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class Outcome:
    target: Target
    status: str  # created | updated | unchanged | skipped | failed | planned
    detail: str
    commit: str | None = None


def run_sync(
    root: Path | None = None,
    *,
    only: str | None = None,
    changed_since: str | None = None,
    dry_run: bool = False,
    namespace: str | None = None,
    out=None,
) -> list[Outcome]:
    """Sync Spaces and cards from ``root``; prints the plan and a summary to ``out``. Returns one outcome per target."""
    out = out or sys.stdout
    root = project_root(root)
    namespace = namespace if namespace is not None else namespace_override()
    changed = changed_paths(root, changed_since)
    sel = Selection.from_paths(changed)
    head = _git_head(root)
    recipes = _recipes(root)
    ns = default_namespace(recipes, namespace)
    scope = "everything" if changed is None else f"{len(changed)} changed path(s) since {changed_since[:12]}"
    print(f"lorallama sync from {root} (namespace {ns}; {scope}){' — dry run' if dry_run else ''}", file=out)
    targets: list[Target] = []
    if only in (None, "spaces"):
        targets += space_targets(root, recipes, namespace, sel)
        if sel.spaces != ALL:
            for gone in sorted(s for s in sel.spaces if not (root / "spaces" / s).is_dir()):
                print(
                    f"  note: spaces/{gone}/ is gone; its Space {space_repo(gone, recipes, namespace)} is left as it "
                    "is (delete it on the Hub if that is what you mean)",
                    file=out,
                )
    if only in (None, "cards"):
        targets += model_card_targets(root, recipes, namespace, sel)
        targets += dataset_card_targets(root, namespace, sel)
    outcomes = []
    for target in targets:
        label = f"  {target.kind:<12} {target.repo_id:<44}"
        if target.error:
            outcomes.append(Outcome(target, "failed", target.error))
        elif target.skip:
            outcomes.append(Outcome(target, "skipped", target.skip))
        else:
            try:
                if dry_run:
                    p = plan(target)
                    status = "planned" if p.changed else "unchanged"
                    outcomes.append(Outcome(target, status, describe(p)))
                else:
                    what = "Sync" if target.kind == "space" else "Update"
                    source = f"spaces/{target.name}" if target.kind == "space" else f"the {target.kind} template"
                    message = f"{what} {source} from lorallama" + (f" {head[:12]}" if head else "")
                    p, commit = sync_target(target, message)
                    status = "unchanged" if not p.changed else ("created" if not p.exists else "updated")
                    outcomes.append(Outcome(target, status, describe(p), commit))
            except Exception as e:  # one failing repo does not stop the others; the exit code says it
                outcomes.append(Outcome(target, "failed", f"{type(e).__name__}: {e}"))
        o = outcomes[-1]
        print(f"{label} {o.status}: {o.detail}" + (f" ({o.commit[:12]})" if o.commit else ""), file=out)
    print(summary(outcomes, dry_run), file=out)
    return outcomes


def summary(outcomes: list[Outcome], dry_run: bool = False) -> str:
    if not outcomes:
        return "summary: nothing to sync"
    groups: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for o in outcomes:
        groups[o.target.kind + "s"][o.status] += 1
    parts = [f"{kind} " + ", ".join(f"{n} {s}" for s, n in sorted(c.items())) for kind, c in groups.items()]
    tail = " (dry run: nothing written)" if dry_run else ""
    return "summary: " + "; ".join(parts) + tail


def _git_head(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
