//! `bpm attach`: this terminal connected to a process's pseudo-terminal
//! (`bpm run --tty`) until the detach key, as tmux and screen users expect.
//! What is typed goes to the process as it is typed (this terminal in raw
//! mode); what the process writes comes back at once.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use bpm_domain::TtySize;
use bpm_ports::{OutputQuery, StreamSelect};

use super::Manager;
use super::error::{CliError, Outcome};
use super::resolve::resolve_to_record;

/// The detach key when none is given: Ctrl-] (as telnet's).
const DEFAULT_DETACH: &str = "ctrl-]";

/// How often the output is read while attached: short enough that typing
/// echoes without a felt delay.
const POLL: Duration = Duration::from_millis(15);

/// The size of the terminal this command runs on, if it runs on one.
pub(super) fn this_terminal_size() -> Option<TtySize> {
    [
        std::io::stdout().as_fd().try_clone_to_owned().ok()?,
        std::io::stdin().as_fd().try_clone_to_owned().ok()?,
    ]
    .iter()
    .find_map(|fd| {
        let w = rustix::termios::tcgetwinsize(fd).ok()?;
        (w.ws_col > 0 && w.ws_row > 0).then_some(TtySize {
            cols: w.ws_col,
            rows: w.ws_row,
        })
    })
}

/// The byte a key name stands for: `ctrl-]`, `ctrl-a` ... `ctrl-z`,
/// `ctrl-\`, `ctrl-^`, `ctrl-_`.
fn detach_byte(name: &str) -> Result<u8, CliError> {
    let lower = name.trim().to_ascii_lowercase();
    let key = lower
        .strip_prefix("ctrl-")
        .or_else(|| lower.strip_prefix('^'))
        .filter(|k| k.len() == 1)
        .map(|k| k.as_bytes()[0]);
    match key {
        Some(k @ b'a'..=b'z') => Ok(k - b'a' + 1),
        Some(k @ (b'[' | b'\\' | b']' | b'^' | b'_')) => Ok(k - b'@'),
        _ => Err(CliError::invalid(format!(
            "--detach-key: {name:?} is not a control key: ctrl-] (the default), ctrl-a to ctrl-z, ctrl-\\, ctrl-^ or ctrl-_"
        ))),
    }
}

/// This terminal in raw mode while it lives, as it was after.
struct Raw {
    before: rustix::termios::Termios,
}

impl Raw {
    fn enter() -> Result<Self, CliError> {
        let fail = |e: rustix::io::Errno| {
            CliError::failed(format!("cannot set this terminal to raw mode: {e}"))
        };
        let stdin = std::io::stdin();
        let before = rustix::termios::tcgetattr(&stdin).map_err(fail)?;
        let mut raw = before.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .map_err(fail)?;
        Ok(Raw { before })
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.before,
        );
    }
}

/// `bpm attach ID`.
pub(super) async fn attach(m: &Manager, id_text: &str, detach_key: Option<&str>) -> Outcome {
    let key_name = detach_key.unwrap_or(DEFAULT_DETACH);
    let key = detach_byte(key_name)?;
    let record = resolve_to_record(m, id_text).await?;
    let id = record.id();
    let Some(size) = record.spec().tty else {
        return Err(CliError::invalid(format!(
            "{id_text} runs without a terminal, so there is nothing to attach to: start it with --tty (its output is in bpm logs -f, and bpm input types into a process started with --stdin)"
        )));
    };
    if record.is_terminal() {
        return Err(CliError::failed(format!(
            "{id_text} has ended ({}): its output is in bpm logs",
            record.state()
        )));
    }
    let raw = if std::io::stdin().is_terminal() {
        Some(Raw::enter()?)
    } else {
        None
    };
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "[attached to {id_text}, a {size} terminal; {key_name} detaches]\r\n"
    );
    // The last screenful first, so a prompt already shown is seen.
    let tail = m
        .read_output(
            id,
            OutputQuery {
                stream: StreamSelect::Both,
                cursor: None,
                max_bytes: 1 << 20,
                tail_lines: Some(usize::from(size.rows)),
            },
        )
        .await?;
    let mut out = std::io::stdout();
    for piece in &tail.pieces {
        let _ = out.write_all(&piece.data);
    }
    let _ = out.flush();
    let mut cursor = tail.next;

    let (tx, mut typed) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    // A thread, since reading a terminal cannot be given up half way: it
    // ends with this command.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut typing = true;
    let mut polls = 0u32;
    let detached = loop {
        tokio::select! {
            bytes = typed.recv(), if typing => match bytes {
                None => typing = false,
                Some(bytes) => {
                    let (send, detach) = match bytes.iter().position(|b| *b == key) {
                        Some(at) => (&bytes[..at], true),
                        None => (&bytes[..], false),
                    };
                    if !send.is_empty() && m.send_input(id, send.to_vec()).await.is_err() {
                        // It ended meanwhile: its end is read below.
                        typing = false;
                    }
                    if detach {
                        break true;
                    }
                }
            },
            () = tokio::time::sleep(POLL) => {
                let (wrote, _) = copy_new(m, id, &mut cursor, &mut out).await?;
                polls += 1;
                // Its end, about every 150 ms, once nothing more is to be read.
                if !wrote && polls.is_multiple_of(10) && m.get(id).await?.is_terminal() {
                    break false;
                }
            }
        }
    };
    if !detached {
        // What it wrote last, read after its end was seen.
        while copy_new(m, id, &mut cursor, &mut out).await?.1 {}
    }
    drop(raw);
    if detached {
        let _ = writeln!(err, "\r\n[detached from {id_text}: it runs on]");
        return Ok(ExitCode::SUCCESS);
    }
    let ended = m.get(id).await?;
    let how = ended
        .lifecycle()
        .exit()
        .map_or_else(|| ended.state().to_string(), |e| e.to_string());
    let _ = writeln!(err, "\r\n[{id_text} ended: {how}]");
    Ok(super::error::exit_code_of(&ended))
}

/// Copies what `id` wrote after `cursor` to `out` (then flushed), and moves
/// `cursor` past it: whether there was any, and whether more waits.
async fn copy_new(
    m: &Manager,
    id: bpm_domain::ProcessId,
    cursor: &mut bpm_ports::Cursor,
    out: &mut impl Write,
) -> Result<(bool, bool), CliError> {
    let chunk = m
        .read_output(
            id,
            OutputQuery {
                stream: StreamSelect::Both,
                cursor: Some(*cursor),
                max_bytes: 1 << 20,
                tail_lines: None,
            },
        )
        .await?;
    for piece in &chunk.pieces {
        let _ = out.write_all(&piece.data);
    }
    let _ = out.flush();
    *cursor = chunk.next;
    Ok((!chunk.pieces.is_empty(), chunk.truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_name_control_bytes() {
        assert_eq!(detach_byte("ctrl-]").ok(), Some(0x1d));
        assert_eq!(detach_byte("Ctrl-A").ok(), Some(0x01));
        assert_eq!(detach_byte("^q").ok(), Some(0x11));
        assert_eq!(detach_byte("ctrl-\\").ok(), Some(0x1c));
        for bad in ["", "q", "ctrl-", "ctrl-1", "alt-x", "ctrl-ab"] {
            assert!(detach_byte(bad).is_err(), "{bad}");
        }
    }
}
