"""The chat Space of one model: streaming, stop, retry, undo, edit, settings, examples, feedback.

A Space's ``app.py`` is a few lines (see ``spaces/<slug>/app.py``)::

    from lorallama.serving.chat_app import build_chat_app
    from lorallama.serving.config import ChatConfig
    from lorallama.serving.web import launch

    demo = build_chat_app(ChatConfig.from_env(slug="finetome", base="unsloth/Llama-3.2-1B-Instruct",
                                              adapter="lorallama/llama-3.2-1b-finetome"))
    if __name__ == "__main__":
        launch(demo)

Generation runs under ``@spaces.GPU`` (a no-op off ZeroGPU) with the model loaded when the app is built, one
generation at a time per process, behind a bounded queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from ..conversations import drop_notice, text_of
from ..names import hub_url, is_repo_id
from ..prompts import COMPARISON_PROMPTS
from . import chat, ui
from .config import ChatConfig, describe
from .gradio_compat import ChatInterface
from .ui import GPU_LOCK, NO_ANSWER, AppState

log = logging.getLogger("lorallama")
WIDGET_ROUTE = "/lorallama/widget.js"
CONTINUE = "Continue"
CUT_MARK = "\n\n*[cut at the {n}-token limit: press Continue, or send \u201cContinue\u201d, to carry on]*"
CUT_RE = re.compile(r"\n\n\*\[cut at the \d+-token limit[^\]\n]*\]\*\s*\Z")


def resuming(text: str, turns: list[dict]) -> bool:
    """``text`` asks to carry on with the answer before it, which was cut at the token limit."""
    return text.strip().rstrip(".!").lower() == CONTINUE.lower() and bool(turns) and bool(turns[-1].get("cut"))


def model_turns(history: list) -> list[dict]:
    """The page's history as the model should see it: cut marks taken out, and each "Continue" after a cut answer
    folded away so that the answer and its continuation read as one (``cut`` says whether an answer was cut)."""
    out: list[dict] = []
    fold = False
    for message in history or []:
        get = message.get if isinstance(message, dict) else lambda k, m=message: getattr(m, k, None)
        role, text, metadata = get("role"), text_of(get("content")), get("metadata")
        if role == "assistant" and not (metadata and metadata.get("title")):
            cut = bool(CUT_RE.search(text))
            text = CUT_RE.sub("", text)
            if fold and out and out[-1]["role"] == "assistant":
                out[-1] = {**out[-1], "content": out[-1]["content"] + text, "cut": cut}
                fold = False
                continue
            out.append({"role": role, "content": text, "cut": cut})
            continue
        fold = False
        if role == "user" and resuming(text, out):
            fold = True
            continue
        out.append({"role": role, "content": text, "metadata": metadata})
    return out


def _header(config: ChatConfig, feedback_note: str, missing: list[str] | None = None) -> str:
    lines = [f"# {config.heading}"]
    if config.description:
        lines.append(config.description)
    facts = [f"- **Base model:** {describe(config.base)}"]
    if config.base_adapters:
        facts.append("- **Merged into the base first:** " + ", ".join(describe(a) for a in config.base_adapters))
    facts.append(f"- **Adapter:** {describe(config.adapter)}")
    if config.dataset:
        facts.append(f"- **Fine-tuned on:** {describe(config.dataset, 'dataset')}")
    if config.model_card and is_repo_id(config.model_card) and not missing:
        facts.append(f"- **Model card:** [{config.model_card}]({hub_url(config.model_card)})")
    if config.studio and is_repo_id(config.studio):
        facts.append(
            f"- **Fine-tune your own:** [{config.studio}]({hub_url(config.studio, 'space')}): your data, as a Job in "
            "your namespace, with your own chat Space at the end"
        )
    lines.append("\n".join(facts))
    if missing:
        lines.append(base_only_note(config, missing))
    if config.offline:
        lines.append(
            "*Offline mode: the bundled SmolLM2-135M-Instruct"
            + (" with the demo adapter" if config.adapter else "")
            + " stands in for the model this Space is made for.*"
        )
    if feedback_note:
        lines.append(feedback_note)
    return "\n\n".join(lines)


def base_only_note(config: ChatConfig, missing: list[str]) -> str:
    """What the page says when the adapter is not on the Hub yet (a fresh fork): the base answers, and how to train."""
    repo = missing[0]
    return (
        f"**Answering with the base model alone:** the adapter {describe(repo)} is not on the Hub yet "
        "(no finished training run has pushed it). Train it with\n\n"
        f"```bash\nlorallama jobs run {config.slug} --until-done --set hub.model_repo={repo}\n```\n\n"
        "and restart this Space once the run has finished."
    )


def missing_adapters(config: ChatConfig) -> list[str]:
    """The Hub adapters of ``config`` (oldest first) that hold no finished adapter (``adapter_config.json``)."""
    from .. import hub

    missing = []
    for adapter in config.adapters:
        if not is_repo_id(adapter) or Path(adapter).exists():
            continue
        try:
            found = hub.read_file(adapter, "adapter_config.json") is not None
        except Exception as e:  # cannot tell (no network, a Hub outage): try to load it as configured
            log.warning("cannot check adapter %s on the Hub: %s", adapter, e)
            continue
        if not found:
            missing.append(adapter)
    return missing


def without_missing(config: ChatConfig, missing: list[str]) -> list[str]:
    """The adapters to load: the chain up to the first missing one (a later adapter was trained on top of it)."""
    chain = config.adapters
    first = min((chain.index(m) for m in missing), default=len(chain))
    return chain[:first]


def _embed_note() -> str:
    host = os.environ.get("SPACE_HOST")
    origin = f"https://{host}" if host else "https://YOUR-SPACE.hf.space"
    return (
        "Embed this chat in your page with one line: "
        f'`<script src="{origin}{WIDGET_ROUTE}" defer></script>` (more ways: docs/embed.md in the project).'
    )


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
    missing = [] if model is not None else missing_adapters(config)
    if missing:
        log.warning("adapter %s is not on the Hub yet: serving %s without it", missing[0], config.base)
    cm = model or chat.load_model(config.base, without_missing(config, missing), merge=True)
    state = AppState(config, {"model": cm})
    state.missing_adapters = missing  # type: ignore[attr-defined]
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
            f"to the dataset {describe(feedback.repo_id, 'dataset')} to improve the model. Don't rate or edit a "
            "conversation you would not want to share."
        )
    elif state.feedback_error:
        note = f"*Feedback logging to {config.feedback_dataset} is off: it could not be set up.*"
    else:
        note = ""

    @ui.gpu()
    def generate(input_ids: list[int], sampling: dict[str, Any]) -> Iterator[str]:
        with GPU_LOCK:
            yield from chat.stream_ids(cm, input_ids, chat.Sampling(**sampling))

    def prepare(text, turns, system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed):
        """The prompt ids and sampling for ``text`` after ``turns``; ``gr.Error`` (our words) when it is refused.
        ``text`` = "Continue" after a cut answer resumes that answer instead of asking a new question."""
        ui.check_message(text, config.max_message_chars, system_prompt)
        sampling = ui.sampling_for(
            config, max_new_tokens, temperature, top_p, repetition_penalty, seed, ui.window_for(config, cm)
        )
        past = chat.history_messages(turns, config.max_message_chars)
        if resuming(text, turns) and past and past[-1]["role"] == "assistant":
            partial = drop_notice(turns[-1]["content"])  # as the model wrote it (history_messages strips it)
            partial_ids = cm.tokenizer(partial, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            room = dataclasses.replace(sampling, max_new_tokens=sampling.max_new_tokens + len(partial_ids))
            prompt = ui.fit_or_refuse(config, cm, ui.with_system(system_prompt, past[:-1]), room)
            return prompt, prompt.input_ids + list(partial_ids), sampling
        messages = ui.with_system(system_prompt, past + [{"role": "user", "content": text}])
        prompt = ui.fit_or_refuse(config, cm, messages, sampling)
        return prompt, prompt.input_ids, sampling

    def validate(message, system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed):
        """Runs before the page clears the textbox: a refused message stays there, with the reason under it."""
        settings = (system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed)
        try:
            prepare(text_of(message).strip(), [], *settings)
        except gr.Error as e:
            return [gr.validate(False, e.message)] + [gr.validate(True, "") for _ in settings]
        return [gr.validate(True, "") for _ in (message, *settings)]

    def respond(message, history, system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed):
        text = text_of(message).strip()
        turns = model_turns(history)
        settings = (system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed)
        prompt, input_ids, sampling = prepare(text, turns, *settings)
        notice = prompt.notice or ""
        if notice:
            yield notice
        answer = ""
        ui.count(state, True)
        try:
            with contextlib.closing(generate(input_ids, dataclasses.asdict(sampling))) as pieces:
                for piece in pieces:
                    answer += piece
                    yield notice + answer
        finally:
            ui.count(state, False)
        if not answer.strip():
            yield notice + NO_ANSWER
        elif len(cm.tokenizer(answer, add_special_tokens=False)["input_ids"]) >= sampling.max_new_tokens - 1:
            yield notice + answer + CUT_MARK.format(n=sampling.max_new_tokens)

    with gr.Blocks(title=config.heading, analytics_enabled=False, fill_height=True) as demo:
        with gr.Row():
            notes = "\n\n".join(filter(None, [cm.unmerged_note, note]))  # say when an adapter runs unmerged
            gr.Markdown(_header(config, notes, missing), elem_id="lorallama-header")
            with gr.Column(scale=0, min_width=180):
                gr.DuplicateButton(value="Duplicate this Space", size="sm")
                ui.sign_in_button()  # on ZeroGPU: signing in raises the visitor's daily GPU time
        # Rendered by the ChatInterface, in its accordion.
        system_box = gr.Textbox(
            config.system_prompt, label="System prompt", lines=2, max_lines=8, elem_id="lorallama-system", render=False
        )
        inputs = [system_box, *ui.sampling_inputs(config, render=False)]
        chatbot = gr.Chatbot(
            label=config.heading,
            editable="all",
            feedback_options=("Like", "Dislike") if feedback is not None else None,
            placeholder="Ask anything, or pick one of the examples.",
            scale=1,
            height="60vh",
        )
        chat_ui = ChatInterface(
            respond,
            options_for=lambda text: [{"value": CONTINUE, "label": CONTINUE}] if CUT_RE.search(text) else None,
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
            validator=validate,
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


def _unmarked(history: list) -> list:
    """Messages with the page's cut-at-the-limit marks taken out (feedback rows become training data)."""
    return [
        {**m, "content": CUT_RE.sub("", text_of(m.get("content")))} if m.get("role") == "assistant" else m
        for m in history
    ]


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
        conversation = ui.with_system(system_prompt, _unmarked(history[: end + 1]))
        log_.record(kind, conversation, index=index, session=ui.session_of(request))

    def on_edit(history, system_prompt, data: gr.EditData, request: gr.Request):
        index = data.index[0] if isinstance(data.index, list | tuple) else int(data.index)
        if not (0 <= index < len(history)) or history[index].get("role") != "assistant":
            return  # an edited question is a new question, not feedback
        previous = text_of(data.previous_value)
        previous = CUT_RE.sub("", previous)
        conversation = ui.with_system(
            system_prompt, _unmarked([*history[:index], {"role": "assistant", "content": previous}])
        )
        log_.record(
            "edit",
            conversation,
            index=index,
            session=ui.session_of(request),
            edited=text_of(data.value),
            previous=previous,
        )

    chatbot.like(on_like, [chatbot, system_box], None, queue=False, api_visibility="private")
    chatbot.edit(on_edit, [chatbot, system_box], None, queue=False, api_visibility="private")
