"""Drives `bpm mcp --http` with the official Python MCP client (pinned in
requirements.txt) and with plain HTTP requests.

    python3 tests/mcp/http_scenario.py BPM_BINARY BPM_HOME URL

BPM_HOME's config.toml sets `[mcp] owner_grace = "2s"`; URL is the endpoint
`bpm mcp --http` printed. Run by crates/cli/tests/mcp_client.rs; exits
non-zero (with the failed check's message) when anything is not as it
should be.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.parse
import warnings

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

warnings.filterwarnings("ignore")

BPM, HOME, URL = sys.argv[1], sys.argv[2], sys.argv[3]
TOKEN = open(os.path.join(HOME, "mcp-token")).read().strip()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "http-scenario", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def client(mode):
    http = create_mcp_http_client(headers=AUTH)
    return Client(streamable_http_client(URL, http_client=http), mode=mode)


def record(name):
    out = subprocess.run(
        [BPM, "show", name, "--json"],
        env={**os.environ, "BPM_HOME": HOME},
        capture_output=True,
        text=True,
    )
    check(out.returncode == 0, f"bpm show {name}: {out.stderr}")
    return json.loads(out.stdout)


def until(what, condition, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


def ended(name):
    return record(name)["state"] in ("completed", "failed", "timed_out", "cancelled", "lost")


def refusals():
    host = urllib.parse.urlsplit(URL).netloc
    cases = [
        ("no token", {}, 401),
        ("a wrong token", {"Authorization": "Bearer " + "0" * len(TOKEN)}, 401),
        ("another origin", {**AUTH, "Origin": "http://evil.example"}, 403),
        ("another host", {**AUTH, "Host": "evil.example"}, 403),
        ("another port's origin", {**AUTH, "Origin": "http://127.0.0.1:1"}, 403),
    ]
    with httpx2.Client() as http:
        for what, headers, status in cases:
            r = http.post(URL, json=INIT, headers={**ACCEPT, **headers})
            check(r.status_code == status, f"{what}: HTTP {r.status_code}, not {status}")
            check(TOKEN not in r.text, f"{what}: the answer quotes the token")
            check("mcp-session-id" not in r.headers, f"{what}: a session was opened")
        r = http.post(URL, json=INIT, headers={**ACCEPT, **AUTH, "Host": host})
        check(r.status_code == 200, f"the token, this host: HTTP {r.status_code}")
    print("1. refused: no token, a wrong token, another origin, another host (401/403)")


async def two_sessions():
    """Two clients at once, each the owner of what it starts."""
    a, b = client("legacy"), client("legacy")
    async with a, b:
        check(a.protocol_version == "2025-11-25", f"negotiated {a.protocol_version}")
        ra = await a.call_tool("start_background_process", {"command": "sleep 300", "name": "http-a"})
        rb = await b.call_tool("start_background_process", {"command": "sleep 300", "name": "http-b"})
        check(not ra.is_error and not rb.is_error, f"starts: {ra.content} {rb.content}")
        owners_a, owners_b = record("http-a")["spec"]["owners"], record("http-b")["spec"]["owners"]
        check(len(owners_a) == 1 and owners_a[0].startswith("session:mcp-http-"), f"a's owners: {owners_a}")
        check(owners_a != owners_b, f"a and b share an owner: {owners_a}")
        listed = await a.call_tool("list_background_processes", {})
        names = {p["name"] for p in listed.structured_content["processes"]}
        check({"http-a", "http-b"} <= names, f"a sees {names}")
    print("2. two sessions at once, each the owner of what it started:", owners_a[0], owners_b[0])


async def grace_per_session():
    """A session that ends lets go of what it started, after the grace;
    another session's processes run on."""
    b = client("legacy")
    async with b:
        await b.call_tool("start_background_process", {"command": "sleep 300", "name": "http-c"})
        async with client("legacy") as a:
            await a.call_tool("start_background_process", {"command": "sleep 300", "name": "http-d"})
        # a closed its session (DELETE): its process goes after the 2 s grace.
        time.sleep(1.0)
        check(not ended("http-d"), "a's process was stopped before its grace")
        until("a's process stopped after its session ended", lambda: ended("http-d"))
        check(not ended("http-c"), "b's process was stopped although b is still connected")
    until("b's process stopped after b left", lambda: ended("http-c"))
    print("3. each session's owner grace: a's process stopped after a left, b's ran until b left")


async def modern_client():
    """A 2026-07-28 client has no session: what it starts is the endpoint's."""
    async with client("auto") as c:
        check(c.protocol_version == "2026-07-28", f"negotiated {c.protocol_version}")
        r = await c.call_tool("start_background_process", {"command": "sleep 300", "name": "http-e"})
        check(not r.is_error, f"start: {r.content}")
        owners = record("http-e")["spec"]["owners"]
        check(owners == ["session:mcp-http"], f"a sessionless client's start is owned by {owners}")
        w = await c.call_tool("stop_background_process", {"process_id": "http-e"})
        check(not w.is_error, f"stop: {w.content}")
    print("4. a 2026-07-28 client (no session): served, its start owned by the endpoint")


def resume_with_last_event_id():
    """A response stream cut short is taken up again with Last-Event-ID."""
    with httpx2.Client(timeout=30) as http:
        r = http.post(URL, json=INIT, headers={**ACCEPT, **AUTH})
        session = r.headers["mcp-session-id"]
        head = {**ACCEPT, **AUTH, "Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-11-25"}
        http.post(URL, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=head)
        start = {
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "start_background_process",
                       "arguments": {"command": "sleep 1.5; echo done", "name": "http-f"}},
        }
        r = http.post(URL, json=start, headers=head)
        check(r.status_code == 200, f"start: HTTP {r.status_code}")
        wait = {
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "wait_for_process", "arguments": {"process_id": "http-f", "until": "exit", "timeout_secs": 20}},
        }
        # Read the stream's first event (its id), then drop the connection
        # while the wait is still under way.
        last_id = None
        with http.stream("POST", URL, json=wait, headers=head) as s:
            for line in s.iter_lines():
                if line.startswith("id:"):
                    last_id = line[3:].strip()
                    break
        check(last_id, "the response stream carried no event id")
        answer = None
        with http.stream("GET", URL, headers={**head, "Last-Event-ID": last_id}) as s:
            check(s.status_code == 200, f"resume: HTTP {s.status_code}")
            for line in s.iter_lines():
                if line.startswith("data:") and line[5:].strip():
                    message = json.loads(line[5:])
                    if message.get("id") == 3:
                        answer = message
                        break
        check(answer is not None, "the resumed stream never carried the answer")
        result = answer["result"]["structuredContent"]
        check(result.get("exit_code") == 0, f"the resumed answer: {result}")
        http.delete(URL, headers=head)
    print("5. a stream cut short resumed with Last-Event-ID: the wait's answer arrived")


class Session:
    """A session opened by hand (raw JSON-RPC over HTTP), for requests the
    pinned client has no call for: the tasks extension's."""

    def __init__(self, http, capabilities):
        init = {**INIT, "params": {**INIT["params"], "capabilities": capabilities}}
        r = http.post(URL, json=init, headers={**ACCEPT, **AUTH})
        check(r.status_code == 200, f"initialize: HTTP {r.status_code}")
        self.http, self.next_id = http, 10
        self.head = {**ACCEPT, **AUTH, "Mcp-Session-Id": r.headers["mcp-session-id"],
                     "Mcp-Protocol-Version": "2025-11-25"}
        http.post(URL, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.head)

    def request(self, method, params):
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        r = self.http.post(URL, json=body, headers=self.head)
        check(r.status_code == 200, f"{method}: HTTP {r.status_code}")
        for line in r.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if message.get("id") == self.next_id:
                    return message
        raise AssertionError(f"{method}: no answer in {r.text!r}")

    def close(self):
        self.http.delete(URL, headers=self.head)


def tasks_over_http():
    """The tasks extension's requests, sent by hand: a start answered with a
    task, polled, refused to another session, cancelled with its tree."""
    tasks_ext = {"extensions": {"io.modelcontextprotocol/tasks": {}}}
    with httpx2.Client(timeout=30) as http:
        mine, other = Session(http, tasks_ext), Session(http, tasks_ext)
        started = mine.request("tools/call", {
            "name": "start_background_process",
            "arguments": {"command": "trap '' TERM; sleep 300 & trap '' TERM; sleep 300",
                          "name": "http-task", "grace": "1s"},
        })["result"]
        check(started.get("resultType") == "task", f"not a task: {started}")
        task = started["taskId"]
        polled = mine.request("tasks/get", {"taskId": task})["result"]
        check(polled["status"] == "working" and polled.get("pollIntervalMs"), f"tasks/get: {polled}")
        refused = other.request("tasks/get", {"taskId": task})
        check("error" in refused and task in refused["error"]["message"],
              f"another session read the task: {refused}")
        pids = [record("http-task")["pid"]]
        ok = mine.request("tasks/cancel", {"taskId": task})
        check("error" not in ok, f"tasks/cancel: {ok}")
        until("the task cancelled", lambda: mine.request("tasks/get", {"taskId": task})["result"]["status"] == "cancelled")
        check(not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split(")")[-1].split()[0] != "Z"
                      for p in pids), "the TERM-ignoring leader outlived tasks/cancel")
        mine.close()
        other.close()
    print("6. tasks over HTTP: a start answered with task", task, "polled, refused to another session, cancelled")


async def main():
    refusals()
    await two_sessions()
    await grace_per_session()
    await modern_client()
    resume_with_last_event_id()
    tasks_over_http()


asyncio.run(main())
