//! UUID v7 ids.

use std::sync::Mutex;

use bpm_domain::ProcessId;
use bpm_ports::IdGenerator;
use uuid::Uuid;

/// Time-ordered UUID v7 ids, strictly increasing within one generator even
/// when many are made in the same millisecond.
#[derive(Debug, Default)]
pub struct UuidV7Ids {
    last: Mutex<u128>,
}

impl UuidV7Ids {
    /// A generator.
    pub fn new() -> Self {
        UuidV7Ids::default()
    }
}

impl IdGenerator for UuidV7Ids {
    fn next_id(&self) -> ProcessId {
        let fresh = Uuid::now_v7().as_u128();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bumping the random tail keeps the version and timestamp bits intact.
        let next = if fresh > *last { fresh } else { *last + 1 };
        *last = next;
        ProcessId::from_uuid(Uuid::from_u128(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_strictly_increasing() {
        let ids = UuidV7Ids::new();
        let mut prev = ids.next_id();
        for _ in 0..10_000 {
            let next = ids.next_id();
            assert!(next > prev);
            assert_eq!(next.as_uuid().get_version_num(), 7);
            prev = next;
        }
    }
}
