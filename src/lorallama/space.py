"""Gradio builders for the Spaces: a model's chat app, the compare arena, the embed widget, feedback logging.

A Space's ``app.py`` is a few lines (see ``spaces/<slug>/app.py``)::

    from lorallama.space import ChatConfig, build_chat_app, launch

    demo = build_chat_app(ChatConfig.from_env(slug="finetome", base="unsloth/Llama-3.2-1B-Instruct",
                                              adapter="lorallama/llama-3.2-1b-finetome", dataset="mlabonne/FineTome-100k"))
    if __name__ == "__main__":
        launch(demo)

The keyword arguments are the defaults (the recipe's values); Space variables override them, so a duplicated Space
runs unchanged and is repointed at another adapter from its settings page. Every ``ChatConfig`` field can be set as
``LORALLAMA_<FIELD>``; the usual ones:

    LORALLAMA_BASE              base model: Hub id, folder, or bundled:smollm2-135m-instruct
    LORALLAMA_ADAPTER           the adapter: Hub repo id or folder; "none" for the base alone
    LORALLAMA_BASE_ADAPTERS     adapters merged into the base first, comma-separated (marx: the finetome adapter)
    LORALLAMA_DATASET           the training data named in the header
    LORALLAMA_SYSTEM_PROMPT     the default system prompt
    LORALLAMA_FEEDBACK_DATASET  a dataset repo: likes, dislikes and edited answers are appended to it (unset: off)
    LORALLAMA_OFFLINE=1         no Hub: the bundled SmolLM2-135M-Instruct with the demo adapter (runs/demo/adapter,
                                or LORALLAMA_DEMO_ADAPTER) when there is one
    LORALLAMA_QUEUE_SIZE, LORALLAMA_MAX_NEW_TOKENS_CAP, LORALLAMA_CONTEXT_TOKENS, LORALLAMA_MAX_MESSAGE_CHARS  limits

Generation runs under ``@spaces.GPU`` (a no-op off ZeroGPU) with the model loaded when the app is built, one
generation at a time per process, behind a bounded queue. ``launch`` also serves the embed widget at
``/lorallama/widget.js``: ``<script src="https://<space>.hf.space/lorallama/widget.js" defer></script>`` puts a
chat bubble on any page (docs/embed.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import queue
import sys
import threading
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import spaces  # before torch touches CUDA: on ZeroGPU it stands in for the GPU between calls; a no-op elsewhere

from . import chat, models
from .cli import COMPARISON_PROMPTS

log = logging.getLogger("lorallama")

BUNDLED_BASE = f"{models.BUNDLED_PREFIX}smollm2-135m-instruct"
ENV_PREFIX = "LORALLAMA_"
STATIC = Path(__file__).parent / "static"
WIDGET_ROUTE = "/lorallama/widget.js"
WEB_COMPONENT_ROUTE = "/lorallama/gradio.js"
EMPTY_MESSAGE = "Your message is empty: type something and send it again."
NO_ANSWER = "*(the model ended its turn without saying anything; try again or rephrase)*"

GPU_LOCK = threading.Lock()  # one generation per GPU (per process) at a time, whichever app asks


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def _none_word(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if value.lower() in ("", "none", "null", "-") else value


def demo_adapter(environ: Mapping[str, str] | None = None) -> str | None:
    """The adapter ``make demo`` trains (``runs/demo/adapter``, or ``LORALLAMA_DEMO_ADAPTER``), when it exists."""
    environ = os.environ if environ is None else environ
    path = Path(environ.get(ENV_PREFIX + "DEMO_ADAPTER", "runs/demo/adapter")).expanduser()
    return str(path) if (path / "adapter_config.json").is_file() else None


def _from_environ(cls, defaults: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``defaults`` with every ``LORALLAMA_<FIELD>`` present in ``environ`` applied (typed by the field)."""
    hints = typing.get_type_hints(cls)
    values = dict(defaults)
    for f in dataclasses.fields(cls):
        raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        hint = str(hints[f.name])
        try:
            if hint.startswith("list"):
                values[f.name] = [] if _none_word(raw) is None else [s.strip() for s in raw.split(",") if s.strip()]
            elif hints[f.name] is bool:
                values[f.name] = _truthy(raw)
            elif hints[f.name] is int:
                values[f.name] = int(raw)
            elif hints[f.name] is float:
                values[f.name] = float(raw)
            elif "None" in hint:
                values[f.name] = _none_word(raw)
            else:
                values[f.name] = raw
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not valid: it must be {hint}") from None
    return values


def hub_url(repo_id: str, kind: str = "model") -> str:
    from huggingface_hub import constants

    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[kind]
    return f"{constants.ENDPOINT.rstrip('/')}/{prefix}{repo_id}"


LOCAL_SUFFIXES = {".jsonl", ".json", ".parquet", ".csv", ".txt", ".yaml", ".yml"}


def _is_hub_id(name: str | None) -> bool:
    """``namespace/name`` that is not a path here (``data/demo_chat.jsonl`` is a file, not a dataset)."""
    return (
        bool(name)
        and name.count("/") == 1
        and not name.startswith((".", "/", "~"))
        and Path(name).suffix.lower() not in LOCAL_SUFFIXES
        and not Path(name).exists()
    )


def _describe(name: str | None, kind: str = "model") -> str:
    """A model or dataset as Markdown: a link for a Hub id, the bundled model by name, a path as code."""
    if not name:
        return "none"
    if name.startswith(models.BUNDLED_PREFIX):
        hub_id = models.hub_id_of(name)
        return f"[{hub_id}]({hub_url(hub_id)}) (the bundled copy)"
    if _is_hub_id(name):
        return f"[{name}]({hub_url(name, kind)})"
    return f"`{name}`"


# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class ChatConfig:
    """What a chat Space serves. Defaults come from ``app.py`` (the recipe); ``LORALLAMA_<FIELD>`` overrides."""

    slug: str = "chat"
    base: str = BUNDLED_BASE
    adapter: str | None = None
    base_adapters: list[str] = field(default_factory=list)
    dataset: str | None = None
    title: str | None = None
    description: str | None = None
    model_card: str | None = None
    """A Hub model repo whose card the header links to (default: the adapter, when it is a Hub repo)."""
    system_prompt: str = ""
    feedback_dataset: str | None = None
    offline: bool = False
    max_new_tokens: int = 512
    max_new_tokens_cap: int = 1024
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    context_tokens: int = chat.DEFAULT_CONTEXT_TOKENS
    max_message_chars: int = chat.DEFAULT_MAX_MESSAGE_CHARS
    queue_size: int = 32

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: Any) -> ChatConfig:
        """The defaults given, then the offline switch, then any ``LORALLAMA_<FIELD>`` variables."""
        environ = os.environ if environ is None else environ
        values = dict(defaults)
        if _truthy(environ.get(ENV_PREFIX + "OFFLINE")) or values.get("offline"):
            values.update(
                offline=True, base=BUNDLED_BASE, adapter=demo_adapter(environ), base_adapters=[], model_card=None
            )
        config = cls(**_from_environ(cls, values, environ))
        if config.model_card is None and _is_hub_id(config.adapter):
            config.model_card = config.adapter
        return config

    @classmethod
    def from_target(cls, target: str, environ: Mapping[str, str] | None = None, **overrides: Any) -> ChatConfig:
        """The chat Space of a recipe slug, an adapter folder or a bare base (``lorallama chat --ui <target>``)."""
        from .recipe import RecipeError, find_recipe, load_recipe

        base, parents, adapter = chat.locate_chain(target)
        defaults: dict[str, Any] = {"slug": Path(target).name, "base": base, "base_adapters": parents}
        defaults["adapter"] = adapter
        recipe = None
        with contextlib.suppress(RecipeError):
            if Path(target).is_dir():
                folder = Path(adapter) if adapter else None
                if folder is not None and (folder / "recipe.yaml").is_file():
                    recipe = load_recipe(str(folder / "recipe.yaml"))
            else:
                find_recipe(target)
                recipe = load_recipe(target)
        if recipe is not None:
            source = recipe.data.source
            defaults.update(
                slug=recipe.slug,
                dataset=source if _is_hub_id(source) else Path(source).name,
                description=recipe.description or None,
                model_card=recipe.hub.model_repo if adapter and not Path(adapter).exists() else None,
            )
        defaults.update(overrides)
        return cls.from_env(environ, **defaults)

    @property
    def adapters(self) -> list[str]:
        return [*self.base_adapters, *([self.adapter] if self.adapter else [])]

    @property
    def heading(self) -> str:
        return self.title or f"lorallama · {self.slug}"


@dataclass
class CompareConfig:
    """The compare arena: one base, several columns of adapters (``LORALLAMA_ADAPTERS_<LABEL>`` overrides one)."""

    columns: dict[str, list[str]]
    base: str = BUNDLED_BASE
    title: str = "lorallama · compare"
    description: str | None = None
    system_prompt: str = ""
    offline: bool = False
    max_new_tokens: int = 256
    max_new_tokens_cap: int = 1024
    temperature: float = 0.0
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    context_tokens: int = chat.DEFAULT_CONTEXT_TOKENS
    max_message_chars: int = chat.DEFAULT_MAX_MESSAGE_CHARS
    queue_size: int = 16
    notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: Any) -> CompareConfig:
        environ = os.environ if environ is None else environ
        values = dict(defaults)
        columns = {label: list(adapters) for label, adapters in values.pop("columns").items()}
        notes: dict[str, str] = dict(values.pop("notes", {}))
        if _truthy(environ.get(ENV_PREFIX + "OFFLINE")) or values.get("offline"):
            stand_in = demo_adapter(environ)
            values.update(offline=True, base=BUNDLED_BASE)
            for label, adapters in columns.items():
                if adapters:
                    columns[label] = [stand_in] if stand_in else []
                    notes[label] = "offline stand-in: " + ("the demo adapter" if stand_in else "the base (no adapter)")
        for label in columns:
            raw = environ.get(f"{ENV_PREFIX}ADAPTERS_{label.upper()}")
            if raw is not None:
                columns[label] = [] if _none_word(raw) is None else [s.strip() for s in raw.split(",") if s.strip()]
                notes.pop(label, None)
        values = _from_environ(cls, values, environ)
        values.pop("columns", None)
        values.pop("notes", None)
        return cls(columns=columns, notes=notes, **values)


# ---------------------------------------------------------------------------------------------------------------
# Generation shared by the apps


@dataclass
class AppState:
    """What a built app holds, for ``serve`` and for tests: its config, models, feedback log and counters."""

    config: Any
    models: dict[str, chat.ChatModel]
    feedback: Any = None
    feedback_error: str | None = None
    ui: Any = None
    """The app's ``gr.ChatInterface``, when it has one."""
    started: int = 0
    finished: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def active(self) -> int:
        return self.started - self.finished


def _gpu(duration: int = 120):
    """``spaces.GPU``: the decorated generator gets a GPU for its run on ZeroGPU; a no-op anywhere else."""
    return spaces.GPU(duration=duration)


def _count(state: AppState, started: bool) -> None:
    with state.lock:
        if started:
            state.started += 1
        else:
            state.finished += 1


def _user_error(message: str) -> gr.Error:
    """An error for the person chatting (our own words, no user text in it): a toast on the page, the message of
    the exception an API client gets."""
    return gr.Error(message, print_exception=False)


def _check_message(text: str, limit: int, system_prompt: str | None) -> None:
    if not text.strip():
        raise _user_error(EMPTY_MESSAGE)
    if len(text) > limit:
        raise _user_error(
            f"Your message is {len(text):,} characters long; this Space takes messages of up to {limit:,} "
            "characters. Shorten it and send it again."
        )
    if system_prompt and len(system_prompt) > limit:
        raise _user_error(
            f"The system prompt is {len(system_prompt):,} characters long; this Space takes up to {limit:,}. "
            "Shorten it and send your message again."
        )


def _sampling(config, max_new_tokens, temperature, top_p, repetition_penalty, seed, window: int) -> chat.Sampling:
    sampling = chat.Sampling(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
    ).clamped(config.max_new_tokens_cap)
    sampling.max_new_tokens = max(1, min(sampling.max_new_tokens, window // 2))  # always room for the question
    return sampling


def _window(config, cm: chat.ChatModel) -> int:
    return max(32, min(cm.context_window, int(config.context_tokens)))


def _prompt(config, cm, messages, sampling) -> chat.Prompt:
    try:
        return chat.fit_prompt(
            cm.tokenizer, messages, window=_window(config, cm), max_new_tokens=sampling.max_new_tokens
        )
    except chat.InputError as e:
        raise _user_error(str(e)) from None


# ---------------------------------------------------------------------------------------------------------------
# The chat app


class _ChatInterface(gr.ChatInterface):
    """``gr.ChatInterface`` where editing an *answer* keeps the edited answer (a correction) instead of sending the
    edited text as a new question; editing a question still re-asks it."""

    def _edit_message(self, history, edit_data: gr.EditData):
        index = edit_data.index[0] if isinstance(edit_data.index, list | tuple) else edit_data.index
        if 0 <= index < len(history) and history[index].get("role") == "assistant":
            kept = [*history[:index], {"role": "assistant", "content": chat.text_of(edit_data.value)}]
            return kept, kept, []  # [] = nothing to ask: _stream_fn below leaves the conversation as it is
        return super()._edit_message(history, edit_data)

    async def _stream_fn(self, message, history, *args):
        if isinstance(message, list) and not message:
            yield None, history
            return
        async for out in super()._stream_fn(message, history, *args):
            yield out


def _sampling_inputs(config, render: bool = True) -> list:
    return [
        gr.Slider(1, config.max_new_tokens_cap, config.max_new_tokens, step=1, label="Max new tokens", render=render),
        gr.Slider(0.0, 2.0, config.temperature, step=0.05, label="Temperature (0 = greedy)", render=render),
        gr.Slider(0.05, 1.0, config.top_p, step=0.05, label="Top-p", render=render),
        gr.Slider(1.0, 2.0, config.repetition_penalty, step=0.05, label="Repetition penalty", render=render),
        gr.Number(0, label="Seed (0 = random)", precision=0, minimum=0, render=render),
    ]


def _header(config: ChatConfig, feedback_note: str) -> str:
    lines = [f"# {config.heading}"]
    if config.description:
        lines.append(config.description)
    facts = [f"- **Base model:** {_describe(config.base)}"]
    if config.base_adapters:
        facts.append("- **Merged into the base first:** " + ", ".join(_describe(a) for a in config.base_adapters))
    facts.append(f"- **Adapter:** {_describe(config.adapter)}")
    if config.dataset:
        facts.append(f"- **Fine-tuned on:** {_describe(config.dataset, 'dataset')}")
    if config.model_card and _is_hub_id(config.model_card):
        facts.append(f"- **Model card:** [{config.model_card}]({hub_url(config.model_card)})")
    lines.append("\n".join(facts))
    if config.offline:
        lines.append(
            "*Offline mode: the bundled SmolLM2-135M-Instruct"
            + (" with the demo adapter" if config.adapter else "")
            + " stands in for the model this Space is made for.*"
        )
    if feedback_note:
        lines.append(feedback_note)
    return "\n\n".join(lines)


def _embed_note() -> str:
    host = os.environ.get("SPACE_HOST")
    origin = f"https://{host}" if host else "https://YOUR-SPACE.hf.space"
    return (
        "Embed this chat in your page with one line: "
        f'`<script src="{origin}{WIDGET_ROUTE}" defer></script>` (more ways: docs/embed.md in the project).'
    )


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def _with_system(system_prompt: str, history: Sequence[dict]) -> list[dict]:
    system = (system_prompt or "").strip()
    return ([{"role": "system", "content": system}] if system else []) + list(history)


def build_chat_app(
    config: ChatConfig | None = None,
    *,
    model: chat.ChatModel | None = None,
    feedback: Any = None,
) -> gr.Blocks:
    """The chat Space of one model. Loads the model now (at import of ``app.py``, as ZeroGPU wants) unless given.

    ``feedback``: a ``feedback.FeedbackLog`` to use instead of the one ``config.feedback_dataset`` names.
    """
    config = config or ChatConfig.from_env()
    cm = model or chat.load_model(config.base, config.adapters, merge=True)
    state = AppState(config, {"model": cm})
    if feedback is None and config.feedback_dataset:
        from . import feedback as feedback_module

        try:
            feedback = feedback_module.open_log(
                config.feedback_dataset, source={"space": os.environ.get("SPACE_ID"), "model": config.adapters}
            )
        except Exception as e:  # a Space must come up even when its dataset cannot be written
            state.feedback_error = f"{type(e).__name__}: {e}"
            log.error("feedback logging to %s is off: %s", config.feedback_dataset, state.feedback_error)
    state.feedback = feedback
    if feedback is not None:
        note = (
            "**Feedback is on:** likes, dislikes and edited answers, with the conversation they belong to, are saved "
            f"to the dataset {_describe(feedback.repo_id, 'dataset')} to improve the model. Don't rate or edit a "
            "conversation you would not want to share."
        )
    elif state.feedback_error:
        note = f"*Feedback logging to {config.feedback_dataset} is off: it could not be set up.*"
    else:
        note = ""

    @_gpu()
    def generate(input_ids: list[int], sampling: dict[str, Any]) -> Iterator[str]:
        with GPU_LOCK:
            yield from chat.stream_ids(cm, input_ids, chat.Sampling(**sampling))

    def respond(message, history, system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed):
        text = chat.text_of(message).strip()
        _check_message(text, config.max_message_chars, system_prompt)
        sampling = _sampling(config, max_new_tokens, temperature, top_p, repetition_penalty, seed, _window(config, cm))
        messages = _with_system(
            system_prompt,
            chat.history_messages(history, config.max_message_chars) + [{"role": "user", "content": text}],
        )
        prompt = _prompt(config, cm, messages, sampling)
        notice = prompt.notice or ""
        if notice:
            yield notice
        answer = ""
        _count(state, True)
        try:
            with contextlib.closing(generate(prompt.input_ids, dataclasses.asdict(sampling))) as pieces:
                for piece in pieces:
                    answer += piece
                    yield notice + answer
        finally:
            _count(state, False)
        if not answer.strip():
            yield notice + NO_ANSWER

    with gr.Blocks(title=config.heading, analytics_enabled=False, fill_height=True) as demo:
        with gr.Row():
            gr.Markdown(_header(config, note), elem_id="lorallama-header")
            with gr.Column(scale=0, min_width=180):
                gr.DuplicateButton(value="Duplicate this Space", size="sm")
        # Rendered by the ChatInterface, in its accordion.
        system_box = gr.Textbox(config.system_prompt, label="System prompt", lines=2, max_lines=8, render=False)
        inputs = [system_box, *_sampling_inputs(config, render=False)]
        chatbot = gr.Chatbot(
            label=config.heading,
            editable="all",
            feedback_options=("Like", "Dislike") if feedback is not None else None,
            placeholder="Ask anything, or pick one of the examples.",
            scale=1,
            height="60vh",
        )
        chat_ui = _ChatInterface(
            respond,
            chatbot=chatbot,
            textbox=gr.Textbox(
                placeholder="Type a message…",
                show_label=False,
                scale=7,
                autofocus=True,
                submit_btn=True,
                stop_btn=True,
                elem_id="lorallama-input",
                render=False,
            ),
            additional_inputs=inputs,
            additional_inputs_accordion=gr.Accordion("System prompt and sampling", open=False, render=False),
            examples=[[p] for p in COMPARISON_PROMPTS],
            cache_examples=False,  # never generate at start-up (Spaces would otherwise cache them then)
            run_examples_on_click=True,
            editable=True,
            api_name="chat",
            concurrency_limit=1,
            fill_height=True,
            analytics_enabled=False,
        )
        state.ui = chat_ui
        gr.Markdown(_embed_note(), elem_id="lorallama-embed")
        if feedback is not None:
            _wire_feedback(chat_ui.chatbot, system_box, feedback)
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    demo.lorallama = state  # type: ignore[attr-defined]
    return demo


def _wire_feedback(chatbot: gr.Chatbot, system_box: gr.Textbox, log_: Any) -> None:
    """Likes, dislikes and edits of answers go to the feedback log."""

    def on_like(history, system_prompt, data: gr.LikeData, request: gr.Request):
        index = data.index[0] if isinstance(data.index, list | tuple) else int(data.index)
        end = index
        while end + 1 < len(history) and history[end + 1].get("role") == "assistant":
            end += 1
        if not (0 <= index < len(history)) or history[index].get("role") != "assistant":
            return
        kind = "like" if data.liked is True else "dislike" if data.liked is False else None
        if kind is None:
            return
        conversation = _with_system(system_prompt, history[: end + 1])
        log_.record(kind, conversation, index=index, session=_session(request))

    def on_edit(history, system_prompt, data: gr.EditData, request: gr.Request):
        index = data.index[0] if isinstance(data.index, list | tuple) else int(data.index)
        if not (0 <= index < len(history)) or history[index].get("role") != "assistant":
            return  # an edited question is a new question, not feedback
        previous = chat.text_of(data.previous_value)
        conversation = _with_system(system_prompt, [*history[:index], {"role": "assistant", "content": previous}])
        log_.record(
            "edit",
            conversation,
            index=index,
            session=_session(request),
            edited=chat.text_of(data.value),
            previous=previous,
        )

    chatbot.like(on_like, [chatbot, system_box], None, queue=False, api_visibility="private")
    chatbot.edit(on_edit, [chatbot, system_box], None, queue=False, api_visibility="private")


# ---------------------------------------------------------------------------------------------------------------
# The compare arena


def _merge_streams(streams: Sequence[Iterator[str]], stops: Sequence[threading.Event]) -> Iterator[tuple[int, str]]:
    """Pieces of several streams as ``(stream index, piece)`` in the order they arrive, each read in its own thread."""
    pieces: queue.Queue = queue.Queue()
    done = object()

    def pump(i: int, stream: Iterator[str]) -> None:
        try:
            for piece in stream:
                pieces.put((i, piece))
        except BaseException as e:
            pieces.put((i, e))
        finally:
            pieces.put((i, done))

    threads = [threading.Thread(target=pump, args=(i, s), daemon=True) for i, s in enumerate(streams)]
    for t in threads:
        t.start()
    remaining = len(threads)
    try:
        while remaining:
            i, item = pieces.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for stop in stops:
            stop.set()
        for t in threads:
            t.join(timeout=120)


def build_compare_app(
    config: CompareConfig | None = None,
    *,
    models_by_label: dict[str, chat.ChatModel] | None = None,
) -> gr.Blocks:
    """One prompt, every column's answer side by side, all streaming at once."""
    if config is None:
        raise ValueError("build_compare_app needs a CompareConfig (CompareConfig.from_env(columns={...}))")
    loaded: dict[tuple[str, ...], chat.ChatModel] = {}
    chosen: dict[str, chat.ChatModel] = {}
    for label, adapters in config.columns.items():
        if models_by_label and label in models_by_label:
            chosen[label] = models_by_label[label]
            continue
        key = (config.base, *adapters)
        if key not in loaded:  # columns with the same model share one copy of it
            loaded[key] = chat.load_model(config.base, adapters, merge=True)
        chosen[label] = loaded[key]
    labels = list(config.columns)
    state = AppState(config, chosen)

    @_gpu()
    def generate(jobs: list[tuple[str, list[int], dict[str, Any]]]) -> Iterator[tuple[int, str]]:
        stops = [threading.Event() for _ in jobs]
        with GPU_LOCK:
            streams = [
                chat.stream_ids(chosen[label], ids, chat.Sampling(**sampling), stop)
                for (label, ids, sampling), stop in zip(jobs, stops, strict=True)
            ]
            yield from _merge_streams(streams, stops)

    def compare(prompt, system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed):
        text = chat.text_of(prompt).strip()
        _check_message(text, config.max_message_chars, system_prompt)
        messages = _with_system(system_prompt, [{"role": "user", "content": text}])
        jobs = []
        for label in labels:
            cm = chosen[label]
            sampling = _sampling(
                config, max_new_tokens, temperature, top_p, repetition_penalty, seed, _window(config, cm)
            )
            jobs.append((label, _prompt(config, cm, messages, sampling).input_ids, dataclasses.asdict(sampling)))
        answers = [""] * len(labels)
        yield tuple(answers)
        _count(state, True)
        try:
            with contextlib.closing(generate(jobs)) as pieces:
                for i, piece in pieces:
                    answers[i] += piece
                    yield tuple(answers)
        finally:
            _count(state, False)
        yield tuple(a if a.strip() else NO_ANSWER for a in answers)

    with gr.Blocks(title=config.title, analytics_enabled=False) as demo:
        with gr.Row():
            intro = [f"# {config.title}", config.description or "One prompt, every model's answer side by side."]
            if config.offline:
                intro.append("*Offline mode: the bundled SmolLM2-135M-Instruct stands in for the real models.*")
            gr.Markdown("\n\n".join(intro))
            with gr.Column(scale=0, min_width=180):
                gr.DuplicateButton(value="Duplicate this Space", size="sm")
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(label="Prompt", placeholder="Ask all of them…", scale=5, lines=1, max_lines=6)
            send = gr.Button("Send", variant="primary", scale=0, min_width=90)
            stop = gr.Button("Stop", variant="stop", scale=0, min_width=90)
        with gr.Accordion("System prompt and sampling", open=False):
            system_box = gr.Textbox(config.system_prompt, label="System prompt", lines=2)
            settings = [system_box, *_sampling_inputs(config)]
        outputs = []
        with gr.Row(equal_height=True):
            for label in labels:
                with gr.Column(min_width=240):
                    adapters = config.columns[label]
                    what = " + ".join([_describe(config.base), *(_describe(a) for a in adapters)])
                    note = f" *({config.notes[label]})*" if label in config.notes else ""
                    gr.Markdown(f"### {label}\n<small>{what}{note}</small>")
                    outputs.append(
                        gr.Markdown("", min_height=240, container=True, elem_classes=["lorallama-answer"], label=label)
                    )
        gr.Examples([[p] for p in COMPARISON_PROMPTS], inputs=[prompt], label="The original comparison prompts")
        event = gr.on(
            [send.click, prompt.submit],
            compare,
            [prompt, *settings],
            outputs,
            api_name="compare",
            concurrency_limit=1,
        )
        stop.click(None, None, None, cancels=[event], queue=False)
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    demo.lorallama = state  # type: ignore[attr-defined]
    return demo


# ---------------------------------------------------------------------------------------------------------------
# Serving: the widget route, launch, serve


def widget_file() -> Path:
    return STATIC / "widget.js"


def _add_widget_route(app) -> None:
    from fastapi.responses import FileResponse, PlainTextResponse

    @app.get(WIDGET_ROUTE, include_in_schema=False)
    def widget_js():
        path = widget_file()
        if not path.is_file():
            return PlainTextResponse(
                "// the lorallama widget was not built: run `make widget` (npm) before serving or syncing the Space\n",
                status_code=404,
                media_type="text/javascript",
            )
        etag = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return FileResponse(
            path,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=600", "ETag": etag, "Access-Control-Allow-Origin": "*"},
        )


def _add_web_component_route(app) -> None:
    """Gradio's ``<gradio-app>`` web component, loaded from the Space itself instead of Gradio's CDN.

    Gradio ships ``gradio.js`` (one line: ``import("./assets/index-….js")``) and the Space already serves
    ``/assets/``; this route hands out that line with the path made absolute, so it works from ``/lorallama/``.
    """
    from fastapi.responses import PlainTextResponse

    @app.get(WEB_COMPONENT_ROUTE, include_in_schema=False)
    def gradio_js():
        source = Path(gr.__file__).parent / "templates" / "frontend" / "gradio.js"
        text = source.read_text(encoding="utf-8") if source.is_file() else ""
        if "./assets/" not in text:
            return PlainTextResponse("// this Gradio build has no web component loader\n", 404)
        return PlainTextResponse(
            text.replace("./assets/", "/assets/"),
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=600", "Access-Control-Allow-Origin": "*"},
        )


def launch(demo: gr.Blocks, **kwargs: Any):
    """``demo.launch(**kwargs)`` with the embed widget served at ``/lorallama/widget.js``."""
    from gradio.routes import App

    app = App()
    _add_widget_route(app)
    _add_web_component_route(app)
    state = getattr(demo, "lorallama", None)
    if state is not None and not kwargs.get("quiet"):
        from . import __version__

        models_ = {f"{m.base}{''.join(f' + {a}' for a in m.merged)}" for m in state.models.values()}
        print(f"lorallama {__version__} ({Path(__file__).parent}) serving {', '.join(sorted(models_))}", flush=True)
    kwargs.setdefault("show_error", True)
    return demo.launch(_app=app, **kwargs)


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True, out=None) -> str:
    """Serve ``demo`` locally and print its URL; with ``block`` wait until Ctrl-C, then stop it."""
    out = out or sys.stdout
    _, url, _ = launch(demo, server_name=host, server_port=port, prevent_thread_lock=True, quiet=True)
    print(f"chat Space running at {url}  (embed widget: {url.rstrip('/')}{WIDGET_ROUTE})", file=out, flush=True)
    if block:
        print("press Ctrl-C to stop it", file=out, flush=True)
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()
    return url


def serve_demo(
    adapter_dir: str | Path,
    *,
    model: chat.ChatModel | None = None,
    block: bool = True,
    port: int | None = None,
    out=None,
) -> str:
    """The demo Space (bundled SmolLM2 + the adapter ``make demo`` just trained), served locally."""
    config = ChatConfig.from_target(str(adapter_dir), slug="demo", title="lorallama · demo (Captain Lora)")
    return serve(build_chat_app(config, model=model), port=port, block=block, out=out)
