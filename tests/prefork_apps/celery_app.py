"""A celery app for a prefork worker: the task ``log_one`` logs one record and
returns the pool process's pid. Broker and results are files under
``LOGHARBOR_TEST_CELERY_DIR``, so no broker service is needed.

Logging is configured as docs/producer.md says: in the worker's main process (a
``setup_logging`` receiver, so celery does not replace the root handlers), and each
pool process delivers what it holds from ``worker_process_shutdown``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from celery import Celery
from celery.signals import setup_logging, worker_process_shutdown

from logharbor import LogHarborHandler
from prefork_apps.celery_files import settings
from prefork_apps.harbor_logging import APP_LOGGER, configure

app = Celery("prefork_apps")
app.conf.update(settings(Path(os.environ["LOGHARBOR_TEST_CELERY_DIR"])))
log = logging.getLogger(APP_LOGGER)
handler: LogHarborHandler | None = None


@setup_logging.connect
def configure_logging(**kwargs: object) -> None:
    global handler
    handler = configure()


@worker_process_shutdown.connect
def deliver_logs(**kwargs: object) -> None:
    if handler is not None:
        handler.close()


@app.task(name="log_one")
def log_one(index: int) -> int:
    log.info("task", extra={"event": "task", "task": str(index)})
    return os.getpid()
