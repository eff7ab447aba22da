"""The query API: one user's check-ins over HTTP, a drop-in for the TM system's ``GET /Prod/get?user=``.

Reads ``tm.daily_checkins`` through SQLAlchemy Core with bound parameters only. Optional API key
(``SLUICE_API_KEY``, or a Prefect ``Secret`` block named by ``SLUICE_API_KEY_BLOCK``) in ``X-API-Key``,
compared in constant time and never logged.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sluice.adapters.warehouse import get_engine
from sluice.errors import ConfigurationError, described
from sluice.settings import Settings, get_settings
from sluice.tables.tm import daily_checkins as t

logger = logging.getLogger(__name__)

MAX_LIMIT = 1000
MAX_OFFSET = 2**62  # PostgreSQL's OFFSET is a bigint: beyond it is a bad request, not a database error
BAD_REQUEST = {"message": "error bad request"}
UNAVAILABLE = {"message": "service unavailable"}
RETRY_AFTER_SECONDS = 5
# Failures of the warehouse itself (unreachable, connection lost, pool exhausted): 503, not a 500 with a traceback.
DATABASE_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


# In the OpenAPI document as a security scheme: /docs' "Authorize" sends it with every "Try it out".
KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The API key, when one is configured."
)


class Checkin(BaseModel):
    user: str = Field(description="The user who checked in.")
    project: str
    hours: float = Field(description="Hours worked, a number.")
    timestamp: str = Field(description="When, ISO 8601 in UTC (e.g. 2019-09-27T00:00:00Z).")


class CheckinsResponse(BaseModel):
    response: list[Checkin]


class Message(BaseModel):
    message: str


def _iso_utc(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


_FRACTION = re.compile(r"[.,](\d{7,})")


def parse_moment(text: str | None) -> datetime | None:
    """An ISO 8601 time (``from``/``to``) in UTC: extended or basic (``2019-09-30T00:00:00Z``, ``20190930``), a
    zone-less one being UTC. ValueError for anything else: a bare number was read as Unix seconds (pydantic's lax
    datetime), so ``20190930`` meant 1970-08-22. A fraction finer than a microsecond rounds up: the check-ins have
    microseconds, so ``>= from`` and ``< to`` then select what they would at full precision."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)  # Python 3.11: ISO 8601's extended and basic forms, nothing else
    fraction = _FRACTION.search(text)
    if fraction and fraction.group(1)[6:].strip("0"):
        moment += timedelta(microseconds=1)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def resolve_api_key(settings: Settings) -> str | None:
    """The key requests must carry: the setting, else the named Prefect Secret block, else none (open API).

    A key that is set but empty, or a block that cannot be read, is a ConfigurationError, never an open API: an
    empty secret injected into a container served everyone."""
    if settings.api_key is not None:
        if not settings.api_key.get_secret_value().strip():
            raise ConfigurationError(
                "SLUICE_API_KEY is set but empty: give the key, or unset it to serve without one"
            )
        return _sendable(settings.api_key.get_secret_value(), "SLUICE_API_KEY")
    if settings.api_key_block:
        from prefect.blocks.system import Secret  # Prefect only when the key is in a Secret block

        name = settings.api_key_block
        try:
            value = Secret.load(name).get()
        except Exception as exc:
            raise ConfigurationError(
                f"SLUICE_API_KEY_BLOCK={name}: cannot read the Secret block {name!r} ({described(exc)}); "
                "`prefect block ls` lists the blocks of the Prefect API in use"
            ) from None
        if not str(value or "").strip():
            raise ConfigurationError(f"SLUICE_API_KEY_BLOCK={name}: the Secret block {name!r} is empty")
        return _sendable(str(value), f"SLUICE_API_KEY_BLOCK={name}: the Secret block {name!r}")
    return None


def _sendable(key: str, what: str) -> str:
    """``key`` when a client can send it in a header; else a ConfigurationError. An HTTP header carries printable
    ASCII, its spaces around it dropped: a key with ``€`` or a trailing newline was served, and no request could
    ever match it (every one was 401)."""
    if not all(" " <= c <= "~" for c in key) or key != key.strip():
        raise ConfigurationError(
            f"{what} holds characters an X-API-Key header cannot carry (only printable ASCII, no spaces around "
            "it; a trailing newline from a file counts): no request could match it"
        )
    return key


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app (OpenAPI docs at ``/docs``)."""
    settings = settings or get_settings()
    expected_key = resolve_api_key(settings)
    app = FastAPI(
        # `/get/` is served, not redirected: a redirect's absolute `http://` Location is wrong behind a TLS proxy
        redirect_slashes=False,
        title="Sluice query API",
        version="1",
        description="Check-ins loaded by Sluice into `tm.daily_checkins`. "
        + ("Requests need the `X-API-Key` header." if expected_key else "No API key configured."),
    )
    app.state.api_key_required = expected_key is not None
    # Resolved here, on the caller's thread: starting the embedded server is not safe from request threads.
    warehouse = get_engine(settings)

    def engine() -> sa.Engine:
        return warehouse

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors()})
        return JSONResponse(status_code=400, content={**BAD_REQUEST, "fields": fields})

    def require_key(x_api_key: Annotated[str | None, Security(KEY_HEADER)] = None) -> None:
        if expected_key is None:
            return
        if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), expected_key.encode()):
            raise _UnauthorizedError

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Every error body has API Gateway's shape, {"message": ...} (unknown path, method not allowed).
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # every resource answers GET and HEAD; Starlette names only the first route's method (one per route here)
            headers["Allow"] = "GET, HEAD"
        return JSONResponse(
            status_code=exc.status_code, content={"message": str(exc.detail).lower()}, headers=headers
        )

    for error in DATABASE_DOWN:

        @app.exception_handler(error)
        async def database_down(request: Request, exc: Exception) -> JSONResponse:
            # one line, no traceback, no URL (it may carry a password): the error's type is enough to act on
            logger.warning(
                "%s %s: database unavailable (%s)", request.method, request.url.path, type(exc).__name__
            )
            return JSONResponse(
                status_code=503, content=UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            )

    @app.exception_handler(_UnauthorizedError)
    async def unauthorized(request: Request, exc: _UnauthorizedError) -> JSONResponse:
        return JSONResponse(status_code=401, content={"message": "unauthorized"})

    def get_checkins(
        request: Request,
        response: Response,
        user: Annotated[str | None, Query(description="The user's name (exact match).")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (max 1,000).")] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")] = 0,
        since: Annotated[
            str | None,
            Query(
                alias="from",
                description="Only check-ins at or after this (ISO 8601, e.g. 2019-09-01T00:00:00Z; no zone: UTC).",
            ),
        ] = None,
        until: Annotated[
            str | None,
            Query(alias="to", description="Only check-ins before this (ISO 8601, as `from`)."),
        ] = None,
        _: None = Depends(require_key),
    ) -> Any:
        if user is None or not user.strip():
            return JSONResponse(status_code=400, content=BAD_REQUEST)
        if "\x00" in user:  # PostgreSQL text cannot hold NUL: no such user can exist
            return {"response": []}
        query = sa.select(t.c.username, t.c.project, t.c.hours, t.c.timestamp).where(t.c.username == user)
        moments: dict[str, datetime | None] = {}
        for name, text in (("from", since), ("to", until)):
            try:
                moments[name] = parse_moment(text)
            except (ValueError, OverflowError):  # not ISO 8601, or its UTC outside years 1-9999
                moments[name] = None
        bad = [
            name
            for name, text in (("from", since), ("to", until))
            if text is not None and moments[name] is None
        ]
        if bad:
            return JSONResponse(status_code=400, content={**BAD_REQUEST, "fields": bad})
        if moments["from"] is not None:
            query = query.where(t.c.timestamp >= moments["from"])
        if moments["to"] is not None:
            query = query.where(t.c.timestamp < moments["to"])
        # one row more than the page: whether a next page exists, without a count(*)
        query = query.order_by(t.c.timestamp, t.c.id).limit(limit + 1).offset(offset)
        try:
            with engine().connect() as conn:
                rows = conn.execute(query).all()
        except sa.exc.ProgrammingError as exc:
            if "does not exist" in str(exc.orig):  # nothing loaded yet: no table, no check-ins
                return {"response": []}
            raise
        if len(rows) > limit:
            # A client of the original API got every row in one response: a cut page says where the rest is
            # (RFC 8288, a reference relative to this request's path, right behind a proxy too).
            rows = rows[:limit]
            following = request.query_params.multi_items()
            following = [(k, v) for k, v in following if k not in ("limit", "offset")]
            following += [("limit", str(limit)), ("offset", str(offset + limit))]
            response.headers["Link"] = f'<{request.url.path}?{urlencode(following)}>; rel="next"'
        return {
            "response": [
                {
                    "user": r.username,
                    "project": r.project,
                    "hours": float(r.hours),
                    "timestamp": _iso_utc(r.timestamp),
                }
                for r in rows
            ]
        }

    responses: dict[int | str, dict[str, Any]] = {
        400: {"model": Message, "description": "`user` missing or blank, or a bad parameter"},
        401: {"model": Message, "description": "API key missing or wrong"},
    }
    for path in ("/get", "/Prod/get", "/get/", "/Prod/get/"):
        for method in ("GET", "HEAD"):  # HEAD: what any GET resource answers (RFC 9110), without the body
            app.add_api_route(
                path,
                get_checkins,
                methods=[method],
                response_model=CheckinsResponse,
                responses=responses,
                summary="One user's check-ins, ordered by timestamp",
                include_in_schema=path == "/get" and method == "GET",
            )

    def health() -> JSONResponse:
        try:
            with engine().connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:  # any database failure is "unavailable", without details
            logger.warning("health check: database unavailable (%s)", type(exc).__name__)
            return JSONResponse(
                status_code=503,
                content={"status": "unavailable", "database": "down"},
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return JSONResponse(content={"status": "ok", "database": "up"})

    for path in ("/health", "/health/"):
        app.add_api_route(
            path,
            health,
            methods=["GET"],
            summary="Liveness and database check",
            responses={503: {"description": "The database is down (with Retry-After)"}},
            include_in_schema=path == "/health",
        )
        app.add_api_route(path, health, methods=["HEAD"], include_in_schema=False)

    app.openapi = lambda: _documented(app)  # type: ignore[method-assign]
    return app


def _documented(app: FastAPI) -> dict[str, Any]:
    """FastAPI's OpenAPI document as the API answers: a bad parameter is a 400 (documented), never FastAPI's 422;
    ``user`` is required (it is optional in the signature only to answer its absence with the 400)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            operation.get("responses", {}).pop("422", None)
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "user":
                    parameter["required"] = True
        app.openapi_schema = schema
    return app.openapi_schema


class _UnauthorizedError(Exception):
    pass
