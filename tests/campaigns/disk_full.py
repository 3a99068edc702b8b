#!/usr/bin/env python3
"""Fault campaign: fill the disk under bpm's state, then count what broke.

Each trial, in a fresh BPM_HOME on a tmpfs of 8 MiB mounted for it (root):
- 6 writers print as fast as they can (20 MB each) once told to, then a
  last line, and exit with a code of their own;
- 3 quiet tasks print a line every 50 ms for a second and exit with theirs;
- a filler file takes the disk's free space but a random 0-900 KiB, the
  writers are told to go, and meanwhile batches of 20 `run --from` tasks
  are submitted every 100 ms.

Then it waits for every process and counts:
- killed or blocked: a process whose record lacks its own exit code
  (141 for SIGPIPE, or still running after 60 s);
- last line lost: a writer whose `logs` does not end with its last line;
- half-created: a record no client was given the id of, or a refused batch
  that left any record behind (every record must belong to an id printed);
- dropped reported: whether `logs` counted the dropped bytes;
- recovered: after the filler is deleted, the same daemon takes new work
  within 15 s, with no restart.

Usage: tests/campaigns/disk_full.py [TRIALS]   (BPM=path/to/bpm, default target/release/bpm)
Only local processes and a tmpfs it mounts itself; every loop is bounded.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time

BPM = os.environ.get("BPM", "target/release/bpm")
WRITERS = 6
QUIET = 3


def bpm(home, *args, check=True, timeout=90):
    out = subprocess.run(
        [BPM, *args],
        env={**os.environ, "BPM_HOME": home, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"bpm {' '.join(args)}: {out.returncode} {out.stderr}")
    return out


def trial(n):
    result = {"killed": 0, "last_lost": 0, "half_created": 0, "unreported": 0, "recovered": False}
    with tempfile.TemporaryDirectory() as tmp:
        home = os.path.join(tmp, "home")
        os.mkdir(home)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", home], check=True)
        try:
            go = os.path.join(tmp, "go")
            given = set()
            codes = {}
            for i in range(WRITERS):
                code = 10 + i
                script = (
                    f"while [ ! -e {go} ]; do sleep 0.02; done; "
                    f"head -c 20000000 /dev/zero | tr '\\0' w; echo; echo last-{i}; exit {code}"
                )
                pid = bpm(home, "run", "--name", f"w{i}", "--", "sh", "-c", script).stdout.strip()
                given.add(pid)
                codes[pid] = (code, f"last-{i}\n")
            for i in range(QUIET):
                code = 30 + i
                script = f"for k in $(seq 20); do echo q{i} $k; sleep 0.05; done; exit {code}"
                pid = bpm(home, "run", "--", "sh", "-c", script).stdout.strip()
                given.add(pid)
                codes[pid] = (code, None)
            daemon = open(os.path.join(home, "daemon.pid")).read().strip()
            st = os.statvfs(home)
            free = st.f_bavail * st.f_frsize
            left = random.randint(0, 900) << 10
            with open(os.path.join(home, "filler"), "wb") as f:
                f.write(b"\0" * max(0, free - left))
            open(go, "w").close()
            batch = os.path.join(tmp, "batch")
            with open(batch, "w") as f:
                f.write("true\n" * 20)
            refused = 0
            for _ in range(10):
                out = bpm(home, "run", "--from", batch, check=False)
                ids = out.stdout.split()
                given.update(ids)
                if out.returncode != 0:
                    refused += 1
                    if "no space left on" not in out.stderr:
                        raise RuntimeError(f"a refusal that does not say why: {out.stderr}")
                time.sleep(0.1)
            for pid, (code, last) in codes.items():
                out = bpm(home, "wait", pid, "--timeout", "60", check=False)
                if out.returncode != code:
                    result["killed"] += 1
                if last is not None:
                    logs = bpm(home, "logs", pid, check=False)
                    if not logs.stdout.endswith(last):
                        result["last_lost"] += 1
                    if "bytes of output were dropped" not in logs.stderr:
                        result["unreported"] += 1
            records = json.loads(bpm(home, "ps", "--all", "--json").stdout)
            result["half_created"] = sum(1 for r in records if r["id"] not in given)
            result["refused_batches"] = refused
            os.remove(os.path.join(home, "filler"))
            deadline = time.time() + 15
            while time.time() < deadline:
                out = bpm(home, "run", "--wait", "--", "echo", "back", check=False)
                if out.returncode == 0 and out.stdout == "back\n":
                    now = open(os.path.join(home, "daemon.pid")).read().strip()
                    result["recovered"] = now == daemon
                    break
                time.sleep(0.2)
        finally:
            bpm(home, "daemon", "stop", "--kill-all", check=False)
            subprocess.run(["umount", "-l", home], check=False)
    print(f"trial {n}: {json.dumps(result)}", flush=True)
    return result


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    if os.geteuid() != 0:
        sys.exit("this campaign mounts a tmpfs: run it as root")
    totals = {"killed": 0, "last_lost": 0, "half_created": 0, "unreported": 0, "recovered": 0, "refused_batches": 0}
    for n in range(trials):
        r = trial(n)
        for k in totals:
            totals[k] += int(r[k])
    print(
        f"{trials} trials: {totals['killed']} processes killed or blocked, "
        f"{totals['last_lost']} last lines lost, {totals['half_created']} records half-created, "
        f"{totals['unreported']} drops unreported, recovered by itself in {totals['recovered']}/{trials} "
        f"({totals['refused_batches']} batches refused by name)"
    )
    bad = totals["killed"] + totals["half_created"] + totals["unreported"] + (trials - totals["recovered"])
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
