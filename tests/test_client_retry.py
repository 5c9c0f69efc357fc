"""The retry policy: which failures are sent again, and how long the client waits.

``httpx.MockTransport`` stands in for a server that throttles, fails or cannot be
reached; the policy's injected ``sleep`` records waits instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from logharbor import (
    AsyncLogClient,
    ClientError,
    LogClient,
    LogHarborError,
    NotFoundError,
    RetryPolicy,
    ServerError,
    ThrottledError,
    TransportError,
)

PROJECT = {"name": "web", "description": "", "createTime": 1, "updateTime": 1}

# What the fake server does for one request: answer (status, error code) or fail.
Outcome = tuple[int, str] | httpx.HTTPError

OK = (200, "")
THROTTLED = (429, "WriteQuotaExceed")
INTERNAL = (500, "InternalServerError")
BUSY = (503, "ServerBusy")


class Script:
    """A fake server answering each request with the next outcome in turn."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, httpx.HTTPError):
            raise outcome
        status, code = outcome
        if status == 200:
            return httpx.Response(200, json=PROJECT)
        body = {"errorCode": code, "errorMessage": code, "requestId": "R"}
        return httpx.Response(status, json=body)


def no_jitter(max_retries: int = 3) -> tuple[RetryPolicy, list[float]]:
    waits: list[float] = []
    return RetryPolicy(max_retries=max_retries, sleep=waits.append, random=lambda: 0.0), waits


def client_for(script: Script, retry: RetryPolicy) -> LogClient:
    return LogClient(
        "http://logharbor.test",
        access_key_id="AKID",
        access_key_secret="secret",
        retry=retry,
        transport=httpx.MockTransport(script),
    )


@pytest.mark.parametrize(
    "failure",
    [THROTTLED, INTERNAL, BUSY, httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
    ids=["429", "500", "503", "connect-error", "read-timeout"],
)
def test_throttling_server_errors_and_lost_connections_are_retried(failure: Outcome) -> None:
    script = Script(failure, failure, OK)
    retry, waits = no_jitter()

    with client_for(script, retry) as client:
        project = client.get_project("web")

    assert project.name == "web"
    assert len(script.requests) == 3
    assert waits == [0.1, 0.2]


@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        ((400, "ParameterInvalid"), ClientError),
        ((404, "ProjectNotExist"), NotFoundError),
        ((401, "SignatureNotMatch"), ClientError),
    ],
    ids=["400", "404", "401"],
)
def test_other_client_errors_are_never_retried(
    failure: Outcome, raised: type[LogHarborError]
) -> None:
    script = Script(failure, OK)
    retry, waits = no_jitter()

    with client_for(script, retry) as client, pytest.raises(raised):
        client.get_project("web")

    assert len(script.requests) == 1
    assert waits == []


def test_the_client_gives_up_after_max_retries_with_the_last_error() -> None:
    script = Script(BUSY, BUSY, BUSY)
    retry, waits = no_jitter(max_retries=2)

    with client_for(script, retry) as client, pytest.raises(ServerError) as raised:
        client.get_project("web")

    assert raised.value.code == "ServerBusy"
    assert len(script.requests) == 3
    assert len(waits) == 2


def test_no_retries_at_all_when_max_retries_is_zero() -> None:
    script = Script(THROTTLED, OK)
    retry, waits = no_jitter(max_retries=0)

    with client_for(script, retry) as client, pytest.raises(ThrottledError):
        client.get_project("web")

    assert len(script.requests) == 1
    assert waits == []


def test_every_attempt_is_signed_and_carries_the_same_body() -> None:
    script = Script(INTERNAL, OK)
    retry, _ = no_jitter()

    with client_for(script, retry) as client:
        client.create_project("web", "a description")

    first, second = script.requests
    assert first.content == second.content
    assert all(r.headers["authorization"].startswith("LH1-HMAC-SHA256 ") for r in script.requests)


def test_a_connection_that_cannot_be_made_raises_a_transport_error_after_retrying() -> None:
    script = Script(*[httpx.ConnectError("refused")] * 4)
    retry, waits = no_jitter()

    with client_for(script, retry) as client, pytest.raises(TransportError) as raised:
        client.list_projects()

    assert raised.value.code == "ConnectError"
    assert raised.value.retryable
    assert len(waits) == 3


async def test_the_async_client_retries_the_same_way() -> None:
    script = Script(THROTTLED, (502, "BadGateway"), OK)
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    retry = RetryPolicy(async_sleep=record, random=lambda: 0.0)
    async with AsyncLogClient(
        "http://logharbor.test", retry=retry, transport=httpx.MockTransport(script)
    ) as client:
        project = await client.get_project("web")

    assert project.name == "web"
    assert waits == [0.1, 0.2]


async def test_the_async_client_does_not_retry_a_404() -> None:
    script = Script((404, "ProjectNotExist"), OK)
    async with AsyncLogClient(
        "http://logharbor.test", transport=httpx.MockTransport(script)
    ) as client:
        with pytest.raises(NotFoundError):
            await client.get_project("web")

    assert len(script.requests) == 1


# --------------------------------------------------------------- backoff


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(backoff_base=0.1, backoff_max=1.0, jitter=0.0)

    assert [policy.backoff(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.backoff(10_000) == 1.0


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_jitter_only_ever_shortens_the_wait(draw: float) -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=1.0, jitter=0.5, random=lambda: draw)

    assert 0.5 <= policy.backoff(0) <= 1.0
    assert policy.backoff(0) == pytest.approx(1.0 - 0.5 * draw)


def test_the_policy_decides_from_the_errors_retryability_and_the_retries_done() -> None:
    policy = RetryPolicy(max_retries=2, jitter=0.0)
    throttled = ThrottledError("slow down", code="WriteQuotaExceed", status=429)
    not_found = NotFoundError("no such project", code="ProjectNotExist", status=404)

    assert policy.delay_before_retry(throttled, 0) == 0.1
    assert policy.delay_before_retry(throttled, 1) == 0.2
    assert policy.delay_before_retry(throttled, 2) is None
    assert policy.delay_before_retry(not_found, 0) is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryPolicy(max_retries=-1),
        lambda: RetryPolicy(backoff_base=-0.1),
        lambda: RetryPolicy(jitter=1.5),
    ],
)
def test_a_policy_refuses_nonsense_settings(make: Callable[[], RetryPolicy]) -> None:
    with pytest.raises(ValueError):
        make()
