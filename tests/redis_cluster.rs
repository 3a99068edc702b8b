//! What nodes on one Redis send each other, on a real `redis-server` the
//! tests start: commands for the node that owns a record
//! (`RedisCommands`) and every node's events (`RedisEvents`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bpm_adapters::redis::{RedisCommands, RedisEvents, RedisMembership};
use bpm_domain::{NodeId, ProcessId, Span};
use bpm_ports::{Answer, Claimant, Command, CommandBus, ManagerError, Membership};
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

mod redis_events {
    use super::*;
    use bpm_ports::contract::events::Subject;

    async fn buses() -> Subject {
        let (prefix, url) = (unique_prefix(), redis_url());
        let bus = |name| {
            let (url, prefix) = (url.clone(), prefix.clone());
            async move {
                Arc::new(
                    RedisEvents::connect(&url, &prefix, node(name))
                        .await
                        .expect("connect"),
                )
            }
        };
        Subject {
            alpha: bus("alpha").await,
            beta: bus("beta").await,
        }
    }

    bpm_ports::events_contract_tests!(buses().await);
}
