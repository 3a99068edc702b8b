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

#[test]
fn a_file_watch_is_taken_with_the_watch_feature_and_refused_by_name_without() {
    let dir = tempfile::tempdir().expect("dir");
    let watch = bpm_domain::FileWatch::new(vec![dir.path().to_path_buf()], Vec::new(), None);
    let checked = bpm_adapters::os::check_watch(&watch);
    if bpm_adapters::os::WATCHES {
        checked.expect("a build with watches takes the watch");
    } else {
        let e = checked.expect_err("a build without watches refuses it");
        assert!(
            e.contains("no file watches") && e.contains("`watch`"),
            "{e}"
        );
    }
    // A missing path is named either way.
    let gone = bpm_domain::FileWatch::new(vec![dir.path().join("gone")], Vec::new(), None);
    let e = bpm_adapters::os::check_watch(&gone).expect_err("missing");
    assert!(e.contains("gone") && e.contains("no such file"), "{e}");
}

/// A program brings a project up on its embedded engine, as `bpm up`
/// does: each service asked for as every front end asks (`Asked`), the
/// database first, the API once the database is ready; `up` again keeps
/// both; `down` stops both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_brings_a_project_up_and_down_on_its_engine() {
    use std::collections::BTreeMap;

    use bpm_domain::Until;
    use bpm_domain::project::{Project, Service, UpOptions};
    use bpm_embed::project::{self, Done};
    use bpm_embed::{Asked, Context};

    let dir = tempfile::tempdir().expect("dir");
    let bpm = bpm_embed::builder().start().await.expect("starts");
    let env = bpm_domain::Environment::from([("PATH".into(), "/usr/bin:/bin".into())]);
    let machine = bpm_adapters::os::ThisMachine;
    let ctx = Context::new(dir.path(), &env, &machine);
    let service = |name: &str, line: &str, ready: Option<&str>, after: &[&str]| {
        let asked = Asked {
            command: Some(line.into()),
            ready_pattern: ready.map(str::to_owned),
            ..Asked::default()
        };
        Service {
            name: name.to_owned(),
            spec: asked.into_spec(&ctx).expect("a spec"),
            depends_on: after
                .iter()
                .map(|d| ((*d).to_owned(), Until::Ready))
                .collect::<BTreeMap<_, _>>(),
            hash: name.to_owned(),
        }
    };
    let shop = Project {
        name: "shop".into(),
        services: vec![
            service(
                "db",
                "echo accepting; exec sleep 300",
                Some("^accepting$"),
                &[],
            ),
            service("api", "echo up; exec sleep 300", Some("^up$"), &["db"]),
        ],
    };
    shop.validate().expect("a valid project");
    let how = UpOptions::default();
    let events = bpm.subscribe();
    let steps = project::up(&bpm, &shop, "embedded", &[], &how, |_| {})
        .await
        .expect("up");
    let started: Vec<_> = steps.iter().map(|s| (s.service.as_str(), s.done)).collect();
    assert_eq!(started, [("db", Done::Started), ("api", Done::Started)]);
    project::wait_up(
        &bpm,
        &steps,
        events,
        Some(std::time::Duration::from_secs(20)),
    )
    .await
    .expect("waited")
    .expect("both ready");
    let again = project::up(&bpm, &shop, "embedded", &[], &how, |_| {})
        .await
        .expect("up again");
    assert!(again.iter().all(|s| s.done == Done::Kept), "{again:?}");
    project::down(&bpm, &shop, &[], |_| {}).await.expect("down");
    for s in &steps {
        let r = bpm.get(s.id).await.expect("a record");
        assert!(r.is_terminal(), "{} is {}", s.service, r.state());
    }
}
