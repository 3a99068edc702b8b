//! `bpm mcp-run -- CMD ARGS...`: what an agent tool's configuration starts
//! in place of a stdio MCP server, so that the server runs as a bpm record
//! (kind `mcp`) owned by the tool's process, and its whole tree is stopped
//! a grace after the tool goes, however it goes.
//!
//! The server talks to the tool on the tool's own pipes: `bpm mcp-run`
//! hands its standard input and output to the record's first process (the
//! `bpm mcp-pipe` step, which takes them over and becomes the server with
//! `exec`), so every byte goes from one to the other unparsed and with
//! nothing between them. `bpm mcp-run` stays as the tool sees it: it ends
//! when the server ends, with its exit code, and stops the server when it
//! is asked to stop.
//!
//! `--shared` instead joins (or starts) one server for every caller of the
//! same command, arguments, environment and directory (the `mcp_hub`
//! module).

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use bpm_adapters::control::{Reconnecting, ReconnectingManager};
use bpm_domain::{OsText, ProcessId};
use bpm_intake::{Asked, Context};
use bpm_ports::ProcessManager;

use crate::home::Home;

/// The variable that tells `bpm mcp-pipe` where its caller waits.
pub const PIPE_VAR: &str = "BPM_MCP_PIPE";

/// The label that names a hosted server's caller (`PID COMMAND`).
pub const CALLER_LABEL: &str = "mcp.caller";

/// The label that holds a hosted server's own command line.
pub const SERVER_LABEL: &str = "mcp.server";

/// How long a hosted server outlives its caller unless `--grace` says.
pub const DEFAULT_GRACE: &str = "10s";

/// What `bpm mcp-run` was asked.
#[derive(Debug, Clone)]
pub struct McpRunArgs {
    /// `--name`.
    pub name: Option<String>,
    /// `--grace`.
    pub grace: String,
    /// The server's program and arguments.
    pub command: Vec<OsString>,
}

/// Runs the server for this caller until it ends; its exit code.
///
/// # Errors
/// When no daemon can be reached, the request is refused, or the server
/// cannot be started (the spawn error, as the record says).
pub async fn run(home: &Home, args: McpRunArgs) -> anyhow::Result<ExitCode> {
    home.prepare()?;
    let dir = home.dir.join("mcp-run");
    bpm_adapters::private::create_dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let socket = dir.join(format!("{}.sock", uuid::Uuid::now_v7().simple()));
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let _remove = RemoveOnDrop(socket.clone());
    let reconnecting = Reconnecting::connect(crate::daemon::connector(home.clone())).await?;
    let manager: Arc<dyn ProcessManager> = Arc::new(ReconnectingManager(reconnecting));
    let spec = server_spec(&args, &socket)?;
    let record = manager.start(spec).await?;
    let id = record.id();
    // The record's first step connects and takes this process's standard
    // input and output; an end before that is a start that failed.
    let stream = tokio::select! {
        accepted = listener.accept() => {
            let stream = accepted.context("the server's first step never called")?.0.into_std()?;
            stream.set_nonblocking(false)?;
            stream
        }
        end = manager.wait(id, None) => {
            let end = end?;
            return Err(anyhow!("{}", failure_of(&*manager, &end).await));
        }
    };
    hand_over(&stream).context("cannot hand this standard input and output to the server")?;
    if let Some(error) = spawn_error(stream).await? {
        let _ = manager.wait(id, None).await;
        return Err(anyhow!("{error}"));
    }
    // The tool sees the server's end of its output, not this process's copy.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stdin(&null)?;
    // From here it only waits: what its start read need not stay resident.
    bpm_adapters::os::give_back_start_pages();
    serve_until_end(&*manager, id).await
}

/// Waits for the server's end, stopping it if this process is asked to
/// stop first; the server's exit code.
async fn serve_until_end(manager: &dyn ProcessManager, id: ProcessId) -> anyhow::Result<ExitCode> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // Once the wait is asked and the signals are heard, what set them up
    // need not stay resident either: only the idle loop runs from here.
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        bpm_adapters::os::give_back_start_pages();
    });
    let end = tokio::select! {
        end = manager.wait(id, None) => end?,
        () = crate::daemon::until_signalled() => {
            manager.stop(id, bpm_ports::StopOptions::default()).await?;
            manager.wait(id, None).await?
        }
        _ = hangup.recv() => {
            manager.stop(id, bpm_ports::StopOptions::default()).await?;
            manager.wait(id, None).await?
        }
    };
    Ok(crate::cli::exit_code_of(&end))
}

/// The record `args` asks for: the `bpm mcp-pipe` step in front of the
/// server, of kind `mcp`, owned by this process's caller.
pub(crate) fn server_spec(
    args: &McpRunArgs,
    socket: &Path,
) -> anyhow::Result<bpm_domain::ProcessSpec> {
    let exe = std::env::current_exe().context("cannot find this bpm")?;
    let mut argv = vec![
        OsText::from(exe.into_os_string()),
        OsText::from("mcp-pipe"),
        OsText::from("--"),
    ];
    argv.extend(args.command.iter().cloned().map(OsText::from));
    let (caller, caller_line) = caller();
    let mut asked = Asked {
        argv: Some(argv),
        name: args.name.clone(),
        kind: Some("mcp".into()),
        owner: vec![format!("pid:{caller}")],
        owner_grace: Some(args.grace.as_str().into()),
        ..Asked::default()
    };
    asked.env.insert(
        OsText::from(PIPE_VAR),
        OsText::from(socket.as_os_str().to_owned()),
    );
    asked
        .labels
        .insert(CALLER_LABEL.into(), cut(&format!("{caller} {caller_line}")));
    asked
        .labels
        .insert(SERVER_LABEL.into(), cut(&command_line(&args.command)));
    let here = std::env::current_dir().context("the current directory")?;
    let env = bpm_adapters::os::inherited_env();
    let machine = bpm_adapters::os::ThisMachine;
    let mut ctx = Context::new(&here, &env, &machine);
    ctx.spelling = bpm_intake::Spelling::Flags;
    asked.into_spec(&ctx).map_err(|e| anyhow!("{e}"))
}

/// `command` as one line, each word as it is (lossy where not UTF-8).
pub(crate) fn command_line(command: &[OsString]) -> String {
    command
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` as a label's value: on one line, at most 200 characters, with no
/// white space at either end (a label's value may not start or end with it:
/// a cut can land just after a space, and a caller's command line can be
/// unreadable), and `-` where nothing is left.
pub(crate) fn cut(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    match line.trim() {
        "" => "-".to_owned(),
        kept => kept.to_owned(),
    }
}

/// This process's caller: its pid, and its command line as `/proc` has it.
pub(crate) fn caller() -> (u32, String) {
    // Already orphaned (the caller gone before this started): this
    // process stands for it.
    let pid = rustix::process::getppid()
        .map(|p| p.as_raw_nonzero().get().cast_unsigned())
        .filter(|p| *p > 1)
        .unwrap_or_else(std::process::id);
    let line = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    (pid, line)
}

/// Why the server ended before it was started: the record's error, or the
/// last lines it wrote.
async fn failure_of(manager: &dyn ProcessManager, end: &bpm_domain::ProcessRecord) -> String {
    if let Some(error) = end.lifecycle().error() {
        return error;
    }
    let query = bpm_ports::OutputQuery {
        tail_lines: Some(5),
        max_bytes: 4096,
        ..bpm_ports::OutputQuery::default()
    };
    let tail = manager
        .read_output(end.id(), query)
        .await
        .map(|chunk| {
            let bytes: Vec<u8> = chunk.pieces.into_iter().flat_map(|p| p.data).collect();
            String::from_utf8_lossy(&bytes).trim_end().to_owned()
        })
        .unwrap_or_default();
    let state = end.state().as_str();
    if tail.is_empty() {
        format!("the server ended before it started ({state})")
    } else {
        format!("the server ended before it started ({state}):\n{tail}")
    }
}

/// Sends this process's standard input and output over `stream`.
fn hand_over(stream: &UnixStream) -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let fds = [stdin.as_fd(), stdout.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        stream,
        &[IoSlice::new(b"f")],
        &mut control,
        rustix::net::SendFlags::empty(),
    )?;
    Ok(())
}

/// What the first step said before it became the server: nothing (it
/// closed the stream by becoming the server) or why it could not.
async fn spawn_error(stream: UnixStream) -> anyhow::Result<Option<String>> {
    let said = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &stream, &mut text).map(|_| text)
    })
    .await??;
    Ok((!said.is_empty()).then_some(said))
}

/// `bpm mcp-pipe -- CMD ARGS...`: the record's first step. Takes the
/// caller's standard input and output from [`PIPE_VAR`]'s socket and
/// becomes the server; returns only if it cannot, having told the caller
/// why.
pub fn pipe(command: &[OsString]) -> ExitCode {
    let Some(socket) = std::env::var_os(PIPE_VAR) else {
        eprintln!("bpm mcp-pipe: {PIPE_VAR} is not set (bpm mcp-run sets it)");
        return ExitCode::from(2);
    };
    let stream = match UnixStream::connect(PathBuf::from(&socket)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bpm mcp-pipe: cannot reach bpm mcp-run: {e}");
            return ExitCode::from(1);
        }
    };
    let tell = |stream: &UnixStream, message: &str| {
        eprintln!("bpm mcp-pipe: {message}");
        let _ = std::io::Write::write_all(&mut &*stream, message.as_bytes());
    };
    let fds = match take_over(&stream) {
        Ok(fds) => fds,
        Err(e) => {
            tell(
                &stream,
                &format!("cannot take the caller's standard input and output: {e}"),
            );
            return ExitCode::from(1);
        }
    };
    let Some((program, args)) = command.split_first() else {
        tell(&stream, "no command given");
        return ExitCode::from(2);
    };
    if let Err(e) =
        rustix::stdio::dup2_stdin(&fds[0]).and_then(|()| rustix::stdio::dup2_stdout(&fds[1]))
    {
        tell(
            &stream,
            &format!("cannot take the caller's standard input and output: {e}"),
        );
        return ExitCode::from(1);
    }
    drop(fds);
    let error = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(program)
            .args(args)
            .env_remove(PIPE_VAR),
    );
    tell(
        &stream,
        &format!("cannot start {}: {error}", program.to_string_lossy()),
    );
    ExitCode::from(127)
}

/// The two descriptors `bpm mcp-run` sent.
fn take_over(stream: &UnixStream) -> std::io::Result<Vec<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if fds.len() == 2 {
        Ok(fds)
    } else {
        Err(std::io::Error::other(format!(
            "expected 2 descriptors, got {}",
            fds.len()
        )))
    }
}

/// Removes a socket file when dropped.
pub(crate) struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod cut_tests {
    use super::cut;

    #[test]
    fn a_cut_is_always_a_valid_label_value() {
        // The 200th character a space (a long caller's line cut there), a
        // caller whose command line could not be read, control characters,
        // and nothing at all.
        let long = format!("{} {}", "a".repeat(199), "b".repeat(50));
        for text in [long.as_str(), "1279 ", "\tpython\n-c\n", "", " \n "] {
            let value = cut(text);
            assert!(value.chars().count() <= 200, "{value:?}");
            bpm_domain::LabelValue::new(value.clone())
                .unwrap_or_else(|e| panic!("{text:?} gave {value:?}: {e}"));
        }
        assert_eq!(cut(&long), "a".repeat(199));
        assert_eq!(cut("1279 "), "1279");
        assert_eq!(cut("\tpython\n-c\n"), "python -c");
    }
}
