"""Shippers in the engine: what a run delivers, and in how many files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from groups import prepared
from logharbor.engine import Engine, EngineConfig, shipping
from logharbor.engine.documents import DocumentKind, DocumentStore
from logharbor.engine.ingest import Limits, prepare_protobuf
from logharbor.engine.shipping import Shipping
from logharbor.engine.types import NANOS_PER_SECOND
from logharbor.protocol.codec import Compression, encode_varint

T0 = 1_800_000_000


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(
        EngineConfig(
            ingest_workers=0,
            data_dir=tmp_path / "e",
            retention_interval=3600,
            clock=lambda: T0 * NANOS_PER_SECOND,
        )
    )
    eng.create_project("shop")
    eng.create_logstore("shop", "access", shard_count=1)
    yield eng
    eng.close()


@pytest.fixture
def documents(engine: Engine, tmp_path: Path) -> Iterator[DocumentStore]:
    """The documents of a JSON shipper "to-disk" of shop/access, due every second."""
    store = DocumentStore(tmp_path / "documents.db", clock=engine.clock)
    store.create(
        "shop",
        DocumentKind.SHIPPER,
        "access",
        "to-disk",
        {"shipperName": "to-disk", "targetConfiguration": {"bufferInterval": 1}},
    )
    yield store
    store.close()


def test_a_run_writes_a_file_per_budget_of_decoded_data_and_delivers_each_log_once(
    engine: Engine, documents: DocumentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run held every row since the last one in memory (3 log groups of 3 KB
    stored, 2 million logs, took 600 MB); now it writes a file each FILE_COST of
    decoded data, saving its position after each, so memory stays at one file's."""
    for g in range(5):
        logs = [{"n": f"{g}-{i}", "pad": "x" * 1000} for i in range(100)]
        engine.put("shop", "access", prepared(*logs, time=T0)).result()
    monkeypatch.setattr(shipping, "FILE_COST", 300_000)  # two log groups a file (132 kB each)
    ship = Shipping(engine, documents, tmp_path / "out")
    assert ship.run_due(force=True) == 500
    files = sorted((tmp_path / "out").rglob("*.jsonl"))
    assert len(files) == 3  # 2 + 2 + 1 log groups
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(r["n"] for r in rows) == sorted(f"{g}-{i}" for g in range(5) for i in range(100))
    assert ship.run_due(force=True) == 0  # nothing new: nothing twice


def test_keys_and_values_that_are_not_utf8_are_shipped_replaced(
    engine: Engine, documents: DocumentStore, tmp_path: Path
) -> None:
    """A key of b"\\xff" (writes may hold any bytes) stopped a JSON shipper for good."""
    # Log { Time, Contents { Key: b"\xff", Value: b"v\xfe" } }, written by hand:
    # protobuf will not build a string field that is not UTF-8
    log = b"\x08" + encode_varint(T0) + b"\x12\x07\x0a\x01\xff\x12\x02v\xfe"
    raw = b"\x0a" + encode_varint(len(log)) + log
    engine.put("shop", "access", prepare_protobuf(raw, Compression.NONE, None, Limits())).result()
    ship = Shipping(engine, documents, tmp_path / "out")
    assert ship.run_due(force=True) == 1
    (file,) = (tmp_path / "out").rglob("*.jsonl")
    assert json.loads(file.read_text())["\ufffd"] == "v\ufffd"
