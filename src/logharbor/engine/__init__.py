"""The LogHarbor engine: catalog, shard logs, group commit, retention. No HTTP here."""

from .engine import Engine, EngineConfig
from .ingest import Limits, PreparedGroup, prepare_json, prepare_protobuf
from .types import LogstoreInfo, ProjectInfo, PullResult, PutResult, ShardInfo, ShardStatus

__all__ = [
    "Engine",
    "EngineConfig",
    "Limits",
    "LogstoreInfo",
    "PreparedGroup",
    "ProjectInfo",
    "PullResult",
    "PutResult",
    "ShardInfo",
    "ShardStatus",
    "prepare_json",
    "prepare_protobuf",
]
