"""Where the page's long frames come from: the main thread's frames of 50 ms
or more (Long Animation Frames) over 30 s each, on a page of 1,000 finished
records, with one CPU-busy live process, with none, and with one sleeping
live process; then, with the busy one, under CSS that would make the table
cheaper to lay out or paint if the table were the cost. Prints figures;
asserts nothing.

Run against a running `bpm web` (as `tests/web/bench.py` is):
  bpm web --listen 127.0.0.1:0   # prints URL
  python tests/web/frames.py BPM URL HOME
"""

import json
import statistics
import sys
import time

sys.argv = sys.argv[:1] + sys.argv[1:4] + ["/tmp"]
import browser as b  # noqa: E402  (the browser test's helpers)

WATCH_S = 30

OBSERVE = """
(() => {
  window.longFrames = [];
  new PerformanceObserver((list) => {
    for (const f of list.getEntries()) window.longFrames.push(f.duration);
  }).observe({type: 'long-animation-frame', buffered: true});
})();
"""

# CSS that would remove most of the table's layout or paint work.
VARIANTS = [
    ("the 1,000 finished rows hidden", "#rows tr:not([data-state=running]) { display: none; }"),
    ("table-layout: fixed", "table { table-layout: fixed; }"),
    ("content-visibility: auto on rows", "#rows tr { content-visibility: auto; contain-intrinsic-size: auto 33px; }"),
]

BUSY = "while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.3; done"


def watch(d, label):
    d.execute_script("window.longFrames.splice(0)")
    time.sleep(WATCH_S)
    ms = sorted(d.execute_script("return window.longFrames.splice(0)"))
    median = f"{statistics.median(ms):.0f} ms" if ms else "-"
    print(f"  {label}: {len(ms)} long frames in {WATCH_S} s; median {median}; longest {[round(x) for x in ms[-3:]]}")


def with_css(d, css):
    d.execute_script(
        "const s = document.createElement('style'); s.id = 'variant'; s.textContent = arguments[0]; document.head.append(s);",
        css,
    )
    time.sleep(2)


def main():
    d = b.browser()
    try:
        d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": OBSERVE})
        lines = "\n".join("true" for _ in range(1000)) + "\n"
        b.bpm("run", "--from", "-", "--", stdin=lines)
        b.bpm("wait", *[r["id"] for r in json.loads(b.bpm("ps", "--all", "--json"))])
        d.get(b.URL)
        b.wait(d, "the table", lambda: d.execute_script("return window.bpm && window.bpm.loadedAt"), timeout=60)
        print("the page's long frames (50 ms or more), 1,000 finished records:")
        busy = b.bpm("run", "--shell", "--", BUSY).strip()
        time.sleep(3)
        watch(d, "one CPU-busy live process")
        for label, css in VARIANTS:
            with_css(d, css)
            watch(d, f"the same, {label}")
            d.execute_script("document.getElementById('variant').remove()")
        b.bpm("stop", busy)
        time.sleep(3)
        watch(d, "no live process")
        light = b.bpm("run", "--", "sleep", str(WATCH_S + 10)).strip()
        time.sleep(3)
        watch(d, "one sleeping live process")
        b.bpm("stop", light)
    finally:
        d.quit()


if __name__ == "__main__":
    main()
