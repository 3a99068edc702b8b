#!/usr/bin/env python3
"""Fault campaign: kill -9 of bpm's keeper under a load, then count what broke.

Each trial, in a fresh BPM_HOME (fs store, 6 slots: the writers hold 4):
- 4 writers print a line every 20 ms for the whole trial: killing the keeper
  must not kill them (their pipes outlive it);
- 120 short tasks, submitted in one `run --from`, each append its record id
  to a file, sleep 10-90 ms and exit with a code of its own;
- at a random moment 50-600 ms in, the keeper gets SIGKILL.

Then it waits for every task and counts:
- killed by bpm's death: writers that are no longer running;
- records wrong: a task that ran twice, a record that says it ran but did
  not, one that ran but says it did not, an exit code that differs from the
  task's, a record still not finished;
- honest unknowns (not errors): tasks whose end no keeper saw, recorded as
  lost with "exit code unknown";
- orphans beyond reach: processes of the trial still alive after
  `bpm daemon stop --kill-all`.

Usage: tests/campaigns/keeper_kill.py [TRIALS]   (BPM=path/to/bpm, default target/release/bpm)
Only local processes and a temporary folder; every loop is bounded.
"""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from common import BPM, bpm, marked

TASKS = 120
WRITERS = 4


def keeper_pid(home):
    for line in bpm(home, "daemon", "status").splitlines():
        if line.startswith("keeper"):
            return int(line.split()[2])
    raise RuntimeError("no keeper")


def trial(n):
    home = tempfile.mkdtemp(prefix="bpm-campaign-")
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("[limits]\nmax_running = 6\n")
    ran_log = os.path.join(home, "ran.log")
    writers = [
        bpm(home, "run", "--name", f"w{i}", "--shell", "--",
            "while true; do echo tick; sleep 0.02; done").strip()
        for i in range(WRITERS)
    ]
    for _ in range(100):
        if all(json.loads(bpm(home, "show", w, "--json"))["state"] == "running" for w in writers):
            break
        time.sleep(0.05)
    codes = {}
    lines = []
    for i in range(TASKS):
        code = i % 4
        lines.append(f"echo \"$BPM_PROCESS_ID\" >> '{ran_log}'; sleep 0.0{random.randint(1, 9)}; exit {code}")
    submitted = subprocess.Popen(
        [BPM, "run", "--shell", "--from", "-"],
        env={**os.environ, "BPM_HOME": home},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    keeper = keeper_pid(home)
    out, err = submitted.communicate("\n".join(lines) + "\n", timeout=60)
    ids = out.split()
    if submitted.returncode != 0 or len(ids) != TASKS:
        raise RuntimeError(f"submission: {submitted.returncode} {err}")
    for i, id_ in enumerate(ids):
        codes[id_] = i % 4
    time.sleep(random.uniform(0.05, 0.6))
    os.kill(keeper, signal.SIGKILL)
    deadline = time.time() + 60
    records = {}
    while time.time() < deadline:
        records = {r["id"]: r for r in json.loads(bpm(home, "ps", "--all", "--json"))}
        if all(records.get(i, {}).get("state") not in (None, "pending", "starting", "running", "stopping")
               for i in ids):
            break
        time.sleep(0.2)
    ran = {}
    if os.path.exists(ran_log):
        for line in open(ran_log):
            ran[line.strip()] = ran.get(line.strip(), 0) + 1
    wrong, unknown = [], 0
    for id_ in ids:
        r = records.get(id_, {})
        state, times = r.get("state"), ran.get(id_, 0)
        if times > 1:
            wrong.append(f"{id_} ran {times} times")
        elif state in ("completed", "failed"):
            if times == 0:
                wrong.append(f"{id_} is {state} but never ran")
            elif r.get("exit_code") != codes[id_]:
                wrong.append(f"{id_} exit {r.get('exit_code')}, expected {codes[id_]}")
        elif state == "lost" and "exit code is unknown" in (r.get("error") or ""):
            unknown += 1
        else:
            wrong.append(f"{id_} is {state} ({r.get('error')}), ran {times} times")
    killed = sum(1 for w in writers if records.get(w, {}).get("state") != "running")
    bpm(home, "daemon", "stop", "--kill-all", check=False)
    time.sleep(0.5)
    orphans = marked(set(ids) | set(writers))
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    subprocess.run(["rm", "-rf", home], check=False)
    print(f"trial {n}: killed {killed}, wrong {len(wrong)}, honest unknowns {unknown}, orphans {len(orphans)}"
          + "".join(f"\n  {w}" for w in wrong[:5]), flush=True)
    return killed, len(wrong), unknown, len(orphans)


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    totals = [0, 0, 0, 0]
    for n in range(1, trials + 1):
        for i, v in enumerate(trial(n)):
            totals[i] += v
    print(f"{trials} trials of kill -9 of the keeper under {TASKS} short tasks and {WRITERS} writers:")
    print(f"  processes killed by bpm's death: {totals[0]}")
    print(f"  records wrong: {totals[1]}")
    print(f"  honest unknowns (lost, exit code unknown): {totals[2]}")
    print(f"  orphans beyond reach: {totals[3]}")
    sys.exit(1 if totals[0] or totals[1] or totals[3] else 0)


if __name__ == "__main__":
    main()
