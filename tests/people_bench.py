"""The people's door, measured as a person at a terminal pays for it.

Run by `cargo bench -p bpm-cli --bench people`: prints figures, each beside
its baseline measured in the same run, in alternating rounds, and asserts
nothing about them.

1. `bpm tui` following a process that writes about 10 MB/s: its CPU, against
   `tail -f` of the same output file, both in the same tmux window size.
2. How long after a process exits `bpm tui`'s screen shows it, against the
   same look at a shell that prints when its own `sleep` ends.
3. `bpm up --dry-run` of process-compose's largest fixture, against the
   dry run of a one-process file.
4. A rolling replace's window with no listener (`bpm up --rolling`): the
   longest time no copy answers, against a plain replace (`bpm up`, stop
   then start).

Usage: people_bench.py BPM STATE_DIR FIXTURES (`BPM_BENCH_ONLY=24` runs
parts 2 and 4 alone; `BPM_BENCH_ROUNDS`, 3 by default)
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BPM, HOME, FIXTURES = sys.argv[1], sys.argv[2], sys.argv[3]
ROUNDS = int(os.environ.get("BPM_BENCH_ROUNDS", "3"))
ENV = dict(os.environ, BPM_HOME=HOME, NO_COLOR="1")
TICKS = os.sysconf("SC_CLK_TCK")


def bpm(*args, cwd=None, check=True):
    out = subprocess.run([BPM, *args], env=ENV, capture_output=True, text=True, cwd=cwd, timeout=300)
    if check and out.returncode != 0:
        raise SystemExit(f"bpm {' '.join(args)} failed: {out.stderr}")
    return out.stdout.strip()


class Tmux:
    def __init__(self):
        self.socket = f"bpm-bench-{os.getpid()}-{time.monotonic_ns()}"
        self.run("new-session", "-d", "-x", "80", "-y", "24", f"env BPM_HOME={HOME} NO_COLOR=1 TERM=xterm-256color sh")

    def run(self, *args):
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"tmux {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def type(self, line):
        self.run("send-keys", "-t", "0", "-l", line)
        self.run("send-keys", "-t", "0", "Enter")

    def keys(self, *keys):
        self.run("send-keys", "-t", "0", *keys)

    def screen(self):
        return self.run("capture-pane", "-p", "-t", "0")

    def pane_pid(self):
        return int(self.run("display", "-p", "-t", "0", "#{pane_pid}").strip())

    def close(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def until(what, ok, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def child_of(pid, name):
    """The pid of the child of `pid` whose command is `name`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == pid and os.path.basename(argv[0].decode()) == name:
            return int(entry)
    return None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def median_ms(xs):
    return statistics.median(xs) * 1000


# 1. CPU while following a busy process ------------------------------------

WRITER = (
    "import sys, time\n"
    "line = ('x' * 99 + '\\n') * 1000\n"
    "next = time.monotonic()\n"
    "while True:\n"
    "    sys.stdout.write(line); sys.stdout.flush()\n"
    "    next += 0.01\n"
    "    time.sleep(max(0, next - time.monotonic()))\n"
)


def follow_cpu():
    # The same bytes go to bpm and to a plain file, which `tail -f` follows.
    plain = os.path.join(HOME, "busy.log")
    with open(os.path.join(HOME, "writer.py"), "w") as f:
        f.write(WRITER)
    writer_id = bpm("run", "--name", "busy", "--shell", "--",
                    f"python3 {HOME}/writer.py | tee -a {plain}")
    until("output", lambda: os.path.isdir(os.path.join(HOME, "output", writer_id)))
    time.sleep(0.5)
    window = 5.0
    tui, tail = [], []
    for _ in range(ROUNDS):
        for which in ("tui", "tail"):
            t = Tmux()
            try:
                if which == "tui":
                    t.type(f"{BPM} tui")
                    until("the tui", lambda: "busy" in t.screen())
                    pid = child_of(t.pane_pid(), "bpm")
                else:
                    t.type(f"tail -f {plain}")
                    time.sleep(0.5)
                    pid = child_of(t.pane_pid(), "tail")
                time.sleep(1.0)
                before = cpu_seconds(pid)
                time.sleep(window)
                used = (cpu_seconds(pid) - before) / window
                (tui if which == "tui" else tail).append(used)
            finally:
                t.close()
    bpm("stop", writer_id)
    written = 100 * 1000 * 100 / 1e6
    print(f"1. following a process writing {written:.0f} MB/s, {window:.0f} s windows, {ROUNDS} rounds:")
    print(f"   bpm tui   {statistics.median(tui) * 100:5.1f}% of a core (rounds: {', '.join(f'{x * 100:.1f}' for x in tui)})")
    print(f"   tail -f   {statistics.median(tail) * 100:5.1f}% of a core (rounds: {', '.join(f'{x * 100:.1f}' for x in tail)})")


# 2. redraw latency after an exit -------------------------------------------

def redraw_latency():
    tui, shell = [], []
    stamp = os.path.join(HOME, "ended-at")
    for _ in range(ROUNDS * 3):
        for which in ("tui", "shell"):
            t = Tmux()
            try:
                if os.path.exists(stamp):
                    os.unlink(stamp)
                if which == "tui":
                    name = f"quick-{time.monotonic_ns()}"
                    t.type(f"{BPM} tui")
                    until("the tui", lambda: "? for keys" in t.screen() or "keys" in t.screen())
                    bpm("run", "--name", name, "--shell", "--", f"sleep 0.5; date +%s.%N > {stamp}")
                    until("the row", lambda: name in t.screen())
                    until("the exit", lambda: os.path.exists(stamp) and os.path.getsize(stamp) > 0, timeout=5)
                    until("the redraw", lambda: name not in t.screen(), timeout=5)
                else:
                    t.type(f"sleep 0.5; date +%s.%N > {stamp}; echo gone-now")
                    until("the exit", lambda: os.path.exists(stamp) and os.path.getsize(stamp) > 0, timeout=5)
                    until("the shell's line", lambda: "gone-now\n" in t.screen(), timeout=5)
                seen = time.time()
                with open(stamp) as f:
                    ended = float(f.read().strip())
                (tui if which == "tui" else shell).append(seen - ended)
            finally:
                t.close()
    print(f"2. from a process's exit to the screen that shows it (tmux capture-pane polled every ~20 ms; {len(tui)} rounds):")
    print(f"   bpm tui, the row gone     median {median_ms(tui):6.1f} ms, max {max(tui) * 1000:6.1f} ms")
    print(f"   a shell's next line       median {median_ms(shell):6.1f} ms, max {max(shell) * 1000:6.1f} ms")


# 3. up --dry-run of the largest fixture -----------------------------------

def dry_run():
    files = []
    for root, _, names in os.walk(FIXTURES):
        files.extend(os.path.join(root, n) for n in names if n.endswith((".yaml", ".yml")))
    largest = os.path.abspath(max(files, key=os.path.getsize))
    os.makedirs(os.path.join(HOME, "one"), exist_ok=True)
    small = os.path.join(HOME, "one", "process-compose.yaml")
    with open(small, "w") as f:
        f.write("processes:\n  one:\n    command: sleep 1\n")
    big, one = [], []
    for _ in range(ROUNDS * 10):
        for which, path, into in (("big", largest, big), ("one", small, one)):
            started = time.perf_counter()
            subprocess.run([BPM, "up", "--dry-run", "-f", path], env=ENV, capture_output=True,
                           cwd=os.path.dirname(path), check=True)
            into.append(time.perf_counter() - started)
    rel = os.path.relpath(largest, os.path.abspath(FIXTURES))
    print(f"3. bpm up --dry-run from a shell, daemon running, {len(big)} each, alternating:")
    print(f"   {rel} ({os.path.getsize(largest)} bytes)  median {median_ms(big):5.2f} ms")
    print(f"   a one-process file                          median {median_ms(one):5.2f} ms")


# 4. a rolling replace's window with no listener ---------------------------

def listening():
    """The TCP ports something listens on (from /proc/net/tcp and tcp6)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def replace_window(rolling):
    """While a changed service is replaced, the longest time no copy of it
    listens: the kernel's table of listening sockets read about every
    1 ms, less what listened before the service started."""
    d = tempfile.mkdtemp(dir=HOME)
    toml = os.path.join(d, "bpm.toml")

    def write(version):
        with open(toml, "w") as f:
            f.write('[project]\nname = "rollbench"\n[services.web]\n'
                    f'command = "echo {version}; exec python3 -m http.server --bind 127.0.0.1 $PORT"\n'
                    'port = "auto"\nready = { http = "/" }\n')
    others = listening()
    write("v1")
    bpm("up", "-f", toml, "--wait", "--wait-timeout", "60s")
    write("v2")
    samples = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            samples.append((time.monotonic(), bool(listening() - others)))
            time.sleep(0.001)
    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.1)
    if rolling:
        bpm("up", "-f", toml, "--rolling")
    else:
        bpm("up", "-f", toml, "--wait", "--wait-timeout", "60s")
    time.sleep(0.3)
    stop.set()
    prober.join()
    bpm("down", "-f", toml)
    shutil.rmtree(d, ignore_errors=True)
    # The window: from the last sample that saw a listener before a run of
    # samples that saw none, to the next that saw one.
    window, last_ok, missed = 0.0, None, False
    for at, ok in samples:
        if ok:
            if missed and last_ok is not None:
                window = max(window, at - last_ok)
            last_ok, missed = at, False
        else:
            missed = True
    steps = [b[0] - a[0] for a, b in zip(samples, samples[1:])]
    return window, sum(1 for _, ok in samples if not ok), len(samples), statistics.median(steps)


def rolling_window():
    rolled, plain = [], []
    for _ in range(ROUNDS):
        rolled.append(replace_window(True))
        plain.append(replace_window(False))
    def show(runs):
        windows = ", ".join(f"{w * 1000:.0f}" for w, _, _, _ in runs)
        missed = sum(m for _, m, _, _ in runs)
        total = sum(n for _, _, n, _ in runs)
        worst = max(w for w, _, _, _ in runs)
        said = "none" if missed == 0 else f"{worst * 1000:.0f} ms at worst (ms: {windows})"
        return f"{said}; {missed} of {total} samples saw no listener"
    step = statistics.median(r[3] for r in rolled + plain)
    print(f"4. a changed service (python3 -m http.server, ready by HTTP) replaced; the kernel's listening "
          f"sockets sampled every {step * 1000:.1f} ms (median), {ROUNDS} rounds each, alternating; "
          f"the window with no listener:")
    print(f"   bpm up --rolling   {show(rolled)}")
    print(f"   bpm up (replace)   {show(plain)}")


def main():
    bpm("daemon", "start", check=False)
    only = os.environ.get("BPM_BENCH_ONLY", "1234")
    for part, run in (("1", follow_cpu), ("2", redraw_latency), ("3", dry_run), ("4", rolling_window)):
        if part in only:
            run()


if __name__ == "__main__":
    main()
