"""The InLong facade of a real server process on loopback: discovery, the DataProxy
TCP listener (every message type, numeric ids, bad input) and the HTTP source, with
the stored logs read back through LogHarbor's own API and the listener's counters
scraped from /metrics."""

from __future__ import annotations

import base64
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import ServerProcess
from inlong_frames import (
    GO_HEARTBEAT,
    GOLDEN_CPP_HEARTBEAT,
    GOLDEN_GO_FRAME,
    HEARTBEAT_ACK,
    DataProxyConnection,
    Reply,
    attr_batch_frame,
    attr_items_body,
    binary_frame,
    binary_heartbeat,
    cpp_item_attr,
    decode_text_reply,
    go_batch,
    items_body,
    record_frame,
    text_frame,
)

API = "/api/v1"
MANAGER = "/inlong/manager/openapi/dataproxy/getIpList"
_PORT = re.compile(r"InLong DataProxy listening on tcp://\S+:(\d+)")


class InLongServer:
    def __init__(self, proc: ServerProcess) -> None:
        self.proc = proc
        match = _PORT.search("".join(proc.banner))
        assert match, proc.banner
        self.port = int(match.group(1))

    def connect(self, timeout: float = 20.0) -> DataProxyConnection:
        return DataProxyConnection("127.0.0.1", self.port, timeout)

    def logs(self, project: str, logstore: str) -> list[dict[str, object]]:
        """Every stored log of a logstore, with its group's tags and source."""
        path = f"{API}/projects/{project}/logstores/{logstore}"
        response = self.proc.request("GET", path + "/shards")
        if response.status_code == 404:
            return []
        assert response.status_code == 200, response.text
        found: list[dict[str, object]] = []
        for shard in response.json()["shards"]:
            cursor = "MA=="
            while True:
                answer = self.proc.request(
                    "GET",
                    f"{path}/shards/{shard['shardId']}/logs",
                    params=[("cursor", cursor), ("format", "json"), ("count", "1000")],
                )
                assert answer.status_code == 200, answer.text
                document = answer.json()
                for group in document["logGroups"]:
                    for log in group["logs"]:
                        found.append(
                            {
                                "contents": [tuple(pair) for pair in log["contents"]],
                                "timeNs": log["timeNs"],
                                "tags": group["tags"],
                                "source": group["source"],
                            }
                        )
                if document["nextCursor"] == cursor:
                    break
                cursor = document["nextCursor"]
        return found

    def messages(self, project: str, logstore: str) -> list[str]:
        return sorted(
            str(dict(log["contents"])["__content__"]) for log in self.logs(project, logstore)
        )  # type: ignore[call-overload]

    def contents(self, project: str, logstore: str) -> list[list[tuple[str, str]]]:
        """The contents of every stored log, sorted."""
        return sorted(log["contents"] for log in self.logs(project, logstore))  # type: ignore[misc]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, by name and sorted labels."""
        response = self.proc.request("GET", "/metrics")
        assert response.status_code == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }


def start(path: Path, *env: tuple[str, str]) -> InLongServer:
    settings = {"LOGHARBOR_INLONG_PORT": "0", **dict(env)}
    return InLongServer(ServerProcess(path, env=settings).start())


@pytest.fixture(scope="module")
def inlong(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InLongServer]:
    server = start(tmp_path_factory.mktemp("inlong"), ("LOGHARBOR_INLONG_AUTO_CREATE", "1"))
    yield server
    server.proc.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InLongServer]:
    """No auto-create, and at most 8 DataProxy connections."""
    server = start(tmp_path_factory.mktemp("strict"), ("LOGHARBOR_INLONG_MAX_CONNECTIONS", "8"))
    yield server
    server.proc.stop()


NUMERIC_IDS = "1=num_group,1.1=alpha,1.2=beta"


@pytest.fixture(scope="module")
def numbered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InLongServer]:
    """Auto-create, and numeric ids mapped."""
    server = start(
        tmp_path_factory.mktemp("numbered"),
        ("LOGHARBOR_INLONG_AUTO_CREATE", "1"),
        ("LOGHARBOR_INLONG_NUMERIC_IDS", NUMERIC_IDS),
    )
    yield server
    server.proc.stop()


@pytest.fixture
def group(unique_name: Callable[[str], str]) -> str:
    return unique_name("grp").replace("-", "_")  # as InLong group ids look


def project_of(group: str) -> str:
    return group.replace("_", "-")


# ------------------------------------------------------------------ discovery


def test_discovery_answers_go_and_cpp(inlong: InLongServer, group: str) -> None:
    go = inlong.proc.request(
        "POST", f"{MANAGER}/{group}", params=[("protocolType", "tcp")], sign=False
    )
    cpp = inlong.proc.request(
        "POST",
        f"{MANAGER}/{group}",
        content=b"ip=192.0.2.2&version=inlong-sdk-cpp-v3.2&protocolType=TCP",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "authorization": "Basic " + base64.b64encode(b"myid:mykey").decode(),
        },
        sign=False,
    )
    for response in (go, cpp):
        assert response.status_code == 200
        document = response.json()
        assert document["success"] is True
        data = document["data"]
        assert isinstance(data["clusterId"], int) and data["clusterId"] > 0
        assert isinstance(data["load"], int)
        assert data["nodeList"] == [
            {"id": 1, "ip": "127.0.0.1", "port": inlong.port, "protocolType": "TCP", "nodeLoad": 0}
        ]


def test_discovery_of_an_unknown_group_fails_clearly(strict: InLongServer, group: str) -> None:
    response = strict.proc.request("POST", f"{MANAGER}/{group}", sign=False)
    assert response.status_code == 200
    document = response.json()
    assert document["success"] is False and group in document["errMsg"]
    strict.proc.request(
        "POST", f"{API}/projects", content=json.dumps({"name": project_of(group)}).encode()
    )
    assert strict.proc.request("POST", f"{MANAGER}/{group}", sign=False).json()["success"]


# -------------------------------------------------------------- TCP: batches


def test_captured_go_frame_is_stored_and_acknowledged(inlong: InLongServer) -> None:
    with inlong.connect() as connection:
        connection.send(GOLDEN_GO_FRAME)
        reply = connection.read_go_reply()
    assert reply.body == b"2" and reply.msg_type == 5
    assert reply.attrs["mid"] == reply.attrs["sid"] == "66ddfe02-3c4d-4612-9635-47096ba765ca"
    assert reply.attrs["wid"] == "0" and reply.attrs.get("errCode", "0") == "0"
    (log,) = inlong.logs("test-group", "s_sync")
    assert log["contents"] == [("ip", "192.0.2.2"), ("__content__", "sync-1")]
    assert log["timeNs"] == 1795315307347 * 1_000_000
    assert log["tags"] == {
        "groupId": "test_group",
        "streamId": "s_sync",
        "dt": "1795315307347",
        "sid": "66ddfe02-3c4d-4612-9635-47096ba765ca",
    }
    assert log["source"] == "127.0.0.1"


def test_cpp_binary_packs_one_reply_each_in_order(inlong: InLongServer, group: str) -> None:
    sent: list[str] = []
    with inlong.connect() as connection:
        for uniq in range(1, 11):
            payloads = [f"pack {uniq} message {i}|x|y".encode() for i in range(uniq * 7)]
            sent += [p.decode() for p in payloads]
            connection.send(binary_frame(group, "cpp_stream", payloads, uniq=uniq))
            reply = connection.read_cpp_reply()  # one request in flight, as the C++ SDK
            assert reply.msg_type == 7 and reply.uniq == uniq
            assert reply.attrs["groupId"] == group and "errCode" not in reply.attrs
    assert inlong.messages(project_of(group), "cpp_stream") == sorted(sent)


def test_go_batches_pipelined_with_snappy(inlong: InLongServer, group: str) -> None:
    sent: dict[str, list[str]] = {"alpha": [], "beta": []}
    batches = []
    for index in range(30):
        stream = "alpha" if index % 2 else "beta"
        payloads = [f"{stream} {index} {i} {'z' * (i % 40)}\n".encode() for i in range(50)]
        batch = go_batch(group, stream, payloads, wid=index % 4)
        sent[stream] += [p.decode() for p in batch.payloads]
        batches.append(batch)
    assert any(b"cp=snappy" in batch.frame for batch in batches)
    with inlong.connect() as connection:
        connection.send(b"".join(batch.frame for batch in batches))  # all before any ack
        replies = [connection.read_go_reply() for _ in batches]
    assert [r.attrs["mid"] for r in replies] == [b.mid for b in batches]
    assert [r.attrs["wid"] for r in replies] == [str(b.wid) for b in batches]
    for stream, messages in sent.items():
        assert inlong.messages(project_of(group), stream) == sorted(messages)


def test_a_retried_batch_is_stored_once(inlong: InLongServer, group: str) -> None:
    batch = go_batch(group, "retries", [b"once-1", b"once-2"])
    with inlong.connect() as first:
        first.send(batch.frame + batch.frame)  # resent before the first ack
        assert [first.read_go_reply().attrs["mid"] for _ in range(2)] == [batch.mid] * 2
    with inlong.connect() as second:  # and again on another connection, as after a swap
        second.send(batch.frame)
        assert second.read_go_reply().attrs["mid"] == batch.mid
    assert inlong.messages(project_of(group), "retries") == ["once-1", "once-2"]


def test_heartbeats_are_answered_in_order(inlong: InLongServer, group: str) -> None:
    batch = go_batch(group, "beats", [b"between heartbeats"])
    with inlong.connect() as connection:
        connection.send(GO_HEARTBEAT + batch.frame + GOLDEN_CPP_HEARTBEAT + binary_heartbeat())
        assert connection.read_exactly(5) == HEARTBEAT_ACK
        assert connection.read_go_reply().attrs["mid"] == batch.mid
        for _ in range(2):
            reply = connection.read_frame()
            length, msg_type, _, version, body_len, load, attr_len, magic = struct.unpack(
                ">IBIBIhHH", reply
            )
            assert (length, msg_type, version, body_len, attr_len, magic) == (
                16,
                8,
                1,
                2,
                0,
                0xEE01,
            )
            assert 0 <= load <= 100
    assert inlong.messages(project_of(group), "beats") == ["between heartbeats"]


def test_no_reply_when_is_ack_false(inlong: InLongServer, group: str) -> None:
    batch = go_batch(group, "noack", [b"fire and forget"], extra="&isAck=false")
    with inlong.connect() as connection:
        connection.send(batch.frame + GO_HEARTBEAT)
        assert connection.read_frame() == HEARTBEAT_ACK  # nothing came before it
    deadline = time.monotonic() + 10
    while not inlong.messages(project_of(group), "noack") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert inlong.messages(project_of(group), "noack") == ["fire and forget"]


# ------------------------------------------------------------------ bad input


def garbage_frames(group: str) -> dict[str, bytes]:
    good = binary_frame(group, "bad", [b"must not be stored"])
    return {
        "http": b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        "oversized": struct.pack(">I", 600 << 10) + b"\x05" + b"\x00" * 1000,
        "zero length": b"\x00\x00\x00\x00",
        "unknown type": struct.pack(">I", 9) + b"\x0b" + b"\x00" * 8,
        "bad magic": good[:-2] + b"\xee\x02",
        "inner lengths": struct.pack(">IBI", 14, 5, 80) + b"abcde" + b"\x00" * 4,
    }


@pytest.mark.parametrize(
    "kind", ["http", "oversized", "zero length", "unknown type", "bad magic", "inner lengths"]
)
def test_garbage_closes_only_its_connection(inlong: InLongServer, group: str, kind: str) -> None:
    with inlong.connect() as bystander, inlong.connect() as attacker:
        bystander.send(GO_HEARTBEAT)
        assert bystander.read_exactly(5) == HEARTBEAT_ACK
        attacker.send(garbage_frames(group)[kind])
        assert attacker.closed_by_peer()
        batch = go_batch(group, "good", [b"still served"])
        bystander.send(batch.frame)
        assert bystander.read_go_reply().attrs["mid"] == batch.mid
    assert inlong.messages(project_of(group), "bad") == []
    assert inlong.messages(project_of(group), "good") == ["still served"]


def test_truncated_frame_stores_nothing(inlong: InLongServer, group: str) -> None:
    frame = go_batch(group, "cut", [b"half a frame"]).frame
    with inlong.connect() as connection:
        connection.send(frame[: len(frame) // 2])
        connection.sock.shutdown(socket.SHUT_WR)
        assert connection.closed_by_peer()
    with inlong.connect() as connection:  # the listener still serves
        connection.send(GO_HEARTBEAT)
        assert connection.read_exactly(5) == HEARTBEAT_ACK
    assert inlong.messages(project_of(group), "cut") == []


def test_unknown_stream_is_refused_as_each_sdk_reads_it(strict: InLongServer, group: str) -> None:
    batch = go_batch(group, "nowhere", [b"lost?"])
    with strict.connect() as go:
        go.send(batch.frame)
        reply = go.read_go_reply()
    assert reply.attrs["errCode"] == "113" and reply.attrs["mid"] == batch.mid
    assert "inlong_auto_create" in reply.attrs["errMsg"]
    with strict.connect() as cpp:  # the C++ SDK ignores errCode: it must see a failure
        cpp.send(binary_frame(group, "nowhere", [b"lost?"]))
        assert cpp.closed_by_peer()
    assert strict.proc.request("GET", f"{API}/projects/{project_of(group)}").status_code == 404


def test_rejected_content_gets_its_code(inlong: InLongServer, group: str) -> None:
    attr = f"groupId={group}&streamId=rej&mid=7&wid=1&cp=snappy"
    with inlong.connect() as connection:
        connection.send(text_frame(items_body([b"not compressed"]), attr))
        reply = connection.read_go_reply()
    assert (reply.attrs["errCode"], reply.attrs["mid"]) == ("96", "7")
    assert inlong.messages(project_of(group), "rej") == []


# ------------------------------------------------------ types 2, 3, 4 and 6


def read_text_reply(connection: DataProxyConnection) -> Reply:
    """As the C++ SDK in a text ``msg_type``: one frame of at most 32 KiB."""
    return decode_text_reply(connection.read_frame(32 << 10))


def test_single_record_types_one_in_flight(inlong: InLongServer, group: str) -> None:
    frames = {
        2: record_frame(group, "common", [b"c|1", b"c|2"], msg_type=2, mid=1),
        3: record_frame(group, "acked", [b"a|1\n"], msg_type=3, mid=2),
        4: record_frame(group, "echoed", [b"e|1", b"e|2"], msg_type=4, mid=3),
    }
    with inlong.connect() as connection:
        for msg_type, frame in frames.items():
            connection.send(frame)  # one request in flight, as the C++ SDK
            reply = read_text_reply(connection)
            assert reply.msg_type == msg_type and "errCode" not in reply.attrs
            assert reply.attrs["mid"] == str(msg_type - 1)
            assert reply.body == (b"e|1e|2" if msg_type == 4 else b"2")
    assert inlong.messages(project_of(group), "common") == ["c|1", "c|2"]
    assert inlong.messages(project_of(group), "acked") == ["a|1"]  # one newline is not data
    assert inlong.messages(project_of(group), "echoed") == ["e|1e|2"]


def test_multi_body_attr_pipelined(inlong: InLongServer, group: str) -> None:
    frames, expected = [], []
    for mid in range(1, 21):
        batch = [
            (f"m{mid} {i} ".encode() * (i + 1), cpp_item_attr(f"10.0.0.{i}")) for i in range(9)
        ]
        frames.append(attr_batch_frame(group, "attrs", batch, mid=mid, extra=f"&wid={mid % 3}"))
        expected += [
            [("reptime", "202611220236"), ("ip", f"10.0.0.{i}"), ("__content__", data.decode())]
            for i, (data, _) in enumerate(batch)
        ]
    assert any(b"cp=snappy" in frame for frame in frames)
    with inlong.connect() as connection:
        connection.send(b"".join(frames))
        replies = [connection.read_go_reply() for _ in frames]
    assert [(r.msg_type, r.attrs["mid"]) for r in replies] == [(6, str(m)) for m in range(1, 21)]
    assert inlong.contents(project_of(group), "attrs") == sorted(expected)


def test_binary_items_with_attributes_and_no_ack(inlong: InLongServer, group: str) -> None:
    payloads = [b"bin one", b"bin two"]
    attrs = [cpp_item_attr("10.1.1.1"), "__addcol1__reptime=202601010000"]
    frame = binary_frame(group, "binattrs", payloads, ext_field=0x5, item_attrs=attrs)
    quiet = record_frame(group, "binattrs", [b"not acked"], msg_type=3, extra="&isAck=false")
    with inlong.connect() as connection:
        connection.send(frame)
        assert connection.read_cpp_reply().uniq == 1
        connection.send(quiet + GO_HEARTBEAT)
        assert connection.read_frame() == HEARTBEAT_ACK  # nothing came before it
    assert inlong.contents(project_of(group), "binattrs") == [
        [("__content__", "not acked")],
        [("reptime", "202601010000"), ("__content__", "bin two")],
        [("reptime", "202611220236"), ("ip", "10.1.1.1"), ("__content__", "bin one")],
    ]


def new_type_garbage(group: str, msg_type: int) -> dict[str, bytes]:
    attr = f"groupId={group}&streamId=junk".encode()
    head = struct.pack(">B", msg_type)
    good = text_frame(b"must not be stored", attr.decode(), msg_type)
    return {
        "body length beyond the frame": struct.pack(">I", 9)
        + head
        + struct.pack(">I", 80)
        + b"\0" * 4,
        "attr length beyond the frame": good[: -len(attr) - 4] + struct.pack(">I", 999) + attr,
        "bytes after the attributes": struct.pack(">I", len(good) - 4 + 3) + good[4:] + b"xyz",
        "shorter than its fixed fields": struct.pack(">I", 4) + head + b"\0" * 3,
        "oversized": struct.pack(">I", 513 << 10) + head + b"\0" * 100,
        "truncated": good[: len(good) - 5],
    }


@pytest.mark.parametrize("msg_type", [2, 3, 4, 6])
@pytest.mark.parametrize(
    "kind",
    [
        "body length beyond the frame",
        "attr length beyond the frame",
        "bytes after the attributes",
        "shorter than its fixed fields",
        "oversized",
        "truncated",
    ],
)
def test_bad_frames_of_the_new_types(
    inlong: InLongServer, group: str, msg_type: int, kind: str
) -> None:
    with inlong.connect() as bystander, inlong.connect(timeout=10) as attacker:
        attacker.send(new_type_garbage(group, msg_type)[kind])
        if kind == "truncated":
            attacker.sock.shutdown(socket.SHUT_WR)
        assert attacker.closed_by_peer()
        frame = record_frame(group, "fine", [f"after {kind} {msg_type}".encode()], msg_type=3)
        bystander.send(frame)
        assert read_text_reply(bystander).attrs["mid"] == "1"
    assert inlong.messages(project_of(group), "junk") == []
    assert inlong.messages(project_of(group), "fine") == [f"after {kind} {msg_type}"]


@pytest.mark.parametrize(
    ("msg_type", "body", "code"),
    [
        (6, attr_items_body([(b"x", "a=1")])[:-3], "123"),  # item attribute cut short
        (6, b"\x00\x00\x00\x05ab", "123"),  # item length beyond the body
        (4, b"x" * (20 << 10), "104"),  # too large to echo within the reply limit
        (3, b"", "105"),
        (2, b"plain, not snappy", "96"),
    ],
)
def test_refused_content_of_the_new_types(
    inlong: InLongServer, group: str, msg_type: int, body: bytes, code: str
) -> None:
    extra = "&cp=snappy" if code == "96" else ""
    attr = f"groupId={group}&streamId=refused&mid=5{extra}"
    with inlong.connect() as go:  # a sender that reads errCode (it sends wid)
        go.send(text_frame(body, attr + "&wid=0", msg_type))
        reply = go.read_go_reply()
        assert (reply.msg_type, reply.attrs["errCode"], reply.attrs["mid"]) == (msg_type, code, "5")
        go.send(GO_HEARTBEAT)  # the connection still serves
        assert go.read_exactly(5) == HEARTBEAT_ACK
    with inlong.connect() as cpp:  # one that does not: it must see a failure
        cpp.send(text_frame(body, attr, msg_type))
        assert cpp.closed_by_peer()
    assert inlong.messages(project_of(group), "refused") == []


def test_odd_numbers_are_answered_not_fatal(inlong: InLongServer, group: str) -> None:
    """Digits int() refuses (a superscript, thousands of them) once broke the reader."""
    with inlong.connect() as connection:
        for dt in ("\u00b2", "9" * 5000):
            connection.send(go_batch(group, "odd", [b"x"], extra=f"&dt={dt}").frame)
            assert connection.read_go_reply().attrs["errCode"] == "102"
        key = "__addcol" + "9" * 5000 + "__x"
        batch = go_batch(group, "odd", [b"kept"], extra=f"&{key}=1&cnt=" + "9" * 5000)
        connection.send(batch.frame)
        assert "errCode" not in connection.read_go_reply().attrs
    (log,) = inlong.logs(project_of(group), "odd")
    assert log["contents"] == [("__content__", "kept")] and log["tags"][key] == "1"  # type: ignore[index]


# ---------------------------------------------------------------- numeric ids


def test_numeric_ids_land_where_names_do(numbered: InLongServer) -> None:
    by_number = binary_frame(
        "", "", [b"by number"], ext_field=0, attr="", group_num=1, stream_num=2, uniq=8
    )
    by_name = binary_frame("num_group", "beta", [b"by name"], uniq=9)
    with numbered.connect() as connection:
        for frame, uniq in ((by_number, 8), (by_name, 9)):
            connection.send(frame)
            reply = connection.read_cpp_reply()
            assert reply.uniq == uniq and "errCode" not in reply.attrs
    logs = numbered.logs("num-group", "beta")
    assert sorted(str(dict(log["contents"])["__content__"]) for log in logs) == [  # type: ignore[call-overload]
        "by name",
        "by number",
    ]
    assert all(log["tags"] == {"groupId": "num_group", "streamId": "beta"} for log in logs)


@pytest.mark.parametrize(("group_num", "stream_num"), [(2, 1), (1, 3), (0, 1), (1, 0)])
def test_unmapped_numeric_ids_are_refused(
    numbered: InLongServer, group_num: int, stream_num: int
) -> None:
    frame = binary_frame(
        "", "", [b"lost?"], ext_field=0, attr="", group_num=group_num, stream_num=stream_num
    )
    with numbered.connect() as cpp:
        cpp.send(frame)
        assert cpp.closed_by_peer()  # the C++ SDK ignores errCode: it must see a failure
    assert numbered.messages("num-group", "alpha") == []


def test_bad_numeric_id_setting_stops_the_server(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as caught:
        start(tmp_path, ("LOGHARBOR_INLONG_NUMERIC_IDS", "1=grp,1.1=bad name"))
    assert "inlong_numeric_ids" in str(caught.value)


# -------------------------------------------------------------------- metrics


# (metric without the logharbor_inlong_ prefix, labels, change expected in the test)
METRIC_DELTAS: list[tuple[str, dict[str, str], float]] = [
    ("connections_accepted_total", {}, 3),
    ("connections_closed_total", {"reason": "bad_frame"}, 2),
    ("connections_closed_total", {"reason": "client"}, 1),
    ("frames_received_total", {"type": "ack_service"}, 1),
    ("frames_received_total", {"type": "multi_body_attr"}, 1),
    ("frames_received_total", {"type": "heartbeat"}, 1),
    ("received_bytes_total", {"type": "ack_service"}, 4 + 1 + 4 + 3 + 4 + 104),  # a whole frame
    ("messages_received_total", {"type": "multi_body_attr"}, 2),
    ("acks_sent_total", {"type": "ack_service", "result": "ok"}, 1),
    ("acks_sent_total", {"type": "multi_body_attr", "result": "ok"}, 1),
    ("acks_sent_total", {"type": "heartbeat", "result": "ok"}, 1),
    ("acks_sent_total", {"type": "multi_body", "result": "error"}, 1),
    ("frame_errors_total", {"reason": "unknown_type"}, 1),
    ("frame_errors_total", {"reason": "frame_length"}, 1),
    (
        "rejected_requests_total",
        {"type": "multi_body", "code": "101", "reason": "miss_required_streamid_argument"},
        1,
    ),
    ("stored_messages_total", {}, 3),
]


def test_listener_metrics(numbered: InLongServer) -> None:
    def readings() -> list[float]:
        samples = numbered.metrics()
        return [
            samples.get((f"logharbor_inlong_{name}", tuple(sorted(labels.items()))), 0.0)
            for name, labels, _ in METRIC_DELTAS
        ]

    before = readings()
    acked = record_frame("num_group", "alpha", [b"m|1"], msg_type=3, mid=12345)
    with numbered.connect() as connection:
        connection.send(acked)
        assert read_text_reply(connection).msg_type == 3
        connection.send(attr_batch_frame("num_group", "alpha", [(b"a", ""), (b"b", "k=v")]))
        assert read_text_reply(connection).msg_type == 6
        connection.send(GO_HEARTBEAT + text_frame(items_body([b"x"]), "groupId=g&wid=0"))
        assert connection.read_exactly(5) == HEARTBEAT_ACK
        assert connection.read_go_reply().attrs["errCode"] == "101"
        key = ("logharbor_inlong_connections_open", ())
        assert numbered.metrics()[key] >= 1
    for garbage in (b"\x00\x00\x00\x05\x1f\x00\x00\x00\x00", b"\x00\x00\x00\x00"):
        with numbered.connect() as attacker:
            attacker.send(garbage)
            assert attacker.closed_by_peer()
    assert len(acked) == METRIC_DELTAS[6][2]
    expected = [delta for _, _, delta in METRIC_DELTAS]
    deadline = time.monotonic() + 10
    while True:  # a connection is counted closed once the server has closed it
        deltas = [after - first for after, first in zip(readings(), before, strict=True)]
        if deltas == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert list(zip(METRIC_DELTAS, deltas, strict=True)) == list(
        zip(METRIC_DELTAS, expected, strict=True)
    )


# ---------------------------------------------------------------- concurrency


def test_many_concurrent_connections(inlong: InLongServer, group: str) -> None:
    connections, batches_each, per_batch = 32, 4, 25
    expected: list[str] = []
    errors: list[BaseException] = []
    frames = []
    for c in range(connections):
        batches = [
            go_batch(group, "crowd", [f"c{c} b{b} m{m}".encode() for m in range(per_batch)])
            for b in range(batches_each)
        ]
        expected += [p.decode() for batch in batches for p in batch.payloads]
        frames.append(batches)

    def run(batches: list[object]) -> None:
        try:
            with inlong.connect(timeout=60) as connection:
                connection.send(b"".join(b.frame for b in batches))  # type: ignore[attr-defined]
                mids = [connection.read_go_reply().attrs["mid"] for _ in batches]
                assert mids == [b.mid for b in batches]  # type: ignore[attr-defined]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(batches,)) for batches in frames]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[0]
    assert inlong.messages(project_of(group), "crowd") == sorted(expected)


def test_connection_limit(strict: InLongServer) -> None:
    held = [strict.connect() for _ in range(8)]
    try:
        for connection in held:
            connection.send(GO_HEARTBEAT)
            assert connection.read_exactly(5) == HEARTBEAT_ACK
        with strict.connect(timeout=10) as extra:
            assert extra.closed_by_peer()
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the freed slot is taken back once the server saw the close
            with strict.connect(timeout=5) as again:
                again.send(GO_HEARTBEAT)
                try:
                    assert again.read_exactly(5) == HEARTBEAT_ACK
                    break
                except ConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
    finally:
        for connection in held:
            connection.close()


# ---------------------------------------------------------------- HTTP source


def test_http_source_splits_batches(inlong: InLongServer, group: str) -> None:
    form = {
        "groupId": group,
        "streamId": "web",
        "dt": "1795315307347",
        "cnt": "3",
        "body": "first\nsecond\nthird",
    }
    response = inlong.proc.request(
        "POST",
        "/dataproxy/message",
        content="&".join(f"{k}={v}" for k, v in form.items()).replace("\n", "%0A").encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "connection": "close"},
        sign=False,
    )
    assert response.status_code == 200
    assert response.json() == {"code": "0", "msg": "Ok"}
    single = inlong.proc.request(
        "GET",
        "/dataproxy/message",
        params=[("groupId", group), ("streamId", "web"), ("body", "one\nevent")],
        sign=False,
    )
    assert single.json() == {"code": "0", "msg": "Ok"}
    assert inlong.messages(project_of(group), "web") == ["first", "one\nevent", "second", "third"]
    times = {log["timeNs"] for log in inlong.logs(project_of(group), "web")}
    assert 1795315307347 * 1_000_000 in times


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ([("streamId", "web"), ("body", "x")], "100"),
        ([("groupId", "grp_x"), ("body", "x")], "101"),
        ([("groupId", "grp_x"), ("streamId", "web")], "103"),
        ([("groupId", "grp_x"), ("streamId", "web"), ("body", "  ")], "111"),
        ([("groupId", "g"), ("streamId", "web"), ("body", "x")], "113"),
    ],
)
def test_http_source_errors(inlong: InLongServer, params: list[tuple[str, str]], code: str) -> None:
    response = inlong.proc.request("GET", "/dataproxy/message", params=params, sign=False)
    assert response.status_code == 200
    assert response.json()["code"] == code


def test_http_source_protocol_details(inlong: InLongServer) -> None:
    heartbeat = inlong.proc.request("GET", "/dataproxy/heartbeat", sign=False)
    assert heartbeat.json() == {"code": "0", "msg": "Ok"}
    jsonp = inlong.proc.request(
        "GET", "/dataproxy/message", params=[("callback", "cb")], sign=False
    )
    assert jsonp.text.startswith("cb({") and '"code":"100"' in jsonp.text.replace(" ", "")
    wrong_type = inlong.proc.request(
        "POST",
        "/dataproxy/message",
        content=b'{"groupId": "x"}',
        headers={"content-type": "application/json"},
        sign=False,
    )
    assert wrong_type.json()["code"] == "36"
    assert inlong.proc.request("PUT", "/dataproxy/message", sign=False).json()["code"] == "32"


def test_http_source_refuses_more_records_than_a_log_group_holds(
    inlong: InLongServer, group: str
) -> None:
    """Records are counted before anything is built: a million empty records in a
    1 MB form took 935 MB before they were refused."""
    form = f"groupId={group}&streamId=web&cnt=2&rcdDlmtr=;&body=" + ";" * 1_000_000
    answer = _post_form(inlong, form)
    assert answer["code"] == "104"  # BODY_EXCEED_MAX_LEN
    assert "1000000 records" in answer["msg"]


def test_http_source_stops_building_a_batch_as_soon_as_it_is_too_large(
    inlong: InLongServer, group: str
) -> None:
    """Columns given with __addcolN__ are repeated in every record: 4 MiB of them
    times 300 records built 1.2 GB before the size was checked."""
    records = "%0A".join("r" for _ in range(300))
    form = f"groupId={group}&streamId=web&cnt=300&body={records}&__addcol1__c=" + "w" * (1 << 20)
    answer = _post_form(inlong, form)
    assert answer["code"] == "104"  # BODY_EXCEED_MAX_LEN
    assert "(at least)" in answer["msg"]


def _post_form(inlong: InLongServer, form: str) -> dict[str, str]:
    """POST a url-encoded form to the DataProxy HTTP source; its JSON answer."""
    response = inlong.proc.request(
        "POST",
        "/dataproxy/message",
        content=form.encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "connection": "close"},
        sign=False,
    )
    return response.json()  # type: ignore[no-any-return]
