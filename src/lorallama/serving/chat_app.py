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
from collections.abc import Iterator
from typing import Any

import gradio as gr

from ..conversations import text_of
from ..names import hub_url, is_repo_id
from ..prompts import COMPARISON_PROMPTS
from . import chat, ui
from .config import ChatConfig, describe
from .gradio_compat import ChatInterface
from .ui import GPU_LOCK, NO_ANSWER, AppState

log = logging.getLogger("lorallama")
WIDGET_ROUTE = "/lorallama/widget.js"


def _header(config: ChatConfig, feedback_note: str) -> str:
    lines = [f"# {config.heading}"]
    if config.description:
        lines.append(config.description)
    facts = [f"- **Base model:** {describe(config.base)}"]
    if config.base_adapters:
        facts.append("- **Merged into the base first:** " + ", ".join(describe(a) for a in config.base_adapters))
    facts.append(f"- **Adapter:** {describe(config.adapter)}")
    if config.dataset:
        facts.append(f"- **Fine-tuned on:** {describe(config.dataset, 'dataset')}")
    if config.model_card and is_repo_id(config.model_card):
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

    def respond(message, history, system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed):
        text = text_of(message).strip()
        ui.check_message(text, config.max_message_chars, system_prompt)
        sampling = ui.sampling_for(
            config, max_new_tokens, temperature, top_p, repetition_penalty, seed, ui.window_for(config, cm)
        )
        messages = ui.with_system(
            system_prompt,
            chat.history_messages(history, config.max_message_chars) + [{"role": "user", "content": text}],
        )
        prompt = ui.fit_or_refuse(config, cm, messages, sampling)
        notice = prompt.notice or ""
        if notice:
            yield notice
        answer = ""
        ui.count(state, True)
        try:
            with contextlib.closing(generate(prompt.input_ids, dataclasses.asdict(sampling))) as pieces:
                for piece in pieces:
                    answer += piece
                    yield notice + answer
        finally:
            ui.count(state, False)
        if not answer.strip():
            yield notice + NO_ANSWER

    with gr.Blocks(title=config.heading, analytics_enabled=False, fill_height=True) as demo:
        with gr.Row():
            gr.Markdown(_header(config, note), elem_id="lorallama-header")
            with gr.Column(scale=0, min_width=180):
                gr.DuplicateButton(value="Duplicate this Space", size="sm")
        # Rendered by the ChatInterface, in its accordion.
        system_box = gr.Textbox(config.system_prompt, label="System prompt", lines=2, max_lines=8, render=False)
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
        conversation = ui.with_system(system_prompt, history[: end + 1])
        log_.record(kind, conversation, index=index, session=ui.session_of(request))

    def on_edit(history, system_prompt, data: gr.EditData, request: gr.Request):
        index = data.index[0] if isinstance(data.index, list | tuple) else int(data.index)
        if not (0 <= index < len(history)) or history[index].get("role") != "assistant":
            return  # an edited question is a new question, not feedback
        previous = text_of(data.previous_value)
        conversation = ui.with_system(system_prompt, [*history[:index], {"role": "assistant", "content": previous}])
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
