//! `bpm web`'s HTTP API on the real binary and daemon, spoken as plain
//! HTTP/1.1: the token and its cookie, the origin check, read-only mode, the
//! start form's errors, the actions, output reads and downloads, and the
//! live streams. Also what the CLI shows of resource usage (`ps`, `show`, `top`).

mod support;

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use support::Web;

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_token_is_needed_and_becomes_a_private_cookie() {
    let web = Web::start(&[]);
    let mode = std::fs::metadata(web.home.path().join("web-token"))
        .expect("the token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token is private");
    for path in ["/", "/api/processes", "/assets/app.js", "/api/live"] {
        let r = web.request("GET", path, &[], "");
        assert_eq!(r.status, 401, "{path} without the token");
    }
    let wrong = web.request("GET", "/api/processes", &[("Cookie", "bpm_web_1=x")], "");
    assert_eq!(wrong.status, 401);
    let r = web.request("GET", "/?token=nope", &[], "");
    assert_eq!(r.status, 401);
    assert!(r.body.contains("wrong or old"), "{}", r.body);

    let r = web.request("GET", &format!("/?token={}", web.token), &[], "");
    assert_eq!(r.status, 303, "the token is exchanged for a cookie");
    assert_eq!(r.header("location"), Some("/"));
    let cookie = r.header("set-cookie").expect("a cookie");
    assert!(cookie.starts_with(&web.cookie()), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let page = web.get("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/assets/app.js"), "the page");
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'self'")),
        "{:?}",
        page.headers
    );
    assert_eq!(web.get("/assets/app.js").status, 200);
    assert_eq!(web.get("/assets/app.css").status, 200);
}

#[test]
fn changes_need_the_pages_own_origin() {
    let web = Web::start(&[]);
    let body = r#"{"command":"true"}"#;
    let cookie = web.cookie();
    for origin in [
        None,
        Some("http://evil.example"),
        Some("null"),
        Some("http://127.0.0.1:1"),
    ] {
        let mut headers = vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
        ];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        let r = web.request("POST", "/api/processes", &headers, body);
        assert_eq!(r.status, 403, "origin {origin:?}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap_or("")
                .contains("cross-origin")
        );
    }
    assert_eq!(web.get("/api/processes").json(), serde_json::json!([]));
    let r = web.send("POST", "/api/processes", body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["command_line"], "true");
}

#[test]
fn read_only_shows_and_refuses_every_change() {
    let web = Web::start(&["--read-only"]);
    let id = web.bpm(&["run", "--", "sleep", "30"]);
    assert_eq!(web.get("/api/status").json()["read_only"], true);
    assert_eq!(
        web.get("/api/processes").json().as_array().map(Vec::len),
        Some(1)
    );
    for (method, path) in [
        ("POST", "/api/processes".to_owned()),
        ("POST", format!("/api/processes/{id}/stop")),
        ("DELETE", format!("/api/processes/{id}")),
    ] {
        let r = web.send(method, &path, r#"{"command":"true"}"#);
        assert_eq!(r.status, 403, "{method} {path}");
        assert!(r.body.contains("read-only"), "{}", r.body);
    }
    assert!(web.bpm(&["show", &id]).contains("running"));
}

#[test]
fn the_start_form_names_what_is_wrong() {
    let web = Web::start(&[]);
    for (form, says) in [
        (r#"{"command":"  "}"#, "command"),
        (r#"{"command":"echo 'open"}"#, "command"),
        (
            r#"{"command":"true","env":"A=1\nnot a pair"}"#,
            "env line 2",
        ),
        (r#"{"command":"true","timeout":"0s"}"#, "timeout"),
        (r#"{"command":"true","timeout":"soon"}"#, "timeout"),
        (r#"{"command":"true","restart":"sometimes"}"#, "restart"),
        (r#"{"command":"true","cwd":"/no/such/dir"}"#, "/no/such/dir"),
        (r#"{"command":"true","ready_pattern":"("}"#, "ready_pattern"),
        (r#"{"command":"true","name":"bad\tname"}"#, "name"),
        (r#"{"command":"true","group":"a b"}"#, "group"),
    ] {
        let r = web.send("POST", "/api/processes", form);
        assert_eq!(r.status, 400, "{form}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(error.contains(says), "{form}: {error}");
    }
    let r = web.send(
        "POST",
        "/api/processes",
        r#"{"command":"true","colour":"red"}"#,
    );
    assert_eq!(r.status, 422, "an unknown field: {}", r.body);
    assert!(r.body.contains("colour"), "{}", r.body);
    assert_eq!(
        web.get("/api/processes").json(),
        serde_json::json!([]),
        "nothing was created"
    );

    let r = web.send(
        "POST",
        "/api/processes",
        r#"{"command":"echo $GREETING from $PWD","shell":true,"cwd":"/tmp","name":"formed","group":"g1","env":"GREETING=hi","timeout":"1m","restart":"on-failure"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let row = r.json();
    assert_eq!(row["name"], "formed");
    assert_eq!(row["group"], "g1");
    assert!(
        row["spec"].get("env").is_none(),
        "rows leave the environment out"
    );
    assert_eq!(web.bpm(&["wait", "formed"]), "");
    assert_eq!(web.bpm(&["logs", "formed"]), "hi from /tmp");
}

#[test]
fn actions_stop_pause_resume_restart_and_remove() {
    let web = Web::start(&[]);
    let id = web.bpm(&["run", "--name", "sleeper", "--", "sleep", "30"]);
    let path = |action: &str| format!("/api/processes/{id}/{action}");
    let r = web.send("POST", &path("pause"), "{}");
    assert_eq!(r.json()["state"], "paused", "{}", r.body);
    let r = web.send("POST", &path("resume"), "");
    assert_eq!(r.json()["state"], "running", "{}", r.body);
    let r = web.send("POST", &path("resume"), "");
    assert_eq!(r.status, 409, "resuming a running process: {}", r.body);
    let r = web.send("POST", &path("explode"), "");
    assert_eq!(r.status, 404);
    let r = web.send("DELETE", &format!("/api/processes/{id}"), "");
    assert_eq!(r.status, 409, "removing a live record: {}", r.body);
    let r = web.send("POST", &path("stop"), r#"{"force":true}"#);
    assert_eq!(r.json()["state"], "cancelled", "{}", r.body);
    let r = web.send("POST", &path("restart"), "");
    let again = r.json()["id"].as_str().expect("a new record").to_owned();
    assert_ne!(again, id);
    assert_eq!(r.json()["restarted_from"], id.as_str());
    let r = web.send("DELETE", &format!("/api/processes/{id}"), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(web.get(&format!("/api/processes/{id}")).status, 404);
    assert_eq!(web.get("/api/processes/not-an-id").status, 400);
    let _ = web.send(
        "POST",
        &format!("/api/processes/{again}/stop"),
        r#"{"force":true}"#,
    );
}

#[test]
fn output_is_read_from_cursors_followed_live_and_downloaded() {
    let web = Web::start(&[]);
    let id = web.bpm(&[
        "run",
        "--name",
        "writer",
        "--shell",
        "--",
        "for i in 1 2 3; do echo out-$i; echo err-$i >&2; sleep 0.3; done",
    ]);
    // Follow from the start: every line arrives, then `end` with the final state.
    let mut text = String::new();
    for line in web.stream(&format!("/api/processes/{id}/output/live?cursor=0")) {
        text.push_str(&line);
        text.push('\n');
        if line.starts_with("event: end") {
            break;
        }
    }
    for want in ["out-1", "err-1", "out-3", "err-3", "event: end"] {
        assert!(text.contains(want), "{want} in {text}");
    }
    let chunk = web
        .get(&format!("/api/processes/{id}/output?stream=stdout"))
        .json();
    let all: String = chunk["pieces"]
        .as_array()
        .expect("pieces")
        .iter()
        .map(|p| p["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(all, "out-1\nout-2\nout-3\n");
    let next = chunk["next"].as_u64().expect("a cursor");
    let rest = web
        .get(&format!("/api/processes/{id}/output?cursor={next}"))
        .json();
    assert_eq!(
        rest["pieces"],
        serde_json::json!([]),
        "nothing is sent twice"
    );
    let tail = web
        .get(&format!(
            "/api/processes/{id}/output?tail_lines=1&stream=stderr"
        ))
        .json();
    assert_eq!(tail["pieces"][0]["text"], "err-3\n");
    let file = web.get(&format!("/api/processes/{id}/output.txt"));
    assert_eq!(file.status, 200);
    assert!(
        file.header("content-disposition")
            .is_some_and(|d| d.contains("attachment") && d.contains("writer.log")),
        "{:?}",
        file.headers
    );
    assert_eq!(file.body.lines().count(), 6, "{}", file.body);
    assert_eq!(
        web.get(&format!("/api/processes/{id}/output?stream=sideways"))
            .status,
        400
    );
}

#[test]
fn the_live_stream_brings_each_change_and_usage() {
    let web = Web::start(&[]);
    let lines = web.live();
    let id = web.bpm(&[
        "run",
        "--name",
        "listener",
        "--",
        "python3",
        "-m",
        "http.server",
        "0",
        "--bind",
        "127.0.0.1",
    ]);
    let (mut started, mut ports) = (false, false);
    for line in lines {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(data).expect("JSON data");
        if v["event"]["id"] == id.as_str() && v["event"]["kind"] == "started" {
            assert_eq!(v["record"]["name"], "listener");
            assert_eq!(v["record"]["state"], "running");
            started = true;
        }
        if let Some(u) = v
            .as_array()
            .and_then(|a| a.iter().find(|u| u["id"] == id.as_str()))
        {
            assert!(u["rss_bytes"].as_u64().unwrap_or(0) > 1 << 20, "{u}");
            ports = !u["listening_ports"].as_array().is_none_or(Vec::is_empty);
        }
        if started && ports {
            break;
        }
    }
    assert!(started && ports, "a change event and the server's port");
}

#[test]
fn ps_show_and_top_show_what_trees_use() {
    let web = Web::start(&[]);
    let id = web.bpm(&[
        "run",
        "--name",
        "hungry",
        "--",
        "python3",
        "-c",
        "import socket, time\nb = bytearray(b'x') * (40 << 20)\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\nprint(s.getsockname()[1], flush=True)\ntime.sleep(60)",
    ]);
    let mut port = String::new();
    wait_for("the port to be printed", || {
        port = web.bpm(&["logs", &id]);
        !port.is_empty()
    });
    let mut shown = serde_json::Value::Null;
    wait_for("the memory to be held", || {
        shown = serde_json::from_str(&web.bpm(&["show", &id, "--json"])).expect("JSON");
        shown["rss_bytes"].as_u64().unwrap_or(0) >= 40 << 20
    });
    assert_eq!(
        shown["listening_ports"],
        serde_json::json!([port.parse::<u16>().expect("a port")])
    );
    assert!(shown["cpu_percent"].is_number(), "{shown}");
    let text = web.bpm(&["show", &id]);
    assert!(text.contains("usage") && text.contains(&port), "{text}");
    let ps = web.bpm(&["ps"]);
    let header = ps.lines().next().unwrap_or("");
    assert!(header.contains("CPU") && header.contains("MEM"), "{ps}");
    let row = ps.lines().find(|l| l.contains("hungry")).expect("a row");
    assert!(row.contains('M') && row.contains('%'), "{row}");
    let top = web.bpm(&["top", "-n", "2", "--interval", "0.2"]);
    assert_eq!(top.matches("bpm top:").count(), 2, "{top}");
    assert!(top.contains("hungry") && top.contains(&port), "{top}");
    let done = serde_json::from_str::<serde_json::Value>(&web.bpm(&["show", "--json", &{
        web.bpm(&["stop", &id]);
        id.clone()
    }]))
    .expect("JSON");
    assert!(done["rss_bytes"].is_null(), "nothing runs: {done}");
}

/// Sockets the process holds (TCP and Unix alike).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

#[test]
fn with_no_page_open_the_server_follows_nothing() {
    let web = Web::start(&[]);
    web.bpm(&["run", "--", "true"]);
    let idle = sockets(web.pid());
    {
        let mut lines = web.live();
        web.bpm(&["run", "--", "true"]);
        let saw = lines.any(|l| l.starts_with("event: change"));
        assert!(saw, "a page gets events");
        assert!(
            sockets(web.pid()) >= idle + 2,
            "an open page holds its stream and an event connection to the daemon"
        );
    }
    // The page has gone; the next event ends the event connection.
    web.bpm(&["run", "--", "true"]);
    let mut now = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        web.bpm(&["run", "--", "true"]);
        now = sockets(web.pid());
        if now <= idle {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ss = std::process::Command::new("ss")
        .args(["-tanpx"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mine: Vec<&str> = ss
        .lines()
        .filter(|l| l.contains(&format!("pid={},", web.pid())))
        .collect();
    panic!(
        "the web server holds {now} sockets with no page open, against {idle} before: {mine:#?}"
    );
}

#[test]
fn listening_beyond_loopback_warns_and_still_needs_the_token() {
    let home = tempfile::tempdir().expect("home");
    let mut child = std::process::Command::new(support::BPM)
        .args(["web", "--listen", "0.0.0.0:0"])
        .env("BPM_HOME", home.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bpm web");
    let mut url = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut url)
        .expect("a URL");
    let _ = child.kill();
    let out = child.wait_with_output().expect("ended");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(url.contains("?token="), "{url}");
    assert!(
        stderr.contains("warning") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );
    let _ = std::process::Command::new(support::BPM)
        .args(["daemon", "stop", "--kill-all"])
        .env("BPM_HOME", home.path())
        .output();
}

/// The page's scale call: a copy more of a project's service, refusals
/// with what to do, and a body it cannot read.
#[test]
fn a_projects_service_scales_through_the_api() {
    let web = Web::start(&[]);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    std::fs::write(
        &file,
        "[project]\nname = \"apistack\"\n[services.w]\ncommand = \"exec sleep 300\"\n",
    )
    .expect("bpm.toml");
    web.bpm(&["up", "-f", &file.display().to_string()]);
    let path = "/api/projects/apistack/services/w/scale";
    let r = web.send("POST", path, r#"{"replicas": 2}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["steps"][0]["service"], "w.2", "{}", r.body);
    assert_eq!(r.json()["steps"][0]["action"], "started", "{}", r.body);
    for (body, says) in [
        (r#"{"replicas": 0}"#, "from 1 to 1000"),
        (r#"{"replicas": "two"}"#, "invalid body"),
        (r#"{"copies": 2}"#, "invalid body"),
    ] {
        let r = web.send("POST", path, body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
    let r = web.send(
        "POST",
        "/api/projects/apistack/services/nope/scale",
        r#"{"replicas": 2}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("no service"), "{}", r.body);
    let r = web.send("POST", path, r#"{"replicas": 1}"#);
    assert_eq!(r.json()["steps"][0]["action"], "stopped", "{}", r.body);
    web.bpm(&["down", "-f", &file.display().to_string()]);
}
