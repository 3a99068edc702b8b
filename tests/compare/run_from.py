"""Two bpm builds head to head on one job: 500 `true`s submitted with one
`bpm run --from -` to a fresh daemon (`max_running = 2`), then one
`bpm wait` for all; the builds alternate round by round, and each prints
its median and every round's seconds.

    python3 tests/compare/run_from.py BEFORE_BPM AFTER_BPM [ROUNDS]

For a change whose benchmark ratio moved less than its baseline swings
(bench/NOTEBOOK.md says when it was used). Everything runs on this machine,
in temporary state directories, and stops by itself.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time


def one_round(bpm):
    with tempfile.TemporaryDirectory() as home:
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write("[limits]\nmax_running = 2\n")
        env = {**os.environ, "BPM_HOME": home}
        env.pop("BPM_NODE", None)
        subprocess.run([bpm, "ps"], env=env, capture_output=True, check=True)
        started = time.monotonic()
        lines = "".join(f"{i}\n" for i in range(500))
        out = subprocess.run([bpm, "run", "--from", "-", "--", "true"], env=env,
                             input=lines, capture_output=True, text=True, check=True)
        ids = out.stdout.split()
        assert len(ids) == 500, f"{bpm} answered {len(ids)} ids"
        subprocess.run([bpm, "wait", "--timeout", "120", *ids], env=env, capture_output=True, check=True)
        took = time.monotonic() - started
        subprocess.run([bpm, "daemon", "stop", "--kill-all"], env=env, capture_output=True)
        return took


def main():
    builds = {"before": sys.argv[1], "after": sys.argv[2]}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    times = {name: [] for name in builds}
    for r in range(rounds):
        order = list(builds) if r % 2 == 0 else list(builds)[::-1]
        for name in order:
            times[name].append(one_round(builds[name]))
            time.sleep(0.5)
    for name, took in times.items():
        print(f"{name}: median {statistics.median(took):.3f} s; rounds " + " ".join(f"{t:.3f}" for t in took))


if __name__ == "__main__":
    main()
