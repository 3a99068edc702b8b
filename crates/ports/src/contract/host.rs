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
