//! What nodes on one Redis send each other, on a real `redis-server` the
//! tests start: commands for the node that owns a record
//! (`RedisCommands`) and every node's events (`RedisEvents`), each through
//! its port's contract suite.

use std::sync::Arc;

use bpm_domain::NodeId;
use bpm_ports::CommandBus;
use bpm_redis::{RedisCommands, RedisEvents, RedisMembership};
use bpm_tests::{redis_url, unique_prefix};

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("a node name")
}

mod redis_commands {
    use super::*;
    use bpm_ports::contract::commands::Subject;

    /// Node `beta` (and `alpha`) alive on a fresh deployment.
    async fn subject() -> Subject {
        let prefix = unique_prefix();
        let membership = RedisMembership::connect(&redis_url(), &prefix)
            .await
            .expect("connect");
        bpm_ports::contract::commands::alpha_and_beta_alive(&membership).await;
        let bus = |prefix: String, name: &'static str| async move {
            Arc::new(
                RedisCommands::connect(&redis_url(), &prefix, node(name))
                    .await
                    .expect("connect"),
            ) as Arc<dyn CommandBus>
        };
        Subject {
            alpha: bus(prefix.clone(), "alpha").await,
            beta: Box::new(move || Box::pin(bus(prefix.clone(), "beta"))),
        }
    }

    bpm_ports::commands_contract_tests!(subject().await);
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
