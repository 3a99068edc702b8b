#!/usr/bin/env python3
"""Fault campaign: kill -9 of bpm's daemon inside requests, under a load of
short tasks, then count what broke. The keeper lives on.
Each trial, in a fresh BPM_HOME (fs store, 6 slots):
- 10 clients at once each submit 50 short tasks in one `run --shell --from`;
  each task appends its record id to a file, sleeps 10-90 ms and exits with
  the code its own command names;
- at a random moment 0-30 ms after the clients have their input, the daemon gets
  SIGKILL; a client whose request it was serving starts the next daemon,
  asks it which of its request's processes exist, and submits the rest.
Then it waits for every record to finish and counts:
- double runs: a task whose id is in the file more than once;
- acknowledged and lost: an id a client printed that has no record;
- lost though it ran: a record `lost` whose task ran (the keeper lived, so
  bpm could know its end);
- wrong: a record finished with an exit code other than its command's, or
  `completed`/`failed` though its task never ran, or still not finished;
- created unacknowledged: records no client was given the id of (a request
  that failed must create nothing), and tasks that ran with no record;
- orphans beyond reach: processes of the trial alive after
  `bpm daemon stop --kill-all`.
Usage: tests/campaigns/daemon_kill.py [TRIALS]   (BPM=path/to/bpm, default target/release/bpm;
KEEP=1 keeps the state directory of a trial that found something)
Only local processes and a temporary folder; every loop is bounded.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

from common import BPM, bpm, marked

CLIENTS = 10
PER_CLIENT = 50
COUNTS = ["double runs", "acknowledged and lost", "lost though it ran", "wrong",
          "created unacknowledged", "orphans beyond reach"]


def daemon_pid(home):
    for line in bpm(home, "daemon", "status").splitlines():
        if line.startswith("pid"):
            return int(line.split()[1])
    raise RuntimeError("no daemon pid")


def trial(n):
    home = tempfile.mkdtemp(prefix="bpm-campaign-")
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("[limits]\nmax_running = 6\n")
    ran_log = os.path.join(home, "ran.log")
    bpm(home, "ps")
    daemon = daemon_pid(home)
    clients = []
    for c in range(CLIENTS):
        lines = [
            f"echo \"$BPM_PROCESS_ID\" >> '{ran_log}'; sleep 0.0{random.randint(1, 9)}; exit {(c + i) % 4}"
            for i in range(PER_CLIENT)
        ]
        p = subprocess.Popen(
            [BPM, "run", "--shell", "--from", "-"],
            env={**os.environ, "BPM_HOME": home},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        clients.append((p, "\n".join(lines) + "\n"))
    for p, text in clients:
        p.stdin.write(text)
        p.stdin.close()
    time.sleep(random.uniform(0, 0.03))
    os.kill(daemon, signal.SIGKILL)
    acked, failed_clients, resumed = set(), 0, 0
    for p, _ in clients:
        p.wait(timeout=90)
        out, err = p.stdout.read(), p.stderr.read()
        # Whatever a client printed was acknowledged, even if it failed.
        acked.update(out.split())
        if p.returncode != 0:
            failed_clients += 1
        if "asking the next daemon" in err:
            resumed += 1
    deadline = time.time() + 60
    records = {}
    while time.time() < deadline:
        records = {r["id"]: r for r in json.loads(bpm(home, "ps", "--all", "--json"))}
        if all(r.get("state") not in ("pending", "starting", "running", "stopping", "paused")
               for r in records.values()):
            break
        time.sleep(0.2)
    ran = {}
    if os.path.exists(ran_log):
        for line in open(ran_log):
            ran[line.strip()] = ran.get(line.strip(), 0) + 1
    found = {k: [] for k in COUNTS}
    for id_, times in ran.items():
        if times > 1:
            found["double runs"].append(f"{id_} ran {times} times")
        if id_ not in records:
            found["created unacknowledged"].append(f"{id_} ran with no record")
    for id_ in acked:
        if id_ not in records:
            found["acknowledged and lost"].append(f"{id_} was printed and has no record")
    for id_, r in records.items():
        state, times = r.get("state"), ran.get(id_, 0)
        command = " ".join(r.get("command") or [])
        code = re.search(r"exit (\d)", command)
        if id_ not in acked:
            found["created unacknowledged"].append(f"{id_} is {state}, its id was never printed")
        if state == "lost":
            if times:
                found["lost though it ran"].append(f"{id_}: {r.get('error')}")
        elif state in ("completed", "failed"):
            if times == 0:
                found["wrong"].append(f"{id_} is {state} but never ran")
            elif code and r.get("exit_code") != int(code.group(1)):
                found["wrong"].append(f"{id_} exit {r.get('exit_code')}, its command says {code.group(1)}")
        elif state != "cancelled":
            found["wrong"].append(f"{id_} is {state} ({r.get('error')}), ran {times} times")
    bpm(home, "daemon", "stop", "--kill-all", check=False)
    time.sleep(0.5)
    orphans = marked(set(records) | set(ran))
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    found["orphans beyond reach"] = [str(p) for p in orphans]
    if os.environ.get("KEEP") and any(found[k] for k in COUNTS if k != "created unacknowledged"):
        print(f"kept {home}", flush=True)
    else:
        subprocess.run(["rm", "-rf", home], check=False)
    detail = [line for k in COUNTS for line in found[k][:3]]
    print(f"trial {n}: {resumed} of {CLIENTS} requests cut and taken up by the next daemon, "
          f"{failed_clients} failed, {len(records)} records; "
          + ", ".join(f"{k} {len(found[k])}" for k in COUNTS)
          + "".join(f"\n  {d}" for d in detail), flush=True)
    return [len(found[k]) for k in COUNTS]


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    totals = [0] * len(COUNTS)
    for n in range(1, trials + 1):
        for i, v in enumerate(trial(n)):
            totals[i] += v
    print(f"{trials} trials of kill -9 of the daemon inside {CLIENTS} requests of {PER_CLIENT} tasks:")
    for k, v in zip(COUNTS, totals):
        print(f"  {k}: {v}")
    sys.exit(1 if any(totals) else 0)


if __name__ == "__main__":
    main()
