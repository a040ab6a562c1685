"""What a person sees, in headless Chromium (Debian's chromium driven by Python Playwright): the chat page streams
and stops, answers can be corrected and liked, and the one-line embed bubble works on a page from another origin."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from lorallama.serving import chat, ui
from lorallama.serving import config as serving_config
from lorallama.serving.chat_app import build_chat_app
from support.apps import launched
from support.models import force_text, greedy, slow_down, wordy

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (`make chromium`: apt-get install -y chromium)"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INPUT = "#lorallama-input textarea"
BOT = "[data-testid=bot]"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def words(text: str) -> str:
    return " ".join(text.split())


def wait_until(condition, timeout: float = 30, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(every)


def ask(page, url: str, text: str) -> None:
    page.goto(url)
    page.wait_for_selector(INPUT)
    page.fill(INPUT, text)
    page.keyboard.press("Enter")


def test_the_page_loads_and_a_typed_prompt_streams_its_answer(page, tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    wordy(cm)
    slow_down(cm, 0.03)
    config = serving_config.ChatConfig(
        slug="tiny", base=str(tiny_chatml), temperature=0.0, max_new_tokens=30, repetition_penalty=1.0
    )
    demo = build_chat_app(config, model=cm)
    expected = greedy(cm, [{"role": "user", "content": "Hello there"}], 30)
    with launched(demo) as url:
        page.goto(url)
        page.wait_for_selector(INPUT)
        assert page.get_by_role("heading", name="lorallama · tiny").is_visible()
        for prompt in ("The problem with current economy is", "What is the tallest mountain in the world ?"):
            assert page.get_by_text(prompt).first.is_visible()  # the examples, not run
        assert demo.lorallama.started == 0
        page.fill(INPUT, "Hello there")
        page.keyboard.press("Enter")
        seen: list[str] = []

        def finished():
            texts = page.locator(BOT).all_inner_texts()
            if texts and (not seen or seen[-1] != texts[-1]):
                seen.append(texts[-1])
            return demo.lorallama.started == 1 and demo.lorallama.active == 0 and words(seen[-1]) == words(expected)

        wait_until(finished)
    grown = [words(s) for s in seen if s.strip()]
    assert len(grown) >= 3, seen  # it arrived piece by piece
    assert all(b.startswith(a) for a, b in zip(grown, grown[1:], strict=False))
    assert page.get_by_text("Hello there").is_visible()


def test_stop_stops_the_answer(page, tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    force_text(cm)
    calls = slow_down(cm, 0.05)
    config = serving_config.ChatConfig(slug="tiny", base=str(tiny_chatml), temperature=0.0, max_new_tokens=400)
    demo = build_chat_app(config, model=cm)
    with launched(demo) as url:
        ask(page, url, "Talk to me")
        wait_until(lambda: len(" ".join(page.locator(BOT).all_inner_texts()).split()) >= 5)
        page.click("button.stop-button")
        wait_until(lambda: demo.lorallama.active == 0, timeout=10)  # the generation itself ended
        forward_calls = len(calls)
        stopped = page.locator(BOT).all_inner_texts()[-1]
        time.sleep(1.0)
        assert page.locator(BOT).all_inner_texts()[-1] == stopped
        assert len(calls) == forward_calls
        assert 5 <= len(stopped.split()) < 100  # far short of the 400 tokens it would have written
        page.wait_for_selector("button.stop-button", state="hidden")
        # The chat carries on.
        page.fill(INPUT, "Again")
        page.keyboard.press("Enter")
        wait_until(lambda: demo.lorallama.started == 2)
        page.click("button.stop-button")
        wait_until(lambda: demo.lorallama.active == 0, timeout=10)


def test_an_answer_can_be_corrected_and_liked_into_the_feedback_dataset(page, tiny_chatml, hub):
    cm = chat.load_model(str(tiny_chatml))
    wordy(cm)
    repo = f"{hub.user}/lorallama-feedback"
    config = serving_config.ChatConfig(
        slug="tiny",
        base=str(tiny_chatml),
        temperature=0.0,
        max_new_tokens=12,
        repetition_penalty=1.0,
        feedback_dataset=repo,
    )
    demo = build_chat_app(config, model=cm)
    log = demo.lorallama.feedback
    answer = greedy(cm, [{"role": "user", "content": "Capital of France?"}], 12)
    try:
        with launched(demo) as url:
            ask(page, url, "Capital of France?")
            assert page.get_by_text("Feedback is on").is_visible()
            page.wait_for_selector("[aria-label=Like]")
            wait_until(lambda: words(page.locator(BOT).inner_text()) == words(answer))  # the whole answer is shown
            page.click("[aria-label=Dislike]")
            page.locator("[aria-label=Edit]").nth(1).click()  # the answer's (the first is the question's)
            page.fill(".edit-textarea", "Paris, matey!")
            page.click("[aria-label=Submit]")
            wait_until(lambda: words(page.locator(BOT).inner_text()) == "Paris, matey!")
            page.click("[aria-label=Like]")
            wait_until(lambda: log.rows == 3)
            assert demo.lorallama.started == 1  # the correction was kept, not answered again
        log.flush()
    finally:
        log.scheduler.stop()
    files = hub.files(repo, "dataset")
    rows = [json.loads(line) for path, blob in files.items() if path.endswith(".jsonl") for line in blob.splitlines()]
    assert [r["kind"] for r in rows] == ["dislike", "edit", "like"]
    assert words(rows[1]["previous"]) == words(answer)
    assert rows[1]["edited"] == "Paris, matey!"
    assert rows[2]["conversation"][-1] == {"role": "assistant", "content": "Paris, matey!"}
    assert rows[0]["key"] == rows[1]["key"] == rows[2]["key"]


@pytest.fixture
def other_origin(tmp_path):
    """A second web server on another port (and host name): the page that embeds the Space."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://localhost:{server.server_port}"
    server.shutdown()


def test_the_embed_bubble_works_on_a_page_from_another_origin(page, tiny_chatml, other_origin):
    cm = chat.load_model(str(tiny_chatml))
    wordy(cm)
    config = serving_config.ChatConfig(
        slug="tiny", base=str(tiny_chatml), temperature=0.0, max_new_tokens=20, repetition_penalty=1.0
    )
    demo = build_chat_app(config, model=cm)
    expected = greedy(cm, [{"role": "user", "content": "Hello from my page"}], 20)
    folder, origin = other_origin
    with launched(demo) as url:
        (folder / "index.html").write_text(
            "<!doctype html><html><head><title>My page</title></head><body><h1>My own page</h1>"
            f'<script src="{url}lorallama/widget.js" data-title="Ask the model" defer></script></body></html>'
        )
        api_calls = []
        page.on("request", lambda r: api_calls.append(r.url) if "/gradio_api/" in r.url else None)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{origin}/index.html")
        assert page.evaluate("location.origin") == origin != url.rstrip("/")
        bubble = page.locator("#lorallama-widget .bubble")
        bubble.wait_for()
        assert page.locator("#lorallama-widget .panel").is_hidden()
        bubble.click()
        assert page.locator("#lorallama-widget .panel").is_visible()
        assert page.locator("#lorallama-widget .title").inner_text() == "Ask the model"
        page.fill("#lorallama-widget textarea", "Hello from my page")
        page.keyboard.press("Enter")
        answer = page.locator("#lorallama-widget .msg.assistant:not(.pending)")
        answer.wait_for()
        assert words(answer.inner_text()) == words(expected or ui.NO_ANSWER)
        assert page.locator("#lorallama-widget .msg.user").inner_text() == "Hello from my page"
        assert any(call.startswith(url) for call in api_calls)  # it talked to the Space, across origins

        # A message the Space refuses: the reason is shown in the bubble.
        page.fill("#lorallama-widget textarea", "x" * 100_000)
        page.keyboard.press("Enter")
        error = page.locator("#lorallama-widget .msg.error")
        error.wait_for()
        assert "100,000 characters long" in error.inner_text()
        assert not errors, errors


def test_gradios_web_component_loads_from_the_space_itself(page, tiny_chatml, other_origin):
    cm = chat.load_model(str(tiny_chatml))
    wordy(cm)
    config = serving_config.ChatConfig(
        slug="tiny", base=str(tiny_chatml), temperature=0.0, max_new_tokens=12, repetition_penalty=1.0
    )
    demo = build_chat_app(config, model=cm)
    expected = greedy(cm, [{"role": "user", "content": "Hello there"}], 12)
    folder, origin = other_origin
    with launched(demo) as url:
        (folder / "component.html").write_text(
            f'<!doctype html><html><body><script type="module" src="{url}lorallama/gradio.js"></script>'
            f'<gradio-app src="{url}"></gradio-app></body></html>'
        )
        elsewhere = []  # anything fetched from neither the page's server nor the Space
        page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith((url, origin, "data:")) else None)
        page.goto(f"{origin}/component.html")
        page.fill(INPUT, "Hello there")
        page.keyboard.press("Enter")
        wait_until(lambda: words(" ".join(page.locator(BOT).all_inner_texts())) == words(expected or ui.NO_ANSWER))
    assert not [u for u in elsewhere if not u.startswith("https://fonts.")], elsewhere  # Gradio's theme font aside
