"""The Apache InLong facade (docs/inlong.md, ../shared/specs/inlong.md): InLong
DataProxy SDKs discover LogHarbor through ``getIpList`` and send over the
DataProxy TCP protocol or the HTTP source; batches land in the logstore named
after their stream, in the project named after their group (numeric ids map to
those names through ``inlong_numeric_ids``)."""

from __future__ import annotations

from starlette.routing import Route

from ....engine import Engine
from ...http import ByteBudget
from .ids import NumericIds
from .listener import DataProxyListener, ListenerStatistics
from .metrics import ListenerCollector
from .routes import InLongRoutes
from .service import InLongService

__all__ = [
    "DataProxyListener",
    "InLongFacade",
    "InLongService",
    "ListenerCollector",
    "ListenerStatistics",
    "NumericIds",
]


class InLongFacade:
    """Routes for the app, and the TCP listener to run in the app's event loop."""

    def __init__(
        self,
        engine: Engine,
        *,
        host: str,
        port: int,
        auto_create: bool = False,
        advertise_host: str = "",
        max_connections: int = 1024,
        numeric_ids: str = "",
        budget: ByteBudget,
    ) -> None:
        ids = NumericIds.parse(numeric_ids)
        self.service = InLongService(engine, auto_create=auto_create)
        max_pending = engine.config.max_pending_bytes

        def load() -> int:  # percent of the write queue in use
            return engine.statistics().pending_bytes * 100 // max(1, max_pending)

        self.listener = DataProxyListener(
            self.service,
            host=host,
            port=port,
            max_connections=max_connections,
            load=load,
            numeric_ids=ids,
        )
        self._routes = InLongRoutes(
            self.service,
            tcp_port=lambda: self.listener.port,
            advertise_host=advertise_host,
            max_body_bytes=engine.limits.max_body_bytes,
            budget=budget,
        )

    def routes(self) -> list[Route]:
        return self._routes.routes()

    def collector(self) -> ListenerCollector:
        """The listener's metrics, for the app's Prometheus registry."""
        return ListenerCollector(self.listener, self.service)

    def bind(self) -> int:
        """Bind the TCP port now; returns it (0 in the settings picks a free one)."""
        return self.listener.bind()

    @property
    def port(self) -> int:
        return self.listener.port

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()
