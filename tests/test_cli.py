"""The ``lorallama`` command as a user runs it: help that teaches, errors that name the fix, real outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lorallama import cli
from support.recipes import ROWS, write_recipe


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lorallama.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_every_command_with_examples():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("train", "chat", "data", "demo"):
        assert command in out.stdout
    assert "lorallama train demo --max-steps 20" in out.stdout
    train_help = run_cli("train", "--help").stdout
    for flag in ("--max-steps", "--output", "--set", "--resume", "--restart", "--time-budget", "--backend"):
        assert flag in train_help


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "finetom"], "did you mean 'finetome'"),
        (["train", "demo", "--set", "trainer.learning_rat=1"], "did you mean 'trainer.learning_rate'"),
        (["train", "missing.yaml"], "recipe file missing.yaml does not exist"),
        (["data", "inspect", "demo", "--set", "data.source=nowhere.jsonl"], "nowhere.jsonl does not exist"),
        (["train", "demo", "--no-push", "--set", "data.source=nowhere.jsonl"], "nowhere.jsonl does not exist"),
        (["data", "inspect", "demo", "--set", "model.base=./nope"], "neither a folder here nor a Hub id"),
        (
            ["train", "demo", "--no-push", "--set", "model.base=./nope", "--max-steps", "1"],
            "neither a folder here nor a Hub id",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message_naming_the_fix(args, message, in_tmp):
    out = run_cli(*args, cwd=in_tmp)
    assert out.returncode == 2, out.stderr[-2000:]
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (in_tmp / "runs").exists() or not any((in_tmp / "runs").rglob("adapter_config.json"))


WITHOUT_GRADIO = "import sys; sys.modules['gradio'] = None; from lorallama import cli; sys.exit(cli.main(sys.argv[1:]))"


def test_chat_ui_without_the_serve_extra_names_the_install(in_tmp):
    """Gradio missing (as if `lorallama[serve]` were not installed): one line naming the fix, not an ImportError."""
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_GRADIO, "chat", "demo", "--ui"],
        capture_output=True,
        text=True,
        cwd=in_tmp,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "lorallama: error: chat --ui serves the chat Space with Gradio, and gradio is not installed: "
        "pip install 'lorallama[serve]' (or chat in the terminal with --prompt)"
    ]


def test_demo_serve_without_the_serve_extra_says_so_before_training(in_tmp):
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_GRADIO, "demo", "--serve"],
        capture_output=True,
        text=True,
        cwd=in_tmp,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "lorallama: error: demo --serve serves the chat Space with Gradio, and gradio is not installed: "
        "pip install 'lorallama[serve]' (or run the demo with --no-serve)"
    )
    assert not (in_tmp / "runs").exists()  # nothing trained


def test_data_inspect_prints_report_and_writes_histogram(tmp_path, tiny_chatml, capsys):
    recipe = write_recipe(tmp_path, tiny_chatml)
    data = tmp_path / "chat.jsonl"
    data.write_text(
        data.read_text() + json.dumps({"conversations": [{"from": "human", "value": "only a question"}]}) + "\n"
    )
    png = tmp_path / "hist.png"
    assert cli.main(["data", "inspect", str(recipe), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"rows read   {len(ROWS) + 1}" in out
    assert f"rows kept   {len(ROWS)}" in out
    assert "no_assistant_turn" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"training examples: {len(ROWS)}" in out


def test_train_then_chat_from_the_adapter_folder(tmp_path, tiny_chatml, capsys):
    recipe = write_recipe(tmp_path, tiny_chatml)
    out_dir = tmp_path / "out"
    assert cli.main(["train", str(recipe), "--max-steps", "2", "--output", str(out_dir)]) == 0
    assert "finished: adapter in" in capsys.readouterr().out
    assert cli.main(["chat", str(out_dir / "adapter"), "--prompt", "Hello", "--max-new-tokens", "5"]) == 0
    # The streamed answer is the adapter's greedy answer, and not the base model's.
    from lorallama.serving import chat

    cm = chat.load_chat_model(str(out_dir / "adapter"))
    tuned = chat.answer(cm, "Hello", max_new_tokens=5)
    assert capsys.readouterr().out == tuned + "\n"
    assert (
        cli.main(["chat", str(out_dir / "adapter"), "--prompt", "Hello", "--max-new-tokens", "5", "--base-only"]) == 0
    )
    with cm.base_only():
        base = chat.answer(cm, "Hello", max_new_tokens=5)
    assert capsys.readouterr().out == base + "\n"
