//! A daemon's client that outlives the daemon: it connects again (through
//! a [`Connector`], which may start a daemon) when the daemon went away, so
//! a long-lived front end (`bpm mcp`, `bpm web`) survives a daemon restart
//! or upgrade.

use std::sync::Arc;

use async_trait::async_trait;
use bpm_domain::{Event, ListFilter, Percent, ProcessId, ProcessRecord, ProcessSpec, SessionId};
use bpm_ports::{
    Completion, Cursor, ManagerError, OutputChunk, OutputQuery, ProcessManager, ResourceUsage,
    StopOptions,
};
use tokio::sync::broadcast;

use super::{Connector, DaemonClient};

/// The daemon's client, reconnecting (and starting a daemon) when the daemon
/// went away, so a long-lived `bpm mcp` outlives a daemon restart or upgrade.
/// Calls that are safe to repeat (reads, waits, stop, pause, resume, remove)
/// are retried once on the new connection; the others report the lost
/// connection, since the old daemon may have carried them out.
pub struct Reconnecting {
    connect: Connector,
    client: tokio::sync::RwLock<(u64, DaemonClient)>,
    events: broadcast::Sender<Event>,
    forwarding: std::sync::atomic::AtomicBool,
    /// True while the forwarder's subscription is not yet in place at the
    /// daemon: calls wait for it (a little), so that a subscriber hears
    /// every event of what it starts right after it subscribed.
    subscribing: tokio::sync::watch::Sender<bool>,
    /// The sessions this process holds, held again on each new connection.
    holding: std::sync::Mutex<std::collections::BTreeSet<SessionId>>,
}

impl Reconnecting {
    /// Connects through `connect`, which it calls again whenever the
    /// daemon went away.
    ///
    /// # Errors
    /// What `connect` returns.
    pub async fn connect(connect: Connector) -> Result<Arc<Self>, ManagerError> {
        let client = connect().await?;
        Ok(Arc::new(Reconnecting {
            connect,
            client: tokio::sync::RwLock::new((0, client)),
            events: broadcast::channel(1024).0,
            forwarding: std::sync::atomic::AtomicBool::new(false),
            subscribing: tokio::sync::watch::channel(false).0,
            holding: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        }))
    }

    /// Holds `session` for this process, now and on every new connection
    /// (a daemon that restarted forgot it), until [`Reconnecting::release`].
    ///
    /// # Errors
    /// As [`ProcessManager::hold_session`].
    pub async fn hold(&self, session: SessionId) -> Result<(), ManagerError> {
        self.holding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(session.clone());
        self.retried(|c| {
            let s = session.clone();
            async move { c.hold_session(s, std::process::id()).await }
        })
        .await
    }

    /// Lets go of `session` for this process (its client went, though
    /// this process lives on): its records start their grace unless
    /// another process holds it.
    ///
    /// # Errors
    /// As [`ProcessManager::release_session`].
    pub async fn release(&self, session: SessionId) -> Result<(), ManagerError> {
        self.holding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&session);
        self.retried(|c| {
            let s = session.clone();
            async move { c.release_session(s, std::process::id()).await }
        })
        .await
    }

    /// Holds the sessions again on a new connection `client`.
    async fn hold_again(&self, client: &DaemonClient) {
        let held: Vec<SessionId> = self
            .holding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        for session in held {
            if let Err(e) = client.hold_session(session, std::process::id()).await {
                tracing::warn!(error = %e, "cannot hold a client's session again");
            }
        }
    }

    /// The daemon's status, on a new connection if the daemon went away.
    ///
    /// # Errors
    /// As [`DaemonClient::status`].
    pub async fn status(&self) -> Result<bpm_ports::DaemonStatus, ManagerError> {
        self.retried(|c| async move { c.status().await }).await
    }

    /// The connection to use, a new one if the daemon closed the last (it
    /// closes idle ones): no call had been sent on it, so even a call that is
    /// not safe to repeat can go.
    async fn current(&self) -> (u64, DaemonClient) {
        if *self.subscribing.borrow() {
            let mut placed = self.subscribing.subscribe();
            let _ = tokio::time::timeout(SUBSCRIBE_WITHIN, placed.wait_for(|s| !s)).await;
        }
        let (generation, client) = self.client.read().await.clone();
        if client.is_closed() && self.reconnect(generation).await.is_ok() {
            return self.client.read().await.clone();
        }
        (generation, client)
    }

    /// Replaces connection `generation` (unless another caller already did).
    async fn reconnect(&self, generation: u64) -> Result<DaemonClient, ManagerError> {
        let mut slot = self.client.write().await;
        if slot.0 == generation {
            let fresh = (self.connect)().await?;
            tracing::info!("reconnected to the bpm daemon");
            self.hold_again(&fresh).await;
            *slot = (generation + 1, fresh);
        }
        Ok(slot.1.clone())
    }

    /// Runs `call`, and once more on a new connection if the daemon went away.
    async fn retried<T, F, Fut>(&self, call: F) -> Result<T, ManagerError>
    where
        F: Fn(DaemonClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, ManagerError>>,
    {
        let (generation, client) = self.current().await;
        match call(client).await {
            Err(ManagerError::Connection(_)) => call(self.reconnect(generation).await?).await,
            other => other,
        }
    }

    /// Runs `call` once; a lost connection is replaced for the next call and reported.
    async fn once<T, F, Fut>(&self, call: F) -> Result<T, ManagerError>
    where
        F: FnOnce(DaemonClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, ManagerError>>,
    {
        let (generation, client) = self.current().await;
        match call(client).await {
            Err(ManagerError::Connection(e)) => {
                let _ = self.reconnect(generation).await;
                Err(ManagerError::Connection(format!(
                    "{e}; reconnected, but the daemon may have carried out the call: check before repeating it"
                )))
            }
            other => other,
        }
    }

    /// Forwards the daemon's events to subscribers while there are any, on
    /// a connection of its own: once the last subscriber has gone, the next
    /// event closes that connection, so the daemon sends nothing to a
    /// `bpm web` with no page open. A daemon restart moves it to the next daemon.
    fn forward(self: &Arc<Self>) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.forwarding.swap(true, SeqCst) {
            return;
        }
        self.subscribing.send_replace(true);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { return };
                let (tx, connected) = (me.events.clone(), (me.connect)().await);
                let Ok(client) = connected else {
                    drop(me);
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                };
                // The first to see a daemon restart: hold the session at once.
                me.hold_again(&client).await;
                let mut rx = client.subscribe();
                // The subscription goes out before the next call on its
                // connection, and is in place once that call is answered.
                let _ = client.recent_events().await;
                me.subscribing.send_replace(false);
                drop(me);
                loop {
                    match rx.recv().await {
                        Ok(event) => {
                            if tx.send(event).is_ok() {
                                continue;
                            }
                            // No one listens. Stop, unless a subscriber came
                            // meanwhile and found the flag still set.
                            let Some(me) = weak.upgrade() else { return };
                            me.forwarding.store(false, SeqCst);
                            if me.events.receiver_count() == 0 || me.forwarding.swap(true, SeqCst) {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
        });
    }
}

/// How long a call waits for the forwarder's subscription to be in place.
const SUBSCRIBE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// [`Reconnecting`] behind an `Arc`, as the MCP server holds its manager.
#[derive(Clone)]
pub struct ReconnectingManager(pub Arc<Reconnecting>);

#[async_trait]
impl ProcessManager for ReconnectingManager {
    async fn start(&self, spec: ProcessSpec) -> Result<ProcessRecord, ManagerError> {
        self.0.once(|c| async move { c.start(spec).await }).await
    }
    async fn track(&self, spec: ProcessSpec) -> Result<ProcessRecord, ManagerError> {
        self.0.once(|c| async move { c.track(spec).await }).await
    }
    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        self.0.retried(|c| async move { c.get(id).await }).await
    }
    async fn list(&self, filter: ListFilter) -> Result<Vec<ProcessRecord>, ManagerError> {
        self.0
            .retried(|c| {
                let f = filter.clone();
                async move { c.list(f).await }
            })
            .await
    }
    async fn progress(
        &self,
        id: ProcessId,
        percent: Percent,
        message: Option<String>,
    ) -> Result<ProcessRecord, ManagerError> {
        self.0
            .retried(|c| {
                let m = message.clone();
                async move { c.progress(id, percent, m).await }
            })
            .await
    }
    async fn complete(
        &self,
        id: ProcessId,
        result: Option<serde_json::Value>,
    ) -> Result<Completion, ManagerError> {
        self.0
            .retried(|c| {
                let r = result.clone();
                async move { c.complete(id, r).await }
            })
            .await
    }
    async fn fail(&self, id: ProcessId, error: String) -> Result<Completion, ManagerError> {
        self.0
            .retried(|c| {
                let e = error.clone();
                async move { c.fail(id, e).await }
            })
            .await
    }
    async fn stop(
        &self,
        id: ProcessId,
        options: StopOptions,
    ) -> Result<ProcessRecord, ManagerError> {
        self.0
            .retried(|c| async move { c.stop(id, options).await })
            .await
    }
    async fn stop_level(
        &self,
        level: usize,
        options: StopOptions,
    ) -> Result<Vec<ProcessRecord>, ManagerError> {
        self.0
            .retried(|c| async move { c.stop_level(level, options).await })
            .await
    }
    async fn pause(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        self.0.retried(|c| async move { c.pause(id).await }).await
    }
    async fn resume(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        self.0.retried(|c| async move { c.resume(id).await }).await
    }
    async fn restart(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        self.0.once(|c| async move { c.restart(id).await }).await
    }
    async fn wait(
        &self,
        id: ProcessId,
        timeout: Option<std::time::Duration>,
    ) -> Result<ProcessRecord, ManagerError> {
        self.0
            .retried(|c| async move { c.wait(id, timeout).await })
            .await
    }
    async fn read_output(
        &self,
        id: ProcessId,
        query: OutputQuery,
    ) -> Result<OutputChunk, ManagerError> {
        self.0
            .retried(|c| {
                let q = query.clone();
                async move { c.read_output(id, q).await }
            })
            .await
    }
    async fn wait_output(
        &self,
        id: ProcessId,
        after: Cursor,
        within: std::time::Duration,
    ) -> Result<(), ManagerError> {
        self.0
            .retried(|c| async move { c.wait_output(id, after, within).await })
            .await
    }
    async fn send_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), ManagerError> {
        self.0
            .once(|c| async move { c.send_input(id, data).await })
            .await
    }
    async fn remove(&self, id: ProcessId) -> Result<(), ManagerError> {
        self.0.retried(|c| async move { c.remove(id).await }).await
    }
    async fn resource_usage(&self) -> Result<Vec<ResourceUsage>, ManagerError> {
        self.0
            .retried(|c| async move { c.resource_usage().await })
            .await
    }
    async fn check_fence(&self, id: ProcessId, token: u64) -> Result<Option<String>, ManagerError> {
        self.0
            .retried(|c| async move { c.check_fence(id, token).await })
            .await
    }
    async fn hold_session(&self, session: SessionId, holder: u32) -> Result<(), ManagerError> {
        // What this process holds is held again after a daemon restart.
        if holder == std::process::id() {
            return self.0.hold(session).await;
        }
        self.0
            .retried(|c| {
                let s = session.clone();
                async move { c.hold_session(s, holder).await }
            })
            .await
    }
    async fn release_session(&self, session: SessionId, holder: u32) -> Result<(), ManagerError> {
        if holder == std::process::id() {
            return self.0.release(session).await;
        }
        self.0
            .retried(|c| {
                let s = session.clone();
                async move { c.release_session(s, holder).await }
            })
            .await
    }
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        let rx = self.0.events.subscribe();
        self.0.forward();
        rx
    }
    async fn recent_events(&self) -> Result<Vec<Event>, ManagerError> {
        self.0
            .retried(|c| async move { c.recent_events().await })
            .await
    }
}
