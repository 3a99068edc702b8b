//! What nodes on one Redis send each other, on a real `redis-server` the
//! tests start: commands for the node that owns a record
//! (`RedisCommands`) and every node's events (`RedisEvents`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bpm_adapters::redis::{RedisCommands, RedisEvents, RedisMembership};
use bpm_domain::{
    Event, EventKind, NodeId, ProcessId, ProcessRecord, ProcessSpec, Span, StateName, Timestamp,
};
use bpm_ports::{Answer, Claimant, Command, CommandBus, EventBus, ManagerError, Membership};
use bpm_tests::{redis_url, unique_prefix};

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("a node name")
}

fn id(n: u128) -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::from_u128(n))
}

/// Claims `name` on the deployment `prefix`, so that it counts as alive.
async fn join(prefix: &str, name: &str) -> RedisMembership {
    let membership = RedisMembership::connect(&redis_url(), prefix)
        .await
        .expect("connect");
    membership
        .join(&Claimant {
            node: node(name),
            host: "test".into(),
            pid: std::process::id(),
            version: "test".into(),
            ttl: Span::from_secs(30),
            slots: 2,
            labels: std::collections::BTreeMap::default(),
            boot: String::new(),
            replaces: None,
        })
        .await
        .expect("join");
    membership
}

async fn bus(prefix: &str, name: &str) -> Arc<RedisCommands> {
    Arc::new(
        RedisCommands::connect(&redis_url(), prefix, node(name))
            .await
            .expect("connect"),
    )
}

/// Receives on `bus` until a command comes (at most 10 s).
async fn next(bus: &RedisCommands) -> bpm_ports::Delivery {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(d) = bus.receive().await.expect("receive") {
            return d;
        }
        assert!(Instant::now() < deadline, "no command came");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_its_node_and_its_answer_comes_back() {
    let prefix = unique_prefix();
    let _beta = join(&prefix, "beta").await;
    let (a, b) = (bus(&prefix, "alpha").await, bus(&prefix, "beta").await);
    let serving = tokio::spawn(async move {
        let d = next(&b).await;
        let answer = Err(ManagerError::NotFound(d.command.id().expect("an id")));
        b.answer(&d, &answer).await.expect("answer");
        d.command
    });
    let sent = a
        .send(
            &node("beta"),
            Command::Pause { id: id(7) },
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        sent,
        Err(ManagerError::NotFound(id(7))),
        "the owner's own error"
    );
    assert_eq!(serving.await.expect("served"), Command::Pause { id: id(7) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_alive_is_refused_at_once() {
    let prefix = unique_prefix();
    let a = bus(&prefix, "alpha").await;
    let started = Instant::now();
    let sent = a
        .send(
            &node("nobody"),
            Command::Resume { id: id(1) },
            Duration::from_secs(30),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    match sent {
        Err(ManagerError::NodeNotAnswering {
            node: n, detail, ..
        }) => {
            assert_eq!(n, node("nobody"));
            assert!(detail.contains("no node is named nobody"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_no_daemon_takes_is_withdrawn_at_its_bound() {
    let prefix = unique_prefix();
    let _beta = join(&prefix, "beta").await;
    let a = bus(&prefix, "alpha").await;
    let started = Instant::now();
    let sent = a
        .send(
            &node("beta"),
            Command::Pause { id: id(2) },
            Duration::from_millis(1500),
        )
        .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let message = sent.expect_err("no answer").to_string();
    assert!(
        message.contains("node beta did not answer the pause")
            && message.contains("withdrawn and nothing was done")
            && message.contains("lease was renewed"),
        "{message}"
    );
    // Beta's daemon, when it comes, finds nothing to carry out.
    let b = bus(&prefix, "beta").await;
    for _ in 0..2 {
        assert_eq!(b.receive().await.expect("receive"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_daemon_died_is_never_carried_out_twice() {
    let prefix = unique_prefix();
    let _beta = join(&prefix, "beta").await;
    let a = bus(&prefix, "alpha").await;
    let first = bus(&prefix, "beta").await;
    let sender = tokio::spawn(async move {
        a.send(
            &node("beta"),
            Command::Restart { id: id(3) },
            Duration::from_secs(20),
        )
        .await
    });
    // The first daemon takes it and dies before it answers.
    let taken = next(&first).await;
    assert_eq!(taken.command, Command::Restart { id: id(3) });
    drop(first);
    // The next daemon of beta gets it again (its group's pending entry),
    // and answers that it is not carried out again.
    let second = bus(&prefix, "beta").await;
    assert_eq!(second.receive().await.expect("receive"), None);
    let answer = sender.await.expect("sent").expect_err("not carried out");
    assert!(
        answer
            .to_string()
            .contains("stopped while it carried out this restart"),
        "{answer}"
    );
    // Nothing is left for beta.
    assert_eq!(second.receive().await.expect("receive"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_answered_twice_leaves_nothing_queued() {
    let prefix = unique_prefix();
    let _beta = join(&prefix, "beta").await;
    let a = bus(&prefix, "alpha").await;
    let b = bus(&prefix, "beta").await;
    let served = Arc::clone(&b);
    let serving = tokio::spawn(async move {
        let d = next(&served).await;
        served.answer(&d, &Ok(Answer::Done)).await.expect("answer");
        // The same answer sent twice changes nothing.
        served.answer(&d, &Ok(Answer::Done)).await.expect("again");
    });
    let sent = a
        .send(
            &node("beta"),
            Command::Remove { id: id(4) },
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(sent, Ok(Answer::Done));
    serving.await.expect("served");
    assert_eq!(b.receive().await.expect("receive"), None);
}

/// Event `n` of node `on`: an exit, with version `n`.
fn event(n: u64, on: &str) -> Event {
    let at = Timestamp::from_millis(n);
    let record = ProcessRecord::new(id(u128::from(n)), node(on), ProcessSpec::argv(["x"]), at);
    let mut event = Event::new(EventKind::Exited, &record, at);
    event.state = StateName::Completed;
    event.version = n;
    event
}

/// Events of every node reach every node's subscribers, once each; a
/// node's own events are not delivered to it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_events_reach_every_nodes_subscribers_once() {
    let prefix = unique_prefix();
    let url = redis_url();
    let alpha = RedisEvents::connect(&url, &prefix, node("alpha"))
        .await
        .expect("connect");
    let beta = RedisEvents::connect(&url, &prefix, node("beta"))
        .await
        .expect("connect");
    let mut at_alpha = alpha.subscribe();
    let mut at_beta = beta.subscribe();
    for n in 1..=3 {
        alpha.publish(event(n, "alpha")).await.expect("publish");
    }
    beta.publish(event(10, "beta")).await.expect("publish");
    let mut heard = Vec::new();
    while heard.len() < 4 {
        let e = tokio::time::timeout(Duration::from_secs(5), at_beta.recv())
            .await
            .expect("beta hears within 5 s")
            .expect("open");
        heard.push(e.version);
    }
    // Its own, and alpha's in their order.
    assert!(heard.contains(&10), "{heard:?}");
    heard.retain(|v| *v != 10);
    assert_eq!(heard, [1, 2, 3]);
    let mut heard = Vec::new();
    while heard.len() < 4 {
        let e = tokio::time::timeout(Duration::from_secs(5), at_alpha.recv())
            .await
            .expect("alpha hears within 5 s")
            .expect("open");
        heard.push(e.version);
    }
    assert!(heard.contains(&10), "{heard:?}");
    heard.retain(|v| *v != 10);
    assert_eq!(heard, [1, 2, 3]);
    // Nothing more: alpha's own events did not come back to it.
    let more = tokio::time::timeout(Duration::from_millis(1500), at_alpha.recv()).await;
    assert!(more.is_err(), "nothing twice: {more:?}");
    assert_eq!(alpha.recent().len(), 4);
    assert_eq!(alpha.dropped(), 0);
}
