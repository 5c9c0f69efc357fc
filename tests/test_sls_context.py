# ruff: noqa: F811  (pytest fixtures imported from sls_support)
"""``get_context_logs`` with the real aliyun-log-python-sdk: a search with
``| with_pack_meta`` hands out each log's pack id and pack meta, and the context
call answers exactly the logs stored around it in its shard, in order."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import pytest

pytest.importorskip("aliyun.log")

from aliyun.log import (
    IndexConfig,
    IndexKeyConfig,
    IndexLineConfig,
    LogItem,
    PutLogsRequest,
)

from sls_support import fails, fresh_project, sls_client, sls_server  # noqa: F401

SHARD_0, SHARD_1 = "00" * 16, "80" + "0" * 30
GROUPS, PER_GROUP = 3, 4  # line-00 … line-11 in three log groups of shard 0


@pytest.fixture
def store(sls_client: Any) -> tuple[str, int]:
    """A two-shard logstore: line-NN in shard 0, other-N in shard 1, interleaved."""
    project, now = fresh_project(sls_client, shards=2), int(time.time())
    sls_client.create_index(
        project,
        "ls",
        IndexConfig(
            line_config=IndexLineConfig([" "]),
            key_config_list={"m": IndexKeyConfig([" "], doc_value=True)},
        ),
    )
    for group in range(GROUPS):
        lines = [
            LogItem(now, [("m", f"line-{group * PER_GROUP + i:02d}")]) for i in range(PER_GROUP)
        ]
        sls_client.put_logs(PutLogsRequest(project, "ls", "t", "h1", lines, hashKey=SHARD_0))
        other = [LogItem(now, [("m", f"other-{group}")])]
        sls_client.put_logs(PutLogsRequest(project, "ls", "t", "h2", other, hashKey=SHARD_1))
    return project, now


def _hit(client: Any, project: str, now: int, message: str) -> dict[str, str]:
    query = f"m: {message} | with_pack_meta"
    logs = client.get_log(project, "ls", now - 60, now + 60, query=query).get_logs()
    assert [log.get_contents()["m"] for log in logs] == [message]
    contents: dict[str, str] = logs[0].get_contents()
    return contents


def _context(client: Any, project: str, hit: dict[str, str], back: int, forward: int) -> Any:
    return client.get_context_logs(
        project, "ls", hit["__tag__:__pack_id__"], hit["__pack_meta__"], back, forward
    )


def _messages(response: Any) -> list[str]:
    return [log.get_contents()["m"] for log in response.get_logs()]


def _lines(first: int, last: int) -> list[str]:
    return [f"line-{i:02d}" for i in range(first, last + 1)]


def test_context_around_a_hit(sls_client: Any, store: tuple[str, int]) -> None:
    project, now = store
    hit = _hit(sls_client, project, now, "line-05")
    assert hit["__tag__:__pack_id__"] == "0000000000000000-1"  # shard 0, second log group
    assert hit["__pack_meta__"].startswith("0|") and hit["__pack_meta__"].endswith("|1")
    response = _context(sls_client, project, hit, 3, 4)
    assert response.is_completed()
    assert _messages(response) == _lines(2, 9)  # across three log groups, shard 1 left out
    assert (response.get_total_lines(), response.get_back_lines()) == (8, 3)
    assert response.get_forward_lines() == 4
    numbers = [log.get_contents()["__index_number__"] for log in response.get_logs()]
    assert numbers == [str(n) for n in range(-3, 5)]
    assert all(log.get_time() == now for log in response.get_logs())
    assert {log.get_source() for log in response.get_logs()} == {"h1"}


def test_paging_further_from_the_ends_of_an_answer(sls_client: Any, store: tuple[str, int]) -> None:
    """As the SDK's sample does: every context log carries its own pack id and meta."""
    project, now = store
    around = _context(sls_client, project, _hit(sls_client, project, now, "line-06"), 2, 2)
    assert _messages(around) == _lines(4, 8)
    earliest, latest = around.get_logs()[0].get_contents(), around.get_logs()[-1].get_contents()
    backwards = _context(sls_client, project, earliest, 10, 0)
    assert _messages(backwards) == _lines(0, 4)
    assert (backwards.get_back_lines(), backwards.get_forward_lines()) == (4, 0)
    forwards = _context(sls_client, project, latest, 0, 10)
    assert _messages(forwards) == _lines(8, 11)
    assert (forwards.get_back_lines(), forwards.get_forward_lines()) == (0, 3)


def test_first_and_last_log_of_a_shard(sls_client: Any, store: tuple[str, int]) -> None:
    project, now = store
    first = _context(sls_client, project, _hit(sls_client, project, now, "line-00"), 5, 2)
    assert _messages(first) == _lines(0, 2)
    assert (first.get_back_lines(), first.get_forward_lines()) == (0, 2)
    last = _context(sls_client, project, _hit(sls_client, project, now, "line-11"), 2, 5)
    assert _messages(last) == _lines(9, 11)
    assert (last.get_back_lines(), last.get_forward_lines()) == (2, 0)
    alone = _context(sls_client, project, _hit(sls_client, project, now, "other-1"), 100, 100)
    assert _messages(alone) == ["other-0", "other-1", "other-2"]
    only = _context(sls_client, project, _hit(sls_client, project, now, "line-07"), 0, 0)
    assert _messages(only) == ["line-07"] and only.get_total_lines() == 1


def test_pack_fields_only_with_pack_meta(sls_client: Any, store: tuple[str, int]) -> None:
    project, now = store
    plain = sls_client.get_log(project, "ls", now - 60, now + 60, query="m: line-01")
    assert "__pack_meta__" not in plain.get_logs()[0].get_contents()
    assert "__tag__:__pack_id__" not in plain.get_logs()[0].get_contents()
    sls_client._get_logs_v2_enabled = False  # the v1 GET /logstores/{ls}?type=log
    assert _hit(sls_client, project, now, "line-01")["__pack_meta__"].endswith("|1")
    fails(
        "ParameterInvalid",
        400,
        lambda: sls_client.get_log(
            project, "ls", now - 60, now + 60, query="* | select count(*) | with_pack_meta"
        ),
    )


def test_a_pack_id_written_by_the_client_is_kept(sls_client: Any, store: tuple[str, int]) -> None:
    project, now = store
    line = LogItem(now, [("m", "line-12")])
    tags = [("__pack_id__", "5FA51423DDB54FDA-1E3")]
    sls_client.put_logs(
        PutLogsRequest(project, "ls", "t", "h1", [line], hashKey=SHARD_0, logtags=tags)
    )
    hit = _hit(sls_client, project, now, "line-12")
    assert hit["__tag__:__pack_id__"] == "5FA51423DDB54FDA-1E3"
    assert _messages(_context(sls_client, project, hit, 2, 2)) == _lines(10, 12)


def test_bad_context_requests_are_4xx(sls_client: Any, store: tuple[str, int]) -> None:
    project, now = store
    hit = _hit(sls_client, project, now, "line-05")
    pack_id, meta = hit["__tag__:__pack_id__"], hit["__pack_meta__"]
    cursor = meta.split("|")[1]

    def context(pack_id: str, pack_meta: str, back: int = 1, forward: int = 1) -> Any:
        return sls_client.get_context_logs(project, "ls", pack_id, pack_meta, back, forward)

    for back, forward in ((101, 1), (1, 101), (-1, 1)):
        fails("ParameterInvalid", 400, partial(context, pack_id, meta, back, forward))
    for bad_id in ("", "xyz", "12-", "G1-2"):
        fails("ParameterInvalid", 400, partial(context, bad_id, meta))
    for bad_meta in ("", "0|1", "0|%%%|1", "x|" + cursor + "|1", "0|" + cursor + "|1|0"):
        fails("ParameterInvalid", 400, partial(context, pack_id, bad_meta))
    # well formed, but no log is there
    for nowhere in ("0|MTIz|0", "0|" + cursor + "|4", "0|OTk5OTk5OTk5OTk5OTk5OTk5OQ==|0"):
        error = fails("ParameterInvalid", 400, partial(context, pack_id, nowhere))
        assert "no log" in error.get_error_message()
    fails("ShardNotExist", 404, lambda: context(pack_id, "7|" + cursor + "|0"))
    fails(
        "LogStoreNotExist",
        404,
        lambda: sls_client.get_context_logs(project, "no", pack_id, meta, 1, 1),
    )
