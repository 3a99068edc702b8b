//! The command bus contract: a command reaches the node that owns its
//! record and its answer comes back; a node that is not alive is refused at
//! once; a command nobody takes is withdrawn at its bound; a command is
//! never carried out twice, though a daemon that took it died. A subject
//! is node `alpha`'s bus and a way to start daemons of node `beta`, both
//! alive, on one fresh backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpm_domain::{NodeId, ProcessId};

use bpm_domain::Span;

use crate::{Call, Candidate, CommandBus, Delivery, ManagerError, Membership, Reply};

/// A daemon of node `beta`, started anew.
pub type StartBeta =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn CommandBus>> + Send>> + Send + Sync>;

/// Node `alpha`'s bus, and daemons of node `beta`, on one fresh backend
/// where both nodes are alive and no other is.
pub struct Subject {
    /// Node `alpha`'s bus.
    pub alpha: Arc<dyn CommandBus>,
    /// Starts a daemon of node `beta` (each call a new one, as after the
    /// last died).
    pub beta: StartBeta,
}

/// Makes nodes `alpha` and `beta` alive on `membership`, for a subject:
/// each holds its name with a lease of half a minute.
///
/// # Panics
/// If the membership refuses.
pub async fn alpha_and_beta_alive(membership: &dyn Membership) {
    for name in ["alpha", "beta"] {
        membership
            .join(&Candidate {
                node: node(name),
                host: "contract".into(),
                pid: std::process::id(),
                version: "contract".into(),
                ttl: Span::from_secs(30),
                slots: 2,
                labels: std::collections::BTreeMap::default(),
                boot: String::new(),
                replaces: None,
            })
            .await
            .expect("join");
    }
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("a node name")
}

fn id(n: u128) -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::from_u128(n))
}

/// Receives on `bus` until a command comes (at most 10 s).
async fn next(bus: &dyn CommandBus) -> Delivery {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(d) = bus.receive().await.expect("receive") {
            return d;
        }
        assert!(Instant::now() < deadline, "no command came");
    }
}

/// A command reaches its node, and the owner's answer (here its own
/// error) comes back to the sender.
pub async fn a_command_reaches_its_node_and_its_answer_comes_back(s: Subject) {
    let b = (s.beta)().await;
    let serving = tokio::spawn(async move {
        let d = next(b.as_ref()).await;
        let answer = Err(ManagerError::NotFound(d.call.id().expect("an id")));
        b.answer(&d, &answer).await.expect("answer");
        d.call
    });
    let sent = s
        .alpha
        .send(
            &node("beta"),
            Call::Pause { id: id(7) },
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        sent,
        Err(ManagerError::NotFound(id(7))),
        "the owner's own error"
    );
    assert_eq!(serving.await.expect("served"), Call::Pause { id: id(7) });
}

/// A command for a node nobody holds is refused at once, naming the node.
pub async fn a_node_that_is_not_alive_is_refused_at_once(s: Subject) {
    let started = Instant::now();
    let sent = s
        .alpha
        .send(
            &node("nobody"),
            Call::Resume { id: id(1) },
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

/// A command no daemon takes is withdrawn when its sender stops waiting,
/// and the error says nothing was done; a daemon that comes later finds
/// nothing to carry out.
pub async fn a_command_no_daemon_takes_is_withdrawn_at_its_bound(s: Subject) {
    let started = Instant::now();
    let sent = s
        .alpha
        .send(
            &node("beta"),
            Call::Pause { id: id(2) },
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
    let b = (s.beta)().await;
    for _ in 0..2 {
        assert_eq!(b.receive().await.expect("receive"), None);
    }
}

/// A command whose daemon took it and died before it answered goes to the
/// node's next daemon, which answers that it is not carried out again.
pub async fn a_command_whose_daemon_died_is_never_carried_out_twice(s: Subject) {
    let first = (s.beta)().await;
    let alpha = Arc::clone(&s.alpha);
    let sender = tokio::spawn(async move {
        alpha
            .send(
                &node("beta"),
                Call::Restart { id: id(3) },
                Duration::from_secs(20),
            )
            .await
    });
    let taken = next(first.as_ref()).await;
    assert_eq!(taken.call, Call::Restart { id: id(3) });
    drop(first);
    let second = (s.beta)().await;
    assert_eq!(second.receive().await.expect("receive"), None);
    let answer = sender.await.expect("sent").expect_err("not carried out");
    assert!(
        answer
            .to_string()
            .contains("stopped while it carried out this restart"),
        "{answer}"
    );
    assert_eq!(second.receive().await.expect("receive"), None);
}

/// An answer sent twice changes nothing, and leaves nothing queued.
pub async fn a_command_answered_twice_leaves_nothing_queued(s: Subject) {
    let b = (s.beta)().await;
    let served = Arc::clone(&b);
    let serving = tokio::spawn(async move {
        let d = next(served.as_ref()).await;
        served.answer(&d, &Ok(Reply::Done)).await.expect("answer");
        served.answer(&d, &Ok(Reply::Done)).await.expect("again");
    });
    let sent = s
        .alpha
        .send(
            &node("beta"),
            Call::Remove { id: id(4) },
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(sent, Ok(Reply::Done));
    serving.await.expect("served");
    assert_eq!(b.receive().await.expect("receive"), None);
}
