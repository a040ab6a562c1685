"""The studio page: Gradio Blocks wiring the sign-in, the form, the check, the launch, the watch panel and the
publish step to the modules that do the work. Each event reads the visitor from Gradio's OAuth session
(``gr.OAuthProfile``, ``gr.OAuthToken``); a refusal shows on the page as one message, with what to do instead."""

import collections
import logging
import threading

import gradio as gr

from ..errors import LorallamaError
from ..serving import web
from . import dataset_check, form, publish, signin, watch
from .config import StudioConfig
from .launch import launch

log = logging.getLogger("lorallama")

INTRO = """# Fine-tune your own

Sign in, pick a recipe and (if you like) your own Hub dataset, check it, and launch: the training runs as a
[Hugging Face Job](https://huggingface.co/docs/hub/jobs) **in your namespace, billed to your account** (Jobs need a
positive credit balance: https://huggingface.co/docs/hub/jobs-pricing), pushes a checkpoint to your adapter repo as it
goes and is relaunched by a small watcher job (CPU basic, $0.01/h) after any failure, whether this page stays open or
not. At the end, one click gives you your own chat Space.

The sign-in asks for: {scopes}. Nothing is spent before your data has passed the check below."""
KEPT_CHECKS = 256  # passed checks remembered (per visitor and plan) until their plan is launched


def _scrub(text: str, token: str | None) -> str:
    """A message as shown on the page: the visitor's token can never be part of it."""
    return text.replace(token, "[token]") if token else text


def _refusal(e: Exception, token: str | None) -> str:
    if isinstance(e, LorallamaError):
        return _scrub(f"⚠️ {e}", token)
    log.exception("studio: unexpected failure")
    return _scrub(f"⚠️ something went wrong ({type(e).__name__}); nothing more was started. Try again.", token)


class Checks:
    """Passed data checks by (visitor, plan key): a launch needs one for exactly its values."""

    def __init__(self) -> None:
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def put(self, visitor: str, check: dataset_check.Check) -> None:
        with self._lock:
            self._items[(visitor, check.plan_key)] = check
            while len(self._items) > KEPT_CHECKS:
                self._items.popitem(last=False)

    def get(self, visitor: str, key: str) -> dataset_check.Check | None:
        with self._lock:
            return self._items.get((visitor, key))


def build_studio(config: StudioConfig | None = None) -> gr.Blocks:
    config = config or StudioConfig.from_env()
    checks = Checks()
    first = config.recipes[0] if config.recipes else None
    start = form.defaults(first) if first else {}
    scopes = ", ".join(f"`{s}` ({why})" for s, why in signin.SCOPES.items())

    with gr.Blocks(title="lorallama · studio") as demo:
        gr.Markdown(INTRO.format(scopes=scopes))
        gr.LoginButton()
        who = gr.Markdown("Sign in to start.", elem_id="studio-who")
        with gr.Group():
            gr.Markdown("## 1 · What to train")
            recipe = gr.Dropdown(config.recipes, value=first, label="recipe", elem_id="studio-recipe")
            data = gr.Radio(
                [form.RECIPE_DATA, form.OWN_DATA], value=form.RECIPE_DATA, label="data", elem_id="studio-data"
            )
            with gr.Row():
                dataset = gr.Textbox(label="Hub dataset id (owner/name)", elem_id="studio-dataset")
                fmt = gr.Radio(
                    list(form.FORMATS), value=start.get("format", "chat"), label="format", elem_id="studio-format"
                )
                messages_field = gr.Textbox(
                    value=start.get("messages_field", "auto"),
                    label="conversation column (chat)",
                    elem_id="studio-messages-field",
                )
                text_field = gr.Textbox(
                    value=start.get("text_field", "text"), label="text column (text)", elem_id="studio-text-field"
                )
                split = gr.Textbox(value=start.get("split", "train"), label="split", elem_id="studio-split")
            with gr.Row():
                epochs = gr.Number(value=start.get("epochs"), label="epochs", elem_id="studio-epochs")
                lr = gr.Number(value=start.get("learning_rate"), label="learning rate", elem_id="studio-lr")
                rank = gr.Number(value=start.get("lora_r"), label="LoRA rank", precision=0, elem_id="studio-rank")
                flavor = gr.Dropdown(
                    form.flavors_for_slug(first) if first else [],
                    value=start.get("flavor"),
                    label="hardware (Jobs flavor)",
                    elem_id="studio-flavor",
                )
                name = gr.Textbox(value=start.get("adapter_name", ""), label="adapter repo name", elem_id="studio-name")
            check_button = gr.Button("Check data and cost", variant="secondary", elem_id="studio-check")
            message = gr.Markdown(elem_id="studio-message")
            report = gr.Code(
                label="data report (as `lorallama data inspect`)", language=None, max_lines=24, elem_id="studio-report"
            )
            table = gr.Code(
                label="tokens, steps, ETA and cost per flavor", language=None, max_lines=16, elem_id="studio-table"
            )
            launch_button = gr.Button("Launch", variant="primary", elem_id="studio-launch")
        with gr.Group():
            gr.Markdown("## 2 · Watch it")
            watch_repo = gr.Textbox(label="adapter repo", elem_id="studio-watch-repo")
            refresh = gr.Button("Refresh", size="sm", elem_id="studio-refresh")
            stage = gr.Markdown(elem_id="studio-stage")
            loss = gr.LinePlot(x="step", y="loss", label="training loss", elem_id="studio-loss")
            logs = gr.Code(label="training job log (last lines)", language=None, max_lines=16, elem_id="studio-logs")
        with gr.Group():
            gr.Markdown("## 3 · Your chat Space\n\n" + publish.PLAN_NOTE)
            with gr.Row():
                space_name = gr.Textbox(label="Space name", elem_id="studio-space-name")
                hardware = gr.Radio(
                    list(publish.HARDWARE), value=publish.ZERO_GPU, label="hardware", elem_id="studio-hardware"
                )
            publish_button = gr.Button("Create my chat Space", variant="primary", elem_id="studio-publish")
            published = gr.Markdown(elem_id="studio-published")

        form_inputs = [recipe, data, dataset, fmt, messages_field, text_field, split, epochs, lr, rank, flavor, name]

        def on_load(profile: gr.OAuthProfile | None, oauth_token: gr.OAuthToken | None):
            if profile is None or oauth_token is None:
                return "Sign in to start.", gr.update()
            try:
                visitor = signin.visitor_of(profile, oauth_token)
            except LorallamaError as e:
                return _refusal(e, oauth_token.token), gr.update()
            try:
                repo = watch.latest_repo(visitor.token, visitor.name)
            except LorallamaError:
                repo = None
            return f"Signed in as **{visitor.name}**.", gr.update(value=repo) if repo else gr.update()

        def on_recipe(slug: str):
            values = form.defaults(slug)
            return (
                gr.update(value=values["epochs"]),
                gr.update(value=values["learning_rate"]),
                gr.update(value=values["lora_r"]),
                gr.update(choices=form.flavors_for_slug(slug), value=values["flavor"]),
                gr.update(value=values["adapter_name"]),
            )

        def with_plan(fields, profile, oauth_token, act, unchanged):
            """The form's values checked into a plan for the signed-in visitor, then ``act(visitor, plan)``; any
            failure is the refusal message, with the other outputs left as they were. The token never shows."""
            token = getattr(oauth_token, "token", None)
            try:
                visitor = signin.visitor_of(profile, oauth_token)
                plan = form.plan(form.FormInput(*fields), visitor.name, config.recipes)
                return tuple(_scrub(out, token) if isinstance(out, str) else out for out in act(visitor, plan))
            except Exception as e:
                return _refusal(e, token), *unchanged

        def checked(visitor, plan):
            result = dataset_check.check(plan, visitor.token, config.sample_rows)
            checks.put(visitor.name, result)
            notes = "".join(f"\n- {n}" for n in result.notes)
            text = f"✅ {result.summary()}. Launch trains into **{plan.repo}** on {plan.flavor}.{notes}"
            return text, result.report + "\n\n" + result.histogram, result.table

        def launched(visitor, plan):
            done = launch(plan, checks.get(visitor.name, plan.key), visitor, config.max_attempts, config.backoff)
            return f"🚀 {done.describe()}", done.repo, done.repo.split("/", 1)[1]

        # Gradio hands the visitor's profile and token to parameters annotated with its OAuth types: the form's
        # values come first, by name (``*args`` would hide the annotations).
        def on_check(
            recipe, data, dataset, fmt, messages_field, text_field, split, epochs, lr, rank, flavor, name,
            profile: gr.OAuthProfile | None, oauth_token: gr.OAuthToken | None,
        ):  # fmt: skip
            fields = (recipe, data, dataset, fmt, messages_field, text_field, split, epochs, lr, rank, flavor, name)
            return with_plan(fields, profile, oauth_token, checked, ("", ""))

        def on_launch(
            recipe, data, dataset, fmt, messages_field, text_field, split, epochs, lr, rank, flavor, name,
            profile: gr.OAuthProfile | None, oauth_token: gr.OAuthToken | None,
        ):  # fmt: skip
            fields = (recipe, data, dataset, fmt, messages_field, text_field, split, epochs, lr, rank, flavor, name)
            return with_plan(fields, profile, oauth_token, launched, (gr.update(), gr.update()))

        def on_refresh(repo: str, profile: gr.OAuthProfile | None, oauth_token: gr.OAuthToken | None):
            repo = (repo or "").strip()
            if not repo or profile is None or oauth_token is None:
                return gr.update(), gr.update(), gr.update()
            token = oauth_token.token
            try:
                now = watch.progress(repo, token)
            except Exception as e:
                return _refusal(e, token), gr.update(), gr.update()
            import pandas as pd

            frame = pd.DataFrame(now.losses, columns=["step", "loss"])
            return _scrub(now.describe(), token), frame, _scrub("\n".join(now.log_tail), token)

        def on_publish(
            repo, space, hardware_choice, profile: gr.OAuthProfile | None, oauth_token: gr.OAuthToken | None
        ):
            token = getattr(oauth_token, "token", None)
            try:
                visitor = signin.visitor_of(profile, oauth_token)
                done = publish.publish((repo or "").strip(), visitor, space, hardware_choice, config.chat_space)
                return _scrub(f"✅ {done.describe()}", token)
            except Exception as e:
                return _refusal(e, token)

        demo.load(on_load, None, [who, watch_repo])
        recipe.change(on_recipe, recipe, [epochs, lr, rank, flavor, name])
        check_button.click(on_check, form_inputs, [message, report, table], api_name="check")
        launch_button.click(on_launch, form_inputs, [message, watch_repo, space_name], api_name="launch")
        refresh.click(on_refresh, watch_repo, [stage, loss, logs], api_name="progress")
        gr.Timer(config.refresh).tick(on_refresh, watch_repo, [stage, loss, logs], show_progress="hidden")
        publish_button.click(on_publish, [watch_repo, space_name, hardware], published, api_name="publish")
    return demo


def launch_studio(demo: gr.Blocks, **kwargs):
    """Serve the studio: outside a Space, with the token sign-in standing in for the Hub's OAuth."""
    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs["routes"] = [*signin.local_routes(), *app_kwargs.get("routes", [])]
    return web.launch(demo, app_kwargs=app_kwargs, **kwargs)
