//! A request that a manager's death cannot leave half known.
//!
//! Each spec of a request carries the request's id and its place in it
//! ([`RequestRef`]). If the connection breaks during the request (the
//! daemon died), the caller's `reconnect` gives a manager again (the next
//! daemon), which is asked which of the request's processes exist; only the
//! rest are submitted again, up to [`RESUBMITS`] times. Each process is
//! created once, and every one is answered.

use std::future::Future;
use std::sync::Arc;

use bpm_domain::{ListFilter, ProcessId, ProcessRecord, ProcessSpec, RequestRef};

use bpm_ports::{ManagerError, ProcessManager};

/// How many times a request is taken up again after its connection broke.
pub const RESUBMITS: usize = 3;

/// What a request's answer holds for each process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// One record, for one spec (`start`).
    One,
    /// A record per spec (`start_many`).
    Records,
    /// An id per spec (`start_many_ids`).
    Ids,
}

/// One process a request created.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// Its record.
    Record(ProcessRecord),
    /// Its id.
    Id(ProcessId),
}

/// Submits `specs` as request `request` (an id the caller chose, new for
/// each request; see the module's documentation) to `manager`; `reconnect`
/// is called with why the connection broke, and gives the manager to go on
/// with. Returns the manager in use at the end and each spec's result, in
/// order.
///
/// # Errors
/// What `reconnect` returns, a broken connection after [`RESUBMITS`] tries,
/// or any other error of the request as a whole.
pub async fn submit<R, F>(
    manager: Arc<dyn ProcessManager>,
    mut reconnect: R,
    request: uuid::Uuid,
    specs: Vec<ProcessSpec>,
    answer: Wanted,
) -> Result<
    (
        Arc<dyn ProcessManager>,
        Vec<Result<Submitted, ManagerError>>,
    ),
    ManagerError,
>
where
    R: FnMut(String) -> F,
    F: Future<Output = Result<Arc<dyn ProcessManager>, ManagerError>>,
{
    let specs: Vec<ProcessSpec> = specs
        .into_iter()
        .enumerate()
        .map(|(index, mut spec)| {
            spec.request = Some(RequestRef {
                id: request,
                index: u32::try_from(index).unwrap_or(u32::MAX),
            });
            spec
        })
        .collect();
    let mut results: Vec<Option<Result<Submitted, ManagerError>>> =
        specs.iter().map(|_| None).collect();
    let mut manager = manager;
    let mut broken = 0;
    loop {
        let once = submit_once(&*manager, &specs, &mut results, request, answer, broken > 0);
        match once.await {
            Ok(()) => break,
            Err(ManagerError::Connection(why)) if broken < RESUBMITS => {
                broken += 1;
                manager = reconnect(why).await?;
            }
            Err(e) => return Err(e),
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or(Err(ManagerError::ShutDown)))
        .collect();
    Ok((manager, results))
}

/// One try of [`submit`]: after a broken connection (`ask`), first learns
/// which of the request's processes exist; then submits the others.
async fn submit_once(
    m: &dyn ProcessManager,
    specs: &[ProcessSpec],
    results: &mut [Option<Result<Submitted, ManagerError>>],
    request: uuid::Uuid,
    answer: Wanted,
    ask: bool,
) -> Result<(), ManagerError> {
    if ask {
        let filter = ListFilter {
            request: Some(request),
            ..ListFilter::default()
        };
        for record in m.list(filter).await? {
            let Some(index) = record.spec().request.map(|r| r.index as usize) else {
                continue;
            };
            if let Some(slot @ None) = results.get_mut(index) {
                *slot = Some(Ok(match answer {
                    Wanted::Ids => Submitted::Id(record.id()),
                    Wanted::One | Wanted::Records => Submitted::Record(record),
                }));
            }
        }
    }
    let todo: Vec<usize> = (0..specs.len()).filter(|&i| results[i].is_none()).collect();
    if todo.is_empty() {
        return Ok(());
    }
    let batch: Vec<ProcessSpec> = todo.iter().map(|&i| specs[i].clone()).collect();
    let answered: Vec<Result<Submitted, ManagerError>> = match answer {
        Wanted::One => {
            let spec = batch.into_iter().next().expect("one spec");
            vec![m.start(spec).await.map(Submitted::Record)]
        }
        Wanted::Records => m
            .start_many(batch)
            .await?
            .into_iter()
            .map(|r| r.map(Submitted::Record))
            .collect(),
        Wanted::Ids => m
            .start_many_ids(batch)
            .await?
            .into_iter()
            .map(|r| r.map(Submitted::Id))
            .collect(),
    };
    // A broken connection on a single start is the request's, not the process's.
    if let [Err(ManagerError::Connection(why))] = answered.as_slice() {
        return Err(ManagerError::Connection(why.clone()));
    }
    for (i, result) in todo.into_iter().zip(answered) {
        results[i] = Some(result);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpm_domain::{NodeId, Timestamp};
    use bpm_ports::MockProcessManager;

    fn record_of(spec: ProcessSpec, n: u128) -> ProcessRecord {
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(n));
        ProcessRecord::new(id, NodeId::local(), spec, Timestamp::from_millis(1))
    }

    #[tokio::test]
    async fn a_request_cut_by_a_broken_connection_is_taken_up_without_repeats() {
        // The first manager created the first two processes, then its
        // connection broke before it answered.
        let made = std::sync::Arc::new(std::sync::Mutex::new(Vec::<ProcessSpec>::new()));
        let mut first = MockProcessManager::new();
        let seen = made.clone();
        first.expect_start_many_ids().returning(move |specs| {
            seen.lock().expect("lock").extend(specs.into_iter().take(2));
            Err(ManagerError::Connection("the daemon died".into()))
        });
        // The next one knows them, and is given the third alone.
        let mut next = MockProcessManager::new();
        let known = made.clone();
        next.expect_list().returning(move |filter| {
            assert!(filter.request.is_some(), "asked by the request's id");
            let specs = known.lock().expect("lock").clone();
            Ok(specs
                .into_iter()
                .zip(1..)
                .map(|(s, n)| record_of(s, n))
                .collect())
        });
        next.expect_start_many_ids().times(1).returning(|specs| {
            assert_eq!(
                specs.len(),
                1,
                "only what does not exist is submitted again"
            );
            assert_eq!(specs[0].request.map(|r| r.index), Some(2));
            Ok(vec![Ok(ProcessId::from_uuid(uuid::Uuid::from_u128(3)))])
        });
        let next: Arc<dyn ProcessManager> = Arc::new(next);
        let mut whys = Vec::new();
        let specs = vec![
            ProcessSpec::argv(["a"]),
            ProcessSpec::argv(["b"]),
            ProcessSpec::argv(["c"]),
        ];
        let (_, results) = submit(
            Arc::new(first),
            |why| {
                whys.push(why);
                let next = next.clone();
                async move { Ok(next) }
            },
            uuid::Uuid::from_u128(42),
            specs,
            Wanted::Ids,
        )
        .await
        .expect("the request is answered");
        let ids: Vec<u128> = results
            .into_iter()
            .map(|r| match r.expect("each process") {
                Submitted::Id(id) => id.as_uuid().as_u128(),
                Submitted::Record(r) => panic!("a record where an id was asked for: {r:?}"),
            })
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(whys, vec!["the daemon died".to_owned()]);
    }
}
