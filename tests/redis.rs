//! The Redis store and output store against the shared contract suites, on a
//! real `redis-server` started by the tests, plus what Redis adds: change
//! notifications, and behaviour while Redis is down.

use std::sync::Arc;

use futures_util::StreamExt;
use std::time::{Duration, Instant};

use bpm_domain::{NodeId, ProcessId, ProcessRecord, ProcessSpec, StateName, Timestamp, Transition};
use bpm_ports::contract::output::CONTRACT_CAP;
use bpm_ports::{
    Cursor, Membership, OutputQuery, OutputStore, ProcessStore, StoreError, Stream, StreamSelect,
};
use bpm_redis::{RedisMembership, RedisOutput, RedisStore};
use bpm_tests::{RedisServer, redis_url, unique_prefix};

async fn store() -> Arc<dyn ProcessStore> {
    Arc::new(
        RedisStore::connect(&redis_url(), &unique_prefix())
            .await
            .expect("connect to the test Redis"),
    )
}

async fn output() -> Arc<dyn OutputStore> {
    Arc::new(
        RedisOutput::connect(&redis_url(), &unique_prefix(), CONTRACT_CAP)
            .await
            .expect("connect"),
    )
}

mod redis_store {
    use super::*;
    bpm_ports::store_contract_tests!(store().await);

    /// Keys of their own, connected to again as often as asked.
    struct Keys(String);

    #[async_trait::async_trait]
    impl bpm_ports::contract::store::Reopen for Keys {
        async fn open(&self) -> Arc<dyn ProcessStore> {
            Arc::new(
                RedisStore::connect(&redis_url(), &self.0)
                    .await
                    .expect("connect to the test Redis"),
            )
        }
    }

    bpm_ports::store_reopen_contract_tests!(
        Arc::new(Keys(unique_prefix())) as Arc<dyn bpm_ports::contract::store::Reopen>
    );
}

async fn membership() -> Arc<dyn Membership> {
    Arc::new(
        RedisMembership::connect(&redis_url(), &unique_prefix())
            .await
            .expect("connect"),
    )
}

mod redis_membership {
    use super::*;
    bpm_ports::membership_contract_tests!(membership().await);
}

async fn claims() -> bpm_ports::contract::claims::Subject {
    use bpm_redis::RedisClaims;
    let prefix = unique_prefix();
    let store = RedisStore::connect(&redis_url(), &prefix)
        .await
        .expect("connect");
    let claims = |name: &'static str| {
        let prefix = prefix.clone();
        async move {
            let node = NodeId::new(name).expect("a node");
            Arc::new(
                RedisClaims::connect(&redis_url(), &prefix, node)
                    .await
                    .expect("connect"),
            )
        }
    };
    let (alpha, beta) = (claims("alpha").await, claims("beta").await);
    bpm_ports::contract::claims::Subject {
        store: Arc::new(store),
        alpha: alpha.clone(),
        beta: beta.clone(),
        alpha_slots: alpha,
        beta_slots: beta,
    }
}

mod redis_claims {
    use super::*;
    bpm_ports::claims_contract_tests!(claims().await);
}

mod redis_failover {
    use super::*;
    bpm_ports::failover_contract_tests!({
        let prefix = unique_prefix();
        let store = Arc::new(
            RedisStore::connect(&redis_url(), &prefix)
                .await
                .expect("connect"),
        );
        let membership = RedisMembership::connect(&redis_url(), &prefix)
            .await
            .expect("connect");
        bpm_ports::contract::failover::Subject {
            membership: Arc::new(membership),
            failover: store.clone(),
            store,
        }
    });
}

mod redis_output {
    use super::*;
    bpm_ports::output_contract_tests!(output().await);
}

fn record(n: u128) -> ProcessRecord {
    ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
        NodeId::local(),
        ProcessSpec::argv(["sleep", "1"]),
        Timestamp::from_millis(1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_published_and_streamed() {
    let url = redis_url();
    let store = RedisStore::connect(&url, &unique_prefix())
        .await
        .expect("connect");
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub connection");
    pubsub
        .subscribe(store.changes_channel())
        .await
        .expect("subscribe");
    let mut messages = pubsub.into_on_message();
    let mut r = record(1);
    store.create(&r).await.expect("create");
    r.apply(Transition::Start, Timestamp::from_millis(2))
        .expect("start");
    store.update(&r, 1).await.expect("update");
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("a message")
            .expect("open");
        got.push(m.get_payload::<String>().expect("text"));
    }
    assert_eq!(
        got,
        [
            format!("{} 1 pending", r.id()),
            format!("{} 2 starting", r.id())
        ]
    );
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let len: usize = redis::cmd("XLEN")
        .arg(store.events_stream())
        .query_async(&mut conn)
        .await
        .expect("xlen");
    assert_eq!(len, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_frozen_calls_fail_in_bounded_time_and_recover_with_the_data() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "frozen")
        .await
        .expect("connect");
    let r = record(7);
    store.create(&r).await.expect("create");
    server.freeze(true);
    let t = Instant::now();
    let err = store.get(r.id()).await.expect_err("Redis is not answering");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        err.to_string().starts_with("store unavailable: Redis"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    let mut changed = r.clone();
    changed
        .apply(Transition::Start, Timestamp::from_millis(2))
        .expect("start");
    assert!(matches!(
        store.update(&changed, 1).await,
        Err(StoreError::Unavailable(_))
    ));
    server.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let back = loop {
        match store.get(r.id()).await {
            Ok(got) => break got,
            Err(e) => assert!(Instant::now() < deadline, "never recovered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The refused update may or may not have reached Redis before the freeze; either way the record is whole.
    assert!(back == r || back == changed, "{back:?}");
    if back == r {
        store
            .update(&changed, 1)
            .await
            .expect("update after recovery");
    }
    assert_eq!(
        store.get(r.id()).await.expect("get").state(),
        StateName::Starting
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_the_store_reconnects_by_itself() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "restart")
        .await
        .expect("connect");
    store.create(&record(1)).await.expect("create");
    server.kill();
    assert!(matches!(
        store.get(record(1).id()).await,
        Err(StoreError::Unavailable(_))
    ));
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The new server has no data (no persistence): the store answers again, with not-found.
        match store.get(record(1).id()).await {
            Err(StoreError::NotFound(_)) => break,
            other => assert!(Instant::now() < deadline, "never reconnected: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.create(&record(2)).await.expect("writes work again");
}

/// The documented key of a record's fencing token: field `fence` of
/// `bpm:{PREFIX}:r:ID` holds the current attempt's token while it holds
/// one, and 0 once the record ended, so a script of the user's refuses a
/// stale writer at the moment of writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_script_refuses_a_stale_token_at_the_moment_of_writing() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "tokens")
        .await
        .expect("connect");
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // As a user would write it: refuse unless the token is current.
    let guarded = redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
",
    );
    let mut r = record(1);
    let key = format!("bpm:{{tokens}}:r:{}", r.id());
    let write = async |conn: &mut redis::aio::MultiplexedConnection, token: u64| -> i64 {
        guarded
            .key(&key)
            .key("writes")
            .arg(token)
            .arg(format!("from {token}"))
            .invoke_async(conn)
            .await
            .expect("script")
    };
    store.create(&r).await.expect("create");
    let mut v = 1;
    for (transition, at) in [(Transition::Start, 2), (Transition::Spawned { pid: 7 }, 3)] {
        r.apply(transition, Timestamp::from_millis(at))
            .expect("apply");
        store.update(&r, v).await.expect("update");
        v = r.version();
    }
    assert_eq!(write(&mut conn, 1).await, 1, "the current attempt writes");
    assert_eq!(write(&mut conn, 2).await, 0, "no such attempt");
    r.apply(
        Transition::Lose {
            reason: "failed over".into(),
        },
        Timestamp::from_millis(4),
    )
    .expect("lose");
    store.update(&r, v).await.expect("update");
    assert_eq!(
        write(&mut conn, 1).await,
        0,
        "a given-up record's writer is stale"
    );
    let replacement = ProcessRecord::failover_of(&r, record(2).id(), Timestamp::from_millis(5));
    assert!(replacement.fence_token() > r.fence_token());
    let writes: Vec<String> = redis::cmd("LRANGE")
        .arg("writes")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("writes");
    assert_eq!(writes, ["from 1"]);
}

/// Redis restarted while no call was under way: the connections the store
/// and the output hold are broken, and the first reads after it answers
/// again are sent once more on fresh connections, so none of them fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_reads_after_redis_came_back_answer() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "reread")
        .await
        .expect("connect");
    let output = RedisOutput::connect(&server.url(), "reread", 1 << 20)
        .await
        .expect("connect");
    let id = record(1).id();
    for round in 0..3 {
        store.create(&record(1)).await.expect("create");
        output
            .append(id, Stream::Stdout, b"line\n")
            .await
            .expect("append");
        assert_eq!(store.get(id).await.expect("get").id(), id);
        server.kill();
        server.restart();
        // No persistence: the new server is empty, and says so.
        assert_eq!(
            store.get(id).await,
            Err(StoreError::NotFound(id)),
            "round {round}: get"
        );
        store
            .list(&bpm_domain::ListFilter::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: list: {e}"));
        output
            .read(id, &OutputQuery::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: read: {e}"));
        server.kill();
        server.restart();
        output
            .read(id, &OutputQuery::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: read first: {e}"));
        store
            .list(&bpm_domain::ListFilter::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: list first: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_or_an_absent_server_is_a_clear_error() {
    let err = RedisStore::connect("http://nope", "x")
        .await
        .err()
        .expect("bad scheme");
    assert!(err.to_string().contains("invalid Redis URL"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let t = Instant::now();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}"), "x")
        .await
        .err()
        .expect("nobody listens");
    assert!(
        err.to_string().contains("cannot connect to Redis")
            || err.to_string().contains("no answer"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_acl_users_come_from_the_url() {
    let server = RedisServer::start_with(
        "--requirepass hunter2 --user agent on '>s3cret' '~*' '&*' '+@all'",
    );
    let port = server.url().rsplit(':').next().expect("port").to_owned();
    let ok = RedisStore::connect(&format!("redis://:hunter2@127.0.0.1:{port}"), "auth")
        .await
        .expect("password");
    ok.create(&record(1)).await.expect("write with AUTH");
    let user = RedisStore::connect(&format!("redis://agent:s3cret@127.0.0.1:{port}"), "auth")
        .await
        .expect("ACL user");
    assert_eq!(
        user.get(record(1).id()).await.expect("read as an ACL user"),
        record(1)
    );
    let refused =
        RedisStore::connect(&format!("redis://agent:wrong@127.0.0.1:{port}"), "auth").await;
    let err = refused.err().expect("a wrong password is refused");
    assert!(err.to_string().contains("cannot connect to Redis"), "{err}");
    // Without credentials, the first command is refused, as unavailable, not as missing data.
    if let Ok(anon) = RedisStore::connect(&server.url(), "auth").await {
        assert!(matches!(
            anon.get(record(1).id()).await,
            Err(StoreError::Unavailable(_))
        ));
    }
}

/// Output written while Redis does not answer is held in memory, in order,
/// without making the writer wait for Redis, and replayed once it answers;
/// what a process holds past its cap is counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_written_while_redis_is_out_of_reach_is_held_and_replayed_in_order() {
    let server = RedisServer::start();
    let big = RedisOutput::connect(&server.url(), "held", 1 << 20)
        .await
        .expect("connect");
    let small = RedisOutput::connect(&server.url(), "held-small", 64)
        .await
        .expect("connect");
    let (a, b) = (
        ProcessId::from_uuid(uuid::Uuid::from_u128(1)),
        ProcessId::from_uuid(uuid::Uuid::from_u128(2)),
    );
    big.append(a, Stream::Stdout, b"before\n")
        .await
        .expect("append");
    server.freeze(true);
    let mut expected = b"before\n".to_vec();
    let t = Instant::now();
    for i in 0..200 {
        let (stream, line) = if i % 3 == 0 {
            (Stream::Stderr, format!("err {i}\n"))
        } else {
            (Stream::Stdout, format!("out {i}\n"))
        };
        big.append(a, stream, line.as_bytes())
            .await
            .expect("held, not refused");
        small
            .append(b, stream, line.as_bytes())
            .await
            .expect("held, not refused");
        expected.extend_from_slice(line.as_bytes());
    }
    // Only the first append waited for Redis's timeout; the rest were held at once.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(big.held_bytes() > 1000, "{}", big.held_bytes());
    server.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while big.held_bytes() + small.held_bytes() > 0 {
        assert!(Instant::now() < deadline, "never replayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = OutputQuery {
        cursor: Some(Cursor(0)),
        max_bytes: usize::MAX,
        ..OutputQuery::default()
    };
    let read = big.read(a, &all).await.expect("read");
    assert_eq!(read.bytes(), expected);
    assert_eq!(read.dropped, 0);
    let stderr = big
        .read(
            a,
            &OutputQuery {
                stream: StreamSelect::Stderr,
                ..all.clone()
            },
        )
        .await
        .expect("read");
    assert!(
        stderr.text().starts_with("err 0\nerr 3\n"),
        "{}",
        stderr.text()
    );
    // The small one held no more than its cap: the rest is counted.
    let read = small.read(b, &all).await.expect("read");
    assert!(read.bytes().len() <= 64, "{}", read.text());
    assert!(read.text().ends_with("out 199\n"), "{}", read.text());
    assert_eq!(
        read.dropped + read.bytes().len() as u64 + read.skipped,
        expected.len() as u64 - 7,
        "every byte is kept, or counted"
    );
}

/// With Redis out of reach, a start is refused by name and leaves nothing
/// behind: nothing is acknowledged from the daemon's memory alone. When
/// Redis answers again, starts work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_while_redis_is_out_of_reach_is_refused_and_leaves_nothing() {
    use bpm_adapters::clock::ManualClock;
    use bpm_adapters::fake::ScriptedSpawner;
    use bpm_adapters::memory::{BroadcastBus, InMemoryOutput};
    use bpm_ports::{ManagerError, ProcessManager};

    let server = RedisServer::start();
    let store = Arc::new(
        RedisStore::connect(&server.url(), "refused")
            .await
            .expect("connect"),
    );
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let output = Arc::new(InMemoryOutput::default());
    let ports = bpm_runtime::Ports {
        store: store.clone(),
        output: output.clone(),
        events: Arc::new(BroadcastBus::default()),
        spawner: Arc::new(ScriptedSpawner::new(clock.clone(), output)),
        clock,
        ids: Arc::new(bpm_adapters::ids::UuidV7Ids::new()),
        usage: Arc::new(bpm_adapters::os::ProcSampler::new()),
        host: Arc::new(bpm_adapters::os::OsHost::new()),
    };
    let engine = bpm_runtime::Engine::launch(ports, bpm_runtime::EngineConfig::default())
        .await
        .expect("engine");
    let spec = || ProcessSpec::argv(["fake", "forever"]);
    let first = engine.start(spec()).await.expect("start");
    server.freeze(true);
    let err = engine.start(spec()).await.expect_err("refused");
    assert!(
        matches!(&err, ManagerError::Store(StoreError::Unavailable(m)) if m.contains("Redis does not answer")),
        "{err}"
    );
    let err = engine
        .start_many(vec![spec(), spec()])
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ManagerError::Store(StoreError::Unavailable(_))),
        "{err}"
    );
    server.freeze(false);
    let listed = store
        .list(&bpm_domain::ListFilter::default())
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(ProcessRecord::id).collect::<Vec<_>>(),
        [first.id()],
        "nothing was made while Redis was out of reach"
    );
    engine.start(spec()).await.expect("starts again");
    engine.shutdown().await;
}

/// A daemon's claim of `node` (as process `pid`), for a lease of 10 s.
fn candidate(node: &NodeId, pid: u32) -> bpm_ports::Candidate {
    bpm_ports::Candidate {
        node: node.clone(),
        host: "h".into(),
        pid,
        version: "test".into(),
        ttl: bpm_domain::Span::from_secs(10),
        slots: 2,
        labels: std::collections::BTreeMap::default(),
        boot: String::new(),
        replaces: None,
    }
}

/// A store fenced by its node's epoch writes while that epoch is the
/// node's newest; once a newer daemon claims the node, its writes, deletes
/// and its check before a start are refused by epoch, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writes_of_a_fenced_epoch_are_refused() {
    use bpm_redis::{Fence, RedisMembership};
    let prefix = unique_prefix();
    let members = RedisMembership::connect(&redis_url(), &prefix)
        .await
        .expect("connect");
    let node = NodeId::new("fenced").expect("node");
    let old = members.join(&candidate(&node, 1)).await.expect("join");
    let fence = Fence::new(node.clone(), old);
    let store = RedisStore::connect(&redis_url(), &prefix)
        .await
        .expect("connect")
        .fenced(fence.clone());
    let mut r = record(1);
    store.create(&r).await.expect("the newest epoch writes");
    store.reachable().await.expect("and takes new work");

    // Another daemon claims the node (the first left it, say, or its lease expired).
    members.leave(&node, old).await.expect("leave");
    let new = members
        .join(&candidate(&node, 2))
        .await
        .expect("claimed again");
    let fenced = StoreError::Fenced {
        node: node.clone(),
        epoch: old,
        current: new,
    };
    let before = r.clone();
    r.apply(Transition::Start, Timestamp::from_millis(2))
        .expect("start");
    assert_eq!(
        store.update(&r, before.version()).await,
        Err(fenced.clone())
    );
    assert_eq!(store.delete(before.id()).await, Err(fenced.clone()));
    assert_eq!(store.reachable().await, Err(fenced.clone()));
    assert!(fenced.to_string().contains("epoch 2"), "{fenced}");
    assert_eq!(store.get(before.id()).await.expect("kept"), before);

    // The same store, once it writes with the new epoch, writes again.
    fence.set(new);
    store
        .update(&r, before.version())
        .await
        .expect("the new epoch writes");
    store.reachable().await.expect("and takes new work");
}

/// A cluster-wide slot granted to a record whose daemon died before it
/// started the record (kill -9 between the grant and the start's write)
/// lapses once the node's next daemon takes its epoch: otherwise, with the
/// record asking no more (a record of higher priority asks first), the
/// group would be refused for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_granted_by_a_daemon_that_died_lapses_when_its_node_is_claimed_again() {
    use bpm_ports::ClusterSlots;
    use bpm_redis::{Fence, RedisClaims};
    let prefix = unique_prefix();
    let members = RedisMembership::connect(&redis_url(), &prefix)
        .await
        .expect("connect");
    let node = NodeId::new("alpha").expect("node");
    let daemon = |epoch| {
        let (prefix, node) = (prefix.clone(), node.clone());
        async move {
            RedisClaims::connect(&redis_url(), &prefix, node.clone())
                .await
                .expect("connect")
                .fenced(Fence::new(node, epoch))
        }
    };
    let store = RedisStore::connect(&redis_url(), &prefix)
        .await
        .expect("connect");
    let agents = bpm_domain::GroupName::new("agents").expect("group");
    let [low, high] = [1u128, 2].map(|n| {
        let mut spec = ProcessSpec::argv(["agent"]);
        spec.group = Some(agents.clone());
        ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
            node.clone(),
            spec,
            Timestamp::from_millis(1),
        )
    });
    for r in [&low, &high] {
        store.create(r).await.expect("create");
    }

    let first = members.join(&candidate(&node, 1)).await.expect("join");
    let dying = daemon(first).await;
    assert!(dying.take(low.id(), &agents, 1).await.expect("ask"));
    assert!(
        !dying.take(high.id(), &agents, 1).await.expect("ask"),
        "the grant holds while its daemon does"
    );
    let other = RedisClaims::connect(&redis_url(), &prefix, NodeId::new("beta").expect("node"))
        .await
        .expect("connect");
    assert!(
        !other.take(high.id(), &agents, 1).await.expect("ask"),
        "and on every node"
    );

    // The daemon is killed before it writes `low`'s start; the next one
    // claims the node (its lease had lapsed, or the first left).
    members.leave(&node, first).await.expect("leave");
    let second = members
        .join(&candidate(&node, 2))
        .await
        .expect("claimed again");
    let next = daemon(second).await;
    assert!(
        next.take(high.id(), &agents, 1).await.expect("ask"),
        "the dead daemon's grant holds no slot"
    );
    assert!(
        !next.take(low.id(), &agents, 1).await.expect("ask"),
        "the record granted before asks anew, and the slot is taken"
    );
    assert!(next.take(high.id(), &agents, 1).await.expect("ask"));
}

/// The bytes `server` has sent to all its clients so far.
async fn sent_by(server: &RedisServer) -> u64 {
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await
        .expect("INFO stats");
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_net_output_bytes in INFO stats")
}

/// A tail bounded in bytes reads only the newest part of a long line: the
/// server sends little more than the bound, where an unbounded tail of the
/// same line sends all of it. (The contract checks what a tail returns; this
/// checks what it costs, which the answer alone would not show.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_tail_reads_only_the_newest_part_of_a_long_line() {
    let server = RedisServer::start();
    let output = RedisOutput::connect(&server.url(), "tail", 1 << 20)
        .await
        .expect("connect");
    let id = record(7).id();
    let chunk = vec![b'x'; 64 << 10];
    for _ in 0..16 {
        output
            .append(id, Stream::Stdout, &chunk)
            .await
            .expect("append");
    }
    let before = sent_by(&server).await;
    let tail = output
        .tail(id, StreamSelect::Both, 20, 1024)
        .await
        .expect("a bounded tail");
    let bounded = sent_by(&server).await - before;
    assert_eq!(tail.text(), "x".repeat(1024));
    assert!(tail.truncated);

    let before = sent_by(&server).await;
    let whole = output
        .tail(id, StreamSelect::Both, 20, usize::MAX)
        .await
        .expect("an unbounded tail");
    let unbounded = sent_by(&server).await - before;
    assert_eq!(whole.text().len(), 1 << 20, "the whole line is kept");
    assert!(
        bounded < 128 << 10,
        "a tail bounded to 1 KiB had the server send {bounded} bytes"
    );
    assert!(
        unbounded >= 1 << 20,
        "an unbounded tail had the server send {unbounded} bytes"
    );
}
