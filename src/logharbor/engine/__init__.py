"""The LogHarbor engine: catalog, shard logs, group commit, retention. No HTTP here."""

from .commit import QueueFull
from .engine import Engine, EngineConfig
from .ingest import IngestPool, Limits, PreparedGroup, prepare_json, prepare_protobuf
from .types import LogstoreInfo, ProjectInfo, PullResult, PutResult, ShardInfo, ShardStatus

__all__ = [
    "Engine",
    "EngineConfig",
    "IngestPool",
    "Limits",
    "LogstoreInfo",
    "PreparedGroup",
    "ProjectInfo",
    "PullResult",
    "PutResult",
    "QueueFull",
    "ShardInfo",
    "ShardStatus",
    "prepare_json",
    "prepare_protobuf",
]
