"""The ``logharbor`` command line: run a server, manage resources, write and read logs.

Client commands find the server and key from options, then ``LOGHARBOR_ENDPOINT``,
``LOGHARBOR_ACCESS_KEY_ID`` and ``LOGHARBOR_ACCESS_KEY_SECRET``, then the root key in a
local data directory (``--data-dir``, default ``./logharbor-data``), so that they work
right after ``make serve`` in the same folder.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .engine.index.config import DEFAULT_TOKENS, KEY_TYPES
from .server.config import DEFAULT_PORT, ConfigError, load_config

app = typer.Typer(help="LogHarbor: a self-hosted log service.", no_args_is_help=True)
project_app = typer.Typer(help="Create, list and delete projects.", no_args_is_help=True)
logstore_app = typer.Typer(help="Create, list and delete logstores.", no_args_is_help=True)
index_app = typer.Typer(
    help="Set, show and delete a logstore's index configuration.", no_args_is_help=True
)
app.add_typer(project_app, name="project")
app.add_typer(logstore_app, name="logstore")
app.add_typer(index_app, name="index")

console = Console()
errors = Console(stderr=True)

Endpoint = Annotated[str, typer.Option(envvar="LOGHARBOR_ENDPOINT", help="Server URL")]
KeyId = Annotated[str | None, typer.Option(envvar="LOGHARBOR_ACCESS_KEY_ID", help="Access key id")]
KeySecret = Annotated[
    str | None,
    typer.Option(envvar="LOGHARBOR_ACCESS_KEY_SECRET", help="Access key secret"),
]
KeysFrom = Annotated[
    Path, typer.Option("--data-dir", help="Read the root key from this server data directory")
]
DEFAULT_ENDPOINT = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_DATA_DIR = Path("logharbor-data")


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
    no_console: Annotated[
        bool, typer.Option("--no-console", help="Do not serve the web console at /console/")
    ] = False,
    max_body_bytes: Annotated[int | None, typer.Option(help="Largest request body")] = None,
    max_raw_bytes: Annotated[
        int | None, typer.Option(help="Largest decompressed log group")
    ] = None,
    max_group_logs: Annotated[int | None, typer.Option(help="Most logs in one log group")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error")] = None,
    inlong_port: Annotated[
        int | None,
        typer.Option(help="InLong DataProxy TCP port; 0 picks one, -1 off [LOGHARBOR_INLONG_PORT]"),
    ] = None,
) -> None:
    """Run the server on its embedded storage."""
    from .server.runner import serve as run

    overrides = {
        "data_dir": data_dir,
        "host": host,
        "port": port,
        "max_body_bytes": max_body_bytes,
        "max_raw_bytes": max_raw_bytes,
        "max_group_logs": max_group_logs,
        "log_level": log_level,
        "inlong_port": inlong_port,
        "auth": False if no_auth else None,
        "console": False if no_console else None,
    }
    try:
        settings = load_config(config_file=config, overrides=overrides)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    run(settings)


# ------------------------------------------------------------------ client side


def _client(endpoint: str, key_id: str | None, secret: str | None, data_dir: Path) -> Any:
    from . import LogClient

    if not (key_id and secret):
        keys_file = data_dir / "access-keys.json"
        if keys_file.exists():
            document = json.loads(keys_file.read_text())
            root = next(k for k in document["keys"] if k.get("root"))
            key_id, secret = root["accessKeyId"], root["accessKeySecret"]
    return LogClient(endpoint, access_key_id=key_id, access_key_secret=secret)


def _fail(exc: Exception) -> typer.Exit:
    code = getattr(exc, "code", type(exc).__name__)
    errors.print(f"[red]error[/red] {code}: {getattr(exc, 'message', exc)}")
    return typer.Exit(1)


def _run(func: Any) -> Any:
    from . import LogHarborError

    try:
        return func()
    except LogHarborError as exc:
        raise _fail(exc) from None


def _when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


@project_app.command("create")
def project_create(
    name: str,
    description: Annotated[str, typer.Option(help="What the project is for")] = "",
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Create a project."""
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        project = _run(lambda: client.create_project(name, description))
    console.print(f"created project {project.name}")


@project_app.command("list")
def project_list(
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """List projects."""
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        projects = _run(lambda: client.list_projects(size=500))
    table = Table("project", "description", "created")
    for project in projects:
        table.add_row(project.name, project.description, _when(project.create_time))
    console.print(table)


@project_app.command("delete")
def project_delete(
    name: str,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Delete a project with all its logstores and their data."""
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        _run(lambda: client.delete_project(name))
    console.print(f"deleted project {name}")


@logstore_app.command("create")
def logstore_create(
    project: str,
    name: str,
    ttl: Annotated[int, typer.Option(help="Days to keep data")] = 30,
    shards: Annotated[int, typer.Option(help="Number of shards")] = 2,
    auto_split: Annotated[bool, typer.Option(help="Split hot shards automatically")] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Create a logstore."""
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        store = _run(
            lambda: client.create_logstore(
                project, name, ttl=ttl, shard_count=shards, auto_split=auto_split
            )
        )
    console.print(f"created logstore {project}/{store.name}: {store.shard_count} shards")


@logstore_app.command("list")
def logstore_list(
    project: str,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """List the logstores of a project."""
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        stores = _run(lambda: client.list_logstores(project, size=500))
    table = Table("logstore", "ttl (days)", "shards", "auto-split", "created")
    for store in stores:
        table.add_row(
            store.name,
            str(store.ttl),
            str(store.shard_count),
            "yes" if store.auto_split else "no",
            _when(store.create_time),
        )
    console.print(table)


@logstore_app.command("delete")
def logstore_delete(
    project: str,
    name: str,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Delete a logstore and its data."""
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        _run(lambda: client.delete_logstore(project, name))
    console.print(f"deleted logstore {project}/{name}")


@app.command()
def shards(
    project: str,
    logstore: str,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Show a logstore's shards: hash ranges, status and lineage."""
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        shard_list = _run(lambda: client.list_shards(project, logstore))
    table = Table("shard", "status", "begin key", "end key", "parents", "children")
    for shard in shard_list:
        table.add_row(
            str(shard.shard_id),
            shard.status,
            shard.begin_key,
            shard.end_key,
            ",".join(map(str, shard.parents)),
            ",".join(map(str, shard.children)),
        )
    console.print(table)


def _line_contents(line: str) -> list[tuple[str, str]]:
    """A JSON object becomes its fields; any other line becomes ``message``."""
    stripped = line.rstrip("\r\n")
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except ValueError:
            document = None
        if isinstance(document, dict):
            return [
                (str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
                for k, v in document.items()
            ]
    return [("message", stripped)]


def _batches(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in lines:
        if line.strip():
            batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@app.command()
def put(
    project: str,
    logstore: str,
    fields: Annotated[
        list[str] | None, typer.Argument(help="key=value contents of one log; none: read stdin")
    ] = None,
    topic: Annotated[str, typer.Option(help="Topic of the log group")] = "",
    source: Annotated[str, typer.Option(help="Source of the log group")] = "",
    batch: Annotated[int, typer.Option(help="Lines per log group when reading stdin")] = 1000,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Write one log from key=value arguments, or every line of stdin (JSON lines
    become fields, other lines a ``message`` field)."""
    from . import LogItem

    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        if fields:
            pairs = []
            for item in fields:
                key, sep, value = item.partition("=")
                if not sep:
                    raise typer.BadParameter(f"{item!r} is not key=value")
                pairs.append((key, value))
            groups: Iterator[list[Any]] = iter([[LogItem(pairs)]])
        else:
            groups = (
                [LogItem(_line_contents(line)) for line in lines]
                for lines in _batches(iter(sys.stdin), batch)
            )
        written = 0
        for logs in groups:
            _run(
                lambda logs=logs: client.put_logs(
                    project, logstore, logs, topic=topic, source=source
                )
            )
            written += len(logs)
    errors.print(f"wrote {written} logs to {project}/{logstore}")


def _render(group: Any, shard: int, as_json: bool) -> Iterator[str]:
    decoded = group.log_group
    for log in decoded.logs:
        if as_json:
            yield json.dumps(
                {
                    "shard": shard,
                    "time_ns": log.time_ns,
                    "topic": decoded.topic,
                    "source": decoded.source,
                    "contents": dict(log.contents),
                },
                ensure_ascii=False,
            )
        else:
            stamp = datetime.fromtimestamp(log.time_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
            fields = " ".join(f"{k}={v}" for k, v in log.contents)
            yield f"{stamp} [{shard}] {decoded.topic} {fields}".replace("  ", " ")


def _start(value: str) -> Any:
    if value in ("begin", "end"):
        return value
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter("--from takes begin, end or Unix seconds") from None


@app.command()
def pull(
    project: str,
    logstore: str,
    shard: Annotated[int | None, typer.Option(help="One shard; default: all")] = None,
    start: Annotated[str, typer.Option("--from", help="begin, end or Unix seconds")] = "begin",
    limit: Annotated[int, typer.Option(help="Stop after this many log groups per shard")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per log")] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Print the logs stored in a logstore's shards, oldest first."""
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        shard_ids = (
            [shard]
            if shard is not None
            else [s.shard_id for s in _run(lambda: client.list_shards(project, logstore))]
        )
        for shard_id in shard_ids:
            cursor = _run(
                lambda shard_id=shard_id: client.get_cursor(
                    project, logstore, shard_id, _start(start)
                )
            )
            remaining = limit
            while remaining > 0:
                count = min(remaining, 1000)
                result = _run(
                    lambda shard_id=shard_id, cursor=cursor, count=count: client.pull_logs(
                        project, logstore, shard_id, cursor, count=count
                    )
                )
                for group in result.log_groups:
                    for line in _render(group, shard_id, as_json):
                        print(line)
                remaining -= result.count
                if result.count == 0:
                    break
                cursor = result.next_cursor


@app.command()
def tail(
    project: str,
    logstore: str,
    start: Annotated[str, typer.Option("--from", help="begin, end or Unix seconds")] = "end",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per log")] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Follow every shard of a logstore and print logs as they arrive (Ctrl-C stops).
    After a split or a merge, the new shards are followed from their beginning."""
    lines: queue.Queue[str | BaseException] = queue.Queue(maxsize=10_000)
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        followed: set[int] = set()
        lock = threading.Lock()

        def follow(shard_id: int, origin: Any) -> None:
            try:
                for group in client.tail(project, logstore, shard_id, start=origin):
                    for line in _render(group, shard_id, as_json):
                        lines.put(line)
                for child in _children(shard_id):
                    launch(child, "begin")
            except BaseException as exc:  # reported by the printing thread
                lines.put(exc)

        def _children(shard_id: int) -> list[int]:
            shard_list = client.list_shards(project, logstore)
            return [c for s in shard_list if s.shard_id == shard_id for c in s.children]

        def launch(shard_id: int, origin: Any) -> None:
            with lock:
                if shard_id in followed:
                    return
                followed.add(shard_id)
            threading.Thread(target=follow, args=(shard_id, origin), daemon=True).start()

        for shard in _run(lambda: client.list_shards(project, logstore)):
            if shard.writable or start != "end":
                launch(shard.shard_id, _start(start))
        try:
            while True:
                item = lines.get()
                if isinstance(item, BaseException):
                    if isinstance(item, Exception):
                        raise _fail(item)
                    raise item
                print(item, flush=True)
        except KeyboardInterrupt:
            pass


def _time_bound(value: str, now: float) -> float:
    """Unix seconds, or relative: ``15m``, ``2h``, ``7d`` ago, or ``now``."""
    if value == "now":
        return now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return now - int(value[:-1]) * units[value[-1]]
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: use Unix seconds, now, or 15m, 2h, 7d") from None


@index_app.command("set")
def index_set(
    project: str,
    logstore: str,
    config: Annotated[
        str | None,
        typer.Argument(help="The configuration as JSON, @FILE, or - for standard input"),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(help="A field and its type, NAME:TYPE (text, long, double, json); repeat"),
    ] = None,
    case_sensitive: Annotated[bool, typer.Option(help="Full text is case-sensitive")] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Index a logstore (its kept data too), or change its index.

    Without CONFIG: full text with SLS's default separators, plus the --key fields,
    e.g. ``logharbor index set shop access --key status:text --key latency:long``.
    """
    document = _index_document(config, key or [], case_sensitive)
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:

        def apply() -> str:
            from . import LogHarborError

            try:
                client.create_index(project, logstore, document)
                return "created"
            except LogHarborError as exc:
                if exc.code != "IndexAlreadyExist":
                    raise
            client.update_index(project, logstore, document)
            return "updated"

        done = _run(apply)
    console.print(f"{done} the index of {project}/{logstore}")


def _index_document(config: str | None, keys: list[str], case_sensitive: bool) -> dict[str, Any]:
    if config is not None:
        if keys:
            raise typer.BadParameter("give either CONFIG or --key, not both")
        if config == "-":
            text = sys.stdin.read()
        elif config.startswith("@"):
            text = Path(config[1:]).read_text()
        else:
            text = config
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise typer.BadParameter(f"CONFIG is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise typer.BadParameter("CONFIG must be a JSON object")
        return document
    fields: dict[str, Any] = {}
    for entry in keys:
        name, _, kind = entry.rpartition(":")
        if not name or kind not in KEY_TYPES:
            kinds = ", ".join(KEY_TYPES)
            raise typer.BadParameter(f"--key {entry!r}: write NAME:TYPE, TYPE one of {kinds}")
        fields[name] = {"type": kind}
    line = {"token": list(DEFAULT_TOKENS), "caseSensitive": case_sensitive}
    return {"line": line, "keys": fields}


@index_app.command("show")
def index_show(
    project: str,
    logstore: str,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Print the index configuration (JSON) and how far indexing is behind."""
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        answer = _run(lambda: client.get_index(project, logstore))
    console.print_json(json.dumps(answer.get("config", {})))
    behind = sum(int(shard.get("behindLogGroups", 0)) for shard in answer.get("lag", []))
    console.print(f"log groups not yet searchable: {behind}")


@index_app.command("delete")
def index_delete(
    project: str,
    logstore: str,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Stop indexing a logstore and delete its index data (the logs stay)."""
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        _run(lambda: client.delete_index(project, logstore))
    console.print(f"deleted the index of {project}/{logstore}")


@app.command()
def query(
    project: str,
    logstore: str,
    text: Annotated[str, typer.Argument(help="search [| SQL], e.g. 'status: 500 | select ...'")],
    start: Annotated[str, typer.Option("--from", help="Unix seconds, or 15m, 2h, 7d ago")] = "15m",
    end: Annotated[str, typer.Option("--to", help="Unix seconds, or now")] = "now",
    line: Annotated[int, typer.Option(help="Logs to show")] = 20,
    reverse: Annotated[bool, typer.Option(help="Newest first")] = False,
    histogram: Annotated[bool, typer.Option(help="Show matches per time bucket")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    access_key_id: KeyId = None,
    access_key_secret: KeySecret = None,
    data_dir: KeysFrom = DEFAULT_DATA_DIR,
) -> None:
    """Search a logstore; with '| SQL', show the analysis as a table."""
    import time as _time

    now = _time.time()
    window = {"start": _time_bound(start, now), "end": _time_bound(end, now)}
    with _client(endpoint, access_key_id, access_key_secret, data_dir) as client:
        if histogram:
            result = _run(lambda: client.histogram(project, logstore, text, **window))
            peak = max((b.count for b in result.buckets), default=0) or 1
            for bucket in result.buckets:
                bar = "█" * round(40 * bucket.count / peak)
                console.print(f"{_when(bucket.start)}  {bucket.count:>9}  [cyan]{bar}[/cyan]")
            console.print(f"total {result.total}" + ("" if result.complete else " (incomplete)"))
            return
        answer = _run(
            lambda: client.query(project, logstore, text, line=line, reverse=reverse, **window)
        )
    if answer.has_sql:
        if as_json:
            for record in answer.records():
                print(json.dumps(record, ensure_ascii=False, default=str))
            return
        table = Table(*answer.keys)
        for row in answer.rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)
    else:
        for log in answer.logs:
            if as_json:
                print(
                    json.dumps(
                        {
                            "time_ns": log.time_ns,
                            "shard": log.shard_id,
                            "topic": log.topic,
                            "contents": dict(log.contents),
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                stamp = datetime.fromtimestamp(log.time_ns / 1e9, UTC).strftime("%H:%M:%S.%f")
                fields = " ".join(f"{k}={v}" for k, v in log.contents)
                console.print(f"[dim]{stamp}[/dim] {fields}", highlight=False)
        if not as_json:
            errors.print(
                f"{len(answer.logs)} of {answer.matched} matching logs, {answer.elapsed_ms} ms"
            )
    if not answer.complete:
        errors.print("[yellow]the index is still catching up; results may be incomplete[/yellow]")


def main() -> None:
    app()
