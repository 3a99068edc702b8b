"""The agents' door, measured: `cargo bench -p bpm-cli --bench door`.

    python3 tests/mcp/door_bench.py BPM_BINARY BPM_HOME NODE_MODULES

1. Per-message round trip (`ping`) of the real server-memory from npm,
   driven directly, through `bpm mcp-run`, and through `bpm mcp-run
   --shared`, in alternating rounds.
2. Memory of 20 callers of server-memory, not shared and shared: the
   proportional (PSS) and resident (RSS) size of every process each way
   takes (the callers' `bpm mcp-run`, the hub, the servers), and one relay's.
3. `bpm mcp` over Streamable HTTP against stdio: a `ping` round trip,
   alternating.

The client is raw JSON-RPC over pipes or HTTP (no SDK), so that what it
adds is the same on both sides of each ratio. Prints figures; asserts only
that answers come back.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import httpx2

BPM, HOME, MODULES = sys.argv[1], sys.argv[2], sys.argv[3]
ROUNDS = int(os.environ.get("BPM_BENCH_ROUNDS", "5"))
CALLS = int(os.environ.get("BPM_BENCH_CALLS", "200"))
CALLERS = int(os.environ.get("BPM_BENCH_CALLERS", "20"))
ENV = {"BPM_HOME": HOME, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
       "MEMORY_FILE_PATH": os.path.join(HOME, "memory.jsonl")}
with open(os.path.join(MODULES, "@modelcontextprotocol/server-memory/package.json")) as f:
    _bin = json.load(f)["bin"]
MEMORY = os.path.join(MODULES, "@modelcontextprotocol/server-memory",
                      _bin if isinstance(_bin, str) else next(iter(_bin.values())))
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "door-bench", "version": "1"}}


class Stdio:
    """A stdio MCP server, spoken to line by line."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.next = 0
        self.request("initialize", INIT)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, message):
        self.p.stdin.write((json.dumps(message) + "\n").encode())
        self.p.stdin.flush()

    def request(self, method, params=None):
        self.next += 1
        body = {"jsonrpc": "2.0", "id": self.next, "method": method}
        if params is not None:
            body["params"] = params
        self.send(body)
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise AssertionError(f"{method}: the server closed")
            message = json.loads(line)
            if message.get("id") == self.next:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


class Http:
    """`bpm mcp --http`, spoken to with one kept-alive connection."""

    def __init__(self, url, token):
        self.url, self.next = url, 0
        self.http = httpx2.Client(timeout=30)
        self.head = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                     "Accept": "application/json, text/event-stream"}
        r = self.http.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT},
                           headers=self.head)
        self.head = {**self.head, "Mcp-Session-Id": r.headers["mcp-session-id"],
                     "Mcp-Protocol-Version": "2025-11-25"}
        self.http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.head)

    def request(self, method, params=None):
        self.next += 1
        body = {"jsonrpc": "2.0", "id": self.next, "method": method}
        if params is not None:
            body["params"] = params
        r = self.http.post(self.url, json=body, headers=self.head)
        for line in r.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if message.get("id") == self.next:
                    return message["result"]
        raise AssertionError(f"{method}: no answer")

    def close(self):
        self.http.delete(self.url, headers=self.head)
        self.http.close()


def pings(client, n):
    for _ in range(20):
        client.request("ping")
    times = []
    for _ in range(n):
        t = time.perf_counter_ns()
        client.request("ping")
        times.append((time.perf_counter_ns() - t) / 1000)
    return times


def p(times, q):
    times = sorted(times)
    return times[min(len(times) - 1, int(q * len(times)))]


def report(name, samples, base=None):
    med = statistics.median(samples)
    line = f"  {name:<28} median {med:8.1f} us   p99 {p(samples, 0.99):8.1f} us"
    if base is not None:
        bmed = statistics.median(base)
        line += f"   {med / bmed:5.2f}x the baseline, {med - bmed:+7.1f} us"
    print(line)


def relay_latency():
    ways = {
        "server-memory directly": ["node", MEMORY],
        "through bpm mcp-run": [BPM, "mcp-run", "--", "node", MEMORY],
        "through bpm mcp-run --shared": [BPM, "mcp-run", "--shared", "--grace", "1s", "--", "node", MEMORY],
    }
    samples = {k: [] for k in ways}
    names = list(ways)
    for r in range(ROUNDS):
        for name in names[r % 3:] + names[:r % 3]:
            c = Stdio(ways[name])
            samples[name] += pings(c, CALLS)
            c.close()
    print(f"1. a ping's round trip, {ROUNDS} alternating rounds of {CALLS} (raw JSON-RPC over pipes):")
    base = samples[names[0]]
    report(names[0], base)
    for name in names[1:]:
        report(name, samples[name], base)


def rollup(pid):
    """PSS, RSS and private (anonymous) memory of one process, in KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if parts[0] in ("Pss:", "Rss:", "Anonymous:"):
                    out[parts[0][:-1]] = int(parts[1])
    except FileNotFoundError:
        return {"Pss": 0, "Rss": 0, "Anonymous": 0}
    return out


def tree(pid):
    """`pid` and its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p_ = todo.pop()
        out.append(p_)
        todo += children.get(p_, [])
    return out


def hosted_pids():
    out = subprocess.run([BPM, "ps", "--kind", "mcp", "--json"], env={**os.environ, **ENV},
                         capture_output=True, text=True, check=True)
    return [r["pid"] for r in json.loads(out.stdout) if r.get("pid")]


def memory_of(shared):
    args = [BPM, "mcp-run", *(["--shared", "--grace", "1s"] if shared else []), "--", "node", MEMORY]
    callers = [Stdio(args) for _ in range(CALLERS)]
    for c in callers:
        c.request("ping")
    # A relay gives back its start's pages once it waits (after 1 s).
    time.sleep(1.5)
    relays = [c.p.pid for c in callers]
    servers = [q for pid in hosted_pids() for q in tree(pid)]
    every = sorted(set(relays + servers))
    total = {k: sum(rollup(q).get(k, 0) for q in every) for k in ("Pss", "Rss", "Anonymous")}
    one = rollup(relays[0])
    for c in callers:
        c.close()
    # Let the shared server's grace run out before the next measure.
    time.sleep(2.5)
    return total, one, len(every)


def memory():
    print(f"2. memory of {CALLERS} callers of server-memory (every process it takes: relays, hub, servers):")
    rows = {}
    for shared in (False, True, False, True):
        total, one, n = memory_of(shared)
        rows.setdefault(shared, []).append((total, one, n))
    for shared in (False, True):
        total, one, n = rows[shared][-1]
        print(f"  {'shared' if shared else 'not shared':<11} {n:3d} processes   PSS {total['Pss'] / 1024:7.1f} MiB"
              f"   RSS {total['Rss'] / 1024:7.1f} MiB")
    _, one, _ = rows[False][-1]
    print(f"  one bpm mcp-run relay: PSS {one['Pss'] / 1024:.2f} MiB, RSS {one['Rss'] / 1024:.2f} MiB,"
          f" anonymous {one['Anonymous'] / 1024:.2f} MiB")
    ratio = rows[True][-1][0]["Pss"] / rows[False][-1][0]["Pss"]
    print(f"  shared / not shared (PSS): {ratio:.2f}")


def http_against_stdio():
    endpoint = subprocess.Popen([BPM, "mcp", "--http", "127.0.0.1:0"], env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    url = endpoint.stdout.readline().strip()
    token = open(os.path.join(HOME, "mcp-token")).read().strip()
    samples = {"stdio": [], "http": []}
    for r in range(ROUNDS):
        for way in (("stdio", "http") if r % 2 == 0 else ("http", "stdio")):
            c = Stdio([BPM, "mcp"]) if way == "stdio" else Http(url, token)
            samples[way] += pings(c, CALLS)
            c.close()
    endpoint.terminate()
    endpoint.wait()
    print(f"3. bpm mcp: a ping's round trip, {ROUNDS} alternating rounds of {CALLS}:")
    report("stdio (bpm mcp)", samples["stdio"])
    report("Streamable HTTP (--http)", samples["http"], samples["stdio"])


relay_latency()
memory()
http_against_stdio()
