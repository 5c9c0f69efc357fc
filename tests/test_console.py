"""The web console's files, and its request signing checked against the server's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from harness import ServerProcess
from logharbor.protocol import signing

CONSOLE = Path(__file__).parents[1] / "src" / "logharbor" / "console"


def test_the_console_is_served_with_headers_that_keep_it_to_this_origin(
    server: ServerProcess,
) -> None:
    page = httpx.get(server.endpoint + "/console/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(server.endpoint + "/console/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(server.endpoint + "/console/console.css").status_code == 200


def test_the_console_address_without_a_slash_redirects(server: ServerProcess) -> None:
    answer = httpx.get(server.endpoint + "/console")
    assert answer.status_code == 308
    assert answer.headers["location"] == "/console/"


def test_a_missing_console_file_is_a_json_404_and_nothing_outside_is_served(
    server: ServerProcess,
) -> None:
    missing = httpx.get(server.endpoint + "/console/nothing.js")
    assert missing.status_code == 404
    assert missing.json()["errorCode"] == "NotFound"
    # the access keys sit in the data directory, and the package's Python files
    # beside the console's folder: neither is reachable
    for path in ("/console/../access-keys.json", "/console/%2e%2e/__init__.py"):
        answer = httpx.get(server.endpoint + path)
        assert answer.status_code == 404, path


def test_no_console_when_it_is_turned_off(server_factory: Callable[..., ServerProcess]) -> None:
    quiet = server_factory(auth=False, extra_args=["--no-console"])
    assert httpx.get(quiet.endpoint + "/console/").status_code == 404
    assert "web console" not in "".join(quiet.banner)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("LOGHARBOR_REQUIRE_BROWSER"):  # set by .ci/run
            raise RuntimeError("Node.js is required (apt-get install nodejs)")
        pytest.skip("Node.js is not installed (.ci/run installs it)")
    return node


# node -e SCRIPT API_JS_URL ...: the console's own signing code, run by Node.js
_SIGN = """
const { signHeaders, canonicalQuery } = await import(process.argv[1]);
const cases = JSON.parse(process.argv[2]);
const out = cases.map(([method, path, params, body]) => ({
  query: canonicalQuery(params),
  headers: signHeaders({ keyId: "AKID", secret: "s3cret/é" }, method, path, params, body,
                       new Date(Date.UTC(2026, 11, 6, 4, 5, 6, 789))),
}));
console.log(JSON.stringify(out));
"""
_SIGN_NOW = """
const { signHeaders } = await import(process.argv[1]);
const [keyId, secret, params] = process.argv.slice(2);
const headers = signHeaders({ keyId, secret }, "GET", "/api/v1/projects", JSON.parse(params),
                            "", new Date());
console.log(JSON.stringify(headers));
"""
API_JS = (CONSOLE / "api.js").as_uri()


def _run_node(script: str, *args: str) -> str:
    run = subprocess.run(
        [_node(), "--input-type=module", "-e", script, API_JS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return run.stdout


_CASES = [
    ["GET", "/api/v1/projects", [["size", "500"]], ""],
    [
        "GET",
        "/api/v1/projects/web/logstores/a/shards/0/logs",
        [["cursor", "MTIz"], ["wait", "0"], ["format", "json"], ["count", "100"]],
        "",
    ],
    # characters encodeURIComponent leaves alone but RFC 3986 escapes, unicode, repeats
    ["GET", "/api/v1/x", [["q", "a b!'()*~"], ["q", "é/ü"], ["A", "+="]], ""],
    [
        "POST",
        "/api/v1/projects/web/logstores/a/query",
        [],
        json.dumps({"query": "status: 500 | select 'ü'", "from": 1, "to": 2}),
    ],
]


def test_the_console_signs_requests_as_the_server_checks_them() -> None:
    answers = json.loads(_run_node(_SIGN, json.dumps(_CASES)))
    for (method, path, params, body), got in zip(_CASES, answers, strict=True):
        pairs = [(k, v) for k, v in params]
        assert got["query"] == signing.canonical_query(pairs)
        expected = signing.sign_headers(
            access_key_id="AKID",
            secret="s3cret/é",
            method=method,
            path=path,
            params=pairs,
            body=body.encode(),
            now=signing.parse_date("20261206T040506Z"),
        )
        assert got["headers"] == expected


def test_a_request_the_console_signs_is_accepted(server: ServerProcess) -> None:
    params = [["size", "500"], ["offset", "0"]]
    signed = _run_node(
        _SIGN_NOW, server.access_key_id, server.access_key_secret, json.dumps(params)
    )
    headers = json.loads(signed)
    answer = httpx.get(server.endpoint + "/api/v1/projects", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    headers["authorization"] = headers["authorization"][:-1] + (
        "0" if headers["authorization"][-1] != "0" else "1"
    )
    forged = httpx.get(server.endpoint + "/api/v1/projects", params=params, headers=headers)
    assert forged.status_code == 401


_SKEW = """
const api = await import(process.argv[1]);
const AHEAD = 3600 * 1000; // the server's clock is an hour ahead of this one
const dates = [];
globalThis.fetch = async (url, init) => {
  const now = Date.now() + AHEAD;
  const date = init.headers["x-lh-date"];
  const sent = /^(\\d{4})(\\d\\d)(\\d\\d)T(\\d\\d)(\\d\\d)(\\d\\d)Z$/.exec(date);
  const when = Date.UTC(+sent[1], +sent[2] - 1, +sent[3], +sent[4], +sent[5], +sent[6]);
  dates.push(Math.round((when - Date.now()) / 60000));
  const headers = new Headers({ date: new Date(now).toUTCString() });
  if (Math.abs(when - now) > 15 * 60 * 1000) {
    const refusal = { errorCode: "RequestTimeExpired", errorMessage: "skew", requestId: "r" };
    return new Response(JSON.stringify(refusal), { status: 403, headers });
  }
  return new Response('{"projects": [], "count": 0, "total": 0}', { status: 200, headers });
};
const client = new api.Api({ keyId: "k", secret: "s" });
await client.projects();
await client.projects();
console.log(JSON.stringify({ dates, ahead: Math.round((api.serverNow() - Date.now()) / 60000) }));
"""


def test_the_console_signs_with_the_servers_clock_when_its_own_is_off() -> None:
    """A browser an hour behind: the first request is refused as expired, the
    console learns the server's time from the answer and tries once more; after
    that it signs on time at once."""
    answer = json.loads(_run_node(_SKEW))
    assert answer == {"dates": [0, 60, 60], "ahead": 60}
