"""The compare arena: one prompt, every column's answer side by side, all streaming at once."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from ..prompts import COMPARISON_PROMPTS
from . import chat, ui
from .config import CompareConfig, describe
from .ui import GPU_LOCK, NO_ANSWER, AppState


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

    @ui.gpu()
    def generate(jobs: list[tuple[str, list[int], dict[str, Any]]]) -> Iterator[tuple[int, str]]:
        stops = [threading.Event() for _ in jobs]
        with GPU_LOCK:
            streams = [
                chat.stream_ids(chosen[label], ids, chat.Sampling(**sampling), stop)
                for (label, ids, sampling), stop in zip(jobs, stops, strict=True)
            ]
            yield from ui.merge_streams(streams, stops)

    def compare(prompt, system_prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed):
        text = chat.text_of(prompt).strip()
        ui.check_message(text, config.max_message_chars, system_prompt)
        messages = ui.with_system(system_prompt, [{"role": "user", "content": text}])
        jobs = []
        for label in labels:
            cm = chosen[label]
            sampling = ui.sampling_for(
                config, max_new_tokens, temperature, top_p, repetition_penalty, seed, ui.window_for(config, cm)
            )
            jobs.append(
                (label, ui.fit_or_refuse(config, cm, messages, sampling).input_ids, dataclasses.asdict(sampling))
            )
        answers = [""] * len(labels)
        yield tuple(answers)
        ui.count(state, True)
        try:
            with contextlib.closing(generate(jobs)) as pieces:
                for i, piece in pieces:
                    answers[i] += piece
                    yield tuple(answers)
        finally:
            ui.count(state, False)
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
            settings = [system_box, *ui.sampling_inputs(config)]
        outputs = []
        with gr.Row(equal_height=True):
            for label in labels:
                with gr.Column(min_width=240):
                    adapters = config.columns[label]
                    what = " + ".join([describe(config.base), *(describe(a) for a in adapters)])
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
