#!/usr/bin/env python3
"""bpm beside pueue, pm2 and supervisord: the same operations through each
tool's own command line, with the machine's floor measured in the same run.

Run it through `bench/peers/run`, which installs the peers into
`target/peers/` first. Every tool gets a state folder of its own under a
temporary directory; nothing outside it is touched, and every process this
script starts is stopped (or killed) before it exits.

Operations (medians where a count is given):
  start    start one long process and return (20 each, every tool in turn
           in each round, so all meet the machine alike); floor: `setsid -f`
           after each start
  queue    500 short tasks at parallelism 2, submitted one command at a time,
           then waited for; floor: `seq 500 | xargs -P2 -n1 true`
  exit     a 1 s process's end seen through the tool's own wait or status,
           minus the process's life (5 each); floor: `sleep 1` run and waited for
  stop     stop a tree that ignores TERM, with a grandchild in its own session:
           how long the stop takes, and how many of its processes survive it;
           every tool that has a grace between TERM and KILL is given the
           same, STOP_GRACE (2 s), since the time is mostly that grace and
           each tool's default differs (bpm 5 s, pm2 1.6 s, supervisord
           10 s; pueue kills at once)
  kill -9  kill -9 of the manager while a child runs: what the tool says of
           it after its manager is back, how many copies then run, and whether
           the tool can still stop it
  memory   the manager's resident memory with 200 processes running, 1 s
           after the last start and 5 s after (bpm settles once quiet)
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The grace between TERM and KILL given to every tool that has one in the stop row.
STOP_GRACE = 2
PEERS = Path(os.environ.get("PEERS_DIR", ROOT / "target" / "peers")).resolve()
BPM = Path(os.environ.get("BPM_BIN", ROOT / "target" / "dist" / "bpm")).resolve()
PUEUE = PEERS / "cargo" / "bin" / "pueue"
PUEUED = PEERS / "cargo" / "bin" / "pueued"
PM2 = PEERS / "npm" / "node_modules" / ".bin" / "pm2"
SUPERVISORD = PEERS / "venv" / "bin" / "supervisord"
SUPERVISORCTL = PEERS / "venv" / "bin" / "supervisorctl"

STARTS = 20
EXITS = 5
MANY = 200
QUEUE = 500


def run(argv, env=None, check=True, timeout=120):
    """Runs `argv`; returns its stdout. Fails loudly when `check` and it
    fails. Its output goes through files, not pipes: a daemon it leaves
    behind may hold them open."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run([str(a) for a in argv], env=env, stdin=subprocess.DEVNULL,
                           stdout=out, stderr=err, timeout=timeout)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        if check and p.returncode != 0:
            raise RuntimeError(f"{argv}: exit {p.returncode}: {err.read().decode(errors='replace')}")
    return stdout


def timed(argv, env=None):
    """Milliseconds `argv` takes, started and waited for as a shell would
    (its output to /dev/null: a process it leaves behind may hold a pipe)."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.run([str(a) for a in argv], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=err, timeout=120)
        ms = (time.perf_counter() - t) * 1e3
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{argv}: exit {p.returncode}: {err.read().decode(errors='replace')}")
    return ms


def copies(marker):
    """How many `sleep` processes have `marker` in their command line (not
    the shells some tools wrap a command in)."""
    pattern = f"^([^ ]*/)?sleep {marker}"  # pm2 starts it by its full path
    out = subprocess.run(["pgrep", "-f", "-c", pattern], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def kill_marked(marker):
    subprocess.run(["pkill", "-9", "-f", marker], capture_output=True)


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def pid_in(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def until(check, timeout=30.0):
    """Calls `check` back to back until it returns something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
    raise RuntimeError("timed out")


# A tree that ignores TERM (ignored signals survive exec, so its sleeps do
# too), with a grandchild that left its process group for a session of its own.
def stubborn(marker):
    return [
        "bash",
        "-c",
        f'trap "" TERM; setsid sleep {marker}1 & sleep {marker}2; wait',
    ]


class Bpm:
    name = "bpm"

    def __init__(self, work):
        self.home = work / "bpm"
        self.home.mkdir()
        self.env = dict(os.environ, BPM_HOME=str(self.home))

    def version(self):
        return run([BPM, "--version"]).split()[-1]

    def up(self, parallel=None):
        config = f"[limits]\nmax_running = {parallel}\n" if parallel else ""
        (self.home / "config.toml").write_text(config)
        run([BPM, "ps"], self.env)

    def down(self):
        run([BPM, "daemon", "stop", "--kill-all"], self.env, check=False)

    def start(self, name, argv, grace=None):
        graced = ["--grace", f"{grace}s"] if grace else []
        return [BPM, "run", "--name", name, *graced, "--", *argv]

    def started(self, name, argv, grace=None):
        return run(self.start(name, argv, grace), self.env).strip()

    def wait_end(self, handle):
        run([BPM, "wait", handle], self.env, check=False)

    def stop(self, handle):
        return [BPM, "stop", handle]

    def queue(self, n):
        script = f'for i in $(seq {n}); do "{BPM}" run -- true; done > ids; "{BPM}" wait $(cat ids)'
        return ["bash", "-c", script]

    def managers(self):
        return [p for p in (pid_in(self.home / "daemon.pid"), self.keeper()) if p]

    def keeper(self):
        out = subprocess.run(["pgrep", "-f", f"{BPM} keeper"], capture_output=True, text=True)
        for pid in out.stdout.split():
            env = Path(f"/proc/{pid}/environ").read_bytes()
            if f"BPM_HOME={self.home}".encode() in env:
                return int(pid)
        return None

    def kill_manager(self):
        os.kill(pid_in(self.home / "daemon.pid"), signal.SIGKILL)

    def after_kill(self, handle):
        return json.loads(run([BPM, "show", "--json", handle], self.env)).get("state", "?")


class Pueue:
    name = "pueue"

    def __init__(self, work):
        self.dir = work / "pueue"
        self.config = work / "pueue.yml"
        self.fresh()
        self.env = dict(os.environ)
        self.env.pop("XDG_RUNTIME_DIR", None)

    def fresh(self):
        # Each operation starts on an empty state: `kill` pauses a group, and
        # the daemon keeps that (and every task) across restarts.
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir()
        self.config.write_text(
            "shared:\n"
            f"  pueue_directory: {self.dir}\n"
            f"  runtime_directory: {self.dir}\n"
            "  use_unix_socket: true\n"
            f"  unix_socket_path: {self.dir}/pueue.socket\n"
            f"  pid_path: {self.dir}/pueue.pid\n"
        )

    def cli(self, *args):
        return [PUEUE, "-c", self.config, *args]

    def version(self):
        return run([PUEUE, "--version"]).split()[-1]

    def up(self, parallel=None):
        run([PUEUED, "-c", self.config, "-d"], self.env)
        until(lambda: subprocess.run(self.cli("status"), capture_output=True).returncode == 0)
        run(self.cli("parallel", str(parallel or 1000)), self.env)

    def down(self):
        pid = pid_in(self.dir / "pueue.pid")
        run(self.cli("kill", "--all"), self.env, check=False)
        run(self.cli("shutdown"), self.env, check=False)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.fresh()

    def start(self, name, argv, grace=None):
        # pueue's kill has no grace: it kills at once.
        return self.cli("add", "--print-task-id", "--label", name, "--", *argv)

    def started(self, name, argv, grace=None):
        return run(self.start(name, argv, grace), self.env).strip()

    def wait_end(self, handle):
        run(self.cli("wait", handle), self.env, check=False)

    def stop(self, handle):
        return self.cli("kill", handle)

    def queue(self, n):
        script = f'for i in $(seq {n}); do "{PUEUE}" -c "{self.config}" add -- true >/dev/null; done; "{PUEUE}" -c "{self.config}" wait'
        return ["bash", "-c", script]

    def managers(self):
        return [p for p in [pid_in(self.dir / "pueue.pid")] if p]

    def kill_manager(self):
        os.kill(pid_in(self.dir / "pueue.pid"), signal.SIGKILL)

    def after_kill(self, handle):
        # The user starts the daemon again; it reads back its state.
        (self.dir / "pueue.pid").unlink(missing_ok=True)
        self.up()
        state = json.loads(run(self.cli("status", "--json"), self.env))
        status = state["tasks"][handle]["status"]
        if isinstance(status, dict):
            key = next(iter(status))
            inner = status[key]
            result = inner.get("result") if isinstance(inner, dict) else None
            return f"{key} ({result})" if result else key
        return str(status)


class Pm2:
    name = "pm2"

    def __init__(self, work):
        self.home = work / "pm2"
        self.home.mkdir()
        self.env = dict(os.environ, PM2_HOME=str(self.home))

    def version(self):
        return run([PM2, "--version"], self.env).strip().splitlines()[-1]

    def up(self, parallel=None):
        run([PM2, "ping"], self.env)

    def down(self):
        run([PM2, "kill"], self.env, check=False)

    def start(self, name, argv, grace=None):
        graced = ["--kill-timeout", str(grace * 1000)] if grace else []
        return [PM2, "start", argv[0], "--name", name, "--no-autorestart", *graced, "--", *argv[1:]]

    def started(self, name, argv, grace=None):
        run(self.start(name, argv, grace), self.env)
        return name

    def status(self, name):
        # A daemon it had to start first is announced before the list.
        lines = [l for l in run([PM2, "jlist"], self.env).splitlines() if l.startswith("[")]
        for app in json.loads(lines[-1] if lines else "[]"):
            if app["name"] == name:
                return app["pm2_env"]["status"]
        return None

    def wait_end(self, handle):
        until(lambda: self.status(handle) in ("stopped", "errored"))

    def stop(self, handle):
        return [PM2, "stop", handle]

    queue = None

    def managers(self):
        return [p for p in [pid_in(self.home / "pm2.pid")] if p]

    def kill_manager(self):
        os.kill(pid_in(self.home / "pm2.pid"), signal.SIGKILL)

    def after_kill(self, handle):
        # Any pm2 command starts a new daemon.
        return self.status(handle) or "not listed"


class Supervisor:
    name = "supervisord"

    def __init__(self, work):
        self.dir = work / "supervisor"
        self.dir.mkdir()
        self.conf = self.dir / "supervisord.conf"
        self.programs = {}

    def version(self):
        return run([SUPERVISORD, "--version"]).strip()

    def declare(self, name, argv, grace=None):
        # Programs are declared in its file before they can start; startsecs=0
        # so that `start` returns once the process runs, as the others do.
        graced = f"stopwaitsecs={grace}\n" if grace else ""
        self.programs[name] = (
            f"[program:{name}]\ncommand={subprocess.list2cmdline(argv)}\n"
            "autostart=false\nautorestart=false\nstartsecs=0\n" + graced
        )

    def write(self):
        head = (
            f"[unix_http_server]\nfile={self.dir}/sock\n"
            f"[supervisord]\npidfile={self.dir}/pid\nlogfile={self.dir}/log\n"
            f"childlogdir={self.dir}\nnodaemon=false\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            f"[supervisorctl]\nserverurl=unix://{self.dir}/sock\n"
        )
        self.conf.write_text(head + "".join(self.programs.values()))

    def ctl(self, *args):
        return [SUPERVISORCTL, "-c", self.conf, *args]

    def up(self, parallel=None):
        self.write()
        run([SUPERVISORD, "-c", self.conf])
        until(lambda: subprocess.run(self.ctl("pid"), capture_output=True).returncode == 0)

    def down(self):
        run(self.ctl("shutdown"), check=False)
        pid = pid_in(self.dir / "pid")
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        (self.dir / "pid").unlink(missing_ok=True)
        self.programs = {}

    def start(self, name, argv, grace=None):
        return self.ctl("start", name)

    def started(self, name, argv, grace=None):
        run(self.start(name, argv, grace))
        return name

    def status(self, name):
        out = subprocess.run(self.ctl("status", name), capture_output=True, text=True).stdout
        return out.split()[1] if len(out.split()) > 1 else "?"

    def wait_end(self, handle):
        until(lambda: self.status(handle) in ("EXITED", "FATAL", "STOPPED"))

    def stop(self, handle):
        return self.ctl("stop", handle)

    queue = None

    def managers(self):
        return [p for p in [pid_in(self.dir / "pid")] if p]

    def kill_manager(self):
        os.kill(pid_in(self.dir / "pid"), signal.SIGKILL)

    def after_kill(self, handle):
        # The user starts supervisord again.
        (self.dir / "pid").unlink(missing_ok=True)
        run([SUPERVISORD, "-c", self.conf])
        until(lambda: subprocess.run(self.ctl("pid"), capture_output=True).returncode == 0)
        return self.status(handle)


def prepare(tool, names_and_argv, parallel=None, grace=None):
    if isinstance(tool, Supervisor):
        for name, argv in names_and_argv:
            tool.declare(name, argv, grace)
    tool.up(parallel)


def op_start_all(tools):
    """The start row for every tool at once, round-robin: each round times
    one start of each tool (in turn, the order reversed every other
    round), each followed by `setsid -f`, so that every tool and its floor
    meet the machine as it is then. A tool whose start fails is reported
    as failed and left out of the later rounds."""
    plans = {}
    for i, tool in enumerate(tools):
        marker = f"30{i + 1}.7"
        plans[tool.name] = (marker, [(f"s{k}", ["sleep", f"{marker}{k:02d}"]) for k in range(STARTS)])
        prepare(tool, plans[tool.name][1])
    samples = {t.name: [] for t in tools}
    floors = {t.name: [] for t in tools}
    failed = {}
    for k in range(STARTS):
        for tool in tools if k % 2 == 0 else list(reversed(tools)):
            if tool.name in failed:
                continue
            n, a = plans[tool.name][1][k]
            try:
                samples[tool.name].append(timed(tool.start(n, a), getattr(tool, "env", None)))
            except Exception as e:  # reported in the table, as any failed operation
                failed[tool.name] = e
                continue
            floors[tool.name].append(timed(["setsid", "-f", "sleep", f"309.{k:02d}{len(floors[tool.name])}"]))
    results = {}
    for tool in tools:
        tool.down()
        kill_marked(plans[tool.name][0])
        results[tool.name] = failed.get(tool.name) or (
            statistics.median(samples[tool.name]), statistics.median(floors[tool.name]))
    kill_marked("sleep 309\\.")
    return results


def op_queue(tool):
    if tool.queue is None:
        return None
    prepare(tool, [], parallel=2)
    work = Path(tempfile.mkdtemp(dir=WORK))
    t = time.perf_counter()
    subprocess.run(tool.queue(QUEUE), env=getattr(tool, "env", None), cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    ms = (time.perf_counter() - t) * 1e3
    tool.down()
    return ms


def op_exit(tool, tag):
    names = [(f"e{i}", ["sleep", f"1.{tag}{i}"]) for i in range(EXITS)]
    prepare(tool, names)
    samples = []
    for name, argv in names:
        t = time.perf_counter()
        handle = tool.started(name, argv)
        tool.wait_end(handle)
        seen = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        run(argv)
        floor = (time.perf_counter() - t) * 1e3
        samples.append(seen - floor)
    tool.down()
    return statistics.median(samples)


def op_stop(tool, tag):
    marker = f"40{tag}.5"
    prepare(tool, [("tree", stubborn(marker))], grace=STOP_GRACE)
    handle = tool.started("tree", stubborn(marker), grace=STOP_GRACE)
    until(lambda: copies(marker) >= 2, timeout=10)
    ms = timed(tool.stop(handle), getattr(tool, "env", None))
    time.sleep(0.5)
    left = copies(marker)
    tool.down()
    kill_marked(marker)
    return ms, left


def op_kill9(tool, tag):
    marker = f"50{tag}.5"
    prepare(tool, [("child", ["sleep", marker])])
    handle = tool.started("child", ["sleep", marker])
    until(lambda: copies(marker) >= 1, timeout=10)
    tool.kill_manager()
    time.sleep(0.5)
    said = tool.after_kill(handle)
    time.sleep(1.0)
    running = copies(marker)
    subprocess.run([str(a) for a in tool.stop(handle)], env=getattr(tool, "env", None),
                   capture_output=True, timeout=60)
    time.sleep(0.5)
    after_stop = copies(marker)
    tool.down()
    kill_marked(marker)
    return said, running, after_stop


def op_memory(tool, tag):
    marker = f"60{tag}.5"
    names = [(f"m{i}", ["sleep", f"{marker}{i:03d}"]) for i in range(MANY)]
    prepare(tool, names, parallel=MANY)
    if isinstance(tool, Pm2):
        apps = [{"name": n, "script": a[0], "args": a[1:], "autorestart": False} for n, a in names]
        eco = WORK / "ecosystem.json"
        eco.write_text(json.dumps({"apps": apps}))
        run([PM2, "start", eco], tool.env, timeout=300)
    elif isinstance(tool, Supervisor):
        run(tool.ctl("start", "all"), timeout=300)
    else:
        for n, a in names:
            run(tool.start(n, a), tool.env)
    until(lambda: copies(marker) >= MANY, timeout=120)
    # Right after the starts, and once the manager has sat idle a while
    # (bpm gives back the pages its work read once quiet for a second).
    time.sleep(1.0)
    busy = rss_kib(tool.managers())
    time.sleep(4.0)
    settled = rss_kib(tool.managers())
    tool.down()
    kill_marked(marker)
    return busy, settled


def queue_floor():
    t = time.perf_counter()
    subprocess.run(["bash", "-c", f"seq {QUEUE} | xargs -P2 -n1 true"], check=True)
    return (time.perf_counter() - t) * 1e3


def main():
    missing = [str(p) for p in (BPM, PUEUE, PUEUED, PM2, SUPERVISORD) if not p.exists()]
    if missing:
        sys.exit("missing (run bench/peers/run, which installs them): " + ", ".join(missing))
    only = os.environ.get("PEERS_ONLY", "bpm pueue pm2 supervisord").split()
    tools = [t(WORK) for t in (Bpm, Pueue, Pm2, Supervisor)]
    tools = [t for t in tools if t.name in only]
    queue_base = queue_floor()
    print("start, every tool in turn ...", file=sys.stderr, flush=True)
    starts = op_start_all(tools)
    print(f"  start: {starts}", file=sys.stderr, flush=True)
    results = {}
    for i, tool in enumerate(tools):
        tag = str(i + 1)
        print(f"{tool.name} {tool.version()} ...", file=sys.stderr, flush=True)
        r = results[tool.name] = {"start": starts[tool.name]}
        for op, f in [
            ("queue", lambda: op_queue(tool)),
            ("exit", lambda: op_exit(tool, tag)),
            ("stop", lambda: op_stop(tool, tag)),
            ("kill9", lambda: op_kill9(tool, tag)),
            ("memory", lambda: op_memory(tool, tag)),
        ]:
            try:
                r[op] = f()
            except Exception as e:  # a peer that fails an operation is reported, not fatal
                r[op] = e
                print(f"  {op}: {e}", file=sys.stderr)
                try:
                    tool.down()
                except Exception:
                    pass
            print(f"  {op}: {r[op]}", file=sys.stderr, flush=True)
    report(tools, results, queue_base)


def cell(value, fmt):
    if value is None:
        return "no queue"
    if isinstance(value, Exception):
        return "failed"
    return fmt(value)


def report(tools, results, queue_floor):
    floors = [r["start"][1] for r in results.values() if isinstance(r["start"], tuple)]
    start_floor = statistics.median(floors) if floors else float("nan")
    machine = f"{os.cpu_count()} cores, {os.uname().release}"
    print(f"\nbpm beside its peers, {time.strftime('%Y-%m-%d')} ({machine}); "
          "each tool through its own command line, the floor measured in the same run\n")
    print("| operation | floor | " + " | ".join(f"{t.name} {t.version()}" for t in tools) + " |")
    print("|---|---|" + "---|" * len(tools))
    rows = [
        ("start one process and return (median of 20; ratio to `setsid -f` timed between them)",
         f"{start_floor:.1f} ms (`setsid -f`)",
         lambda r: cell(r["start"], lambda v: f"{v[0]:.1f} ms ({v[0] / v[1]:.1f}x)")),
        (f"{QUEUE} short tasks at parallelism 2, one command each", f"{queue_floor / 1e3:.2f} s (`xargs -P2`)",
         lambda r: cell(r["queue"], lambda v: f"{v / 1e3:.2f} s ({v / queue_floor:.1f}x)")),
        ("a 1 s process's end seen through the tool (excess, median of 5)", "0 (`sleep 1` waited for)",
         lambda r: cell(r["exit"], lambda v: f"+{v:.0f} ms")),
        (f"stop a TERM-ignoring tree with a `setsid` grandchild (its 2 sleeps), a {STOP_GRACE} s grace for each tool with one: time, sleeps left", "",
         lambda r: cell(r["stop"], lambda v: f"{v[0] / 1e3:.2f} s, {v[1]} left")),
        ("kill -9 of the manager, child running: the tool then says; copies running; left after its stop", "",
         lambda r: cell(r["kill9"], lambda v: f"{v[0]}; {v[1]}; {v[2]} left")),
        (f"manager's memory (RSS) with {MANY} processes running: 1 s after the last start; 5 s after", "",
         lambda r: cell(r["memory"], lambda v: f"{v[0] / 1024:.1f} MiB; {v[1] / 1024:.1f} MiB")),
    ]
    for name, floor, show in rows:
        print(f"| {name} | {floor} | " + " | ".join(show(results[t.name]) for t in tools) + " |")


if __name__ == "__main__":
    WORK = Path(tempfile.mkdtemp(prefix="bpm-peers-"))
    try:
        main()
    finally:
        # Whatever a tool left running under the scratch folder (pm2 starts
        # a new daemon when asked anything after its kill -9) ends with it.
        kill_marked(re.escape(str(WORK)))
        shutil.rmtree(WORK, ignore_errors=True)
