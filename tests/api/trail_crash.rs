//! Couriers' GPS trails through the real binary and its public API only: eight couriers stream
//! 50-point frames on /ws/courier, four frames each unacknowledged at a time, and the server is
//! killed with SIGKILL the moment the 120th frame is acknowledged. After a restart an admin
//! made with `create-admin` reads the trails: every point on them was sent, once, in order,
//! and at least as many frames are on them whole as were acknowledged. The couriers then go on
//! streaming.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use hexmarket::clock::Clock;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::admin_cli::{Api, create_admin, hexmarket, printed_uri};
use crate::helpers::{Authenticator, client, free_port, wait_healthy};
use crate::ws_client::{WsClient, ws_base};

const COURIERS: usize = 8;
/// Frames each courier keeps unacknowledged at a time.
const IN_FLIGHT: usize = 4;
const POINTS_PER_FRAME: usize = 50;
/// Frames acknowledged (all couriers together) before the kill.
const ACKED_BEFORE_KILL: usize = 120;
const ADMIN_EMAIL: &str = "ops@example.com";
const ADMIN_PASSWORD: &str = "the operator's long passphrase";
const WAIT: Duration = Duration::from_secs(20);

/// Yesterday at 00:10 UTC (the day the test started): every point of the test falls on one
/// UTC day, whenever it runs.
fn trail_start() -> DateTime<Utc> {
    static START: LazyLock<DateTime<Utc>> = LazyLock::new(|| {
        let yesterday = Utc::now().date_naive() - chrono::Duration::days(1);
        yesterday
            .and_time(NaiveTime::from_hms_opt(0, 10, 0).unwrap())
            .and_utc()
    });
    *START
}

/// Frame `n` of courier `c`: 50 points a second apart, walking north at 3 m/s.
fn frame(c: usize, n: usize) -> (Value, Vec<DateTime<Utc>>) {
    let start = trail_start();
    let mut times = Vec::with_capacity(POINTS_PER_FRAME);
    let points: Vec<Value> = (0..POINTS_PER_FRAME)
        .map(|i| {
            let step = n * POINTS_PER_FRAME + i;
            let at = start + chrono::Duration::seconds(step as i64);
            times.push(at);
            json!({
                "lat": 52.50 + 0.01 * c as f64 + step as f64 * 0.000027,
                "lng": 13.40,
                "accuracy_m": 8.0,
                "recorded_at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            })
        })
        .collect();
    (json!({"type": "location", "points": points}), times)
}

/// What one courier's stream got through.
struct Streamed {
    /// Frames the server acknowledged.
    acknowledged: usize,
    /// Frames sent, acknowledged or not: the next frame to send is this one.
    sent: usize,
}

/// Streams frames from `from` on, up to `IN_FLIGHT` unacknowledged at a time, until the
/// connection breaks or `until` frames are acknowledged. Counts each acknowledgement in
/// `acked` and wakes `kill` when that reaches [`ACKED_BEFORE_KILL`].
async fn stream(
    url: String,
    token: String,
    c: usize,
    from: usize,
    until: Option<usize>,
    acked: Arc<AtomicUsize>,
    kill: Arc<Notify>,
) -> Streamed {
    let mut ws = WsClient::connect(&url, Some(&token)).await.unwrap();
    ws.send_json(&json!({"type": "go_online"})).await;
    ws.expect_type("ack", WAIT).await;
    let mut streamed = Streamed {
        acknowledged: 0,
        sent: from,
    };
    let mut in_flight = 0;
    loop {
        let done = streamed.sent - from - in_flight;
        if until.is_some_and(|until| done >= until) {
            ws.close().await;
            return streamed;
        }
        while in_flight < IN_FLIGHT && until.is_none_or(|until| streamed.sent - from < until) {
            // A send that fails (the server is gone) shows as the read below ending.
            ws.flood([frame(c, streamed.sent).0.to_string()]).await;
            streamed.sent += 1;
            in_flight += 1;
        }
        let ack = loop {
            match ws.next_json(WAIT).await {
                Some(f) if f["type"] == "ack" && f["of"] == "location" => break Some(f),
                Some(_) => continue,
                None => break None,
            }
        };
        // None: the server went away with the frames in flight unacknowledged.
        let Some(ack) = ack else { return streamed };
        assert_eq!(
            (&ack["accepted"], &ack["dropped"]),
            (&json!(POINTS_PER_FRAME), &json!(0)),
            "courier {c}: {ack}"
        );
        in_flight -= 1;
        streamed.acknowledged += 1;
        if acked.fetch_add(1, Ordering::SeqCst) + 1 == ACKED_BEFORE_KILL {
            kill.notify_one();
        }
    }
}

/// Every point of `courier`'s trail on the test's day, page by page.
async fn read_trail(api: &Api, admin: &str, courier: &str) -> Vec<DateTime<Utc>> {
    let url = format!("{}/api/v1/admin/couriers/{courier}/trail", api.base);
    let day = trail_start().format("%Y-%m-%d").to_string();
    let mut times = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("day", day.clone()), ("limit", "1000".to_owned())];
        query.extend(after.take().map(|after| ("after", after)));
        let response = api
            .http
            .get(&url)
            .query(&query)
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let page: Value = response.json().await.unwrap();
        for point in page["points"].as_array().unwrap() {
            let at: DateTime<Utc> = point["recorded_at"].as_str().unwrap().parse().unwrap();
            times.push(at);
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return times,
        }
    }
}

/// How many of courier `c`'s first `sent` frames are on `trail` whole (all their points).
fn whole_frames(c: usize, sent: usize, trail: &[DateTime<Utc>]) -> usize {
    let on_trail: BTreeSet<_> = trail.iter().collect();
    (0..sent)
        .filter(|&n| frame(c, n).1.iter().all(|t| on_trail.contains(t)))
        .count()
}

#[actix_web::test]
async fn a_kill_9_mid_stream_keeps_every_acknowledged_gps_frame_whole_on_the_trail() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: client(),
    };
    let ws_url = format!("{}/ws/courier", ws_base(&api.base));
    let printed = create_admin(dir.path(), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let authenticator = Authenticator::new(printed_uri(&printed), Clock::default());
    let spawn = || {
        hexmarket(dir.path(), port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts")
    };
    let mut server = spawn();
    wait_healthy(&api.base, WAIT).await;

    // The couriers sign up through the API.
    let mut couriers = Vec::new();
    for c in 0..COURIERS {
        let (id, token, _) = api
            .signed_up(&format!("courier{c}@example.com"), "courier")
            .await;
        couriers.push((id, token));
    }

    // They stream until the server is killed, with frames of every courier in flight.
    let acked = Arc::new(AtomicUsize::new(0));
    let kill = Arc::new(Notify::new());
    let streams: Vec<_> = couriers
        .iter()
        .enumerate()
        .map(|(c, (_, token))| {
            actix_web::rt::spawn(stream(
                ws_url.clone(),
                token.clone(),
                c,
                0,
                None,
                acked.clone(),
                kill.clone(),
            ))
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(60), kill.notified())
        .await
        .expect("acknowledgements within a minute");
    server.kill().await.expect("server killed");
    let mut before = Vec::new();
    for s in streams {
        before.push(s.await.unwrap());
    }

    server = spawn();
    wait_healthy(&api.base, WAIT).await;
    let (status, tokens) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "otp": authenticator.code()}),
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    let admin = tokens["access_token"].as_str().unwrap().to_owned();

    // Every point on a trail is one a courier sent, once, oldest first. Acknowledgements do
    // not say which frame they answer, so the check counts: at least as many frames are on
    // the trail whole as were acknowledged (frames in flight may be there whole, in part or
    // not at all).
    let mut acknowledged = 0;
    for (c, ((id, _), streamed)) in couriers.iter().zip(&before).enumerate() {
        let trail = read_trail(&api, &admin, id).await;
        assert!(trail.windows(2).all(|w| w[0] < w[1]), "courier {c}: order");
        let sent: BTreeSet<_> = (0..streamed.sent).flat_map(|n| frame(c, n).1).collect();
        assert!(
            trail.iter().all(|t| sent.contains(t)),
            "courier {c}: points nobody sent"
        );
        let whole = whole_frames(c, streamed.sent, &trail);
        assert!(
            whole >= streamed.acknowledged,
            "courier {c}: {} frames acknowledged, {whole} whole on the trail",
            streamed.acknowledged,
        );
        acknowledged += streamed.acknowledged;
    }
    assert!(acknowledged >= ACKED_BEFORE_KILL);

    // The couriers go on where they left off; the trail grows by what they send.
    for (c, ((id, token), streamed)) in couriers.iter().zip(&before).enumerate() {
        let before = read_trail(&api, &admin, id).await.len();
        let more = stream(
            ws_url.clone(),
            token.clone(),
            c,
            streamed.sent,
            Some(2),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Notify::new()),
        )
        .await;
        assert_eq!(more.acknowledged, 2, "courier {c}");
        let trail = read_trail(&api, &admin, id).await;
        assert_eq!(trail.len(), before + 2 * POINTS_PER_FRAME, "courier {c}");
    }
    server.kill().await.unwrap();
}
