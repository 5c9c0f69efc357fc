"""The LogHarbor engine: catalog, shard logs, group commit, retention. No HTTP here."""

from .engine import Engine, EngineConfig
from .commit import QueueFull
from .ingest import IngestPool, Limits, PreparedGroup, prepare_json, prepare_protobuf
from .types import LogstoreInfo, ProjectInfo, PullResult, PutResult, ShardInfo, ShardStatus

__all__ = [
    "Engine",
    "IngestPool",
    "QueueFull",
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
