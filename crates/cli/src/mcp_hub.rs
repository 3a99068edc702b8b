//! `bpm mcp-run --shared`: one stdio MCP server for every caller of the
//! same command, arguments, environment and directory.
//!
//! The server's record runs `bpm mcp-hub`, which starts the server as its
//! child and listens on a socket named by a digest of what was asked
//! (`$BPM_HOME/mcp-hub/KEY.sock`); each caller's `bpm mcp-run --shared`
//! starts that record unless it runs already (`ensure`), connects, and
//! copies its standard input and output to and from the socket. The hub
//! multiplexes by the rules of [`bpm_domain::relay`], and ends the server
//! once its last caller has been gone for the grace.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use bpm_adapters::control::{Reconnecting, ReconnectingManager};
use bpm_domain::OsText;
use bpm_domain::relay::{CallerId, Relay, RelayAction, RelayEvent};
use bpm_intake::{Asked, Context};
use bpm_ports::ProcessManager;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;

use crate::home::Home;
use crate::mcp_run::{CALLER_LABEL, McpRunArgs, SERVER_LABEL};

/// The variable that tells `bpm mcp-hub` where to listen.
pub const HUB_VAR: &str = "BPM_MCP_HUB";

/// The label that holds the digest of what a shared server runs.
pub const KEY_LABEL: &str = "mcp.key";

/// How long a caller waits for a new hub to listen.
const HUB_START: Duration = Duration::from_secs(30);

/// Joins (or starts) the shared server for `args` and relays this
/// process's standard input and output to it until either side ends.
///
/// # Errors
/// When no daemon can be reached, the request is refused, the name is
/// held by another shared server, or the server cannot be started.
pub async fn join(home: &Home, args: McpRunArgs) -> anyhow::Result<ExitCode> {
    home.prepare()?;
    let dir = home.dir.join("mcp-hub");
    bpm_adapters::private::create_dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let here = std::env::current_dir().context("the current directory")?;
    let env = bpm_adapters::os::inherited_env();
    let key = key_of(&args.command, &here, &env);
    let socket = dir.join(format!("{key}.sock"));
    let reconnecting = Reconnecting::connect(crate::daemon::connector(home.clone())).await?;
    let manager: Arc<dyn ProcessManager> = Arc::new(ReconnectingManager(reconnecting));
    let spec = hub_spec(&args, &key, &socket, &here, &env)?;
    let record = manager.start(spec).await?;
    let held_key = record
        .spec()
        .labels
        .iter()
        .find(|(k, _)| k.as_str() == KEY_LABEL)
        .map(|(_, v)| v.as_str());
    if held_key != Some(key.as_str()) {
        let name = record
            .spec()
            .name
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(anyhow!(
            "--name {name} is held by another process (record {}); choose another name for this server",
            record.id().short()
        ));
    }
    let id = record.id();
    let stream = tokio::select! {
        stream = connect(&socket) => stream?,
        end = manager.wait(id, None) => {
            let end = end?;
            return Err(anyhow!(
                "the shared server ended before it listened ({}); bpm logs {} says why",
                end.state().as_str(),
                id.short()
            ));
        }
    };
    // From here it only copies: what its start read need not stay resident.
    bpm_adapters::os::give_back_start_pages();
    let (mut from_hub, mut to_hub) = stream.into_split();
    let upward = async {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut to_hub).await;
        let _ = to_hub.shutdown().await;
    };
    let downward = async {
        let mut stdout = tokio::io::stdout();
        let _ = tokio::io::copy(&mut from_hub, &mut stdout).await;
        let _ = stdout.flush().await;
    };
    tokio::select! {
        // The caller closed its input: this caller is done.
        () = upward => {}
        // The hub closed: the server ended.
        () = downward => {}
        () = crate::daemon::until_signalled() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects to the hub at `socket`, waiting for a new one to listen.
async fn connect(socket: &Path) -> anyhow::Result<tokio::net::UnixStream> {
    let deadline = tokio::time::Instant::now() + HUB_START;
    loop {
        match tokio::net::UnixStream::connect(socket).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow!(
                    "the shared server did not listen on {} within {HUB_START:?}: {e}",
                    socket.display()
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// The digest of what a shared server runs: its words, its directory and
/// its whole environment.
fn key_of(command: &[OsString], here: &Path, env: &bpm_domain::Environment) -> String {
    use sha2::Digest as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut digest = sha2::Sha256::new();
    for word in command {
        digest.update(word.as_bytes());
        digest.update([0]);
    }
    digest.update([1]);
    digest.update(here.as_os_str().as_bytes());
    digest.update([1]);
    for (k, v) in env {
        digest.update(k.as_bytes());
        digest.update([b'=']);
        digest.update(v.as_bytes());
        digest.update([0]);
    }
    digest.finalize()[..8]
        .iter()
        .fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// The hub's record: `bpm mcp-hub` in front of the server, of kind `mcp`,
/// one per name (`ensure`).
fn hub_spec(
    args: &McpRunArgs,
    key: &str,
    socket: &Path,
    here: &Path,
    env: &bpm_domain::Environment,
) -> anyhow::Result<bpm_domain::ProcessSpec> {
    let exe = std::env::current_exe().context("cannot find this bpm")?;
    let mut argv = vec![
        OsText::from(exe.into_os_string()),
        OsText::from("mcp-hub"),
        OsText::from("--grace"),
        OsText::from(args.grace.as_str()),
        OsText::from("--"),
    ];
    argv.extend(args.command.iter().cloned().map(OsText::from));
    let mut asked = Asked {
        argv: Some(argv),
        name: Some(args.name.clone().unwrap_or_else(|| format!("mcp-{key}"))),
        kind: Some("mcp".into()),
        ensure: Some(true),
        ..Asked::default()
    };
    asked.env.insert(
        OsText::from(HUB_VAR),
        OsText::from(socket.as_os_str().to_owned()),
    );
    asked.labels.insert(KEY_LABEL.into(), key.to_owned());
    asked.labels.insert(CALLER_LABEL.into(), "shared".into());
    asked.labels.insert(
        SERVER_LABEL.into(),
        crate::mcp_run::cut(&crate::mcp_run::command_line(&args.command)),
    );
    let machine = bpm_adapters::os::ThisMachine;
    let mut ctx = Context::new(here, env, &machine);
    ctx.spelling = bpm_intake::Spelling::Flags;
    asked.into_spec(&ctx).map_err(|e| anyhow!("{e}"))
}

/// What the hub's loop hears.
enum Heard {
    Joined(CallerId, mpsc::UnboundedSender<String>),
    FromCaller(CallerId, String),
    Left(CallerId),
    FromServer(String),
    ServerEnded,
    GraceOver(u64),
}

/// `bpm mcp-hub --grace G -- CMD ARGS...`: the shared server's record.
/// Starts the server, serves callers on [`HUB_VAR`]'s socket, and ends
/// with the server's exit code (0 when it ended it after the grace).
///
/// # Errors
/// When the socket cannot be listened on or the server cannot be started.
pub async fn serve(grace: &str, command: &[OsString]) -> anyhow::Result<ExitCode> {
    let grace = grace
        .parse::<bpm_domain::Span>()
        .map_err(|e| anyhow!("--grace {grace:?}: {e}"))?
        .as_duration();
    let socket = PathBuf::from(
        std::env::var_os(HUB_VAR)
            .ok_or_else(|| anyhow!("{HUB_VAR} is not set (bpm mcp-run --shared sets it)"))?,
    );
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow!("no command given"))?;
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let _remove = crate::mcp_run::RemoveOnDrop(socket);
    let mut server = tokio::process::Command::new(program)
        .args(args)
        .env_remove(HUB_VAR)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        // A group of its own, so that ending it ends what it started.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
    let mut to_server = server.stdin.take().context("the server's input")?;
    let from_server = server.stdout.take().context("the server's output")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(read_lines(
        from_server,
        tx.clone(),
        Heard::FromServer,
        Heard::ServerEnded,
    ));
    tokio::spawn(accept(listener, tx.clone()));
    arm(&tx, grace, 0);
    let mut relay = Relay::new();
    let mut callers: HashMap<CallerId, mpsc::UnboundedSender<String>> = HashMap::new();
    while let Some(heard) = rx.recv().await {
        let effects = match heard {
            Heard::Joined(c, out) => {
                callers.insert(c, out);
                relay.handle(RelayEvent::Joined(c))
            }
            Heard::FromCaller(c, line) => relay.handle(RelayEvent::FromCaller(c, &line)),
            Heard::Left(c) => {
                callers.remove(&c);
                relay.handle(RelayEvent::Left(c))
            }
            Heard::FromServer(line) => relay.handle(RelayEvent::FromServer(&line)),
            Heard::GraceOver(g) => relay.handle(RelayEvent::GraceOver(g)),
            Heard::ServerEnded => break,
        };
        for effect in effects {
            match effect {
                RelayAction::ToServer(mut line) => {
                    line.push('\n');
                    if to_server.write_all(line.as_bytes()).await.is_err() {
                        break;
                    }
                }
                RelayAction::ToCaller(c, line) => {
                    if let Some(out) = callers.get(&c) {
                        let _ = out.send(line);
                    }
                }
                RelayAction::ArmGrace(g) => arm(&tx, grace, g),
                RelayAction::Note(text) => eprintln!("bpm mcp-hub: {text}"),
                RelayAction::EndServer(reason) => {
                    eprintln!("bpm mcp-hub: ending the server: {reason}");
                    return Ok(
                        end_server(&mut server, reason.starts_with("its last caller")).await,
                    );
                }
            }
        }
    }
    drop(to_server);
    let status = server.wait().await?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}

/// Stops the server and its group (TERM, then KILL after 5 s); an end
/// after the grace is 0, any other 1.
async fn end_server(server: &mut tokio::process::Child, quiet: bool) -> ExitCode {
    let group = server
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p.cast_signed()));
    let signal = |s| {
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, s);
        }
    };
    signal(rustix::process::Signal::TERM);
    if tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .is_err()
    {
        signal(rustix::process::Signal::KILL);
        let _ = server.wait().await;
    }
    // What the server left in its group goes with it.
    signal(rustix::process::Signal::KILL);
    if quiet {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn arm(tx: &mpsc::UnboundedSender<Heard>, grace: Duration, generation: u64) {
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let _ = tx.send(Heard::GraceOver(generation));
    });
}

/// Sends each line `from` writes (without its newline, lossy where not
/// UTF-8) as `heard(line)`, then `at_end` once it closes; stops early if
/// the loop is gone.
async fn read_lines(
    from: impl tokio::io::AsyncRead + Unpin,
    tx: mpsc::UnboundedSender<Heard>,
    heard: impl Fn(String) -> Heard,
    at_end: Heard,
) {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line));
                if tx.send(heard(text.into_owned())).is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.send(at_end);
}

async fn accept(listener: tokio::net::UnixListener, tx: mpsc::UnboundedSender<Heard>) {
    let mut next: CallerId = 1;
    while let Ok((stream, _)) = listener.accept().await {
        let c = next;
        next += 1;
        if let Ok(cred) = stream.peer_cred() {
            eprintln!(
                "bpm mcp-hub: caller {c} joined (pid {})",
                cred.pid().unwrap_or(0)
            );
        }
        let (read, mut write) = stream.into_split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        if tx.send(Heard::Joined(c, out_tx)).is_err() {
            return;
        }
        tokio::spawn(async move {
            while let Some(mut line) = out_rx.recv().await {
                line.push('\n');
                if write.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(read_lines(
            read,
            tx.clone(),
            move |line| Heard::FromCaller(c, line),
            Heard::Left(c),
        ));
    }
}
