"""A built Gradio app served for the length of a ``with`` block."""

from __future__ import annotations

import contextlib

from lorallama.serving import web


@contextlib.contextmanager
def launched(demo):
    _, url, _ = web.launch(demo, prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        yield url
    finally:
        demo.close()
