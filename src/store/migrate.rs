//! Schema migrations for ScyllaDB: `hexmarket migrate`.
//!
//! All DDL lives in `schema/` as numbered CQL templates, embedded in the binary so a deployed
//! image can migrate without the source tree. `000_keyspace.cql` creates the keyspace and the
//! `schema_migrations` ledger and is applied on every run (it is idempotent); every later file
//! is applied once, in version order, and recorded in the ledger with a SHA-256 of its text.
//! An applied file whose text changed is an error: schema history is append-only, so fix a
//! mistake with a new file.
//!
//! A file that fails half-way is not recorded and is re-run from its start next time, which is
//! why every statement in `schema/` must be idempotent (`IF NOT EXISTS`, or `ALTER TABLE …
//! WITH` table options, which set the same values again).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use ::scylla::client::session::Session;
use ::scylla::statement::{Consistency, Statement};
use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::config::ScyllaSettings;

use super::scylla::connect_session;

/// The file that creates the keyspace and the ledger; applied on every run, never recorded.
const KEYSPACE_FILE: (&str, &str) = (
    "000_keyspace.cql",
    include_str!("../../schema/000_keyspace.cql"),
);

/// How long one DDL statement may take before `migrate` gives up (re-running it is safe).
const DDL_TIMEOUT: Duration = Duration::from_secs(120);

/// Numbered schema files: version (the file name's leading number), file name, text.
/// Append only; a unit test checks this list against `schema/`.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "001_tables.cql",
        include_str!("../../schema/001_tables.cql"),
    ),
    (
        2,
        "002_auth_codes.cql",
        include_str!("../../schema/002_auth_codes.cql"),
    ),
    (
        3,
        "003_catalog.cql",
        include_str!("../../schema/003_catalog.cql"),
    ),
    (
        4,
        "004_orders.cql",
        include_str!("../../schema/004_orders.cql"),
    ),
    (
        5,
        "005_checkouts.cql",
        include_str!("../../schema/005_checkouts.cql"),
    ),
    (6, "006_live.cql", include_str!("../../schema/006_live.cql")),
    (
        7,
        "007_token_revocations.cql",
        include_str!("../../schema/007_token_revocations.cql"),
    ),
    (
        8,
        "008_notifications.cql",
        include_str!("../../schema/008_notifications.cql"),
    ),
    (
        9,
        "009_ledger.cql",
        include_str!("../../schema/009_ledger.cql"),
    ),
    (
        10,
        "010_admin.cql",
        include_str!("../../schema/010_admin.cql"),
    ),
    (
        11,
        "011_analytics.cql",
        include_str!("../../schema/011_analytics.cql"),
    ),
    (
        12,
        "012_support.cql",
        include_str!("../../schema/012_support.cql"),
    ),
    (
        13,
        "013_sign_in.cql",
        include_str!("../../schema/013_sign_in.cql"),
    ),
    (
        14,
        "014_notification_queue_by_due.cql",
        include_str!("../../schema/014_notification_queue_by_due.cql"),
    ),
];

/// Applies the schema files not yet applied and returns their names, in order. Returns an
/// empty list when the schema is up to date, so running it again is harmless.
pub async fn run(settings: &ScyllaSettings) -> anyhow::Result<Vec<String>> {
    let session = connect_session(settings, false).await?;
    let keyspace = settings.keyspace.as_str();
    let vars = Vars {
        keyspace,
        replication_factor: settings.replication_factor,
    };

    let (name, text) = KEYSPACE_FILE;
    apply_file(&session, name, text, &vars).await?;

    let applied = applied_migrations(&session, keyspace).await?;
    for version in applied.keys() {
        if !MIGRATIONS.iter().any(|(v, _, _)| v == version) {
            tracing::warn!(
                version,
                "schema_migrations records a version this binary does not know; \
                 was the schema migrated by a newer release?"
            );
        }
    }

    let mut record = Statement::new(format!(
        "INSERT INTO {keyspace}.schema_migrations (version, name, checksum, applied_at) \
         VALUES (?, ?, ?, toTimestamp(now()))"
    ));
    record.set_consistency(Consistency::Quorum);
    let record = session
        .prepare(record)
        .await
        .context("preparing the schema_migrations insert")?;

    let mut done = Vec::new();
    for &(version, name, text) in MIGRATIONS {
        let checksum = sha256_hex(text);
        if let Some(previous) = applied.get(&version) {
            if previous.checksum != checksum {
                bail!(
                    "schema/{name} was applied as version {version} ({}) with checksum {}, \
                     but the file now has checksum {checksum}; applied schema files must not \
                     change, add a new numbered file instead",
                    previous.name,
                    previous.checksum,
                );
            }
            continue;
        }

        tracing::info!(version, file = name, "applying schema file");
        apply_file(&session, name, text, &vars).await?;
        let cql_version = i32::try_from(version)
            .with_context(|| format!("schema version {version} too large"))?;
        session
            .execute_unpaged(&record, (cql_version, name, checksum.as_str()))
            .await
            .with_context(|| format!("recording schema/{name} in schema_migrations"))?;
        done.push(name.to_owned());
    }
    Ok(done)
}

/// What every scratch keyspace's name contains (`<keyspace>_verify_<random>`, made by
/// `verify-store`); [`drop_scratch_keyspace`] drops nothing else.
pub const SCRATCH_MARK: &str = "_verify_";

/// Drops a scratch keyspace and waits for the cluster to agree it is gone. Refuses a keyspace
/// whose name lacks [`SCRATCH_MARK`], so a mistake can never drop live data.
pub async fn drop_scratch_keyspace(settings: &ScyllaSettings) -> anyhow::Result<()> {
    let keyspace = settings.keyspace.as_str();
    if !keyspace.contains(SCRATCH_MARK) {
        bail!("refusing to drop keyspace {keyspace}: not a scratch keyspace");
    }
    let session = connect_session(settings, false).await?;
    let mut statement = Statement::new(format!("DROP KEYSPACE IF EXISTS {keyspace}"));
    statement.set_request_timeout(Some(DDL_TIMEOUT));
    session
        .query_unpaged(statement, ())
        .await
        .with_context(|| format!("dropping scratch keyspace {keyspace}"))?;
    session
        .await_schema_agreement()
        .await
        .with_context(|| format!("waiting for schema agreement after dropping {keyspace}"))?;
    Ok(())
}

/// A row of `schema_migrations`.
struct Applied {
    name: String,
    checksum: String,
}

async fn applied_migrations(
    session: &Session,
    keyspace: &str,
) -> anyhow::Result<HashMap<u32, Applied>> {
    // The ledger has one row per schema file, so a single unpaged read is fine. QUORUM so that
    // a run right after another one on a different node sees what that one recorded.
    let mut select = Statement::new(format!(
        "SELECT version, name, checksum FROM {keyspace}.schema_migrations"
    ));
    select.set_consistency(Consistency::Quorum);
    let rows = session
        .query_unpaged(select, ())
        .await
        .context("reading schema_migrations")?
        .into_rows_result()
        .context("reading schema_migrations")?;

    let mut applied = HashMap::new();
    for row in rows
        .rows::<(i32, Option<String>, Option<String>)>()
        .context("reading schema_migrations")?
    {
        let (version, name, checksum) = row.context("decoding a schema_migrations row")?;
        let version = u32::try_from(version)
            .with_context(|| format!("schema_migrations holds a negative version {version}"))?;
        applied.insert(
            version,
            Applied {
                name: name.unwrap_or_default(),
                checksum: checksum.unwrap_or_default(),
            },
        );
    }
    Ok(applied)
}

/// Runs every statement of one schema file, waiting for the cluster to agree on the schema
/// after each so the next statement (and the next node to prepare a query) sees its effect.
async fn apply_file(
    session: &Session,
    name: &str,
    text: &str,
    vars: &Vars<'_>,
) -> anyhow::Result<()> {
    for (index, template) in split_statements(text).iter().enumerate() {
        let cql = render(template, vars).with_context(|| format!("schema/{name}"))?;
        let what = || {
            let first_line = cql.lines().next().unwrap_or_default();
            format!("schema/{name}, statement {}: {first_line}", index + 1)
        };
        let mut statement = Statement::new(cql.as_str());
        // Schema changes wait for every node; the per-request timeout is sized for queries.
        statement.set_request_timeout(Some(DDL_TIMEOUT));
        session
            .query_unpaged(statement, ())
            .await
            .with_context(what)?;
        session
            .await_schema_agreement()
            .await
            .with_context(|| format!("waiting for schema agreement after {}", what()))?;
    }
    Ok(())
}

/// Values substituted for the placeholders of schema templates.
struct Vars<'a> {
    keyspace: &'a str,
    replication_factor: u8,
}

/// Splits a schema file into statements: a statement ends with a line whose last non-blank
/// character is `;`. Lines starting with `--` are comments and dropped first, so a `;` in a
/// comment never ends a statement. A trailing statement without `;` is kept.
fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        let trimmed = line.trim_end();
        let (body, ends) = match trimmed.strip_suffix(';') {
            Some(body) => (body, true),
            None => (trimmed, false),
        };
        if !body.trim().is_empty() {
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(body);
        }
        if ends {
            push_statement(&mut statements, &mut current);
        }
    }
    push_statement(&mut statements, &mut current);
    statements
}

fn push_statement(statements: &mut Vec<String>, current: &mut String) {
    let statement = current.trim();
    if !statement.is_empty() {
        statements.push(statement.to_owned());
    }
    current.clear();
}

/// Fills in `{keyspace}` and `{replication_factor}`. Any other `{identifier}` left over is an
/// error, so a misspelt placeholder fails here instead of as a CQL syntax error. Braces that
/// open CQL map literals (`{'class': ...}`) are not placeholders.
fn render(template: &str, vars: &Vars<'_>) -> anyhow::Result<String> {
    let rendered = template
        .replace("{keyspace}", vars.keyspace)
        .replace("{replication_factor}", &vars.replication_factor.to_string());
    if let Some(unknown) = find_placeholder(&rendered) {
        bail!("unknown placeholder {unknown} in schema statement");
    }
    Ok(rendered)
}

fn find_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('}') {
            return Some(&rest[open..open + name_len + 2]);
        }
        rest = after;
    }
    None
}

fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            keyspace: "hexmarket_test",
            replication_factor: 3,
        }
    }

    #[test]
    fn embedded_migrations_match_the_schema_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".cql"))
            .collect();
        on_disk.sort();

        let mut embedded: Vec<String> = std::iter::once(KEYSPACE_FILE.0)
            .chain(MIGRATIONS.iter().map(|(_, name, _)| *name))
            .map(str::to_owned)
            .collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "MIGRATIONS must list every file in schema/"
        );

        for (name, text) in std::iter::once(KEYSPACE_FILE)
            .chain(MIGRATIONS.iter().map(|(_, name, text)| (*name, *text)))
        {
            assert_eq!(
                std::fs::read_to_string(dir.join(name)).unwrap(),
                text,
                "{name} is embedded under the wrong name"
            );
        }

        assert!(KEYSPACE_FILE.0.starts_with("000_"));
        let mut previous = 0;
        for (version, name, _) in MIGRATIONS {
            let prefix: String = name.chars().take_while(char::is_ascii_digit).collect();
            assert_eq!(prefix.parse::<u32>().unwrap(), *version, "{name}");
            assert!(
                *version > previous,
                "{name}: versions must strictly increase"
            );
            previous = *version;
        }
    }

    #[test]
    fn every_schema_statement_renders() {
        for (_, text) in std::iter::once(KEYSPACE_FILE)
            .chain(MIGRATIONS.iter().map(|(_, name, text)| (*name, *text)))
        {
            for statement in split_statements(text) {
                let cql = render(&statement, &vars()).unwrap();
                assert!(!cql.contains(';'), "{cql}");
                // Idempotent statements only: creations `IF NOT EXISTS`, and table options set
                // (setting them again changes nothing).
                let alter_options = cql.starts_with("ALTER TABLE ")
                    && cql
                        .lines()
                        .nth(1)
                        .is_some_and(|l| l.trim().starts_with("WITH "));
                assert!(cql.starts_with("CREATE ") || alter_options, "{cql}");
            }
        }
    }

    #[test]
    fn every_table_has_a_create_statement() {
        let statements: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|(_, _, text)| split_statements(text))
            .collect();
        for table in crate::store::Table::ALL {
            let head = format!("CREATE TABLE IF NOT EXISTS {{keyspace}}.{} (", table.name());
            assert!(
                statements.iter().any(|s| s.starts_with(&head)),
                "no table for {table}"
            );
        }
    }

    #[test]
    fn splitter_ends_statements_at_semicolons_on_line_ends_and_skips_comments() {
        let text = "-- header; not a statement\n\
                    CREATE TABLE a (\n    x int PRIMARY KEY\n);\n\
                    \n\
                    -- between;\n\
                    CREATE TABLE b (x int PRIMARY KEY) WITH comment = 'a; b';\n\
                    ;\n\
                    CREATE TABLE c (x int PRIMARY KEY)\n";
        assert_eq!(
            split_statements(text),
            vec![
                "CREATE TABLE a (\n    x int PRIMARY KEY\n)",
                "CREATE TABLE b (x int PRIMARY KEY) WITH comment = 'a; b'",
                "CREATE TABLE c (x int PRIMARY KEY)",
            ]
        );
        assert!(split_statements("-- only a comment;\n\n").is_empty());
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_rejected() {
        let cql = render(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}",
            &vars(),
        )
        .unwrap();
        assert_eq!(
            cql,
            "CREATE KEYSPACE IF NOT EXISTS hexmarket_test WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );

        let err = render("CREATE TABLE {keyspce}.t (x int PRIMARY KEY)", &vars()).unwrap_err();
        assert!(err.to_string().contains("{keyspce}"), "{err}");
    }

    #[test]
    fn checksums_are_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
