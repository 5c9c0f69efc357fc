"""The LogHarbor server: one ASGI application with a facade per protocol."""

from .app import Server, build_server, create_app
from .config import ConfigError, ServerConfig, load_config

__all__ = ["ConfigError", "Server", "ServerConfig", "build_server", "create_app", "load_config"]
