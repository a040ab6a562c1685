"""The one place that leans on Gradio's private API, because Gradio 6.31 has no public hook for it.

- ``gr.ChatInterface`` re-asks an edited message, whichever it is; a Space wants an edited *answer* kept as a
  correction (and logged as feedback) instead. That needs overriding ``_edit_message`` and ``_stream_fn``.
- ``gr.ChatInterface(validator=...)`` checks a message before the textbox is cleared and before the generator
  starts (so a refused message stays in the box and the page stays usable), but it hands the validator the
  textbox alone. Whether a message fits depends on the system prompt and the answer length too, so the submit
  event that runs the validator (``_clear_and_save_textbox``) is given the chat's additional inputs as well.

- Gradio's OAuth support keeps a signed-in visitor in the session cookie as ``oauth_info`` (the OAuth token
  response plus ``userinfo``) and builds ``gr.OAuthProfile`` and ``gr.OAuthToken`` from it. The studio, served
  outside a Space, signs a visitor in with a token instead of the Hub's OAuth (``studio/signin.py``): it writes that
  entry, shaped by ``oauth_session``, so every event receives the visitor as it would in a Space.

tests/test_gradio_compat.py fails loudly when Gradio renames or reshapes any of these.
"""

from __future__ import annotations

import gradio as gr
from gradio.context import get_blocks_context

from ..conversations import text_of

PRIVATE_HOOKS = ("_edit_message", "_stream_fn", "_setup_events", "_clear_and_save_textbox")
OAUTH_SESSION_KEY = "oauth_info"  # where gradio.oauth keeps the signed-in visitor in the session


def oauth_session(token: str, scope: str, expires_at: int, user: dict) -> dict:
    """The session entry Gradio's OAuth callback stores for a signed-in visitor (``user``: a ``whoami`` answer)."""
    name = user["name"]
    return {
        "access_token": token,
        "token_type": "bearer",
        "scope": scope,
        "expires_at": expires_at,
        "userinfo": {
            "sub": user.get("id", name),
            "name": user.get("fullname") or name,
            "preferred_username": name,
            "profile": f"https://huggingface.co/{name}",
            "picture": user.get("avatarUrl", ""),
        },
    }


class ChatInterface(gr.ChatInterface):
    """``gr.ChatInterface`` where editing an *answer* keeps the edited answer (a correction) instead of sending the
    edited text as a new question (editing a question still re-asks it), and whose ``validator`` receives
    ``(message, *additional_inputs)``: what the chat function receives, less the history.

    ``options_for(answer text)``: the option buttons (``[{"value", "label"}]``) to show under an answer, or None;
    clicking one sends its value as the next message. API clients get the answer's text as before.
    """

    def __init__(self, *args, options_for=None, **kwargs):
        self._options_for = options_for
        super().__init__(*args, **kwargs)

    def _setup_events(self) -> None:
        super()._setup_events()
        if self.validator is None:
            return
        blocks = get_blocks_context()
        submits = [f for f in blocks.fns.values() if f.fn == self._clear_and_save_textbox] if blocks else []
        if len(submits) != 1 or list(submits[0].inputs) != [self.textbox]:
            raise RuntimeError(
                "this Gradio's ChatInterface no longer submits the textbox through _clear_and_save_textbox: "
                "update lorallama/serving/gradio_compat.py"
            )
        submits[0].inputs = [self.textbox, *self.additional_inputs]
        submits[0].input_parameter_names = []

    def _clear_and_save_textbox(self, message, *additional_inputs):
        return super()._clear_and_save_textbox(message)

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
            response, history_, *rest = out
            if self._options_for is not None and isinstance(response, str) and history_:
                options = self._options_for(response)
                if options:
                    history_ = [*history_[:-1], {**history_[-1], "options": options}]
            yield (response, history_, *rest)
