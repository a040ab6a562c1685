"""Serving: inference, the Gradio apps of the Spaces, their web routes and the feedback log.

A Space vendors this subpackage and the ground modules it imports, nothing else: serving never imports training,
publishing or the command line (tests/test_architecture.py checks it).
"""
