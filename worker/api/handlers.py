"""How the API answers the errors its routes let through: a 4xx whose body says what was
wrong, or a 503 when the database is away."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from worker.errors import BadInput

log = logging.getLogger(__name__)


def add_exception_handlers(app: FastAPI) -> None:
    app.exception_handler(RequestValidationError)(unprocessable)
    app.exception_handler(BadInput)(bad_input)
    app.exception_handler(SQLAlchemyError)(database_down)


async def unprocessable(request: Request, exc: RequestValidationError) -> JSONResponse:
    # The location and message of the first errors only: FastAPI's default handler
    # echoes the input back, which can be a megabyte.
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
               "type": e.get("type", "value_error")} for e in exc.errors()[:20]]
    return JSONResponse({"detail": errors}, status_code=422)


async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def database_down(request: Request, exc: SQLAlchemyError) -> JSONResponse:
    # The type only: the message can carry SQL and parameters.
    log.error("database error while serving %s: %s", request.url.path, type(exc).__name__)
    return JSONResponse({"detail": "the database is unavailable"}, status_code=503)
