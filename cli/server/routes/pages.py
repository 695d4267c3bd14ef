"""The web page, its login form, its static files and the API docs page; all offline (no CDN).

`/?q=TEXT` arrives with that search's results already in the page: as markup (so any client sees
them) and as JSON data the script takes over from. Every path and caption is escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from xmodal.cli.server.auth import COOKIE, require_auth
from xmodal.cli.server.models import HitOut, SearchResponse
from xmodal.cli.server.params import search_options
from xmodal.cli.server.routes.search import run_search
from xmodal.cli.server.services import Services, get_services
from xmodal.indexer.errors import XmodalError

__all__ = ["StaticFiles", "router", "public_router"]

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
_PAGE_SIZE = 60


class StaticFiles:
    """The page's files, read once from the package: served by name from a fixed list (no directory
    listing, no path ever joined from a request)."""

    def __init__(self) -> None:
        folder = resources.files("xmodal.cli.server") / "static"
        self.files = {
            f.name: f.read_bytes() for f in folder.iterdir() if f.is_file() and f.name.endswith(tuple(_TYPES))
        }
        login = self.files["login.html"].decode()
        style = login.split("<style>", 1)[1].split("</style>", 1)[0]
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        # The login page is shown before any token is known, so it carries its style inline; the
        # policy admits that one style by its hash and nothing else.
        self.login_csp = (
            f"default-src 'none'; style-src 'sha256-{digest}'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )

    def text(self, name: str) -> str:
        return self.files[name].decode("utf-8")


router = APIRouter(tags=["page"], dependencies=[Depends(require_auth)], include_in_schema=False)
public_router = APIRouter(tags=["page"], include_in_schema=False)
ServicesDep = Annotated[Services, Depends(get_services)]


def _static(request: Request) -> StaticFiles:
    return request.app.state.static


def _login_page(request: Request, message: str = "", status: int = 200) -> HTMLResponse:
    static = _static(request)
    page = static.text("login.html").replace("<!--MESSAGE-->", html.escape(message))
    return HTMLResponse(
        page, status_code=status, headers={"Content-Security-Policy": static.login_csp, "Cache-Control": "no-store"}
    )


def _figure(hit: HitOut) -> str:
    label = hit.text if hit.kind == "text" and hit.text else hit.name
    title = html.escape(f"{hit.score:.3f} · {hit.path}", quote=True)
    if hit.kind in ("image", "video"):
        picture = (
            f'<img src="{html.escape(hit.thumbnail or "")}" alt="{html.escape(hit.name, quote=True)}" loading="lazy">'
        )
        caption = f'<span class="caption">{html.escape(label)}</span>'
        link = html.escape(hit.url or "")
        return f'<a class="hit" href="{link}" data-id="{hit.id}" title="{title}">{picture}{caption}</a>'
    return f'<div class="hit text" data-id="{hit.id}" title="{title}"><p>{html.escape(label)}</p></div>'


def _fraction(value: str | None, name: str) -> float | None:
    """A number in [0, 1] from the page's URL (the API's own parameters are checked by FastAPI)."""
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise HTTPException(422, f"{name} must be a number between 0 and 1, not {value!r}") from None
    if not 0.0 <= number <= 1.0:  # also refuses nan
        raise HTTPException(422, f"{name} must be a number between 0 and 1, not {value!r}")
    return number


def _initial(request: Request, services: Services) -> tuple[dict[str, object], str]:
    """The search the URL asks for, as JSON data for the script and as markup."""
    params = request.query_params
    q, like, in_photo = params.get("q"), params.get("like"), params.get("in_photo") or None
    if not q and not like and not in_photo:
        return {}, ""
    try:
        options = search_options(
            limit=_PAGE_SIZE,
            target=params.get("target", "image"),  # type: ignore[arg-type]
            under=params.get("under") or None,
            after=params.get("after") or None,
            before=params.get("before") or None,
            ext=params.getlist("ext") or None,
            min_size=params.get("min_size") or None,
            min_score=params.get("min_score") or None,
            place=params.get("place") or None,
            # the same as the script's searches: a bookmarked URL shows what it showed
            diverse=_fraction(params.get("diverse"), "diverse"),
            collapse=_fraction(params.get("collapse"), "collapse"),
            rerank=params.get("rerank") != "false",
        )
        if options.target not in ("image", "text"):
            raise HTTPException(422, "target must be 'image' or 'text'")
        if like is not None and not like.isdigit():
            raise HTTPException(422, "like must be an item id")
        result: SearchResponse = run_search(services, options, q or None, int(like) if like else None, None, in_photo)
    except HTTPException as e:
        return {"error": str(e.detail)}, f'<p class="error">{html.escape(str(e.detail))}</p>'
    except XmodalError as e:
        return {"error": str(e)}, f'<p class="error">{html.escape(str(e))}</p>'
    return result.model_dump(), "".join(_figure(h) for h in result.hits)


@public_router.get("/", response_class=HTMLResponse)
def index_page(request: Request, services: ServicesDep) -> HTMLResponse:
    if not services.auth.allows(request):  # a person at the page: the login form, not a JSON 401
        return _login_page(request, status=401)
    data, markup = _initial(request, services)
    # JSON inside <script type="application/json">: '<' escaped, so no text can close the element.
    payload = (
        json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )
    page = (
        _static(request)
        .text("index.html")
        .replace("{{QUERY}}", html.escape(request.query_params.get("q", ""), quote=True))
        .replace("{{INITIAL}}", payload)
        .replace("<!--RESULTS-->", markup)
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.get("/static/{name}")
def static_file(request: Request, name: str) -> Response:
    static = _static(request)
    if name not in static.files or name.endswith(".html"):
        raise HTTPException(404, f"no such file: {name!r}")
    media = _TYPES["." + name.rsplit(".", 1)[-1]]
    return Response(static.files[name], media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/docs", response_class=HTMLResponse)
def docs_page(request: Request) -> HTMLResponse:
    return HTMLResponse(_static(request).text("docs.html"))


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@public_router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _login_page(request)


@public_router.post("/login", response_class=HTMLResponse)
def login(request: Request, services: ServicesDep, token: Annotated[str, Form(max_length=4096)] = "") -> Response:
    auth = services.auth
    if not auth.enabled:
        return RedirectResponse("/", status_code=303)
    address = request.client.host if request.client else ""
    wait = auth.login_blocked_for(address)
    if wait > 0:
        refused = _login_page(request, "Too many wrong tokens; wait a minute and try again.", status=429)
        refused.headers["Retry-After"] = str(int(wait) + 1)
        return refused
    if not auth.token_matches(token):
        auth.login_failed(address)
        return _login_page(request, "That token is not right.", status=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, auth.open_session(), httponly=True, samesite="strict", path="/")
    return response


@public_router.post("/logout")
def logout(request: Request, services: ServicesDep) -> Response:
    services.auth.close_session(request.cookies.get(COOKIE, ""))  # the id stops working, copied or not
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
