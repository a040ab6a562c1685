"""What a person sees, in headless Chromium (Debian's chromium driven by Python Playwright): the chat page streams
and stops, answers can be corrected and liked, and the one-line embed bubble works on a page from another origin."""

from __future__ import annotations

import contextlib
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
            if not seen:
                return False
            shown = words(seen[-1]).split("[cut at the 30-token limit")[0].strip()  # 30 tokens: all used
            return demo.lorallama.started == 1 and demo.lorallama.active == 0 and shown == words(expected)

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
        # The chat carries on: the next answer streams and stops again. Stop is pressed once the answer's first words
        # show, as a person would: pressed in the instant the answer started, on a loaded machine, it once missed it.
        page.fill(INPUT, "Again")
        page.keyboard.press("Enter")
        wait_until(lambda: demo.lorallama.started == 2)
        wait_until(lambda: len(texts := page.locator(BOT).all_inner_texts()) >= 2 and len(texts[-1].split()) >= 3)
        page.click("button.stop-button")
        wait_until(lambda: demo.lorallama.active == 0, timeout=10)
        again = page.locator(BOT).all_inner_texts()[-1]
        assert 3 <= len(again.split()) < 100
        page.wait_for_selector("button.stop-button", state="hidden")


SCREENS = Path(os.environ.get("LORALLAMA_SCREENS", "/tmp/screens"))


def screenshot(page, name: str) -> None:
    """What a person sees in a fixed state, kept for review (LORALLAMA_SCREENS, default /tmp/screens)."""
    with contextlib.suppress(OSError):
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENS / f"{name}.png"))


def input_value(page) -> str:
    return page.locator(INPUT).input_value()


REFUSALS = [
    ("an empty box", "", None, "Your message is empty"),
    ("whitespace", "  \n   ", None, "Your message is empty"),
    ("a 100k-character paste", "x" * 100_000, None, "100,000 characters long"),
    ("an overlong system prompt", "Hello", "rules " * 3000, "The system prompt is 18,000 characters long"),
    ("a message too long for the context", "the quick brown fox " * 100, None, "256-token context window"),
    ("a system prompt too long for the context", "Hello", "rules " * 100, "system prompt alone takes"),
]


def test_a_refused_message_stays_in_the_box_and_the_chat_carries_on(page, tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    wordy(cm)
    slow_down(cm, 0.02)
    config = serving_config.ChatConfig(
        slug="tiny",
        base=str(tiny_chatml),
        temperature=0.0,
        max_new_tokens=16,
        repetition_penalty=1.0,
        context_tokens=256,
        system_prompt="Be brief.",
    )
    demo = build_chat_app(config, model=cm)
    with launched(demo) as url:
        page.goto(url)
        page.wait_for_selector(INPUT)
        system_box = page.locator("#lorallama-system textarea")
        for n, (kind, text, system, reason) in enumerate(REFUSALS):
            if system is not None:
                if not system_box.is_visible():
                    page.get_by_text("System prompt and sampling").click()
                for _ in range(3):  # an accordion still opening can re-render the box and drop a fill
                    system_box.fill(system)
                    system_box.blur()  # committed before the message is sent, not raced by it
                    if system_box.input_value() == system:
                        break
                assert system_box.input_value() == system, kind
            page.fill(INPUT, text)
            page.locator(INPUT).press("Enter")
            page.get_by_text(reason).first.wait_for(timeout=60_000)  # an 18,000-character fill is slow on 2 busy cores
            assert input_value(page) == text, kind  # the message (the paste) is kept to fix and send again
            assert page.locator(INPUT).is_editable(), kind
            assert page.locator("button.stop-button").is_hidden(), kind
            assert page.locator(BOT).count() == 0 and page.locator("[data-testid=user]").count() == 0, kind
            if n == 2:
                screenshot(page, "refused-paste-kept")
            if system is not None:
                system_box.fill("Be brief.")
        assert demo.lorallama.started == 0
        expected = greedy(cm, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}], 16)
        page.fill(INPUT, "Hello")
        page.locator(INPUT).press("Enter")
        seen: list[str] = []

        def streamed():
            texts = page.locator(BOT).all_inner_texts()
            if texts and (not seen or seen[-1] != texts[-1]):
                seen.append(texts[-1])
            return demo.lorallama.active == 0 and demo.lorallama.started == 1 and seen and "token limit" in seen[-1]

        wait_until(streamed)
        assert words(seen[-1]).startswith(words(expected)), (seen[-1], expected)
        assert len([s for s in seen if s.strip()]) >= 2, seen  # it streamed
        assert input_value(page) == ""  # cleared once the message was taken
        assert page.get_by_text("Error").count() == 0
        screenshot(page, "refusals-then-a-streamed-answer")


@pytest.mark.parametrize("state", ["missing", "unfinished"])
def test_a_fork_without_its_adapter_starts_on_the_base_model_and_says_how_to_train_it(page, tiny_chatml, hub, state):
    repo = "fork/llama-3.2-1b-finetome"
    if state == "unfinished":  # a run that pushed checkpoints but never finished
        hub.seed_repo(repo, {"last-checkpoint/adapter_config.json": "{}", "last-checkpoint/trainer_state.json": "{}"})
    cm = chat.load_model(str(tiny_chatml))
    wordy(cm)
    config = serving_config.ChatConfig.from_env(
        environ={"LORALLAMA_ADAPTER": repo, "LORALLAMA_BASE": str(tiny_chatml)},
        slug="finetome",
        base="unsloth/Llama-3.2-1B-Instruct",
        adapter="lorallama/llama-3.2-1b-finetome",
        max_new_tokens=8,
        temperature=0.0,
        repetition_penalty=1.0,
    )
    loaded = []
    real_load = chat.load_model

    def load_model(base, adapters=(), merge=True):
        loaded.append((base, list(adapters)))
        return real_load(base, adapters, merge=merge)

    chat.load_model = load_model
    try:
        demo = build_chat_app(config)
    finally:
        chat.load_model = real_load
    assert loaded == [(str(tiny_chatml), [])]
    with launched(demo) as url:
        ask(page, url, "Hello there")
        header = page.locator("#lorallama-header").inner_text()
        assert "Answering with the base model alone" in header and repo in header
        assert f"lorallama jobs run finetome --until-done --set hub.model_repo={repo}" in header
        assert str(tiny_chatml.parent) not in page.content()  # no local folders on a public page
        assert tiny_chatml.name in header
        wait_until(lambda: demo.lorallama.started == 1 and demo.lorallama.active == 0)
        wait_until(lambda: page.locator(BOT).count() == 1 and page.locator(BOT).inner_text().strip())
        if state == "missing":
            screenshot(page, "fork-without-adapter-base-model-notice")


def test_an_answer_cut_at_the_limit_says_so_and_continue_carries_it_on(page, tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    wordy(cm)
    partial = greedy(cm, [{"role": "user", "content": "Hello there"}], 6)
    prompts: list[list[int]] = []
    generate = cm.model.generate

    def spy(*args, **kwargs):
        prompts.append(kwargs["input_ids"][0].tolist())
        return generate(*args, **kwargs)

    cm.model.generate = spy
    config = serving_config.ChatConfig(
        slug="tiny", base=str(tiny_chatml), temperature=0.0, max_new_tokens=6, repetition_penalty=1.0
    )
    demo = build_chat_app(config, model=cm)
    with launched(demo) as url:
        ask(page, url, "Hello there")
        wait_until(lambda: "6-token limit" in " ".join(page.locator(BOT).all_inner_texts()))
        button = page.get_by_role("button", name="Continue")
        button.wait_for()
        screenshot(page, "cut-answer-with-continue")
        button.click()
        wait_until(lambda: demo.lorallama.started == 2 and demo.lorallama.active == 0)
        wait_until(lambda: page.locator(BOT).count() == 2 and "6-token limit" in page.locator(BOT).nth(1).inner_text())
    asked = chat.encode_prompt(cm.tokenizer, [{"role": "user", "content": "Hello there"}])
    assert prompts[1][: len(asked)] == asked, cm.tokenizer.decode(prompts[1])
    # The answer so far, left open (the page keeps it without its leading space).
    assert cm.tokenizer.decode(prompts[1][len(asked) :]) == partial.strip(), cm.tokenizer.decode(prompts[1])


def test_the_arena_goes_on_turn_after_turn_blind_and_votes_go_to_the_feedback_dataset(page, tiny_chatml, hub):
    from lorallama.serving import compare_app, feedback

    labels = ["base", "finetome", "marx"]
    models = {}
    for i, label in enumerate(labels):
        models[label] = chat.load_model(str(tiny_chatml))
        wordy(models[label], boost=2.0 + i)  # three different talkers
    repo = f"{hub.user}/arena-votes"
    config = serving_config.CompareConfig.from_env(
        environ={},
        base=str(tiny_chatml),
        columns={label: [] for label in labels},
        temperature=0.0,
        max_new_tokens=6,
        repetition_penalty=1.0,
        blind=True,
    )
    log = feedback.open_log(repo, every_minutes=60)
    demo = compare_app.build_compare_app(config, models_by_label=models, feedback=log)
    try:
        with launched(demo) as url:
            page.goto(url)
            page.wait_for_selector("#lorallama-prompt textarea")

            def titles():
                return [page.locator(f"#lorallama-model-{c}").first.inner_text().split("\n")[0] for c in "ABC"]

            wait_until(lambda: titles() == ["Model A", "Model B", "Model C"])
            assert not any(label in " ".join(page.locator(".lorallama-model").all_inner_texts()) for label in labels)
            page.fill("#lorallama-prompt textarea", "")
            page.locator("#lorallama-prompt textarea").press("Enter")
            page.get_by_text("Your message is empty").first.wait_for()  # refused, page still usable
            for turn, text in enumerate(["Hello there", "And then?"], 1):
                page.fill("#lorallama-prompt textarea", text)
                page.locator("#lorallama-prompt textarea").press("Enter")
                wait_until(lambda turn=turn: demo.lorallama.started == turn and demo.lorallama.active == 0)
                page.get_by_role("button", name="B is best").wait_for()
                bots = [page.locator(f"#lorallama-answer-{c}").first.locator("[data-testid=bot]") for c in "ABC"]
                wait_until(lambda bots=bots, turn=turn: [b.count() for b in bots] == [turn] * 3)
                if turn == 1:
                    screenshot(page, "arena-blind-before-vote")
                    page.get_by_role("button", name="B is best").click()
                    page.get_by_text("Your vote for Model B").wait_for()
                    revealed = titles()
                    assert sorted(r.split(": ")[1] for r in revealed) == sorted(labels)
                    screenshot(page, "arena-revealed-after-vote")
            page.get_by_role("button", name="Tie").click()
            page.get_by_text("Your vote for a tie").wait_for()
        log.flush()
    finally:
        log.scheduler.stop()
    order = [r.split(": ")[1] for r in revealed]
    rows = [
        json.loads(line)
        for path, blob in hub.files(repo, "dataset").items()
        if path.endswith(".jsonl")
        for line in blob.splitlines()
    ]
    assert [r["kind"] for r in rows] == ["vote", "vote"]
    first, second = rows
    assert first["winner"] == order[1] and first["shown"] == order and first["blind"] is True
    assert second["winner"] == "tie" and second["blind"] is False  # the models were named by then
    for label in labels:  # each model kept its own conversation, two turns of it
        turns = second["answers"][label]
        assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant"]
        assert turns[0]["content"] == "Hello there" and turns[2]["content"] == "And then?"
        assert turns[1]["content"] == first["answers"][label][-1]["content"]
    assert all(second["answers"][label][-1]["content"].strip() for label in labels)
    from lorallama import feedback_schema

    assert feedback_schema.counts(rows)["voted"] == 2 and all(feedback_schema.row_problem(r) is None for r in rows)
    assert feedback_schema.to_sharegpt(rows).rows == []  # votes compare models: not training rows by themselves


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
            # The whole answer is shown (12 tokens, all used: marked as cut there, a mark the feedback leaves out).
            wait_until(
                lambda: words(page.locator(BOT).inner_text()).startswith(words(answer) + " [cut at the 12-token")
            )
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
        answer = page.locator("#lorallama-widget .msg.assistant:not(.pending) .body")
        answer.wait_for()
        assert words(answer.inner_text()).startswith(words(expected or ui.NO_ANSWER))
        assert page.locator("#lorallama-widget .msg.user").inner_text() == "Hello from my page"
        assert any(call.startswith(url) for call in api_calls)  # it talked to the Space, across origins
        # Cut at the 20-token limit: marked, and Continue carries the same answer on.
        page.get_by_role("button", name="Continue the answer").click()
        bodies = page.locator("#lorallama-widget .msg.assistant:not(.pending) .body")
        wait_until(lambda: bodies.count() == 2 and bodies.nth(1).inner_text().strip())
        assert page.locator("#lorallama-widget .msg.user").nth(1).inner_text() == "Continue"
        assert demo.lorallama.started == 2

        # A message the Space refuses: the reason is shown in the bubble.
        page.fill("#lorallama-widget textarea", "x" * 100_000)
        page.keyboard.press("Enter")
        error = page.locator("#lorallama-widget .msg.error")
        error.wait_for()
        assert "100,000 characters long" in error.inner_text()
        assert not errors, errors


def bubble_page(browser, folder, origin, url, name="index.html"):
    (folder / name).write_text(
        "<!doctype html><html><head><title>My page</title></head><body><h1>My own page</h1>"
        f'<script src="{url}lorallama/widget.js" data-open="true" defer></script></body></html>'
    )
    context = browser.new_context(viewport={"width": 900, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{origin}/{name}")
    page.locator("#lorallama-widget textarea").wait_for()
    return context, page, errors


def test_the_bubbles_stop_cancels_on_the_server_and_the_next_answer_starts_at_once(browser, tiny_chatml, other_origin):
    cm = chat.load_model(str(tiny_chatml))
    force_text(cm)
    calls = slow_down(cm, 0.05)
    config = serving_config.ChatConfig(slug="tiny", base=str(tiny_chatml), temperature=0.0, max_new_tokens=400)
    demo = build_chat_app(config, model=cm)
    folder, origin = other_origin
    with launched(demo) as url:
        first, a, a_errors = bubble_page(browser, folder, origin, url)
        second, b, b_errors = bubble_page(browser, folder, origin, url, "other.html")
        try:
            a.fill("#lorallama-widget textarea", "Talk to me")
            a.keyboard.press("Enter")
            assert a.locator("#lorallama-widget textarea").input_value() == "Talk to me"  # not yet taken
            body = a.locator("#lorallama-widget .msg.assistant .body")
            wait_until(lambda: len(body.inner_text().split()) >= 5)
            assert a.locator("#lorallama-widget textarea").input_value() == ""  # taken: cleared
            b.fill("#lorallama-widget textarea", "My turn")
            b.keyboard.press("Enter")
            wait = b.locator("#lorallama-widget .msg.assistant .wait")
            wait_until(lambda: "Waiting for the answer before yours to finish" in wait.inner_text(), timeout=20)
            assert "0 ahead" not in wait.inner_text()
            screenshot(b, "bubble-honest-queue-position")
            assert demo.lorallama.started == 1
            a.click("#lorallama-widget .stop")
            stopped_at = time.monotonic()
            wait_until(lambda: demo.lorallama.started == 2, timeout=15)  # the next visitor's answer has begun …
            # … long before the ~19 s the rest of the 400-token answer would have held the queue without the cancel.
            assert time.monotonic() - stopped_at < 10.0
            b_body = b.locator("#lorallama-widget .msg.assistant .body")
            wait_until(lambda: b_body.inner_text().strip(), timeout=10)
            b.click("#lorallama-widget .stop")
            wait_until(lambda: demo.lorallama.active == 0, timeout=10)
            forward_calls = len(calls)
            time.sleep(1.0)
            assert len(calls) == forward_calls  # nothing generates after Stop
            kept = a.locator("#lorallama-widget .msg.assistant.stopped")
            kept.wait_for()
            assert len(kept.locator(".body").inner_text().split()) >= 5  # the partial answer is kept …
            assert "(stopped)" in kept.inner_text()  # … and marked
            assert a.locator("#lorallama-widget .msg.error").count() == 0
            assert "Unexpected Error" not in a.locator("#lorallama-widget").inner_text()
            screenshot(a, "bubble-stopped-partial-kept")
            assert a.evaluate("document.getElementById('lorallama-widget').shadowRoot.activeElement.tagName") == (
                "TEXTAREA"
            )
            assert not a_errors and not b_errors, (a_errors, b_errors)
        finally:
            first.close()
            second.close()


HOSTILE = (
    "**Bold** and `code`, see [docs](https://example.org/):\n\n```python\nprint('hi')\n```\n\n"
    '<script>window.__pwned = 1</script>\n\n<img src=x onerror="window.__pwned = 2">\n\n'
    'A <a href="javascript:window.__pwned=3">click</a> here.'
)


def test_the_bubble_renders_markdown_safely_and_copies_the_answer(browser, tiny_chatml, other_origin, monkeypatch):
    cm = chat.load_model(str(tiny_chatml))
    config = serving_config.ChatConfig(slug="tiny", base=str(tiny_chatml), max_new_tokens=500)

    def stream_ids(cm, input_ids, sampling, stop=None):  # the model says exactly this, piece by piece
        for i in range(0, len(HOSTILE), 9):
            yield HOSTILE[i : i + 9]

    monkeypatch.setattr(chat, "stream_ids", stream_ids)
    demo = build_chat_app(config, model=cm)
    folder, origin = other_origin
    with launched(demo) as url:
        context, page, errors = bubble_page(browser, folder, origin, url)
        try:
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
            page.fill("#lorallama-widget textarea", "Show me")
            page.keyboard.press("Enter")
            answer = page.locator("#lorallama-widget .msg.assistant:not(.pending)")
            answer.wait_for()
            body = answer.locator(".body")
            assert body.locator("strong").inner_text() == "Bold"
            assert body.locator("pre code").inner_text().strip() == "print('hi')"
            assert body.locator("a[href='https://example.org/']").get_attribute("rel").startswith("noopener")
            html = body.inner_html()
            assert "<script" not in html and "onerror" not in html and "javascript:" not in html
            page.locator("#lorallama-widget .msg.assistant a", has_text="click").click()
            time.sleep(0.3)
            assert page.evaluate("window.__pwned") is None  # nothing in the answer ran
            page.get_by_role("button", name="Copy the answer").click()
            assert page.evaluate("navigator.clipboard.readText()") == HOSTILE
            screenshot(page, "bubble-markdown-sanitised")
            assert page.get_by_role("button", name="Open the chat").count() == 0  # open: it says Close
            assert page.get_by_role("button", name="Close the chat").count() >= 1
            page.keyboard.press("Escape")
            assert page.locator("#lorallama-widget .panel").is_hidden()
            assert not errors, errors
        finally:
            context.close()


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
        wait_until(
            lambda: words(" ".join(page.locator(BOT).all_inner_texts())).startswith(words(expected or ui.NO_ANSWER))
        )
    assert not [u for u in elsewhere if not u.startswith("https://fonts.")], elsewhere  # Gradio's theme font aside
