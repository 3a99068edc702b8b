"""Figures for bpm web in a real browser (Chromium): how long after a
process exits its badge changes, against `bpm wait` returning; and how long
the page takes to load and draw 1,000 records, against the same page with
none. Run by `cargo bench -p bpm --bench web`; prints figures, asserts nothing.
"""

import json
import statistics
import subprocess
import sys
import time

sys.argv = sys.argv[:1] + sys.argv[1:4] + ["/tmp"]
import browser as b  # noqa: E402  (the browser test's helpers)

ROUNDS = 10


def exit_to_badge(d):
    badge, wait = [], []
    for _ in range(ROUNDS):
        rid = b.bpm("run", "--shell", "--", "sleep 0.4; date +%s%N")
        b.wait(d, "the row", lambda: b.state_of(d, rid) == "running")
        d.execute_script("""
            const id = arguments[0];
            window.badgeAt = null;
            new MutationObserver((_, o) => {
              const tr = document.querySelector(`#rows tr[data-id='${id}']`);
              if (tr && tr.dataset.state === 'completed') { window.badgeAt = Date.now(); o.disconnect(); }
            }).observe(document.getElementById('rows'), {subtree: true, attributes: true, attributeFilter: ['data-state']});
        """, rid)
        b.wait(d, "the badge", lambda: d.execute_script("return window.badgeAt"))
        ended_ns = int(b.bpm("logs", rid))
        badge.append(d.execute_script("return window.badgeAt") - ended_ns / 1e6)
        # Baseline: `bpm wait`, started before the process ends, returning.
        rid = b.bpm("run", "--shell", "--", "sleep 0.4; date +%s%N")
        subprocess.run([b.BPM, "wait", rid], env=b.ENV, check=True, capture_output=True)
        returned = time.time() * 1000
        wait.append(returned - int(b.bpm("logs", rid)) / 1e6)
    return statistics.median(badge), statistics.median(wait)


def load(d, n):
    times = []
    for _ in range(n):
        d.get(b.URL)
        b.wait(d, "the table", lambda: d.execute_script("return window.bpm && window.bpm.loadedAt"), timeout=60)
        times.append(d.execute_script("return window.bpm.loadedAt"))
    rows = d.execute_script("return document.querySelectorAll('#rows tr').length")
    return statistics.median(times), rows


def main():
    d = b.browser()
    try:
        d.get(b.URL)
        base, base_rows = load(d, 5)
        lines = "\n".join("true" for _ in range(1000)) + "\n"
        b.bpm("run", "--from", "-", "--", stdin=lines)
        b.bpm("wait", *[r["id"] for r in json.loads(b.bpm("ps", "--all", "--json"))])
        full, rows = load(d, 5)
        print("page load, navigation to a drawn table, median of 5:")
        print(f"  {rows} records: {full:.0f} ms; {base_rows} records: {base:.0f} ms (baseline); ratio {full / max(base, 1):.1f}")
        badge, wait = exit_to_badge(d)
        print(f"process exit -> badge changed in the page, median of {ROUNDS}:")
        print(f"  page {badge:.0f} ms; `bpm wait` returning {wait:.0f} ms (baseline); ratio {badge / max(wait, 1):.2f}")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
