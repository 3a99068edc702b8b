"""What the fault campaigns share: the bpm binary under test, a call of it
in a state directory, and the processes that carry a record's mark."""
import os
import subprocess

BPM = os.environ.get("BPM", "target/release/bpm")


def bpm(home, *args, stdin=None, check=True):
    out = subprocess.run(
        [BPM, *args],
        env={**os.environ, "BPM_HOME": home, "NO_COLOR": "1"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"bpm {' '.join(args)}: {out.returncode} {out.stderr}")
    return out.stdout


def marked(ids):
    """Pids of live processes that carry one of the records' marks."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        for var in env:
            if var.startswith(b"BPM_PROCESS_ID=") and var[15:].decode(errors="replace") in ids:
                found.append(int(entry))
    return found
