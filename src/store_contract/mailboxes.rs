/// Store contract: legacy rows are backfilled under the canonical key, every account of a
/// shared mailbox is still found by the address it registered with, and the report lists the
/// share.
pub async fn legacy_email_rows_are_backfilled_and_shared_mailboxes_reported(store: SharedStore) {
    let t = tag();
    let older = seed_legacy_account(&store, &format!("Shared-{t}@Example.com"), 2).await;
    let younger = seed_legacy_account(&store, &format!("shared-{t}@example.com"), 1).await;
    let solo = seed_legacy_account(&store, &format!("Solo-{t}@example.com"), 1).await;
    let users = UserRepo::new(Arc::clone(&store));
    let find = |email: String| {
        let users = users.clone();
        async move {
            users
                .find_by_email(&Email::parse(&email).unwrap())
                .await
                .unwrap()
                .map(|u| u.value.id)
        }
    };
    // Before the backfill a legacy row answers its exact address only.
    assert_eq!(find(format!("Solo-{t}@EXAMPLE.com")).await, Some(solo));
    assert_eq!(find(format!("solo-{t}@example.com")).await, None);

    let report = users.backfill_email_index(true).await.unwrap().unwrap();
    assert!(report.shared >= 1, "{report:?}");
    assert_eq!(find(format!("SOLO-{t}@example.com")).await, Some(solo));
    // The younger account's old row was the canonical key, so it keeps it and answers to
    // other spellings; the older one is still found by its own address, through its old row.
    assert_eq!(find(format!("SHARED-{t}@EXAMPLE.COM")).await, Some(younger));
    assert_eq!(find(format!("shared-{t}@example.com")).await, Some(younger));
    assert_eq!(find(format!("Shared-{t}@example.com")).await, Some(older));
    // A new registration of either mailbox finds it taken.
    for email in [
        format!("solo-{t}@example.com"),
        format!("sHaReD-{t}@example.com"),
    ] {
        assert!(
            !users
                .claim_email(&Email::parse(&email).unwrap(), UserId::new())
                .await
                .unwrap(),
            "{email}"
        );
    }
    // Once done, a backfill without force is skipped.
    assert!(users.backfill_email_index(false).await.unwrap().is_none());

    let shared = users.shared_mailboxes().await.unwrap();
    let ours: Vec<_> = shared
        .iter()
        .filter(|m| m.canonical == format!("shared-{t}@example.com"))
        .collect();
    assert_eq!(ours.len(), 1, "{shared:?}");
    let ids: Vec<UserId> = ours[0].accounts.iter().map(|a| a.user_id).collect();
    assert_eq!(ids, vec![older, younger], "oldest first");
    assert!(!shared.iter().any(|m| m.canonical.starts_with("solo-")));
}
