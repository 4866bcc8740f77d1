//! `hexmarket report-duplicate-emails`: lists the mailboxes that several accounts share, for an
//! operator to settle with their owners. It only reads; merging accounts is never automatic.

use std::fmt::Write as _;

use crate::config::Settings;
use crate::store::mailboxes::SharedMailbox;
use crate::store::users::UserRepo;

/// Prints every shared mailbox on standard output. Fails (exit code 1) when there is one.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let store = crate::app::open_store(settings).await?;
    let shared = UserRepo::new(store).shared_mailboxes().await?;
    print!("{}", render(&shared));
    if shared.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} mailbox(es) have several accounts; nothing was changed",
            shared.len()
        )
    }
}

/// One block per mailbox: its canonical form, then each account (oldest first, the one that
/// holds the mailbox for new registrations and logins in other spellings).
pub fn render(shared: &[SharedMailbox]) -> String {
    let mut out = String::new();
    if shared.is_empty() {
        out.push_str("no mailbox has more than one account\n");
    }
    for mailbox in shared {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{} ({} accounts)",
            mailbox.canonical,
            mailbox.accounts.len()
        );
        for account in &mailbox.accounts {
            let _ = writeln!(
                out,
                "  {}  {}  registered {}",
                account.user_id,
                account.email,
                account
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
    }
    out
}
