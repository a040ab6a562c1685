"""Pytest plugin: the Hub double for the whole session, a clean store and cache per test.

Load it from the top conftest with ``pytest_plugins = ["support.hub_fixture"]`` (or ``-p support.hub_fixture``).

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_DISABLE_XET once, at import. So this module binds the
double's port and sets the environment when it is imported, which pytest does while loading plugins: before test
modules import huggingface_hub or transformers. Importing huggingface_hub earlier (in a conftest, before this
plugin) is an error, reported at start-up.

Fixtures:
    hub      the running `HubDouble`, reset for this test: `.url`, `.token` (write token of user `hub.user`, also in
             HF_TOKEN), `.read_token`, `.root` (store dir), `.files()`, `.commits()`, `.seed_repo()`, faults
             (`fail_next`, `drop_next`, `add_latency`, `kill_job`), jobs (`wait_job`, `job_logs`). A test that hits
             an endpoint the double lacks fails at teardown (set `hub.allow_unhandled = True` to accept it).
    hub_api  an `HfApi` bound to the double with the write token.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.hub_double import HubDouble

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="hub-double-home-"))
_HUB = HubDouble(root=_SESSION_HOME / "store")  # binds the port now: no race with another process later

_ENV = {
    "HF_ENDPOINT": _HUB.url,
    "HF_HOME": str(_SESSION_HOME / "hf-home"),  # no token file, no cache from the developer's machine
    "HF_HUB_DISABLE_TELEMETRY": "1",  # else the first request is GET /api/agent-harnesses
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1",  # run_uv_job is the designed job path
}
_DROPPED_ENV = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HF_TOKEN_PATH",
    "HF_XET_CACHE",
)


def _configure_environment() -> None:
    if "huggingface_hub.constants" in sys.modules:
        from huggingface_hub import constants

        if _HUB.url != constants.ENDPOINT:
            raise pytest.UsageError(
                "huggingface_hub was imported before support.hub_fixture set HF_ENDPOINT: load the plugin first "
                "(pytest_plugins = ['support.hub_fixture'] at the top of tests/conftest.py, no earlier import)."
            )
    for key in _DROPPED_ENV:
        os.environ.pop(key, None)
    os.environ.update(_ENV)
    # Xet off for the test process (the double answers "regular" anyway); a developer can force it on with
    # HF_HUB_DISABLE_XET=0 to exercise the client's pipelined upload path. Jobs never inherit it.
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")


_configure_environment()


def pytest_unconfigure(config: pytest.Config) -> None:
    _HUB.stop()
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubDouble]:
    """The Hub double with an empty store, HF_TOKEN set to its write token, and a private HF cache."""
    from huggingface_hub import constants

    _HUB.start()
    _HUB.reset(root=tmp_path / "hub-store")
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_TOKEN", _HUB.token)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    # The client computed these paths at import: patch the module values too.
    for name, value in {
        "HF_HOME": home,
        "HF_HUB_CACHE": home / "hub",
        "HUGGINGFACE_HUB_CACHE": home / "hub",
        "HF_ASSETS_CACHE": home / "assets",
        "HF_TOKEN_PATH": home / "token",
        "HF_STORED_TOKENS_PATH": home / "stored_tokens",
        "HF_XET_CACHE": home / "xet",
    }.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, str(value))
    yield _HUB
    _HUB.jobs.kill_all()
    _HUB.clear_faults()
    if _HUB.unhandled and not _HUB.allow_unhandled:
        pytest.fail(
            "The Hub double got requests it does not implement (add the endpoint or set hub.allow_unhandled):\n"
            + "\n".join(_HUB.unhandled),
            pytrace=False,
        )


@pytest.fixture
def hub_api(hub: HubDouble):
    """An HfApi talking to the double with the write token."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.url, token=hub.token)
