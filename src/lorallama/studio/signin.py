"""Who the visitor is: the OAuth scopes the studio needs and why, the check of a signed-in token, and the local
stand-in for the Hub's OAuth.

In a Space, ``hf_oauth: true`` and ``hf_oauth_scopes`` in the README make the Hub create the OAuth app; Gradio's
``gr.LoginButton`` signs the visitor in and hands each event ``gr.OAuthProfile`` and ``gr.OAuthToken`` (whose
``scope`` lists what was granted). Scopes (https://huggingface.co/docs/hub/spaces-oauth and docs/hub/oauth,
"Currently supported scopes"):

    read-repos        read the visitor's dataset when it is private
    contribute-repos  create repos (the adapter repo, the chat Space) and write to the repos this app created only
    jobs              run Jobs: the training job and the watcher job, in the visitor's namespace, billed to them

Outside a Space Gradio stands OAuth in with the machine's own login and a placeholder token, which cannot do a
visitor's work. ``local_routes`` stands it in the way a visitor would sign in: the sign-in page asks for a Hugging
Face token, checks it with ``whoami`` and keeps it in the signed session cookie Gradio's OAuth support uses, as the
Hub's OAuth would (the entry's shape is Gradio's: ``serving/gradio_compat.oauth_session``); a write token stands in for every scope above, a read token for ``read-repos`` only. The routes
reach Gradio's FastAPI app through ``launch(app_kwargs={"routes": …})`` and so answer before Gradio's own.
"""

import html
import os
import time
from dataclasses import dataclass, field

from ..errors import StudioError
from ..serving import gradio_compat

SCOPES = {
    "read-repos": "read your dataset when it is private",
    "contribute-repos": "create your adapter repo and your chat Space (and write to those only)",
    "jobs": "run the training job and the watcher job in your namespace, billed to your account",
}
LOCAL_SESSION_S = 8 * 3600  # what Gradio's own local stand-in gives a session


@dataclass(frozen=True)
class Visitor:
    """A signed-in visitor. The token is theirs: it does their work and is never shown, logged or stored."""

    name: str
    token: str = field(repr=False)
    scopes: frozenset[str] = frozenset()
    expires_at: float | None = None  # seconds since the epoch, when the sign-in ends (and the token with it)

    def seconds_left(self, now: float | None = None) -> float | None:
        return None if not self.expires_at else self.expires_at - (now or time.time())


def missing_scopes(granted: str | None) -> list[str]:
    """The scopes the studio needs that ``granted`` (a space-separated OAuth scope string) lacks."""
    have = set((granted or "").split())
    return [s for s in SCOPES if s not in have]


def visitor_of(profile, oauth_token) -> Visitor:
    """The visitor behind Gradio's ``gr.OAuthProfile`` and ``gr.OAuthToken`` (both None when not signed in), or a
    ``StudioError`` saying what to do: sign in, or grant the scopes that are missing."""
    if profile is None or oauth_token is None or not getattr(oauth_token, "token", None):
        raise StudioError(
            "you are not signed in: use the “Sign in with Hugging Face” button at the top. Everything the studio "
            "does runs in your namespace with your permission, billed to your account"
        )
    missing = missing_scopes(oauth_token.scope)
    if missing:
        wanted = "; ".join(f"{s} ({SCOPES[s]})" for s in missing)
        raise StudioError(
            f"your sign-in lacks {len(missing)} permission(s) the studio needs: {wanted}. Sign out, sign in again "
            "and grant them (with a token: a write token grants them all)"
        )
    expires = getattr(oauth_token, "expires_at", None) or None
    return Visitor(profile.username, oauth_token.token, frozenset((oauth_token.scope or "").split()), expires)


def scopes_of_token(info: dict) -> list[str]:
    """What a plain token stands in for, from its ``whoami``: a write token every scope, a read token read-repos;
    a fine-grained token what its permissions allow."""
    access = (info.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    if role == "write":
        return list(SCOPES)
    if role == "fineGrained":
        grants = access.get("fineGrained") or {}
        perms = set(grants.get("global") or [])
        for scoped in grants.get("scoped") or []:
            perms |= set(scoped.get("permissions") or [])
        out = ["read-repos"]
        if "repo.write" in perms:
            out.append("contribute-repos")
        if "job.write" in perms:
            out.append("jobs")
        return out
    return ["read-repos"]


def in_a_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def _page(target: str, error: str = "") -> str:
    note = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Sign in · lorallama studio</title></head>
<body style="font-family: sans-serif; max-width: 36rem; margin: 4rem auto">
<h1>Sign in</h1>
<p>This studio runs outside a Space, so the Hub's OAuth sign-in is stood in for by a Hugging Face token
(<a href="https://huggingface.co/settings/tokens">create one</a>): a write token grants what the studio needs
({", ".join(SCOPES)}). It is kept in this browser's signed session only.</p>{note}
<form method="post" action="/login/token">
<input type="hidden" name="_target_url" value="{html.escape(target, quote=True)}">
<label>Token <input id="lorallama-token" name="token" type="password" autocomplete="off" required></label>
<button id="lorallama-signin" type="submit">Sign in</button>
</form></body></html>"""


def local_routes() -> list:
    """The sign-in stand-in (``/login/huggingface`` shows a token form, ``/login/token`` checks the token and signs
    the session in) for a studio served outside a Space; none inside one, where the Hub's OAuth runs."""
    if in_a_space():
        return []
    from fastapi import Request
    from fastapi.responses import HTMLResponse, RedirectResponse
    from fastapi.routing import APIRoute

    def safe_target(target: str | None) -> str:
        target = target or "/"
        return target if target.startswith("/") and not target.startswith("//") else "/"

    async def login(request: Request):
        return HTMLResponse(_page(safe_target(request.query_params.get("_target_url"))))

    async def signin(request: Request):
        from huggingface_hub import HfApi

        form = await request.form()
        token, target = str(form.get("token") or "").strip(), safe_target(str(form.get("_target_url") or "/"))
        try:
            info = HfApi(token=token).whoami() if token else None
        except Exception:
            info = None
        if not info or info.get("type", "user") != "user":
            return HTMLResponse(_page(target, "the Hub does not accept this token: paste a user access token"), 401)
        scope = " ".join(["openid", "profile", *scopes_of_token(info)])
        expires = int(time.time()) + LOCAL_SESSION_S
        request.session[gradio_compat.OAUTH_SESSION_KEY] = gradio_compat.oauth_session(token, scope, expires, info)
        return RedirectResponse(target, status_code=303)

    return [
        APIRoute("/login/huggingface", login, methods=["GET"], include_in_schema=False),
        APIRoute("/login/token", signin, methods=["POST"], include_in_schema=False),
    ]
