//! `smtp-sink`: an SMTP server on loopback that takes every message and forgets it, counting
//! them, for the notification scenario (the node's email goes here). It speaks just enough
//! SMTP for a submitting client (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no TLS, no
//! AUTH) and stops by itself after `--max-secs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::report::Report;

#[derive(Debug, Args)]
pub struct SmtpSinkArgs {
    /// Port on 127.0.0.1.
    #[arg(long)]
    pub port: u16,
    /// Stop after this long.
    #[arg(long, default_value_t = 900)]
    pub max_secs: u64,
}

pub async fn run(args: &SmtpSinkArgs) -> anyhow::Result<Report> {
    let limit = super::check_duration("--max-secs", args.max_secs)?;
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let received = Arc::new(AtomicU64::new(0));
    let serve = {
        let received = Arc::clone(&received);
        async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let received = Arc::clone(&received);
                tokio::spawn(async move {
                    // A client that goes away mid-message is its own problem.
                    let _ = session(stream, &received).await;
                });
            }
        }
    };
    let _ = tokio::time::timeout(limit, serve).await;
    let mut report = Report::new("smtp-sink");
    report.count("messages", received.load(Ordering::Relaxed));
    Ok(report)
}

async fn session(stream: TcpStream, received: &AtomicU64) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if tokio::time::timeout(Duration::from_secs(60), lines.read_line(&mut line)).await?? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250 PIPELINING\r\n",
            "DATA" => {
                write.write_all(b"354 go on\r\n").await?;
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                }
                received.fetch_add(1, Ordering::Relaxed);
                b"250 taken\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 ok\r\n",
        };
        write.write_all(reply).await?;
    }
}
