"""The studio against the Hub double: the form's refusals, the data check (the `data inspect` report and the
dry-run table), the launch in the visitor's namespace with the visitor's token, the watch panel from the repo
alone, the chat Space and card at the end, and the studio Space as `lorallama sync` builds it.

The studio server runs with its own Space token in HF_TOKEN (user `lorallama`); the visitor signs in with a canary
token (user `visitor`). The double's request log names the user behind every request."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import yaml

from lorallama import hub as hub_mod
from lorallama.errors import StudioError
from lorallama.publishing import sync
from lorallama.training import data as data_mod
from lorallama.training import estimate, jobs
from support.runs import seed_model_repo
from support.studio import CANARY, CHAT_SPACE, DATASET, SPACE_OWNER, SPACE_TOKEN, VISITOR, chat_rows, make_world

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return jobs.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def world(hub, tmp_path, tiny_chatml, monkeypatch, wheel):
    w = make_world(hub, tmp_path, tiny_chatml)
    monkeypatch.setenv("LORALLAMA_RECIPES", str(w.recipes))
    monkeypatch.setenv("HF_TOKEN", SPACE_TOKEN)  # the studio Space's own token: it must do none of the work below
    monkeypatch.setattr(hub_mod, "RETRY_DELAY", 0.05)
    monkeypatch.setattr(jobs, "build_wheel", lambda dest: Path(shutil.copy(wheel, Path(dest) / wheel.name)))
    return w


def visitor(token: str = CANARY, scopes: str = "openid profile read-repos contribute-repos jobs"):
    from lorallama.studio.signin import Visitor

    return Visitor(VISITOR, token, frozenset(scopes.split()))


def own_data(**values):
    from lorallama.studio.form import OWN_DATA, FormInput

    fields = {"recipe": "tiny", "data": OWN_DATA, "dataset": DATASET, "messages_field": "conversations"}
    fields["adapter_name"] = "my-captain"
    return FormInput(**{**fields, **values})


def jobs_submitted(hub) -> int:
    return hub.count("POST", r"^/api/jobs/[^/]+$")


# ---------------------------------------------------------------------------------------------------------------
# Form and sign-in


def test_the_form_starts_from_the_recipe_and_refuses_every_bad_value_with_its_fix(world):
    from lorallama.studio import form

    start = form.defaults("tiny")
    assert (start["epochs"], start["learning_rate"], start["lora_r"], start["flavor"]) == (1.0, 5e-3, 4, "cpu-basic")
    plan = form.plan(form.FormInput("tiny", adapter_name="my-captain"), VISITOR, ["tiny"])
    assert plan.repo == "visitor/my-captain" and plan.overrides == [] and plan.recipe.hub.model_repo == plan.repo
    assert plan.recipe.trainer.learning_rate == 5e-3  # unchanged form = the recipe as the project trains it

    bad = own_data(epochs=50, learning_rate="fast", lora_r=2.5, flavor="gpu-please", adapter_name="a--b", dataset="x")
    with pytest.raises(StudioError) as e:
        form.plan(bad, VISITOR, ["tiny"])
    text = str(e.value)
    assert "trainer.num_train_epochs (epochs) = 50 is out of range: use a number from 0.1 to 10" in text
    assert "trainer.learning_rate (learning rate) = 'fast' is out of range: use a number from 1e-06 to 0.01" in text
    assert (
        "lora.r (LoRA rank) = 2.5 is out of range: use a whole number from 1 to 256 (the recipe's default is 4)" in text
    )
    assert "job.flavor = 'gpu-please' is not offered: use one of cpu-basic, t4-small" in text
    assert "adapter name = 'a--b' is not a repo name" in text and "data.source = 'x' is not a Hub dataset id" in text
    with pytest.raises(StudioError, match="recipe 'marx' is not offered here: pick one of tiny"):
        form.plan(form.FormInput("marx", adapter_name="m"), VISITOR, ["tiny"])

    changed = form.plan(own_data(epochs=2, learning_rate=1e-3, lora_r=8), VISITOR, ["tiny"])
    assert changed.recipe.trainer.num_train_epochs == 2 and changed.recipe.lora.r == 8
    assert changed.recipe.data.source == DATASET and changed.recipe.data.messages_field == "conversations"
    assert (
        changed.key != plan.key
        and changed.key == form.plan(own_data(epochs=2, learning_rate=1e-3, lora_r=8), VISITOR, ["tiny"]).key
    )


def test_sign_in_says_what_to_grant(world):
    from types import SimpleNamespace

    from lorallama.studio import signin

    with pytest.raises(StudioError, match="you are not signed in: use the “Sign in with Hugging Face” button"):
        signin.visitor_of(None, None)
    profile = SimpleNamespace(username=VISITOR)
    token = SimpleNamespace(token=CANARY, scope="openid profile read-repos", expires_at=0)
    with pytest.raises(StudioError) as e:
        signin.visitor_of(profile, token)
    assert "lacks 2 permission(s)" in str(e.value) and "contribute-repos (create your adapter repo" in str(e.value)
    assert "jobs (run the training job and the watcher job" in str(e.value) and CANARY not in str(e.value)
    ok = signin.visitor_of(
        profile, SimpleNamespace(token=CANARY, scope="openid read-repos contribute-repos jobs", expires_at=0)
    )
    assert ok.name == VISITOR and CANARY not in repr(ok)
    assert signin.scopes_of_token({"auth": {"accessToken": {"role": "write"}}}) == list(signin.SCOPES)
    assert signin.scopes_of_token({"auth": {"accessToken": {"role": "read"}}}) == ["read-repos"]


# ---------------------------------------------------------------------------------------------------------------
# The data check


def test_the_check_is_data_inspects_report_on_a_sample_read_with_the_visitors_token(world, hub, tiny_chatml, tmp_path):
    from lorallama import models
    from lorallama.recipe import load_recipe
    from lorallama.studio import dataset_check, form

    plan = form.plan(own_data(), VISITOR, ["tiny"])
    before = len(hub.requests)
    check = dataset_check.check(plan, CANARY, sample_rows=10)
    studio_requests = hub.requests[before:]
    assert studio_requests and {r.user for r in studio_requests} == {VISITOR}  # the visitor's token, every time

    # The same report as `lorallama data inspect` on those 10 rows (the first 10 of the dataset's file).
    sample = tmp_path / "first10.jsonl"
    sample.write_text("".join(json.dumps(r) + "\n" for r in chat_rows()[:10]))
    recipe = load_recipe("tiny", [f"data.source={sample}", "data.messages_field=conversations"])
    tokenizer = models.load_tokenizer(str(tiny_chatml))
    from lorallama.training.chat_templates import training_chat_template

    expected = data_mod.prepare(recipe, tokenizer, training_chat_template(tokenizer))
    assert check.report.split("\n", 1)[1] == expected.report.format().split("\n", 1)[1]  # all but the source line
    assert "dropped      2  duplicate" in check.report  # rows 9 and 10 repeat rows 1 and 2
    assert (check.sample_rows, check.kept, check.rows, check.exact) == (10, 8, 24, False)
    # The whole dataset estimated from the sample: 24 rows, 8 of 10 usable; the dry run's table for it.
    assert check.examples == round(8 * 24 / 10)
    assert check.table == estimate.format_table(
        plan.recipe,
        check.examples,
        check.tokens,
        [plan.flavor, *(f for f in estimate.DEFAULT_FLAVORS if f != plan.flavor)],
        plan.timeout,
        estimate.load_table(),
    )
    assert re.search(r"^t4-small +1 .*\$\d", check.table, re.M)  # ETA and cost per flavor
    whole = dataset_check.check(plan, CANARY, sample_rows=100)
    assert whole.exact and whole.rows == whole.sample_rows == 24 and "the whole dataset" in whole.summary()


def test_bad_input_is_refused_before_any_job_starts(world, hub):
    from lorallama.studio import dataset_check, form
    from lorallama.studio.launch import launch

    hub.seed_repo("someone/secret-chats", {"train.jsonl": "{}\n"}, repo_type="dataset", private=True)
    hub.seed_repo(
        f"{VISITOR}/junk", {"train.jsonl": '{"text": "no chat here"}\n{"conversations": 3}\n'}, repo_type="dataset"
    )
    cases = {
        "visitor/no-such-data": "dataset visitor/no-such-data was not found, or it is private and your sign-in cannot read it",
        "someone/secret-chats": "dataset someone/secret-chats was not found, or it is private and your sign-in cannot read it",
        f"{VISITOR}/junk": "your data cannot train this recipe: no usable training rows left",
    }
    for dataset, reason in cases.items():
        plan = form.plan(own_data(dataset=dataset), VISITOR, ["tiny"])
        with pytest.raises(StudioError, match=re.escape(reason)):
            dataset_check.check(plan, CANARY, sample_rows=10)
        with pytest.raises(StudioError, match="check the data first"):
            launch(plan, None, visitor())
    with pytest.raises(StudioError, match="out of range"):
        form.plan(own_data(learning_rate=1.0), VISITOR, ["tiny"])
    # A check passed for other values does not open the launch of these.
    good = dataset_check.check(form.plan(own_data(), VISITOR, ["tiny"]), CANARY, sample_rows=10)
    with pytest.raises(StudioError, match="check the data first"):
        launch(form.plan(own_data(epochs=3), VISITOR, ["tiny"]), good, visitor())
    assert jobs_submitted(hub) == 0 and not hub.repo_exists(f"{VISITOR}/my-captain")


# ---------------------------------------------------------------------------------------------------------------
# Launch


def test_the_launch_runs_in_the_visitors_namespace_with_their_token_as_a_secret(world, hub, caplog):
    from lorallama.studio import dataset_check, form
    from lorallama.studio.launch import launch

    caplog.set_level(logging.DEBUG)
    hub.jobs.scheduling_delay_s = 4  # the jobs stay scheduled: this test looks at what was asked, not the run
    plan = form.plan(own_data(), VISITOR, ["tiny"])
    check = dataset_check.check(plan, CANARY, sample_rows=10)
    before = len(hub.requests)
    done = launch(plan, check, visitor(), max_attempts=3, backoff=1)
    made = hub.requests[before:]
    assert {r.user for r in made} == {VISITOR} and hub.requests_by(SPACE_OWNER) == []
    assert hub.repo_exists("visitor/my-captain")  # created in the visitor's namespace, by the visitor
    assert hub.store.get("model", "visitor/my-captain").commits  # the job bundle is there
    training, watcher = hub.job(done.job_id), hub.job(done.watcher_id)
    for job in (training, watcher):
        assert job.namespace == VISITOR and job.owner.name == VISITOR
        assert job.spec["secrets"] == {"HF_TOKEN": CANARY}  # a secret, never a plain env value or an argument
        assert CANARY not in json.dumps(
            [job.spec.get("command"), job.spec.get("arguments"), job.spec.get("environment")]
        )
    wanted = {"lorallama": "tiny", "lorallama-repo": "visitor--my-captain", "lorallama-role": "train"}
    assert wanted.items() <= training.spec["labels"].items()
    assert watcher.spec["labels"]["lorallama-role"] == "watch" and watcher.spec["flavor"] == "cpu-basic"
    argv = watcher.spec["command"] + watcher.spec.get("arguments", [])
    assert argv[argv.index("--job") + 1] == done.job_id and "--max-attempts" in argv
    assert any(a.endswith("/visitor/my-captain/resolve/main/watch.py") for a in argv)

    # A second launch of the same repo while the first is going is refused, and starts nothing.
    submitted = jobs_submitted(hub)
    with pytest.raises(StudioError, match=r"a run of visitor/my-captain is already going \(jobs "):
        launch(plan, check, visitor(), max_attempts=3, backoff=1)
    assert jobs_submitted(hub) == submitted
    # The token is nowhere we write: logs, the repo's files.
    assert CANARY not in caplog.text
    for path, blob in hub.files("visitor/my-captain").items():
        assert CANARY.encode() not in blob, path


def test_a_token_without_the_jobs_scope_or_write_access_is_stopped(world, hub):
    from lorallama.studio import dataset_check, form
    from lorallama.studio.launch import launch

    plan = form.plan(own_data(), VISITOR, ["tiny"])
    check = dataset_check.check(plan, world.read_token, sample_rows=10)  # reading is all a read token may do
    with pytest.raises(StudioError, match="cannot write|rights"):
        try:
            launch(plan, check, visitor(world.read_token))
        except hub_mod.HubError as e:
            raise StudioError(str(e)) from e
    assert jobs_submitted(hub) == 0


def test_the_watcher_job_runs_from_the_repo_alone_with_the_unpacked_wheel(world, hub, tiny_run):
    """The watcher's job, as the platform runs it: watch.py fetched from the repo, the lorallama wheel of the repo's
    bundle unpacked and imported (not the checkout), the run found finished, so it ends without a relaunch."""
    from lorallama.recipe import load_recipe

    repo = f"{VISITOR}/my-captain"
    recipe = load_recipe("tiny", [f"hub.model_repo={repo}"])
    seed_model_repo(hub, repo, tiny_run)
    with hub_mod.acting_for(CANARY):
        hub_mod.upload_files(repo, jobs.bundle(recipe, Path(hub.root)), "Job bundle")
        done = hub_mod.api().run_job(
            image="python:3.12", command=["python", "-c", "print('trained')"], namespace=VISITOR
        )
        hub.wait_job(done.id)
        watcher = jobs.launch_watcher(recipe, done.id, max_attempts=2, backoff=0.1, namespace=VISITOR)
    job = hub.wait_job(watcher, timeout=120)
    log = "\n".join(job.log_lines)
    assert job.stage == "COMPLETED", log[-3000:]
    assert "/lorallama-wheel/lorallama" in log and f"run finished after 1 job(s): {done.id} COMPLETED" in log
    assert jobs_submitted(hub) == 2  # the finished job and the watcher: nothing relaunched
    assert {r.user for r in hub.requests if r.path.startswith("/api/jobs/")} == {VISITOR}


# ---------------------------------------------------------------------------------------------------------------
# Watch and publish


def test_the_watch_panel_reads_the_run_from_the_repo_alone(world, hub, tiny_run):
    from lorallama.studio import watch

    repo = f"{VISITOR}/my-captain"
    hub.seed_repo(repo, {"README.md": "x"})
    assert watch.progress(repo, CANARY).stage == "no run yet"
    state = {"global_step": 6, "log_history": [{"step": s, "loss": 3.0 - s / 10} for s in range(1, 7)]}
    hub.seed_repo(repo, {"last-checkpoint/trainer_state.json": json.dumps(state)})
    now = watch.progress(repo, CANARY)
    assert now.checkpoint_step == 6 and now.losses[0] == (1, 2.9) and len(now.losses) == 6 and not now.finished
    assert now.stage.startswith("stopped before the end")
    seed_model_repo(hub, repo, tiny_run)
    done = watch.progress(repo, CANARY)
    assert done.finished and done.stage.startswith("finished") and done.losses
    assert hub.requests_by(SPACE_OWNER) == []


def test_publish_creates_the_visitors_chat_space_by_variables_and_pushes_the_card(world, hub, tiny_run):
    from lorallama.studio import publish

    repo = f"{VISITOR}/my-captain"
    with pytest.raises(StudioError, match="holds no finished run yet"):
        hub.seed_repo(repo, {"README.md": "x"})
        publish.publish(repo, visitor(), "my-chat", publish.ZERO_GPU, CHAT_SPACE)
    seed_model_repo(hub, repo, tiny_run)
    with pytest.raises(
        StudioError, match="not open to your account. Creating or duplicating a Gradio Space needs a paid plan"
    ):
        publish.publish(repo, visitor(), "my-chat", "t4-small", CHAT_SPACE)
    before = len(hub.requests)
    done = publish.publish(repo, visitor(), "my-chat", publish.ZERO_GPU, CHAT_SPACE)
    assert {r.user for r in hub.requests[before:]} == {VISITOR}
    assert done.space == f"{VISITOR}/my-chat" and hub.repo_exists(done.space, "space")
    space = hub.store.get("space", done.space)
    variables = {k: v["value"] for k, v in space.variables.items()}
    assert variables["LORALLAMA_ADAPTER"] == repo and variables["LORALLAMA_FEEDBACK_DATASET"] == "none"
    assert variables["LORALLAMA_BASE"] == json.loads(hub.files(repo)["run.json"])["recipe"]["model"]["base"]
    assert set(hub.files(done.space, "space")) == set(hub.files(CHAT_SPACE, "space"))  # the chat Space, unchanged
    card = hub.files(repo)["README.md"].decode()
    assert "visitor/my-chat" in card and "studio" in card and "old card" not in card
    assert CANARY not in json.dumps(variables) and CANARY not in card
    # Publishing again (a second click) repoints the same Space instead of failing.
    assert publish.publish(repo, visitor(), "my-chat", publish.ZERO_GPU, CHAT_SPACE).space == done.space


# ---------------------------------------------------------------------------------------------------------------
# The studio Space as sync builds it


def test_sync_builds_the_studio_space_with_what_launching_jobs_needs():
    files = sync.space_files(REPO, "studio")
    meta = yaml.safe_load(sync._front_matter(files["README.md"].decode())[0])
    assert meta["hf_oauth"] is True and set(meta["hf_oauth_scopes"]) == {"read-repos", "contribute-repos", "jobs"}
    assert meta["suggested_hardware"] == "cpu-basic" and meta["sdk_version"] == "6.31.0"
    assert "lorallama/studio/app.py" in files and "lorallama/training/jobs.py" in files
    assert not any(p.startswith("lorallama/cli/") for p in files)  # the command line stays out
    for path in (
        "train_jobs/train.py",
        "train_jobs/watch.py",
        "train_jobs/finetome.yaml",
        "bench/throughput_table.json",
    ):
        assert files[path] == (REPO / path).read_bytes(), path
    assert "train_jobs/data/general_chat.jsonl" in files and "train_jobs/data/knowledge_probe.jsonl" in files
    built = next(p for p in files if p.startswith("dist/lorallama-") and p.endswith(".whl"))
    again = sync.space_files(REPO, "studio")[built]
    assert files[built] == again  # the same source builds the same bytes: a second sync uploads nothing new
    chat = sync.space_files(REPO, "finetome")
    assert not any(p.startswith(("train_jobs/", "dist/", "lorallama/studio/")) for p in chat)


def test_the_studio_runs_from_its_synced_folder_without_a_checkout(tmp_path):
    """As the Space runs it: the vendored package finds the job files and recipes beside it, not in a checkout."""
    import subprocess
    import sys

    sync.stage_space(REPO, "studio", tmp_path / "studio")
    probe = (
        "from lorallama import paths; from lorallama.training import estimate, jobs; "
        "from lorallama.studio.config import StudioConfig; import tempfile, pathlib; "
        "print(paths.checkout_root(), paths.job_files_root(), StudioConfig.from_env({}).recipes, "
        "bool(estimate.load_table()['rows']), jobs.build_wheel(pathlib.Path(tempfile.mkdtemp())).name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path / "studio", capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"None {tmp_path / 'studio'} ['finetome', 'marx'] True lorallama-"), out.stdout


def test_the_studio_space_requirements_are_the_pinned_set():
    from test_space import pinned

    lines = [ln.strip() for ln in (REPO / "spaces/studio/requirements.txt").read_text().splitlines()]
    requirements = [ln for ln in lines if ln and not ln.startswith("#")]
    pins = pinned()
    for requirement in requirements:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        if name in ("authlib", "itsdangerous"):  # gradio's oauth extra, unpinned there too
            continue
        assert pins.get(name) == requirement, requirement
    names = {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower() for r in requirements}
    assert "torch" not in names and "gradio" not in names  # tokenising needs no torch; the sdk decides gradio
