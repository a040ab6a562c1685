"""Hub failures reach the user as one line naming the repo and the fix (401, 403, 404, persistent 5xx)."""

from __future__ import annotations

import pytest

from lorallama import cli, hub
from lorallama.errors import HubError


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(hub, "RETRY_DELAY", 0.01)


def publish(*extra: str) -> int:
    return cli.main(["data", "publish", "demo-chat", "--repo", "tester/published", *extra])


def test_a_rejected_token_is_one_line_that_says_set_hf_token(hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_canary")
    assert publish() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lorallama: error: ")
    assert "401" in err and "set HF_TOKEN to a valid token" in err and "Traceback" not in err
    assert "hf_not_a_real_token_canary" not in err  # the token is never printed
    assert not hub.repo_exists("tester/published", "dataset")


def test_a_read_only_token_is_told_to_make_a_write_token(hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.read_token)
    assert publish() == 2
    err = capsys.readouterr().err
    assert "the token cannot write to dataset repo tester/published (403" in err
    assert "create a write token" in err and err.count("\n") == 1
    assert hub.read_token not in err


def test_a_missing_repo_names_the_repo_and_the_recipe_key(hub):
    with pytest.raises(HubError, match=r"model repo tester/missing not found \(404.*create it.*hub\.model_repo"):
        hub_upload("tester/missing")


def hub_upload(repo: str) -> str:
    from lorallama import hub as lorallama_hub

    return lorallama_hub.upload_files(repo, {"a.txt": b"a"}, "test")


def test_a_hub_that_keeps_failing_is_retried_then_reported(hub, quick_retries, capsys):
    hub.fail_next(100, status=503, path=r"/api/repos/create")
    assert publish() == 2
    err = capsys.readouterr().err
    assert "kept failing (HTTP 503" in err and "after retries" in err and "nothing was changed" in err
    assert hub.count("POST", "/api/repos/create") == 5  # the first try and four retries
    assert not hub.repo_exists("tester/published", "dataset")


def test_a_passing_fault_is_retried_and_the_command_succeeds(hub, quick_retries, capsys):
    hub.fail_next(2, status=502, path=r"/api/repos/create")
    assert publish() == 0, capsys.readouterr().err
    assert hub.repo_exists("tester/published", "dataset")


def test_debug_shows_the_traceback(hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.read_token)
    monkeypatch.setenv("LORALLAMA_DEBUG", "1")
    assert publish() == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "HfHubHTTPError" in err
    assert err.rstrip().splitlines()[-1].startswith("lorallama: error: ")
