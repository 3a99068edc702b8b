"""Drives `bpm mcp` on node alpha with the official Python MCP client, over
processes of node beta (both nodes' daemons share one Redis):

    python3 tests/mcp/cluster_scenario.py BPM_BINARY ALPHA_HOME BETA_HOME

Run by crates/cli/tests/mcp_client.rs, which starts the redis-server and
beta's daemon; exits non-zero (with the failed check's message) when
anything is not as it should be.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

from scenario import call, check, error_of, alive

from mcp import Client, StdioServerParameters

BPM, ALPHA, BETA = sys.argv[1], sys.argv[2], sys.argv[3]


def server():
    env = {"BPM_HOME": ALPHA, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return StdioServerParameters(command=BPM, args=["mcp"], env=env)


def on_beta(*args):
    """`bpm ARGS` run on beta, its standard output."""
    env = {**os.environ, "BPM_HOME": BETA}
    env.pop("BPM_NODE", None)
    out = subprocess.run([BPM, *args], env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


async def until_state(client, pid, want, within=20):
    deadline = time.monotonic() + within
    while True:
        status = await call(client, "get_background_process_status", {"process_id": pid})
        if status["state"] == want:
            return status
        check(time.monotonic() < deadline, f"{pid} never became {want}: {status['state']}")
        await asyncio.sleep(0.1)


async def scenario():
    async with Client(server(), mode="legacy") as client:
        # 1. A process placed on beta from alpha's MCP server.
        ticker = await call(client, "start_background_process", {
            "command": "i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.1; done",
            "node": "beta",
        })
        check(ticker["node"] == "beta", f"placed on {ticker['node']}")
        status = await until_state(client, ticker["id"], "running")
        check(alive(status["pid"]), "beta's process runs on this machine")
        shown = json.loads(on_beta("show", ticker["id"], "--json"))
        check(shown["node"] == "beta" and shown["pid"] == status["pid"], f"beta shows {shown}")
        print("1. started on beta from alpha:", ticker["id"])

        # 2. Listed with its node, and its output read from alpha.
        listing = await call(client, "list_background_processes", {})
        nodes = {p["id"]: p["node"] for p in listing["processes"]}
        check(nodes.get(ticker["id"]) == "beta", f"listed: {nodes}")
        text = ""
        deadline = time.monotonic() + 20
        while "tick 3" not in text:
            check(time.monotonic() < deadline, f"no output from beta: {text!r}")
            await asyncio.sleep(0.2)
            text += (await call(client, "get_process_output", {"process_id": ticker["id"]}))["text"]
        only_beta = await call(client, "list_background_processes", {"node": "beta"})
        check(only_beta["count"] >= 1 and all(p["node"] == "beta" for p in only_beta["processes"]),
              f"node filter: {only_beta}")
        local = await call(client, "start_background_process", {"argv": ["sleep", "30"]})
        only_alpha = await call(client, "list_background_processes", {"node": "alpha"})
        check([p["id"] for p in only_alpha["processes"]] == [local["id"]], f"alpha's: {only_alpha}")
        await call(client, "stop_background_process", {"process_id": local["id"], "force": True})
        message = await error_of(client, "list_background_processes", {"node": "no such/node"})
        check("node" in message, message)
        print("2. listed on node beta (and by node); read", len(text), "bytes of its output")

        # 3. Paused and resumed on beta, through alpha.
        paused = await call(client, "pause_background_process", {"process_id": ticker["id"]})
        check(paused["state"] == "paused", f"pause: {paused['state']}")
        with open(f"/proc/{status['pid']}/stat") as f:
            check(f.read().split(")")[-1].split()[0] == "T", "beta's process is stopped")
        resumed = await call(client, "resume_background_process", {"process_id": ticker["id"]})
        check(resumed["state"] == "running", f"resume: {resumed['state']}")
        print("3. paused and resumed on beta")

        # 4. A wait on alpha for beta's process: its own exit code.
        ends = on_beta("run", "--shell", "--", "echo bye; sleep 1; exit 3")
        done = await call(client, "wait_for_process",
                          {"process_id": ends, "until": "exit", "timeout_secs": 20})
        check(done["condition_met"] and done["exit_code"] == 3 and done["state"] == "failed", f"wait: {done}")
        check("bye" in done["output_tail"], f"tail: {done['output_tail']!r}")
        print("4. waited on alpha for beta's process: exit code", done["exit_code"])

        # 5. Stopped from alpha: the answer comes once beta's tree is gone.
        stopped = await call(client, "stop_background_process", {"process_id": ticker["id"]})
        check(stopped["process"]["state"] == "cancelled", f"stop: {stopped['process']['state']}")
        check(not alive(status["pid"]), f"beta's process {status['pid']} survived")
        print("5. stopped on beta; pid", status["pid"], "is gone")

        # 6. A node that does not exist: a tool error naming it.
        message = await error_of(client, "start_background_process", {"command": "true", "node": "nobody"})
        check("nobody" in message, message)
        print("6. a start on an unknown node is refused by name")

        # 7. Placed on any node that carries side=b: only beta does, so
        #    beta takes it; a label that is no label is refused by name.
        anywhere = await call(client, "start_background_process", {
            "command": "echo \"ran on $BPM_NODE\"",
            "node": "any",
            "node_labels": {"side": "b"},
        })
        check(anywhere["node"] in ("any", "beta"), f"placed: {anywhere['node']}")
        done = await call(client, "wait_for_process",
                          {"process_id": anywhere["id"], "until": "exit", "timeout_secs": 20})
        check(done["state"] == "completed" and "ran on beta" in done["output_tail"], f"any: {done}")
        status = await call(client, "get_background_process_status", {"process_id": anywhere["id"]})
        check(status["node"] == "beta", f"taken by {status['node']}")
        message = await error_of(client, "start_background_process",
                                 {"command": "true", "node": "any", "node_labels": {"bad key": "x"}})
        check("node_labels" in message, message)
        print("7. placed on any node with side=b: beta took it and ran it")

        # 8. Failover: asked without a restart policy, refused by name; with
        #    one, the record carries it.
        message = await error_of(client, "start_background_process",
                                 {"command": "sleep 30", "failover": True})
        check("on-failure or always" in message, message)
        moving = await call(client, "start_background_process", {
            "command": "sleep 30", "failover": True, "restart": "always", "grace_secs": 1,
        })
        check(moving["spec"].get("failover") is True, f"failover: {moving['spec']}")
        stopped = await call(client, "stop_background_process", {"process_id": moving["id"]})
        check(stopped["process"]["state"] == "cancelled", f"stop: {stopped['process']['state']}")
        print("8. a failover record is started, and one without a restart policy refused")


async def main():
    started = time.monotonic()
    await scenario()
    print(f"cluster scenario passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
