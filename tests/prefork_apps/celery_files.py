"""Where the celery app of the tests keeps its broker queue and its results: files
in one directory, shared by the worker and the test that sends the tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def settings(directory: Path) -> dict[str, Any]:
    """Broker and result backend in ``directory`` (shared with the test's client)."""
    queue = directory / "queue"
    processed = directory / "processed"
    results = directory / "results"
    control = directory / "control"  # kombu's default is ./control, in the working dir
    for path in (queue, processed, results, control):
        path.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "control_folder": str(control),
        },
        "result_backend": f"file://{results}",
        "broker_connection_retry_on_startup": True,
        "worker_enable_remote_control": False,
    }
