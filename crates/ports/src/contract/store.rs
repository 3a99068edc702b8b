//! The store contract: what every [`ProcessStore`] must do.

use std::sync::Arc;

use bpm_domain::{
    GroupName, LabelKey, LabelValue, ListFilter, NodeId, ProcessId, ProcessKind, ProcessName,
    ProcessRecord, ProcessSpec, SessionId, StateName, Timestamp, Transition,
};

use crate::{ProcessStore, StoreError, StoreWrite};

fn id(n: u128) -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::from_u128(n))
}

/// A record numbered `n` whose fields vary with `n`, so filters have something to tell apart:
/// session `s{n%3}`, node `n{n%2}`, group `g{n%4}`, label `tier={n%5}`, parent 1 for n%6==0,
/// kind build for even n, and state running for n%7==0 (pending otherwise).
pub fn sample(n: u128) -> ProcessRecord {
    let mut spec = ProcessSpec::argv(["sleep", "1"]);
    spec.name = Some(ProcessName::new(format!("job {n}")).expect("valid name"));
    spec.session = Some(SessionId::new(format!("s{}", n % 3)).expect("valid session"));
    spec.group = Some(GroupName::new(format!("g{}", n % 4)).expect("valid group"));
    spec.labels.insert(
        LabelKey::new("tier").expect("valid key"),
        LabelValue::new((n % 5).to_string()).expect("valid value"),
    );
    spec.kind = if n.is_multiple_of(2) {
        ProcessKind::Build
    } else {
        ProcessKind::Custom
    };
    if n.is_multiple_of(6) {
        spec.parent = Some(id(1));
    }
    let node = NodeId::new(format!("n{}", n % 2)).expect("valid node");
    let t = Timestamp::from_millis(1_000_000 + u64::try_from(n).unwrap_or(0));
    let mut r = ProcessRecord::new(id(n), node, spec, t);
    if n.is_multiple_of(7) {
        r.apply(Transition::Start, t).expect("start");
        r.apply(Transition::Spawned { pid: 100 }, t)
            .expect("spawned");
    }
    r
}

async fn advance(store: &Arc<dyn ProcessStore>, r: &mut ProcessRecord, t: Transition) {
    let expected = r.version();
    r.apply(t, Timestamp::from_millis(2_000_000))
        .expect("legal transition");
    store.update(r, expected).await.expect("update");
}

/// A store's backend, opened again (the same folder, the same Redis keys):
/// what [`records_outlive_a_reopen`] needs. A store that keeps nothing
/// past its handle (the in-memory one) has none.
#[async_trait::async_trait]
pub trait Reopen: Send + Sync {
    /// A new handle on the backend, holding what earlier handles wrote. The
    /// case drops every earlier handle before it asks for the next.
    async fn open(&self) -> Arc<dyn ProcessStore>;
}

/// What a store took is there when it is opened again: each record at its
/// last version (an update, a batch synced), none deleted comes back, and
/// the list shows them in order. A store that keeps nothing fails here.
pub async fn records_outlive_a_reopen(backend: Arc<dyn Reopen>) {
    let store = backend.open().await;
    let (a, mut b, c, d) = (sample(21), sample(22), sample(23), sample(24));
    for r in [&a, &b, &c] {
        store.create(r).await.expect("create");
    }
    advance(&store, &mut b, Transition::Start).await;
    store.delete(c.id()).await.expect("delete");
    let batch = [StoreWrite {
        record: d.clone(),
        expected_version: None,
        durable: true,
    }];
    assert_eq!(store.write_batch_unsynced(&batch).await, [Ok(())]);
    store.sync().await.expect("sync");
    drop(store);
    let store = backend.open().await;
    assert_eq!(store.get(a.id()).await.expect("a after a reopen"), a);
    assert_eq!(store.get(b.id()).await.expect("b after a reopen"), b);
    assert_eq!(store.get(d.id()).await.expect("d after a reopen"), d);
    assert_eq!(
        store.get(c.id()).await,
        Err(StoreError::NotFound(c.id())),
        "a deleted record stays deleted"
    );
    let listed = store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(listed, [a, b, d]);
}

/// A created record reads back equal.
pub async fn create_then_get(store: Arc<dyn ProcessStore>) {
    let r = sample(7);
    store.create(&r).await.expect("create");
    assert_eq!(store.get(r.id()).await.expect("get"), r);
}

/// Creating an id twice is refused and keeps the first.
pub async fn create_existing_is_already_exists(store: Arc<dyn ProcessStore>) {
    let r = sample(1);
    store.create(&r).await.expect("create");
    let mut other = sample(1);
    other
        .apply(
            Transition::Fail { error: "x".into() },
            Timestamp::from_millis(5),
        )
        .expect("fail");
    assert_eq!(
        store.create(&other).await,
        Err(StoreError::AlreadyExists(r.id()))
    );
    assert_eq!(store.get(r.id()).await.expect("get"), r);
}

/// An unknown id is not found.
pub async fn get_missing_is_not_found(store: Arc<dyn ProcessStore>) {
    assert_eq!(store.get(id(42)).await, Err(StoreError::NotFound(id(42))));
}

/// Compare-and-set with the stored version succeeds.
pub async fn update_with_expected_version(store: Arc<dyn ProcessStore>) {
    let mut r = sample(2);
    store.create(&r).await.expect("create");
    advance(&store, &mut r, Transition::Start).await;
    advance(&store, &mut r, Transition::Spawned { pid: 9 }).await;
    let got = store.get(r.id()).await.expect("get");
    assert_eq!(got.state(), StateName::Running);
    assert_eq!(got.version(), 3);
    assert_eq!(got, r);
}

/// An unflushed update obeys compare-and-set like `update`, is read back at
/// once, and later updates (of either kind) build on it.
pub async fn unflushed_update_is_an_update(store: Arc<dyn ProcessStore>) {
    let mut r = sample(3);
    store.create(&r).await.expect("create");
    advance(&store, &mut r, Transition::Start).await;
    let mut next = r.clone();
    next.apply(Transition::Spawned { pid: 7 }, Timestamp::from_millis(9))
        .expect("spawned");
    let stale = store
        .update_unflushed(&next, 1)
        .await
        .expect_err("stale version");
    assert_eq!(
        stale,
        StoreError::Conflict {
            id: r.id(),
            expected: 1,
            actual: 2
        }
    );
    store
        .update_unflushed(&next, 2)
        .await
        .expect("unflushed update");
    assert_eq!(store.get(r.id()).await.expect("get"), next);
    let listed = store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(listed.iter().find(|x| x.id() == r.id()), Some(&next));
    let mut r = next;
    advance(&store, &mut r, Transition::Pause).await;
    let missing = sample(4);
    assert_eq!(
        store.update_unflushed(&missing, 1).await,
        Err(StoreError::NotFound(missing.id()))
    );
    store.delete(r.id()).await.expect("delete");
    assert_eq!(store.get(r.id()).await, Err(StoreError::NotFound(r.id())));
}

/// A batch of writes: each is carried out in order and reported on its own;
/// a refused one leaves the others (and its record) as they were.
pub async fn batch_writes_report_one_by_one(store: Arc<dyn ProcessStore>) {
    let existing = sample(5);
    store.create(&existing).await.expect("create");
    let (a, b) = (sample(6), sample(7));
    let mut a2 = a.clone();
    a2.apply(Transition::Start, Timestamp::from_millis(9))
        .expect("start");
    let mut a3 = a2.clone();
    a3.apply(Transition::Spawned { pid: 3 }, Timestamp::from_millis(9))
        .expect("spawned");
    let mut stale = existing.clone();
    stale
        .apply(Transition::Start, Timestamp::from_millis(9))
        .expect("start");
    let w = |record: &ProcessRecord, expected_version, durable| StoreWrite {
        record: record.clone(),
        expected_version,
        durable,
    };
    let results = store
        .write_batch(&[
            w(&a, None, true),
            w(&b, None, true),
            w(&existing, None, true),
            w(&a2, Some(1), true),
            w(&stale, Some(7), true),
            w(&a3, Some(2), false),
        ])
        .await;
    assert_eq!(
        results,
        [
            Ok(()),
            Ok(()),
            Err(StoreError::AlreadyExists(existing.id())),
            Ok(()),
            Err(StoreError::Conflict {
                id: existing.id(),
                expected: 7,
                actual: 1
            }),
            Ok(()),
        ]
    );
    assert_eq!(store.get(a.id()).await.expect("a"), a3);
    assert_eq!(store.get(b.id()).await.expect("b"), b);
    assert_eq!(store.get(existing.id()).await.expect("kept"), existing);
    assert!(store.write_batch(&[]).await.is_empty());
}

/// An unsynced batch is checked and reported as `write_batch` is; later
/// writes see it at once, and readers see it once `sync` has returned, or
/// at once through `get` or `list`, which sync what they return (`sync`
/// with nothing owed succeeds too).
pub async fn unsynced_batch_is_checked_at_once_and_read_after_sync(store: Arc<dyn ProcessStore>) {
    store.sync().await.expect("nothing to sync");
    let (a, existing) = (sample(8), sample(9));
    store.create(&existing).await.expect("create");
    let mut a2 = a.clone();
    a2.apply(Transition::Start, Timestamp::from_millis(9))
        .expect("start");
    let mut a3 = a2.clone();
    a3.apply(Transition::Spawned { pid: 4 }, Timestamp::from_millis(9))
        .expect("spawned");
    let w = |record: &ProcessRecord, expected_version, durable| StoreWrite {
        record: record.clone(),
        expected_version,
        durable,
    };
    let results = store
        .write_batch_unsynced(&[
            w(&a, None, true),
            w(&a2, Some(1), true),
            w(&existing, None, true),
        ])
        .await;
    assert_eq!(
        results,
        [
            Ok(()),
            Ok(()),
            Err(StoreError::AlreadyExists(existing.id()))
        ]
    );
    // Compare-and-set sees the unsynced version, before any sync.
    assert_eq!(
        store.write_batch_unsynced(&[w(&a3, Some(2), false)]).await,
        [Ok(())]
    );
    assert_eq!(
        store.write_batch_unsynced(&[w(&a, None, true)]).await,
        [Err(StoreError::AlreadyExists(a.id()))]
    );
    store.sync().await.expect("sync");
    assert_eq!(store.get(a.id()).await.expect("after sync"), a3);
    assert_eq!(store.get(existing.id()).await.expect("kept"), existing);
    assert!(store.write_batch_unsynced(&[]).await.is_empty());
    // A process started beside the sync asks for its record at once.
    let (b, mut b2) = (sample(10), sample(10));
    b2.apply(Transition::Start, Timestamp::from_millis(9))
        .expect("start");
    assert_eq!(
        store
            .write_batch_unsynced(&[w(&b, None, true), w(&b2, Some(1), true)])
            .await,
        [Ok(()), Ok(())]
    );
    assert_eq!(store.get(b.id()).await.expect("read before a sync"), b2);
    let c = sample(11);
    assert_eq!(
        store.write_batch_unsynced(&[w(&c, None, true)]).await,
        [Ok(())]
    );
    let listed = store.list(&ListFilter::default()).await.expect("list");
    assert!(
        listed.contains(&b2) && listed.contains(&c),
        "listed before a sync: {listed:?}"
    );
}

/// A stale version is a conflict naming both versions, and nothing changes.
pub async fn update_with_stale_version_conflicts(store: Arc<dyn ProcessStore>) {
    let mut r = sample(2);
    store.create(&r).await.expect("create");
    advance(&store, &mut r, Transition::Start).await;
    let stored = r.clone();
    let mut stale = r.clone();
    stale
        .apply(Transition::Spawned { pid: 1 }, Timestamp::from_millis(9))
        .expect("spawned");
    let err = store
        .update(&stale, 1)
        .await
        .expect_err("stale write must fail");
    assert_eq!(
        err,
        StoreError::Conflict {
            id: r.id(),
            expected: 1,
            actual: 2
        }
    );
    assert_eq!(store.get(r.id()).await.expect("get"), stored);
}

/// Of two writers racing from one version, exactly one wins.
pub async fn racing_writers_exactly_one_wins(store: Arc<dyn ProcessStore>) {
    for round in 0..20u128 {
        let r = sample(1000 + round);
        store.create(&r).await.expect("create");
        let v = r.version();
        let mut a = r.clone();
        a.apply(
            Transition::Lose {
                reason: "writer a".into(),
            },
            Timestamp::from_millis(1),
        )
        .expect("lose");
        let mut b = r.clone();
        b.apply(
            Transition::Lose {
                reason: "writer b".into(),
            },
            Timestamp::from_millis(1),
        )
        .expect("lose");
        let (s1, s2) = (store.clone(), store.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { s1.update(&a, v).await.map(|()| a) }),
            tokio::spawn(async move { s2.update(&b, v).await.map(|()| b) }),
        );
        let results = [ra.expect("task"), rb.expect("task")];
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("one loser");
        assert_eq!(
            loser,
            &StoreError::Conflict {
                id: r.id(),
                expected: v,
                actual: v + 1
            }
        );
        assert_eq!(&store.get(r.id()).await.expect("get"), winners[0]);
    }
}

/// Updating an unknown id is not found.
pub async fn update_missing_is_not_found(store: Arc<dyn ProcessStore>) {
    let r = sample(3);
    assert_eq!(store.update(&r, 1).await, Err(StoreError::NotFound(r.id())));
}

/// A deleted record is gone from get and list.
pub async fn delete_removes(store: Arc<dyn ProcessStore>) {
    let r = sample(3);
    store.create(&r).await.expect("create");
    store.create(&sample(4)).await.expect("create");
    store.delete(r.id()).await.expect("delete");
    assert_eq!(store.get(r.id()).await, Err(StoreError::NotFound(r.id())));
    let all = store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(
        all.iter().map(ProcessRecord::id).collect::<Vec<_>>(),
        [id(4)]
    );
}

/// Deleting an unknown id is not found.
pub async fn delete_missing_is_not_found(store: Arc<dyn ProcessStore>) {
    assert_eq!(store.delete(id(5)).await, Err(StoreError::NotFound(id(5))));
}

/// Every filter field selects exactly the matching records, in id order.
pub async fn list_filters_by_every_field(store: Arc<dyn ProcessStore>) {
    let all: Vec<_> = (1..=60).map(sample).collect();
    for r in &all {
        store.create(r).await.expect("create");
    }
    let expect = |pred: &dyn Fn(&ProcessRecord) -> bool| -> Vec<ProcessId> {
        all.iter()
            .filter(|r| pred(r))
            .map(ProcessRecord::id)
            .collect()
    };
    let ids = |v: Vec<ProcessRecord>| v.iter().map(ProcessRecord::id).collect::<Vec<_>>();
    let s1 = SessionId::new("s1").expect("valid");
    let f = ListFilter {
        session: Some(s1.clone()),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(store.list(&f).await.expect("list")),
        expect(&|r| r.session() == Some(&s1))
    );
    let f = ListFilter {
        states: vec![StateName::Running],
        ..ListFilter::default()
    };
    assert_eq!(
        ids(store.list(&f).await.expect("list")),
        expect(&|r| r.state() == StateName::Running)
    );
    let f = ListFilter {
        states: vec![StateName::Running, StateName::Pending],
        ..ListFilter::default()
    };
    assert_eq!(ids(store.list(&f).await.expect("list")).len(), 60);
    let f = ListFilter {
        parent: Some(id(1)),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(store.list(&f).await.expect("list")),
        expect(&|r| r.parent() == Some(id(1)))
    );
    let n1 = NodeId::new("n1").expect("valid");
    let f = ListFilter {
        node: Some(n1.clone()),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(store.list(&f).await.expect("list")),
        expect(&|r| r.node() == &n1)
    );
    let g2 = GroupName::new("g2").expect("valid");
    let f = ListFilter {
        group: Some(g2.clone()),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(store.list(&f).await.expect("list")),
        expect(&|r| r.group() == Some(&g2))
    );
    let f = ListFilter {
        kind: Some(ProcessKind::Build),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(store.list(&f).await.expect("list")),
        expect(&|r| r.spec().kind == ProcessKind::Build)
    );
    let (k, v) = (
        LabelKey::new("tier").expect("valid"),
        LabelValue::new("3").expect("valid"),
    );
    let f = ListFilter {
        labels: vec![(k.clone(), v.clone())],
        ..ListFilter::default()
    };
    assert_eq!(
        ids(store.list(&f).await.expect("list")),
        expect(&|r| r.spec().labels.get(&k) == Some(&v))
    );
    lists_what_a_person_types(store.as_ref(), &all).await;
    let f = ListFilter {
        session: Some(s1.clone()),
        group: Some(g2.clone()),
        states: vec![StateName::Pending],
        ..ListFilter::default()
    };
    assert_eq!(
        ids(store.list(&f).await.expect("list")),
        expect(&|r| r.session() == Some(&s1)
            && r.group() == Some(&g2)
            && r.state() == StateName::Pending)
    );
    let f = ListFilter {
        session: Some(SessionId::new("nobody").expect("valid")),
        ..ListFilter::default()
    };
    assert!(store.list(&f).await.expect("list").is_empty());
}

/// What a person types (the start of an id, its last digits, a name)
/// selects the records it refers to, among `all`.
async fn lists_what_a_person_types(store: &dyn ProcessStore, all: &[ProcessRecord]) {
    let ids = |v: Vec<ProcessRecord>| v.iter().map(ProcessRecord::id).collect::<Vec<_>>();
    let expect = |pred: &dyn Fn(&ProcessRecord) -> bool| -> Vec<ProcessId> {
        all.iter()
            .filter(|r| pred(r))
            .map(ProcessRecord::id)
            .collect()
    };
    for text in [
        "00000000-0000",
        "0000000000000000",
        "003c",
        "003C",
        "job 7",
        "job",
        "zz",
    ] {
        let f = ListFilter {
            refers_to: Some(text.into()),
            ..ListFilter::default()
        };
        assert_eq!(
            ids(store.list(&f).await.expect("list")),
            expect(&|r| r.id().fits(text) || r.is_named(text)),
            "{text}"
        );
    }
    let typed = |text: &str| ListFilter {
        refers_to: Some(text.into()),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(store.list(&typed("003c")).await.expect("list")),
        vec![id(60)]
    );
    assert_eq!(
        ids(store.list(&typed("job 7")).await.expect("list")),
        vec![id(7)]
    );
    assert_eq!(store.list(&typed("0000")).await.expect("list").len(), 60);
    assert!(store.list(&typed("zz")).await.expect("list").is_empty());
}

/// Filters follow a record as it changes: it leaves its old state's listing and joins the new one.
pub async fn filters_follow_updates(store: Arc<dyn ProcessStore>) {
    let mut r = sample(1);
    store.create(&r).await.expect("create");
    let in_state = |s: StateName| ListFilter {
        states: vec![s],
        ..ListFilter::default()
    };
    assert_eq!(
        store
            .list(&in_state(StateName::Pending))
            .await
            .expect("list")
            .len(),
        1
    );
    advance(&store, &mut r, Transition::Start).await;
    advance(&store, &mut r, Transition::Spawned { pid: 9 }).await;
    assert!(
        store
            .list(&in_state(StateName::Pending))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .list(&in_state(StateName::Starting))
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store
            .list(&in_state(StateName::Running))
            .await
            .expect("list"),
        vec![r.clone()]
    );
    advance(
        &store,
        &mut r,
        Transition::Exited {
            status: bpm_domain::ExitStatus::Code(0),
            limit: None,
        },
    )
    .await;
    assert_eq!(
        store
            .list(&in_state(StateName::Completed))
            .await
            .expect("list"),
        vec![r.clone()]
    );
    store.delete(r.id()).await.expect("delete");
    assert!(
        store
            .list(&in_state(StateName::Completed))
            .await
            .expect("list")
            .is_empty()
    );
    let s1 = SessionId::new("s1").expect("valid");
    assert!(
        store
            .list(&ListFilter {
                session: Some(s1),
                ..ListFilter::default()
            })
            .await
            .expect("list")
            .is_empty()
    );
}

/// Listings are ordered by id and page with `after` and `limit`, whatever the insertion order.
pub async fn list_orders_by_id_and_pages(store: Arc<dyn ProcessStore>) {
    for n in [5u128, 1, 9, 3, 7, 2, 8, 4, 6] {
        store.create(&sample(n)).await.expect("create");
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListFilter {
                after,
                limit: Some(4),
                ..ListFilter::default()
            })
            .await
            .expect("list");
        assert!(page.len() <= 4);
        if page.is_empty() {
            break;
        }
        after = page.last().map(ProcessRecord::id);
        seen.extend(page.iter().map(ProcessRecord::id));
    }
    assert_eq!(seen, (1..=9).map(id).collect::<Vec<_>>());
    let f = ListFilter {
        limit: Some(0),
        ..ListFilter::default()
    };
    assert!(store.list(&f).await.expect("list").is_empty());
}

/// What a listing returns is a copy: changing it changes nothing stored.
pub async fn list_returns_copies(store: Arc<dyn ProcessStore>) {
    store.create(&sample(1)).await.expect("create");
    let mut listed = store.list(&ListFilter::default()).await.expect("list");
    listed[0]
        .apply(Transition::Start, Timestamp::from_millis(1))
        .expect("start");
    let mut got = store.get(id(1)).await.expect("get");
    got.apply(
        Transition::Fail { error: "x".into() },
        Timestamp::from_millis(1),
    )
    .expect("fail");
    assert_eq!(store.get(id(1)).await.expect("get"), sample(1));
}

/// A record with 1 MiB of metadata and text in many scripts round-trips exactly.
pub async fn large_metadata_and_non_ascii_text(store: Arc<dyn ProcessStore>) {
    let mut spec = ProcessSpec::shell("echo 'héllo wörld — 你好 — 🚀'");
    spec.name = Some(ProcessName::new("データ移行 ✓ Ωmega").expect("valid"));
    spec.metadata.insert(
        "blob".into(),
        serde_json::Value::String("ä".repeat(512 * 1024)),
    );
    spec.metadata.insert(
        "nested".into(),
        serde_json::json!({"ключ": ["значение", 1, null, true]}),
    );
    let r = ProcessRecord::new(id(77), NodeId::local(), spec, Timestamp::from_millis(1));
    store.create(&r).await.expect("create");
    assert_eq!(store.get(r.id()).await.expect("get"), r);
    let listed = store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(listed, vec![r]);
}

/// Ten thousand records are all kept, listed in order, and filtered.
pub async fn ten_thousand_records(store: Arc<dyn ProcessStore>) {
    for n in 1..=10_000u128 {
        store.create(&sample(n)).await.expect("create");
    }
    let all = store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(all.len(), 10_000);
    assert!(all.windows(2).all(|w| w[0].id() < w[1].id()));
    let mut r = store.get(id(5000)).await.expect("get");
    let expected = r.version();
    r.apply(
        Transition::Lose {
            reason: "test".into(),
        },
        Timestamp::from_millis(3),
    )
    .expect("lose");
    store.update(&r, expected).await.expect("update");
    let f = ListFilter {
        states: vec![StateName::Lost],
        ..ListFilter::default()
    };
    assert_eq!(store.list(&f).await.expect("list"), vec![r]);
    let exited = store.get(id(7)).await.expect("get");
    assert_eq!(exited.pid(), Some(100));
}

/// A named creation answers a live record of the same name (of any node)
/// and writes nothing; an ended record leaves the name free.
pub async fn a_name_is_created_once_among_live_records(store: Arc<dyn ProcessStore>) {
    let named = |n: u128| {
        let r = sample(n);
        let mut spec = r.spec().clone();
        spec.name = Some(ProcessName::new("web").expect("valid name"));
        ProcessRecord::new(id(n), r.node().clone(), spec, r.created_at())
    };
    let mut first = named(1);
    assert_eq!(store.create_named(&first).await.expect("create"), None);
    let second = named(2);
    let live = store.create_named(&second).await.expect("create");
    assert_eq!(live.map(|r| r.id()), Some(first.id()));
    assert!(matches!(
        store.get(second.id()).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store
            .live_named(&second)
            .await
            .expect("look")
            .map(|r| r.id()),
        Some(first.id())
    );
    advance(&store, &mut first, Transition::Start).await;
    advance(
        &store,
        &mut first,
        Transition::SpawnFailed { error: "no".into() },
    )
    .await;
    assert!(first.is_terminal());
    assert_eq!(store.create_named(&second).await.expect("create"), None);
    assert_eq!(
        store
            .live_named(&named(3))
            .await
            .expect("look")
            .map(|r| r.id()),
        Some(second.id())
    );
}
