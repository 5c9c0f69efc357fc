"""The LogHarbor ASGI application: one engine, the native API, health and metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engine import Engine, EngineConfig, Limits
from ..engine.documents import DocumentStore
from ..engine.index.query import QueryLimits
from ..engine.shipping import Shipping
from ..protocol.errors import ErrorCode, ServiceError
from . import console
from .auth import AccessKeyStore, Authenticator
from .compat.inlong import InLongFacade
from .compat.sls import SignatureVerifier, SlsDispatch, SlsFacade
from .compat.tls import TLSDispatch, TLSFacade, V4Verifier
from .config import ServerConfig
from .http import ByteBudget, error_response, new_request_id
from .metrics import Metrics
from .native import PREFIX, NativeAPI
from .openapi import openapi_document


@dataclass
class Server:
    """Everything one running server holds."""

    config: ServerConfig
    engine: Engine
    keys: AccessKeyStore
    app: Starlette
    inlong: InLongFacade | None = None  # when config.inlong_port >= 0
    shipping: Shipping | None = None


class _Timing:
    """Stamp each request's start so that latency metrics cover the whole handler."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["logharbor.started"] = time.perf_counter()
        await self.app(scope, receive, send)


def build_server(config: ServerConfig) -> Server:
    engine = Engine(
        EngineConfig(
            data_dir=config.data_dir,
            limits=Limits(
                max_body_bytes=config.max_body_bytes,
                max_raw_bytes=config.max_raw_bytes,
                max_group_logs=config.max_group_logs,
            ),
            segment_bytes=config.segment_bytes,
            segment_seconds=config.segment_seconds,
            compact_level=config.compact_level,
            max_pending_bytes=config.max_pending_bytes,
            retention_interval=config.retention_interval,
            ingest_workers=config.ingest_workers,
            query_limits=QueryLimits(
                timeout=config.query_timeout,
                max_range_days=config.query_max_range_days,
                max_concurrency=config.query_max_concurrency,
                max_answer_bytes=config.query_max_answer_bytes,
            ),
            query_memory_limit=config.query_memory_limit,
            query_cache_bytes=config.query_cache_bytes,
        )
    )
    keys = AccessKeyStore(config.data_dir)
    authenticator = (
        Authenticator(keys, skew_seconds=config.clock_skew_seconds) if config.auth else None
    )
    metrics = Metrics(engine)
    native = NativeAPI(
        engine, authenticator, metrics.observe, ByteBudget(config.max_inflight_bytes)
    )

    inlong = _inlong_facade(config, engine, native.budget)
    if inlong is not None:
        metrics.registry.register(inlong.collector())
    sls, shipping = _sls_facade(config, engine, keys, native.budget, metrics)
    tls = TLSFacade(
        engine,
        verifier=V4Verifier(keys.secret, skew_seconds=config.clock_skew_seconds)
        if config.auth
        else None,
        observe=metrics.observe,
        budget=native.budget,
    )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def not_found(request: Request, exc: Exception) -> Response:
        error = ServiceError(ErrorCode.NOT_FOUND, f"no such resource: {request.url.path}")
        return error_response(error, new_request_id())

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        error = ServiceError(ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed")
        return error_response(error, new_request_id())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if inlong is not None:
            await inlong.start()
        try:
            yield
        finally:
            try:
                if inlong is not None:
                    await inlong.stop()
            finally:
                shipping.close()
                sls.documents.close()
                engine.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route(PREFIX + "/openapi.json", openapi, methods=["GET"]),
            *native.routes(),
            *(console.routes() if config.console else []),
            *(inlong.routes() if inlong is not None else []),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )
    app.add_middleware(TLSDispatch, tls=tls)
    app.add_middleware(SlsDispatch, sls=sls)
    app.add_middleware(_Timing)
    return Server(config, engine, keys, app, inlong, shipping)


def _inlong_facade(config: ServerConfig, engine: Engine, budget: ByteBudget) -> InLongFacade | None:
    if config.inlong_port < 0:
        return None
    return InLongFacade(
        engine,
        host=config.host,
        port=config.inlong_port,
        auto_create=config.inlong_auto_create,
        advertise_host=config.inlong_advertise_host,
        max_connections=config.inlong_max_connections,
        numeric_ids=config.inlong_numeric_ids,
        budget=budget,
    )


def _sls_facade(
    config: ServerConfig, engine: Engine, keys: AccessKeyStore, budget: ByteBudget, metrics: Metrics
) -> tuple[SlsFacade, Shipping]:
    documents = DocumentStore(config.data_dir / "documents.db", clock=engine.clock)
    engine.on_delete(documents.drop)  # whichever facade deletes a project or logstore
    shipping = Shipping(
        engine, documents, Path(config.shipping_dir or config.data_dir / "shipping")
    )
    shipping.start()
    verifier = (
        SignatureVerifier(keys.secret, skew_seconds=config.clock_skew_seconds)
        if config.auth
        else None
    )
    base_hosts = [*config.sls_base_hosts.split(","), config.host]
    sls = SlsFacade(
        engine,
        documents,
        verifier=verifier,
        base_hosts=[h for h in base_hosts if h not in ("", "0.0.0.0", "::")],
        budget=budget,
        observe=metrics.observe,
    )
    return sls, shipping


def create_app(config: ServerConfig) -> Starlette:
    return build_server(config).app
