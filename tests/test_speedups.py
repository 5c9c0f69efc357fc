"""The C speedups give the same answers as the pure-Python reference paths.

``logharbor._speedups`` validates log groups on ingest and decodes them for the
indexer.  protobuf (parse + ``IsInitialized``) is the reference for validation,
``decode_group_python`` for decoding; these tests compare the two on crafted
and on thousands of randomly mutated inputs.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from harness import ServerProcess
from logharbor._native import speedups
from logharbor.client._encoding import encode_log_python
from logharbor.engine.index.indexer import decode_group_python
from logharbor.protocol.codec import decode_cursor, encode_varint
from logharbor.protocol.schema import LogGroup, RawLogGroup

pytestmark = pytest.mark.skipif(
    speedups is None, reason="the C speedups are not built (or LOGHARBOR_NO_SPEEDUPS is set)"
)


def test_the_speedups_are_built_where_a_compiler_is_available() -> None:
    # CI and `make` install with gcc present: a silently missing extension would
    # only show as lost speed, so say it here.
    if os.environ.get("LOGHARBOR_NO_SPEEDUPS"):
        pytest.skip("turned off")
    assert speedups is not None


def reference_verdict(raw: bytes) -> int | None:
    """protobuf's verdict: the log count, or None for a group it refuses."""
    group = RawLogGroup()
    try:
        group.ParseFromString(raw)
    except Exception:
        return None
    return len(group.Logs) if group.IsInitialized() else None


def c_verdict(raw: bytes) -> int | None:
    try:
        count: int = speedups.validate_log_group(raw)
    except ValueError:
        return None
    return count


def tag(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + encode_varint(len(payload)) + payload


def sample_group(rng: random.Random, logs: int = 3) -> bytes:
    group = RawLogGroup(Topic="access", Source="10.0.0.1")
    group.LogTags.add(Key="host", Value="web-1")
    for _ in range(logs):
        entry = group.Logs.add(Time=1_800_000_000 + rng.randrange(100))
        if rng.random() < 0.7:
            entry.Time_ns = rng.randrange(10**9)
        for _ in range(rng.randrange(0, 5)):
            key = rng.choice(["status", "path", "msg", "ip"])
            entry.Contents.add(Key=key, Value=rng.randbytes(rng.randrange(0, 12)))
    return bytes(group.SerializeToString())


CONTENT = length_delimited(1, b"k") + length_delimited(2, b"v")
LOG = tag(1, 0) + encode_varint(1_800_000_000) + length_delimited(2, CONTENT)

CRAFTED = {
    "a valid group": length_delimited(1, LOG),
    "an empty body (no logs)": b"",
    "a log without Time": length_delimited(1, length_delimited(2, CONTENT)),
    "a content without Value": length_delimited(
        1, tag(1, 0) + b"\x01" + length_delimited(2, length_delimited(1, b"k"))
    ),
    "a content without Key": length_delimited(
        1, tag(1, 0) + b"\x01" + length_delimited(2, length_delimited(2, b"v"))
    ),
    "a tag without Value": length_delimited(1, LOG)
    + length_delimited(6, length_delimited(1, b"k")),
    "Time sent as a length-delimited field (unknown, so Time is missing)": length_delimited(
        1, length_delimited(1, b"\x01") + length_delimited(2, CONTENT)
    ),
    "unknown fields of every wire type": length_delimited(
        1,
        LOG
        + tag(9, 0)
        + b"\x05"
        + tag(10, 1)
        + b"12345678"
        + tag(11, 5)
        + b"1234"
        + length_delimited(12, b"xyz")
        + tag(13, 3)
        + tag(1, 0)
        + b"\x01"
        + tag(13, 4),
    )
    + tag(20, 0)
    + b"\x07",
    "an unknown group never closed": length_delimited(1, LOG) + tag(13, 3),
    "an end-group tag that matches nothing": length_delimited(1, LOG) + tag(13, 4),
    "a group closed by the wrong number": length_delimited(1, LOG) + tag(13, 3) + tag(14, 4),
    "field number 0": length_delimited(1, LOG) + tag(0, 0) + b"\x01",
    "wire type 6": length_delimited(1, LOG) + tag(7, 6),
    "wire type 7": length_delimited(1, LOG) + tag(7, 7),
    "an 11-byte varint": length_delimited(1, LOG) + tag(9, 0) + b"\xff" * 10 + b"\x01",
    "a length beyond the end": length_delimited(1, LOG) + tag(12, 2) + b"\x05ab",
    "a truncated fixed32": length_delimited(1, LOG) + tag(11, 5) + b"12",
    "a topic that is not UTF-8": length_delimited(1, LOG) + length_delimited(3, b"\xff\xfe"),
    "two logs": length_delimited(1, LOG) * 2,
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_groups_get_the_same_verdict_as_protobuf(name: str) -> None:
    raw = CRAFTED[name]
    assert c_verdict(raw) == reference_verdict(raw)


def test_mutated_groups_get_the_same_verdict_as_protobuf() -> None:
    rng = random.Random(20261122)
    accepted = refused = 0
    for _ in range(20_000):
        raw = bytearray(sample_group(rng, logs=rng.randrange(1, 4)))
        for _ in range(rng.randrange(1, 4)):
            kind = rng.randrange(4)
            at = rng.randrange(len(raw) + 1)
            if kind == 0 and at < len(raw):
                raw[at] = rng.randrange(256)
            elif kind == 1:
                raw.insert(at, rng.randrange(256))
            elif kind == 2 and at < len(raw):
                del raw[at]
            else:
                del raw[at:]
        expected = reference_verdict(bytes(raw))
        assert c_verdict(bytes(raw)) == expected, bytes(raw).hex()
        accepted += expected is not None
        refused += expected is None
    assert accepted > 1000 and refused > 1000  # both verdicts were exercised


def test_a_refused_group_says_what_and_where() -> None:
    with pytest.raises(ValueError, match=r"lacks its required Time \(at byte 2\)"):
        speedups.validate_log_group(CRAFTED["a log without Time"])


def test_validation_accepts_any_buffer() -> None:
    raw = CRAFTED["two logs"]
    assert speedups.validate_log_group(memoryview(raw)) == 2
    assert speedups.validate_log_group(bytearray(raw)) == 2


def decode_both(raws: list[bytes]) -> tuple[object, object]:
    results = []
    for decode in (decode_group_python, speedups.decode_log_group):
        fields: dict[str, list[str | None]] = {}
        row, groups = 0, []
        for raw in raws:
            times, topic, source, tags = decode(raw, fields, row)
            groups.append((times, topic, source, tags))
            row += len(times)
        results.append((groups, fields))
    return results[0], results[1]


def test_decoding_matches_the_python_reference() -> None:
    rng = random.Random(7)
    for _ in range(300):
        raws = [sample_group(rng, logs=rng.randrange(0, 6)) for _ in range(rng.randrange(1, 4))]
        python, c = decode_both(raws)
        assert c == python


def test_decoding_keeps_the_first_value_of_a_repeated_field_and_pads_missing_ones() -> None:
    group = LogGroup(Topic="t")
    first = group.Logs.add(Time=1, Time_ns=5)
    first.Contents.add(Key="a", Value="1")
    first.Contents.add(Key="a", Value="2")
    second = group.Logs.add(Time=2)
    second.Contents.add(Key="b", Value="x")
    fields: dict[str, list[str | None]] = {"b": [None, None]}
    times, topic, source, tags = speedups.decode_log_group(group.SerializeToString(), fields, 2)
    assert times == [1_000_000_005, 2_000_000_000]
    assert (topic, source, tags) == ("t", "", [])
    assert fields == {"a": [None, None, "1"], "b": [None, None, None, "x"]}


def test_decoding_replaces_text_that_is_not_utf8() -> None:
    group = RawLogGroup()
    group.Logs.add(Time=1).Contents.add(Key="k", Value=b"ok\xff")
    python, c = decode_both([group.SerializeToString()])
    assert c == python
    assert c[1] == {"k": ["ok\ufffd"]}


def test_without_the_speedups_the_python_paths_are_used() -> None:
    code = "from logharbor._native import speedups; print(speedups)"
    env = {**os.environ, "LOGHARBOR_NO_SPEEDUPS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "None"


@pytest.mark.parametrize("python_only", [False, True], ids=["C speedups", "pure Python"])
def test_large_bodies_are_validated_off_the_event_loop_on_both_paths(
    server_factory: Callable[..., ServerProcess], python_only: bool
) -> None:
    """Bodies of 64 KiB and more are validated in a thread (C) or in the worker
    processes (pure Python); either way a good group is stored and a bad one is
    refused with nothing stored."""
    env = {"LOGHARBOR_NO_SPEEDUPS": "1"} if python_only else {}
    server = server_factory(auth=False, env=env)
    server.request("POST", "/api/v1/projects", content=b'{"name": "big"}')
    server.request(
        "POST", "/api/v1/projects/big/logstores", content=b'{"name": "ls", "shardCount": 1}'
    )
    good = sample_group(random.Random(1), logs=1)
    group = RawLogGroup.FromString(good)
    while group.ByteSize() < 200_000:
        group.Logs.add(Time=1_800_000_000).Contents.add(Key="msg", Value=b"x" * 500)
    body = group.SerializeToString()
    broken = body + length_delimited(1, length_delimited(2, CONTENT))  # a log without Time

    logstore = "/api/v1/projects/big/logstores/ls"

    def put(data: bytes) -> httpx.Response:
        return server.request(
            "POST",
            f"{logstore}/logs",
            content=data,
            headers={"content-type": "application/x-protobuf"},
        )

    def stored_groups() -> int:
        answer = server.request("GET", f"{logstore}/shards/0/cursor", params=[("from", "end")])
        assert answer.status_code == 200, answer.text
        return decode_cursor(answer.json()["cursor"])

    refused = put(broken)
    assert refused.status_code == 400
    assert refused.json()["errorCode"] == "InvalidLogGroup"
    assert "Time" in refused.json()["errorMessage"]
    assert stored_groups() == 0
    assert put(body).status_code == 200
    assert stored_groups() == 1


def random_contents(rng: random.Random) -> list[tuple[str, str]]:
    alphabet = "abcxyz019 /:=-é漢🙂"

    def text(limit: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(limit)))

    return [(text(12), text(rng.choice((5, 300, 20_000)))) for _ in range(rng.randrange(0, 40))]


def test_the_producer_encoder_is_byte_identical_to_the_python_one() -> None:
    rng = random.Random(3)
    for _ in range(500):
        contents = random_contents(rng)
        time_ns = rng.choice((0, 1, 999_999_999, 1_800_000_000_123_456_789, rng.randrange(1 << 62)))
        expected = encode_log_python(contents, time_ns)
        assert speedups.encode_log(contents, time_ns) == expected
        assert speedups.encode_log(tuple(contents), time_ns) == expected
        as_dict = dict(contents)
        assert speedups.encode_log(as_dict, time_ns) == encode_log_python(as_dict.items(), time_ns)
    entry = speedups.encode_log({"status": "200"}, 1_800_000_000_000_000_005)
    log = LogGroup.FromString(entry).Logs[0]  # an entry is a LogGroup holding one log
    assert (log.Time, log.Time_ns, log.Contents[0].Key) == (1_800_000_000, 5, "status")


def test_the_producer_encoder_refuses_what_the_python_one_refuses() -> None:
    for bad in ({"n": 1}, {2: "x"}, [("k", None)]):
        with pytest.raises(TypeError, match="log contents must be strings"):
            speedups.encode_log(bad, 1)
        with pytest.raises(TypeError, match="log contents must be strings"):
            encode_log_python(bad.items() if isinstance(bad, dict) else bad, 1)  # type: ignore[attr-defined]
    with pytest.raises(UnicodeEncodeError):
        speedups.encode_log({"k": "\ud800"}, 1)
    with pytest.raises(ValueError):
        speedups.encode_log({"k": "v"}, -1)
