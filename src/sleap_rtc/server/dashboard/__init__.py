"""The web dashboard: one page shell and its static files, served by the server itself.

There is no build step: ``static/`` holds plain HTML, CSS and JavaScript modules,
and, as the files their releases ship, uPlot (the loss charts) and Swagger UI (the
API's documentation at ``/docs``). The page is a view of
the JSON API and holds no rule of its own: everything it shows and does goes
through the same routes as the CLI, authenticated by the session cookie
(:mod:`sleap_rtc.server.websession`), live through Server-Sent Events.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(str(resources.files(__package__) / "static"))

#: The page loads only this server's own scripts, styles and data, and no site may frame it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


def _page() -> FileResponse:
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
        },
    )


@router.get("/")
async def home() -> FileResponse:
    return _page()


@router.get("/login")
async def login_page() -> FileResponse:
    return _page()


@router.get("/rooms")
async def rooms_page() -> RedirectResponse:
    return RedirectResponse("/", status_code=307)


@router.get("/rooms/{room}")
async def room_page(room: str) -> FileResponse:
    return _page()


@router.get("/rooms/{room}/workers")
async def workers_page(room: str) -> FileResponse:
    return _page()


@router.get("/rooms/{room}/jobs")
async def jobs_page(room: str) -> FileResponse:
    return _page()


@router.get("/rooms/{room}/jobs/{job}")
async def job_page(room: str, job: str) -> FileResponse:
    return _page()


@router.get("/docs")
async def api_docs() -> HTMLResponse:
    """The API's documentation (Swagger UI), from files the package ships: it works on
    a network that reaches nothing but this server."""
    vendor = "/static/vendor/swagger-ui"
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="sleap-rtc server API",
        swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
        swagger_css_url=f"{vendor}/swagger-ui.css",
        swagger_favicon_url=f"{vendor}/favicon-32x32.png",
    )


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)


class SecurityHeaders:
    """Headers every answer carries: no content sniffing, no framing, no referrer
    sent to other sites."""

    HEADERS = (
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "same-origin"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)
