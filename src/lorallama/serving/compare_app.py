"""The compare arena: every column's answer side by side, all streaming at once, turn after turn.

The page keeps one conversation per model (each model sees its own earlier answers). In blind mode the models are
shown as Model A, B, C… in a shuffled order and named only after a vote; votes go to the feedback dataset
(``LORALLAMA_FEEDBACK_DATASET``) as ``"kind": "vote"`` rows (``feedback_schema.make_vote_row``). The API endpoint
``/compare`` stays one prompt in, one answer per column out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import string
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from ..feedback_schema import make_vote_row
from ..prompts import COMPARISON_PROMPTS
from . import chat, ui
from .config import CompareConfig, describe
from .ui import GPU_LOCK, NO_ANSWER, AppState

log = logging.getLogger("lorallama")


def build_compare_app(
    config: CompareConfig | None = None,
    *,
    models_by_label: dict[str, chat.ChatModel] | None = None,
    feedback: Any = None,
) -> gr.Blocks:
    """Every column's answer side by side, all streaming at once; multi-turn, with a blind mode and votes.

    ``feedback``: a ``feedback.FeedbackLog`` for the votes instead of the one ``config.feedback_dataset`` names.
    """
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
    state.votes = []  # type: ignore[attr-defined]
    if feedback is None and config.feedback_dataset:
        from . import feedback as feedback_module

        try:
            feedback = feedback_module.open_log(
                config.feedback_dataset, source={"space": os.environ.get("SPACE_ID"), "columns": config.columns}
            )
        except Exception as e:  # the arena must come up even when its dataset cannot be written
            state.feedback_error = f"{type(e).__name__}: {e}"
            log.error("votes to %s are off: %s", config.feedback_dataset, state.feedback_error)
    state.feedback = feedback
    letters = string.ascii_uppercase

    @ui.gpu()
    def generate(jobs: list[tuple[str, list[int], dict[str, Any]]]) -> Iterator[tuple[int, str]]:
        stops = [threading.Event() for _ in jobs]
        with GPU_LOCK:
            streams = [
                chat.stream_ids(chosen[label], ids, chat.Sampling(**sampling), stop)
                for (label, ids, sampling), stop in zip(jobs, stops, strict=True)
            ]
            yield from ui.merge_streams(streams, stops)

    def jobs_for(text, histories, system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed):
        ui.check_message(text, config.max_message_chars, system_prompt)
        jobs = []
        for label in labels:
            cm = chosen[label]
            past = chat.history_messages((histories or {}).get(label, []), config.max_message_chars)
            messages = ui.with_system(system_prompt, past + [{"role": "user", "content": text}])
            sampling = ui.sampling_for(
                config, max_new_tokens, temperature, top_p, repetition_penalty, seed, ui.window_for(config, cm)
            )
            jobs.append(
                (label, ui.fit_or_refuse(config, cm, messages, sampling).input_ids, dataclasses.asdict(sampling))
            )
        return jobs

    def stream(jobs) -> Iterator[list[str]]:
        answers = [""] * len(labels)
        yield answers
        ui.count(state, True)
        try:
            with contextlib.closing(generate(jobs)) as pieces:
                for i, piece in pieces:
                    answers[i] += piece
                    yield answers
        finally:
            ui.count(state, False)
        yield [a if a.strip() else NO_ANSWER for a in answers]

    def compare(prompt, system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed):
        """The API: one prompt, one answer per column."""
        settings = (system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed)
        for answers in stream(jobs_for(chat.text_of(prompt).strip(), {}, *settings)):
            yield tuple(answers)

    def heading(i: int, label: str, blind: bool, revealed: bool) -> str:
        adapters = config.columns[label]
        what = " + ".join([describe(config.base), *(describe(a) for a in adapters)])
        note = f" *({config.notes[label]})*" if label in config.notes else ""
        if blind and not revealed:
            return f"### Model {letters[i]}\n<small>which model this is stays hidden until you vote</small>"
        name = f"Model {letters[i]}: {label}" if blind else label
        return f"### {name}\n<small>{what}{note}</small>"

    def headings(order, blind, revealed):
        return [heading(i, label, blind, revealed) for i, label in enumerate(order)]

    def new_order(blind: bool) -> list[str]:
        return random.sample(labels, len(labels)) if blind else list(labels)

    def converse(prompt, histories, order, blind, voted, *settings):
        """The page: the next turn of every model's conversation, in the order shown."""
        text = chat.text_of(prompt).strip()
        histories = histories or {label: [] for label in labels}
        order = order or new_order(blind)
        jobs = jobs_for(text, histories, *settings)
        shown = [labels.index(label) for label in order]
        for answers in stream(jobs):
            turn = {
                label: [*histories[label], {"role": "user", "content": text}, {"role": "assistant", "content": answer}]
                for label, answer in zip(labels, answers, strict=True)
            }
            yield (
                "",
                *[turn[labels[j]] for j in shown],
                *headings(order, blind, bool(voted)),
                turn,
                order,
                bool(voted),
                gr.update(visible=False),
                "",
            )
        yield (
            gr.skip(),
            *[gr.skip() for _ in shown],
            *[gr.skip() for _ in shown],
            turn,
            order,
            bool(voted),
            gr.update(visible=True),
            "Which answer is best? Your vote names the models." if blind and not voted else "Which answer is best?",
        )

    def validate(prompt, histories, order, blind, voted, *settings):
        """Runs before the page takes the prompt: a refused one stays in the box, with the reason under it."""
        try:
            jobs_for(chat.text_of(prompt).strip(), histories, *settings)
        except gr.Error as e:
            return [gr.validate(False, e.message)] + [
                gr.validate(True, "") for _ in (histories, order, blind, voted, *settings)
            ]
        return [gr.validate(True, "") for _ in (prompt, histories, order, blind, voted, *settings)]

    def vote(choice: str, histories, order, blind, voted, system_prompt, request: gr.Request):
        """One vote on the latest turn; in blind mode the first vote of a conversation names the models."""
        if not histories or not order:
            return gr.skip(), gr.skip(), *[gr.skip() for _ in order or labels], gr.skip()
        winner = "tie" if choice == "tie" else order[letters.index(choice)]
        answers = {label: ui.with_system(system_prompt, histories[label]) for label in order}
        row = make_vote_row(
            answers,
            winner=winner,
            shown=order,
            blind=bool(blind and not voted),
            session=ui.session_of(request),
            source=getattr(feedback, "source", None),
        )
        state.votes.append(row)
        if feedback is not None:
            feedback.append(row)
            saved = f"saved to {describe(feedback.repo_id, 'dataset')}"
        else:
            saved = "not saved: this arena has no feedback dataset (LORALLAMA_FEEDBACK_DATASET)"
        picked = "a tie" if winner == "tie" else f"Model {choice} ({winner})"
        return (
            True,
            gr.update(visible=False),
            *headings(order, blind, True),
            f"Your vote for {picked} is {saved}.",
        )

    def reset(blind):
        order = new_order(blind)
        return (
            {label: [] for label in labels},
            order,
            False,
            *[[] for _ in labels],
            *headings(order, blind, False),
            gr.update(visible=False),
            "",
        )

    with gr.Blocks(title=config.title, analytics_enabled=False) as demo:
        with gr.Row():
            intro = [f"# {config.title}", config.description or "Every model's answer side by side, turn after turn."]
            if config.offline:
                intro.append("*Offline mode: the bundled SmolLM2-135M-Instruct stands in for the real models.*")
            if feedback is not None:
                intro.append(
                    f"**Votes are saved** with the conversations they judge to {describe(feedback.repo_id, 'dataset')}."
                )
            gr.Markdown("\n\n".join(intro))
            with gr.Column(scale=0, min_width=180):
                gr.DuplicateButton(value="Duplicate this Space", size="sm")
        histories = gr.State(None)
        first_order = new_order(config.blind)
        order_state = gr.State(first_order)
        voted = gr.State(False)
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(
                label="Prompt",
                placeholder="Ask all of them…",
                scale=5,
                lines=1,
                max_lines=6,
                elem_id="lorallama-prompt",
            )
            send = gr.Button("Send", variant="primary", scale=0, min_width=90)
            stop = gr.Button("Stop", variant="stop", scale=0, min_width=90)
            new = gr.Button("New conversation", scale=0, min_width=120)
        blind = gr.Checkbox(
            config.blind, label="Blind: show the models as A, B, C… in a random order, named after your vote"
        )
        with gr.Accordion("System prompt and sampling", open=False):
            system_box = gr.Textbox(config.system_prompt, label="System prompt", lines=2)
            settings = [system_box, *ui.sampling_inputs(config)]
        titles, chatbots = [], []
        with gr.Row(equal_height=True):
            for i, label in enumerate(first_order):
                with gr.Column(min_width=240):
                    titles.append(
                        gr.Markdown(
                            heading(i, label, config.blind, False),
                            elem_classes=["lorallama-model"],
                            elem_id=f"lorallama-model-{letters[i]}",
                        )
                    )
                    chatbots.append(
                        gr.Chatbot(
                            [],
                            height=360,
                            show_label=False,
                            elem_classes=["lorallama-answer"],
                            elem_id=f"lorallama-answer-{letters[i]}",
                            label=f"Model {letters[i]}",
                        )
                    )
        with gr.Row(visible=False) as vote_row:
            vote_buttons = [
                gr.Button(f"{letters[i]} is best", elem_classes=["lorallama-vote"]) for i in range(len(labels))
            ]
            tie = gr.Button("Tie", elem_classes=["lorallama-vote"])
        verdict = gr.Markdown("", elem_id="lorallama-verdict")
        gr.Examples([[p] for p in COMPARISON_PROMPTS], inputs=[prompt], label="The original comparison prompts")
        with gr.Column(visible=False):  # the API's one-shot comparison: one answer per column
            api_outputs = [gr.Markdown("", label=label) for label in labels]
            api_button = gr.Button("compare")
        api_event = api_button.click(compare, [prompt, *settings], api_outputs, api_name="compare", concurrency_limit=1)
        event = gr.on(
            [send.click, prompt.submit],
            converse,
            [prompt, histories, order_state, blind, voted, *settings],
            [prompt, *chatbots, *titles, histories, order_state, voted, vote_row, verdict],
            api_visibility="private",
            concurrency_limit=1,
            validator=validate,
            show_progress_on=chatbots,
        )
        stop.click(None, None, None, cancels=[event, api_event], queue=False)
        for i, button in enumerate(vote_buttons):
            button.click(
                _voter(vote, letters[i]),
                [histories, order_state, blind, voted, system_box],
                [voted, vote_row, *titles, verdict],
                api_visibility="private",
                queue=False,
                show_progress="hidden",
            )
        tie.click(
            _voter(vote, "tie"),
            [histories, order_state, blind, voted, system_box],
            [voted, vote_row, *titles, verdict],
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
        for trigger in (new.click, blind.change, demo.load):
            trigger(
                reset,
                [blind],
                [histories, order_state, voted, *chatbots, *titles, vote_row, verdict],
                api_visibility="private",
                queue=False,
                show_progress="hidden",
            )
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    demo.lorallama = state  # type: ignore[attr-defined]
    return demo


def _voter(vote, choice: str):
    """A vote button's handler (one per button: Gradio reads the handler's signature for ``gr.Request``)."""

    def on_vote(histories, order, blind, voted, system_prompt, request: gr.Request):
        return vote(choice, histories, order, blind, voted, system_prompt, request)

    return on_vote
