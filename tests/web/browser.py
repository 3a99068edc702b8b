"""bpm web in a real browser: Debian's Chromium, driven through chromedriver
by Selenium. Run by crates/cli/tests/web_browser.rs, which starts `bpm web`
and passes: the bpm binary, the page's URL (with the token), the state
directory, and where to save screenshots.

Every check raises on failure; the last line printed is "N passed, 0 failed".
"""

import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

BPM, URL, HOME, SHOTS = sys.argv[1:5]
BASE = URL.split("?")[0].rstrip("/")
ENV = dict(os.environ, BPM_HOME=HOME)
PASSED = []


def bpm(*args, stdin=None):
    out = subprocess.run([BPM, *args], env=ENV, capture_output=True, text=True, input=stdin, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"bpm {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out.stdout.strip()


def check(name):
    def wrap(fn):
        started = time.monotonic()
        fn()
        PASSED.append(name)
        print(f"ok   {name} ({time.monotonic() - started:.2f}s)", flush=True)
        return fn
    return wrap


def browser():
    """A headless Chromium whose profile folder goes when it quits."""
    profile = tempfile.TemporaryDirectory(prefix="bpm-web-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,720",
        f"--user-data-dir={profile.name}",
    ]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    quit_driver = driver.quit

    def quit_and_clean():
        quit_driver()
        profile.cleanup()

    driver.quit = quit_and_clean
    return driver


def wait(d, what, cond, timeout=10.0, seen=None):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda _: cond())
    except TimeoutException:
        now = f" (seen: {seen()})" if seen else ""
        raise AssertionError(f"timed out after {timeout}s waiting for {what}{now}") from None


def click(d, what, css):
    """Clicks what `css` finds, found again if the page re-rendered it
    between the finding and the click (rows and a record's buttons are
    drawn again as its live updates come)."""
    def attempt():
        try:
            found = d.find_elements(By.CSS_SELECTOR, css)
            if not found:
                return False
            found[0].click()
            return True
        except StaleElementReferenceException:
            return False
    wait(d, what, attempt)


def row(d, rid):
    found = d.find_elements(By.CSS_SELECTOR, f'#rows tr[data-id="{rid}"]')
    return found[0] if found else None


# Read in one script: rows are replaced as the table re-renders, so an
# element found in one call may be gone by the next.
def state_of(d, rid):
    return d.execute_script(
        "const r = document.querySelector(`#rows tr[data-id='${arguments[0]}']`); return r ? r.dataset.state : null;",
        rid)


def visible_ids(d):
    return d.execute_script("return [...document.querySelectorAll('#rows tr')].map((t) => t.dataset.id);")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has ended: only its parent has not reaped it yet.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def confirm(d, answer):
    dialog = wait(d, "the confirmation dialog", lambda: d.find_element(By.CSS_SELECTOR, "dialog#confirm[open]"))
    focused = d.switch_to.active_element.get_attribute("value")
    assert focused == "no", f"the confirmation must default to No, focus is on {focused!r}"
    dialog.find_element(By.CSS_SELECTOR, f'button[value="{answer}"]').click()
    wait(d, "the dialog to close", lambda: not d.find_elements(By.CSS_SELECTOR, "dialog#confirm[open]"))


def not_blank(path):
    img = Image.open(path).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20) or []
    assert img.size[0] >= 1000 and len(colours) > 20, f"{path} looks blank: {len(colours)} colours"


def main():
    d = browser()
    try:
        scenario(d)
    finally:
        d.quit()
    print(f"{len(PASSED)} passed, 0 failed")


def scenario(d):
    @check("the page refuses a browser without the token")
    def _():
        d.get(BASE + "/")
        body = d.find_element(By.TAG_NAME, "body").text
        assert "needs bpm's token" in body, body
        d.get(BASE + "/?token=wrong")
        assert "wrong or old" in d.find_element(By.TAG_NAME, "body").text
        assert not d.find_elements(By.ID, "rows")

    @check("the page loads with the token, which leaves the address bar")
    def _():
        d.get(URL)
        wait(d, "the table", lambda: d.find_elements(By.ID, "rows") and d.execute_script("return window.bpm.renders > 0"))
        assert "token" not in d.current_url, d.current_url
        d.execute_script("window.__no_reload = 1")

    ids = {}

    @check("a process started from the CLI appears within a second, without a reload")
    def _():
        before = time.monotonic()
        ids["talker"] = bpm("run", "--name", "talker", "--shell", "--",
                            "i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo line-$i; printf 'err-%s\\n' $i >&2; sleep 0.1; done")
        wait(d, "the new row", lambda: row(d, ids["talker"]) is not None, timeout=1.0)
        took = time.monotonic() - before
        assert d.execute_script("return window.__no_reload") == 1, "the page reloaded"
        print(f"     row shown {took * 1000:.0f} ms after bpm run returned")

    @check("its output appears live in the tail")
    def _():
        click(d, "the talker's row", f'#rows tr[data-id="{ids["talker"]}"]')
        out = d.find_element(By.ID, "out")
        wait(d, "the first lines", lambda: "line-3" in out.text)
        seen = out.text.count("line-")
        wait(d, "more lines, live", lambda: out.text.count("line-") >= seen + 5)
        assert "err-" in out.text, "stderr is shown with stdout"
        Select(d.find_element(By.ID, "o-stream")).select_by_value("stdout")
        wait(d, "stdout only", lambda: "line-" in out.text and "err-" not in out.text)
        d.find_element(By.ID, "o-search").send_keys("line-1")
        wait(d, "the search to filter lines", lambda: all("line-1" in l for l in out.text.splitlines() if l))
        d.find_element(By.ID, "o-search").clear()
        d.find_element(By.ID, "o-search").send_keys(Keys.BACKSPACE)
        wait(d, "every line again", lambda: not d.find_elements(By.CSS_SELECTOR, "#out mark"))

    @check("a screenshot of the table and the detail pane is not blank")
    def _():
        os.makedirs(SHOTS, exist_ok=True)
        path = os.path.join(SHOTS, "detail.png")
        d.save_screenshot(path)
        not_blank(path)
        d.find_element(By.ID, "d-close").click()
        path = os.path.join(SHOTS, "table.png")
        d.save_screenshot(path)
        not_blank(path)

    @check("stopping a tree from the page, after a confirmation, ends all of it")
    def _():
        pids = tempfile.mktemp(prefix="bpm-web-pids-")
        ids["tree"] = bpm("run", "--name", "stubborn-tree", "--shell", "--",
                          f"trap '' TERM; sleep 300 & echo $! >> {pids}; (trap '' TERM; sleep 300) & echo $! >> {pids}; wait")
        wait(d, "the tree's row", lambda: state_of(d, ids["tree"]) == "running")
        wait(d, "both children", lambda: os.path.exists(pids) and len(open(pids).read().split()) == 2)
        children = [int(p) for p in open(pids).read().split()]
        click(d, "the tree's row", f'#rows tr[data-id="{ids["tree"]}"]')
        click(d, "the stop button", '#d-actions button[data-action="stop"]')
        confirm(d, "no")
        time.sleep(0.3)
        assert state_of(d, ids["tree"]) == "running", "No must leave it running"
        click(d, "the force button", '#d-actions button[data-action="force"]')
        confirm(d, "yes")
        wait(d, "the badge to change", lambda: state_of(d, ids["tree"]) == "cancelled")
        badge = d.execute_script(
            "return document.querySelector(`#rows tr[data-id='${arguments[0]}'] .badge`).textContent", ids["tree"])
        assert badge == "cancelled", badge
        wait(d, "every process of the tree to end", lambda: not any(alive(p) for p in children), timeout=5)
        os.unlink(pids)

    @check("the start form starts a process")
    def _():
        d.find_element(By.ID, "d-close").click()
        d.find_element(By.ID, "new").click()
        form = wait(d, "the form", lambda: d.find_element(By.CSS_SELECTOR, "dialog#start[open] form"))
        form.find_element(By.NAME, "command").send_keys("sh -c 'echo from-the-form $GREETING'")
        form.find_element(By.NAME, "name").send_keys("form-made")
        form.find_element(By.NAME, "env").send_keys("GREETING=hello")
        form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
        wait(d, "the form to close", lambda: not d.find_elements(By.CSS_SELECTOR, "dialog#start[open]"))
        record = json.loads(bpm("show", "form-made", "--json"))
        ids["form"] = record["id"]
        wait(d, "its row to complete", lambda: state_of(d, ids["form"]) == "completed",
             seen=lambda: (state_of(d, ids["form"]), bpm("show", ids["form"]), visible_ids(d)))
        out = bpm("logs", "form-made")
        assert out == "from-the-form hello", out

    @check("the start form names what is wrong")
    def _():
        d.find_element(By.ID, "new").click()
        form = wait(d, "the form", lambda: d.find_element(By.CSS_SELECTOR, "dialog#start[open] form"))
        form.find_element(By.NAME, "command").send_keys("true")
        form.find_element(By.NAME, "timeout").send_keys("soon")
        form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
        error = wait(d, "an error", lambda: d.find_element(By.ID, "start-error").text)
        assert "timeout" in error, error
        form.find_element(By.ID, "start-cancel").click()

    @check("filters and search narrow the table")
    def _():
        ids["failed"] = bpm("run", "--name", "doomed", "--", "sh", "-c", "exit 7")
        wait(d, "the failure", lambda: state_of(d, ids["failed"]) == "failed")
        Select(d.find_element(By.ID, "f-state")).select_by_value("failed")
        wait(d, "only failed rows", lambda: visible_ids(d) == [ids["failed"]])
        exit_cell = d.execute_script(
            "return document.querySelector(`#rows tr[data-id='${arguments[0]}'] .c-exit`).textContent", ids["failed"])
        assert exit_cell == "7", exit_cell
        Select(d.find_element(By.ID, "f-state")).select_by_value("")
        search = d.find_element(By.ID, "search")
        search.send_keys("form-made")
        wait(d, "only the searched row", lambda: visible_ids(d) == [ids["form"]], seen=lambda: visible_ids(d))
        search.clear()
        search.send_keys(Keys.BACKSPACE)
        wait(d, "every row again", lambda: len(visible_ids(d)) >= 4)

    @check("rows stay in the drawn order as records come and the sort changes")
    def _():
        # New rows are put in their place without moving the others: the
        # table must read as its order after each change.
        in_order = lambda: visible_ids(d) == d.execute_script("return window.bpm.order")
        was = d.execute_script("return {...window.bpm.sort}")
        names = lambda: d.execute_script(
            "return [...document.querySelectorAll('#rows tr .nm')].map((n) => n.textContent);")
        for name in ["order-b", "order-c", "order-a"]:
            bpm("run", "--name", name, "--", "true")
        wait(d, "the new rows", lambda: sorted(n for n in names() if n.startswith("order-")) == ["order-a", "order-b", "order-c"] and in_order())
        got = lambda: [n for n in names() if n.startswith("order-")]
        for want in [["order-a", "order-b", "order-c"], ["order-c", "order-b", "order-a"]]:
            click(d, "the Name header", 'thead th[data-sort="name"]')
            wait(d, f"rows sorted as {want}", lambda: got() == want and in_order(), seen=got)
        bpm("run", "--name", "order-0", "--", "true")
        wait(d, "a new row in its sorted place", lambda: got() == ["order-c", "order-b", "order-a", "order-0"] and in_order(), seen=got)
        click(d, "the Name header", 'thead th[data-sort="name"]')
        wait(d, "the sort back to ascending", lambda: got()[:1] == ["order-0"] and in_order(), seen=got)
        d.execute_script("window.bpm.sort = arguments[0]; render();", was)
        wait(d, "the first sort again", lambda: in_order())

    @check("a project's services are grouped, filtered by project, and show their health")
    def _():
        stack = tempfile.mkdtemp(prefix="bpm-web-stack-")
        with open(os.path.join(stack, "bpm.toml"), "w") as f:
            f.write('[project]\nname = "webshop"\n'
                    '[services.a]\ncommand = "exec sleep 300"\n'
                    'health = { exec = "true", every = "200ms", failures = 1 }\n'
                    '[services.b]\ncommand = "exec sleep 300"\n')
        bpm("up", "-f", os.path.join(stack, "bpm.toml"), "--wait")
        ids["webshop"] = [line.split()[0] for line in bpm("ps", "--project", "webshop").splitlines()[1:]]
        wait(d, "the project's rows", lambda: all(
            d.execute_script("return document.querySelector(`#rows tr[data-id$='${arguments[0]}']`) !== null", short)
            for short in ids["webshop"]))
        Select(d.find_element(By.ID, "f-project")).select_by_value("webshop")
        names = lambda: d.execute_script(
            "return [...document.querySelectorAll('#rows tr .nm')].map((n) => n.textContent);")
        wait(d, "only the project's services", lambda: sorted(names()) == ["webshop/a", "webshop/b"], seen=names)
        badge = lambda: d.execute_script(
            "const h = [...document.querySelectorAll('#rows tr .health')]; return h.map((x) => x.textContent);")
        wait(d, "a health badge", lambda: badge() == ["healthy"], seen=badge)
        Select(d.find_element(By.ID, "f-project")).select_by_value("")
        order = visible_ids(d)
        first_two = [d.execute_script(
            "return document.querySelector(`#rows tr[data-id='${arguments[0]}'] .nm`).textContent", i)
            for i in order[:2]]
        assert sorted(first_two) == ["webshop/a", "webshop/b"], f"projects first, together: {first_two}"
        bpm("down", "-f", os.path.join(stack, "bpm.toml"))
        shutil.rmtree(stack)

    @check("a cross-origin POST is refused")
    def _():
        marker = tempfile.mktemp(prefix="bpm-web-pwned-")
        evil = EvilSite(BASE, marker)
        try:
            before = len(json.loads(bpm("ps", "--all", "--json")))
            d.get(evil.url)
            result = wait(d, "the other site's attempts", lambda: d.execute_script("return window.attempts"), timeout=10)
            # The JSON request needs a preflight, which the server refuses, so
            # the browser blocks it; the "simple" one is sent, and its answer
            # is opaque to the other page: what it did is checked below.
            assert result["json"] == "blocked", result
            time.sleep(0.5)
            after = len(json.loads(bpm("ps", "--all", "--json")))
            assert after == before, f"a record was created cross-origin: {before} -> {after}"
            assert not os.path.exists(marker), "the cross-origin command ran"
        finally:
            evil.close()
        d.get(URL)
        wait(d, "the table again", lambda: row(d, ids["form"]) is not None)

    @check("a schedule shows as scheduled with its next due time, and pauses from the page")
    def _():
        ids["every"] = bpm("run", "--name", "hourly", "--every", "1h", "--", "true")
        wait(d, "the schedule's row", lambda: row(d, ids["every"]) is not None)
        cell = lambda: d.find_element(By.CSS_SELECTOR, f'#rows tr[data-id="{ids["every"]}"] td:nth-child(3)').text
        wait(d, "the scheduled badge", lambda: "scheduled" in cell() and "next" in cell())
        click(d, "its row", f'#rows tr[data-id="{ids["every"]}"]')
        click(d, "pause", '#d-actions button[data-action="pause"]')
        confirm(d, "yes")
        wait(d, "the schedule paused", lambda: state_of(d, ids["every"]) == "paused")
        d.find_element(By.ID, "d-close").click()

    @check("a project's service scales from its detail: a copy more, a copy fewer")
    def _():
        stack = tempfile.mkdtemp(prefix="bpm-web-stack-")
        with open(os.path.join(stack, "bpm.toml"), "w") as f:
            f.write('[project]\nname = "pagestack"\n[services.w]\ncommand = "exec sleep 300"\n')
        bpm("up", "-f", os.path.join(stack, "bpm.toml"))
        first = json.loads(bpm("show", "pagestack/w", "--json"))["id"]
        wait(d, "the service's row", lambda: state_of(d, first) == "running")
        click(d, "its row", f'#rows tr[data-id="{first}"]')
        wait(d, "one copy", lambda: "copies 1" in d.find_element(By.ID, "d-actions").text)
        click(d, "one copy more", '#d-actions button[data-action="scale-up"]')
        wait(d, "two copies", lambda: "copies 2" in d.find_element(By.ID, "d-actions").text)
        second = json.loads(bpm("show", "pagestack/w.2", "--json"))
        assert second["state"] == "running", second
        click(d, "one copy fewer", '#d-actions button[data-action="scale-down"]')
        wait(d, "one copy again", lambda: state_of(d, second["id"]) == "cancelled")
        assert state_of(d, first) == "running", "the first copy is not touched"
        bpm("down", "-f", os.path.join(stack, "bpm.toml"))
        shutil.rmtree(stack, ignore_errors=True)
        d.find_element(By.ID, "d-close").click()

    @check("the keyboard moves, opens and closes")
    def _():
        body = d.find_element(By.TAG_NAME, "body")
        body.send_keys("j")
        wait(d, "a focused row", lambda: d.switch_to.active_element.get_attribute("data-id"))
        d.switch_to.active_element.send_keys(Keys.ENTER)
        wait(d, "the detail pane", lambda: d.find_element(By.ID, "detail").is_displayed())
        d.switch_to.active_element.send_keys(Keys.ESCAPE)
        wait(d, "the pane to close", lambda: not d.find_element(By.ID, "detail").is_displayed())
        body.send_keys("/")
        assert d.switch_to.active_element.get_attribute("id") == "search"

    @check("the page follows the system's dark or light preference")
    def _():
        def background():
            rgb = d.execute_script("return getComputedStyle(document.body).backgroundColor")
            r, g, b = [int(x) for x in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]]
            return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
        for scheme, dark in [("dark", True), ("light", False)]:
            d.execute_cdp_cmd("Emulation.setEmulatedMedia",
                              {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
            lum = background()
            assert (lum < 0.3) == dark, f"{scheme}: background luminance {lum:.2f}"
            if dark:
                d.save_screenshot(os.path.join(SHOTS, "dark.png"))

    @check("the page fits a phone-width screen")
    def _():
        d.set_window_size(390, 844)
        time.sleep(0.3)
        width = d.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"the page is {width}px wide on a 390px screen"
        path = os.path.join(SHOTS, "phone.png")
        d.save_screenshot(path)
        d.set_window_size(1280, 720)


class EvilSite:
    """A page on another origin (another port) that tries to start a process
    through the logged-in browser: once as JSON (preflighted), once as a
    'simple' text/plain request that needs no preflight."""

    def __init__(self, target, marker):
        body = f"""<!doctype html><script>
        window.attempts = null;
        const cmd = JSON.stringify({{command: "touch {marker}"}});
        async function go() {{
          let json = "error", simple = "error";
          try {{ json = (await fetch("{target}/api/processes", {{method: "POST", credentials: "include",
                headers: {{"Content-Type": "application/json"}}, body: cmd}})).status; }} catch (e) {{ json = "blocked"; }}
          try {{ simple = (await fetch("{target}/api/processes", {{method: "POST", credentials: "include",
                mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: cmd}})).status; }} catch (e) {{ simple = "blocked"; }}
          window.attempts = {{json, simple}};
        }}
        go();
        </script>""".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


if __name__ == "__main__":
    main()
