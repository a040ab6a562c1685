"""Names on the Hub: repo ids, namespaces, URLs, licences, and the job's own file names.

One ``is_repo_id`` and one ``hub_url`` for the whole project; a fork's ``HF_NAMESPACE`` is applied here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import __version__

# Suffixes that make ``a/b.jsonl`` a local path rather than a repo id.
LOCAL_SUFFIXES = {".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt", ".yaml", ".yml", ".md", ".gguf"}
_REPO_ID = re.compile(r"[\w][\w.-]*/[\w][\w.-]*")
STUDIO_SPACE = "lorallama/studio"  # spaces/studio: where anyone fine-tunes their own; every card and chat page links it


def is_repo_id(name: str | None) -> bool:
    """``namespace/name`` that is not a file or folder here (``data/chat.jsonl`` is a local file)."""
    return (
        bool(name)
        and _REPO_ID.fullmatch(name) is not None
        and Path(name).suffix.lower() not in LOCAL_SUFFIXES
        and not Path(name).exists()
    )


def hub_url(repo_id: str, repo_type: str = "model") -> str:
    """The repo's page on the Hub the client talks to (``HF_ENDPOINT``)."""
    from huggingface_hub import constants

    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]
    return f"{constants.ENDPOINT.rstrip('/')}/{prefix}{repo_id}"


def namespace_override() -> str | None:
    """``HF_NAMESPACE`` (a user or organisation) replaces the namespace of every repo the project writes."""
    value = os.environ.get("HF_NAMESPACE", "").strip()
    return value or None


def with_namespace(repo_id: str | None, namespace: str | None) -> str | None:
    """``lorallama/x`` → ``<namespace>/x``; unchanged without a namespace."""
    if not repo_id or not namespace:
        return repo_id
    return f"{namespace}/{repo_id.split('/', 1)[1]}"


def space_host(space: str) -> str:
    """``lorallama/finetome`` → ``https://lorallama-finetome.hf.space`` (the app itself, for iframes and clients)."""
    return f"https://{re.sub(r'[^a-z0-9]+', '-', space.lower()).strip('-')}.hf.space"


def license_for(base: str | None) -> str | None:
    """The Hub licence id of a base model family (Llama 3.2 bases carry the Llama 3.2 Community License)."""
    name = (base or "").lower().replace("_", "-")
    for pattern, licence in (
        (r"llama-?3\.3", "llama3.3"),
        (r"llama-?3\.2", "llama3.2"),
        (r"llama-?3\.1", "llama3.1"),
        (r"llama-?3\b", "llama3"),
        (r"smollm", "apache-2.0"),
    ):
        if re.search(pattern, name):
            return licence
    return None


def wheel_name() -> str:
    """The lorallama wheel a job bundle carries (pure Python, so one name fits every machine)."""
    return f"lorallama-{__version__}-py3-none-any.whl"


def rerun_command(repo: str, flavor: str, timeout: str) -> str:
    """The one line that re-runs training from the model repo alone."""
    from huggingface_hub import hf_hub_url

    wheel = hf_hub_url(repo, f"job/{wheel_name()}")
    script = hf_hub_url(repo, "train.py")
    return (
        f'hf jobs uv run --flavor {flavor} --timeout {timeout} --secrets HF_TOKEN --with "lorallama @ {wheel}" '
        f"{script} --repo {repo}"
    )
