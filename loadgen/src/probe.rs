//! The server process as /proc shows it: CPU seconds (and how many of them the kernel spent on
//! its behalf) and resident memory.

use anyhow::Context as _;
use serde_json::{Value, json};

/// Clock ticks per second of /proc/PID/stat times: `sysconf(_SC_CLK_TCK)`, which is 100 on
/// every Linux architecture this runs on (USER_HZ is fixed by the kernel ABI).
const CLOCK_TICKS: f64 = 100.0;

/// Reads one process's counters.
pub struct Probe {
    pid: u32,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub cpu_s: f64,
    /// The part of `cpu_s` spent in the kernel (system calls, the network stack, wake-ups).
    pub sys_s: f64,
    pub rss_kib: u64,
}

impl Probe {
    pub fn new(pid: u32) -> Self {
        Probe { pid }
    }

    pub fn sample(&self) -> anyhow::Result<Sample> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("--server-pid {}: reading /proc/{0}/stat", self.pid))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("--server-pid {}: reading /proc/{0}/status", self.pid))?;
        let (utime, stime) = cpu_ticks(&stat)
            .with_context(|| format!("/proc/{}/stat: unexpected format", self.pid))?;
        Ok(Sample {
            cpu_s: (utime + stime) as f64 / CLOCK_TICKS,
            sys_s: stime as f64 / CLOCK_TICKS,
            rss_kib: vm_rss_kib(&status)
                .with_context(|| format!("/proc/{}/status: no VmRSS", self.pid))?,
        })
    }
}

/// (utime, stime), in ticks. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14 and stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Server figures before and after a measured phase.
pub fn delta_json(before: Sample, after: Sample, seconds: f64) -> Value {
    let cpu = after.cpu_s - before.cpu_s;
    json!({
        "cpu_s": cpu,
        "cpu_sys_s": after.sys_s - before.sys_s,
        "cpu_utilisation": if seconds > 0.0 { cpu / seconds } else { 0.0 },
        "rss_before_kib": before.rss_kib,
        "rss_after_kib": after.rss_kib,
    })
}

pub fn delta_human(before: Sample, after: Sample, seconds: f64) -> String {
    let cpu = after.cpu_s - before.cpu_s;
    let sys = after.sys_s - before.sys_s;
    format!(
        "{cpu:.2} CPU s over {seconds:.1} s ({:.0}% of a core; {sys:.2} s of it in the kernel), RSS {} → {} MiB",
        if seconds > 0.0 {
            100.0 * cpu / seconds
        } else {
            0.0
        },
        before.rss_kib / 1024,
        after.rss_kib / 1024
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        let stat = "4242 (hex market) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 2000000 3000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some((250, 75)));
    }

    #[test]
    fn resident_memory_is_read_from_status() {
        let status = "Name:\thexmarket\nVmPeak:\t  9000 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
        assert_eq!(vm_rss_kib(status), Some(51_200));
    }
}
