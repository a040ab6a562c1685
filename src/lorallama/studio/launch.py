"""Launch a checked plan in the visitor's namespace, with the visitor's token: the adapter repo, the training job
(``training.jobs.launch``: the same bundle as ``lorallama jobs run``) and the watcher job that relaunches it until
the run is done (``training.jobs.launch_watcher``).

Refused before anything is created or spent: a plan whose data check did not pass (or was made for other values),
a repo that is not in the visitor's namespace, a repo that holds a finished run (or an unfinished one started
with other values), a run of the same repo still going
(its jobs are found by label), and a run that would outlast the visitor's sign-in (the jobs use its token).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import hub
from ..errors import LorallamaError, StudioError
from ..training import jobs
from ..training.resume import resume_conflicts
from .dataset_check import Check
from .form import Plan
from .signin import Visitor

SIGN_IN_MARGIN = 1.5  # the estimated training time, with this margin, must fit in what is left of the sign-in


@dataclass
class Launched:
    repo: str
    job_id: str
    watcher_id: str

    def describe(self) -> str:
        return (
            f"launched: training job {self.job_id} and watcher job {self.watcher_id} in your namespace, training "
            f"into {self.repo}. The watcher relaunches the training after a failure or preemption until the run "
            "is done; you may close this page"
        )


def refuse_if_running(repo: str, namespace: str) -> None:
    active = jobs.running(repo, namespace=namespace)
    if active:
        which = ", ".join(f"{j.id} ({j.status.stage})" for j in active)
        raise StudioError(
            f"a run of {repo} is already going (jobs {which}): watch it below, or cancel those jobs on your Jobs "
            "page before launching again"
        )


def _refuse_finished_or_different_run(plan: Plan) -> None:
    """A finished run is never trained over; an unfinished one resumes only with the values it was started with."""
    run = hub.remote_run(plan.repo)
    if run.finished:
        raise StudioError(f"{plan.repo} already holds a finished run: choose another adapter name, or publish it below")
    if run.checkpoint_step is not None and run.recipe is not None:
        conflicts = resume_conflicts(run.recipe, plan.recipe.to_dict())
        if conflicts:
            raise StudioError(
                f"{plan.repo} holds an unfinished run (checkpoint at step {run.checkpoint_step}) trained with other "
                f"values ({', '.join(conflicts)}): launch it with its own values to resume it, or choose another "
                "adapter name"
            )


def _refuse_outlasting_sign_in(plan: Plan, check: Check, visitor: Visitor) -> None:
    left = visitor.seconds_left()
    guess = check.estimates.get(plan.flavor)
    if left is None or guess is None or guess.train_seconds is None:
        return
    needed = (guess.train_seconds + (guess.jobs or 1) * 600) * SIGN_IN_MARGIN
    if needed > left:
        raise StudioError(
            f"the run needs about {needed / 3600:.1f} h on {plan.flavor} with margin, but your sign-in (and so the "
            f"token the jobs use) ends in {left / 3600:.1f} h: pick a faster flavor or fewer epochs, or sign out "
            "and in again for a fresh sign-in"
        )


def launch(plan: Plan, check: Check | None, visitor: Visitor, max_attempts: int = 5, backoff: float = 30.0) -> Launched:
    """Create the adapter repo and start the training and watcher jobs in the visitor's namespace."""
    if check is None or check.plan_key != plan.key:
        raise StudioError("check the data first (“Check data and cost”): nothing is launched before that check passes")
    namespace = plan.repo.split("/", 1)[0]
    if namespace != visitor.name:
        raise StudioError(f"{plan.repo} is not in your namespace {visitor.name}: the studio trains into yours only")
    _refuse_outlasting_sign_in(plan, check, visitor)
    with hub.acting_for(visitor.token):
        refuse_if_running(plan.repo, namespace)
        _refuse_finished_or_different_run(plan)
        hub.ensure_repo(plan.repo, private=plan.recipe.hub.private)
        job_id = jobs.launch(plan.recipe, plan.flavor, plan.timeout, namespace=namespace)
        try:  # once the training job exists: the watcher watches that job first
            watcher = jobs.launch_watcher(
                plan.recipe,
                job_id,
                plan.flavor,
                plan.timeout,
                max_attempts=max_attempts,
                backoff=backoff,
                namespace=namespace,
            )
        except LorallamaError as e:
            raise StudioError(
                f"training job {job_id} is running, but its watcher could not start ({e}): the run trains, and a "
                f"failed job is not relaunched; relaunch it with `lorallama jobs run` or from the model card's line"
            ) from None
    return Launched(plan.repo, job_id, watcher)
