"""The ``logharbor`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .server.config import ConfigError, load_config

app = typer.Typer(help="LogHarbor: a self-hosted log service.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """LogHarbor: a self-hosted log service."""


@app.command()
def serve(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where data lives [env LOGHARBOR_DATA_DIR]")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [LOGHARBOR_HOST]")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port; 0 picks a free one [LOGHARBOR_PORT]")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file [LOGHARBOR_CONFIG]")] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept unsigned requests (local play only)")
    ] = False,
    max_body_bytes: Annotated[int | None, typer.Option(help="Largest request body")] = None,
    max_raw_bytes: Annotated[
        int | None, typer.Option(help="Largest decompressed log group")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error")] = None,
) -> None:
    """Run the server on its embedded storage."""
    from .server.runner import serve as run

    overrides = {
        "data_dir": data_dir,
        "host": host,
        "port": port,
        "max_body_bytes": max_body_bytes,
        "max_raw_bytes": max_raw_bytes,
        "log_level": log_level,
        "auth": False if no_auth else None,
    }
    try:
        settings = load_config(config_file=config, overrides=overrides)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    run(settings)


def main() -> None:
    app()
