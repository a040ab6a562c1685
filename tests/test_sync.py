"""`lorallama sync` against the Hub double: Spaces with the package vendored in, mirrored file by file, and cards
pushed beside weights that stay untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lorallama import hub as hub_mod
from lorallama.publishing import sync
from support.project import PNG, git, make_project
from support.runs import REPO_ROOT, changed_in_last_commit, run_command, seed_model_repo


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_NAMESPACE", "tester")  # the double's user; the recipes say lorallama
    return make_project(tmp_path / "project")


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(hub_mod, "RETRY_DELAY", 0.05)


def run_sync(project: Path, *args: str) -> int:
    return run_command("sync", "--root", str(project), *args)


def package_file(path: str) -> bytes:
    return (REPO_ROOT / "src" / path).read_bytes()


def front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def test_first_sync_creates_each_space_with_the_package_vendored_in(hub, project, capsys):
    assert run_sync(project, "--only", "spaces") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "tester/alpha-chat" in out and "create repo" in out
    assert "summary: spaces 2 created" in out

    files = hub.files("tester/alpha-chat", "space")
    vendored = {p: b for p, b in files.items() if p.startswith("lorallama/")}
    assert all(b == package_file(p) for p, b in vendored.items())  # byte for byte
    # What the app imports and what that reaches: the serving layer and the ground modules, nothing that trains.
    assert {"lorallama/__init__.py", "lorallama/serving/config.py", "lorallama/serving/chat.py"} <= set(vendored)
    assert {"lorallama/models.py", "lorallama/recipe.py", "lorallama/hub.py"} <= set(vendored)
    assert not any(p.startswith(("lorallama/training/", "lorallama/publishing/", "lorallama/cli/")) for p in vendored)
    assert files["assets/logo.png"] == PNG and files["app.py"].startswith(b"from lorallama.serving.config import")
    assert b"ADAPTER = 'tester/tiny-alpha'" in files["app.py"]  # the fork's Space points at the fork's adapter
    assert not any("__pycache__" in p for p in files)
    assert set(files) - set(vendored) == {
        ".gitattributes",
        "README.md",
        "app.py",
        "requirements.txt",
        "assets/logo.png",
    }
    # The README's YAML is valid and points at the namespace's own repos.
    meta = front_matter(files["README.md"].decode())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["sdk_version"] == "6.31.0"
    assert meta["models"] == ["tester/tiny-alpha", "HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert meta["datasets"] == ["tester/demo-chat"]
    assert "Chat with tester/tiny-alpha." in files["README.md"].decode()
    info = hub_mod.api().space_info("tester/alpha-chat")
    assert info.sdk == "gradio" and info.runtime.stage == "RUNNING"  # the app file is there
    # A Space without a recipe lands in the namespace under its folder's name, with its own app_file.
    beta = hub.files("tester/beta", "space")
    # It imports nothing of the package, so nothing of it is vendored.
    assert beta["main.py"] == b"print('beta')\n" and not any(p.startswith("lorallama/") for p in beta)


def test_a_second_sync_changes_nothing(hub, project, capsys):
    assert run_sync(project) == 0
    heads = {r: hub.commits(r, "space")[0].id for r in ("tester/alpha-chat", "tester/beta")}
    commits_before = hub.count("POST", r"/commit/")
    capsys.readouterr()
    assert run_sync(project) == 0
    out = capsys.readouterr().out
    assert hub.count("POST", r"/commit/") == commits_before  # no commit, not even an empty one
    assert {r: hub.commits(r, "space")[0].id for r in heads} == heads
    assert out.count("already up to date") == 2 and "summary: spaces 2 unchanged" in out


def test_deleted_and_changed_files_are_mirrored_in_one_commit(hub, project, capsys):
    assert run_sync(project, "--only", "spaces") == 0
    (project / "spaces" / "alpha" / "assets" / "logo.png").unlink()
    app_v2 = "from lorallama.serving.config import ChatConfig\n\nprint('alpha v2')\n"  # the same imports
    (project / "spaces" / "alpha" / "app.py").write_text(app_v2)
    (project / "spaces" / "alpha" / "NOTES.md").write_text("new\n")
    count = len(hub.commits("tester/alpha-chat", "space"))
    capsys.readouterr()
    assert run_sync(project, "--only", "spaces") == 0
    out = capsys.readouterr().out
    assert "add NOTES.md; update app.py; delete assets/logo.png" in out
    assert len(hub.commits("tester/alpha-chat", "space")) == count + 1
    assert changed_in_last_commit(hub, "tester/alpha-chat", "space") == {"assets/logo.png", "app.py", "NOTES.md"}
    files = hub.files("tester/alpha-chat", "space")
    assert "assets/logo.png" not in files and files["app.py"] == app_v2.encode()
    assert ".gitattributes" in files  # the Hub's own file is kept


def test_dry_run_prints_the_plan_and_writes_nothing(hub, project, capsys):
    assert run_sync(project, "--dry-run") == 0
    out = capsys.readouterr().out
    n = len(sync.space_files(project, "alpha", namespace="tester"))
    assert "tester/alpha-chat" in out and f"planned: create repo; add {n} files" in out
    assert "dry run: nothing written" in out
    assert not hub.repo_exists("tester/alpha-chat", "space") and hub.count("POST") == 0


def test_changed_since_syncs_only_what_changed(hub, project, capsys):
    assert run_sync(project) == 0
    first = git(project, "rev-parse", "HEAD")
    (project / "spaces" / "beta" / "main.py").write_text("print('beta v2')\n")
    git(project, "commit", "-qam", "beta v2")
    capsys.readouterr()
    listed = hub.count("GET", r"/api/spaces/tester/alpha-chat/tree")
    assert run_sync(project, "--changed-since", first) == 0
    out = capsys.readouterr().out
    assert "1 changed path(s)" in out and "tester/beta" in out and "tester/alpha-chat" not in out
    assert hub.count("GET", r"/api/spaces/tester/alpha-chat/tree") == listed  # alpha was not even looked at
    assert hub.files("tester/beta", "space")["main.py"] == b"print('beta v2')\n"
    # A push that opens a branch has an all-zero "before": everything is considered.
    assert run_sync(project, "--changed-since", "0" * 40) == 0
    assert "tester/alpha-chat" in capsys.readouterr().out


@pytest.mark.parametrize(
    "paths, spaces, models, datasets",
    [
        ({"spaces/alpha/app.py"}, {"alpha"}, set(), set()),
        ({"src/lorallama/chat.py"}, "all", "all", "all"),
        ({"train_jobs/marx.yaml"}, "all", "all", set()),
        ({"model_cards/marx.md", "datasets_cards/demo-chat.md"}, set(), {"marx"}, {"demo-chat"}),
        ({"README.md", "tests/test_sync.py"}, set(), set(), set()),
    ],
)
def test_changed_paths_pick_the_targets(paths, spaces, models, datasets):
    sel = sync.Selection.from_paths(paths)
    assert (sel.spaces, sel.models, sel.datasets) == (spaces, models, datasets)


def test_a_broken_space_is_reported_and_the_others_still_sync(hub, project, capsys):
    gamma = project / "spaces" / "gamma"
    gamma.mkdir()
    (gamma / "README.md").write_text("---\ntitle: Gamma\n---\nno sdk\n")
    (gamma / "app.py").write_text("")
    assert run_sync(project, "--only", "spaces") == 1
    captured = capsys.readouterr()
    assert "spaces/gamma/README.md: sdk is None; use one of gradio" in captured.err
    assert not hub.repo_exists("tester/gamma", "space") and hub.repo_exists("tester/alpha-chat", "space")


def test_a_lost_commit_answer_is_not_committed_twice(hub, project, quick_retries, capsys):
    failed = hub.fail_next(1, 503, path=r"/api/spaces/tester/beta/commit/")
    dropped = hub.drop_next(1, path=r"/api/spaces/tester/alpha-chat/commit/", after_processing=True)
    assert run_sync(project, "--only", "spaces") == 0, capsys.readouterr().err
    assert failed.hits == 1 and dropped.hits == 1
    for space in ("alpha", "beta"):
        repo = f"tester/{space}-chat" if space == "alpha" else f"tester/{space}"
        titles = [c.title for c in hub.commits(repo, "space")]
        assert len(titles) == 2 and titles[0].startswith(f"Sync spaces/{space} from lorallama "), titles
    assert "summary: spaces 2 created" in capsys.readouterr().out


def test_stage_space_runs_from_a_bare_folder_on_the_vendored_package(project, tmp_path):
    staged = sync.stage_space(project, "alpha", tmp_path / "staged", namespace="tester")
    probe = (
        "import sys, lorallama, lorallama.serving.config\n"
        "print(lorallama.__file__)\n"
        "print(sorted(m for m in sys.modules if m.startswith('lorallama.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=staged, capture_output=True, text=True, check=True)
    path, loaded = out.stdout.splitlines()
    assert Path(path).resolve() == (staged / "lorallama" / "__init__.py").resolve()
    assert "lorallama.serving.config" in loaded and "lorallama.training" not in loaded
    assert not (staged / "lorallama" / "training").exists() and not (staged / "train_jobs").exists()


def test_cards_sync_pushes_readme_and_loss_curve_and_never_weights(hub, project, tiny_run, capsys):  # noqa: F811
    before = seed_model_repo(hub, "tester/tiny-alpha", tiny_run)
    assert run_sync(project, "--only", "cards") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "model card   tester/tiny-alpha" in out and "update README.md" in out and "add loss.png" in out
    assert "dataset card tester/demo-chat" in out and "not published yet" in out
    assert not hub.repo_exists("tester/alpha-chat", "space")  # --only cards
    files = hub.files("tester/tiny-alpha")
    assert changed_in_last_commit(hub, "tester/tiny-alpha") == {"README.md", "loss.png"}
    for path in (
        "adapter_model.safetensors",
        "last-checkpoint/adapter_model.safetensors",
        "last-checkpoint/optimizer.pt",
    ):
        assert files[path] == before[path], path
    assert files["loss.png"][:4] == b"\x89PNG"
    from huggingface_hub import ModelCard

    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "peft" and {"lora", "sft"} <= set(card.data.tags)
    assert "https://tester-alpha-chat.hf.space" in card.text and "--repo tester/tiny-alpha" in card.text
    commits = len(hub.commits("tester/tiny-alpha"))
    assert run_sync(project, "--only", "cards") == 0
    assert len(hub.commits("tester/tiny-alpha")) == commits  # rendered the same: nothing pushed


def test_a_model_repo_without_a_finished_run_is_skipped(hub, project, capsys):
    hub.seed_repo("tester/tiny-alpha", {"last-checkpoint/trainer_state.json": b"{}", "run.json": b'{"slug": "alpha"}'})
    assert run_sync(project, "--only", "cards") == 0
    assert "skipped: no finished run in tester/tiny-alpha yet" in capsys.readouterr().out
    assert len(hub.commits("tester/tiny-alpha")) == 2


def test_dataset_card_sync_rerenders_the_template_and_keeps_the_data(hub, project, capsys):
    assert run_command("data", "publish", "demo-chat") == 0
    data_before = hub.files("tester/demo-chat", "dataset")["data/train.jsonl"]
    template = project / "datasets_cards" / "demo-chat.md"
    template.write_text(template.read_text() + "\nA line added to the template.\n")
    capsys.readouterr()
    assert run_sync(project, "--only", "cards") == 0
    assert "dataset card tester/demo-chat" in capsys.readouterr().out
    files = hub.files("tester/demo-chat", "dataset")
    assert changed_in_last_commit(hub, "tester/demo-chat", "dataset") == {"README.md"}
    assert files["data/train.jsonl"] == data_before
    text = files["README.md"].decode()
    assert "A line added to the template." in text
    meta = front_matter(text)  # the numbers came back from stats.json
    assert meta["size_categories"] == ["n<1K"] and meta["dataset_info"]["splits"][0]["num_examples"] == 335
    assert json.loads(files["stats.json"])["rows"] == 335
