"""The one place that leans on Gradio's private API, because Gradio 6.31 has no public hook for it.

``gr.ChatInterface`` re-asks an edited message, whichever it is; a Space wants an edited *answer* kept as a
correction (and logged as feedback) instead. That needs overriding ``_edit_message`` and ``_stream_fn``;
tests/test_gradio_compat.py fails loudly when Gradio renames or reshapes either.
"""

from __future__ import annotations

import gradio as gr

from ..conversations import text_of

PRIVATE_HOOKS = ("_edit_message", "_stream_fn")


class ChatInterface(gr.ChatInterface):
    """``gr.ChatInterface`` where editing an *answer* keeps the edited answer (a correction) instead of sending the
    edited text as a new question; editing a question still re-asks it."""

    def _edit_message(self, history, edit_data: gr.EditData):
        index = edit_data.index[0] if isinstance(edit_data.index, list | tuple) else edit_data.index
        if 0 <= index < len(history) and history[index].get("role") == "assistant":
            kept = [*history[:index], {"role": "assistant", "content": text_of(edit_data.value)}]
            return kept, kept, []  # [] = nothing to ask: _stream_fn below leaves the conversation as it is
        return super()._edit_message(history, edit_data)

    async def _stream_fn(self, message, history, *args):
        if isinstance(message, list) and not message:
            yield None, history
            return
        async for out in super()._stream_fn(message, history, *args):
            yield out
