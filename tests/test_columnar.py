"""Sealed log groups are stored column by column, and rebuilt byte for byte.

``logharbor.engine.columnar`` turns a serialized LogGroup into one stream per key
(plus times, nanoseconds and a key sequence per log) and back.  It is exact or
declines: a group it cannot rebuild byte for byte gets None from ``pack`` and is
stored as it was.  The C speedups and the Python reference must agree on every
input, crafted or mutated, and a corrupt body must be an error, never a crash or
wrong bytes of the right length.
"""

from __future__ import annotations

import random
import tracemalloc

import pytest
import zstandard

from groups import log_group_bytes
from logharbor._native import speedups
from logharbor.engine import columnar
from logharbor.protocol.codec import encode_varint, length_delimited

ZSTD = zstandard.ZstdCompressor(level=3)


def access_log_group(count: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    return log_group_bytes(
        *(
            {
                "method": rng.choice(["GET", "POST"]),
                "status": rng.choice(["200", "404", "500"]),
                "request_id": f"{rng.getrandbits(64):016x}",
                "message": f"served in {rng.randrange(900)}ms",
            }
            for _ in range(count)
        ),
        topic="nginx",
        source="10.0.0.1",
        tags={"host": "web-1"},
        time_ns=123_456_789,
    )


def implementations() -> list[tuple[str, object, object]]:
    found = [("python", columnar._pack_python, columnar._unpack_python)]
    if speedups is not None:
        found.append(("c", speedups.columnar_pack, speedups.columnar_unpack))
    return found


@pytest.fixture(params=implementations(), ids=lambda impl: impl[0])
def codec(request: pytest.FixtureRequest) -> tuple[object, object]:
    _name, pack, unpack = request.param
    return pack, unpack


def roundtrip(codec: tuple[object, object], raw: bytes) -> bytes | None:
    pack, unpack = codec
    body = pack(raw)  # type: ignore[operator]
    if body is None:
        return None
    return unpack(body, len(raw))  # type: ignore[operator,no-any-return]


def test_an_access_log_group_is_rebuilt_exactly_and_stored_smaller_than_zstd() -> None:
    raw = access_log_group(2000)
    stored = columnar.pack(raw, ZSTD)
    assert stored is not None
    assert columnar.unpack(stored, len(raw)) == raw
    assert len(stored) < 0.8 * len(ZSTD.compress(raw))


@pytest.mark.parametrize(
    "raw",
    [
        log_group_bytes({"a": "1"}),  # no topic, source, tags or nanoseconds
        log_group_bytes({"k": "v", "x": ""}, {"x": "1", "k": "2"}, {}),  # mixed key sequences
        log_group_bytes({"é": "ünïcode ✓", "": "empty key"}, time=0),
        log_group_bytes({"big": "x" * 300}, time=2**32 - 1, time_ns=999_999_999),
        # a key repeated inside one log (protobuf allows it)
        length_delimited(0x0A, b"\x08\x01" + length_delimited(0x12, b"\x0a\x01k\x12\x011") * 2),
    ],
    ids=["minimal", "mixed-schemas", "unicode", "large-values", "repeated-key"],
)
def test_shapes_are_rebuilt_exactly(codec: tuple[object, object], raw: bytes) -> None:
    assert roundtrip(codec, raw) == raw


def test_times_may_go_back_and_forth(codec: tuple[object, object]) -> None:
    logs = [
        length_delimited(
            0x0A, b"\x08" + encode_varint(t) + length_delimited(0x12, b"\x0a\x01k\x12\x00")
        )
        for t in (1_700_000_000, 5, 2**32 - 1, 0, 1_700_000_000)
    ]
    raw = b"".join(logs)
    assert roundtrip(codec, raw) == raw


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # no logs: nothing to gain
        length_delimited(0x1A, b"topic only"),
        # Time_ns before the contents: valid protobuf, not the canonical order
        length_delimited(
            0x0A, b"\x08\x01\x25\x01\x00\x00\x00" + length_delimited(0x12, b"\x0a\x01k\x12\x01v")
        ),
        # an unknown field inside a Log
        length_delimited(0x0A, b"\x08\x01\x30\x05"),
        # a non-minimal varint for the time
        length_delimited(0x0A, b"\x08\x81\x00"),
        # logs in two runs, split by the topic
        length_delimited(0x0A, b"\x08\x01")
        + length_delimited(0x1A, b"t")
        + length_delimited(0x0A, b"\x08\x02"),
        # Time past uint32
        length_delimited(0x0A, b"\x08" + encode_varint(2**32)),
    ],
    ids=[
        "empty",
        "no-logs",
        "ns-first",
        "unknown-field",
        "long-varint",
        "two-runs",
        "time-overflow",
    ],
)
def test_groups_that_cannot_be_rebuilt_exactly_are_declined(
    codec: tuple[object, object], raw: bytes
) -> None:
    pack, _unpack = codec
    assert pack(raw) is None  # type: ignore[operator]
    assert columnar.pack(raw, ZSTD) is None


@pytest.mark.skipif(speedups is None, reason="the C speedups are not built")
def test_c_and_python_agree_on_mutated_groups_and_bodies() -> None:
    rng = random.Random(5)
    groups = [access_log_group(50, seed) for seed in range(4)]
    bodies = [columnar._pack_python(g) for g in groups]
    for i in range(2000):
        raw = bytearray(groups[i % 4])
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        mutated = bytes(raw[: rng.randrange(len(raw) // 2, len(raw) + 1)])
        assert speedups.columnar_pack(mutated) == columnar._pack_python(mutated)

        body = bytearray(bodies[i % 4])  # type: ignore[arg-type]
        body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        if i % 3 == 0:
            body = body[: rng.randrange(len(body))]
        results = []
        for unpack in (speedups.columnar_unpack, columnar._unpack_python):
            try:
                results.append(unpack(bytes(body), len(groups[i % 4])))
            except ValueError:
                results.append("error")
        assert results[0] == results[1]


def test_a_corrupt_payload_is_an_error(codec: tuple[object, object]) -> None:
    raw = access_log_group(100)
    stored = columnar.pack(raw, ZSTD)
    assert stored is not None
    with pytest.raises(columnar.ColumnarError):
        columnar.unpack(stored[:-5], len(raw))  # truncated zstd frame
    with pytest.raises(columnar.ColumnarError):
        columnar.unpack(stored, len(raw) + 1)  # not the declared size
    _pack, unpack = codec
    body = columnar.pack_body(raw)
    assert body is not None
    with pytest.raises(ValueError):
        unpack(body + b"\x00", len(raw))  # type: ignore[operator]
    with pytest.raises(ValueError):
        unpack(b"\x02" + body[1:], len(raw))  # type: ignore[operator]  # unknown version


def test_groups_with_very_many_distinct_keys_are_declined(codec: tuple[object, object]) -> None:
    # the C lookups are linear in the keys of a group: past 256 it is not worth it
    wide = log_group_bytes({f"key{i}": "v" for i in range(257)})
    pack, _unpack = codec
    assert pack(wide) is None  # type: ignore[operator]
    narrow = log_group_bytes({f"key{i}": "v" for i in range(256)})
    assert roundtrip(codec, narrow) == narrow


def test_a_longer_than_needed_logs_length_or_tag_is_declined_or_exact(
    codec: tuple[object, object],
) -> None:
    # valid protobuf that ingest accepts, but a rebuild would write the short form
    log = b"\x08\x01" + length_delimited(0x12, b"\x0a\x01k\x12\x01v")
    long_length = b"\x0a" + bytes([len(log) | 0x80, 0x00]) + log
    long_tag = b"\x8a\x00" + encode_varint(len(log)) + log
    pack, _unpack = codec
    assert pack(long_length) is None  # type: ignore[operator]
    for raw in (long_length, long_tag, long_tag + length_delimited(0x0A, log)):
        assert roundtrip(codec, raw) in (None, raw)
        stored = columnar.pack(raw, ZSTD)
        assert stored is None or columnar.unpack(stored, len(raw)) == raw


def test_groups_with_unknown_group_fields_are_declined(codec: tuple[object, object]) -> None:
    raw = length_delimited(0x0A, b"\x08\x01") + b"\x0b\x0c"  # field 1 as a start/end group
    pack, _unpack = codec
    assert pack(raw) is None  # type: ignore[operator]


def body(*varints: int, tail: bytes = b"") -> bytes:
    return b"".join(encode_varint(v) for v in varints) + tail


def test_a_body_repeating_a_long_key_cannot_blow_up_memory(codec: tuple[object, object]) -> None:
    """A damaged body whose schema names one 10 kB key 5000 times would rebuild
    50 MB from 15 kB: it is refused as soon as a log outgrows the declared size."""
    name = b"k" * 10_000
    repeats = 5_000
    header = body(1, 1, 0, 0, 1, len(name), tail=name)
    header += body(1, 0, repeats, *([0] * repeats))  # one schema: key 0, 5000 times
    streams = body(0) + body(0)  # schema id 0; time delta 0
    lengths = body(*([0] * repeats))  # 5000 empty values
    sizes = body(1, 1, 0, len(lengths), 0)
    damaged = header + sizes + streams + lengths
    _pack, unpack = codec
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            unpack(damaged, 1000)  # type: ignore[operator]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # (the C code's buffers are not traced; they are bounded alike)


def test_a_varint_past_64_bits_in_a_body_is_an_error(codec: tuple[object, object]) -> None:
    good = columnar.pack_body(log_group_bytes({"a": "1"}))
    assert good is not None
    _pack, unpack = codec
    # version 1 written as a ten-byte varint whose last byte carries bit 64
    with pytest.raises(ValueError):
        unpack(b"\x81" + b"\x80" * 8 + b"\x02" + good[1:], 100)  # type: ignore[operator]
