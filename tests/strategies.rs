//! The domain's proptest strategies (`bpm-domain`'s `proptest` feature),
//! used from outside the crate as a team embedding bpm would: what they
//! generate obeys the domain's own rules.

use std::collections::HashMap;

use bpm_domain::{
    EventKind, Input, Limits, NodeId, ProcessId, ProcessRecord, Supervisor, Timestamp, strategies,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every spec is valid, and a core takes it.
    #[test]
    fn a_generated_spec_is_valid_and_taken(spec in strategies::spec()) {
        prop_assert!(spec.validate().is_ok(), "{spec:?}");
        let mut core = Supervisor::new(NodeId::local(), Limits::default());
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(1));
        let taken = core.handle(Input::Submit { id, spec }, Timestamp::from_millis(1));
        prop_assert!(taken.is_ok(), "{:?}", taken);
    }

    /// A record in any state reads back from JSON the same, and has ended
    /// exactly when its state is final.
    #[test]
    fn a_generated_record_is_whole(record in strategies::record()) {
        let text = serde_json::to_string(&record).expect("JSON");
        let back: ProcessRecord = serde_json::from_str(&text).expect("read back");
        prop_assert_eq!(&back, &record);
        prop_assert_eq!(record.is_terminal(), record.lifecycle().ended_at().is_some());
    }

    /// The events of a core's run: each record's begin with its
    /// submission, their versions only go up, the final state's event comes
    /// once, and nothing follows it.
    #[test]
    fn generated_events_tell_each_record_in_order(events in strategies::events(4, 40)) {
        let mut last: HashMap<ProcessId, (u64, bool)> = HashMap::new();
        for e in &events {
            match last.get(&e.id) {
                None => prop_assert_eq!(e.kind, EventKind::Submitted, "{:?}", e),
                Some((version, ended)) => {
                    prop_assert!(!ended, "an event after the end: {:?}", e);
                    prop_assert!(e.version >= *version, "{:?} after version {}", e, version);
                }
            }
            let end = matches!(
                e.kind,
                EventKind::Completed
                    | EventKind::Failed
                    | EventKind::TimedOut
                    | EventKind::Cancelled
                    | EventKind::Lost
            );
            prop_assert_eq!(end, e.state.is_terminal() && e.kind != EventKind::Exited, "{:?}", e);
            last.insert(e.id, (e.version, end));
        }
    }
}
