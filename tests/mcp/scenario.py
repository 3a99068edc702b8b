"""Drives `bpm mcp` with the official Python MCP client (pinned in
requirements.txt), the way an agent would.

    python3 tests/mcp/scenario.py BPM_BINARY BPM_HOME

Run by crates/cli/tests/mcp_client.rs; exits non-zero (with the failed
check's message) when anything is not as it should be.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings

from mcp import Client, StdioServerParameters

# resources/subscribe is deprecated from 2026-07-28 on; this scenario speaks 2025-11-25 on purpose.
warnings.filterwarnings("ignore", message="resources/subscribe")

BPM, HOME = sys.argv[1], sys.argv[2]
SESSION = "scenario-" + uuid.uuid4().hex[:8]
EXPECTED_TOOLS = {
    "start_background_process",
    "get_background_process_status",
    "list_background_processes",
    "get_process_output",
    "wait_for_process",
    "stop_background_process",
    "pause_background_process",
    "resume_background_process",
    "restart_background_process",
    "send_process_input",
    "track_operation",
    "update_operation_progress",
    "complete_operation",
    "fail_operation",
    "what_changed",
    "project_up",
    "project_down",
    "project_scale",
    "project_status",
}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def server(*args, home=None, session=None):
    env = {"BPM_HOME": home or HOME, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    if session:
        env["BPM_SESSION"] = session
    return StdioServerParameters(command=BPM, args=["mcp", *args], env=env)


def structured(result, tool):
    check(not result.is_error, f"{tool} failed: {result.content}")
    data = result.structured_content
    check(isinstance(data, dict), f"{tool}: no structuredContent: {result}")
    text = result.content[0].text
    if tool != "list_background_processes":
        check(json.loads(text) == data, f"{tool}: the text block is not the structured JSON")
    return data


async def call(client, tool, args, **kw):
    return structured(await client.call_tool(tool, args, **kw), tool)


async def error_of(client, tool, args):
    result = await client.call_tool(tool, args)
    check(result.is_error, f"{tool}({args}) should fail, got {result.structured_content}")
    return result.content[0].text


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def mcp_server_pids():
    """The `bpm mcp` processes serving this BPM_HOME."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) >= 2 and argv[1] == b"mcp" and b"BPM_HOME=" + HOME.encode() in env:
            pids.append(int(entry))
    return pids


async def scenario():
    updates = []

    async def on_message(message):
        params = getattr(getattr(message, "root", message), "params", None)
        uri = getattr(params, "uri", None)
        if uri is not None:
            updates.append(str(uri))

    async with Client(server(), mode="legacy", message_handler=on_message) as client:
        # 1. Initialize and list tools.
        check(client.protocol_version == "2025-11-25", f"negotiated {client.protocol_version}")
        tools = await client.list_tools()
        names = {t.name for t in tools.tools}
        check(names == EXPECTED_TOOLS, f"tools: {sorted(names ^ EXPECTED_TOOLS)} differ")
        for t in tools.tools:
            check(t.output_schema and t.input_schema.get("type") == "object", f"{t.name} schemas")
        print("1. initialized and listed", len(names), "tools")

        # 2. A small server that prints a ready line (and has a child), waited for by readiness.
        web = await call(client, "start_background_process", {
            "command": 'sleep 1000 & echo "child $!"; sleep 0.3; echo "listening on 127.0.0.1"; '
                       'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.1; done',
            "name": "web-" + SESSION,
            "kind": "server",
            "session": SESSION,
            "labels": {"role": "web"},
            "ready_pattern": "^listening on",
        })
        check(web["state"] in ("pending", "starting", "running"), f"web: {web['state']}")
        progress = []

        async def on_progress(value, total, message):
            progress.append((value, total, message))

        ready = await call(client, "wait_for_process",
                           {"process_id": web["id"], "until": "ready", "timeout_secs": 20})
        check(ready["condition_met"] and ready["state"] == "running", f"not ready: {ready}")
        print("2. the server is ready:", ready["reason"])

        # 3. Incremental reads: the second returns only what is new.
        first = await call(client, "get_process_output", {"process_id": web["id"]})
        check("listening on" in first["text"] and first["cursor"] == 0, f"first read: {first}")
        child_pid = int(first["text"].split("child ")[1].split()[0])
        await asyncio.sleep(0.5)
        second = await call(client, "get_process_output", {"process_id": web["id"]})
        check(second["cursor"] == first["next_cursor"], "the second read starts where the first ended")
        check("listening on" not in second["text"] and "tick" in second["text"], f"second: {second['text']!r}")
        # The first read may come before the first tick (a loaded machine).
        last_tick = max((int(line.split()[1]) for line in first["text"].splitlines() if line.startswith("tick")),
                        default=0)
        first_new = int(second["text"].split()[1])
        check(first_new == last_tick + 1, f"second read starts at tick {first_new}, after tick {last_tick}")
        again = await call(client, "get_process_output", {"process_id": web["id"], "cursor": 0, "max_bytes": 10})
        check(again["truncated"] and again["notice"] and again["text"] == first["text"][:10], "cursor reads re-read")
        grep = await call(client, "get_process_output", {"process_id": web["id"], "cursor": 0, "grep": "^listening"})
        check(grep["text"] == "listening on 127.0.0.1\n" and grep["matched_lines"] == 1, f"grep: {grep}")
        print("3. read", first["bytes"], "then", second["bytes"], "new bytes")

        # 4. A failing command: its own exit code, with progress notifications while waiting.
        bad = await call(client, "start_background_process", {
            "argv": ["sh", "-c", "echo oops >&2; sleep 1.5; exit 3"],
            "session": SESSION,
            "kind": "test_suite",
        })
        done = await call(client, "wait_for_process",
                          {"process_id": bad["id"], "until": "exit", "timeout_secs": 20},
                          progress_callback=on_progress)
        check(done["condition_met"] and done["exit_code"] == 3 and done["state"] == "failed", f"failing: {done}")
        check("oops" in done["output_tail"], f"tail: {done['output_tail']!r}")
        check(progress and progress[0][1] == 20, f"progress notifications: {progress}")
        print("4. the failing command ended", done["state"], "with exit code", done["exit_code"],
              "after", len(progress), "progress notifications")

        # 5. Stop the server: it and its child are gone when the call returns.
        status = await call(client, "get_background_process_status", {"process_id": web["id"]})
        pid = status["pid"]
        check(alive(pid) and alive(child_pid), "the server and its child run")
        stopped = await call(client, "stop_background_process", {"process_id": web["id"]})
        check(stopped["process"]["state"] == "cancelled", f"stopped: {stopped['process']['state']}")
        check("tick" in stopped["output_tail"], "the stop answer carries the output's tail")
        check(not alive(pid) and not alive(child_pid), f"survivors: {pid} {child_pid}")
        again = await call(client, "stop_background_process", {"process_id": web["id"]})
        check(again["process"]["state"] == "cancelled", "stopping twice is harmless")
        print("5. stopped the server; pids", pid, child_pid, "are gone")

        # 6. Lists with filters.
        listing = await call(client, "list_background_processes", {"session": SESSION})
        check(listing["count"] == 2, f"session list: {listing['count']}")
        failed = await call(client, "list_background_processes", {"session": SESSION, "state": "failed"})
        check([p["id"] for p in failed["processes"]] == [bad["id"]], "state filter")
        labelled = await call(client, "list_background_processes", {"label": "role=web", "limit": 5})
        check(web["id"] in [p["id"] for p in labelled["processes"]], "label filter")
        kinds = await call(client, "list_background_processes", {"session": SESSION, "kind": "test_suite"})
        check([p["id"] for p in kinds["processes"]] == [bad["id"]], "kind filter")
        print("6. lists filtered by session, state, label and kind")

        # 6b. One question instead of polling: what changed since the last asking.
        changed = await call(client, "what_changed", {"session": SESSION})
        told = {(c["process_id"], c["change"]) for c in changed["changes"]}
        check((bad["id"], "failed") in told and (web["id"], "cancelled") in told, f"what_changed: {changed}")
        failed_change = next(c for c in changed["changes"] if c["process_id"] == bad["id"])
        check(failed_change["exit_code"] == 3 and "oops" in failed_change["output_tail"], f"the failure: {failed_change}")
        again = await call(client, "what_changed", {"session": SESSION})
        check(again["count"] == 0 and again["left_out"] == 0, f"told once: {again}")
        print("6b. what_changed told", changed["count"], "changes once")

        # 7. Bad arguments are tool errors naming what was wrong.
        message = await error_of(client, "get_background_process_status", {"process_id": "no-such-process"})
        check("no-such-process" in message, message)
        message = await error_of(client, "start_background_process", {"cwd": "/"})
        check("missing command" in message, message)
        message = await error_of(client, "wait_for_process", {"process_id": bad["id"], "until": "pattern", "pattern": "("})
        check("invalid pattern regex" in message, message)
        message = await error_of(client, "start_background_process", {"command": "true", "timeout_minutes": 3})
        check("unknown field `timeout_minutes`" in message, message)
        message = await error_of(client, "start_background_process", {"command": "true", "cwd": "/no/such/dir"})
        check("/no/such/dir" in message, message)
        message = await error_of(client, "pause_background_process", {"process_id": bad["id"]})
        check("failed" in message, message)
        print("7. bad arguments answered with isError")

        # Resources: the record and its output, and a notification when it changes.
        sleeper = await call(client, "start_background_process", {
            "argv": ["sleep", "300"], "session": SESSION, "name": "sleeper-" + SESSION})
        uri = f"bpm://process/{sleeper['id']}"
        resources = await client.list_resources()
        check(uri in [str(r.uri) for r in resources.resources], "the sleeper is a resource")
        read = await client.read_resource(uri)
        check(json.loads(read.contents[0].text)["id"] == sleeper["id"], "resource read")
        out = await client.read_resource(f"bpm://process/{web['id']}/output")
        check("listening on" in out.contents[0].text, "output resource")
        await client.subscribe_resource(uri)
        await call(client, "pause_background_process", {"process_id": sleeper["id"]})
        await call(client, "resume_background_process", {"process_id": sleeper["id"]})
        for _ in range(100):
            if uri in updates:
                break
            await asyncio.sleep(0.05)
        check(uri in updates, f"no resources/updated for {uri}: {updates}")
        print("   resources: listed, read, and", updates.count(uri), "update notifications")

    # 8. Kill the MCP server: the processes are still there for the next one.
    pids_before = mcp_server_pids()
    check(pids_before == [], f"the first server is still running: {pids_before}")
    async with Client(server(), mode="legacy") as client:
        pids = mcp_server_pids()
        check(len(pids) == 1, f"bpm mcp servers: {pids}")
        os.kill(pids[0], signal.SIGKILL)
    async with Client(server(), mode="legacy") as client:
        listing = await call(client, "list_background_processes", {"session": SESSION})
        by_id = {p["id"]: p for p in listing["processes"]}
        check(by_id[sleeper["id"]]["state"] == "running" and alive(by_id[sleeper["id"]]["pid"]),
              "the sleeper survived the MCP server")
        check(by_id[bad["id"]]["exit_code"] == 3, "finished records are kept")
        fresh = await call(client, "get_process_output", {"process_id": bad["id"]})
        check("oops" in fresh["text"], "a new client session reads from the start")
        print("8. after kill -9 of bpm mcp, a new server sees", listing["count"], "processes")

        # The daemon restarts under a running MCP server: it reconnects, and the process was adopted.
        env = {**os.environ, "BPM_HOME": HOME}
        subprocess.run([BPM, "daemon", "stop"], env=env, check=True, capture_output=True)
        status = await call(client, "get_background_process_status", {"process_id": sleeper["id"]})
        check(status["state"] == "running" and alive(status["pid"]), f"after a daemon restart: {status}")
        await call(client, "stop_background_process", {"process_id": sleeper["id"], "force": True})
        print("   the server reconnected to a new daemon, which adopted the sleeper")


async def modern():
    """The stateless revision (2026-07-28, no initialize) and its subscriptions."""
    async with Client(server("--read-only"), mode="auto") as client:
        check(client.protocol_version == "2026-07-28", f"auto negotiated {client.protocol_version}")
        names = {t.name for t in (await client.list_tools()).tools}
        check("start_background_process" not in names and "get_process_output" in names,
              f"read-only tools: {sorted(names)}")
        message = await error_of(client, "start_background_process", {"command": "true"})
        check("read-only" in message, message)
        listing = await call(client, "list_background_processes", {"session": SESSION})
        check(listing["count"] == 3, f"modern list: {listing['count']}")
    print("9. the 2026-07-28 revision works without initialize; read-only refuses start")


async def until_ended(client, pid_of, within):
    deadline = time.monotonic() + within
    while True:
        status = await call(client, "get_background_process_status", {"process_id": pid_of})
        if status["ended_at"] is not None or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)


async def owners():
    """What a client starts is owned by its session: stopped once the
    client has been gone for `[mcp] owner_grace`, unless it said
    `persistent` or came back under the same session in time."""
    home = os.path.join(HOME, "owners")
    os.makedirs(home, mode=0o700, exist_ok=True)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write('[mcp]\nowner_grace = "3s"\n')
    try:
        gone, back = "gone-" + uuid.uuid4().hex[:6], "back-" + uuid.uuid4().hex[:6]
        async with Client(server(home=home, session=gone), mode="legacy") as client:
            owned = await call(client, "start_background_process", {"command": "sleep 300"})
            kept = await call(client, "start_background_process",
                              {"command": "sleep 300", "persistent": True})
        # The client closed stdin: bpm mcp exits, and the session is gone.
        async with Client(server(home=home, session=back), mode="legacy") as client:
            mine = await call(client, "start_background_process", {"command": "sleep 300"})
        async with Client(server(home=home, session=back), mode="legacy") as client:
            ended = await until_ended(client, owned["id"], 15)
            check(ended["state"] == "cancelled" and ended["error"] == "owner gone",
                  f"a gone client's process: {ended}")
            check(not alive(owned["pid"]), "its process is gone")
            status = await call(client, "get_background_process_status", {"process_id": kept["id"]})
            check(status["state"] == "running", f"persistent: {status}")
            status = await call(client, "get_background_process_status", {"process_id": mine["id"]})
            check(status["state"] == "running", f"taken back in time: {status}")
            check(status["spec"]["owners"] == [f"session:{back}"], f"owners: {status['spec']}")
            for p in (kept, mine):
                await call(client, "stop_background_process", {"process_id": p["id"], "force": True})
        print("10. a gone client's process stopped after the grace; persistent and taken-back ones ran on")
    finally:
        env = {**os.environ, "BPM_HOME": home}
        subprocess.run([BPM, "daemon", "stop", "--kill-all"], env=env, capture_output=True)


async def projects():
    """An agent makes sure a dev stack is up with one call, safely repeated."""
    home = os.path.join(HOME, "projects")
    stack = os.path.join(HOME, "stack")
    os.makedirs(home, mode=0o700, exist_ok=True)
    os.makedirs(stack, exist_ok=True)
    with open(os.path.join(stack, "bpm.toml"), "w") as f:
        f.write(
            '[project]\nname = "dev"\n'
            '[services.db]\ncommand = "echo ready; exec sleep 300"\nready = { log = "ready" }\n'
            '[services.api]\ncommand = "exec sleep 300"\ndepends_on = { db = "ready" }\n'
        )
    try:
        params = server(home=home)
        params.cwd = stack
        async with Client(params, mode="legacy") as client:
            up = await call(client, "project_up", {})
            check(up["up"] is True and [s["action"] for s in up["steps"]] == ["started", "started"],
                  f"project_up: {up}")
            again = await call(client, "project_up", {"project": "dev"})
            check([s["action"] for s in again["steps"]] == ["kept", "kept"], f"again: {again}")
            status = await call(client, "project_status", {"project": "dev"})
            states = {s["service"]: (s["state"], s["ready"]) for s in status["services"]}
            check(states == {"db": ("running", True), "api": ("running", True)}, f"status: {status}")
            api = status["services"][[s["service"] for s in status["services"]].index("api")]["process_id"]
            wider = await call(client, "project_scale", {"service": "api", "replicas": 3})
            check([(s["service"], s["action"]) for s in wider["steps"]]
                  == [("api.2", "started"), ("api.3", "started")], f"scale up: {wider}")
            status = await call(client, "project_status", {"project": "dev"})
            running = {s["service"]: s["process_id"] for s in status["services"] if s["state"] == "running"}
            check(set(running) == {"db", "api", "api.2", "api.3"} and running["api"] == api,
                  f"scaled, api untouched: {status}")
            narrower = await call(client, "project_scale", {"project": "dev", "service": "api", "replicas": 1})
            check([s["service"] for s in narrower["steps"]] == ["api.3", "api.2"], f"scale down: {narrower}")
            refused = await error_of(client, "project_scale", {"service": "api", "replicas": -1})
            check("from 1 to 1000" in refused, f"a negative scale: {refused}")
            down = await call(client, "project_down", {})
            check([s["service"] for s in down["steps"]] == ["api", "db"], f"down: {down}")
        print("11. project_up brought a stack up once, kept it on a repeat, project_scale scaled a service without touching it, and project_down stopped it")
    finally:
        env = {**os.environ, "BPM_HOME": home}
        subprocess.run([BPM, "daemon", "stop", "--kill-all"], env=env, capture_output=True)


async def main():
    started = time.monotonic()
    await scenario()
    await modern()
    await owners()
    await projects()
    print(f"scenario passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
