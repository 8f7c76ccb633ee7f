"""The supermarket page at `/` (its scripts and styles are mounted at `/web`)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

WEB = resources.files("api").joinpath("web")
"""The page's folder."""

router = APIRouter()
_page = WEB.joinpath("index.html").read_text()


@router.get("/", include_in_schema=False)
async def supermarket() -> HTMLResponse:
    return HTMLResponse(_page)
