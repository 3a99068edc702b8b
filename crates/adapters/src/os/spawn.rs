//! Starting a process with `posix_spawn`: in its own session and process
//! group (`POSIX_SPAWN_SETSID`), with default signal dispositions and an empty
//! signal mask, its output on pipes, and a pidfd to learn of its exit.
//!
//! `posix_spawn` lets the C library use a vfork-style clone, which costs a
//! fraction of the `fork` that std's `pre_exec` hook (the only stable way to
//! call `setsid` through `std::process`) would force on a large parent.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::pipe::{PipeFlags, pipe_with};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

/// A started process: its pid, a pidfd, and the parent's ends of its pipes.
pub(crate) struct Child {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    /// Whether `stdout` (and `stdin`) are a pseudo-terminal's master side,
    /// not pipes: `stderr` then is a pipe with no writer.
    pub(crate) terminal: bool,
}

/// Why a program could not be resolved.
pub(crate) enum Unrunnable {
    NotFound,
    NotExecutable,
}

/// Finds `program` the way a shell does: as given if it has a slash, else in `path`.
pub(crate) fn resolve(program: &OsStr, path: Option<&OsString>) -> Result<PathBuf, Unrunnable> {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        let p = PathBuf::from(program);
        return match p.metadata() {
            Ok(_) if executable(&p) => Ok(p),
            Ok(_) => Err(Unrunnable::NotExecutable),
            Err(_) => Err(Unrunnable::NotFound),
        };
    }
    let mut seen_unexecutable = false;
    let default_path = OsString::from("/usr/local/bin:/usr/bin:/bin");
    for dir in std::env::split_paths(path.unwrap_or(&default_path)) {
        let candidate = dir.join(program);
        // One stat per folder: most of them do not hold the program.
        if let Ok(m) = candidate.metadata()
            && m.is_file()
        {
            if m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
            seen_unexecutable = true;
        }
    }
    Err(if seen_unexecutable {
        Unrunnable::NotExecutable
    } else {
        Unrunnable::NotFound
    })
}

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in an argument or variable",
        )
    })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Owns the spawn attributes and file actions so they are destroyed on every path.
struct SpawnSetup {
    actions: libc::posix_spawn_file_actions_t,
    attrs: libc::posix_spawnattr_t,
}

impl Drop for SpawnSetup {
    fn drop(&mut self) {
        // SAFETY: both were initialised in `spawn` before this value was built.
        #[allow(unsafe_code)]
        unsafe {
            libc::posix_spawn_file_actions_destroy(&raw mut self.actions);
            libc::posix_spawnattr_destroy(&raw mut self.attrs);
        }
    }
}

/// A variable as `execve` takes it: `NAME=value`.
pub(crate) fn variable(name: &[u8], value: &[u8]) -> io::Result<CString> {
    let mut kv = Vec::with_capacity(name.len() + value.len() + 1);
    kv.extend_from_slice(name);
    kv.push(b'=');
    kv.extend_from_slice(value);
    cstring(kv)
}

/// Where a process holds copies of the reading ends of its own stdout and
/// stderr pipes: while it lives, no writer of its output dies of SIGPIPE
/// because bpm's processes died (a writer blocks once the pipe is full,
/// until a new keeper opens these through `/proc` and reads on).
pub(crate) const HELD_PIPE_FDS: [i32; 2] = [253, 254];

/// What the child's descriptors are: stdin (`stdin`, a pipe's reading end,
/// or /dev/null), stdout and stderr (`out`), the copies of the output
/// pipes' reading ends it holds ([`HELD_PIPE_FDS`]), and its directory.
///
/// # Safety
/// `actions` is initialised, and every descriptor named stays open until
/// the spawn returns.
#[allow(unsafe_code)]
unsafe fn add_file_actions(
    actions: *mut libc::posix_spawn_file_actions_t,
    stdin: Option<&OwnedFd>,
    out: [&OwnedFd; 2],
    held: [&OwnedFd; 2],
    cwd: Option<&CStr>,
) -> io::Result<()> {
    // SAFETY: as the caller promises; the path strings outlive the calls.
    unsafe {
        match stdin {
            Some(read) => check(libc::posix_spawn_file_actions_adddup2(
                actions,
                read.as_raw_fd(),
                0,
            ))?,
            None => check(libc::posix_spawn_file_actions_addopen(
                actions,
                0,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            ))?,
        }
        for (fd, target) in out.into_iter().zip([1, 2]) {
            check(libc::posix_spawn_file_actions_adddup2(
                actions,
                fd.as_raw_fd(),
                target,
            ))?;
        }
        for (fd, target) in held.into_iter().zip(HELD_PIPE_FDS) {
            check(libc::posix_spawn_file_actions_adddup2(
                actions,
                fd.as_raw_fd(),
                target,
            ))?;
        }
        if let Some(dir) = cwd {
            check(libc::posix_spawn_file_actions_addchdir_np(
                actions,
                dir.as_ptr(),
            ))?;
        }
    }
    Ok(())
}

/// The child starts in a new session, with no signal blocked and every
/// signal's disposition at its default (the manager ignores or handles
/// some, SIGPIPE above all).
///
/// # Safety
/// `attrs` is initialised.
#[allow(unsafe_code)]
unsafe fn set_attributes(attrs: *mut libc::posix_spawnattr_t) -> io::Result<()> {
    // SAFETY: as the caller promises; the signal sets live on this stack
    // until the calls that read them return.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        check(libc::posix_spawnattr_setsigmask(attrs, &raw const empty))?;
        let mut defaults: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut defaults);
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaddset(&raw mut defaults, sig);
            }
        }
        check(libc::posix_spawnattr_setsigdefault(
            attrs,
            &raw const defaults,
        ))?;
        // The three flags are small positive constants; libc declares them with mixed widths.
        #[allow(clippy::cast_possible_truncation)]
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
        check(libc::posix_spawnattr_setflags(attrs, flags))?;
    }
    Ok(())
}

/// Starts `program` with `argv` (argv\[0\] included) and exactly the
/// environment `env` (`NAME=value` strings).
pub(crate) fn spawn(
    program: &Path,
    argv: &[bpm_domain::OsText],
    env: &[&CStr],
    cwd: Option<&Path>,
    stdin_pipe: bool,
) -> io::Result<Child> {
    let path = cstring(program.as_os_str().as_bytes().to_vec())?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| cstring(a.as_bytes().to_vec()))
        .collect::<io::Result<_>>()?;
    let cwd = cwd
        .map(|c| cstring(c.as_os_str().as_bytes().to_vec()))
        .transpose()?;
    let mut arg_ptrs: Vec<*mut libc::c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    arg_ptrs.push(std::ptr::null_mut());
    let mut env_ptrs: Vec<*mut libc::c_char> = env.iter().map(|v| v.as_ptr().cast_mut()).collect();
    env_ptrs.push(std::ptr::null_mut());

    // The parent keeps one end of each pipe; close-on-exec keeps every end out of other children.
    let (out_r, out_w) = pipe_with(PipeFlags::CLOEXEC)?;
    let (err_r, err_w) = pipe_with(PipeFlags::CLOEXEC)?;
    let stdin = if stdin_pipe {
        Some(pipe_with(PipeFlags::CLOEXEC)?)
    } else {
        None
    };

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer handed to libc outlives the call (the CStrings and
    // pointer vectors above live to the end of this function, each vector ends
    // with NULL); the attribute and action objects are initialised before use
    // and destroyed by SpawnSetup's Drop; the fds named in the file actions are
    // open until posix_spawn returns.
    #[allow(unsafe_code)]
    let rc = unsafe {
        let mut setup = SpawnSetup {
            actions: std::mem::zeroed(),
            attrs: std::mem::zeroed(),
        };
        check(libc::posix_spawn_file_actions_init(&raw mut setup.actions))?;
        check(libc::posix_spawnattr_init(&raw mut setup.attrs))?;
        let stdin_read = stdin.as_ref().map(|(read, _)| read);
        add_file_actions(
            &raw mut setup.actions,
            stdin_read,
            [&out_w, &err_w],
            [&out_r, &err_r],
            cwd.as_deref(),
        )?;
        set_attributes(&raw mut setup.attrs)?;
        libc::posix_spawn(
            &raw mut pid,
            path.as_ptr(),
            &raw const setup.actions,
            &raw const setup.attrs,
            arg_ptrs.as_ptr(),
            env_ptrs.as_ptr(),
        )
    };
    check(rc)?;
    drop((out_w, err_w));
    let stdin = stdin.map(|(read, write)| {
        drop(read);
        write
    });
    let pid_u32 = u32::try_from(pid).map_err(|_| io::Error::other("negative pid"))?;
    // The child is ours and not yet reaped, so its pid cannot have been reused.
    let pidfd = pidfd_open(
        Pid::from_raw(pid).ok_or_else(|| io::Error::other("pid 0"))?,
        PidfdFlags::empty(),
    )?;
    Ok(Child {
        pid: pid_u32,
        pidfd,
        stdin,
        stdout: out_r,
        stderr: err_r,
        terminal: false,
    })
}

/// What a process started through `fork` gets beyond [`spawn`]'s.
#[derive(Default)]
pub(crate) struct Forked<'a> {
    /// Its control groups and rlimits.
    pub(crate) confinement: Option<&'a super::limits::Confinement>,
    /// A pseudo-terminal of this size as its standard input, output and
    /// error, and its controlling terminal.
    pub(crate) tty: Option<bpm_domain::TtySize>,
}

/// A new pseudo-terminal of `size`: its master side (non-blocking) and its
/// slave side, both close-on-exec.
fn open_terminal(size: bpm_domain::TtySize) -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::OpenptFlags;
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::termios::tcsetwinsize(
        &slave,
        rustix::termios::Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    rustix::io::ioctl_fionbio(&master, true)?;
    Ok((master, slave))
}

/// [`spawn`], through `fork`, for what `posix_spawn` cannot do: between
/// `fork` and `exec` the child writes itself into its control groups and
/// sets its rlimits (so nothing it runs is ever outside them), and takes a
/// pseudo-terminal as its controlling terminal. Only such processes pay
/// for the `fork`.
pub(crate) fn spawn_forked(
    program: &Path,
    argv: &[bpm_domain::OsText],
    env: &[&CStr],
    cwd: Option<&Path>,
    stdin_pipe: bool,
    extra: &Forked<'_>,
) -> io::Result<Child> {
    use std::process::Stdio;

    let terminal = extra.tty.map(open_terminal).transpose()?;
    let (out_r, out_w) = pipe_with(PipeFlags::CLOEXEC)?;
    let (err_r, err_w) = pipe_with(PipeFlags::CLOEXEC)?;
    let mut command = std::process::Command::new(program);
    let (stdin, held) = if let Some((master, slave)) = &terminal {
        command
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave.try_clone()?));
        drop((out_w, err_w));
        (Some(master.try_clone()?), None)
    } else {
        let (stdin_read, stdin) = if stdin_pipe {
            let (read, write) = pipe_with(PipeFlags::CLOEXEC)?;
            (Stdio::from(read), Some(write))
        } else {
            (Stdio::null(), None)
        };
        command
            .stdin(stdin_read)
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w));
        (stdin, Some([out_r.as_raw_fd(), err_r.as_raw_fd()]))
    };
    set_arguments(&mut command, argv, env, cwd);
    prepare_child(&mut command, extra, terminal.is_some(), held);
    let child = command.spawn()?;
    // The parent keeps no slave side: once the child's tree closes its
    // own, reading the master side ends.
    drop(command);
    let pid = child.id();
    let pidfd = pidfd_open(
        Pid::from_raw(i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?)
            .ok_or_else(|| io::Error::other("pid 0"))?,
        PidfdFlags::empty(),
    )?;
    let (stdout, is_terminal) = match terminal {
        Some((master, slave)) => {
            drop(slave);
            (master, true)
        }
        None => (out_r, false),
    };
    Ok(Child {
        pid,
        pidfd,
        stdin,
        stdout,
        stderr: err_r,
        terminal: is_terminal,
    })
}

/// Gives `command` its argument vector (`argv[0]` included), exactly
/// `env` as its environment, and `cwd`.
fn set_arguments(
    command: &mut std::process::Command,
    argv: &[bpm_domain::OsText],
    env: &[&CStr],
    cwd: Option<&Path>,
) {
    use std::os::unix::process::CommandExt;

    if let Some((first, rest)) = argv.split_first() {
        command.arg0(first.as_os_str());
        command.args(rest.iter().map(bpm_domain::OsText::as_os_str));
    }
    command.env_clear();
    for kv in env {
        let bytes = kv.to_bytes();
        if let Some(eq) = bytes.iter().position(|b| *b == b'=') {
            command.env(
                OsStr::from_bytes(&bytes[..eq]),
                OsStr::from_bytes(&bytes[eq + 1..]),
            );
        }
    }
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
}

/// What the forked child does before `exec`: joins its control groups,
/// starts a session (taking its terminal as the controlling one when
/// `controlling`), clears its signal mask and dispositions, moves the
/// `held` pipes into place and sets its rlimits.
fn prepare_child(
    command: &mut std::process::Command,
    extra: &Forked<'_>,
    controlling: bool,
    held: Option<[i32; 2]>,
) {
    use std::os::unix::process::CommandExt;

    let procs: Vec<i32> = extra
        .confinement
        .map(|c| c.procs.iter().map(AsRawFd::as_raw_fd).collect())
        .unwrap_or_default();
    let rlimits = extra
        .confinement
        .map(|c| c.rlimits.clone())
        .unwrap_or_default();
    // SAFETY: the hook runs in the forked child before exec and makes only
    // async-signal-safe system calls (write, setsid, ioctl, sigprocmask,
    // sigaction, dup2, setrlimit), on descriptors the parent keeps open
    // until spawn returns (`extra` and the pipes outlive this call).
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            for fd in &procs {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // Standard input is the terminal by now: it becomes the new
            // session's controlling terminal.
            if controlling && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            for (fd, target) in held.into_iter().flatten().zip(HELD_PIPE_FDS) {
                if libc::dup2(fd, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Last: a low limit on open files must not stop the dup2 above.
            for (resource, value) in &rlimits {
                let limit = rustix::process::Rlimit {
                    current: Some(*value),
                    maximum: Some(*value),
                };
                rustix::process::setrlimit(*resource, limit)?;
            }
            Ok(())
        });
    }
}
