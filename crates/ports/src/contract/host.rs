//! The host contract: cases every [`Host`] must pass, on real sockets and
//! real processes.

// The contract macro awaits every case; the port's lookups are synchronous.
#![allow(clippy::unused_async)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bpm_domain::{PortAsk, ProcessRef};

use crate::Host;

/// A port something listens on is never offered, fixed or in a range.
pub async fn a_listened_port_is_not_free(host: Arc<dyn Host>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    assert!(host.free_ports(PortAsk::Fixed(port)).is_empty());
    let range = PortAsk::Range {
        first: port,
        last: port,
    };
    assert!(host.free_ports(range).is_empty());
    drop(listener);
    assert_eq!(host.free_ports(PortAsk::Fixed(port)), vec![port]);
}

/// `auto` offers ports that can be listened on, and none twice.
pub async fn auto_offers_distinct_free_ports(host: Arc<dyn Host>) {
    let free = host.free_ports(PortAsk::Auto);
    assert!(!free.is_empty(), "auto offered nothing");
    let mut sorted = free.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), free.len(), "offered twice: {free:?}");
    for p in free {
        TcpListener::bind(("0.0.0.0", p)).expect("an offered port can be listened on");
    }
}

/// A range is offered lowest first, within its bounds.
pub async fn a_range_is_offered_in_order(host: Arc<dyn Host>) {
    // Ports the kernel just gave out are very likely free a moment later.
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = probe.local_addr().expect("address").port().min(65_000);
    drop(probe);
    let ask = PortAsk::Range {
        first: base,
        last: base + 20,
    };
    let free = host.free_ports(ask);
    assert!(free.iter().all(|p| ask.admits(*p)), "{free:?}");
    assert!(free.windows(2).all(|w| w[0] < w[1]), "{free:?}");
}

/// A running process has a start time; a process that ended (or a pid
/// with another start time) is gone at once, and a process that ends is
/// noticed.
pub async fn owners_are_known_and_their_end_noticed(host: Arc<dyn Host>) {
    let mut child = Command::new("sleep")
        .arg("0.3")
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep starts");
    let pid = child.id();
    let start = host.start_of(pid).expect("a running process has a start");
    let wrong = ProcessRef {
        pid,
        start: start + 1,
    };
    tokio::time::timeout(Duration::from_secs(2), host.until_gone(wrong))
        .await
        .expect("another start time is another process: gone at once");
    let reaper = std::thread::spawn(move || child.wait());
    tokio::time::timeout(
        Duration::from_secs(5),
        host.until_gone(ProcessRef { pid, start }),
    )
    .await
    .expect("its end is noticed");
    reaper.join().expect("reaped").expect("wait");
    assert_eq!(host.start_of(pid), None);
}

/// A directory of its own under the system's temporary one, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("bpm-watch-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(dir.join(".git")).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn watch_of(dir: &std::path::Path, ignore: &[&str]) -> bpm_domain::FileWatch {
    bpm_domain::FileWatch::new(
        vec![dir.to_path_buf()],
        ignore.iter().map(|g| (*g).to_owned()).collect(),
        Some(bpm_domain::Span::from_millis(100)),
    )
}

/// Whether a change is reported within a second.
async fn reported(changes: &mut tokio::sync::mpsc::Receiver<()>) -> bool {
    tokio::time::timeout(Duration::from_secs(1), changes.recv())
        .await
        .is_ok_and(|m| m.is_some())
}

/// A change under a watched directory, however deep, is reported; one
/// under `.git` or matching an ignore glob is not; a burst waits unread
/// as one message.
pub async fn changes_under_a_watch_are_reported(host: Arc<dyn Host>) {
    let dir = Scratch::new();
    std::fs::create_dir_all(dir.0.join("src/deep")).expect("mkdir");
    let mut changes = host
        .watch_files(&watch_of(&dir.0, &["*.log"]))
        .expect("watch");
    std::fs::write(dir.0.join(".git/index"), "x").expect("write");
    std::fs::write(dir.0.join("src/app.log"), "x").expect("write");
    assert!(
        !reported(&mut changes).await,
        "ignored changes were reported"
    );
    for i in 0..20 {
        std::fs::write(dir.0.join("src/deep/a.txt"), format!("{i}")).expect("write");
    }
    assert!(reported(&mut changes).await, "a change was not reported");
    // The burst waited as one message (or two, one read as it came).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut more = 0;
    while changes.try_recv().is_ok() {
        more += 1;
    }
    assert!(more <= 1, "{more} more messages for one burst");
}

/// A path that does not exist cannot be watched, and is named.
pub async fn a_missing_path_is_not_watched(host: Arc<dyn Host>) {
    let dir = Scratch::new();
    let missing = dir.0.join("missing");
    match host.watch_files(&watch_of(&missing, &[])) {
        Err(crate::WatchError::NotFound(path)) => assert_eq!(path, missing),
        Err(other) => panic!("expected NotFound, got {other:?}"),
        Ok(_) => panic!("a missing path was watched"),
    }
}

/// Watches are apart: a change reaches the watches of its path only, and
/// one that ends (its receiver dropped), even on the same path, leaves
/// the others watching.
pub async fn watches_are_apart(host: Arc<dyn Host>) {
    let (a, b) = (Scratch::new(), Scratch::new());
    let mut on_a = host.watch_files(&watch_of(&a.0, &[])).expect("watch a");
    let mut on_b = host.watch_files(&watch_of(&b.0, &[])).expect("watch b");
    let also_a = host
        .watch_files(&watch_of(&a.0, &[]))
        .expect("watch a again");
    std::fs::write(b.0.join("x"), "1").expect("write");
    assert!(reported(&mut on_b).await, "b's change was not reported");
    assert!(!reported(&mut on_a).await, "b's change reached a");
    drop(also_a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(a.0.join("x"), "1").expect("write");
    assert!(
        reported(&mut on_a).await,
        "a stopped being watched with its twin"
    );
}
