//! A scriptable spawner that runs no OS process: the argument vector is a
//! script, and time passes on the [`Clock`] it is given. For engine tests that
//! must be fast and deterministic.
//!
//! The program must be `fake`; every further argument is one directive:
//!
//! | directive | meaning |
//! |---|---|
//! | `exit=N` | exit with code N (default 0) |
//! | `signal=N` | die by signal N instead |
//! | `after=SPAN` | run this long first (default: exit at once) |
//! | `forever` | never exit on its own |
//! | `ignore-term` | survive TERM, INT, HUP and QUIT (KILL always works) |
//! | `stdout=TEXT`, `stderr=TEXT` | write TEXT and a newline at start |
//! | `ready-after=SPAN` | report readiness after SPAN |
//! | `echo-input` | write whatever arrives on stdin to stdout |
//!
//! Any other program is "not found"; a cwd that does not exist is refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bpm_domain::{ExitStatus, ProcessId, Signal, Span, StdinMode};
use bpm_ports::{
    Clock, OutputStore, ProcessNotice, ProcessSpawner, SpawnError, SpawnRequest, Spawned, Stream,
};
use tokio::sync::mpsc;

#[derive(Debug, Default, Clone)]
struct Script {
    exit: Option<ExitStatus>,
    after: Option<Span>,
    forever: bool,
    ignore_term: bool,
    stdout: Vec<String>,
    stderr: Vec<String>,
    ready_after: Option<Span>,
    echo_input: bool,
}

fn parse(argv: &[bpm_domain::OsText]) -> Result<Script, SpawnError> {
    let argv: Vec<String> = argv.iter().map(ToString::to_string).collect();
    let program = argv
        .first()
        .ok_or_else(|| SpawnError::Invalid("empty argument vector".into()))?;
    if program != "fake" {
        return Err(SpawnError::ProgramNotFound(program.into()));
    }
    let mut s = Script::default();
    let bad = |arg: &str| SpawnError::Invalid(format!("fake: unknown directive {arg:?}"));
    for arg in &argv[1..] {
        let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
        match key {
            "exit" => s.exit = Some(ExitStatus::Code(value.parse().map_err(|_| bad(arg))?)),
            "signal" => s.exit = Some(ExitStatus::Signal(value.parse().map_err(|_| bad(arg))?)),
            "after" => s.after = Some(value.parse().map_err(|_| bad(arg))?),
            "ready-after" => s.ready_after = Some(value.parse().map_err(|_| bad(arg))?),
            "forever" => s.forever = true,
            "ignore-term" => s.ignore_term = true,
            "echo-input" => s.echo_input = true,
            "stdout" => s.stdout.push(value.to_owned()),
            "stderr" => s.stderr.push(value.to_owned()),
            _ => return Err(bad(arg)),
        }
    }
    Ok(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    Paused,
    Exited,
}

#[derive(Debug)]
struct FakeProcess {
    pid: u32,
    run: Run,
    ignore_term: bool,
    stdin: StdinMode,
    echo_input: bool,
    signals: Vec<Signal>,
    /// The manager recorded its exit: a spawn of its record starts anew.
    recorded: bool,
}

/// The scriptable spawner. See the module documentation for the script.
pub struct ScriptedSpawner {
    clock: Arc<dyn Clock>,
    output: Arc<dyn OutputStore>,
    processes: Arc<Mutex<HashMap<ProcessId, FakeProcess>>>,
    tx: mpsc::UnboundedSender<ProcessNotice>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ProcessNotice>>>,
    next_pid: AtomicU32,
}

impl ScriptedSpawner {
    /// A spawner whose scripts keep time by `clock` and write to `output`.
    pub fn new(clock: Arc<dyn Clock>, output: Arc<dyn OutputStore>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        ScriptedSpawner {
            clock,
            output,
            processes: Arc::new(Mutex::new(HashMap::new())),
            tx,
            rx: Mutex::new(Some(rx)),
            next_pid: AtomicU32::new(1000),
        }
    }

    /// Makes a running fake process exit now, as if it had ended by itself.
    pub fn exit(&self, id: ProcessId, status: ExitStatus) -> bool {
        finish(&self.processes, &self.tx, id, status)
    }

    /// The signals `id` has received, in order.
    pub fn signals(&self, id: ProcessId) -> Vec<Signal> {
        self.lock()
            .get(&id)
            .map(|p| p.signals.clone())
            .unwrap_or_default()
    }

    /// Whether `id` is running (and not paused).
    pub fn is_running(&self, id: ProcessId) -> bool {
        self.lock().get(&id).is_some_and(|p| p.run == Run::Running)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProcessId, FakeProcess>> {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn finish(
    processes: &Mutex<HashMap<ProcessId, FakeProcess>>,
    tx: &mpsc::UnboundedSender<ProcessNotice>,
    id: ProcessId,
    status: ExitStatus,
) -> bool {
    let mut map = processes.lock().unwrap_or_else(PoisonError::into_inner);
    match map.get_mut(&id) {
        Some(p) if p.run != Run::Exited => {
            p.run = Run::Exited;
            let _ = tx.send(ProcessNotice::Exited {
                id,
                status,
                limit: None,
            });
            true
        }
        _ => false,
    }
}

#[async_trait]
impl ProcessSpawner for ScriptedSpawner {
    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, SpawnError> {
        let script = parse(&request.argv)?;
        if let Some(cwd) = &request.cwd {
            crate::usable_cwd(cwd)?;
        }
        crate::env_file::read(&request.env_files)?;
        let id = request.id;
        // Asked again for a record it started (the manager restarted before
        // it heard), it answers with that process.
        if let Some(p) = self.lock().get(&id)
            && !p.recorded
        {
            return Ok(Spawned { pid: p.pid });
        }
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        for line in &script.stdout {
            let _ = self
                .output
                .append(id, Stream::Stdout, format!("{line}\n").as_bytes())
                .await;
        }
        for line in &script.stderr {
            let _ = self
                .output
                .append(id, Stream::Stderr, format!("{line}\n").as_bytes())
                .await;
        }
        self.lock().insert(
            id,
            FakeProcess {
                pid,
                run: Run::Running,
                ignore_term: script.ignore_term,
                stdin: request.stdin,
                echo_input: script.echo_input,
                signals: Vec::new(),
                recorded: false,
            },
        );
        let start = self.clock.now();
        if let Some(ready_after) = script.ready_after {
            let (clock, tx, processes) =
                (self.clock.clone(), self.tx.clone(), self.processes.clone());
            tokio::spawn(async move {
                clock
                    .sleep_until(start.saturating_add(ready_after.as_duration()))
                    .await;
                let alive = processes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&id)
                    .is_some_and(|p| p.run != Run::Exited);
                if alive {
                    let _ = tx.send(ProcessNotice::Ready { id });
                }
            });
        }
        if !script.forever {
            let status = script.exit.unwrap_or(ExitStatus::Code(0));
            let at = start.saturating_add(script.after.unwrap_or_default().as_duration());
            let (clock, tx, processes) =
                (self.clock.clone(), self.tx.clone(), self.processes.clone());
            tokio::spawn(async move {
                clock.sleep_until(at).await;
                finish(&processes, &tx, id, status);
            });
        }
        Ok(Spawned { pid })
    }

    async fn signal(&self, id: ProcessId, pid: u32, signal: Signal) -> Result<(), SpawnError> {
        let dies = {
            let mut map = self.lock();
            let Some(p) = map.get_mut(&id).filter(|p| p.pid == pid) else {
                return Ok(());
            };
            p.signals.push(signal);
            if p.run == Run::Exited {
                return Ok(());
            }
            match signal {
                Signal::Stop => {
                    p.run = Run::Paused;
                    false
                }
                Signal::Cont => {
                    p.run = Run::Running;
                    false
                }
                Signal::Kill => true,
                Signal::Usr1 | Signal::Usr2 => false,
                Signal::Term | Signal::Int | Signal::Hup | Signal::Quit => !p.ignore_term,
            }
        };
        if dies {
            finish(
                &self.processes,
                &self.tx,
                id,
                ExitStatus::Signal(signal.number()),
            );
        }
        Ok(())
    }

    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), SpawnError> {
        let echo = {
            let map = self.lock();
            let p = map
                .get(&id)
                .filter(|p| p.run != Run::Exited)
                .ok_or(SpawnError::NoSuchProcess(id))?;
            if p.stdin != StdinMode::Pipe {
                return Err(SpawnError::Invalid(format!(
                    "process {id} was started with stdin closed"
                )));
            }
            p.echo_input
        };
        if echo {
            self.output
                .append(id, Stream::Stdout, &data)
                .await
                .map_err(|e| SpawnError::Os(e.to_string()))?;
        }
        Ok(())
    }

    fn exit_recorded(&self, id: ProcessId) {
        if let Some(p) = self.lock().get_mut(&id) {
            p.recorded = true;
        }
    }

    async fn reattach(&self, id: ProcessId, pid: u32) -> Result<bool, SpawnError> {
        Ok(self
            .lock()
            .get(&id)
            .is_some_and(|p| p.run != Run::Exited && p.pid == pid))
    }

    fn notices(&self) -> Option<mpsc::UnboundedReceiver<ProcessNotice>> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
