"""The Volcengine TLS facade (docs/tls.md, ../shared/specs/tls.md): the official
``volcengine`` SDK (TLSService, TLSConsumer, TLSProducer) works against LogHarbor
with only its endpoint and keys changed.  A TLS project is a LogHarbor project,
a topic is a logstore; both are named by the ids of ``engine.resource_ids``."""

from __future__ import annotations

from .facade import TLSDispatch, TLSFacade
from .signing import V4Verifier

__all__ = ["TLSDispatch", "TLSFacade", "V4Verifier"]
