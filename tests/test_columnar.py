"""Sealed log groups are stored column by column, and rebuilt byte for byte.

``logharbor.engine.columnar`` turns a serialized LogGroup into one stream per key
(plus times, nanoseconds and a key sequence per log) and back.  It is exact or
declines: a group it cannot rebuild byte for byte gets None from ``pack`` and is
stored as it was.  The C speedups and the Python reference must agree on every
input, crafted or mutated, and a corrupt body must be an error, never a crash or
an allocation out of proportion (damage to the values themselves can only give
other values: the shard log's record checksum is what catches that).
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


# ------------------------------------------------------------ typed columns


LIMIT = 1 << 30  # what untyping a section may produce, at most


def stream_of(values: list[bytes]) -> tuple[bytes, bytes]:
    """A column's length and value streams, as a version-1 body holds them."""
    return b"".join(encode_varint(len(v)) for v in values), b"".join(values)


def typers() -> list[tuple[str, object, object]]:
    found = [("python", columnar._type_column_python, columnar._untype_column_python)]
    if speedups is not None:
        found.append(("c", speedups.columnar_type, speedups.columnar_untype))
    return found


@pytest.fixture(params=typers(), ids=lambda impl: impl[0])
def typer(request: pytest.FixtureRequest) -> tuple[object, object]:
    _name, type_column, untype_column = request.param
    return type_column, untype_column


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([b"200", b"0", b"-17", b"999999999999999999", b"-999999999999999999"], columnar.INT),
        ([b"200", b"-0"], columnar.STR),  # "-0" would come back as "0"
        ([b"200", b"007"], columnar.STR),  # a leading zero would be lost
        ([b"1", b"1000000000000000000"], columnar.STR),  # 19 digits: past what is kept
        ([b"1", b"+1"], columnar.STR),
        ([b"0a1b", b"ffff", b"0000"], columnar.HEX),
        ([b"0a1b", b"FFFF"], columnar.STR),  # upper case would come back lower
        ([b"0a1b", b"ff"], columnar.STR),  # not one width
        ([b"abc", b"def"], columnar.STR),  # odd width
        ([b"10.0.0.1", b"255.255.255.255", b"0.0.0.0"], columnar.IPV4),
        ([b"10.0.0.1", b"10.0.0.01"], columnar.STR),  # leading zero
        ([b"10.0.0.1", b"10.0.0.256"], columnar.STR),
        ([b"10.0.0.1", b"10.0.0"], columnar.STR),
        ([b"GET", b"POST"] * 8, columnar.DICT),
        ([b"GET", b"POST"] * 7 + [b"PUT", b"GET"], columnar.STR),  # 3 values, 16 uses
        ([b""] * 8, columnar.DICT),
        ([b"%d" % (i % 256) + b"x" for i in range(256 * 8)], columnar.DICT),
        ([b"%d" % (i % 257) + b"x" for i in range(257 * 8)], columnar.STR),
        ([b"served in 5ms", b"cached", "ünï ✓".encode()], columnar.STR),
        ([b"\xff\x00binary"], columnar.STR),
    ],
    ids=[
        "int",
        "minus-zero",
        "leading-zero",
        "19-digits",
        "plus-sign",
        "hex",
        "upper-hex",
        "hex-widths",
        "odd-hex",
        "ipv4",
        "ipv4-leading-zero",
        "ipv4-256",
        "ipv4-3-parts",
        "dict",
        "dict-too-few-uses",
        "dict-empty-strings",
        "dict-256",
        "dict-257",
        "text",
        "binary",
    ],
)
def test_a_column_is_stored_by_what_all_its_values_hold_and_comes_back_exactly(
    typer: tuple[object, object], values: list[bytes], kind: int
) -> None:
    type_column, untype_column = typer
    streams = stream_of(values)
    section = type_column(*streams)  # type: ignore[operator]
    assert section[0] == kind
    assert untype_column(section, LIMIT) == streams  # type: ignore[operator]


def test_typed_columns_are_smaller_than_strings() -> None:
    ids = [b"%016x" % (n * 0x9E3779B97F4A7C15 % 2**64) for n in range(1000)]
    assert len(columnar.type_column(*stream_of(ids))) == 1 + 1 + 8 * 1000
    addresses = [b"10.1.%d.%d" % (n // 256, n % 256) for n in range(1000)]
    assert len(columnar.type_column(*stream_of(addresses))) == 1 + 4 * 1000


@pytest.mark.skipif(speedups is None, reason="the C speedups are not built")
def test_c_and_python_agree_on_random_columns_and_damaged_sections() -> None:
    rng = random.Random(11)
    makers = [
        lambda: b"%d" % rng.randrange(-(10**18) + 1, 10**18),
        lambda: b"%d" % rng.randrange(3),
        lambda: rng.randbytes(rng.choice((1, 4))).hex().encode(),
        lambda: b"%d.%d.%d.%d" % tuple(rng.choice((0, 9, 10, 99, 100, 255, 256)) for _ in range(4)),
        lambda: rng.choice((b"GET", b"POST", b"", b"0", b"00", b"1.2.3.4")),
        lambda: rng.randbytes(rng.randrange(6)),
    ]
    for _ in range(3000):
        make = rng.choice(makers)
        values = [make() for _ in range(rng.choice((1, 2, 8, 9, 40)))]
        streams = stream_of(values)
        section = speedups.columnar_type(*streams)
        assert section == columnar._type_column_python(*streams)
        assert speedups.columnar_untype(section, LIMIT) == streams
        damaged = bytearray(section)
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        cut = bytes(damaged[: rng.randrange(len(damaged) + 1)])
        for variant in (bytes(damaged), cut):
            results = []
            for untype in (speedups.columnar_untype, columnar._untype_column_python):
                try:
                    results.append(untype(variant, LIMIT))
                except ValueError:
                    results.append("error")
            assert results[0] == results[1], variant


def test_columns_whose_lengths_do_not_match_their_values_are_refused(
    typer: tuple[object, object],
) -> None:
    type_column, _untype = typer
    for lengths, values in ((b"\x05", b"abc"), (b"\x01", b"abc"), (b"\x80", b"")):
        with pytest.raises(ValueError):
            type_column(lengths, values)  # type: ignore[operator]


# ----------------------------------------------------- the stored payload


def frames_of(payload: bytes) -> list[bytes]:
    """The zstd frames of a version-2 payload."""
    assert payload[0] == columnar.TYPED_VERSION
    count, pos = columnar._get64(payload, 1)
    sizes = []
    for _ in range(count):
        size, pos = columnar._get64(payload, pos)
        sizes.append(size)
    frames = []
    for size in sizes:
        frames.append(payload[pos : pos + size])
        pos += size
    return frames


def test_large_groups_get_a_frame_per_key_and_small_ones_a_single_frame() -> None:
    large = access_log_group(2000)
    assert len(large) >= columnar.SPLIT_FRAMES_FROM
    stored = columnar.pack(large, ZSTD)
    assert stored is not None
    assert len(frames_of(stored)) == 1 + 4  # the head, and method, status, id, message
    small = access_log_group(20)
    stored = columnar.pack(small, ZSTD)
    assert stored is not None
    assert len(frames_of(stored)) == 1
    assert columnar.unpack(stored, len(small)) == small


def test_typed_payloads_are_smaller_than_version_1_and_version_1_still_reads() -> None:
    raw = access_log_group(4000)
    version_1 = ZSTD.compress(columnar.pack_body(raw) or b"")
    version_2 = columnar.pack(raw, ZSTD)
    assert version_2 is not None
    assert len(version_2) < 0.85 * len(version_1)
    assert columnar.unpack(version_1, len(raw)) == raw
    assert columnar.unpack(version_2, len(raw)) == raw


def payload_of(frames: list[bytes], count: int | None = None) -> bytes:
    return b"".join(
        [bytes([columnar.TYPED_VERSION]), encode_varint(len(frames) if count is None else count)]
        + [encode_varint(len(f)) for f in frames]
        + frames
    )


def test_damaged_typed_payloads_are_errors() -> None:
    raw = access_log_group(2000)
    stored = columnar.pack(raw, ZSTD)
    assert stored is not None
    frames = frames_of(stored)
    head = zstandard.ZstdDecompressor().decompress(frames[0])
    sections = [zstandard.ZstdDecompressor().decompress(f) for f in frames[1:]]
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(sections[0])
    bomb = zstandard.ZstdCompressor().compress(b"\x00" * (3 * len(raw) + 65536))
    unknown_kind = ZSTD.compress(b"\x09" + sections[1][1:])
    damaged = [
        stored[:-1],  # a frame cut short
        payload_of(frames, count=len(frames) + 1),  # more frames declared than there are
        payload_of(frames[:-1]),  # a key's section missing
        payload_of([frames[0], no_size, *frames[2:]]),  # a frame without its size
        payload_of([frames[0], bomb]),  # a frame declaring more than the group can take
        payload_of([frames[0], frames[1], unknown_kind, *frames[3:]]),
        payload_of([frames[0], frames[2], frames[1], *frames[3:]]),  # sections swapped
        payload_of([ZSTD.compress(head[:-3]), *frames[1:]]),  # the head cut short
        b"\x02\xff\xff\xff\xff\x0f",  # a count of frames past the payload
    ]
    for payload in damaged:
        with pytest.raises(columnar.ColumnarError):
            columnar.unpack(payload, len(raw))


def test_a_damaged_section_cannot_ask_for_more_than_its_group(
    typer: tuple[object, object],
) -> None:
    """One 32 kB value used 32,000 times would untype into 1 GB from 64 kB: it is
    refused by the size the group's streams can take, before anything is built;
    so are lengths that add up past 2**64 (the C code summed them unchecked)."""
    _type, untype_column = typer
    value = 32_000
    bomb = b"\x04\x01" + encode_varint(value) + b"A" * value + b"\x00" * value
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="larger than its log group"):
            untype_column(bomb, 2 * len(bomb) + 65536)  # type: ignore[operator]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    wrapping = b"\x00\x0c\x01" + b"\xff" * 9 + b"\x01" + b"\x01" + b"x"
    with pytest.raises(ValueError):
        untype_column(wrapping, LIMIT)  # type: ignore[operator]
    for kind, section in [
        ("int", bytes([columnar.INT]) + b"\x02" * 100),
        ("hex", bytes([columnar.HEX, 4]) + b"\xab" * 400),
        ("ipv4", bytes([columnar.IPV4]) + b"\x0a" * 400),
        ("str", bytes([columnar.STR, 100]) + b"\x01" * 100 + b"x" * 100),
    ]:
        lengths, values = untype_column(section, LIMIT)  # type: ignore[operator]
        size = len(lengths) + len(values)
        assert untype_column(section, size) == (lengths, values), kind  # type: ignore[operator]
        with pytest.raises(ValueError, match="larger than its log group"):
            untype_column(section, size - 1)  # type: ignore[operator]
