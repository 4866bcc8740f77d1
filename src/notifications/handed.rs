//! The hand-over log: the ids of messages a provider took, noted on this node's disk the
//! moment it answered.
//!
//! A message's outcome is recorded in the store by group commit, which under load takes a
//! while; a process that dies in between would send the message again after its restart. So
//! the sender first appends the id, with the version of the message's row it sent from, to a
//! node-local file (one `write`, no sync: the page cache outlives the process) and only then
//! records the outcome. A restarted node reads the file, and a message it names whose row is
//! still at that version is recorded as sent instead of being sent again (a row that moved on,
//! say a delivery an admin asked to send again, is sent). What remains is a
//! crash between the provider's acceptance and this process reading its answer, a power loss
//! (the file is not synced), or another node taking over: then the message goes again with
//! the same id, the one documented repeat.
//!
//! Ids leave the log once their outcome is in the store; the file is rewritten with what is
//! left when it has grown past [`REWRITE_AFTER`] lines. Each line is `{id} {unix seconds}
//! {row version}`, and
//! lines older than a day are not read back (their outcome is long recorded).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::store::Version;

/// Lines appended before the file is rewritten with the ids still unrecorded.
const REWRITE_AFTER: usize = 50_000;
/// How long an id is remembered without its outcome recorded by this process.
const FORGET_AFTER_SECS: i64 = 24 * 3600;

/// Ids handed to a provider whose outcome may not be in the store yet.
pub struct HandedLog {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

struct State {
    file: Option<File>,
    /// Id → when it was handed over (unix seconds) and the version of the row it was sent from.
    unrecorded: HashMap<Uuid, (i64, Version)>,
    lines: usize,
}

impl HandedLog {
    /// Opens (creating) the log at `path` and reads what an earlier process left in it. A
    /// log that cannot be read is left behind with a warning (the node starts, only as safe
    /// as without it); one whose directory or file cannot be created is an error.
    pub fn open(path: &Path) -> io::Result<HandedLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut unrecorded = HashMap::new();
        let mut lines = 0;
        let since = now_secs() - FORGET_AFTER_SECS;
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "the hand-over log cannot be read; starting without it");
                Vec::new()
            }
        };
        for line in String::from_utf8_lossy(&text).lines() {
            lines += 1;
            let mut fields = line.split(' ');
            // A line cut short by the crash is no id.
            let id = fields.next().and_then(|f| Uuid::parse_str(f).ok());
            let at = fields.next().and_then(|f| f.parse::<i64>().ok());
            let version = fields.next().and_then(|f| f.parse::<Version>().ok());
            if let (Some(id), Some(at), Some(version)) = (id, at, version)
                && at >= since
            {
                unrecorded.insert(id, (at, version));
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        if text.last().is_some_and(|&b| b != b'\n') {
            // End the torn line, so the next one starts on its own.
            file.write_all(b"\n")?;
        }
        tracing::debug!(
            ids = unrecorded.len(),
            "hand-over log read (ids whose outcome may not be recorded)"
        );
        Ok(HandedLog {
            path: Some(path.to_owned()),
            state: Mutex::new(State {
                file: Some(file),
                unrecorded,
                lines,
            }),
        })
    }

    /// A log that keeps nothing on disk (tests without a data directory).
    pub fn in_memory() -> HandedLog {
        HandedLog {
            path: None,
            state: Mutex::new(State {
                file: None,
                unrecorded: HashMap::new(),
                lines: 0,
            }),
        }
    }

    /// Whether a provider took this message, sent from its row at `version`, and that row has
    /// not moved on since.
    pub fn was_handed(&self, id: Uuid, version: Version) -> bool {
        self.state
            .lock()
            .unrecorded
            .get(&id)
            .is_some_and(|&(_, sent_from)| sent_from == version)
    }

    /// Notes that a provider took the message. A failure to write is logged: the message is
    /// then only as safe as before (sent again if the process dies before recording).
    pub fn handed(&self, id: Uuid, version: Version) {
        let at = now_secs();
        let mut state = self.state.lock();
        state.unrecorded.insert(id, (at, version));
        if let Some(file) = state.file.as_mut() {
            let line = format!("{} {at} {version}\n", id.simple());
            if let Err(e) = file.write_all(line.as_bytes()) {
                tracing::warn!(error = %e, "the hand-over log cannot be written");
            }
            state.lines += 1;
        }
    }

    /// The message's outcome is in the store: it leaves the log (the file is rewritten now and
    /// then).
    pub fn recorded(&self, id: Uuid) {
        let mut state = self.state.lock();
        state.unrecorded.remove(&id);
        if state.lines >= REWRITE_AFTER
            && let Some(path) = &self.path
        {
            // Either way the count starts again: a failing rewrite is tried again only after
            // as many lines more.
            state.lines = state.unrecorded.len();
            match rewrite(path, &state.unrecorded) {
                Ok(file) => state.file = Some(file),
                Err(e) => tracing::warn!(error = %e, "the hand-over log cannot be rewritten"),
            }
        }
    }
}

/// Writes `ids` to a new file and renames it over the log; the new file, open to append
/// (opened before the rename, so a failure leaves the old log in use).
fn rewrite(path: &Path, ids: &HashMap<Uuid, (i64, Version)>) -> io::Result<File> {
    let fresh = path.with_extension("new");
    let since = now_secs() - FORGET_AFTER_SECS;
    let mut text = String::with_capacity(ids.len() * 45);
    for (id, (at, version)) in ids.iter().filter(|&(_, &(at, _))| at >= since) {
        text.push_str(&format!("{} {at} {version}\n", id.simple()));
    }
    std::fs::write(&fresh, text)?;
    let file = OpenOptions::new().append(true).open(&fresh)?;
    std::fs::rename(&fresh, path)?;
    Ok(file)
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_knows_what_was_handed_over_and_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifications/handed.log");
        let (sent, recorded) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let log = HandedLog::open(&path).unwrap();
            log.handed(sent, 3);
            log.handed(recorded, 1);
            log.recorded(recorded);
            assert!(log.was_handed(sent, 3) && !log.was_handed(recorded, 1));
            // The process dies here: nothing is flushed or synced on purpose.
        }
        let mut torn = OpenOptions::new().append(true).open(&path).unwrap();
        let old = Uuid::new_v4();
        let day_ago = now_secs() - FORGET_AFTER_SECS - 1;
        torn.write_all(format!("{} {day_ago} 1\n0123abc", old.simple()).as_bytes())
            .unwrap();
        let again = HandedLog::open(&path).unwrap();
        let after_tear = Uuid::new_v4();
        again.handed(after_tear, 1);
        assert!(HandedLog::open(&path).unwrap().was_handed(after_tear, 1));
        assert!(again.was_handed(sent, 3));
        // Its row moved on since (sent again on request): it goes.
        assert!(!again.was_handed(sent, 4));
        // Recorded in the store before the crash, but the file still names it: its row has
        // moved on too.
        assert!(!again.was_handed(recorded, 2));
        assert!(!again.was_handed(Uuid::new_v4(), 1));
        assert!(!again.was_handed(old, 1), "a day-old line is forgotten");
    }

    #[test]
    fn the_file_is_rewritten_with_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handed.log");
        let log = HandedLog::open(&path).unwrap();
        let kept = Uuid::new_v4();
        log.handed(kept, 7);
        for _ in 0..REWRITE_AFTER {
            let id = Uuid::new_v4();
            log.handed(id, 1);
            log.recorded(id);
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 10, "{lines} lines left");
        assert!(HandedLog::open(&path).unwrap().was_handed(kept, 7));
    }
}
