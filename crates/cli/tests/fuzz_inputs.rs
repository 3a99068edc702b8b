//! Byte fuzzing, driven by proptest, of what the daemon reads from others:
//! the control protocol (against a real engine) and `config.toml`. Nothing
//! may panic; the daemon goes on serving.
//!
//! Each property runs `PROPTEST_CASES` cases (64 by default, as in CI); a
//! long run is `PROPTEST_CASES=100000 cargo test -p bpm-cli --test fuzz_inputs`.

use std::sync::Arc;
use std::time::Duration;

use bpm_adapters::clock::ManualClock;
use bpm_adapters::control::{ServerInfo, serve};
use bpm_adapters::fake::ScriptedSpawner;
use bpm_adapters::ids::UuidV7Ids;
use bpm_adapters::memory::{BroadcastBus, InMemoryOutput, InMemoryStore};
use bpm_domain::{Limits, Timestamp};
use bpm_runtime::{Engine, EngineConfig, Ports};
use proptest::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Sends `lines` to a daemon (a real engine on the scripted spawner) after
/// the hello, then a `status` request, which must be answered.
async fn daemon_survives(lines: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("bpm.sock");
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1)));
    let output = Arc::new(InMemoryOutput::default());
    let ports = Ports {
        store: Arc::new(InMemoryStore::new()),
        output: output.clone(),
        events: Arc::new(BroadcastBus::default()),
        spawner: Arc::new(ScriptedSpawner::new(clock.clone(), output)),
        clock,
        ids: Arc::new(UuidV7Ids::new()),
        usage: Arc::new(bpm_adapters::os::ProcSampler::new()),
        host: Arc::new(bpm_adapters::os::OsHost::new()),
    };
    let engine = Engine::launch(
        ports,
        EngineConfig {
            node: None,
            limits: Limits::default(),
            ..EngineConfig::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let info = ServerInfo {
        software: "fuzz".into(),
        store: "memory".into(),
        node: "local".into(),
        home: "/nowhere".into(),
        keeper: Arc::default(),
        started_at: None,
        limits: None,
        warnings: Arc::default(),
        cluster: Arc::default(),
    };
    let (stop, _keep) = tokio::sync::mpsc::unbounded_channel();
    let listener = UnixListener::bind(&socket).map_err(|e| e.to_string())?;
    tokio::spawn(serve(listener, Arc::new(engine), info, stop));
    let ask = |stream: UnixStream, lines: Vec<u8>| async move {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read).lines();
        write
            .write_all(b"{\"protocol\":3,\"software\":\"fuzz\"}\n")
            .await
            .map_err(|e| e.to_string())?;
        let _hello = reader.next_line().await.map_err(|e| e.to_string())?;
        // A broken pipe is the daemon closing a connection that sent too much.
        let _ = write.write_all(&lines).await;
        let _ = write
            .write_all(b"\n{\"id\":777777,\"method\":\"status\"}\n")
            .await;
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = reader.next_line().await {
                if line.contains("777777") {
                    return true;
                }
            }
            false
        })
        .await;
        Ok::<_, String>(matches!(answered, Ok(true)))
    };
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| e.to_string())?;
    let first = ask(stream, lines.to_vec()).await?;
    // Whatever became of that connection, the daemon serves the next one.
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| e.to_string())?;
    if !ask(stream, Vec::new()).await? {
        return Err("the daemon stopped answering".into());
    }
    let _ = first;
    Ok(())
}

/// Lines shaped like control requests, with their values replaced.
fn control_lines() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        "[a-z0-9_\\-]{0,40}".prop_map(|s| format!("\"{s}\"")),
        "[ -~]{0,80}",
        Just("{\"argv\":[\"fake\",\"exit=1\"]}".to_string()),
        Just("[]".to_string()),
    ];
    let method = prop_oneof![
        Just("start"),
        Just("start_many"),
        Just("track"),
        Just("get"),
        Just("list"),
        Just("progress"),
        Just("complete"),
        Just("fail"),
        Just("stop"),
        Just("pause"),
        Just("resume"),
        Just("restart"),
        Just("remove"),
        Just("wait"),
        Just("wait_many"),
        Just("read_output"),
        Just("send_input"),
        Just("subscribe"),
        Just("usage"),
        Just("recent_events"),
        Just("bogus"),
    ];
    let key = prop_oneof![
        Just("spec"),
        Just("specs"),
        Just("id"),
        Just("ids"),
        Just("filter"),
        Just("percent"),
        Just("timeout_ms"),
        Just("query"),
        Just("data"),
        Just("env"),
        Just("brief"),
        Just("x"),
    ];
    let params = proptest::collection::vec((key, value.clone()), 0..4).prop_map(|kv| {
        let fields: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", fields.join(","))
    });
    let line = prop_oneof![
        (any::<u64>(), method, params).prop_map(|(id, m, p)| {
            format!("{{\"id\":{id},\"method\":\"{m}\",\"params\":{p}}}")
        }),
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).replace('\n', " ")),
    ];
    proptest::collection::vec(line, 1..20).prop_map(|lines| {
        let mut bytes = lines.join("\n").into_bytes();
        bytes.push(b'\n');
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Malformed and hostile requests: each gets an answer or closes its
    /// own connection, and the daemon goes on serving.
    #[test]
    fn the_daemon_survives_any_requests(lines in control_lines()) {
        let survived = runtime().block_on(daemon_survives(&lines));
        prop_assert!(survived.is_ok(), "{survived:?} after {:?}", String::from_utf8_lossy(&lines));
    }

    /// Any text as `config.toml`: loaded, or refused with a message naming
    /// the file; never a panic.
    #[test]
    fn any_config_loads_or_is_refused_with_words(text in prop_oneof![
        "[ -~\n]{0,300}",
        proptest::collection::vec(
            prop_oneof![
                Just("store = \"fs\"\n".to_string()),
                Just("[limits]\n".to_string()),
                Just("[mcp]\n".to_string()),
                Just("[web]\n".to_string()),
                "[a-z_]{1,16} = [0-9]{1,20}\n",
                "[a-z_]{1,16} = \"[ -~]{0,20}\"\n",
                "[a-z_]{1,16} = \\[\"[a-z]{0,5}\"\\]\n",
            ],
            0..12,
        ).prop_map(|parts| parts.concat()),
    ]) {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("config.toml"), &text).expect("write");
        if let Err(e) = bpm::config::Config::load(dir.path()) {
            prop_assert!(e.contains("config.toml"), "{e}");
        }
    }
}
