"""Every Hub read and write goes through here (``huggingface_hub`` only).

The token comes from the environment (``HF_TOKEN``) through ``huggingface_hub`` itself: it is never passed on the
command line, printed, logged or written to a file here. Work done for someone else (a visitor of the studio Space,
signed in with OAuth) runs inside ``with acting_for(their_token):``: every call made here in that block sends their
token, never the environment's.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import HubError

log = logging.getLogger("lorallama")

CHECKPOINT_DIR = "last-checkpoint"  # where Trainer's hub_strategy="checkpoint" keeps the newest checkpoint
RETRY_DELAY = 1.0  # seconds before the first retry; doubles each time
T = TypeVar("T")
_ACTING_FOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("lorallama_acting_for", default=None)

__all__ = [
    "HubError",
    "acting_for",
    "api",
    "with_retries",
    "explain",
    "ensure_repo",
    "read_file",
    "remote_run",
    "upload_files",
]


@contextlib.contextmanager
def acting_for(token: str) -> Iterator[None]:
    """Every Hub call made here inside the block sends ``token`` (a signed-in visitor's), not HF_TOKEN.

    The token lives in a context variable of the calling thread (or task) only: another visitor's request, served
    at the same time in another thread, never sees it."""
    if not token:
        raise HubError("no token to act with: sign in first", 401)
    previous = _ACTING_FOR.set(token)
    try:
        yield
    finally:
        _ACTING_FOR.reset(previous)


def acting_token() -> str | None:
    """The token of the enclosing ``acting_for`` block, or None (then huggingface_hub finds HF_TOKEN itself)."""
    return _ACTING_FOR.get()


def token() -> str | None:
    """The token Hub calls send here: the ``acting_for`` one, else HF_TOKEN or the saved login."""
    from huggingface_hub import get_token

    return _ACTING_FOR.get() or get_token()


def api():
    from huggingface_hub import HfApi

    return HfApi(token=_ACTING_FOR.get())


def _status(exc: BaseException) -> int | None:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code
    return None


def _retryable(exc: BaseException) -> bool:
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        status = _status(exc)
        return status is None or status >= 500 or status == 429
    return isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError)


def _server_message(exc: BaseException) -> str:
    """The Hub's own reason (its JSON ``error``), never a header or the token."""
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
    except Exception:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"].strip()
    return type(exc).__name__


def explain(exc: BaseException, what: str, repo_id: str | None = None, repo_type: str = "model") -> HubError:
    """A Hub failure as a ``HubError`` that names the repo and the fix (the caller raises it ``from exc``)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    status = _status(exc)
    kind = {"model": "model repo", "dataset": "dataset repo", "space": "Space"}.get(repo_type, "repo")
    target = f"{kind} {repo_id}" if repo_id else "the Hub"
    reason = _server_message(exc)
    if status == 401:
        if isinstance(exc, RepositoryNotFoundError) and repo_id:
            return HubError(
                f"{what}: {target} not found, or private and no valid token was sent: create it, check the name "
                "(hub.model_repo in the recipe), or set HF_TOKEN to a token that can read it",
                status,
            )
        return HubError(
            f"{what}: the Hub rejected the token (401: {reason}): set HF_TOKEN to a valid token "
            "(create one at https://huggingface.co/settings/tokens)",
            status,
        )
    if status == 403:
        return HubError(
            f"{what}: the token cannot write to {target} (403: {reason}): create a write token (or a fine-grained "
            f"one with write access to {repo_id.split('/')[0] if repo_id else 'that namespace'}) and set HF_TOKEN, "
            "or set HF_NAMESPACE to a namespace you own",
            status,
        )
    if status == 404 or isinstance(exc, RepositoryNotFoundError):
        return HubError(
            f"{what}: {target} not found (404: {reason}): create it, or check its name (hub.model_repo in the "
            "recipe, or HF_NAMESPACE)",
            status,
        )
    if status is not None and status >= 500 or status == 429 or status is None:
        how = f"HTTP {status}" if status else type(exc).__name__
        return HubError(
            f"{what}: the Hub kept failing ({how}: {reason}) after retries: nothing was changed there; try again "
            "later (status: https://status.huggingface.co)",
            status,
        )
    return HubError(f"{what}: the Hub refused it (HTTP {status}: {reason}): check the request and try again", status)


def with_retries(
    fn: Callable[[], T],
    what: str,
    attempts: int = 5,
    delay: float | None = None,
    repo_id: str | None = None,
    repo_type: str = "model",
) -> T:
    """Run ``fn``, retrying server errors and dropped connections with exponential backoff.

    A failure that retrying cannot fix (401, 403, 404, other 4xx) or that persists becomes a ``HubError`` naming
    ``repo_id`` and the fix. Errors that are not the Hub's (a bug, a local file) pass through unchanged.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            if not is_hub_failure(e):
                raise
            if attempt == attempts or not _retryable(e):
                raise explain(e, what, repo_id, repo_type) from e
            wait = (RETRY_DELAY if delay is None else delay) * 2 ** (attempt - 1)
            log.warning("%s failed (%s); retry %d/%d in %.0f s", what, type(e).__name__, attempt, attempts - 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def is_hub_failure(exc: BaseException) -> bool:
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(exc, HfHubHTTPError | httpx.TransportError | ConnectionError | TimeoutError)


def ensure_repo(repo_id: str, repo_type: str = "model", private: bool = False, space_sdk: str | None = None) -> None:
    with_retries(
        lambda: api().create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk),
        f"creating {repo_type} repo {repo_id}",
        repo_id=repo_id,
        repo_type=repo_type,
    )


def read_file(repo_id: str, path: str, repo_type: str = "model") -> bytes | None:
    """A file's bytes at the head of main, or None when the repo or the file does not exist."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    def fetch() -> str | None:
        try:
            return hf_hub_download(repo_id, path, repo_type=repo_type, token=_ACTING_FOR.get())
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
            return None

    local = with_retries(fetch, f"reading {path} of {repo_id}", repo_id=repo_id, repo_type=repo_type)
    return Path(local).read_bytes() if local else None


def download_files(repo_id: str, patterns: list[str], what: str, repo_type: str = "model") -> Path:
    """The files of ``repo_id`` matching ``patterns`` at the head of main, as a local snapshot folder."""
    from huggingface_hub import snapshot_download

    folder = with_retries(
        lambda: snapshot_download(repo_id, repo_type=repo_type, allow_patterns=patterns, token=_ACTING_FOR.get()),
        f"downloading {what}",
        repo_id=repo_id,
        repo_type=repo_type,
    )
    return Path(folder)


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
        lambda: snapshot_download(
            repo_id, allow_patterns=[f"{CHECKPOINT_DIR}/*"], local_dir=dest, token=_ACTING_FOR.get()
        ),
        f"downloading the checkpoint of {repo_id}",
        repo_id=repo_id,
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
        repo_id=repo_id,
        repo_type=repo_type,
    )
    return info.oid
