//! The builder as a team that embeds bpm uses it: real processes, records
//! on the filesystem that a second engine on the same directory finds.

use bpm_embed::{EmbedError, ProcessManager, ProcessSpec, StateName};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_on_the_filesystem_runs_a_process_and_its_record_outlives_it() {
    let dir = tempfile::tempdir().expect("dir");
    let bpm = bpm_embed::builder()
        .fs_store(dir.path())
        .start()
        .await
        .expect("starts");
    let record = bpm
        .start(ProcessSpec::argv(["sh", "-c", "echo hello; exit 3"]))
        .await
        .expect("start");
    let done = bpm.wait(record.id(), None).await.expect("ends");
    assert_eq!(done.state(), StateName::Failed);
    bpm.shutdown().await;
    drop(bpm);
    let again = bpm_embed::builder()
        .fs_store(dir.path())
        .start()
        .await
        .expect("starts again");
    let kept = again.get(record.id()).await.expect("the record is kept");
    assert_eq!(kept.state(), StateName::Failed);
    assert_eq!(kept.lifecycle().exit(), done.lifecycle().exit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_opened_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let Err(e) = bpm_embed::builder().fs_store(&file).start().await else {
        panic!("a file is no store");
    };
    assert!(matches!(e, EmbedError::Store { .. }), "{e}");
    assert!(e.to_string().contains("a-file"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_keeps_everything_in_memory() {
    let bpm = bpm_embed::builder().start().await.expect("starts");
    let r = bpm.start(ProcessSpec::argv(["true"])).await.expect("start");
    let done = bpm.wait(r.id(), None).await.expect("ends");
    assert_eq!(done.state(), StateName::Completed);
}
