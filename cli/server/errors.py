"""Errors as JSON a person can act on, with the right status; never a traceback (and never the
request's input echoed back)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from xmodal.indexer.errors import (
    ImageReadError,
    IndexLockedError,
    IndexNotFoundError,
    InvalidInputError,
    InvalidQueryError,
    ModelLoadError,
    ModelMismatchError,
    XmodalError,
)

__all__ = ["install_error_handlers", "json_error", "status_of"]

_log = logging.getLogger("xmodal.server")
_STATUS: list[tuple[type[XmodalError], int]] = [
    (InvalidQueryError, 400),
    (InvalidInputError, 400),
    (ImageReadError, 422),
    (IndexNotFoundError, 503),
    (IndexLockedError, 503),
    (ModelLoadError, 503),
    (ModelMismatchError, 503),
]


def status_of(error: XmodalError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def json_error(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "status": status}, status_code=status, headers=headers)


def _validation_message(error: dict) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "body", "path", "form"))
    message = str(error.get("msg", "invalid value"))
    return f"{where}: {message}" if where else message


def install_error_handlers(app: FastAPI, max_error_items: int) -> None:
    @app.exception_handler(XmodalError)
    async def _domain(request: Request, exc: XmodalError) -> JSONResponse:
        return json_error(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never the inputs themselves (a 5 MB list would come back whole), and at most a few errors.
        errors = exc.errors()
        shown = max(1, max_error_items)
        messages = [_validation_message(e) for e in errors[:shown]]
        if len(errors) > shown:
            messages.append(f"… and {len(errors) - shown} more errors")
        return json_error(422, "; ".join(messages) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return json_error(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("internal error on %s %s", request.method, request.url.path)
        return json_error(500, "internal error; the server log has the details")
