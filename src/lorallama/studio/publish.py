"""One click at the end of a run: the visitor's own chat Space, and the model card with the run's figures.

The Space is a duplicate of the recipe's chat Space (``hub.space``; the project's finetome Space otherwise) in the
visitor's namespace, configured by Space variables alone to serve the new adapter (``serving/config.py`` reads
them), on hardware the visitor's plan allows. The card is ``publishing.cards.model_card`` of the finished run,
linking to that Space. Both with the visitor's token.

Who may run a copy (https://huggingface.co/docs/hub/spaces-zerogpu and the Hub's pricing page, read 2026-12-01):
creating or duplicating a Gradio Space needs a paid plan (PRO for a personal account, Team or Enterprise for an
organisation), except ZeroGPU Spaces on free personal accounts, two at most.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from .. import hub, models
from ..errors import StudioError
from ..names import hub_url, space_host
from ..publishing import cards
from .signin import Visitor

ZERO_GPU = "zero-a10g"
HARDWARE = {
    ZERO_GPU: "ZeroGPU (free accounts: up to 2 Gradio Spaces, on ZeroGPU only)",
    "cpu-basic": "CPU basic (paid plans: PRO, Team or Enterprise)",
    "cpu-upgrade": "CPU upgrade (paid plans; billed per minute)",
    "t4-small": "Nvidia T4 small (paid plans; billed per minute)",
    "l4x1": "Nvidia L4 (paid plans; billed per minute)",
}
PLAN_NOTE = (
    "Creating or duplicating a Gradio Space needs a paid plan (PRO for your account, Team or Enterprise for an "
    "organisation), except ZeroGPU Spaces on free accounts: two at most. On a free account keep ZeroGPU (it counts as "
    "one of your two). Sources: https://huggingface.co/docs/hub/spaces-zerogpu and https://huggingface.co/pricing."
)


@dataclass
class Published:
    space: str
    card_commit: str

    def describe(self) -> str:
        return (
            f"your chat Space is [{self.space}]({hub_url(self.space, 'space')}) (the app: {space_host(self.space)}); "
            "it starts with your adapter once its build is done. The model card of your adapter links to it"
        )


def paid_plan(token: str) -> bool:
    """Whether the visitor's account is on a paid plan (PRO), from ``whoami``."""
    with hub.acting_for(token):
        info = hub.with_retries(lambda: hub.api().whoami(), "reading your account")
    return bool(info.get("isPro"))


def space_variables(recipe, repo: str) -> dict[str, str]:
    """What the duplicated chat Space is told, by variables only: serve ``repo`` on the recipe's base."""
    chain = models.base_chain(recipe)
    return {
        "LORALLAMA_BASE": chain.base,
        "LORALLAMA_BASE_ADAPTERS": ",".join(chain.adapters) or "none",
        "LORALLAMA_ADAPTER": repo,
        "LORALLAMA_MODEL_CARD": repo,
        "LORALLAMA_DATASET": recipe.data.source,
        "LORALLAMA_SLUG": repo.split("/", 1)[1],
        "LORALLAMA_TITLE": f"{repo.split('/', 1)[1]} · lorallama",
        "LORALLAMA_DESCRIPTION": f"{recipe.description or recipe.slug}: fine-tuned with the lorallama studio.",
        "LORALLAMA_FEEDBACK_DATASET": "none",  # the original's feedback dataset is not the copy's to write to
    }


def publish(repo: str, visitor: Visitor, space_name: str, hardware: str, chat_space: str) -> Published:
    """Create (or update) the visitor's chat Space for the finished run in ``repo`` and push its model card."""
    if hardware not in HARDWARE:
        raise StudioError(f"hardware {hardware!r} is not offered: choose one of {', '.join(HARDWARE)}")
    name = (space_name or "").strip()
    if not name or "/" in name or "--" in name or len(name) > 96:
        raise StudioError(f"Space name {name!r} is not a repo name: use letters, digits, '-', '_' or '.'")
    if repo.split("/", 1)[0] != visitor.name:
        raise StudioError(f"{repo} is not in your namespace {visitor.name}: publish your own runs only")
    if hardware != ZERO_GPU and not paid_plan(visitor.token):
        raise StudioError(f"{HARDWARE[hardware]} is not open to your account. {PLAN_NOTE}")
    space = f"{visitor.name}/{name}"
    with hub.acting_for(visitor.token):
        run = cards.run_from_hub(repo)
        if run is None or not run.meta.get("finished"):
            raise StudioError(f"{repo} holds no finished run yet: wait for the watch panel to say “finished”")
        recipe = cards.recipe_from_run(run)
        recipe.hub.model_repo = repo
        variables = space_variables(recipe, repo)
        source = recipe.hub.space or chat_space
        api = hub.api()
        existing = hub.with_retries(lambda: api.repo_exists(space, repo_type="space"), f"looking for {space}")
        if existing:
            for key, value in variables.items():
                hub.with_retries(lambda k=key, v=value: api.add_space_variable(space, k, v), f"configuring {space}")
        else:
            hub.with_retries(
                lambda: api.duplicate_space(
                    source,
                    space,
                    hardware=hardware,
                    variables=[{"key": k, "value": v} for k, v in variables.items()],
                    exist_ok=True,
                ),
                f"duplicating {source} into {space}",
                repo_id=source,
                repo_type="space",
            )
        card_recipe = copy.deepcopy(recipe)
        card_recipe.hub.space = space
        text = cards.model_card(
            card_recipe,
            run.meta,
            history=run.history,
            samples=run.samples,
            template=cards.DEFAULT_MODEL_TEMPLATE,
        )
        commit = hub.upload_files(repo, {"README.md": text.encode("utf-8")}, f"Model card: chat with it in {space}")
    return Published(space, commit)
