"""Gradio's private API that serving/gradio_compat.py leans on, checked so that an upgrade that renames or reshapes
it fails here, loudly, instead of quietly breaking the chat page."""

from __future__ import annotations

import asyncio
import inspect

import gradio as gr
import pytest

from lorallama.serving import gradio_compat


@pytest.mark.parametrize("name", gradio_compat.PRIVATE_HOOKS)
def test_the_private_hooks_still_exist_with_the_shape_we_override(name):
    original = getattr(gr.ChatInterface, name, None)
    assert original is not None, f"gr.ChatInterface.{name} is gone: update lorallama/serving/gradio_compat.py"
    params = list(inspect.signature(original).parameters)
    expected = {
        "_edit_message": ["self", "history", "edit_data"],
        "_stream_fn": ["self", "message", "history", "args"],
        "_setup_events": ["self"],
        "_clear_and_save_textbox": ["self", "message"],
    }[name]
    assert params == expected, f"gr.ChatInterface.{name}{inspect.signature(original)} changed shape"
    if name == "_stream_fn":
        assert inspect.isasyncgenfunction(original)


def build(validator=None, options_for=None):
    def answer(message, history, system_prompt):
        yield f"{system_prompt}: {message}"

    with gr.Blocks() as demo:
        system = gr.Textbox("sys", render=False)
        ui = gradio_compat.ChatInterface(
            answer, additional_inputs=[system], validator=validator, options_for=options_for
        )
    return demo, ui, system


def test_the_validator_sees_the_additional_inputs_on_the_submit_that_clears_the_textbox():
    seen = []

    def validator(message, system_prompt):
        seen.append((message, system_prompt))
        return [gr.validate(True, ""), gr.validate(True, "")]

    demo, ui, system = build(validator)
    submits = [f for f in demo.fns.values() if f.fn == ui._clear_and_save_textbox]
    assert len(submits) == 1 and submits[0].validator is validator
    assert list(submits[0].inputs) == [ui.textbox, system]
    # Gradio's own step still clears the box (and keeps the message) given the extra inputs.
    cleared, saved = ui._clear_and_save_textbox("hello", "sys")
    assert saved == "hello" and cleared.value == ""
    # Without a validator nothing is rewired.
    demo, ui, _ = build()
    submits = [f for f in demo.fns.values() if f.fn == ui._clear_and_save_textbox]
    assert list(submits[0].inputs) == [ui.textbox]


def run_stream(ui, message, history, *args):
    async def collect():
        return [out async for out in ui._stream_fn(message, history, *args)]

    return asyncio.run(collect())


def test_stream_fn_still_yields_the_response_and_the_history_and_our_options_are_added():
    _, ui, _ = build(options_for=lambda text: [{"value": "Continue"}] if text.endswith("!") else None)
    outs = run_stream(ui, "hi!", [], "sys")
    response, history = outs[-1]
    assert response == "sys: hi!"
    assert history[-2]["role"] == "user" and history[-1]["role"] == "assistant"
    assert history[-1]["options"] == [{"value": "Continue"}]
    _, history = run_stream(ui, "hi", [], "sys")[-1]
    assert "options" not in history[-1]
    # An edited answer kept as a correction asks nothing: the conversation is left as it is.
    kept = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert run_stream(ui, [], kept, "sys") == [(None, kept)]


def test_edit_message_still_returns_history_state_and_the_text_to_send():
    _, ui, _ = build()
    history = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    out = gr.ChatInterface._edit_message(
        ui, history, gr.EditData(None, {"index": 0, "value": "Q1b", "previous_value": "Q1"})
    )
    assert out == ([], [], "Q1b")


def test_the_oauth_session_entry_is_what_gradio_reads_the_visitor_from():
    """The studio's token sign-in writes the entry Gradio's OAuth callback writes; Gradio must still read the
    visitor's profile and token from it, and the login button must still go to /login/huggingface."""
    import time

    from gradio import oauth
    from gradio.components import login_button

    info = gradio_compat.oauth_session("hf_x", "openid profile jobs", int(time.time()) + 60, {"name": "ada"})
    session = {gradio_compat.OAUTH_SESSION_KEY: info}
    read = oauth._get_valid_oauth_info_from_session(session)
    assert read is info
    profile = oauth.OAuthProfile(read["userinfo"])
    token = oauth.OAuthToken(token=read["access_token"], scope=read["scope"], expires_at=read["expires_at"])
    assert (profile.username, token.token, token.scope) == ("ada", "hf_x", "openid profile jobs")
    assert "/login/huggingface?_target_url=" in login_button._js_handle_redirect
    source = inspect.getsource(gr.helpers.special_args)
    assert 'oauth_info["access_token"]' in source and 'oauth_info["userinfo"]' in source
