"""Figures for bpm web in a real browser (Chromium): how long after a
process exits its badge changes, against `bpm wait` returning; and how long
the page takes to load and draw 1,000 records, against the same page with
none. Run by `cargo bench -p bpm-cli --bench web`; prints figures, asserts nothing.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.argv = sys.argv[:1] + sys.argv[1:4] + ["/tmp"]
import browser as b  # noqa: E402  (the browser test's helpers)

ROUNDS = 10


# Set before the page loads: notes when the page's own event stream hands
# it a record's end, before the page draws it; and every frame of the page's
# main thread that took 50 ms or more (Long Animation Frames), so that a late
# event can be told apart from a page that was busy when it came.
NOTE_STREAM = """
(() => {
  window.longFrames = [];
  new PerformanceObserver((list) => {
    for (const f of list.getEntries()) window.longFrames.push({
      at: performance.timeOrigin + f.startTime,
      ms: f.duration,
      blocking: f.blockingDuration,
      render: f.renderStart ? f.startTime + f.duration - f.renderStart : 0,
      scripts: (f.scripts || []).map((s) => `${s.invoker} ${Math.round(s.duration)} ms`).join(', '),
    });
  }).observe({type: 'long-animation-frame', buffered: true});
  const Source = window.EventSource;
  window.streamAt = {};
  window.EventSource = class extends Source {
    constructor(url, options) {
      super(url, options);
      if (String(url).includes('/api/live')) this.addEventListener('change', (m) => {
        const e = JSON.parse(m.data).event;
        if (e.state === 'completed' && !(e.id in window.streamAt)) window.streamAt[e.id] = performance.timeOrigin + performance.now();
      });
    }
  };
})();
"""


def exit_to_badge(d):
    badge, stream, wait, busy = [], [], [], []
    gate = f"{b.HOME}/bench-gate"
    for _ in range(ROUNDS):
        # Held until the page watches it: on a page of 1,000 records its row
        # may take longer to show `running` than a short sleep lives.
        rid = b.bpm("run", "--shell", "--", f"while [ ! -e {gate} ]; do sleep 0.005; done; date +%s%N")
        b.wait(d, "the row", lambda: b.state_of(d, rid) == "running")
        d.execute_script("""
            const id = arguments[0];
            window.badgeAt = null;
            new MutationObserver((_, o) => {
              const tr = document.querySelector(`#rows tr[data-id='${id}']`);
              if (tr && tr.dataset.state === 'completed') { window.badgeAt = Date.now(); o.disconnect(); }
            }).observe(document.getElementById('rows'), {subtree: true, attributes: true, attributeFilter: ['data-state']});
        """, rid)
        open(gate, "w").close()
        b.wait(d, "the badge", lambda: d.execute_script("return window.badgeAt"))
        os.remove(gate)
        ended_ns = int(b.bpm("logs", rid))
        badge.append(d.execute_script("return window.badgeAt") - ended_ns / 1e6)
        came = d.execute_script("return window.streamAt[arguments[0]]", rid)
        stream.append(came - ended_ns / 1e6)
        busy.append(busy_between(d, ended_ns / 1e6, came))
        # Baseline: `bpm wait`, started before the process ends, returning.
        rid = b.bpm("run", "--shell", "--", "sleep 0.4; date +%s%N")
        subprocess.run([b.BPM, "wait", rid], env=b.ENV, check=True, capture_output=True)
        returned = time.time() * 1000
        wait.append(returned - int(b.bpm("logs", rid)) / 1e6)
    print("  rounds, page:", " ".join(f"{x:.0f}" for x in badge), "| its stream:", " ".join(f"{x:.0f}" for x in stream), "| wait:", " ".join(f"{x:.0f}" for x in wait))
    print("  the page's main thread in a long frame while its event was due, ms:", " ".join(f"{x:.0f}" for x, _ in busy))
    for (late, (_, frames)) in zip(stream, busy):
        if late > 20:
            print(f"    a late event ({late:.0f} ms) came during:", "; ".join(frames) or "no long frame")
    return statistics.median(badge), statistics.median(stream), statistics.median(wait)


def busy_between(d, start, end):
    """How much of [start, end] (epoch ms) the page's main thread spent in
    long frames, and those frames described."""
    frames = d.execute_script("return window.longFrames.splice(0)")
    spent, told = 0.0, []
    for f in frames:
        overlap = min(end, f["at"] + f["ms"]) - max(start, f["at"])
        if overlap > 0:
            spent += overlap
            told.append(f"a {f['ms']:.0f} ms frame ({f['render']:.0f} ms of style, layout and paint; {f['scripts'] or 'no script'})")
    return spent, told


def exit_to_event():
    """The same trip to a plain HTTP client reading the event stream: what
    the server adds, without a browser."""
    port = int(b.BASE.rsplit(":", 1)[1])
    token = b.URL.split("token=", 1)[1]
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(f"GET /api/live HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: bpm_web_{port}={token}\r\n\r\n".encode())
    seen = {}

    def read():
        for line in conn.makefile("r"):
            if line.startswith('data: {"event"'):
                event = json.loads(line[6:])["event"]
                if event["state"] == "completed":
                    seen.setdefault(event["id"], time.time() * 1000)

    threading.Thread(target=read, daemon=True).start()
    time.sleep(2.5)
    out = []
    for _ in range(ROUNDS):
        rid = b.bpm("run", "--shell", "--", "sleep 0.4; date +%s%N")
        deadline = time.monotonic() + 10
        while rid not in seen and time.monotonic() < deadline:
            time.sleep(0.002)
        out.append(seen[rid] - int(b.bpm("logs", rid)) / 1e6)
    conn.close()
    return statistics.median(out)


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
        d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": NOTE_STREAM})
        d.get(b.URL)
        base, base_rows = load(d, 5)
        lines = "\n".join("true" for _ in range(1000)) + "\n"
        b.bpm("run", "--from", "-", "--", stdin=lines)
        b.bpm("wait", *[r["id"] for r in json.loads(b.bpm("ps", "--all", "--json"))])
        full, rows = load(d, 5)
        # One redraw of the whole table, as each batch of events causes.
        redraw = d.execute_script("""
            const t = performance.now();
            for (let i = 0; i < 50; i++) { window.bpm.order = []; render(); }
            return (performance.now() - t) / 50;
        """)
        # A draw after an event that moves no row: what each change costs.
        draw = d.execute_script("""
            const t = performance.now();
            for (let i = 0; i < 50; i++) render();
            return (performance.now() - t) / 50;
        """)
        # The draw after one record's change that moves no row: only its
        # row, drawn as the event comes.
        # (Builds before the one-row draw have no renderChanged: n/a.)
        one = d.execute_script("""
            if (typeof renderChanged !== 'function') return null;
            const id = window.bpm.order[0];
            const t = performance.now();
            for (let i = 0; i < 50; i++) if (!renderChanged([id])) throw new Error('the whole table was drawn');
            return (performance.now() - t) / 50;
        """)
        print("page load, navigation to a drawn table, median of 5:")
        print(f"  {rows} records: {full:.0f} ms; {base_rows} records: {base:.0f} ms (baseline); ratio {full / max(base, 1):.1f}")
        print(f"  one redraw of the {rows}-row table (order rebuilt): {redraw:.1f} ms (a frame is 16.7 ms)")
        print(f"  one draw of the whole table when no row moves: {draw:.1f} ms")
        print(f"  one draw after one record's change, its row only: {'n/a' if one is None else f'{one:.2f} ms'}")
        badge, stream, wait = exit_to_badge(d)
        print(f"process exit -> badge changed in the page, median of {ROUNDS}:")
        print(f"  page {badge:.0f} ms; `bpm wait` returning {wait:.0f} ms (baseline); ratio {badge / max(wait, 1):.2f}")
        print(f"  of which the end reaching the page's event stream: {stream:.0f} ms (the rest is the page's draw)")
        raw = exit_to_event()
        print(f"  the same event at a plain HTTP client reading the stream: {raw:.1f} ms")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
