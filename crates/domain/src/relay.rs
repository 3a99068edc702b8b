//! One stdio MCP server shared by many clients (`bpm mcp-run --shared`):
//! the relay's rules, sans I/O.
//!
//! The relay reads one JSON-RPC message per line from each caller and from
//! the server, and answers with [`RelayAction`]s. A caller's request goes
//! to the server under an id of the relay's own, and its answer back to
//! that caller under the id it chose; so does a progress token. The server
//! is initialized once: the first caller's `initialize` goes through, and
//! every later one is answered with the same result. A notification from
//! the server goes to the caller it belongs to (by progress token), or to
//! every caller. A request from the server to a client (sampling,
//! elicitation, roots) is per-client state a shared server cannot have: it
//! is answered with an error naming why, and noted. A line from the server
//! that is not JSON-RPC ends the server: callers cannot be told apart
//! without it.
//!
//! When the last caller leaves, the relay asks for a timer
//! ([`RelayAction::ArmGrace`]); if no caller came back when it fires
//! ([`RelayEvent::GraceOver`] with the same generation), the server ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

/// A caller, as the I/O around the relay numbers them.
pub type CallerId = u64;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RelayEvent<'a> {
    /// A caller connected.
    Joined(CallerId),
    /// A caller wrote a line (without its newline).
    FromCaller(CallerId, &'a str),
    /// The server wrote a line (without its newline).
    FromServer(&'a str),
    /// A caller went away.
    Left(CallerId),
    /// The timer of [`RelayAction::ArmGrace`] with this generation fired.
    GraceOver(u64),
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAction {
    /// Write this line (a newline follows) to the server.
    ToServer(String),
    /// Write this line to that caller.
    ToCaller(CallerId, String),
    /// Start a timer of the grace, then give [`RelayEvent::GraceOver`]
    /// with this generation.
    ArmGrace(u64),
    /// End the server, for this reason.
    EndServer(String),
    /// Note this (the server's record keeps it).
    Note(String),
}

/// Where the one `initialize` stands.
#[derive(Debug, Clone, PartialEq)]
enum Init {
    /// Not asked yet.
    NotSent,
    /// Sent under the relay's id, with the callers waiting for it.
    Pending(u64, Vec<(CallerId, Value)>),
    /// Answered: every later caller gets this result.
    Done(Value),
}

/// The relay's state.
#[derive(Debug, Clone)]
pub struct Relay {
    callers: BTreeSet<CallerId>,
    init: Init,
    initialized_sent: bool,
    /// The relay's request ids, to the caller and the id it chose.
    pending: HashMap<u64, (CallerId, Value)>,
    /// The relay's progress tokens, to the caller and the token it chose.
    progress: BTreeMap<String, (CallerId, Value)>,
    next_id: u64,
    generation: u64,
    server_lines: u64,
}

impl Default for Relay {
    fn default() -> Self {
        Relay::new()
    }
}

fn line(value: &Value) -> String {
    value.to_string()
}

fn error_line(id: &Value, code: i64, message: &str) -> String {
    line(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
}

impl Relay {
    /// A relay with no caller and a server not yet initialized.
    pub fn new() -> Self {
        Relay {
            callers: BTreeSet::new(),
            init: Init::NotSent,
            initialized_sent: false,
            pending: HashMap::new(),
            progress: BTreeMap::new(),
            next_id: 1,
            generation: 0,
            server_lines: 0,
        }
    }

    /// How many callers are connected.
    pub fn callers(&self) -> usize {
        self.callers.len()
    }

    /// What `input` calls for.
    pub fn handle(&mut self, input: RelayEvent<'_>) -> Vec<RelayAction> {
        match input {
            RelayEvent::Joined(c) => {
                if self.callers.is_empty() {
                    // A timer armed before is void.
                    self.generation += 1;
                }
                self.callers.insert(c);
                Vec::new()
            }
            RelayEvent::FromCaller(c, text) => self.caller_said(c, text),
            RelayEvent::FromServer(text) => self.server_said(text),
            RelayEvent::Left(c) => self.left(c),
            RelayEvent::GraceOver(g) => {
                if g == self.generation && self.callers.is_empty() {
                    vec![RelayAction::EndServer(
                        "its last caller left, and none came back within the grace".into(),
                    )]
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn caller_said(&mut self, c: CallerId, text: &str) -> Vec<RelayAction> {
        if !self.callers.contains(&c) || text.trim().is_empty() {
            return Vec::new();
        }
        let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(text) else {
            return vec![RelayAction::ToCaller(
                c,
                error_line(
                    &Value::Null,
                    -32700,
                    "not a JSON-RPC message (one object per line)",
                ),
            )];
        };
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = message.get("id").cloned();
        match (method.as_deref(), id) {
            (Some("initialize"), Some(id)) => self.initialize(c, id, message),
            (Some(_), Some(id)) => {
                let ours = self.take_id();
                self.pending.insert(ours, (c, id));
                message.insert("id".into(), json!(ours));
                self.swap_progress_token(c, ours, &mut message);
                vec![RelayAction::ToServer(line(&Value::Object(message)))]
            }
            (Some("notifications/initialized"), None) => {
                if self.initialized_sent || !matches!(self.init, Init::Done(_)) {
                    return Vec::new();
                }
                self.initialized_sent = true;
                vec![RelayAction::ToServer(line(&Value::Object(message)))]
            }
            (Some("notifications/cancelled"), None) => {
                let asked = message
                    .get("params")
                    .and_then(|p| p.get("requestId"))
                    .cloned();
                let ours = asked.and_then(|asked| {
                    self.pending
                        .iter()
                        .find(|(_, (who, id))| *who == c && *id == asked)
                        .map(|(ours, _)| *ours)
                });
                let Some(ours) = ours else {
                    return Vec::new();
                };
                self.pending.remove(&ours);
                vec![RelayAction::ToServer(cancelled(ours))]
            }
            (Some(_), None) => vec![RelayAction::ToServer(line(&Value::Object(message)))],
            // An answer to a request the relay never passed on.
            (None, _) => Vec::new(),
        }
    }

    fn initialize(
        &mut self,
        c: CallerId,
        id: Value,
        mut message: serde_json::Map<String, Value>,
    ) -> Vec<RelayAction> {
        match &mut self.init {
            Init::Done(result) => vec![RelayAction::ToCaller(
                c,
                line(&json!({"jsonrpc": "2.0", "id": id, "result": result})),
            )],
            Init::Pending(_, waiting) => {
                waiting.push((c, id));
                Vec::new()
            }
            Init::NotSent => {
                let ours = self.take_id();
                self.init = Init::Pending(ours, vec![(c, id)]);
                message.insert("id".into(), json!(ours));
                vec![RelayAction::ToServer(line(&Value::Object(message)))]
            }
        }
    }

    /// Gives a request's progress token one of the relay's own, so that
    /// two callers' tokens never meet at the server.
    fn swap_progress_token(
        &mut self,
        c: CallerId,
        ours: u64,
        message: &mut serde_json::Map<String, Value>,
    ) {
        let Some(meta) = message
            .get_mut("params")
            .and_then(|p| p.get_mut("_meta"))
            .and_then(Value::as_object_mut)
        else {
            return;
        };
        if let Some(token) = meta.remove("progressToken") {
            let relay_token = format!("bpm-relay-{ours}");
            meta.insert("progressToken".into(), json!(relay_token));
            self.progress.insert(relay_token, (c, token));
        }
    }

    fn server_said(&mut self, text: &str) -> Vec<RelayAction> {
        self.server_lines += 1;
        if text.trim().is_empty() {
            return Vec::new();
        }
        let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(text) else {
            return vec![RelayAction::EndServer(format!(
                "line {} of the server's output is not a JSON-RPC message ({} bytes): a shared \
                 server's answers cannot be routed without one",
                self.server_lines,
                text.len()
            ))];
        };
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = message.get("id").cloned();
        match (method, id) {
            (None, Some(id)) => self.answer(&id, message),
            (Some(method), Some(id)) => {
                if method == "ping" {
                    return vec![RelayAction::ToServer(line(
                        &json!({"jsonrpc": "2.0", "id": id, "result": {}}),
                    ))];
                }
                let why = format!(
                    "the server asked its client for {method}, which belongs to one client: a \
                     shared server cannot ask it (run it without --shared)"
                );
                vec![
                    RelayAction::ToServer(error_line(&id, -32601, &why)),
                    RelayAction::Note(why),
                ]
            }
            (Some(method), None) if method == "notifications/progress" => {
                let token = message
                    .get("params")
                    .and_then(|p| p.get("progressToken"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let Some((c, theirs)) = token.and_then(|t| self.progress.get(&t).cloned()) else {
                    return Vec::new();
                };
                if let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) {
                    params.insert("progressToken".into(), theirs);
                }
                vec![RelayAction::ToCaller(c, line(&Value::Object(message)))]
            }
            (Some(_), None) => {
                let text = line(&Value::Object(message));
                self.callers
                    .iter()
                    .map(|c| RelayAction::ToCaller(*c, text.clone()))
                    .collect()
            }
            (None, None) => Vec::new(),
        }
    }

    fn answer(
        &mut self,
        id: &Value,
        mut message: serde_json::Map<String, Value>,
    ) -> Vec<RelayAction> {
        let Some(ours) = id.as_u64() else {
            return Vec::new();
        };
        if let Init::Pending(init_id, _) = &self.init
            && *init_id == ours
        {
            let Init::Pending(_, waiting) = std::mem::replace(&mut self.init, Init::NotSent) else {
                return Vec::new();
            };
            if let Some(result) = message.get("result").cloned() {
                self.init = Init::Done(result);
            }
            return waiting
                .into_iter()
                .filter(|(c, _)| self.callers.contains(c))
                .map(|(c, theirs)| {
                    message.insert("id".into(), theirs);
                    RelayAction::ToCaller(c, line(&Value::Object(message.clone())))
                })
                .collect();
        }
        let relay_token = format!("bpm-relay-{ours}");
        self.progress.remove(&relay_token);
        match self.pending.remove(&ours) {
            Some((c, theirs)) if self.callers.contains(&c) => {
                message.insert("id".into(), theirs);
                vec![RelayAction::ToCaller(c, line(&Value::Object(message)))]
            }
            _ => Vec::new(),
        }
    }

    fn left(&mut self, c: CallerId) -> Vec<RelayAction> {
        if !self.callers.remove(&c) {
            return Vec::new();
        }
        let mut effects = Vec::new();
        let mut gone: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (who, _))| *who == c)
            .map(|(ours, _)| *ours)
            .collect();
        gone.sort_unstable();
        for ours in gone {
            self.pending.remove(&ours);
            effects.push(RelayAction::ToServer(cancelled(ours)));
        }
        self.progress.retain(|_, (who, _)| *who != c);
        if let Init::Pending(_, waiting) = &mut self.init {
            waiting.retain(|(who, _)| *who != c);
        }
        if self.callers.is_empty() {
            self.generation += 1;
            effects.push(RelayAction::ArmGrace(self.generation));
        }
        effects
    }
}

fn cancelled(ours: u64) -> String {
    line(&json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": ours, "reason": "the client went away"}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn to_server(effects: &[RelayAction]) -> Vec<Value> {
        effects
            .iter()
            .filter_map(|e| match e {
                RelayAction::ToServer(l) => Some(serde_json::from_str(l).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn to_caller(effects: &[RelayAction], c: CallerId) -> Vec<Value> {
        effects
            .iter()
            .filter_map(|e| match e {
                RelayAction::ToCaller(who, l) if *who == c => {
                    Some(serde_json::from_str(l).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    fn init(id: u64) -> String {
        json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}).to_string()
    }

    #[test]
    fn the_server_is_initialized_once_and_every_caller_answered_from_it() {
        let mut r = Relay::new();
        r.handle(RelayEvent::Joined(1));
        r.handle(RelayEvent::Joined(2));
        let sent = to_server(&r.handle(RelayEvent::FromCaller(1, &init(0))));
        assert_eq!(sent.len(), 1);
        // The second caller waits for the first's answer.
        assert!(r.handle(RelayEvent::FromCaller(2, &init(7))).is_empty());
        let answer =
            json!({"jsonrpc": "2.0", "id": sent[0]["id"], "result": {"serverInfo": {"name": "s"}}});
        let effects = r.handle(RelayEvent::FromServer(&answer.to_string()));
        assert_eq!(to_caller(&effects, 1)[0]["id"], json!(0));
        assert_eq!(to_caller(&effects, 2)[0]["id"], json!(7));
        // `initialized` reaches the server once.
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
        assert_eq!(
            to_server(&r.handle(RelayEvent::FromCaller(1, &note))).len(),
            1
        );
        assert!(r.handle(RelayEvent::FromCaller(2, &note)).is_empty());
        // A later caller is answered at once, by the relay.
        r.handle(RelayEvent::Joined(3));
        let effects = r.handle(RelayEvent::FromCaller(3, &init(1)));
        assert!(to_server(&effects).is_empty());
        assert_eq!(
            to_caller(&effects, 3)[0]["result"]["serverInfo"]["name"],
            "s"
        );
    }

    #[test]
    fn a_server_line_that_is_not_json_rpc_ends_it_without_quoting_it() {
        let mut r = Relay::new();
        let effects = r.handle(RelayEvent::FromServer("hello secret world"));
        let [RelayAction::EndServer(why)] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        assert!(why.contains("line 1") && !why.contains("secret"), "{why}");
    }

    #[test]
    fn a_request_to_a_client_is_refused_and_noted() {
        let mut r = Relay::new();
        r.handle(RelayEvent::Joined(1));
        let ask =
            json!({"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}});
        let effects = r.handle(RelayEvent::FromServer(&ask.to_string()));
        let sent = to_server(&effects);
        assert_eq!(sent[0]["id"], 5);
        assert!(
            sent[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--shared")
        );
        assert!(effects.iter().any(|e| matches!(e, RelayAction::Note(_))));
        assert!(to_caller(&effects, 1).is_empty());
    }

    #[test]
    fn the_last_caller_gone_for_the_grace_ends_the_server_unless_one_came_back() {
        let mut r = Relay::new();
        r.handle(RelayEvent::Joined(1));
        let effects = r.handle(RelayEvent::Left(1));
        let [RelayAction::ArmGrace(g)] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        r.handle(RelayEvent::Joined(2));
        assert!(r.handle(RelayEvent::GraceOver(*g)).is_empty());
        let effects = r.handle(RelayEvent::Left(2));
        let [RelayAction::ArmGrace(g2)] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        assert!(matches!(
            r.handle(RelayEvent::GraceOver(*g2)).as_slice(),
            [RelayAction::EndServer(_)]
        ));
    }

    #[test]
    fn a_caller_that_leaves_has_its_requests_cancelled_at_the_server() {
        let mut r = Relay::new();
        r.handle(RelayEvent::Joined(1));
        r.handle(RelayEvent::Joined(2));
        let ask = json!({"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"_meta": {"progressToken": 9}}});
        let sent = to_server(&r.handle(RelayEvent::FromCaller(1, &ask.to_string())));
        assert_eq!(sent[0]["params"]["_meta"]["progressToken"], "bpm-relay-1");
        // Progress comes back under the caller's own token.
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "bpm-relay-1", "progress": 1}});
        let effects = r.handle(RelayEvent::FromServer(&progress.to_string()));
        assert_eq!(to_caller(&effects, 1)[0]["params"]["progressToken"], 9);
        assert!(to_caller(&effects, 2).is_empty());
        let effects = r.handle(RelayEvent::Left(1));
        let sent = to_server(&effects);
        assert_eq!(sent[0]["method"], "notifications/cancelled");
        assert_eq!(sent[0]["params"]["requestId"], sent_id(1));
        // Its late answer goes nowhere.
        let late = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        assert!(
            r.handle(RelayEvent::FromServer(&late.to_string()))
                .is_empty()
        );
    }

    fn sent_id(n: u64) -> Value {
        json!(n)
    }

    proptest! {
        /// However callers' requests and the server's answers interleave,
        /// every caller gets exactly the answers to its own requests,
        /// under its own ids, and nobody else's.
        #[test]
        fn every_caller_gets_its_own_answers_under_its_own_ids(
            asks in proptest::collection::vec((0u64..4, 0i64..6), 1..40),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let mut r = Relay::new();
            for c in 0..4 {
                r.handle(RelayEvent::Joined(c));
            }
            // Each caller's ids may clash with another's.
            let mut at_server: Vec<(Value, CallerId, Value)> = Vec::new();
            for (n, (c, id)) in asks.iter().enumerate() {
                let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"n": n}});
                for sent in to_server(&r.handle(RelayEvent::FromCaller(*c, &body.to_string()))) {
                    at_server.push((sent["id"].clone(), *c, json!(id)));
                }
            }
            let ids: BTreeSet<String> = at_server.iter().map(|(i, _, _)| i.to_string()).collect();
            prop_assert_eq!(ids.len(), at_server.len(), "the relay's ids are unique");
            // The server answers in any order.
            let mut left = at_server.clone();
            let mut picks = order.into_iter();
            while !left.is_empty() {
                let at = picks.next().map_or(0, |i| i.index(left.len()));
                let (ours, c, theirs) = left.remove(at);
                let answer = json!({"jsonrpc": "2.0", "id": ours, "result": {"for": ours}});
                let effects = r.handle(RelayEvent::FromServer(&answer.to_string()));
                prop_assert_eq!(effects.len(), 1);
                let got = to_caller(&effects, c);
                prop_assert_eq!(got.len(), 1);
                prop_assert_eq!(&got[0]["id"], &theirs);
                prop_assert_eq!(&got[0]["result"]["for"], &ours);
            }
        }
    }
}
