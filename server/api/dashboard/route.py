"""The dashboard's routes, behind the admin key (open with auth off, like /stats):

- GET /dashboard: the page;
- GET /dashboard/dashboard.js and /dashboard/dashboard.css: its script and style;
- GET /dashboard/stats: the body of /stats, which the page reads every two seconds.

The files are read once, when this module is imported. The page shows counters, percentiles,
states and capability names, never a request's text; its Content-Security-Policy allows only
this origin, so nothing can be loaded from elsewhere.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from server.api.auth.permissions import require_admin
from server.api.dashboard import DASHBOARD_PATH
from server.api.routes import stats_body
from server.runtime import Runtime

_STATIC = resources.files("server.api.dashboard") / "static"


def _read(name: str) -> bytes:
    return (_STATIC / name).read_bytes()


PAGE = _read("dashboard.html")
SCRIPT = _read("dashboard.js")
STYLE = _read("dashboard.css")

HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}

router = APIRouter(
    prefix=DASHBOARD_PATH, dependencies=[Depends(require_admin)], include_in_schema=False
)


@router.get("")
async def page() -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/dashboard.js")
async def script() -> Response:
    return Response(SCRIPT, media_type="text/javascript; charset=utf-8", headers=HEADERS)


@router.get("/dashboard.css")
async def style() -> Response:
    return Response(STYLE, media_type="text/css; charset=utf-8", headers=HEADERS)


@router.get("/stats")
async def stats(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    body: dict[str, Any] = stats_body(runtime)
    return JSONResponse(body, headers=HEADERS)
