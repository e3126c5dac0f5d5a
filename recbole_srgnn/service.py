"""The HTTP service over a :class:`~recbole_srgnn.recommend.Recommender`: ``create_app``.

    app = create_app(Recommender.load("bundles/srgnn"), ServiceLimits(max_batch=100))

Endpoints (the OpenAPI page at ``/docs``, the schema at ``/openapi.json``):

* ``POST /recommend`` ``{"items": [...], "k": 10, "exclude_seen": false, "exclude": []}`` ->
  ``{"items", "scores", "unknown_items", "fallback", "model"}`` (``Recommender.recommend``);
* ``POST /recommend/batch`` ``{"sessions": [[...], ...], "k", "exclude_seen", "exclude"}`` ->
  ``{"results": [{"items", "scores", "unknown_items", "fallback"}, ...], "model"}`` (one
  ``Recommender.recommend_batch`` call);
* ``GET /health``: the model, dataset, catalogue size, bundle folder, limits and versions.

Item ids are strings or integers (an integer is taken as its text), as in ``Recommender``.
Every bad request gets a 4xx whose JSON body ``{"detail": "..."}`` names the problem in one line:
400 malformed JSON, 404 unknown path, 405 wrong method, 413 a body over
``max_body_bytes`` (the Content-Length and the bytes actually streamed are both counted), 422
wrong types, missing or unknown fields, ``k`` out of range, a session or batch over its limit,
or any :class:`~recbole_srgnn.errors.InputError` of the Recommender. The endpoints are plain
``def`` functions (the framework runs them in its thread pool) on one shared, read-only network
(scored under ``torch.inference_mode``; nothing is copied per request), except ``/recommend``:
its requests wait, without a thread each, for a :class:`~recbole_srgnn.micro_batch.MicroBatcher`
that scores concurrent requests together (``batch_requests`` per forward pass at most; a request
that arrives alone is scored at once). Answers are built as JSON directly, not re-validated.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from importlib import metadata as package_metadata
from typing import Annotated, Any, Union

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .bundle import library_versions
from .errors import InputError, excerpt
from .micro_batch import MicroBatcher
from .recommend import Recommendation, Recommender

ItemId = Annotated[Union[StrictStr, StrictInt],
                   Field(description="an item id: the dataset's token (an integer is read as its "
                                     "text)", union_mode="left_to_right")]
UNION_TAGS = {"str", "int"}  # the members pydantic names in the location of a union's errors
SERVICE_PACKAGES = ("fastapi", "uvicorn", "pydantic", "starlette")
PARSE_FAILED = "There was an error parsing the body"  # FastAPI's 400 when json.loads fails


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask (``None`` for ``max_k``: the whole catalogue)."""

    max_k: int | None = None
    max_session_items: int = 200
    max_batch: int = 1000
    max_body_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is None and name == "max_k":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a whole number >= 1, got {value!r}")


class ServiceError(Exception):
    """A request the service refuses: answered with ``status`` and ``{"detail": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Strict):
    items: list[ItemId] = Field(description="the session's items, oldest first")
    k: StrictInt = Field(10, description="how many items to recommend")
    exclude_seen: StrictBool = Field(False, description="never recommend the session's own items")
    exclude: list[ItemId] = Field(default_factory=list, description="items never to recommend")


class BatchRequest(_Strict):
    sessions: list[list[ItemId]] = Field(description="sessions, each its items oldest first")
    k: StrictInt = Field(10, description="how many items to recommend per session")
    exclude_seen: StrictBool = Field(False, description="never recommend a session's own items")
    exclude: list[ItemId] = Field(default_factory=list, description="items never to recommend")


class RecommendationOut(BaseModel):
    items: list[str] = Field(description="recommended items, best first")
    scores: list[float] = Field(description="their scores (model logits, or training counts "
                                            "when fallback)")
    unknown_items: list[str] = Field(description="session items the model does not know (dropped)")
    fallback: bool = Field(description="no known item: ranked by training popularity")


class RecommendResponse(RecommendationOut):
    model: str = Field(description="the bundle's model class")


class BatchResponse(BaseModel):
    results: list[RecommendationOut]
    model: str


class ErrorResponse(BaseModel):
    detail: str = Field(description="what was wrong with the request, in one line")


def running_versions() -> dict:
    """The versions this process runs with (the bundle records those it was written with)."""
    versions = library_versions()
    for name in SERVICE_PACKAGES:
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            continue
    return versions


def validation_message(errors: list[dict]) -> tuple[int, str]:
    """The status and one-line message for pydantic/FastAPI request validation ``errors``."""
    if any(error.get("type") == "json_invalid" for error in errors):
        reason = next(e.get("ctx", {}).get("error", "") for e in errors
                      if e.get("type") == "json_invalid")
        return 400, f"request body is not valid JSON ({reason})"
    parts: list[str] = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        if loc and loc[-1] in UNION_TAGS:
            loc, message = loc[:-1], "must be a string or an integer (an item id)"
        elif not loc and error.get("type") in ("missing", "model_attributes_type", "dict_type"):
            message = "the request body must be a JSON object (Content-Type: application/json)"
        elif error.get("type") == "extra_forbidden":
            message = "is not a field of this request"
        else:
            message = error.get("msg", "is not valid")
        where = ".".join(loc)
        got = "" if error.get("type") in ("missing", "extra_forbidden") or not loc \
            else f", got {excerpt(json.dumps(error.get('input'), default=repr), 30)}"
        part = f"{where}: {message}{got}" if where else message
        if part not in parts:
            parts.append(part)
    shown = "; ".join(parts[:3]) + (f" (and {len(parts) - 3} more)" if len(parts) > 3 else "")
    return 422, shown


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, by its Content-Length or
    by what is actually streamed (a chunked body has no Content-Length). The body is read here,
    at most ``limit`` bytes of it, and handed on to the app unchanged.

    A body up to ``DRAIN_FACTOR`` times the limit is read to its end (and dropped) before the
    413 goes out, so that the client, still sending, reads the answer instead of a reset
    connection; a larger one is answered at once and the connection closed.
    """

    DRAIN_FACTOR = 4

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:  # the server checks its syntax
            if int(declared) <= self.DRAIN_FACTOR * self.limit:
                await self._drain(receive, 0)
            await _reply(send, 413, self._too_large(f"{int(declared)} bytes"))
            return
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            more = bool(message.get("more_body", False))
            total += len(chunk)
            if total > self.limit:
                if more:
                    await self._drain(receive, total)
                await _reply(send, 413, self._too_large(f"over {self.limit} bytes"))
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, total: int) -> None:
        """Read and drop the rest of the body, up to ``DRAIN_FACTOR * limit`` bytes in all."""
        while total <= self.DRAIN_FACTOR * self.limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            total += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    def _too_large(self, size: str) -> str:
        return f"request body too large ({size}; the limit is {self.limit} bytes, --max_body_bytes)"


async def _reply(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


def create_app(recommender: Recommender, limits: ServiceLimits | None = None,
               batch_requests: int = 32) -> FastAPI:
    """The FastAPI app serving ``recommender`` within ``limits`` (see the module docstring).

    ``batch_requests`` > 1: concurrent ``/recommend`` requests are scored together, up to that
    many per forward pass (:class:`~recbole_srgnn.micro_batch.MicroBatcher`); 1: each alone.
    """
    limits = limits or ServiceLimits()
    batcher = MicroBatcher(recommender, batch_requests) if batch_requests > 1 else None
    bundle = recommender.bundle
    model = str(bundle.metadata.get("model"))
    catalogue = recommender.n_items - 1  # item ids 1 .. n_items - 1; 0 is padding
    health = {"status": "ok", "model": model, "dataset": bundle.metadata.get("dataset"),
              "n_items": catalogue, "max_prefix_length": recommender.max_prefix_length,
              "bundle": str(bundle.folder), "device": str(recommender.device),
              "limits": {**asdict(limits), "max_k": limits.max_k or catalogue},
              "batch_requests": batch_requests,
              "versions": {"bundle": bundle.metadata.get("versions", {}),
                           "running": running_versions()}}
    errors = {status: {"model": ErrorResponse} for status in (400, 413, 422)}
    app = FastAPI(title=f"recbole-srgnn: {model} recommendations",
                  description=f"Next-item recommendations from the {model} bundle "
                              f"{bundle.folder} ({catalogue} items).",
                  version=str(running_versions().get("recbole_srgnn", "unknown")))
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    def checked(k: int, sessions: list[list[Any]]) -> None:
        if k < 1 or k > catalogue:
            raise ServiceError(422, f"k must be from 1 to {catalogue} (the number of items), "
                                    f"got {k}")
        if limits.max_k is not None and k > limits.max_k:
            raise ServiceError(422, f"k must be at most {limits.max_k} (--max_k), got {k}")
        longest = max((len(s) for s in sessions), default=0)
        if longest > limits.max_session_items:
            raise ServiceError(422, f"a session has {longest} items, more than the limit of "
                                    f"{limits.max_session_items} (--max_session_items)")

    def answer(result: Recommendation) -> dict:
        return {"items": result.items, "scores": result.scores,
                "unknown_items": result.unknown_items, "fallback": result.fallback}

    if batcher is not None:
        @app.post("/recommend", response_model=RecommendResponse, responses=errors)
        async def recommend(request: RecommendRequest) -> JSONResponse:
            """The top ``k`` items after one session."""
            checked(request.k, [request.items])
            result = await asyncio.wrap_future(batcher.submit(
                request.items, request.k, exclude_seen=request.exclude_seen,
                exclude=request.exclude))
            return JSONResponse({**answer(result), "model": model})
    else:
        @app.post("/recommend", response_model=RecommendResponse, responses=errors)
        def recommend(request: RecommendRequest) -> JSONResponse:
            """The top ``k`` items after one session."""
            checked(request.k, [request.items])
            with torch.inference_mode():
                result = recommender.recommend(request.items, request.k,
                                               exclude_seen=request.exclude_seen,
                                               exclude=request.exclude)
            return JSONResponse({**answer(result), "model": model})

    @app.post("/recommend/batch", response_model=BatchResponse, responses=errors)
    def recommend_batch(request: BatchRequest) -> JSONResponse:
        """The top ``k`` items after each of many sessions (one batched forward pass per chunk)."""
        if len(request.sessions) > limits.max_batch:
            raise ServiceError(422, f"the batch has {len(request.sessions)} sessions, more than "
                                    f"the limit of {limits.max_batch} (--max_batch)")
        checked(request.k, request.sessions)
        with torch.inference_mode():
            results = recommender.recommend_batch(request.sessions, request.k,
                                                  exclude_seen=request.exclude_seen,
                                                  exclude=request.exclude)
        return JSONResponse({"results": [answer(r) for r in results], "model": model})

    @app.get("/health")
    def health_check() -> dict:
        """The model being served, its bundle, the request limits and the library versions."""
        return health

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = validation_message(list(exc.errors()))
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(ServiceError)
    async def refused(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": " ".join(str(exc).split())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            detail = f"no such path {excerpt(request.url.path, 60)} (see /docs)"
        elif exc.status_code == 400 and detail == PARSE_FAILED:  # e.g. nested too deeply
            detail = "request body could not be parsed as JSON (nested too deeply, or a number "\
                     "too long?)"
        return JSONResponse({"detail": detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    return app
