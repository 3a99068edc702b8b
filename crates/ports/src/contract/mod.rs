//! Contract suites: one set of cases that every adapter of a port must pass.
//!
//! Each case is a `pub async fn` taking the adapter under test; the macros
//! stamp one named `#[tokio::test]` per case, so a failure names the case and
//! the adapter. The calling crate needs `tokio` (with `macros` and `rt-multi-thread`).
//! In a test file, one line runs a whole suite on a store of your own:
//! `bpm_ports::store_contract_tests!(Arc::new(MyStore::new()) as Arc<dyn
//! ProcessStore>);` (`bpm_adapters::memory`'s docs hold that line,
//! compiled, on the in-memory store, and `crates/adapters/tests/contract.rs`
//! runs it on every store bpm has). A case can also be called by itself,
//! on any store:
//!
//! ```
//! use std::sync::Arc;
//! use bpm_ports::ProcessStore;
//!
//! async fn my_store_keeps_what_it_is_given(store: Arc<dyn ProcessStore>) {
//!     bpm_ports::contract::store::create_then_get(store).await;
//! }
//! ```

pub mod claims;
pub mod commands;
pub mod events;
pub mod failover;
pub mod host;
pub mod manager;
pub mod membership;
pub mod output;
pub mod spawner;
pub mod store;
pub mod usage;

/// One test per case of the claim queue's contract; `$make` gives a
/// [`claims::Subject`]: a fresh, empty store with the queues of nodes
/// `alpha` and `beta` on it.
#[macro_export]
macro_rules! claims_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(claims, $make;
            nothing_to_claim_is_none,
            claims_in_priority_then_submission_order,
            racing_claims_take_each_record_once,
            labels_slots_and_groups_decide,
            unwritten_claims_are_given_back,
            one_record_is_claimed_by_id,
            a_deleted_record_leaves_the_queue,
            cluster_slots_count_every_node,
        );
    };
}

/// One test per case of the command bus contract; `$make` gives a
/// [`commands::Subject`]: node `alpha`'s bus and daemons of node `beta`,
/// both alive, on one fresh backend.
#[macro_export]
macro_rules! commands_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(commands, $make;
            a_command_reaches_its_node_and_its_answer_comes_back,
            a_node_that_is_not_alive_is_refused_at_once,
            a_command_no_daemon_takes_is_withdrawn_at_its_bound,
            a_command_whose_daemon_died_is_never_carried_out_twice,
            a_command_answered_twice_leaves_nothing_queued,
        );
    };
}

/// One test per case of the event bus contract; `$make` gives an
/// [`events::Subject`]: two nodes' buses on one fresh backend.
#[macro_export]
macro_rules! events_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(events, $make;
            publishing_to_nobody_is_not_an_error,
            every_nodes_events_reach_every_nodes_subscribers_once,
            recent_and_a_subscription_leave_no_gap,
        );
    };
}

/// One test per case of the failover contract; `$make` gives a
/// [`failover::Subject`]: a fresh, empty store with leases and failover on
/// it, on real time.
#[macro_export]
macro_rules! failover_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(failover, $make;
            a_lost_nodes_record_is_replaced_once_and_only_while_lost,
        );
    };
}

/// Stamps one test per case of a suite. Internal to the suite macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_stamp {
    ($suite:ident, $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let subject = $make;
                $crate::contract::$suite::$case(subject).await;
            }
        )*
    };
}

/// One test per case of the store contract; `$make` is an expression giving
/// an `Arc<dyn ProcessStore>` (it may use `.await`), evaluated once per test
/// for a fresh, empty store.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(store, $make;
            create_then_get,
            create_existing_is_already_exists,
            get_missing_is_not_found,
            update_with_expected_version,
            unflushed_update_is_an_update,
            batch_writes_report_one_by_one,
            unsynced_batch_is_checked_at_once_and_read_after_sync,
            update_with_stale_version_conflicts,
            racing_writers_exactly_one_wins,
            update_missing_is_not_found,
            delete_removes,
            delete_missing_is_not_found,
            list_filters_by_every_field,
            filters_follow_updates,
            list_orders_by_id_and_pages,
            list_returns_copies,
            large_metadata_and_non_ascii_text,
            ten_thousand_records,
            a_name_is_created_once_among_live_records,
        );
    };
}

/// One test per case of the store contract that opens a store again;
/// `$make` is an expression giving an `Arc<dyn store::Reopen>` (it may use
/// `.await`) on a fresh, empty backend. For every store that keeps its
/// records past its handle, beside [`store_contract_tests`].
#[macro_export]
macro_rules! store_reopen_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(store, $make;
            records_outlive_a_reopen,
        );
    };
}

/// One test per case of the manager contract; `$make` is an expression
/// giving a fresh [`manager::Subject`] (it may use `.await`) with no records.
#[macro_export]
macro_rules! manager_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(manager, $make;
            a_start_is_listed_and_ends_with_its_own_exit_code,
            every_call_on_an_unknown_id_is_not_found,
            an_invalid_spec_is_refused_by_name_and_creates_nothing,
            an_unknown_dependency_or_parent_is_refused,
            a_batch_answers_each_spec_in_order,
            a_requests_records_are_found_by_its_id,
            a_wait_that_runs_out_of_time_says_what_is_still_live,
            a_stop_ends_the_whole_tree_before_it_returns,
            stopping_a_level_stops_every_record_on_it,
            pause_and_resume_refuse_the_wrong_moves,
            output_reads_the_same_twice,
            a_wait_for_output_answers_when_the_process_writes,
            input_reaches_a_process_with_a_pipe,
            a_tracked_operation_ends_once,
            remove_refuses_a_live_record,
            a_restart_is_a_new_record_that_points_back,
            a_subscriber_sees_a_process_from_start_to_end,
            recent_events_hold_the_past_in_order,
            resource_usage_lists_running_trees,
            a_fencing_token_is_current_while_its_attempt_runs,
            a_port_goes_to_one_live_record,
            a_record_ends_when_its_owner_is_gone,
        );
    };
}

/// One test per case of the output-store contract; `$make` gives an
/// `Arc<dyn OutputStore>` whose cap per process is
/// [`output::CONTRACT_CAP`](crate::contract::output::CONTRACT_CAP) bytes.
#[macro_export]
macro_rules! output_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(output, $make;
            append_then_read,
            cursor_reads_only_what_is_new,
            reading_consumes_nothing,
            streams_are_selected_and_ordered,
            tail_returns_last_lines,
            tail_keeps_the_newest_max_bytes,
            max_bytes_truncates_and_resumes,
            non_utf8_bytes_are_kept,
            cap_drops_oldest_and_reports_skipped,
            kept_output_is_always_the_newest_without_gaps,
            unknown_process_reads_empty,
            owned_appends_keep_order_and_return_the_buffer,
            remove_forgets,
        );
    };
}

/// One test per case of the spawner contract; `$make` gives an
/// `Arc<dyn SpawnerHarness>` with a fresh spawner.
#[macro_export]
macro_rules! spawner_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(spawner, $make;
            reports_exit_codes,
            reports_death_by_signal,
            kill_ends_what_ignores_term,
            missing_program_is_program_not_found,
            missing_cwd_is_cwd_not_found,
            unreadable_env_file_is_refused,
            signal_after_exit_is_ok,
            captures_both_streams,
            concurrent_spawns_get_distinct_pids,
            input_to_unknown_process_is_refused,
            handed_over_requests_start_on_exits_in_order,
            only_processes_that_hand_over_start_the_next,
            a_start_on_an_exit_is_not_made_twice,
            a_start_asked_again_is_not_made_twice,
            a_start_handed_over_again_is_not_made_twice,
            watching_again_leaves_what_was_not_taken_over_alone,
        );
    };
}

/// One test per case of the resource-sampler contract; `$make` gives an
/// `Arc<dyn ResourceSampler>`.
#[macro_export]
macro_rules! usage_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(usage, $make;
            ended_and_unknown_trees_are_left_out,
            answers_follow_the_targets,
            a_childs_memory_counts_toward_its_tree,
            a_childs_cpu_counts_toward_its_tree,
            a_listeners_port_is_found,
        );
    };
}

/// One test per case of the host contract; `$make` gives an
/// `Arc<dyn Host>`.
#[macro_export]
macro_rules! host_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(host, $make;
            a_listened_port_is_not_free,
            auto_offers_distinct_free_ports,
            a_range_is_offered_in_order,
            owners_are_known_and_their_end_noticed,
            changes_under_a_watch_are_reported,
            a_missing_path_is_not_watched,
            watches_are_apart,
        );
    };
}

/// One test per case of the membership contract; `$make` is an expression
/// giving an `Arc<dyn Membership>` on real time (it may use `.await`),
/// evaluated once per test for a fresh, empty membership.
#[macro_export]
macro_rules! membership_contract_tests {
    ($make:expr) => {
        $crate::__contract_stamp!(membership, $make;
            join_gives_an_epoch_and_the_node_is_alive,
            a_held_node_is_refused_naming_its_holder,
            a_gone_holder_on_the_same_boot_is_taken_over_at_once,
            leaving_frees_the_name_and_the_next_join_fences_the_old_epoch,
            renewing_a_node_never_joined_is_fenced,
            a_lease_lives_by_renewals_and_expires_without_them,
            a_lapsed_lease_is_swept_by_exactly_one_node,
            racing_claims_exactly_one_wins,
        );
    };
}
