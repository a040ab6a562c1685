"""A local HTTP double of the Hugging Face Hub, for hermetic tests (stdlib only).

It speaks the subset of the Hub's HTTP API that ``huggingface_hub`` 1.33 and ``transformers`` use: repos (model,
dataset, space) with commits, branches, tags and files kept on disk; preupload/commit; tree, paths-info, refs,
commits; ``resolve`` downloads (HEAD + GET with ranges); whoami; Space variables/secrets; and Jobs, which run as
local subprocesses. Faults (5xx, latency, dropped connections, killed jobs) are injected from Python.

    hub = HubDouble(root="/tmp/store").start()      # then set HF_ENDPOINT=hub.url *before* importing huggingface_hub
    hub.seed_repo("someone/data", {"train.jsonl": b"..."}, repo_type="dataset")
    hub.fail_next(1, 503, path=r"/commit/")         # the next commit POST answers 503
    hub.stop()

No Xet, no LFS: preupload answers ``uploadMode: "regular"`` for every file, so the client sends contents base64 in the
NDJSON commit; downloads never carry ``X-Xet-Hash``/``Link: xet-auth`` headers and tree entries never carry
``xetHash``/``lfs``, so the client never starts a Xet transfer (with or without ``HF_HUB_DISABLE_XET``).

Jobs: ``POST /api/jobs/{ns}`` runs ``command + arguments`` as a subprocess (own process group, stdout+stderr merged
into the log) in a fresh working dir, with a clean environment: PATH/LANG/TZ/TMPDIR/PYTHONPATH from this process,
``HOME`` and ``HF_HOME`` inside the job dir, the job's ``environment`` and ``secrets`` as env vars, then
``HF_ENDPOINT`` (always this double) and ``PYTHONUNBUFFERED=1`` (so logs stream line by line). The Docker image is
ignored: the job runs on this machine with this interpreter. Command mapping (see ``map_job_command``):

    python|python3[.X] ARGS                   -> sys.executable ARGS
    uv run [uv options] python ARGS           -> sys.executable ARGS
    uv run [uv options] https://…/x.py ARGS   -> fetch the URL (no auth, like uv) into the job dir; sys.executable x.py ARGS
                                                 (https://huggingface.co/… and hf.co URLs are rewritten to this double;
                                                 any other host fails: there is no network)
    uv run [uv options] path/x.py ARGS        -> sys.executable path/x.py ARGS (relative to the job dir)
    uv run [uv options] CMD ARGS              -> CMD from the interpreter's bin dir (or PATH) ARGS
    anything else                             -> run as given, looked up on PATH

``--with``/``--python`` and PEP 723 dependencies are ignored: the current environment must already provide them.
Stages: SCHEDULING -> RUNNING -> COMPLETED (exit 0) | ERROR (non-zero exit, timeout, kill, preemption, setup
failure) | CANCELED. A cancel or timeout sends SIGTERM to the process group and SIGKILL after ``job_grace_s``; the
stage changes when the process has exited, so a terminal stage always means the process is gone and the log is
complete. ``preempt_job`` reclaims the machine as the platform does: SIGTERM then SIGKILL after a grace period, or
SIGKILL alone.

Volumes: a ``bucket`` volume is a folder under ``<root>/buckets/<namespace>/<bucket>`` that outlives the job (as a
Storage Bucket does). The job runs on this machine, so the mount path in its command, arguments and environment is
rewritten to that folder. Repo volumes are refused (400).

Warm interpreter (``hub.jobs.warm_python(preload=[...])``): this process imports ``preload`` and forks a copy of
itself (taken while no job runs), from which every Python job is forked, like a platform image with its packages
installed and imported. Each job is still a real process in its own group (signals, exit codes, logs), and starts as a
fresh interpreter would: the environment, working dir and argv of the job; stdin from /dev/null, stdout and stderr to
the log; default signal handlers; no log handlers and warning filters of this process (a test runner's capture);
what was read from the environment at import applied from the job's (huggingface_hub's ``HF_HOME`` paths, torch's
``OMP_NUM_THREADS``: ``hub.jobs.extra_env["OMP_NUM_THREADS"] = "1"`` gives each job one CPU thread). It only skips
the imports. Tests that start many jobs use it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import json
import mimetypes
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
# Mirrors huggingface_hub's JobHardware enum: an unknown flavor is a 400, as on the Hub.
JOB_FLAVORS = [
    "cpu-basic",
    "cpu-upgrade",
    "cpu-performance",
    "cpu-xl",
    "t4-small",
    "t4-medium",
    "l4x1",
    "l4x4",
    "l40sx1",
    "l40sx4",
    "l40sx8",
    "a10g-small",
    "a10g-large",
    "a10g-largex2",
    "a10g-largex4",
    "a100-large",
    "a100x4",
    "a100x8",
    "h200",
    "h200x2",
    "h200x4",
    "h200x8",
    "rtx-pro-6000",
    "rtx-pro-6000x2",
    "rtx-pro-6000x4",
    "rtx-pro-6000x8",
]
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in [
        "*.7z",
        "*.arrow",
        "*.bin",
        "*.bz2",
        "*.ckpt",
        "*.ftz",
        "*.gguf",
        "*.gz",
        "*.h5",
        "*.joblib",
        "*.lz4",
        "*.mlmodel",
        "*.model",
        "*.msgpack",
        "*.npy",
        "*.npz",
        "*.onnx",
        "*.ot",
        "*.parquet",
        "*.pb",
        "*.pickle",
        "*.pkl",
        "*.pt",
        "*.pth",
        "*.rar",
        "*.safetensors",
        "*.tar",
        "*.tflite",
        "*.tgz",
        "*.xz",
        "*.zip",
        "*.zst",
        "*tfevents*",
    ]
)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_HEX_RE = re.compile(r"[0-9a-f]{7,40}")


def now_iso() -> str:
    """UTC now in the Hub's format (parsed by huggingface_hub.utils.parse_datetime)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def git_blob_oid(data: bytes) -> str:
    """Git blob sha1: the client compares it with preupload's `oid` to skip unchanged files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _new_id() -> str:
    return os.urandom(12).hex()  # 24 hex chars, like the Hub's Mongo ids (job ids, user ids)


# --------------------------------------------------------------------------------------------------- HTTP plumbing


class HubError(Exception):
    """An error answer: JSON `{"error": …}` plus the X-Error-* headers `hf_raise_for_status` maps to exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.extra = dict(headers or {}), extra

    def response(self) -> Response:
        headers = {**self.headers, "X-Error-Message": self.message}
        if self.code:
            headers["X-Error-Code"] = self.code
        return json_response({"error": self.message, **self.extra}, self.status, headers)


@dataclass
class Request:
    method: str
    raw_path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    account: Account | None = None

    @property
    def path(self) -> str:
        return unquote(self.raw_path)

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[0]

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from e


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(obj, default=str).encode()
    return Response(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})


@dataclass
class RequestRecord:
    """One request as the double saw it; `fault` names the injected fault, if any; `user` names the account whose
    token it sent (None: no token; "<invalid>": a token the double does not know); `at`, when it came
    (time.monotonic, as a job's `t_started`/`t_finished`)."""

    method: str
    path: str
    query: str
    status: int | None
    fault: str | None = None
    user: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class Fault:
    """An injected fault; `remaining=None` means until cleared. `hits` counts the requests it affected."""

    kind: str  # "status" | "drop" | "latency"
    remaining: int | None
    method: str | None = None
    path: re.Pattern | None = None
    status: int = 500
    seconds: float = 0.0
    after_processing: bool = False
    hits: int = 0

    def matches(self, req: Request) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method and self.method.upper() != req.method:
            return False
        return self.path is None or self.path.search(req.path) is not None

    def take(self) -> None:
        self.hits += 1
        if self.remaining is not None:
            self.remaining -= 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub: the client pools connections
    server_version = "HubDouble/1.0"

    def do_GET(self) -> None:
        self.server.hub._handle(self)  # type: ignore[attr-defined]

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the request log is `hub.requests`
        pass


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    # Always drain the body, or the next request on this keep-alive connection reads garbage.
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _header_value(value: Any) -> str:
    # http.server encodes headers as strict latin-1 and a newline would split the header.
    return str(value).replace("\r", " ").replace("\n", " ").encode("latin-1", "replace").decode("latin-1")


# --------------------------------------------------------------------------------------------------- repos on disk


@dataclass
class Account:
    name: str
    token: str
    role: str = "write"  # "write" | "read"
    orgs: tuple[str, ...] = ()
    pro: bool = False  # a paid (PRO) plan: whoami's isPro
    uid: str = field(default_factory=_new_id)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.name, *self.orgs)


@dataclass
class Commit:
    id: str
    parent: str | None
    tree: dict[str, str]  # path -> blob oid
    title: str
    message: str
    author: str
    date: str


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    created_at: str
    sdk: str | None = None
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pulls: dict[int, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    secrets: dict[str, dict] = field(default_factory=dict)
    uid: str = field(default_factory=_new_id)

    @property
    def namespace(self) -> str:
        return self.id.split("/")[0]


def _validate_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _dirs_of(paths: Iterable[str]) -> set[str]:
    dirs = set()
    for path in paths:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return dirs


class RepoStore:
    """Repos, commits and refs. Blob contents live on disk (content-addressed by git oid), repo metadata as JSON."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self._sizes: dict[str, int] = {}
        self._counter = itertools.count()

    def _blob_path(self, oid: str) -> Path:
        return self.root / "blobs" / oid[:2] / oid[2:]

    def put_blob(self, data: bytes) -> str:
        oid = git_blob_oid(data)
        path = self._blob_path(oid)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self._sizes[oid] = len(data)
        return oid

    def blob(self, oid: str) -> bytes:
        return self._blob_path(oid).read_bytes()

    def size(self, oid: str) -> int:
        if oid not in self._sizes:
            self._sizes[oid] = self._blob_path(oid).stat().st_size
        return self._sizes[oid]

    def save(self, repo: Repo) -> None:
        path = self.root / "repos" / f"{repo.type}s" / f"{repo.id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v for k, v in repo.__dict__.items() if k != "commits"}
        state["commits"] = {sha: c.__dict__ for sha, c in repo.commits.items()}
        path.write_text(json.dumps(state, indent=1, default=str))

    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def create(
        self, repo_type: str, repo_id: str, *, author: str, private: bool = False, sdk: str | None = None
    ) -> Repo:
        with self.lock:
            repo = Repo(repo_type, repo_id, private, now_iso(), sdk)
            self.repos[(repo_type, repo_id)] = repo
            files = {".gitattributes": DEFAULT_GITATTRIBUTES.encode()}
            if repo_type == "space":
                files["README.md"] = _default_space_readme(repo_id.split("/")[1], sdk or "gradio").encode()
            repo.branches["main"] = self._new_commit(repo, None, {}, "initial commit", "", author, files).id
            self.save(repo)
            return repo

    def delete(self, repo: Repo) -> None:
        with self.lock:
            self.repos.pop((repo.type, repo.id), None)
            (self.root / "repos" / f"{repo.type}s" / f"{repo.id}.json").unlink(missing_ok=True)

    def resolve(self, repo: Repo, revision: str | None) -> Commit:
        rev = revision or "main"
        with self.lock:
            for prefix, table in (("refs/heads/", repo.branches), ("refs/tags/", repo.tags), ("", repo.branches)):
                if rev.startswith(prefix) and rev[len(prefix) :] in table:
                    return repo.commits[table[rev[len(prefix) :]]]
            if rev in repo.tags:
                return repo.commits[repo.tags[rev]]
            if (m := re.fullmatch(r"refs/pr/(\d+)", rev)) and int(m[1]) in repo.pulls:
                return repo.commits[repo.pulls[int(m[1])]]
            if _HEX_RE.fullmatch(rev):
                found = [sha for sha in repo.commits if sha.startswith(rev)]
                if len(found) == 1:
                    return repo.commits[found[0]]
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def history(self, repo: Repo, commit: Commit) -> list[Commit]:
        out = [commit]
        while out[-1].parent:
            out.append(repo.commits[out[-1].parent])
        return out

    def _new_commit(self, repo, parent: Commit | None, tree, title, message, author, files=None) -> Commit:
        tree = dict(tree)
        for path, data in (files or {}).items():
            tree[path] = self.put_blob(data)
        date = now_iso()
        seed = json.dumps(
            [repo.id, parent and parent.id, sorted(tree.items()), title, message, date, next(self._counter)]
        )
        commit = Commit(
            hashlib.sha1(seed.encode()).hexdigest(), parent and parent.id, tree, title, message, author, date
        )
        repo.commits[commit.id] = commit
        return commit

    def commit(
        self,
        repo: Repo,
        revision: str,
        ops: list[tuple[str, str, bytes | None]],
        *,
        author: str,
        title: str,
        message: str = "",
        parent_commit: str | None = None,
        create_pr: bool = False,
    ) -> tuple[Commit, int | None]:
        """Apply `ops` ((kind, path, data) with kind in put/delete/delete_folder) in order, as one new commit."""
        with self.lock:
            pr_num = None
            if create_pr:
                head = self.resolve(repo, revision)
                pr_num = max(repo.pulls, default=0) + 1
            else:
                head = self._branch_head(repo, revision)
            if parent_commit and not head.id.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.tree)
            for kind, path, data in ops:
                if kind == "put":
                    tree[_validate_path(path)] = self.put_blob(data or b"")
                elif kind == "delete":
                    if tree.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                else:
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in tree if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
            if clash := _dirs_of(tree) & set(tree):
                raise HubError(400, f"A path is both a file and a folder: {sorted(clash)[0]}")
            commit = self._new_commit(repo, head, tree, title, message, author)
            if pr_num is not None:
                repo.pulls[pr_num] = commit.id
            elif revision.startswith("refs/pr/"):
                repo.pulls[int(revision.split("/")[2])] = commit.id
            else:
                repo.branches[revision.removeprefix("refs/heads/")] = commit.id
            self.save(repo)
            return commit, pr_num

    def _branch_head(self, repo: Repo, revision: str) -> Commit:
        name = revision.removeprefix("refs/heads/")
        if name in repo.branches:
            return repo.commits[repo.branches[name]]
        if (m := re.fullmatch(r"refs/pr/(\d+)", revision)) and int(m[1]) in repo.pulls:
            return repo.commits[repo.pulls[int(m[1])]]
        raise HubError(404, f"Invalid rev id: {revision} (commits go to an existing branch)", "RevisionNotFound")


# --------------------------------------------------------------------------------------------------- cards


def _default_space_readme(name: str, sdk: str) -> str:
    app_file = {"gradio": "app_file: app.py\n", "streamlit": "app_file: app.py\n"}.get(sdk, "")
    return (
        f"---\ntitle: {name}\nemoji: 🚀\ncolorFrom: blue\ncolorTo: green\nsdk: {sdk}\n{app_file}pinned: false\n---\n\n"
        "Check out the configuration reference at https://huggingface.co/docs/hub/spaces-config-reference\n"
    )


def _front_matter(text: str) -> str | None:
    m = re.match(r"^---[ \t]*\r?\n(.*?)(?:^|\n)---[ \t]*(?:\r?\n|$)", text, re.S)
    return m[1] if m else None


def parse_card(text: str, repo_type: str) -> tuple[dict | None, list[str]]:
    """README front matter -> (cardData, errors). Needs PyYAML (a huggingface_hub dependency); without it: no data."""
    block = _front_matter(text)
    if block is None:
        return None, []
    try:
        import yaml
    except ImportError:
        return None, []
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as e:
        return None, [f"Invalid YAML in README.md metadata: {e}"]
    if data is None:
        return None, []
    if not isinstance(data, dict):
        return None, ["README.md metadata must be a YAML mapping"]
    errors = []
    if repo_type == "space":
        if data.get("sdk") not in SPACE_SDKS:
            errors.append(f'"sdk" must be one of {list(SPACE_SDKS)}, got {data.get("sdk")!r}')
        errors += [
            f'"{k}" must be one of {list(SPACE_COLORS)}'
            for k in ("colorFrom", "colorTo")
            if k in data and data[k] not in SPACE_COLORS
        ]
    return data, errors


# --------------------------------------------------------------------------------------------------- jobs


class JobSetupError(Exception):
    """The job could not start (script not fetchable, command not found): it ends in ERROR."""


_UV_OPTIONS_WITH_VALUE = {
    "--with",
    "-w",
    "--with-requirements",
    "--with-editable",
    "--python",
    "-p",
    "--index",
    "--index-url",
    "--default-index",
    "--extra-index-url",
    "--find-links",
    "-f",
    "--env-file",
    "--directory",
    "--project",
    "--group",
    "--extra",
    "--package",
    "--prerelease",
    "--resolution",
    "--index-strategy",
    "--cache-dir",
    "--config-file",
    "--exclude-newer",
    "--keyring-provider",
    "--link-mode",
    "--color",
}


def _is_python(name: str) -> bool:
    return re.fullmatch(r"python(3(\.\d+)?)?", os.path.basename(name)) is not None


def map_job_command(argv: list[str], workdir: Path, fetch: Callable[[str, Path], Path]) -> list[str]:
    """Map a Hub job command to a local one (table in the module docstring); `fetch(url, dir)` downloads a script."""
    if not argv:
        raise JobSetupError("empty command")
    if _is_python(argv[0]):
        return [sys.executable, *argv[1:]]
    if os.path.basename(argv[0]) != "uv" or argv[1:2] != ["run"]:
        return list(argv)
    args, i = argv[2:], 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "--":
            i += 1
            break
        i += 2 if args[i] in _UV_OPTIONS_WITH_VALUE else 1
    if i >= len(args):
        raise JobSetupError("uv run: no script or command given")
    target, rest = args[i], args[i + 1 :]
    if _is_python(target):
        return [sys.executable, *rest]
    if target.startswith(("http://", "https://")):
        return [sys.executable, str(fetch(target, workdir)), *rest]
    if target.endswith(".py"):
        script = Path(target) if os.path.isabs(target) else workdir / target
        if not script.is_file():
            raise JobSetupError(f"uv run: script not found: {target}")
        return [sys.executable, str(script), *rest]
    exe = shutil.which(target, path=os.path.dirname(sys.executable)) or shutil.which(target)
    if exe is None:
        raise JobSetupError(f"uv run: command not found: {target}")
    return [exe, *rest]


@dataclass
class Job:
    id: str
    owner: Account
    namespace: str
    spec: dict
    workdir: Path
    created_at: str = field(default_factory=now_iso)
    stage: str = "SCHEDULING"
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    argv: list[str] | None = None  # the local command the spec was mapped to
    logs: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, line)
    end_reason: str | None = None  # "canceled" | "timeout" | "killed" | "preempted"
    done: bool = False
    proc: subprocess.Popen | None = None
    thread: threading.Thread | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)
    t_created: float = field(default_factory=time.monotonic)
    t_started: float | None = None
    t_finished: float | None = None

    @property
    def log_lines(self) -> list[str]:
        return [line for _, line in self.logs]


# A fresh interpreter's warning filters ("Default Warning Filter" in the warnings docs, a release build, no -W).
_DEFAULT_WARNING_FILTERS = [
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings to stderr, as a fresh interpreter shows them (a test runner records them instead)."""
    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


def _std_stream(fd: int, unbuffered: bool) -> io.TextIOWrapper:
    """sys.stdout or sys.stderr as the interpreter opens them: with PYTHONUNBUFFERED (every job has it), straight to
    the file, so a signal handler that prints while the program prints does not trip over a buffer's lock."""
    raw = io.FileIO(fd, "w", closefd=False)
    if unbuffered:
        return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", write_through=True)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace", line_buffering=True)


def _fresh_progress_bars(std: Any) -> None:
    """tqdm's write locks and bars as a fresh process has none yet. A lock made before the fork is shared with this
    process and every other job (its multiprocessing half is a semaphore): a job killed while drawing a bar would
    leave it taken, and the next bar anywhere would wait for ever."""
    import weakref

    lock_class = std.TqdmDefaultWriteLock
    lock_class.th_lock = threading.RLock()
    if "mp_lock" in vars(lock_class):
        del lock_class.mp_lock  # the job's first bar makes its own
    classes, seen = [std.tqdm], set()
    while classes:
        cls = classes.pop()
        if cls in seen:
            continue
        seen.add(cls)
        classes.extend(cls.__subclasses__())
        if "_lock" in vars(cls):
            del cls._lock
        if "_instances" in vars(cls):
            cls._instances = weakref.WeakSet()
        if "monitor" in vars(cls):
            cls.monitor = None


def _as_fresh_interpreter(env: dict[str, str], out_fd: int) -> None:
    """Make a process forked from the warm interpreter look like a fresh one started with `env`, logging to
    `out_fd`: what it inherited from the process it was forked from (log handlers and their streams, warning filters,
    signal handlers, import-time reads of the environment) is put back as a fresh interpreter has it."""
    import gc
    import logging

    gc.freeze()  # what the warm interpreter holds lives as long as the job: no collection walks it (gc docs)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd in (1, 2):
        os.dup2(out_fd, fd)
    os.close(out_fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout, sys.stderr = (_std_stream(fd, unbuffered=bool(env.get("PYTHONUNBUFFERED"))) for fd in (1, 2))
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    warnings.resetwarnings()
    for action, category, module in reversed(_DEFAULT_WARNING_FILTERS):
        warnings.filterwarnings(action, category=category, module=module)
    warnings.showwarning = _show_warning
    root = logging.getLogger()
    for handler in list(root.handlers):  # a test runner's capture handlers: a fresh interpreter has none
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    logging.disable(logging.NOTSET)
    for logger in [root, *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):  # libraries' own handlers write to the job's log
            if type(handler) is logging.StreamHandler:
                handler.stream = sys.stderr
    if "tqdm.std" in sys.modules:
        _fresh_progress_bars(sys.modules["tqdm.std"])
    os.environ.clear()
    os.environ.update(env)
    if "huggingface_hub.constants" in sys.modules:  # imported: it read HF_HOME at import, re-point its caches
        constants = sys.modules["huggingface_hub.constants"]
        home = env.get("HF_HOME", "")
        for name, sub in (
            ("HF_HOME", ""),
            ("HF_HUB_CACHE", "hub"),
            ("HUGGINGFACE_HUB_CACHE", "hub"),
            ("HF_ASSETS_CACHE", "assets"),
            ("HF_XET_CACHE", "xet"),
        ):
            if hasattr(constants, name):
                setattr(constants, name, os.path.join(home, sub) if sub else home)
        for name in ("HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH"):
            if hasattr(constants, name):
                setattr(constants, name, os.path.join(home, name.lower()))
    if "torch" in sys.modules:  # imported: it read OMP_NUM_THREADS at import
        threads = env.get("OMP_NUM_THREADS", "")
        sys.modules["torch"].set_num_threads(int(threads) if threads.isdigit() else os.cpu_count() or 1)


def _run_python(argv: list[str], cwd: str, env: dict[str, str], out_fd: int) -> int:
    """Run ``python ARGS`` in this forked process as a fresh interpreter would; returns the exit code."""
    import runpy
    import traceback

    code = 0
    try:
        _as_fresh_interpreter(env, out_fd)
        os.chdir(cwd)
        args = argv[1:]
        if args[:1] == ["-m"]:
            sys.argv = [args[1], *args[2:]]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        elif args[:1] == ["-c"]:
            sys.argv = ["-c", *args[2:]]
            exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = args
            sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    for thread in threading.enumerate():  # as the interpreter does at exit: wait for non-daemon threads
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def _zygote_serve(sock: socket.socket) -> None:
    """The warm interpreter's loop: fork a job per request, answer its pid, report each exit; end with the parent."""
    import selectors

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the test run; this ends when it does
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
                if not msg:
                    return
                argv, cwd, env = pickle.loads(msg)
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    sock.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    os._exit(_run_python(argv, cwd, env, fds[0]))
                os.close(fds[0])
                sock.send(pickle.dumps(("pid", pid)))
            else:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    sock.send(pickle.dumps(("exit", pid, os.waitstatus_to_exitcode(status))))


class _Zygote:
    """The warm interpreter: a fork of this process, taken when nothing runs yet (no request in flight, no job),
    that forks every Python job. Jobs are not forked from this process directly: its other threads (the HTTP server,
    the job runners) could hold locks at that moment, and a fork copies them held."""

    def __init__(self) -> None:
        import queue

        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._lock = threading.Lock()
        self._pids: queue.Queue[int] = queue.Queue()
        self._exits: dict[int, int] = {}
        self._exited = threading.Condition()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                self._sock.close()
                _zygote_serve(child)
            finally:
                os._exit(0)
        child.close()
        threading.Thread(target=self._read, name="hub-double-zygote", daemon=True).start()

    def close(self) -> None:
        """End the warm interpreter (it exits when its socket closes)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader too, which close() alone would not
        self._sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def _read(self) -> None:
        with contextlib.suppress(OSError):  # closed
            self._loop()

    def _loop(self) -> None:
        while msg := self._sock.recv(1 << 16):
            kind, *rest = pickle.loads(msg)
            if kind == "pid":
                self._pids.put(rest[0])
            else:
                with self._exited:
                    self._exits[rest[0]] = rest[1]
                    self._exited.notify_all()

    def spawn(self, argv: list[str], cwd: Path, env: dict[str, str], out_fd: int) -> int:
        with self._lock:
            socket.send_fds(self._sock, [pickle.dumps((argv, str(cwd), env))], [out_fd])
            return self._pids.get(timeout=60)

    def exitcode(self, pid: int, timeout: float | None = 0) -> int | None:
        with self._exited:
            self._exited.wait_for(lambda: pid in self._exits, timeout)
            return self._exits.get(pid)


class _WarmProcess:
    """The part of `subprocess.Popen` the job runner uses, for a process forked from the warm interpreter."""

    def __init__(self, zygote: _Zygote, argv: list[str], cwd: Path, env: dict[str, str]):
        reader, writer = os.pipe()
        try:
            self.pid = zygote.spawn(argv, cwd, env, writer)
        finally:
            os.close(writer)
        self._zygote = zygote
        self.stdout = open(reader, "rb")  # noqa: SIM115

    def poll(self) -> int | None:
        return self._zygote.exitcode(self.pid)

    def wait(self) -> int:
        code = self._zygote.exitcode(self.pid, timeout=None)
        assert code is not None
        return code


class JobManager:
    def __init__(self, hub: HubDouble):
        self.hub = hub
        self.jobs: dict[str, Job] = {}
        self.grace_s = 5.0  # SIGTERM -> SIGKILL delay for cancel and timeout
        self.scheduling_delay_s = 0.0
        self.extra_env: dict[str, str] = {}  # added to every job's environment (before the job's own env)
        self._warm: _Zygote | None = None  # the warm interpreter, once warm_python() was called

    def warm_python(self, preload: Iterable[str]) -> None:
        """Fork Python jobs from a warm interpreter: this process, once it has imported `preload`, forked now. It
        lasts until `close` (the double's `reset` and `stop` call it)."""
        import importlib

        for name in preload:
            importlib.import_module(name)
        if self._warm is not None:
            self._warm.close()
        self._warm = _Zygote()

    def _popen(self, job: Job, argv: list[str]) -> Any:
        python = argv[0] == sys.executable and len(argv) > 1
        if self._warm is not None and python and (argv[1] in ("-m", "-c") or argv[1].endswith(".py")):
            return _WarmProcess(self._warm, argv, job.workdir, self._env(job))
        return subprocess.Popen(
            argv,
            cwd=job.workdir,
            env=self._env(job),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own group: signal all
        )

    def _mounts(self, job: Job) -> dict[str, str]:
        """Mount path → local folder for the job's bucket volumes."""
        out = {}
        for volume in job.spec.get("volumes") or []:
            folder = self.hub.root / "buckets" / volume["source"]
            folder.mkdir(parents=True, exist_ok=True)
            out[volume["mountPath"].rstrip("/")] = str(folder)
        return out

    def submit(self, spec: dict, namespace: str, owner: Account) -> Job:
        job_id = _new_id()
        job = Job(job_id, owner, namespace, spec, self.hub.root / "jobs" / job_id)
        job.workdir.mkdir(parents=True)
        self.jobs[job_id] = job
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"hub-job-{job_id}", daemon=True)
        job.thread.start()
        return job

    def _log(self, job: Job, line: str) -> None:
        with job.cond:
            job.logs.append((now_iso(), line))
            job.cond.notify_all()

    def _env(self, job: Job) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT", "PYTHONPATH")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
        env.update(HOME=str(job.workdir.parent / f"{job.id}-home"), HF_HOME=str(job.workdir.parent / f"{job.id}-hf"))
        env.update(self.extra_env)
        env.update({k: str(v) for k, v in (job.spec.get("environment") or {}).items()})
        env.update({k: str(v) for k, v in (job.spec.get("secrets") or {}).items()})
        env.update(HF_ENDPOINT=self.hub.url, PYTHONUNBUFFERED="1")
        for mount, folder in self._mounts(job).items():
            env = {k: re.sub(rf"^{re.escape(mount)}(?=/|$)", folder, v) for k, v in env.items()}
        return env

    def _run(self, job: Job) -> None:
        if self.scheduling_delay_s:
            time.sleep(self.scheduling_delay_s)
        if job.end_reason:  # canceled or killed while scheduling
            return self._finish(job, 0)
        try:
            job.argv = map_job_command(
                [*job.spec.get("command", []), *job.spec.get("arguments", [])], job.workdir, self.hub._fetch_script
            )
            for mount, folder in self._mounts(job).items():
                job.argv = [re.sub(rf"^{re.escape(mount)}(?=/|$)", folder, a) for a in job.argv]
            proc = self._popen(job, job.argv)
        except (JobSetupError, OSError) as e:
            self._log(job, f"Error: {e}")
            with job.cond:
                job.message = f"Job failed to start: {e}"
            return self._finish(job, 1)
        with job.cond:
            job.proc, job.stage, job.started_at, job.t_started = proc, "RUNNING", now_iso(), time.monotonic()
        self._log(job, f"===== Job started at {job.started_at} =====")
        if job.end_reason:  # a cancel raced with the start
            self._signal(job, signal.SIGTERM)
        timeout = job.spec.get("timeoutSeconds")
        timer = threading.Timer(float(timeout), self._on_timeout, (job,)) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            self._log(job, raw.decode("utf-8", "replace").rstrip("\r\n"))
        returncode = proc.wait()
        if timer:
            timer.cancel()
        self._finish(job, returncode)

    def _finish(self, job: Job, returncode: int) -> None:
        with job.cond:
            timeout = job.spec.get("timeoutSeconds")
            if job.end_reason == "canceled":
                job.stage, job.message = "CANCELED", "Job canceled by user"
            elif job.end_reason == "timeout":
                job.stage, job.message = "ERROR", f"Job timeout: exceeded its timeout of {timeout} seconds"
            elif job.end_reason == "killed":
                job.stage, job.message = "ERROR", "Job was killed (SIGKILL): the machine running it went away"
            elif job.end_reason == "preempted":
                job.stage, job.message = "ERROR", "Job was preempted: the machine running it was reclaimed"
            elif returncode == 0 and job.message is None:
                job.stage = "COMPLETED"
            else:
                job.stage = "ERROR"
                if job.message is None:
                    job.message = (
                        f"Job was terminated by signal {signal.Signals(-returncode).name}"
                        if returncode < 0
                        else f"Job failed with exit code: {returncode}"
                    )
            job.finished_at, job.t_finished, job.done, job.proc = now_iso(), time.monotonic(), True, None
            job.cond.notify_all()

    def _signal(self, job: Job, sig: int) -> None:
        proc = job.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _stop(self, job: Job, reason: str) -> None:
        """SIGTERM now, SIGKILL after the grace period (what `docker stop` does)."""
        with job.cond:
            if job.done or job.end_reason:
                return
            job.end_reason = reason
        self._signal(job, signal.SIGTERM)
        killer = threading.Timer(self.grace_s, self._signal, (job, signal.SIGKILL))
        killer.daemon = True
        killer.start()

    def _on_timeout(self, job: Job) -> None:
        self._stop(job, "timeout")

    def cancel(self, job: Job) -> None:
        self._stop(job, "canceled")

    def kill(self, job: Job) -> None:
        with job.cond:
            if job.done:
                return
            job.end_reason = "killed"
        self._signal(job, signal.SIGKILL)

    def preempt(self, job: Job, grace_s: float | None = None) -> None:
        """Reclaim the machine: SIGTERM then SIGKILL after `grace_s`, or SIGKILL alone when `grace_s` is None."""
        with job.cond:
            if job.done or job.end_reason:
                return
            job.end_reason = "preempted"
        if grace_s is None:
            return self._signal(job, signal.SIGKILL)
        self._signal(job, signal.SIGTERM)
        killer = threading.Timer(grace_s, self._signal, (job, signal.SIGKILL))
        killer.daemon = True
        killer.start()

    def kill_all(self) -> None:
        for job in list(self.jobs.values()):
            self.kill(job)
        for job in list(self.jobs.values()):
            if job.thread:
                job.thread.join(timeout=10)

    def close(self) -> None:
        """Kill every job and end the warm interpreter."""
        self.kill_all()
        if self._warm is not None:
            self._warm.close()
            self._warm = None

    def info(self, job: Job) -> dict:
        """JobInfo as the client parses it. Never a top-level `endpoint` key: the client passes its own."""
        spec, now = job.spec, time.monotonic()
        started, finished = job.t_started, job.t_finished or now
        info = {
            "id": job.id,
            "createdAt": job.created_at,
            "owner": {
                "id": job.owner.uid,
                "name": job.namespace,
                "type": "user" if job.namespace == job.owner.name else "org",
            },
            "initiator": {"type": "user", "id": job.owner.uid, "name": job.owner.name},
            "command": spec.get("command"),
            "arguments": spec.get("arguments", []),
            "environment": spec.get("environment", {}),
            "secrets": {k: "<hidden>" for k in spec.get("secrets") or {}},  # the Hub never returns secret values
            "flavor": spec.get("flavor", "cpu-basic"),
            "labels": spec.get("labels"),
            "status": {"stage": job.stage, "message": job.message},
            "durations": {
                "schedulingSecs": int((started or finished) - job.t_created),
                "runningSecs": int(finished - started) if started else None,
                "totalSecs": int(finished - job.t_created),
            },
        }
        info.update({k: spec[k] for k in ("dockerImage", "spaceId", "volumes") if k in spec})
        info.update({k: v for k, v in (("startedAt", job.started_at), ("finishedAt", job.finished_at)) if v})
        return info

    def sse(self, job: Job, tail: int | None, keepalive_s: float) -> Iterator[bytes]:
        """Replay the log, then follow it live; the stream ends when the process has exited."""
        with job.cond:
            idx = 0 if tail is None else max(0, len(job.logs) - tail)
        while True:
            with job.cond:
                if idx >= len(job.logs) and not job.done:
                    job.cond.wait(timeout=keepalive_s)
                batch, done = job.logs[idx:], job.done
                idx += len(batch)
            if not batch and not done:
                yield b": keep-alive\n\n"
            for ts, line in batch:
                yield b"data: " + json.dumps({"data": line, "timestamp": ts}).encode() + b"\n\n"
            if done and not batch:
                return


# --------------------------------------------------------------------------------------------------- the server


class HubDouble:
    """The Hub double. Start it, point HF_ENDPOINT at `.url` before importing huggingface_hub, and use the client."""

    def __init__(self, root: str | Path | None = None, host: str = "127.0.0.1", port: int = 0):
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._routes = self._build_routes()
        self.reset(root)

    # ----------------------------------------------------------------------------------------- lifecycle

    def start(self) -> HubDouble:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-double", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self.jobs.close()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread = None
        self._httpd.server_close()

    def reset(self, root: str | Path | None = None) -> None:
        """Forget everything (repos, jobs, faults, users, request log) and store new data under `root`."""
        if getattr(self, "jobs", None):
            self.jobs.close()
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="hub-double-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = RepoStore(self.root)
        self.jobs = JobManager(self)
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self.unhandled: list[str] = []  # "METHOD /path" of requests no route knew: the double lacks an endpoint
        self.allow_unhandled = False  # read by the pytest fixture: unhandled requests fail the test unless set
        self.page_size = 1000  # tree / commits / list pages (the client follows `Link: rel="next"`)
        self.sse_keepalive_s = 30.0
        self.accounts: dict[str, Account] = {}
        self.user = "tester"
        self.org = "test-org"
        self.token = self.add_user(self.user, orgs=(self.org,), token="hf_double_write_token")
        self.read_token = self.add_user("reader", role="read", token="hf_double_read_token")

    def add_user(
        self, name: str, *, orgs: Iterable[str] = (), role: str = "write", token: str | None = None, pro: bool = False
    ) -> str:
        """Register a user (and its token); returns the token. Another token for the same name is another
        credential of that user (a read token beside a write token)."""
        token = token or f"hf_{name}_{_new_id()}"
        self.accounts[token] = Account(name, token, role, tuple(orgs), pro)
        return token

    def requests_by(self, user: str | None) -> list[RequestRecord]:
        """The requests that sent a token of ``user`` (None: those that sent no token)."""
        return [r for r in list(self.requests) if r.user == user]

    # ----------------------------------------------------------------------------------------- test helpers

    def seed_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | str] | None = None,
        *,
        repo_type: str = "model",
        private: bool = False,
        sdk: str | None = None,
        message: str = "Seed files",
    ) -> str:
        """Create (if needed) a repo in any namespace, without auth, and commit `files` to main. Returns the sha."""
        repo = self.store.get(repo_type, repo_id) or self.store.create(
            repo_type, repo_id, author=repo_id.split("/")[0], private=private, sdk=sdk
        )
        if not files:
            return repo.branches["main"]
        ops = [("put", p, d.encode() if isinstance(d, str) else d) for p, d in files.items()]
        return self.store.commit(repo, "main", ops, author=repo.namespace, title=message)[0].id

    def _existing(self, repo_id: str, repo_type: str) -> Repo:
        repo = self.store.get(repo_type, repo_id)
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r} on the Hub double")
        return repo

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        return self.store.get(repo_type, repo_id) is not None

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """All files of a repo at a revision (branch, tag or sha)."""
        repo = self._existing(repo_id, repo_type)
        commit = self.store.resolve(repo, revision)
        return {path: self.store.blob(oid) for path, oid in sorted(commit.tree.items())}

    def commits(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[Commit]:
        """History of a revision, newest first."""
        repo = self._existing(repo_id, repo_type)
        return self.store.history(repo, self.store.resolve(repo, revision))

    def branches(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        return dict(self._existing(repo_id, repo_type).branches)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests matched `method` and the `path` regex (searched in the decoded path)."""
        return sum(
            1
            for r in list(self.requests)
            if (method is None or r.method == method.upper()) and (path is None or re.search(path, r.path))
        )

    def job(self, job_id: str) -> Job:
        return self.jobs.jobs[job_id]

    def job_logs(self, job_id: str) -> list[str]:
        return self.job(job_id).log_lines

    def wait_job(self, job_id: str, timeout: float = 30.0) -> Job:
        """Block until the job's process is gone and its stage is terminal."""
        job = self.job(job_id)
        with job.cond:
            if not job.cond.wait_for(lambda: job.done, timeout=timeout):
                raise TimeoutError(f"job {job_id} still {job.stage} after {timeout}s")
        return job

    def wait_job_output(self, job_id: str, text: str, timeout: float = 30.0) -> None:
        """Block until a log line of the job contains `text` (e.g. a "ready" marker before a cancel)."""
        job = self.job(job_id)
        with job.cond:
            if not job.cond.wait_for(lambda: job.done or any(text in line for line in job.log_lines), timeout):
                raise TimeoutError(f"job {job_id} printed no {text!r} within {timeout}s")
        if not any(text in line for line in job.log_lines):
            raise AssertionError(f"job {job_id} ended ({job.stage}) without printing {text!r}: {job.log_lines}")

    @property
    def job_grace_s(self) -> float:
        return self.jobs.grace_s

    @job_grace_s.setter
    def job_grace_s(self, value: float) -> None:
        self.jobs.grace_s = value

    # ----------------------------------------------------------------------------------------- fault injection

    def _add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail_next(self, n: int = 1, status: int = 500, *, path: str | None = None, method: str | None = None) -> Fault:
        """Answer the next `n` matching requests with `status` (nothing is processed). `path` is a regex."""
        return self._add_fault(Fault("status", n, method, re.compile(path) if path else None, status=status))

    def drop_next(
        self, n: int = 1, *, path: str | None = None, method: str | None = None, after_processing: bool = False
    ) -> Fault:
        """Close the connection without answering the next `n` matching requests. With `after_processing`, the
        request takes effect first (a commit lands) and only the response is lost."""
        fault = Fault("drop", n, method, re.compile(path) if path else None, after_processing=after_processing)
        return self._add_fault(fault)

    def add_latency(
        self, seconds: float, *, path: str | None = None, method: str | None = None, n: int | None = None
    ) -> Fault:
        """Delay matching requests by `seconds` before answering (`n=None`: until `clear_faults`)."""
        return self._add_fault(Fault("latency", n, method, re.compile(path) if path else None, seconds=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def kill_job(self, job_id: str) -> None:
        """SIGKILL the job's processes, like a preempted machine: the job ends in ERROR."""
        self.jobs.kill(self.job(job_id))

    def preempt_job(self, job_id: str, grace_s: float | None = None) -> None:
        """Preempt the job as the platform does: SIGTERM, SIGKILL after `grace_s`; SIGKILL alone with None."""
        self.jobs.preempt(self.job(job_id), grace_s)

    def bucket_dir(self, bucket: str) -> Path:
        """The folder behind bucket `namespace/name` (what its volume mounts)."""
        return self.root / "buckets" / bucket

    def _take_faults(self, req: Request) -> tuple[float, Fault | None]:
        with self._lock:
            latency = next((f for f in self.faults if f.kind == "latency" and f.matches(req)), None)
            action = next((f for f in self.faults if f.kind != "latency" and f.matches(req)), None)
            for fault in (latency, action):
                if fault:
                    fault.take()
        return (latency.seconds if latency else 0.0), action

    # ----------------------------------------------------------------------------------------- HTTP handling

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw_path, _, query = h.path.partition("?")
        record = RequestRecord(h.command, unquote(raw_path), query, None)
        self.requests.append(record)  # logged before answering: counts are complete once the client has returned
        try:
            req = Request(h.command, raw_path, parse_qs(query, keep_blank_values=True), h.headers, _read_body(h))
            auth = h.headers.get("Authorization")
            if auth:
                known = self.accounts.get(auth.removeprefix("Bearer ").strip())
                record.user = known.name if known else "<invalid>"
            latency, fault = self._take_faults(req)
            if latency:
                record.fault = f"latency {latency}s"
                time.sleep(latency)
            if fault and fault.kind == "drop" and not fault.after_processing:
                record.fault = "drop"
                h.close_connection = True
                return
            if fault and fault.kind == "status":
                record.fault = f"status {fault.status}"
                resp = HubError(fault.status, f"Injected fault: HTTP {fault.status}").response()
            else:
                resp = self._dispatch(req)
            record.status = resp.status
            if fault and fault.kind == "drop":
                record.fault = "drop after processing"
                h.close_connection = True
                return
            self._write(h, req, resp)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True  # the client went away (e.g. its timeout fired during injected latency)

    def _dispatch(self, req: Request) -> Response:
        try:
            req.account = self._account(req)
            for methods, pattern, handler in self._routes:
                m = pattern.fullmatch(req.raw_path)
                if m and req.method in methods:
                    params = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                    return handler(req, **params)
            self.unhandled.append(f"{req.method} {req.raw_path}")
            raise HubError(404, f"Not found: {req.method} {req.raw_path} (not implemented by the Hub double)")
        except HubError as e:
            return e.response()
        except Exception as e:  # a bug in the double: answer 500 and keep a trace for the test report
            self.unhandled.append(f"{req.method} {req.raw_path} -> {type(e).__name__}: {e}")
            return HubError(500, f"Hub double internal error: {type(e).__name__}: {e}").response()

    def _write(self, h: BaseHTTPRequestHandler, req: Request, resp: Response) -> None:
        h.send_response(resp.status)
        for key, value in resp.headers.items():
            h.send_header(key, _header_value(value))
        if isinstance(resp.body, (bytes, bytearray)):
            if "Content-Length" not in resp.headers:
                h.send_header("Content-Length", str(len(resp.body)))
            h.end_headers()
            if req.method != "HEAD":
                h.wfile.write(resp.body)
            return
        h.send_header("Transfer-Encoding", "chunked")  # streamed body (job logs)
        h.end_headers()
        for chunk in resp.body:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            h.wfile.flush()
        h.wfile.write(b"0\r\n\r\n")

    # ----------------------------------------------------------------------------------------- auth & lookups

    def _account(self, req: Request) -> Account | None:
        auth = req.headers.get("Authorization")
        if not auth:
            return None
        account = self.accounts.get(auth.removeprefix("Bearer ").strip())
        if account is None:  # the Hub rejects a bad token even on public reads
            raise HubError(401, "Invalid credentials in Authorization header")
        return account

    def _require_write(self, req: Request, namespace: str) -> Account:
        if req.account is None:
            raise HubError(401, "You must be authenticated to do this (no token in the Authorization header)")
        if req.account.role != "write":
            raise HubError(403, "This token is read-only: you don't have the rights to write")
        if namespace not in req.account.namespaces:
            raise HubError(403, f'You don\'t have the rights to write under the namespace "{namespace}"')
        return req.account

    def _repo(self, req: Request, type: str, ns: str, name: str, write: bool = False) -> Repo:
        repo = self.store.get(REPO_TYPES[type], f"{ns}/{name}")
        visible = repo is not None and (not repo.private or (req.account and ns in req.account.namespaces))
        if not visible:  # like the Hub: anonymous -> 401, authenticated -> 404, both RepoNotFound
            raise HubError(401 if req.account is None else 404, "Repository not found", "RepoNotFound")
        if write:
            self._require_write(req, ns)
        return repo

    def repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{URL_PREFIXES[repo.type]}{repo.id}"

    # ----------------------------------------------------------------------------------------- routes

    def _build_routes(self) -> list[tuple[tuple[str, ...], re.Pattern, Callable[..., Response]]]:
        repo = r"/api/(?P<type>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
        job = r"/api/jobs/(?P<ns>[^/]+)/(?P<job_id>[^/]+)"
        table = [
            ("GET", r"/api/whoami-v2", self.h_whoami),
            ("GET", r"/api/agent-harnesses", self.h_agent_harnesses),
            ("HEAD GET", r"/api/telemetry/.*", self.h_telemetry),
            ("POST", r"/api/validate-yaml", self.h_validate_yaml),
            ("POST", r"/api/repos/create", self.h_create_repo),
            ("DELETE", r"/api/repos/delete", self.h_delete_repo),
            ("GET", r"/api/(?P<type>models|datasets|spaces)", self.h_list_repos),
            ("GET", repo + r"(?:/revision/(?P<rev>[^/]+))?", self.h_repo_info),
            ("PUT", repo + r"/settings", self.h_settings),
            ("GET", repo + r"/auth-check(?P<write>/write)?", self.h_auth_check),
            ("POST", repo + r"/preupload/(?P<rev>[^/]+)", self.h_preupload),
            ("POST", repo + r"/commit/(?P<rev>[^/]+)", self.h_commit),
            ("GET", repo + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self.h_tree),
            ("POST", repo + r"/paths-info/(?P<rev>[^/]+)", self.h_paths_info),
            ("GET", repo + r"/refs", self.h_refs),
            ("GET", repo + r"/commits/(?P<rev>[^/]+)", self.h_commits),
            ("POST DELETE", repo + r"/branch/(?P<branch>[^/]+)", self.h_branch),
            ("POST", repo + r"/tag/(?P<rev>[^/]+)", self.h_create_tag),
            ("DELETE", repo + r"/tag/(?P<tag>[^/]+)", self.h_delete_tag),
            ("POST", repo + r"/duplicate", self.h_duplicate),
            ("GET", repo + r"/runtime", self.h_space_runtime),
            ("GET POST DELETE", repo + r"/(?P<kind>variables|secrets)", self.h_space_settings),
            ("GET", r"/api/jobs/hardware", self.h_jobs_hardware),
            ("POST", r"/api/jobs/(?P<ns>[^/]+)", self.h_run_job),
            ("GET", r"/api/jobs/(?P<ns>[^/]+)", self.h_list_jobs),
            ("GET", job, self.h_inspect_job),
            ("GET", job + r"/logs", self.h_job_logs),
            ("POST", job + r"/cancel", self.h_cancel_job),
            (
                "GET HEAD",
                r"/(?:(?P<prefix>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)/resolve/(?P<rest>.+)",
                self.h_resolve,
            ),
        ]
        return [(tuple(methods.split()), re.compile(pattern), handler) for methods, pattern, handler in table]

    # ----------------------------------------------------------------------------------------- users

    def h_whoami(self, req: Request) -> Response:
        acct = req.account
        if acct is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return json_response(
            {
                "type": "user",
                "id": acct.uid,
                "name": acct.name,
                "fullname": acct.name.title(),
                "email": f"{acct.name}@example.com",
                "emailVerified": True,
                "isPro": acct.pro,
                "canPay": acct.pro,
                "avatarUrl": f"{self.url}/avatars/{acct.name}.png",
                "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in acct.orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": "hub-double", "role": acct.role}},
            }
        )

    def h_agent_harnesses(self, req: Request) -> Response:
        # The client's telemetry registry (fetched unless HF_HUB_DISABLE_TELEMETRY): empty = no agent detected.
        return json_response({"standardEnvVars": [], "harnesses": {}})

    def h_telemetry(self, req: Request) -> Response:
        # Libraries (TRL, datasets) ping these without HF_HUB_DISABLE_TELEMETRY, as jobs do; the Hub answers 200.
        return json_response({})

    def h_validate_yaml(self, req: Request) -> Response:
        body = req.json()
        _, errors = parse_card(body.get("content", ""), body.get("repoType", "model"))
        if errors:
            return json_response({"errors": [{"message": m} for m in errors], "error": "; ".join(errors)}, 400)
        return json_response({"errors": [], "warnings": []})

    # ----------------------------------------------------------------------------------------- repos

    def h_create_repo(self, req: Request) -> Response:
        body = req.json()
        if req.account is None:
            raise HubError(401, "You must be authenticated to create a repo")
        ns, name = body.get("organization") or req.account.name, body.get("name") or ""
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        if not _NAME_RE.fullmatch(name) or "--" in name or ".." in name:
            raise HubError(400, f"Invalid repo name: {name!r}")
        self._require_write(req, ns)
        repo_id = f"{ns}/{name}"
        if existing := self.store.get(repo_type, repo_id):
            raise HubError(409, f"You already created this {repo_type} repo", url=self.repo_url(existing))
        sdk = body.get("sdk")
        if repo_type == "space" and sdk not in SPACE_SDKS:
            raise HubError(400, f"Invalid sdk for a Space: {sdk!r}; expected one of {list(SPACE_SDKS)}")
        private = body.get("visibility", "public") == "private" or body.get("private") is True
        repo = self.store.create(repo_type, repo_id, author=req.account.name, private=private, sdk=sdk)
        for kind in ("variables", "secrets"):
            for item in body.get(kind) or []:
                getattr(repo, kind)[item["key"]] = {
                    "value": item.get("value"),
                    "description": item.get("description"),
                    "updatedAt": now_iso(),
                }
        return json_response({"url": self.repo_url(repo), "name": repo_id, "id": repo.uid})

    def h_delete_repo(self, req: Request) -> Response:
        body = req.json()
        ns = body.get("organization") or (req.account.name if req.account else "")
        repo = self._repo(req, f"{body.get('type') or 'model'}s", ns, body.get("name", ""), write=True)
        self.store.delete(repo)
        return json_response({})

    def h_settings(self, req: Request, type: str, ns: str, name: str) -> Response:
        repo, body = self._repo(req, type, ns, name, write=True), req.json()
        if "visibility" in body:
            repo.private = body["visibility"] == "private"
        elif "private" in body:
            repo.private = bool(body["private"])
        self.store.save(repo)
        return json_response({})

    def h_auth_check(self, req: Request, type: str, ns: str, name: str, write: str | None = None) -> Response:
        self._repo(req, type, ns, name, write=bool(write))
        return json_response({})

    def _info(self, repo: Repo, commit: Commit, *, blobs: bool = False) -> dict:
        readme = commit.tree.get("README.md")
        card = parse_card(self.store.blob(readme).decode("utf-8", "replace"), repo.type)[0] if readme else None
        siblings = [{"rfilename": p} for p in sorted(commit.tree)]
        if blobs:
            for s in siblings:
                s.update(size=self.store.size(commit.tree[s["rfilename"]]), blobId=commit.tree[s["rfilename"]])
        tags = [str(t) for t in ((card or {}).get("tags") or []) if isinstance(t, (str, int))]
        info: dict[str, Any] = {
            "_id": repo.uid,
            "id": repo.id,
            "author": repo.namespace,
            "sha": commit.id,
            "createdAt": repo.created_at,
            "lastModified": commit.date,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": tags,
            "cardData": card,
            "siblings": siblings,
            "usedStorage": sum(self.store.size(oid) for oid in commit.tree.values()),
        }
        if repo.type == "model" and card:
            info.update({k: card[k] for k in ("library_name", "pipeline_tag") if k in card})
        if repo.type == "space":
            sdk = (card or {}).get("sdk") or repo.sdk
            info.update(
                sdk=sdk,
                runtime=self._runtime(repo, commit, sdk, card),
                subdomain=repo.id.replace("/", "-"),
                host=f"{self.url}/spaces/{repo.id}",
            )
        return info

    def _runtime(self, repo: Repo, commit: Commit, sdk: str | None, card: dict | None) -> dict:
        # The double runs no Space: report RUNNING when the Space has the app file its SDK needs.
        app = {"docker": "Dockerfile", "static": "index.html"}.get(sdk or "", (card or {}).get("app_file", "app.py"))
        stage = "RUNNING" if app in commit.tree else "NO_APP_FILE"
        return {
            "stage": stage,
            "hardware": {"current": "cpu-basic" if stage == "RUNNING" else None, "requested": "cpu-basic"},
            "storage": None,
            "gcTimeout": 172800,
            "devMode": False,
        }

    def h_repo_info(self, req: Request, type: str, ns: str, name: str, rev: str | None = None) -> Response:
        repo = self._repo(req, type, ns, name)
        info = self._info(repo, self.store.resolve(repo, rev), blobs=req.flag("blobs"))
        if expand := req.query.get("expand") or req.query.get("expand[]"):
            info = {k: v for k, v in info.items() if k in (*expand, "id", "_id")}
        return json_response(info)

    def h_list_repos(self, req: Request, type: str) -> Response:
        repo_type, acct = REPO_TYPES[type], req.account
        searches = [s.lower() for s in req.query.get("search", [])]
        filters, author = req.query.get("filter", []), req.arg("author")
        out = []
        for (t, repo_id), repo in sorted(self.store.repos.items()):
            if t != repo_type or (repo.private and not (acct and repo.namespace in acct.namespaces)):
                continue
            if (author and repo.namespace != author) or any(s not in repo_id.lower() for s in searches):
                continue
            info = self._info(repo, self.store.resolve(repo, "main"))
            if any(f not in info["tags"] for f in filters):
                continue
            keep = (
                "_id",
                "id",
                "author",
                "sha",
                "createdAt",
                "lastModified",
                "private",
                "tags",
                "sdk",
                "likes",
                "downloads",
                "library_name",
                "pipeline_tag",
            )
            if req.flag("full"):
                keep += ("siblings", "cardData")
            if req.flag("cardData"):
                keep += ("cardData",)
            out.append({k: v for k, v in info.items() if k in keep})
        if limit := req.arg("limit"):
            out = out[: int(limit)]
        return self._page(req, out)

    def _page(self, req: Request, items: list) -> Response:
        """One page of `items`, with a GitHub-style `Link: <…>; rel="next"` header when more remain."""
        start = int(req.arg("cursor") or 0)
        page, headers = items[start : start + self.page_size], {}
        if start + self.page_size < len(items):
            query = {k: v for k, v in req.query.items() if k != "cursor"}
            query["cursor"] = [str(start + self.page_size)]
            headers["Link"] = f'<{self.url}{req.raw_path}?{urlencode(query, doseq=True)}>; rel="next"'
        return json_response(page, headers=headers)

    def h_duplicate(self, req: Request, type: str, ns: str, name: str) -> Response:
        source, body = self._repo(req, type, ns, name), req.json()
        target_ns, _, target_name = (body.get("repository") or "").rpartition("/")
        self._require_write(req, target_ns)
        if existing := self.store.get(source.type, f"{target_ns}/{target_name}"):
            raise HubError(409, "Repository already exists", url=self.repo_url(existing))
        head = self.store.resolve(source, "main")
        private = body.get("visibility") == "private" or body.get("private") is True
        target = self.store.create(
            source.type, f"{target_ns}/{target_name}", author=req.account.name, private=private, sdk=source.sdk
        )
        ops = [("put", p, self.store.blob(oid)) for p, oid in head.tree.items()]
        self.store.commit(target, "main", ops, author=req.account.name, title=f"Duplicate from {source.id}")
        for kind in ("variables", "secrets"):  # the Space settings the client passed replace the source's
            values = {i["key"]: {**i, "updatedAt": now_iso()} for i in body.get(kind) or []}
            setattr(target, kind, {**getattr(source, kind), **values})
        self.store.save(target)
        return json_response({"url": self.repo_url(target)})

    # ----------------------------------------------------------------------------------------- commits

    def _gitignored(self, path: str, gitignore: str | None) -> bool:
        # Simplified .gitignore: glob patterns on the path or its basename; no negation.
        for pattern in (gitignore or "").splitlines():
            pattern = pattern.strip()
            if pattern and not pattern.startswith(("#", "!")):
                pattern = pattern.rstrip("/")
                if (
                    fnmatch(path, pattern.lstrip("/"))
                    or fnmatch(path.rsplit("/", 1)[-1], pattern)
                    or path.startswith(pattern.lstrip("/") + "/")
                ):
                    return True
        return False

    def h_preupload(self, req: Request, type: str, ns: str, name: str, rev: str) -> Response:
        repo = self._repo(req, type, ns, name, write=True)
        commit, body = self.store.resolve(repo, rev), req.json()
        gitignore = body.get("gitIgnore")
        if gitignore is None and ".gitignore" in commit.tree:
            gitignore = self.store.blob(commit.tree[".gitignore"]).decode("utf-8", "replace")
        files = []
        for f in body.get("files", []):
            # Always "regular": the client then sends contents inline in the commit, never via LFS or Xet.
            entry = {"path": f["path"], "uploadMode": "regular", "shouldIgnore": self._gitignored(f["path"], gitignore)}
            if f["path"] in commit.tree:
                entry["oid"] = commit.tree[f["path"]]  # lets the client skip unchanged files
            files.append(entry)
        return json_response({"files": files, "commitOid": commit.id})

    def h_commit(self, req: Request, type: str, ns: str, name: str, rev: str) -> Response:
        repo = self._repo(req, type, ns, name, write=True)
        items = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        if not items or items[0].get("key") != "header":
            raise HubError(400, "The first NDJSON line of a commit must be the header")
        header, ops = items[0]["value"], []
        for item in items[1:]:
            key, value = item.get("key"), item.get("value") or {}
            if key == "file":
                raw = value.get("content", "")
                data = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                ops.append(("put", value["path"], data))
                if value["path"] == "README.md" and (
                    errors := parse_card(data.decode("utf-8", "replace"), repo.type)[1]
                ):
                    raise HubError(400, "Invalid metadata in README.md: " + "; ".join(errors))
            elif key == "deletedFile":
                ops.append(("delete", value["path"], None))
            elif key == "deletedFolder":
                ops.append(("delete_folder", value["path"], None))
            elif key == "lfsFile":
                raise HubError(422, "LFS files are not supported by the Hub double (preupload answers 'regular')")
            else:
                raise HubError(400, f"Unknown commit operation: {key!r}")
        if not header.get("summary"):
            raise HubError(400, "A commit needs a summary")
        commit, pr_num = self.store.commit(
            repo,
            rev,
            ops,
            author=req.account.name,
            title=header["summary"],
            message=header.get("description", ""),
            parent_commit=header.get("parentCommit"),
            create_pr=req.flag("create_pr"),
        )
        body = {
            "success": True,
            "commitOid": commit.id,
            "commitUrl": f"{self.repo_url(repo)}/commit/{commit.id}",
            "hookOutput": "",
        }
        if pr_num is not None:
            body["pullRequestUrl"] = f"{self.repo_url(repo)}/discussions/{pr_num}"
        return json_response(body)

    def h_commits(self, req: Request, type: str, ns: str, name: str, rev: str) -> Response:
        repo = self._repo(req, type, ns, name)
        out = []
        for c in self.store.history(repo, self.store.resolve(repo, rev)):
            item = {
                "id": c.id,
                "title": c.title,
                "message": c.message,
                "date": c.date,
                "authors": [{"user": c.author, "avatar": None}],
            }
            if "formatted" in req.query.get("expand[]", []):
                item["formatted"] = {"title": c.title, "message": c.message}
            out.append(item)
        return self._page(req, out)

    # ----------------------------------------------------------------------------------------- trees & files

    def _last_commits(self, repo: Repo, commit: Commit) -> dict[str, Commit]:
        """For each file and folder, the newest commit (first-parent history) that changed it."""
        last: dict[str, Commit] = {}
        history = self.store.history(repo, commit)
        for c, parent in zip(history, [*history[1:], None], strict=True):
            before = parent.tree if parent else {}
            changed = {p for p in set(c.tree) | set(before) if c.tree.get(p) != before.get(p)}
            for p in changed | _dirs_of(changed):
                last.setdefault(p, c)
        return last

    def _entries(self, repo: Repo, commit: Commit, paths: Iterable[str], expand: bool) -> list[dict]:
        dirs, last = _dirs_of(commit.tree), self._last_commits(repo, commit) if expand else {}
        out = []
        for p in paths:
            if p in commit.tree:
                oid = commit.tree[p]
                entry = {"type": "file", "oid": oid, "size": self.store.size(oid), "path": p}
                if expand:
                    entry["securityFileStatus"] = {
                        "status": "safe",
                        "avScan": {"virusFound": False, "virusNames": None},
                        "pickleImportScan": None,
                    }
            elif p in dirs:
                inside = sorted((k, v) for k, v in commit.tree.items() if k.startswith(p + "/"))
                entry = {
                    "type": "directory",
                    "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(),
                    "size": 0,
                    "path": p,
                }
            else:
                continue
            if expand and p in last:
                entry["lastCommit"] = {"id": last[p].id, "title": last[p].title, "date": last[p].date}
            out.append(entry)
        return out

    def h_tree(self, req: Request, type: str, ns: str, name: str, rev: str, path: str = "") -> Response:
        repo = self._repo(req, type, ns, name)
        commit = self.store.resolve(repo, rev)
        path, dirs = path.strip("/"), _dirs_of(commit.tree)
        if path and path not in dirs:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound", {"X-Repo-Commit": commit.id})
        prefix, recursive = f"{path}/" if path else "", req.flag("recursive")
        paths = [
            p
            for p in sorted(set(commit.tree) | dirs)
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        ]
        return self._page(req, self._entries(repo, commit, paths, req.flag("expand")))

    def h_paths_info(self, req: Request, type: str, ns: str, name: str, rev: str) -> Response:
        repo = self._repo(req, type, ns, name)
        commit = self.store.resolve(repo, rev)
        if req.headers.get("Content-Type", "").startswith("application/json"):
            body = req.json()
            paths, expand = body.get("paths", []), str(body.get("expand", "")).lower() == "true"
        else:  # the client posts a form: paths=a&paths=b&expand=False
            form = parse_qs(req.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", [""])[0].lower() == "true"
        return json_response(self._entries(repo, commit, [p.strip("/") for p in paths], expand))

    def h_resolve(self, req: Request, ns: str, name: str, rest: str, prefix: str | None = None) -> Response:
        repo = self._repo(req, prefix or "models", ns, name)
        # `rest` was unquoted as a whole; re-split the raw form so a quoted "refs%2Fpr%2F1" stays one revision.
        raw = req.raw_path.split("/resolve/", 1)[1].split("/")
        n = 3 if unquote(raw[0]) == "refs" and len(raw) > 3 else 1
        revision, path = unquote("/".join(raw[:n])), unquote("/".join(raw[n:]))
        commit = self.store.resolve(repo, revision)
        oid = commit.tree.get(path)
        if oid is None:  # X-Repo-Commit lets the client cache the file's absence
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.id})
        data = self.store.blob(oid)
        headers = {
            "X-Repo-Commit": commit.id,
            "ETag": f'"{oid}"',  # the client names the cached blob after it
            "Accept-Ranges": "bytes",
            "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        status, body = 200, data
        if req.method == "GET" and (m := re.fullmatch(r"bytes=(\d*)-(\d*)", req.headers.get("Range", "").strip())):
            start, end = m[1], m[2]
            first = int(start) if start else max(0, len(data) - int(end or 0))
            last = min(int(end), len(data) - 1) if (start and end) else len(data) - 1
            if first >= len(data) or first > last:
                return Response(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
            status, body = 206, data[first : last + 1]
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        if req.method == "HEAD":
            return Response(200, b"", {**headers, "Content-Length": str(len(data))})
        return Response(status, body, headers)

    # ----------------------------------------------------------------------------------------- refs

    def h_refs(self, req: Request, type: str, ns: str, name: str) -> Response:
        repo = self._repo(req, type, ns, name)

        def refs(table: dict, kind: str) -> list[dict]:
            return [{"name": k, "ref": f"refs/{kind}/{k}", "targetCommit": v} for k, v in sorted(table.items())]

        out = {"branches": refs(repo.branches, "heads"), "converts": [], "tags": refs(repo.tags, "tags")}
        if req.flag("include_prs"):
            out["pullRequests"] = [
                {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": sha}
                for n, sha in sorted(repo.pulls.items())
            ]
        return json_response(out)

    def h_branch(self, req: Request, type: str, ns: str, name: str, branch: str) -> Response:
        repo = self._repo(req, type, ns, name, write=True)
        with self.store.lock:
            if req.method == "DELETE":
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch 'main'")
                if repo.branches.pop(branch, None) is None:
                    raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            else:
                if branch in repo.branches:
                    raise HubError(409, f"Reference already exists: refs/heads/{branch}")
                if not re.fullmatch(r"[A-Za-z0-9._/-]+", branch) or branch.startswith("refs/"):
                    raise HubError(400, f"Invalid branch name: {branch!r}")
                repo.branches[branch] = self.store.resolve(repo, req.json().get("startingPoint")).id
            self.store.save(repo)
        return json_response({})

    def h_create_tag(self, req: Request, type: str, ns: str, name: str, rev: str) -> Response:
        repo, body = self._repo(req, type, ns, name, write=True), req.json()
        with self.store.lock:
            if body.get("tag") in repo.tags:
                raise HubError(409, f"Tag already exists: {body['tag']}")
            repo.tags[body["tag"]] = self.store.resolve(repo, rev).id
            self.store.save(repo)
        return json_response({})

    def h_delete_tag(self, req: Request, type: str, ns: str, name: str, tag: str) -> Response:
        repo = self._repo(req, type, ns, name, write=True)
        with self.store.lock:
            if repo.tags.pop(tag, None) is None:
                raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
            self.store.save(repo)
        return json_response({})

    # ----------------------------------------------------------------------------------------- spaces

    def h_space_runtime(self, req: Request, type: str, ns: str, name: str) -> Response:
        if type != "spaces":
            raise HubError(404, "Not found")
        repo = self._repo(req, type, ns, name)
        return json_response(self._info(repo, self.store.resolve(repo, "main"))["runtime"])

    def h_space_settings(self, req: Request, type: str, ns: str, name: str, kind: str) -> Response:
        if type != "spaces":
            raise HubError(404, "Not found")
        repo = self._repo(req, type, ns, name, write=req.method != "GET" or kind == "secrets")
        table: dict = getattr(repo, kind)
        if req.method == "POST":
            body = req.json()
            table[body["key"]] = {
                "value": body.get("value"),
                "description": body.get("description"),
                "updatedAt": now_iso(),
            }
        elif req.method == "DELETE":
            table.pop(req.json().get("key"), None)
        self.store.save(repo)
        if kind == "secrets":  # secret values are write-only
            return json_response({k: {kk: vv for kk, vv in v.items() if kk != "value"} for k, v in table.items()})
        return json_response(table)

    # ----------------------------------------------------------------------------------------- jobs

    def _job(self, req: Request, ns: str, job_id: str) -> Job:
        if req.account is None or ns not in req.account.namespaces:
            raise HubError(401 if req.account is None else 403, "You don't have access to jobs of this namespace")
        job = self.jobs.jobs.get(job_id)
        if job is None or job.namespace != ns:
            raise HubError(404, f"Job not found: {job_id}")
        return job

    def h_jobs_hardware(self, req: Request) -> Response:
        return json_response(
            [
                {
                    "name": f,
                    "prettyName": f,
                    "cpu": "2 vCPU",
                    "ram": "16 GB",
                    "ephemeralStorage": "50 GB",
                    "accelerator": None,
                    "unitCostMicroUSD": 0,
                    "unitCostUSD": 0.0,
                    "unitLabel": "minute",
                }
                for f in JOB_FLAVORS
            ]
        )

    def h_run_job(self, req: Request, ns: str) -> Response:
        owner, spec = self._require_write(req, ns), req.json()
        if not isinstance(spec.get("command"), list) or not spec["command"]:
            raise HubError(400, "A job needs a non-empty `command` list")
        if not (spec.get("dockerImage") or spec.get("spaceId")):
            raise HubError(400, "A job needs a `dockerImage` or a `spaceId`")
        if spec.get("flavor", "cpu-basic") not in JOB_FLAVORS:
            raise HubError(400, f"Invalid flavor: {spec.get('flavor')!r}")
        for volume in spec.get("volumes") or []:
            if volume.get("type") != "bucket":
                raise HubError(400, "Only bucket volumes are supported by the Hub double: fetch repos instead")
            if not str(volume.get("mountPath", "")).startswith("/") or not _REPO_ID_RE.fullmatch(
                volume.get("source", "")
            ):
                raise HubError(400, f"Invalid volume: {volume!r}")
            if volume["source"].split("/")[0] not in owner.namespaces:
                raise HubError(403, f"You don't have the rights to mount bucket {volume['source']}")
        return json_response(self.jobs.info(self.jobs.submit(spec, ns, owner)))

    def h_list_jobs(self, req: Request, ns: str) -> Response:
        if req.account is None or ns not in req.account.namespaces:
            raise HubError(401 if req.account is None else 403, "You don't have access to jobs of this namespace")
        stages = set(req.query.get("stage", []))
        labels = [label.split("=", 1) for label in req.query.get("label", [])]
        jobs = [
            j
            for j in reversed(list(self.jobs.jobs.values()))
            if j.namespace == ns
            and (not stages or j.stage in stages)
            and all((j.spec.get("labels") or {}).get(k) == v for k, v in labels)
        ]
        return self._page(req, [self.jobs.info(j) for j in jobs])

    def h_inspect_job(self, req: Request, ns: str, job_id: str) -> Response:
        return json_response(self.jobs.info(self._job(req, ns, job_id)))

    def h_job_logs(self, req: Request, ns: str, job_id: str) -> Response:
        job = self._job(req, ns, job_id)
        tail = int(req.arg("tail")) if req.arg("tail") else None
        return Response(
            200,
            self.jobs.sse(job, tail, self.sse_keepalive_s),
            {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )

    def h_cancel_job(self, req: Request, ns: str, job_id: str) -> Response:
        job = self._job(req, ns, job_id)
        self._require_write(req, ns)
        self.jobs.cancel(job)
        return json_response({})

    def _fetch_script(self, url: str, workdir: Path) -> Path:
        """`uv run URL`: download the script like uv does (plain GET, no Hub token)."""
        for hub_url in ("https://huggingface.co", "https://hf.co"):
            if url.startswith(hub_url + "/"):
                url = self.url + url[len(hub_url) :]
        if not url.startswith(self.url + "/"):
            raise JobSetupError(f"cannot fetch {url}: the Hub double has no network (host the script in a repo)")
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                data = resp.read()
        except urllib.error.HTTPError as e:
            raise JobSetupError(f"failed to fetch {url}: HTTP {e.code}") from e
        script = workdir / (urlsplit(url).path.rsplit("/", 1)[-1] or "script.py")
        script.write_bytes(data)
        return script
