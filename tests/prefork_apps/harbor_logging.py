"""The root logger's ``LogHarborHandler`` for the pre-fork apps, configured from the
environment the test sets: ``LOGHARBOR_TEST_ENDPOINT``, ``LOGHARBOR_TEST_PROJECT``,
``LOGHARBOR_TEST_ACCESS_KEY_ID`` and ``LOGHARBOR_TEST_ACCESS_KEY_SECRET``.

The linger is longer than any test, so a record reaches the server only when its
process delivers what it holds on the way out: that is what the tests check.
"""

from __future__ import annotations

import logging
import logging.config
import os

from logharbor import BatchPolicy, LogHarborHandler, ProducerConfig

LOGSTORE = "app"
#: The logger of the records the tests count.
APP_LOGGER = "prefork_apps.work"


def configure() -> LogHarborHandler:
    """Ship every record of level INFO and above from the root logger."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "harbor": {
                    "class": "logharbor.LogHarborHandler",
                    "project": os.environ["LOGHARBOR_TEST_PROJECT"],
                    "logstore": LOGSTORE,
                    "endpoint": os.environ["LOGHARBOR_TEST_ENDPOINT"],
                    "access_key_id": os.environ["LOGHARBOR_TEST_ACCESS_KEY_ID"],
                    "access_key_secret": os.environ["LOGHARBOR_TEST_ACCESS_KEY_SECRET"],
                    "config": ProducerConfig(
                        batch=BatchPolicy(linger=600.0), workers=1, name="prefork-test"
                    ),
                }
            },
            "root": {"handlers": ["harbor"], "level": "INFO"},
        }
    )
    (handler,) = (h for h in logging.getLogger().handlers if isinstance(h, LogHarborHandler))
    return handler
