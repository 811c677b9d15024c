"""Mount the console at /ui (``/`` redirects there) and serve the API docs with local assets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from winnow import __version__
from winnow.config import CHAT_MODEL_ID
from winnow.web.security import CONSOLE_PREFIX, SecurityHeaders

HERE = Path(__file__).parent
STATIC = HERE / "static"
SWAGGER = "vendor/swagger-ui-5.35.0"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals.update(version=__version__, prefix=CONSOLE_PREFIX)

# path under /ui -> (template, page script, title); path parameters become the body's data-* attributes
PAGES: dict[str, tuple[str, str, str]] = {
    "": ("overview.html", "overview", "Overview"),
    "/signin": ("signin.html", "signin", "Sign in"),
    "/jobs": ("jobs.html", "jobs", "Synthetic-data jobs"),
    "/jobs/{job_id}": ("job.html", "job", "Synthetic-data job"),
    "/feedback": ("feedback.html", "feedback", "Human feedback"),
    "/evals": ("evals.html", "evals", "Prompt evaluations"),
    "/prompts": ("prompts.html", "prompts", "Prompts"),
    "/prompts/{name}": ("prompt.html", "prompt", "Prompt"),
    "/fine-tuning": ("finetune.html", "finetune", "Fine-tuning"),
    "/fine-tuning/{job_id}": ("finetune_job.html", "finetune_job", "Fine-tuning job"),
    "/requests": ("requests.html", "requests", "Requests"),
    "/requests/{request_id}": ("request.html", "request", "Request"),
    "/playground": ("playground.html", "playground", "Playground"),
    "/keys": ("keys.html", "keys", "API keys"),
}


def _page(template: str, script: str, title: str) -> Callable[[Request], Awaitable[Response]]:
    async def render(request: Request) -> Response:
        context = {"title": title, "script": script, "params": dict(request.path_params), "chat_model": CHAT_MODEL_ID}
        return templates.TemplateResponse(request, template, context)

    return render


async def _root(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{CONSOLE_PREFIX}/", status_code=307)


def install_console(app: FastAPI, docs_path: str, openapi_url: str) -> None:
    """Add the console's pages and static files, the offline docs page, and the security headers."""
    app.mount(f"{CONSOLE_PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_route("/", _root, include_in_schema=False)
    app.add_route(CONSOLE_PREFIX, _root, include_in_schema=False)
    for path, (template, script, title) in PAGES.items():
        app.add_route(f"{CONSOLE_PREFIX}{path or '/'}", _page(template, script, title), include_in_schema=False)

    async def docs(request: Request) -> HTMLResponse:
        html = templates.get_template("docs.html").render(openapi_url=openapi_url, swagger=SWAGGER)
        return HTMLResponse(html)

    app.add_route(docs_path, docs, include_in_schema=False)
    app.add_middleware(SecurityHeaders, docs_path=docs_path)
