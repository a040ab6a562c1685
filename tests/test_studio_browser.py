"""The studio end to end, as a visitor sees it, in headless Chromium against the Hub double: sign in (a token stands
in for the Hub's OAuth, as Gradio's local mode does), fill the form, a refused dataset, the check, the launch (the
training job and the watcher job run in the double, in the visitor's namespace, on a tiny model), the training job
killed and the watcher relaunching it, the run followed on the page and again after a reload, then one click for
the chat Space, whose files are started from the double with the Space variables the studio set, and which answers.

Along the way, the security rules: the studio server holds its own Space token (user ``lorallama``) and the visitor a
canary token; after start-up no request carries the Space's token, and the canary appears in no page, API
response, log, repo file, job command line or job environment."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from lorallama import hub as hub_mod
from lorallama.training import jobs
from support.apps import launched
from support.studio import CANARY, CHAT_SPACE, DATASET, SPACE_OWNER, SPACE_TOKEN, VISITOR, copy_space, make_world

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (`make chromium`)"),
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
REPO = f"{VISITOR}/my-captain"
SPACE = f"{VISITOR}/my-chat"


def wait_until(condition, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def wait_text(page, elem_id: str, text: str, timeout: float = 30_000) -> None:
    """Until the element shows ``text`` (it may not be rendered yet)."""
    page.wait_for_function(
        "([id, text]) => { const el = document.getElementById(id); return !!el && el.innerText.includes(text); }",
        arg=[elem_id, text],
        timeout=timeout,
    )


def field(page, elem_id: str):
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def screenshot(page, name: str) -> None:
    """What the visitor sees at that point, kept for review (LORALLAMA_SCREENS, default /tmp/screens)."""
    folder = Path(os.environ.get("LORALLAMA_SCREENS", "/tmp/screens"))
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def training_jobs(hub) -> list:
    found = [j for j in hub.jobs.jobs.values() if (j.spec.get("labels") or {}).get("lorallama-role") == "train"]
    return sorted(found, key=lambda j: j.t_created)


def run_finished(hub) -> bool:
    files = hub.files(REPO) if hub.repo_exists(REPO) else {}
    return "run.json" in files and bool(json.loads(files["run.json"]).get("finished"))


def space_app(folder: Path, variables: dict[str, str], monkeypatch):
    """The Space's ``app.py`` (its files as the double holds them) built with the Space variables as its environment,
    the way the chat Spaces are served in tests (``support.apps.launched``); no token: the Space has no secret."""
    import runpy

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("LORALLAMA_RECIPES", raising=False)
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    return runpy.run_path(str(folder / "app.py"), run_name="space_app")["demo"]


def test_a_visitor_trains_watches_a_relaunch_and_chats_with_their_own_space(
    hub, tmp_path, tiny_chatml, monkeypatch, caplog
):
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    from lorallama.studio.app import build_studio, launch_studio
    from lorallama.studio.config import StudioConfig

    caplog.set_level(logging.INFO)
    world = make_world(hub, tmp_path, tiny_chatml, max_steps=24, save_steps=4)
    monkeypatch.setenv("LORALLAMA_RECIPES", str(world.recipes))
    monkeypatch.setenv("HF_TOKEN", SPACE_TOKEN)  # the studio Space's own token
    monkeypatch.setattr(hub_mod, "RETRY_DELAY", 0.05)
    built = jobs.build_wheel(tmp_path / "wheel-build")
    monkeypatch.setattr(jobs, "build_wheel", lambda dest: Path(shutil.copy(built, Path(dest) / built.name)))

    config = StudioConfig(recipes=["tiny"], chat_space=CHAT_SPACE, max_attempts=3, backoff=1, refresh=2, sample_rows=50)
    demo = build_studio(config)
    _, url, _ = launch_studio(demo, prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    # Gradio's local OAuth stand-in reads the machine's profile once at start-up (in a Space the Hub's OAuth runs
    # instead); from here on, the Space's own token must not be sent at all.
    started = len(hub.requests)
    pages: list[str] = []
    responses: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1200, "height": 1400}).new_page()
            page.set_default_timeout(30_000)
            page.on("response", lambda r: responses.append(_body(r)))

            # Not signed in: the page says what to do, and nothing runs.
            page.goto(url)
            page.wait_for_selector("#studio-check")
            page.click("#studio-check")
            wait_text(page, "studio-message", "not signed in")

            # Sign in.
            page.get_by_role("button", name="Sign in with Hugging Face").click()
            page.wait_for_selector("#lorallama-token")
            page.fill("#lorallama-token", CANARY)
            page.click("#lorallama-signin")
            wait_text(page, "studio-who", "Signed in as")
            assert "Signed in as visitor" in text_of(page, "studio-who")

            # The form: the recipe's defaults are there; a dataset that does not exist is refused, costing nothing.
            assert field(page, "studio-epochs").input_value() == "1" and field(page, "studio-rank").input_value() == "4"
            page.get_by_label("your Hub dataset").check()
            field(page, "studio-dataset").fill(f"{VISITOR}/no-such-chats")
            field(page, "studio-messages-field").fill("conversations")
            field(page, "studio-name").fill("my-captain")
            page.click("#studio-check")
            wait_text(page, "studio-message", "was not found")
            page.click("#studio-launch")
            wait_text(page, "studio-message", "check the data first")
            assert not hub.jobs.jobs

            # The real dataset: the report, the table, then the launch.
            field(page, "studio-dataset").fill(DATASET)
            page.click("#studio-check")
            wait_text(page, "studio-message", "✅ checked")
            assert "dropped     16  duplicate" in text_of(page, "studio-report")
            assert "t4-small" in text_of(page, "studio-table") and "ETA" in text_of(page, "studio-table")
            pages.append(page.content())
            screenshot(page, "studio-checked")
            page.click("#studio-launch")
            wait_text(page, "studio-message", "launched")
            assert field(page, "studio-watch-repo").input_value() == REPO

            # The first training job is killed (a machine lost) after its first checkpoint reached the Hub.
            first = wait_until(lambda: training_jobs(hub)[:1], 60, "the training job")[0]
            wait_until(
                lambda: "last-checkpoint/trainer_state.json" in hub.files(REPO) or first.done, 240, "a checkpoint", 0.05
            )
            assert not first.done, f"{first.stage} {first.message}: " + "\n".join(first.log_lines[-40:])
            hub.kill_job(first.id)
            wait_text(page, "studio-stage", "attempt 2", 90_000)
            wait_until(lambda: run_finished(hub), 300, "the relaunched run to finish", every=0.5)
            wait_text(page, "studio-stage", "finished", 30_000)
            pages.append(page.content())

            # After a reload, from the repo alone: the run, its stage and curve are found again.
            page.reload()
            wait_text(page, "studio-stage", "finished")
            assert field(page, "studio-watch-repo").input_value() == REPO
            assert page.locator("#studio-loss canvas, #studio-loss svg").count() > 0

            # One click: the chat Space.
            field(page, "studio-space-name").fill("my-chat")
            page.click("#studio-publish")
            wait_text(page, "studio-published", "your chat Space is")
            pages.append(page.content())
            screenshot(page, "studio-published")
            browser.close()
    finally:
        demo.close()

    # The watcher relaunched the killed job, and the second job resumed from the Hub's checkpoint.
    trained = training_jobs(hub)
    assert [j.stage for j in trained] == ["ERROR", "COMPLETED"] and "killed" in (trained[0].message or "")
    assert any("resum" in line.lower() and "step" in line for line in trained[1].log_lines), trained[1].log_lines[-20:]
    watchers = [j for j in hub.jobs.jobs.values() if j.spec["labels"]["lorallama-role"] == "watch"]
    assert len(watchers) == 1 and hub.wait_job(watchers[0].id, timeout=30).stage == "COMPLETED"
    assert all(j.namespace == VISITOR for j in hub.jobs.jobs.values())

    # The chat Space the studio made answers with the new adapter, configured by its variables alone.
    variables = {k: v["value"] for k, v in hub.store.get("space", SPACE).variables.items()}
    assert variables["LORALLAMA_ADAPTER"] == REPO
    folder = copy_space(hub, SPACE, tmp_path / "my-chat")
    before_space = len(hub.requests)
    with launched(space_app(folder, variables, monkeypatch)) as space_url:
        answer = Client(space_url, verbose=False).predict("Hello", api_name="/chat")
        assert isinstance(answer, str) and answer
        with urllib.request.urlopen(space_url + "config") as r:
            space_page = r.read().decode()
        assert REPO in space_page  # the page names the adapter it serves
    adapter_reads = [r for r in hub.requests[before_space:] if f"/{REPO}/" in r.path]
    assert adapter_reads and {r.user for r in adapter_reads} == {None}  # the public adapter, read with no token

    # Whose token did what: after start-up, never the Space's own; the visitor's did the visitor's work.
    after = hub.requests[started:]
    assert [r for r in after if r.user == SPACE_OWNER] == []
    assert {r.user for r in after if r.method == "POST" and r.path.startswith("/api/jobs/")} == {VISITOR}
    assert {r.user for r in after if r.path in ("/api/repos/create",) or r.path.endswith("/duplicate")} == {VISITOR}

    # The canary is nowhere it should not be.
    places = {"pages": "\n".join(pages), "responses": "\n".join(responses), "logs": caplog.text}
    places["chat Space page"] = space_page
    for job in hub.jobs.jobs.values():
        places[f"job {job.id} log"] = "\n".join(job.log_lines)
        spec = {k: job.spec.get(k) for k in ("command", "arguments", "environment", "labels")}
        places[f"job {job.id} spec"] = json.dumps(spec)
        places[f"job {job.id} info"] = json.dumps(hub.jobs.info(job), default=str)
    for (kind, repo_id), _ in list(hub.store.repos.items()):
        for path, blob in hub.files(repo_id, kind).items():
            assert CANARY.encode() not in blob, (kind, repo_id, path)
        places[f"{kind} {repo_id} variables"] = json.dumps(hub.store.get(kind, repo_id).variables)
    leaked = [where for where, text in places.items() if CANARY in text]
    assert leaked == []


def _body(response) -> str:
    with contextlib.suppress(Exception):
        if "text/html" in response.headers.get("content-type", "") or "json" in response.headers.get(
            "content-type", ""
        ):
            return response.text()
        if "event-stream" in response.headers.get("content-type", ""):
            return response.text()
    return ""
