"""Drives real stdio MCP servers from npm through `bpm mcp-run`, with the
official Python MCP client (pinned in requirements.txt), as an agent tool
would start them.

    python3 tests/mcp/mcp_run_scenario.py BPM_BINARY BPM_HOME NODE_MODULES

NODE_MODULES holds @modelcontextprotocol/server-filesystem, server-memory
and server-everything (tests/run.sh installs them under target/npm). Run by
crates/cli/tests/mcp_client.rs; exits non-zero (with the failed check's
message) when anything is not as it should be.
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

from mcp import Client, StdioServerParameters

BPM, HOME, MODULES = sys.argv[1], sys.argv[2], sys.argv[3]
ENV = {"BPM_HOME": HOME, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
       # server-memory's graph, kept in the test's own folder.
       "MEMORY_FILE_PATH": os.path.join(HOME, "memory.jsonl")}


def server_js(package):
    with open(os.path.join(MODULES, "@modelcontextprotocol", package, "package.json")) as f:
        bin_ = json.load(f)["bin"]
    path = bin_ if isinstance(bin_, str) else next(iter(bin_.values()))
    return os.path.join(MODULES, "@modelcontextprotocol", package, path)


FILESYSTEM, MEMORY, EVERYTHING = (server_js(p) for p in ("server-filesystem", "server-memory", "server-everything"))


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def bpm(*args):
    out = subprocess.run([BPM, *args], env={**os.environ, **ENV}, capture_output=True, text=True)
    check(out.returncode == 0, f"bpm {' '.join(args)}: {out.stderr}")
    return out.stdout


def hosted(all_=False):
    return json.loads(bpm("ps", "--kind", "mcp", "--json", *(["--all"] if all_ else [])))


def label(record, key):
    return record["spec"]["labels"].get(key)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def pids_running(fragment):
    """Processes whose command line holds `fragment`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    line = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if fragment in line and "mcp-run" not in line and "mcp-hub" not in line and "mcp-pipe" not in line:
                found.append(int(entry))
    return found


def until(what, condition, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


def run_params(*words, shared=False, grace=None):
    args = ["mcp-run"]
    if shared:
        args.append("--shared")
    if grace:
        args += ["--grace", grace]
    return StdioServerParameters(command=BPM, args=[*args, "--", *words], env=ENV)


async def filesystem_through_mcp_run():
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "note.txt"), "w") as f:
            f.write("hosted by bpm\n")
        async with Client(run_params("node", FILESYSTEM, root)) as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            check("read_text_file" in tools or "read_file" in tools, f"filesystem tools: {sorted(tools)}")
            name = "read_text_file" if "read_text_file" in tools else "read_file"
            read = await c.call_tool(name, {"path": os.path.join(root, "note.txt")})
            check(not read.is_error and "hosted by bpm" in read.content[0].text, f"read: {read.content}")
            live = [r for r in hosted() if label(r, "mcp.server", ) and FILESYSTEM in label(r, "mcp.server")]
            check(len(live) == 1 and live[0]["state"] == "running", f"records: {live}")
            caller = label(live[0], "mcp.caller")
            check(caller.split()[0] == str(os.getpid()), f"the caller is this process ({os.getpid()}): {caller}")
        until("the server's record ended with its client", lambda: all(
            r["state"] != "running" for r in hosted(True) if FILESYSTEM in (label(r, "mcp.server") or "")))
    print("1. server-filesystem through bpm mcp-run: tools listed, a file read, the record kind mcp, its caller this process")


AGENT = textwrap.dedent("""
    import asyncio, os, sys
    from mcp import Client, StdioServerParameters
    params = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:], env={
        "BPM_HOME": os.environ["BPM_HOME"], "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")})
    async def main():
        async with Client(params) as c:
            await c.list_tools()
            print("ready", flush=True)
            await asyncio.sleep(3600)
    asyncio.run(main())
""")


def agent_killed_with_kill_9():
    """An agent (a Python process holding the client) killed with kill -9:
    the server's whole tree is stopped after the grace. The server here
    is server-memory in a shell that does not end when it does, as a server
    that ignores the end of its input would not."""
    marker = f"leaked-{os.getpid()}"
    words = ["bash", "-c", f'node {MEMORY}; exec -a "$0" sleep 600', marker]
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, BPM, "mcp-run", "--grace", "2s", "--", *words],
        env={**os.environ, **ENV}, stdout=subprocess.PIPE, text=True)
    check(agent.stdout.readline().strip() == "ready", "the agent never got the server's tools")
    record = next(r for r in hosted() if label(r, "mcp.caller").split()[0] == str(agent.pid))
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    until("the shell outlived server-memory", lambda: pids_running(marker))
    time.sleep(1.0)
    check(pids_running(marker), "the tree was stopped before the 2 s grace")
    until("the tree stopped after the grace", lambda: not pids_running(marker), 15)
    ended = json.loads(bpm("show", record["id"], "--json"))
    check(ended["state"] != "running", f"the record: {ended['state']}")
    print("2. the agent killed with kill -9: the server's tree stopped after its 2 s grace, not before;",
          "record", ended["state"])


async def shared_by_five():
    """Five clients of one server-memory: one server process, each client's
    calls answered under its own ids, the graph shared; stopped when the
    last client has been gone for the grace."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(run_params("node", MEMORY, shared=True, grace="2s")))
                   for _ in range(5)]
        # server-memory rewrites its file on each change, so changes go one
        # at a time; reads go all at once, their ids clashing at the hub.
        for n, c in enumerate(clients):
            made = await c.call_tool("create_entities", {"entities": [
                {"name": f"client-{n}", "entityType": "test", "observations": [f"from client {n}"]}]})
            check(not made.is_error, f"client {n}: {made.content}")
        graphs = await asyncio.gather(*(c.call_tool("read_graph", {}) for c in clients for _ in range(4)))
        final = await clients[0].call_tool("read_graph", {})
        names = {e["name"] for e in json.loads(final.content[0].text)["entities"]}
        check({f"client-{n}" for n in range(5)} <= names, f"the shared graph: {names}")
        check(all(not g.is_error for g in graphs), "a read_graph failed")
        servers = pids_running(MEMORY)
        check(len(servers) == 1, f"{len(servers)} server-memory processes for 5 shared clients")
        hubs = [r for r in hosted() if label(r, "mcp.caller") == "shared"]
        check(len(hubs) == 1 and hubs[0]["state"] == "running", f"hub records: {hubs}")
    hub = hubs[0]
    time.sleep(1.0)
    check(json.loads(bpm("show", hub["id"], "--json"))["state"] == "running", "stopped before the grace")
    until("the shared server stopped after its last client left",
          lambda: json.loads(bpm("show", hub["id"], "--json"))["state"] == "completed")
    check(not pids_running(MEMORY), "server-memory outlived its hub")
    print("3. five clients shared one server-memory (one process, one graph); stopped after the last left and the grace")


async def everything_shared():
    """server-everything through the shared relay: a tool with progress
    notifications comes back to the caller that asked, under its token."""
    async with Client(run_params("node", EVERYTHING, "stdio", shared=True, grace="1s")) as c:
        tools = {t.name for t in (await c.list_tools()).tools}
        check("echo" in tools, f"everything's tools: {sorted(tools)}")
        echoed = await c.call_tool("echo", {"message": "through the hub"})
        check("through the hub" in echoed.content[0].text, f"echo: {echoed.content}")
        long_op = next((t for t in tools if "long" in t.lower()), None)
        check(long_op, f"no long-running tool among {sorted(tools)}")
        progress = []

        async def on_progress(value, total, message):
            progress.append(value)

        done = await c.call_tool(long_op, {"duration": 1, "steps": 3}, progress_callback=on_progress)
        check(not done.is_error, f"{long_op}: {done.content}")
        check(progress, f"no progress came back through the hub for {long_op}")
    print("4. server-everything shared: echo answered, progress routed back to its caller")


def bad_input():
    out = subprocess.run([BPM, "mcp-run", "--", "/no/such/server"], env={**os.environ, **ENV},
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    check(out.returncode != 0 and "/no/such/server" in out.stderr, f"a missing command: {out.returncode} {out.stderr}")
    check(not [r for r in hosted() if "/no/such/server" in (label(r, "mcp.server") or "")], "a record runs on")
    out = subprocess.run([BPM, "mcp-run", "--grace", "soon", "--", "cat"], env={**os.environ, **ENV},
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    check(out.returncode != 0 and '--grace "soon"' in out.stderr, f"a bad grace: {out.returncode} {out.stderr}")
    # Not JSON-RPC, without --shared: relayed as it is.
    out = subprocess.run([BPM, "mcp-run", "--", "sh", "-c", "echo 'not json'; cat"], env={**os.environ, **ENV},
                         input="passed through\n", capture_output=True, text=True, timeout=20)
    check(out.stdout == "not json\npassed through\n", f"relayed: {out.stdout!r}")
    # With --shared, it ends the server, with the reason in its record.
    out = subprocess.run([BPM, "mcp-run", "--shared", "--", "sh", "-c", "echo 'not json'; sleep 600"],
                         env={**os.environ, **ENV}, input="", capture_output=True, text=True, timeout=30)
    def garbled():
        return [r for r in hosted(True)
                if "not json" in (label(r, "mcp.server") or "") and label(r, "mcp.caller") == "shared"]
    until("the garbling shared server ended", lambda: garbled() and garbled()[0]["state"] == "failed")
    garbled = garbled()
    logs = bpm("logs", garbled[0]["id"])
    check("not a JSON-RPC message" in logs and "'not json'" not in logs.split("bpm mcp-hub")[-1], f"its reason: {logs}")
    print("5. refused: a missing command (its error, no record left running), a bad --grace; garbage relayed as it is, or, shared, the server ended with its reason")


async def main():
    await filesystem_through_mcp_run()
    agent_killed_with_kill_9()
    await shared_by_five()
    await everything_shared()
    bad_input()


asyncio.run(main())
