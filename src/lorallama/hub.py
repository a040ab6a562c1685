"""Every Hub read and write goes through here (``huggingface_hub`` only).

The token comes from the environment (``HF_TOKEN``) through ``huggingface_hub`` itself: it is never passed on the
command line, printed, logged or written to a file here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

log = logging.getLogger("lorallama")

CHECKPOINT_DIR = "last-checkpoint"  # where Trainer's hub_strategy="checkpoint" keeps the newest checkpoint
RETRY_DELAY = 1.0  # seconds before the first retry; doubles each time
T = TypeVar("T")


class HubError(RuntimeError):
    """A Hub operation that failed for good; the message says what was kept and what to do."""


def api():
    from huggingface_hub import HfApi

    return HfApi()


def _retryable(exc: BaseException) -> bool:
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is None or status >= 500 or status == 429
    return isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError)


def with_retries(fn: Callable[[], T], what: str, attempts: int = 5, delay: float | None = None) -> T:
    """Run ``fn``, retrying server errors and dropped connections with exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            if attempt == attempts or not _retryable(e):
                raise
            wait = (RETRY_DELAY if delay is None else delay) * 2 ** (attempt - 1)
            log.warning("%s failed (%s); retry %d/%d in %.0f s", what, type(e).__name__, attempt, attempts - 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def ensure_repo(repo_id: str, repo_type: str = "model", private: bool = False, space_sdk: str | None = None) -> None:
    with_retries(
        lambda: api().create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk),
        f"creating {repo_type} repo {repo_id}",
    )


def read_file(repo_id: str, path: str, repo_type: str = "model") -> bytes | None:
    """A file's bytes at the head of main, or None when the repo or the file does not exist."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        local = with_retries(lambda: hf_hub_download(repo_id, path, repo_type=repo_type), f"reading {path}")
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return None
    return Path(local).read_bytes()


@dataclass
class RemoteRun:
    """What a model repo says about its training run."""

    checkpoint_step: int | None
    finished: bool
    recipe: dict[str, Any] | None


def remote_run(repo_id: str) -> RemoteRun:
    state = read_file(repo_id, f"{CHECKPOINT_DIR}/trainer_state.json")
    run = read_file(repo_id, "run.json")
    recipe = read_file(repo_id, "recipe.yaml")
    return RemoteRun(
        checkpoint_step=json.loads(state)["global_step"] if state else None,
        finished=bool(run and json.loads(run).get("finished")),
        recipe=yaml.safe_load(recipe) if recipe else None,
    )


def download_checkpoint(repo_id: str, dest: Path) -> Path:
    """The repo's ``last-checkpoint/`` as a local checkpoint folder."""
    from huggingface_hub import snapshot_download

    with_retries(
        lambda: snapshot_download(repo_id, allow_patterns=[f"{CHECKPOINT_DIR}/*"], local_dir=dest),
        f"downloading the checkpoint of {repo_id}",
    )
    return dest / CHECKPOINT_DIR


def push_folders(repo_id: str, folders: dict[str, Path], message: str) -> str:
    """Upload local folders (path in repo → folder) as one commit; returns the commit id."""
    files: dict[str, Path | bytes] = {
        f"{prefix}/{f.relative_to(folder)}".lstrip("/"): f
        for prefix, folder in folders.items()
        for f in sorted(folder.rglob("*"))
        if f.is_file() and not f.name.startswith(".")
    }
    return upload_files(repo_id, files, message)


def upload_files(repo_id: str, files: dict[str, Path | bytes], message: str, repo_type: str = "model") -> str:
    """Upload single files (path in repo → local path or bytes) as one commit."""
    from huggingface_hub import CommitOperationAdd

    operations = [
        CommitOperationAdd(path_in_repo=p, path_or_fileobj=v if isinstance(v, bytes) else str(v))
        for p, v in files.items()
    ]
    info = with_retries(
        lambda: api().create_commit(repo_id, operations=operations, commit_message=message, repo_type=repo_type),
        f"uploading to {repo_id}",
    )
    return info.oid
