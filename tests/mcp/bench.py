"""How soon an agent learns of an exit through MCP: `wait_for_process`,
called through the official Python MCP client right after
`start_background_process`, against the floor measured in the same run
(this Python waiting for the same program with `subprocess`).

    python3 tests/mcp/bench.py BPM_BINARY BPM_HOME

Run by `cargo bench -p bpm-cli --bench mcp`. Each sample's program is a bash
that sleeps, then writes `$EPOCHREALTIME` just before it exits; times are
from that moment. `BPM_BENCH_LIVES="0.05:8 1:8"` chooses how long the
programs live and how many samples each gets. Prints figures; asserts only
that the calls answer as they should.
"""

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

from mcp import Client, StdioServerParameters

BPM, HOME = sys.argv[1], sys.argv[2]
LIVES = [
    (float(life), int(n))
    for life, n in (part.split(":") for part in os.environ.get("BPM_BENCH_LIVES", "0.05:8 1:8 10:3").split())
]


def program(life, mark):
    return ["bash", "-c", f'sleep {life}; printf %s "$EPOCHREALTIME" > {mark}']


def last_moment(mark):
    with open(mark) as f:
        return float(f.read()) * 1000


async def call(client, tool, args):
    result = await client.call_tool(tool, args)
    if result.is_error:
        raise AssertionError(f"{tool} failed: {result.content}")
    return result.structured_content


def floor_sample(life, mark):
    """This Python starting the program and waiting for it: the machine's
    own cost of seeing an exit."""
    child = subprocess.Popen(program(life, mark))
    child.wait()
    return time.time() * 1000 - last_moment(mark)


async def mcp_sample(client, life, mark):
    started = await call(client, "start_background_process", {"argv": program(life, mark)})
    done = await call(client, "wait_for_process", {"process_id": started["id"], "until": "exit", "timeout_secs": life + 30})
    returned = time.time() * 1000
    if not done["condition_met"] or done["exit_code"] != 0:
        raise AssertionError(f"the wait did not see a clean exit: {done}")
    # The client's own cost for one call that waits for nothing.
    t = time.perf_counter()
    await call(client, "get_background_process_status", {"process_id": started["id"]})
    round_trip = (time.perf_counter() - t) * 1000
    return returned - last_moment(mark), round_trip


async def main():
    env = {"BPM_HOME": HOME, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    server = StdioServerParameters(command=BPM, args=["mcp"], env=env)
    with tempfile.TemporaryDirectory() as tmp:
        mark = os.path.join(tmp, "end")
        async with Client(server, mode="legacy") as client:
            # One call first: the daemon starts, the client warms.
            await call(client, "list_background_processes", {})
            print("an exit seen through MCP wait_for_process (official Python client), ms after the program's last moment:")
            print("| lives | samples | floor: Python's own wait | wait_for_process returns | excess over the floor | one status call (the client's round trip) |")
            print("|---|---|---|---|---|---|")
            for life, n in LIVES:
                floors, seen, trips = [], [], []
                for _ in range(n):
                    # Interleaved, so both see the same machine.
                    floors.append(floor_sample(life, mark))
                    latency, trip = await mcp_sample(client, life, mark)
                    seen.append(latency)
                    trips.append(trip)
                floor, got = statistics.median(floors), statistics.median(seen)
                print(
                    f"| {life:g} s | {n} | {floor:.2f} | {got:.2f} | {got - floor:.2f} | {statistics.median(trips):.2f} |",
                    flush=True,
                )
                print("  rounds, wait_for_process:", " ".join(f"{x:.1f}" for x in seen), "| floor:", " ".join(f"{x:.1f}" for x in floors))


if __name__ == "__main__":
    asyncio.run(main())
