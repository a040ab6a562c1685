"""The Spaces through a real Gradio server and gradio_client: streaming, parameters, history fitting, injection,
bad input and load, the compare arena, the widget route, the Space folders, and serving from the command line."""

from __future__ import annotations

import ast
import contextlib
import inspect
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from lorallama import cli, names, prompts
from lorallama.prompts import COMPARISON_PROMPTS
from lorallama.recipe import load_recipe
from lorallama.serving import chat, compare_app, gradio_compat, ui, web
from lorallama.serving import config as serving_config
from lorallama.serving.chat_app import CUT_MARK, CUT_RE, build_chat_app
from lorallama.training import run
from support.apps import launched
from support.models import ATTACKS, count, force_text, greedy, make_adapter, slow_down, wordy

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]
SPACES = ["finetome", "marx", "compare", "demo"]
# What https://huggingface.co/docs/hub/spaces-zerogpu lists under "Supported versions" (read 2026-12-01).
ZEROGPU_PYTHONS = ("3.10.13", "3.12.12")
ZEROGPU_TORCH = ("2.8.0", "2.9.1", "2.10.0", "2.11.0")
SYSTEM = "You are a helpful assistant."


def unmarked(answer: str) -> str:
    """An answer without the mark that it was cut at the token limit (these tests ask for short answers)."""
    return CUT_RE.sub("", answer)


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


class GenerateSpy:
    """Records every ``generate`` call's arguments and how many ran at once."""

    def __init__(self, cm: chat.ChatModel):
        self.calls: list[dict] = []
        self.active = self.max_active = 0
        self._lock = threading.Lock()
        original = cm.model.generate

        def generate(*args, **kwargs):
            with self._lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                self.calls.append(kwargs)
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.active -= 1

        cm.model.generate = generate

    def prompt_ids(self, i: int = -1) -> list[int]:
        return self.calls[i]["input_ids"][0].tolist()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def args(message, system=SYSTEM, max_new_tokens=16, temperature=0.0, top_p=1.0, repetition_penalty=1.0, seed=0):
    return (message, system, max_new_tokens, temperature, top_p, repetition_penalty, seed)


@pytest.fixture(scope="module")
def chat_app(tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    wordy(cm)
    spy = GenerateSpy(cm)
    config = serving_config.ChatConfig(
        slug="tiny", base=str(tiny_chatml), context_tokens=256, max_new_tokens=16, temperature=0.0, queue_size=32
    )
    demo = build_chat_app(config, model=cm)
    with launched(demo) as url:
        yield SimpleNamespace(url=url, cm=cm, spy=spy, demo=demo, state=demo.lorallama)


# ---------------------------------------------------------------------------------------------------------------
# The chat app through its API


def test_the_answer_streams_in_order_and_is_the_models_answer(chat_app):
    job = client(chat_app.url).submit(*args("Hello there", max_new_tokens=40), api_name="/chat")
    outputs = list(job)
    assert len(outputs) >= 3, outputs
    for before, after in zip(outputs, outputs[1:], strict=False):
        assert after.startswith(before) and len(after) > len(before)
    expected = greedy(
        chat_app.cm, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello there"}], 40
    )
    # 40 tokens, all used: the answer is the model's, then the mark that it was cut there.
    assert outputs[-1] == job.result() == (expected or ui.NO_ANSWER) + CUT_MARK.format(n=40)
    assert chat_app.state.active == 0


def test_parameters_are_honoured_and_capped(chat_app):
    from gradio_client.exceptions import AppError

    spy = chat_app.spy
    c = client(chat_app.url)
    c.predict(
        *args("Hi", system="Be brief.", max_new_tokens=7, temperature=1.3, top_p=0.5, repetition_penalty=1.2, seed=42),
        api_name="/chat",
    )
    call = spy.calls[-1]
    assert (call["max_new_tokens"], call["temperature"], call["top_p"], call["repetition_penalty"]) == (
        7,
        1.3,
        0.5,
        1.2,
    )
    assert call["do_sample"] is True
    assert "Be brief." in chat_app.cm.tokenizer.decode(spy.prompt_ids())

    # The answer's length leaves room for the question: at most half the 256-token window.
    client(chat_app.url).predict(*args("Hi", max_new_tokens=1024), api_name="/chat")
    assert spy.calls[-1]["max_new_tokens"] == 128
    # Out of the sliders' range: refused by name.
    with pytest.raises(AppError, match="greater than maximum"):
        client(chat_app.url).predict(*args("Hi", max_new_tokens=5000), api_name="/chat")

    def sampled(seed):
        return client(chat_app.url).predict(
            *args("Hi", max_new_tokens=12, temperature=1.5, seed=seed), api_name="/chat"
        )

    assert sampled(7) == sampled(7)
    assert len({sampled(7), sampled(8), sampled(9)}) > 1
    # Greedy is greedy.
    assert client(chat_app.url).predict(*args("Hi"), api_name="/chat") == client(chat_app.url).predict(
        *args("Hi"), api_name="/chat"
    )


def test_history_is_fitted_to_the_window_and_the_user_is_told(chat_app):
    spy, tokenizer = chat_app.spy, chat_app.cm.tokenizer
    c = client(chat_app.url)  # one session: the Space keeps its conversation
    answers = [
        c.predict(*args(f"Question {i}: what is the capital of France? Paris?"), api_name="/chat") for i in range(10)
    ]
    assert not answers[0].startswith("*[")
    last = answers[-1]
    match = re.match(r"\*\[(\d+) earlier messages left out to fit the model's 256-token context window\]\*\n\n", last)
    assert match, last[:200]
    dropped = int(match.group(1))
    assert dropped % 2 == 0 and 0 < dropped < 20
    ids = spy.prompt_ids()
    assert len(ids) <= 256 - 16
    prompt = tokenizer.decode(ids)
    assert SYSTEM in prompt and "Question 9:" in prompt
    assert "Question 0:" not in prompt and "left out" not in prompt  # the notice is for people, not the model
    assert prompt.count("Question") == 10 - dropped // 2


def test_typed_control_tokens_reach_the_model_as_text(chat_app):
    spy, tokenizer = chat_app.spy, chat_app.cm.tokenizer
    client(chat_app.url).predict(*args(ATTACKS["chatml"], max_new_tokens=4), api_name="/chat")
    attacked = spy.prompt_ids()
    client(chat_app.url).predict(*args("hi", max_new_tokens=4), api_name="/chat")
    benign = spy.prompt_ids()
    for token in ("<|im_start|>", "<|im_end|>"):
        assert count(attacked, tokenizer, token) == count(benign, tokenizer, token) == {"<|im_start|>": 3}.get(token, 2)
    assert ATTACKS["chatml"] in tokenizer.decode(attacked)


def test_bad_input_gets_a_clear_message_and_never_reaches_the_model(chat_app):
    from gradio_client.exceptions import AppError

    c = client(chat_app.url)
    calls = len(chat_app.spy.calls)
    with pytest.raises(AppError, match="Your message is empty"):
        c.predict(*args("   \n "), api_name="/chat")
    before = rss_mb()
    for _ in range(5):
        with pytest.raises(AppError, match=r"Your message is 100,000 characters long; this Space takes messages of up"):
            c.predict(*args("x" * 100_000), api_name="/chat")
    with pytest.raises(AppError, match=r"Your message is about \d+ tokens long.*this model's 256-token context window"):
        c.predict(*args("the quick brown fox " * 100), api_name="/chat")  # short enough to read, too long to fit
    with pytest.raises(AppError, match="The system prompt is 18,000 characters long"):
        c.predict(*args("hi", system="rules " * 3000), api_name="/chat")
    with pytest.raises(AppError, match="system prompt alone takes .* tokens of the 256-token context window"):
        c.predict(*args("hi", system="rules " * 100), api_name="/chat")
    assert len(chat_app.spy.calls) == calls
    assert rss_mb() - before < 150
    # The session goes on, with the model's own answer.
    assert unmarked(c.predict(*args("Hello"), api_name="/chat")) == greedy(
        chat_app.cm, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello"}], 16
    )


def test_eight_concurrent_clients_are_served_one_at_a_time(tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    force_text(cm)
    slow_down(cm, 0.01)
    spy = GenerateSpy(cm)
    config = serving_config.ChatConfig(
        slug="busy", base=str(tiny_chatml), max_new_tokens=10, temperature=0.0, queue_size=32
    )
    demo = build_chat_app(config, model=cm)
    results: dict[int, object] = {}
    with launched(demo) as url:
        clients = [client(url) for _ in range(8)]
        before = rss_mb()
        jobs = [c.submit(*args(f"Hello {i}", max_new_tokens=10), api_name="/chat") for i, c in enumerate(clients)]
        for i, job in enumerate(jobs):
            results[i] = job.result(timeout=120)
        assert demo.lorallama.active == 0
    assert all(r.strip().startswith("the the") for r in results.values()), results
    assert len(spy.calls) == 8 and spy.max_active == 1
    assert rss_mb() - before < 150


def test_a_full_queue_says_so_and_the_server_carries_on(tiny_chatml):
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    cm = chat.load_model(str(tiny_chatml))
    force_text(cm)
    slow_down(cm, 0.05)
    config = serving_config.ChatConfig(
        slug="full", base=str(tiny_chatml), max_new_tokens=10, temperature=0.0, queue_size=2
    )
    demo = build_chat_app(config, model=cm)
    with launched(demo) as url:
        clients = [client(url) for _ in range(8)]
        jobs = [c.submit(*args(f"Hello {i}", max_new_tokens=10), api_name="/chat") for i, c in enumerate(clients)]
        answered, full = 0, []
        for job in jobs:
            try:
                job.result(timeout=120)
                answered += 1
            except (QueueError, AppError) as e:
                full.append(str(e))
        assert answered >= 1 and full, (answered, full)
        assert answered + len(full) == 8
        assert all("queue is full" in message.lower() for message in full), full
        assert client(url).predict(*args("Still there?"), api_name="/chat").strip().startswith("the")


def test_page_header_examples_and_endpoints(tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    config = serving_config.ChatConfig.from_env(
        environ={},
        slug="finetome",
        title="Llama 3.2 1B · FineTome",
        base="unsloth/Llama-3.2-1B-Instruct",
        adapter="lorallama/llama-3.2-1b-finetome",
        dataset="mlabonne/FineTome-100k",
    )
    demo = build_chat_app(config, model=cm)
    page = demo.get_config_file()
    texts = [str(c.get("props", {}).get("value", "")) for c in page["components"]]
    header = next(t for t in texts if t.startswith("# Llama 3.2 1B · FineTome"))
    assert f"[unsloth/Llama-3.2-1B-Instruct]({names.hub_url('unsloth/Llama-3.2-1B-Instruct')})" in header
    assert (
        f"**Adapter:** [lorallama/llama-3.2-1b-finetome]({names.hub_url('lorallama/llama-3.2-1b-finetome')})" in header
    )
    assert f"({names.hub_url('mlabonne/FineTome-100k', 'dataset')})" in header and "/datasets/" in header
    assert "**Model card:**" in header
    assert "saved to the dataset" not in " ".join(texts)  # feedback is off
    assert any(c["props"].get("value") == "Duplicate this Space" for c in page["components"] if c["type"] == "button")
    chatbot = next(c for c in page["components"] if c["type"] == "chatbot")
    assert [e["text"] for e in chatbot["props"]["examples"]] == list(COMPARISON_PROMPTS)
    assert chatbot["props"]["editable"] == "all"
    assert any(d.get("api_name") == "chat" for d in page["dependencies"])
    with launched(demo) as url:
        time.sleep(0.5)
        assert demo.lorallama.started == 0  # the examples were not run at start-up
        api = client(url).view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert [p["parameter_name"] for p in api["/chat"]["parameters"]] == [
            "message",
            "system_prompt",
            "max_new_tokens",
            "temperature",
            "top_p",
            "repetition_penalty",
            "seed",
        ]


def test_an_answer_cut_at_the_token_limit_is_marked_and_continue_resumes_it(tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    wordy(cm)
    spy = GenerateSpy(cm)
    config = serving_config.ChatConfig(slug="cut", base=str(tiny_chatml), temperature=0.0, repetition_penalty=1.0)
    demo = build_chat_app(config, model=cm)
    with launched(demo) as url:
        c = client(url)
        first = c.predict(*args("Hello there", max_new_tokens=6), api_name="/chat")
        assert CUT_RE.search(first) and "6-token limit" in first
        partial = CUT_RE.sub("", first)
        assert partial == greedy(
            cm, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello there"}], 6
        )
        rest = c.predict(*args("Continue", max_new_tokens=6), api_name="/chat")
        asked = chat.encode_prompt(
            cm.tokenizer, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello there"}]
        )
        resumed = spy.prompt_ids()
        assert resumed[: len(asked)] == asked  # the same question, not "Continue" …
        assert cm.tokenizer.decode(resumed[len(asked) :]) == partial  # … with the answer so far, left open
        assert "Continue" not in cm.tokenizer.decode(resumed)
        assert CUT_RE.sub("", rest).strip() and CUT_RE.search(rest)  # still cut: it can go on again
        # A finished answer is not marked; "Continue" after it is an ordinary message.
        done = c.predict(*args("Hi", max_new_tokens=200), api_name="/chat")
        assert not CUT_RE.search(done) or len(cm.tokenizer(CUT_RE.sub("", done))["input_ids"]) >= 199


def test_editing_an_answer_keeps_the_correction_and_editing_a_question_re_asks(tiny_chatml):
    import gradio as gr

    demo = build_chat_app(serving_config.ChatConfig(base=str(tiny_chatml)), model=chat.load_model(str(tiny_chatml)))
    ui = demo.lorallama.ui
    assert isinstance(ui, gradio_compat.ChatInterface)
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "wrong"}]},
        {"role": "user", "content": [{"type": "text", "text": "Q2"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A2"}]},
    ]
    edit = gr.EditData(None, {"index": 1, "value": "right", "previous_value": "wrong"})
    kept, state, to_send = ui._edit_message(history, edit)
    assert kept == state == [history[0], {"role": "assistant", "content": "right"}] and to_send == []
    edit = gr.EditData(None, {"index": 2, "value": "Q2, better", "previous_value": "Q2"})
    kept, _, to_send = ui._edit_message(history, edit)
    assert kept == history[:2] and to_send == "Q2, better"


# ---------------------------------------------------------------------------------------------------------------
# The compare arena


@pytest.fixture(scope="module")
def compare_adapters(tiny_chatml, tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare-adapters")
    return str(make_adapter(tiny_chatml, folder / "ft", seed=11)), str(
        make_adapter(tiny_chatml, folder / "mx", seed=12)
    )


def test_compare_streams_three_answers_side_by_side(tiny_chatml, compare_adapters):
    ft, mx = compare_adapters
    columns = {"base": [], "finetome": [ft], "marx": [ft, mx]}
    config = serving_config.CompareConfig.from_env(
        environ={}, base=str(tiny_chatml), columns=columns, temperature=0.0, max_new_tokens=24
    )
    loaded = {label: chat.load_model(str(tiny_chatml), adapters) for label, adapters in columns.items()}
    for cm in loaded.values():
        wordy(cm, boost=3.0)  # answers in words, so that they stream piece by piece
    demo = compare_app.build_compare_app(config, models_by_label=loaded)
    with launched(demo) as url:
        api = client(url).view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert len(api["/compare"]["returns"]) == 3
        job = client(url).submit("Hello there", "", 24, 0, 1, 1, 0, api_name="/compare")
        outputs = list(job)
    messages = [{"role": "user", "content": "Hello there"}]
    expected = [greedy(loaded[label], messages, 24) for label in columns]
    assert len(set(expected)) == 3  # three different models
    # (gr.Markdown shows an answer as inspect.cleandoc leaves it: trimmed, tabs expanded.)
    expected = [inspect.cleandoc(e or ui.NO_ANSWER) for e in expected]
    assert list(outputs[-1]) == expected
    for column in range(3):  # each column streams: it grows piece by piece, never rewrites
        seen = [o[column] for o in outputs[:-1]]
        assert all(b.startswith(a) for a, b in zip(seen, seen[1:], strict=False))
        assert len(set(seen)) > 2
    # While one column was still writing, another had already started: side by side, not one after another.
    assert any(all(o[c] and o[c] != expected[c] for c in range(3)) for o in outputs)
    assert demo.lorallama.active == 0


def test_compare_loads_each_columns_model_once(tiny_chatml, compare_adapters):
    ft, _ = compare_adapters
    config = serving_config.CompareConfig(base=str(tiny_chatml), columns={"base": [], "finetome": [ft], "again": [ft]})
    models_ = compare_app.build_compare_app(config).lorallama.models
    assert models_["finetome"] is models_["again"] and models_["base"] is not models_["finetome"]
    assert models_["finetome"].merged == [ft] and models_["base"].merged == []


def test_compare_offline_uses_the_bundled_model_and_the_demo_adapter(tmp_path, compare_adapters):
    columns = {"base": [], "finetome": ["lorallama/llama-3.2-1b-finetome"], "marx": ["a/b", "c/d"]}
    demo_adapter = Path(compare_adapters[0])
    offline = serving_config.CompareConfig.from_env(
        environ={"LORALLAMA_OFFLINE": "1", "LORALLAMA_DEMO_ADAPTER": str(demo_adapter)}, columns=columns
    )
    assert offline.base == serving_config.BUNDLED_BASE and offline.offline
    assert offline.columns == {"base": [], "finetome": [str(demo_adapter)], "marx": [str(demo_adapter)]}
    assert offline.notes["marx"] == "offline stand-in: the demo adapter"
    bare = serving_config.CompareConfig.from_env(
        environ={"LORALLAMA_OFFLINE": "1", "LORALLAMA_DEMO_ADAPTER": str(tmp_path)}, columns=columns
    )
    assert bare.columns == {"base": [], "finetome": [], "marx": []}
    repointed = serving_config.CompareConfig.from_env(
        environ={"LORALLAMA_ADAPTERS_MARX": "me/one, me/two", "LORALLAMA_ADAPTERS_FINETOME": "none"}, columns=columns
    )
    assert repointed.columns == {"base": [], "finetome": [], "marx": ["me/one", "me/two"]}


# ---------------------------------------------------------------------------------------------------------------
# Configuration from Space variables


def test_space_variables_override_the_recipe_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    defaults = {
        "slug": "finetome",
        "base": "unsloth/Llama-3.2-1B-Instruct",
        "adapter": "lorallama/llama-3.2-1b-finetome",
    }
    plain = serving_config.ChatConfig.from_env(environ={}, **defaults)
    assert (plain.base, plain.adapters, plain.model_card, plain.feedback_dataset) == (
        "unsloth/Llama-3.2-1B-Instruct",
        ["lorallama/llama-3.2-1b-finetome"],
        "lorallama/llama-3.2-1b-finetome",
        None,
    )
    repointed = serving_config.ChatConfig.from_env(
        environ={
            "LORALLAMA_ADAPTER": "me/my-adapter",
            "LORALLAMA_BASE_ADAPTERS": "me/first, me/second",
            "LORALLAMA_FEEDBACK_DATASET": "me/feedback",
            "LORALLAMA_SYSTEM_PROMPT": "Be brief.",
            "LORALLAMA_QUEUE_SIZE": "5",
            "LORALLAMA_TEMPERATURE": "0.2",
        },
        **defaults,
    )
    assert repointed.adapters == ["me/first", "me/second", "me/my-adapter"]
    assert repointed.model_card == "me/my-adapter"
    assert (repointed.feedback_dataset, repointed.system_prompt, repointed.queue_size, repointed.temperature) == (
        "me/feedback",
        "Be brief.",
        5,
        0.2,
    )
    assert serving_config.ChatConfig.from_env(environ={"LORALLAMA_ADAPTER": "none"}, **defaults).adapters == []
    with pytest.raises(ValueError, match="LORALLAMA_QUEUE_SIZE='lots' is not valid"):
        serving_config.ChatConfig.from_env(environ={"LORALLAMA_QUEUE_SIZE": "lots"}, **defaults)

    adapter = tmp_path / "runs" / "demo" / "adapter"
    adapter.mkdir(parents=True)
    offline = serving_config.ChatConfig.from_env(environ={"LORALLAMA_OFFLINE": "1"}, **defaults)
    assert (offline.base, offline.adapters, offline.model_card, offline.offline) == (
        serving_config.BUNDLED_BASE,
        [],
        None,
        True,
    )
    (adapter / "adapter_config.json").write_text("{}")
    with_demo = serving_config.ChatConfig.from_env(
        environ={"LORALLAMA_OFFLINE": "1", "LORALLAMA_DEMO_ADAPTER": str(adapter)}, **defaults
    )
    assert with_demo.adapters == [str(adapter)]


def test_offline_mode_is_refused_in_a_space_with_the_fix(tmp_path):
    from lorallama.errors import SpaceError

    environ = {"LORALLAMA_OFFLINE": "1", "SPACE_ID": "fork/finetome"}
    for config in (serving_config.ChatConfig, serving_config.CompareConfig):
        defaults = {"columns": {"base": []}} if config is serving_config.CompareConfig else {"slug": "finetome"}
        with pytest.raises(SpaceError, match=r"LORALLAMA_OFFLINE=1 is set in the Space fork/finetome.*Delete the"):
            config.from_env(environ=environ, **defaults)
    # On your own machine it still stands in for the Hub.
    local = serving_config.ChatConfig.from_env(environ={"LORALLAMA_OFFLINE": "1"}, slug="finetome", adapter="x/y")
    assert local.offline and local.base == serving_config.BUNDLED_BASE


def test_a_forks_sync_preloads_only_the_repos_that_are_on_the_hub(hub, capsys):
    from lorallama.publishing import sync

    hub.seed_repo("unsloth/Llama-3.2-1B-Instruct", {"config.json": "{}"})
    hub.seed_repo("fork/llama-3.2-1b-finetome", {"adapter_config.json": "{}"})
    recipes = sync._recipes(REPO)
    targets = {t.name: t for t in sync.space_targets(REPO, recipes, "fork", sync.Selection.from_paths(None))}

    def meta(slug):
        return yaml.safe_load(sync._front_matter(targets[slug].files["README.md"].decode())[0])

    assert not any(t.error for t in targets.values()), {n: t.error for n, t in targets.items()}
    finetome_preload = ["unsloth/Llama-3.2-1B-Instruct", "fork/llama-3.2-1b-finetome"]
    assert meta("finetome")["preload_from_hub"] == finetome_preload
    assert meta("marx")["preload_from_hub"] == finetome_preload  # the marx adapter is not trained yet
    assert "fork/llama-3.2-1b-marx" in meta("marx")["models"]  # the card still names it
    assert "preload_from_hub" not in meta("demo")  # neither of its repos is there
    assert "fork/llama-3.2-1b-marx" in capsys.readouterr().out
    assert meta("finetome")["python_version"] == "3.12.12"


def test_config_from_a_recipe_slug(in_tmp):
    marx = serving_config.ChatConfig.from_target("marx", environ={})
    assert (marx.base, marx.adapters, marx.dataset, marx.model_card) == (
        "unsloth/Llama-3.2-1B-Instruct",
        ["lorallama/llama-3.2-1b-finetome", "lorallama/llama-3.2-1b-marx"],
        "mallam-ai/marx-engels",
        "lorallama/llama-3.2-1b-marx",
    )


# ---------------------------------------------------------------------------------------------------------------
# The widget route


def test_the_widget_is_served_by_the_space_and_the_api_allows_other_origins(chat_app):
    with urllib.request.urlopen(chat_app.url + "lorallama/widget.js") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/javascript")
        body = response.read().decode()
    assert "lorallama-widget" in body and '"/chat"' in body and "Client" in body
    # Self-contained: no script or module loaded from a CDN when it runs.
    for cdn in ("jsdelivr", "unpkg", "gradio.s3", "esm.sh", "cdnjs", "import("):
        assert cdn not in body
    preflight = urllib.request.Request(
        chat_app.url + "gradio_api/queue/join",
        method="OPTIONS",
        headers={"Origin": "http://localhost:9", "Access-Control-Request-Method": "POST"},
    )
    with urllib.request.urlopen(preflight) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:9"


def test_an_unbuilt_widget_is_explained(chat_app, monkeypatch, tmp_path):
    monkeypatch.setattr(web, "STATIC", tmp_path)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(chat_app.url + "lorallama/widget.js")
    assert e.value.code == 404 and "make widget" in e.value.read().decode()


# ---------------------------------------------------------------------------------------------------------------
# The Space folders


def pinned() -> dict[str, str]:
    """name → requirement, from pyproject's ``dependencies = [...]`` (tomllib is 3.11+; the project runs on 3.10)."""
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    block += re.search(r"^serve = \[(.*)\]", text, re.M).group(1).replace(", ", "\n")  # the Space's role
    deps = re.findall(r'^\s*"([^"]+)"', block, re.M)
    return {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower().replace("_", "-"): d for d in deps}


def front_matter(path: Path) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", path.read_text(encoding="utf-8"), re.S)
    assert match, f"{path} has no YAML front matter"
    return yaml.safe_load(match.group(1))


@pytest.mark.parametrize("slug", SPACES)
def test_space_readme_yaml_is_valid(slug):
    import gradio
    from huggingface_hub import SpaceCard, SpaceHardware

    folder = REPO / "spaces" / slug
    meta = front_matter(folder / "README.md")
    card = SpaceCard.load(folder / "README.md")
    assert card.data.to_dict()["sdk"] == "gradio"
    assert meta["sdk"] == "gradio"
    assert str(meta["sdk_version"]) == gradio.__version__ == pinned()["gradio"].split("==")[1]
    assert str(meta["python_version"]) in ZEROGPU_PYTHONS  # what ZeroGPU runs (the demo Space too: one build)
    assert (folder / meta["app_file"]).is_file()
    assert meta["suggested_hardware"] in {h.value for h in SpaceHardware}
    for key in ("models", "tags") if slug == "demo" else ("models", "datasets", "tags"):  # demo data is in the repo
        assert isinstance(meta[key], list) and meta[key]
    assert all(re.fullmatch(r"[\w.-]+/[\w.-]+", m) for m in meta["models"] + meta.get("datasets", []))
    assert 0 < len(meta["short_description"]) <= 60
    assert meta["license"] in ("apache-2.0", "llama3.2")
    assert meta["title"] and meta["emoji"] and meta["colorFrom"] and meta["colorTo"]


@pytest.mark.parametrize("slug", SPACES)
def test_space_app_is_thin_and_requirements_match_the_pinned_set(slug):
    folder = REPO / "spaces" / slug
    source = (folder / "app.py").read_text()
    assert len(source.splitlines()) <= 40
    tree = ast.parse(source)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    serving = {"lorallama.serving.chat_app", "lorallama.serving.compare_app", "lorallama.serving.config"}
    assert {i.module for i in imports} <= serving | {"lorallama.serving.web"}, "a Space app calls serving only"
    assert "launch(demo)" in source
    lines = [ln.strip() for ln in (folder / "requirements.txt").read_text().splitlines()]
    requirements = [ln for ln in lines if ln and not ln.startswith("#")]
    pins = pinned()
    from packaging.requirements import Requirement

    for requirement in requirements:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        if name == "torch":  # one exact version ZeroGPU lists, inside the project's own range
            version = requirement.split("==", 1)[1]
            assert version in ZEROGPU_TORCH and Requirement(pins["torch"]).specifier.contains(version), requirement
            continue
        assert pins.get(name) == requirement, (
            f"{slug}/requirements.txt has {requirement}; pyproject pins {pins.get(name)}"
        )
    names = {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}
    assert {"torch", "transformers", "peft", "huggingface-hub", "spaces", "pyyaml"} <= names
    assert "gradio" not in names  # the Space's sdk_version decides it


def app_defaults(slug: str) -> dict:
    tree = ast.parse((REPO / "spaces" / slug / "app.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "from_env")
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords}


@pytest.mark.parametrize("slug", ["finetome", "marx"])
def test_space_defaults_are_the_recipes(slug, in_tmp):
    defaults = app_defaults(slug)
    config = serving_config.ChatConfig.from_target(slug, environ={})
    assert defaults["base"] == config.base
    assert [*defaults.get("base_adapters", []), defaults["adapter"]] == config.adapters
    assert defaults["dataset"] == load_recipe(slug).data.source
    assert load_recipe(slug).hub.space.endswith("/" + slug)


def test_demo_space_defaults_are_the_recipes(in_tmp):
    from lorallama import models

    defaults, recipe = app_defaults("demo"), load_recipe("demo")
    assert defaults["base"] == models.hub_id_of(recipe.model.base)  # the real model the bundled one is a copy of
    assert defaults["adapter"] == recipe.hub.model_repo
    assert Path(defaults["dataset"]).name == Path(recipe.data.source).name


def test_compare_space_defaults_are_the_recipes(in_tmp):
    defaults = app_defaults("compare")
    assert defaults["base"] == serving_config.ChatConfig.from_target("finetome", environ={}).base
    assert defaults["columns"]["finetome"] == serving_config.ChatConfig.from_target("finetome", environ={}).adapters
    assert defaults["columns"]["marx"] == serving_config.ChatConfig.from_target("marx", environ={}).adapters
    assert defaults["columns"]["base"] == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_space_folder_runs_from_a_temp_dir_with_only_variables_set(tmp_path, tiny_chatml):
    """As sync uploads it: the folder with the package vendored beside app.py, configured by variables alone."""
    variables = {
        "LORALLAMA_BASE": str(tiny_chatml),
        "LORALLAMA_ADAPTER": "none",
        "LORALLAMA_SYSTEM_PROMPT": "You are Captain Lora.",
    }
    for url, lines, app in run_space_folder(tmp_path, "finetome", variables):
        answer = client(url).predict("Hello", api_name="/chat")
        assert isinstance(answer, str) and answer
        page = client(url).view_api(return_format="dict", print_info=False)["named_endpoints"]["/chat"]
        system = next(p for p in page["parameters"] if p["parameter_name"] == "system_prompt")
        assert system["parameter_default"] == "You are Captain Lora."
        with urllib.request.urlopen(url + "lorallama/widget.js") as response:
            assert response.status == 200
        startup = next(line for line in lines if line.startswith("lorallama "))
        assert f"({app / 'lorallama'})" in startup and str(tiny_chatml) in startup  # the vendored copy runs


def run_space_folder(tmp_path: Path, slug: str, variables: dict[str, str]):
    """Copy ``spaces/<slug>`` as sync uploads it (the package vendored beside app.py) and run it with ``variables``;
    yields (url, the app's output so far)."""
    app = tmp_path / slug
    shutil.copytree(REPO / "spaces" / slug, app)
    shutil.copytree(REPO / "src" / "lorallama", app / "lorallama", ignore=shutil.ignore_patterns("__pycache__"))
    assert (app / "lorallama" / "serving" / "static" / "widget.js").is_file(), "run `make widget` first"
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LORALLAMA_CACHE": os.environ["LORALLAMA_CACHE"],
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",  # no Hub: whatever the Space needs must be here
        **variables,
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, "".join(lines)[-3000:]
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "config", timeout=2)
                break
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.5)
        yield url, lines, app
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_the_compare_space_runs_offline_on_the_bundled_model(tmp_path, bundled_dir):
    """A machine with no Hub: LORALLAMA_OFFLINE=1 puts the bundled SmolLM2 in every column."""
    variables = {"LORALLAMA_OFFLINE": "1", "LORALLAMA_DEMO_ADAPTER": str(tmp_path / "no-demo-adapter")}
    for url, lines, _ in run_space_folder(tmp_path, "compare", variables):
        answers = client(url).predict("What is the capital of France?", "", 48, 0, 1, 1, 0, api_name="/compare")
        assert len(answers) == 3 and len(set(answers)) == 1  # no demo adapter here: the base in every column
        assert "Paris" in answers[0]
        assert any(serving_config.BUNDLED_BASE in line for line in lines if line.startswith("lorallama "))


@pytest.mark.slow
def test_the_bundled_model_streams_a_real_answer_through_the_chat_space(bundled_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no runs/demo/adapter here: the bundled base alone
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = serving_config.ChatConfig.from_env(environ={"LORALLAMA_OFFLINE": "1"}, slug="finetome", adapter="x/y")
    assert (config.base, config.adapters) == (serving_config.BUNDLED_BASE, [])
    demo = build_chat_app(config)
    with launched(demo) as url:
        job = client(url).submit(*args("What is the capital of France?", max_new_tokens=64), api_name="/chat")
        outputs = list(job)
    assert len(outputs) > 3 and all(b.startswith(a) for a, b in zip(outputs, outputs[1:], strict=False))
    assert "Paris" in outputs[-1] and "<|im_end|>" not in outputs[-1]
    assert len(demo.lorallama.models["model"].tokenizer(outputs[-1])["input_ids"]) < 60  # it stopped by itself


# ---------------------------------------------------------------------------------------------------------------
# Serving from the command line


def test_chat_ui_serves_a_model_space_locally(tiny_chatml, monkeypatch, capsys):
    served = {}

    def serve(demo, host="127.0.0.1", port=None, block=True, out=None):
        served["url"] = web.serve.__wrapped__(demo, host, port, block=False)
        served["demo"] = demo
        return served["url"]

    serve.__wrapped__ = web.serve
    monkeypatch.setattr(web, "serve", serve)
    assert cli.main(["chat", "--ui", str(tiny_chatml)]) == 0
    try:
        assert served["url"] in capsys.readouterr().out
        config = served["demo"].lorallama.config
        expected = greedy(chat.load_model(str(tiny_chatml)), [{"role": "user", "content": "Hello"}], 16)
        answer = client(served["url"]).predict("Hello", "", 16, 0.0, 1.0, 1.0, 0, api_name="/chat")
        assert config.base == str(tiny_chatml) and unmarked(answer) == expected
        assert served["demo"].lorallama.config.base == str(tiny_chatml)
    finally:
        served["demo"].close()
    assert cli.main(["chat", str(tiny_chatml)]) == 2
    assert "give --prompt" in capsys.readouterr().err


def test_demo_ends_by_serving_only_when_asked_or_on_a_terminal(tiny_chatml, tmp_path, monkeypatch, capsys):

    adapter = make_adapter(tiny_chatml, tmp_path / "adapter", seed=3)
    (adapter / "recipe.yaml").write_text(
        yaml.safe_dump({"slug": "demo", "model": {"base": str(tiny_chatml)}, "data": {"source": "x.jsonl"}})
    )
    result = SimpleNamespace(global_step=1, adapter_dir=adapter, backend=SimpleNamespace(device="cpu"))
    monkeypatch.setattr(run, "train", lambda *a, **k: result)
    monkeypatch.setattr(prompts, "COMPARISON_PROMPTS", ("Hi",))
    calls = []
    monkeypatch.setattr(web, "serve_demo", lambda adapter_dir, **kw: calls.append((adapter_dir, kw)))

    assert cli.main(["demo", "--output", str(tmp_path / "run")]) == 0  # pytest's stdin is no terminal
    assert calls == [] and f"lorallama chat --ui {adapter}" in capsys.readouterr().out
    assert cli.main(["demo", "--output", str(tmp_path / "run"), "--serve"]) == 0
    assert calls and calls[0][0] == adapter and calls[0][1]["model"].adapter == str(adapter)


def test_serve_demo_serves_the_trained_adapter_and_prints_the_url(tiny_chatml, tmp_path, monkeypatch):
    import io

    adapter = make_adapter(tiny_chatml, tmp_path / "adapter", seed=4)
    (adapter / "recipe.yaml").write_text(
        yaml.safe_dump(
            {"slug": "demo", "model": {"base": str(tiny_chatml)}, "data": {"source": "data/demo_chat.jsonl"}}
        )
    )
    built = []
    build = build_chat_app
    monkeypatch.setattr(web, "build_chat_app", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    out = io.StringIO()
    url = web.serve_demo(adapter, block=False, out=out)
    try:
        assert f"chat Space running at {url}" in out.getvalue()
        assert f"{url.rstrip('/')}/lorallama/widget.js" in out.getvalue()
        config = built[0].lorallama.config
        assert (config.slug, config.base, config.adapters, config.dataset) == (
            "demo",
            str(tiny_chatml),
            [str(adapter)],
            "demo_chat.jsonl",
        )
        expected = greedy(chat.load_model(str(tiny_chatml), [str(adapter)]), [{"role": "user", "content": "Hi"}], 8)
        assert unmarked(client(url).predict("Hi", "", 8, 0, 1, 1, 0, api_name="/chat")) == (expected or ui.NO_ANSWER)
    finally:
        built[0].close()
