//! The store contract (`hexmarket::store_contract`), run against every backend that is
//! reachable: always the embedded store, and ScyllaDB when `HEXMARKET_SCYLLA_NODES` is set (in
//! a keyspace of its own per run). Then `hexmarket verify-store`, the same properties as a
//! command, run as operators run it.

use std::path::Path;
use std::sync::Arc;

use hexmarket::store::SharedStore;
use hexmarket::store::embedded::EmbeddedStore;
use hexmarket::store_contract::{PROPERTIES, property};
use tempfile::TempDir;

/// A backend under test and whatever must live as long as it.
struct Backend {
    store: SharedStore,
    _dir: Option<TempDir>,
}

fn embedded() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("embedded store opens");
    Backend {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

async fn scylla() -> Option<Backend> {
    let nodes = std::env::var("HEXMARKET_SCYLLA_NODES")
        .ok()
        .filter(|n| !n.trim().is_empty())?;
    static KEYSPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let keyspace = KEYSPACE
        .get_or_init(|| format!("hexmarket_test_{}", uuid::Uuid::new_v4().simple()))
        .clone();
    let settings = hexmarket::config::Settings::from_vars([
        ("HEXMARKET_SCYLLA_NODES".to_owned(), nodes),
        ("HEXMARKET_SCYLLA_KEYSPACE".to_owned(), keyspace),
    ])
    .expect("scylla settings");
    let scylla = settings.scylla.expect("scylla configured");
    hexmarket::store::migrate::run(&scylla)
        .await
        .expect("migrations apply");
    let store = hexmarket::store::scylla::ScyllaStore::connect(&scylla)
        .await
        .expect("scylla store connects");
    Some(Backend {
        store: Arc::new(store),
        _dir: None,
    })
}

/// Says once per run, past the test harness's output capture, that ScyllaDB was skipped.
fn announce_skip() {
    use std::io::Write as _;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no ScyllaDB (set HEXMARKET_SCYLLA_NODES to run the store contract against it)"
        );
    });
}

/// Checks the library's property `name` against `store`; fails the test with its verdict.
async fn holds(name: &str, store: SharedStore) {
    let property = property(name).unwrap_or_else(|| panic!("no store property named {name}"));
    let verdict = property.check(store).await;
    assert!(verdict.held(), "{verdict}");
    println!("{verdict}");
}

/// One test per property and backend, so each runs, fails and is filtered on its own.
macro_rules! contract {
    ($($property:ident),* $(,)?) => {
        mod embedded_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $property() {
                    let backend = super::embedded();
                    super::holds(stringify!($property), backend.store.clone()).await;
                }
            )*
        }
        mod scylla_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $property() {
                    let Some(backend) = super::scylla().await else {
                        super::announce_skip();
                        return;
                    };
                    super::holds(stringify!($property), backend.store.clone()).await;
                }
            )*
        }

        #[test]
        fn every_property_of_the_contract_has_a_test_here() {
            let tested = [$(stringify!($property)),*];
            let named: Vec<&str> = PROPERTIES.iter().map(|p| p.name).collect();
            assert_eq!(named, tested);
        }
    };
}

contract!(
    schema_is_agreed_and_has_every_table,
    rows_round_trip_with_versions,
    conditional_writes_conflict_with_the_current_row,
    partitions_scan_in_clustering_order_and_page,
    whole_tables_page_without_gaps_or_repeats,
    concurrent_writers_lose_no_update,
    append_tables_take_plain_writes_only,
    batches_are_written_whole_or_not_at_all,
    rows_expire_after_their_ttl,
    concurrent_reservations_never_oversell,
    expired_reservations_return_their_stock,
    commits_are_idempotent_and_reduce_stock,
    releasing_after_a_commit_does_not_unsell,
    multi_product_reservations_are_all_or_nothing,
    concurrent_multi_product_reservations_leave_no_stray_holds,
    history_includes_adjustments_the_log_missed,
    idempotency_keys_replay_the_first_answer_and_refuse_other_requests,
    concurrent_requests_with_one_key_run_once,
    an_abandoned_claim_is_taken_over_after_its_lease,
    legacy_email_rows_are_backfilled_and_shared_mailboxes_reported,
);

/// Runs `hexmarket verify-store` on the data directory `dir` with `vars` set; its exit code and
/// standard output.
async fn verify_store(dir: &Path, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = crate::admin_cli::hexmarket(dir, 0)
        .arg("verify-store")
        .envs(vars.iter().copied())
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[tokio::test]
async fn verify_store_reports_every_property_of_the_embedded_store_and_leaves_the_data_dir_as_it_was()
 {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "live data").unwrap();

    let started = std::time::Instant::now();
    let (code, out) = verify_store(dir.path(), &[]).await;

    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("verify-store: embedded store in the scratch directory "),
        "{out}"
    );
    for property in PROPERTIES {
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(property.name))
            .unwrap_or_else(|| panic!("no line for {}:\n{out}", property.name));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[1], "ok", "{line}");
        assert!(words[2].parse::<f64>().is_ok() && words[3] == "s", "{line}");
        assert!(words.len() > 4, "a detail: {line}");
    }
    let summary = lines.last().unwrap();
    assert!(
        summary.starts_with(&format!(
            "{n} properties: {n} ok, 0 FAILED, in ",
            n = PROPERTIES.len()
        )) && summary.ends_with("scratch removed"),
        "{out}"
    );
    assert_eq!(lines.len(), PROPERTIES.len() + 2, "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));

    // The scratch directory is gone and nothing else was touched.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["keep.txt"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "live data"
    );
}

#[tokio::test]
async fn verify_store_fails_when_the_configured_scylladb_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let nodes = format!("127.0.0.1:{port}");
    let (code, out) = verify_store(dir.path(), &[("HEXMARKET_SCYLLA_NODES", &nodes)]).await;

    assert_eq!(code, Some(1), "{out}");
    assert!(!out.contains(" ok "), "no property can hold: {out}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing is left in the data directory"
    );
}
