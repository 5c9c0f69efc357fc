"""Server settings, from a TOML file, ``LOGHARBOR_*`` environment variables and
command-line options (in rising order of precedence).

Example file::

    [server]
    data_dir = "/var/lib/logharbor"
    host = "127.0.0.1"
    port = 8480
    auth = true
    max_body_bytes = 10485760
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8480
ENV_PREFIX = "LOGHARBOR_"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and where it came from."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path = Path("logharbor-data")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    auth: bool = True
    console: bool = True  # the web console at /console/
    max_body_bytes: int = 10 << 20
    max_raw_bytes: int = 50 << 20
    max_group_logs: int = 1_000_000  # logs in one log group
    max_inflight_bytes: int = 512 << 20  # request bodies held at once; beyond: 503
    retention_interval: float = 60.0
    clock_skew_seconds: int = 900
    segment_bytes: int = 128 << 20
    segment_seconds: float = 3600.0  # also sealed once its oldest log group is this old
    compact_level: int = 3  # zstd level of compacted segments; 0: keep them as written
    max_pending_bytes: int = 256 << 20
    ingest_workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    query_timeout: float = 30.0  # seconds
    query_max_range_days: int = 3650
    query_max_concurrency: int = 4
    query_memory_limit: str = "1GB"  # per logstore index
    query_cache_bytes: int = 256 << 20  # columns of sealed log groups kept for queries
    query_max_answer_bytes: int = 256 << 20  # an answer's memory in the server, about
    log_level: str = "info"
    # InLong facade (docs/inlong.md): DataProxy TCP port (-1: off, 0: pick a free one)
    inlong_port: int = -1
    inlong_auto_create: bool = False  # create a group's project and stream's logstore on use
    inlong_advertise_host: str = ""  # the address discovery hands out; "": the one reached
    inlong_max_connections: int = 1024
    # binary frames addressed by groupIdNum/streamIdNum: "1=shop_web,1.1=access,..."
    inlong_numeric_ids: str = ""
    # SLS facade (docs/sls.md): Host names whose subdomains name projects
    # (comma-separated; the listening host is added), and where shippers deliver
    sls_base_hosts: str = "127.0.0.1,localhost"
    shipping_dir: str = ""  # "": <data_dir>/shipping


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = {f.name: f.type for f in fields(ServerConfig)}[name]
    try:
        if kind == "Path":
            return Path(str(value)).expanduser()
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: invalid value {value!r} for {name} ({kind})") from None


def _apply(config: ServerConfig, values: Mapping[str, Any], source: str) -> ServerConfig:
    known = {f.name for f in fields(ServerConfig)}
    changes = {}
    for key, value in values.items():
        name = key.replace("-", "_").lower()
        if name not in known:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        if value is not None:
            changes[name] = _coerce(name, value, source)
    return replace(config, **changes)


def load_config(
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Defaults, then the file, then the environment, then ``overrides`` (CLI options)."""
    env = os.environ if env is None else env
    config = ServerConfig()
    config_file = config_file or (
        Path(env[f"{ENV_PREFIX}CONFIG"]) if env.get(f"{ENV_PREFIX}CONFIG") else None
    )
    if config_file is not None:
        try:
            document = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
        section = document.get("server", document)
        config = _apply(config, section, str(config_file))
    from_env = {
        name: env[ENV_PREFIX + name.upper()]
        for name in (f.name for f in fields(ServerConfig))
        if ENV_PREFIX + name.upper() in env
    }
    if f"{ENV_PREFIX}NO_AUTH" in env:
        from_env["auth"] = str(not _coerce("auth", env[f"{ENV_PREFIX}NO_AUTH"], "environment"))
    config = _apply(config, from_env, "environment")
    config = _apply(config, overrides or {}, "command line")
    _check(config)
    return config


def _check(config: ServerConfig) -> None:
    """Settings with a syntax of their own, checked before anything starts."""
    if config.inlong_numeric_ids:
        from .compat.inlong.ids import NumericIds  # only when set: it loads the engine

        NumericIds.parse(config.inlong_numeric_ids)
