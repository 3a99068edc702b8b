//! How fast the supervisor core decides, and whether that stays flat as the
//! queue grows: a steady state of exit → start next → spawned → submit one
//! more, with N records pending across 100 groups. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p bpm-domain --bench core`

use std::time::Instant;

use bpm_domain::{
    Effect, ExitStatus, GroupName, Input, Limits, NodeId, ProcessId, ProcessSpec, Supervisor,
    Timestamp,
};

const GROUPS: usize = 100;
const SLOTS: usize = 50;

struct Bench {
    core: Supervisor,
    next: u128,
    now: u64,
    running: std::collections::VecDeque<ProcessId>,
}

impl Bench {
    fn new() -> Self {
        let mut limits = Limits {
            max_running: SLOTS,
            ..Limits::default()
        };
        limits.default_group_limit = Some(2);
        Bench {
            core: Supervisor::new(NodeId::local(), limits),
            next: 1,
            now: 1_000_000,
            running: std::collections::VecDeque::new(),
        }
    }

    fn submit(&mut self) {
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(self.next));
        let mut spec = ProcessSpec::argv(["work"]);
        spec.group =
            Some(GroupName::new(format!("g{}", self.next % GROUPS as u128)).expect("valid"));
        spec.priority = i32::try_from(self.next % 3).expect("small");
        self.next += 1;
        let now = self.tick();
        let effects = self
            .core
            .handle(Input::Submit { id, spec }, now)
            .expect("submit");
        self.spawn_all(effects);
    }

    fn tick(&mut self) -> Timestamp {
        self.now += 1;
        Timestamp::from_millis(self.now)
    }

    fn spawn_all(&mut self, effects: Vec<Effect>) {
        for e in effects {
            if let Effect::Spawn { record } = e {
                let id = record.id();
                let now = self.tick();
                let more = self
                    .core
                    .handle(Input::Spawned { id, pid: 1 }, now)
                    .expect("spawned");
                assert!(more.iter().all(|e| !matches!(e, Effect::Spawn { .. })));
                self.running.push_back(id);
            }
        }
    }

    /// One cycle: the oldest running process exits, the next starts, one more is queued.
    fn cycle(&mut self) -> u32 {
        let id = self.running.pop_front().expect("something runs");
        let now = self.tick();
        let effects = self
            .core
            .handle(
                Input::Exited {
                    id,
                    status: ExitStatus::Code(0),
                    limit: None,
                },
                now,
            )
            .expect("exit");
        self.spawn_all(effects);
        self.submit();
        3
    }
}

fn measure(pending: usize) -> (f64, usize) {
    let mut b = Bench::new();
    for _ in 0..pending + SLOTS {
        b.submit();
    }
    assert_eq!(b.core.active(), SLOTS);
    let queued = b.core.ready_len();
    // Warm up, then time a fixed number of decisions.
    for _ in 0..2_000 {
        b.cycle();
    }
    let mut decisions: u32 = 0;
    let start = Instant::now();
    while decisions < 300_000 {
        decisions += b.cycle();
    }
    let rate = f64::from(decisions) / start.elapsed().as_secs_f64();
    (rate, queued)
}

fn main() {
    println!(
        "supervisor core: decisions per second (exit, start next, spawned, submit), {GROUPS} groups, {SLOTS} slots"
    );
    let mut results = Vec::new();
    for pending in [1_000, 10_000] {
        let best = (0..3)
            .map(|_| measure(pending))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .expect("runs");
        println!(
            "  {:>6} pending: {:>12.0} decisions/s ({:.2} µs each)",
            best.1,
            best.0,
            1e6 / best.0
        );
        results.push(best.0);
    }
    println!(
        "  ratio 10k/1k throughput: {:.2} (1.00 = flat)",
        results[1] / results[0]
    );
}
