//! The server as /proc shows it: CPU seconds (and how many of them the kernel spent on its
//! behalf) and resident memory, of one process or of several added up.
//!
//! A server may be several processes: a Python worker and its database, whose backends are
//! forked per connection. `--server-pid` names processes one by one; `--server-tree` names a
//! process whose descendants count too, found afresh at every sample, so backends started
//! (or ended) during a run are counted. The CPU of a process counts every thread of it (the
//! kernel adds them up in /proc/PID/stat); the CPU of descendants that ended and were waited
//! for is counted through their parent's `cutime`/`cstime`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use serde_json::{Value, json};

/// Clock ticks per second of /proc/PID/stat times: `sysconf(_SC_CLK_TCK)`, which is 100 on
/// every Linux architecture this runs on (USER_HZ is fixed by the kernel ABI).
const CLOCK_TICKS: f64 = 100.0;

/// Reads the counters of the processes that make up the server.
pub struct Probe {
    /// Processes counted on their own.
    pids: Vec<u32>,
    /// Processes counted with all their descendants.
    trees: Vec<u32>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub cpu_s: f64,
    /// The part of `cpu_s` spent in the kernel (system calls, the network stack, wake-ups).
    pub sys_s: f64,
    /// One process: its resident set (VmRSS). Several: their proportional set sizes (Pss)
    /// added up, so pages they share (a database's shared buffers) count once.
    pub rss_kib: u64,
}

/// The fields of /proc/PID/stat this reads, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
    /// Of the children that ended and were waited for.
    cutime: u64,
    cstime: u64,
}

impl Probe {
    /// One process, as `--server-pid PID` alone.
    pub fn new(pid: u32) -> Self {
        Probe {
            pids: vec![pid],
            trees: Vec::new(),
        }
    }

    /// The processes `pids` and the trees rooted at `trees`; `None` when both are empty.
    pub fn of(pids: &[u32], trees: &[u32]) -> Option<Self> {
        (!pids.is_empty() || !trees.is_empty()).then(|| Probe {
            pids: pids.to_vec(),
            trees: trees.to_vec(),
        })
    }

    pub fn sample(&self) -> anyhow::Result<Sample> {
        match (self.pids.as_slice(), self.trees.is_empty()) {
            ([pid], true) => sample_one(*pid),
            _ => self.sample_many(),
        }
    }

    /// Every named process must be there; descendants may come and go between reads.
    fn sample_many(&self) -> anyhow::Result<Sample> {
        // Each process once, and whether the CPU of its ended children counts: in a tree it
        // does (they were part of it), for a process named alone it does not.
        let mut counted: BTreeMap<u32, (Stat, bool)> = BTreeMap::new();
        for &pid in &self.pids {
            counted.insert(pid, (read_stat(pid, "--server-pid")?, false));
        }
        let roots: BTreeSet<u32> = self.trees.iter().copied().collect();
        for &pid in &roots {
            counted.insert(pid, (read_stat(pid, "--server-tree")?, true));
        }
        if !roots.is_empty() {
            for (pid, stat) in descendants(&roots, all_processes()?) {
                counted.insert(pid, (stat, true));
            }
        }
        let (mut ticks, mut sys_ticks, mut rss_kib) = (0u64, 0u64, 0u64);
        for (pid, (stat, in_tree)) in &counted {
            let (reaped, reaped_sys) = if *in_tree {
                (stat.cutime + stat.cstime, stat.cstime)
            } else {
                (0, 0)
            };
            ticks += stat.utime + stat.stime + reaped;
            sys_ticks += stat.stime + reaped_sys;
            rss_kib += proportional_kib(*pid).unwrap_or(0);
        }
        Ok(Sample {
            cpu_s: ticks as f64 / CLOCK_TICKS,
            sys_s: sys_ticks as f64 / CLOCK_TICKS,
            rss_kib,
        })
    }
}

/// One process, as the load generator has always read it.
fn sample_one(pid: u32) -> anyhow::Result<Sample> {
    let stat = read_stat(pid, "--server-pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("--server-pid {pid}: reading /proc/{pid}/status"))?;
    Ok(Sample {
        cpu_s: (stat.utime + stat.stime) as f64 / CLOCK_TICKS,
        sys_s: stat.stime as f64 / CLOCK_TICKS,
        rss_kib: vm_rss_kib(&status).with_context(|| format!("/proc/{pid}/status: no VmRSS"))?,
    })
}

fn read_stat(pid: u32, option: &str) -> anyhow::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("{option} {pid}: reading /proc/{pid}/stat"))?;
    parse_stat(&text).with_context(|| format!("/proc/{pid}/stat: unexpected format"))
}

/// Every process now running, with its stat (those that end while being read are skipped).
fn all_processes() -> anyhow::Result<Vec<(u32, Stat)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|text| parse_stat(&text))
        {
            found.push((pid, stat));
        }
    }
    Ok(found)
}

/// The processes below `roots` (not the roots themselves), by their parent links.
fn descendants(roots: &BTreeSet<u32>, processes: Vec<(u32, Stat)>) -> Vec<(u32, Stat)> {
    let mut children: BTreeMap<u32, Vec<(u32, Stat)>> = BTreeMap::new();
    for (pid, stat) in processes {
        children.entry(stat.ppid).or_default().push((pid, stat));
    }
    let mut found = Vec::new();
    let mut pending: Vec<u32> = roots.iter().copied().collect();
    let mut seen: BTreeSet<u32> = roots.clone();
    while let Some(parent) = pending.pop() {
        for (pid, stat) in children.remove(&parent).unwrap_or_default() {
            if seen.insert(pid) {
                pending.push(pid);
                found.push((pid, stat));
            }
        }
    }
    found
}

/// The process's proportional set size (its private pages, plus its share of those it shares),
/// or its VmRSS where smaps_rollup cannot be read; `None` when it is gone.
fn proportional_kib(pid: u32) -> Option<u64> {
    match std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        Ok(rollup) => pss_kib(&rollup),
        Err(_) => vm_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?),
    }
}

/// The fields of a stat line this reads. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): ppid is field 4, utime 14, stime 15, cutime 16 and
    // cstime 17 (cutime and cstime are signed in the kernel's format, never negative).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn pss_kib(rollup: &str) -> Option<u64> {
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
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
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "4242 (hex market) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 12 3 20 0 9 0 100 2000000 3000 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                ppid: 1,
                utime: 250,
                stime: 75,
                cutime: 12,
                cstime: 3,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
    }

    #[test]
    fn resident_memory_is_read_from_status() {
        let status = "Name:\thexmarket\nVmPeak:\t  9000 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
        assert_eq!(vm_rss_kib(status), Some(51_200));
    }

    #[test]
    fn proportional_memory_is_read_from_smaps_rollup() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:  148000 kB\nPss:   30512 kB\nPss_Anon:  9000 kB\n";
        assert_eq!(pss_kib(rollup), Some(30_512));
    }

    fn stat(ppid: u32) -> Stat {
        Stat {
            ppid,
            utime: 1,
            stime: 1,
            cutime: 0,
            cstime: 0,
        }
    }

    #[test]
    fn a_tree_is_every_process_below_its_root_at_any_depth() {
        // 10 ─┬─ 11 ── 13
        //     └─ 12        20 (another tree) ── 21
        let processes = vec![
            (10, stat(1)),
            (11, stat(10)),
            (12, stat(10)),
            (13, stat(11)),
            (20, stat(1)),
            (21, stat(20)),
        ];
        let roots = BTreeSet::from([10]);
        let mut found: Vec<u32> = descendants(&roots, processes.clone())
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        found.sort_unstable();
        assert_eq!(found, vec![11, 12, 13]);
        let both = BTreeSet::from([10, 20]);
        assert_eq!(descendants(&both, processes).len(), 4);
    }

    #[test]
    fn one_pid_alone_is_read_as_before_and_no_pid_is_no_probe() {
        assert!(Probe::of(&[], &[]).is_none());
        let own = std::process::id();
        let alone = Probe::new(own).sample().unwrap();
        assert!(alone.rss_kib > 0);
        // This process as a tree: itself (it has no children) plus what it reaped.
        let tree = Probe::of(&[], &[own]).unwrap().sample().unwrap();
        assert!(tree.cpu_s >= alone.cpu_s);
        assert!(tree.rss_kib > 0);
        assert!(Probe::of(&[u32::MAX], &[]).unwrap().sample().is_err());
    }
}
