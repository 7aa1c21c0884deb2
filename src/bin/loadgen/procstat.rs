//! CPU time and memory of a process (and of the machine) from `/proc`.
//!
//! CPU time is `utime + stime` from `/proc/<pid>/stat`, in clock ticks of `USER_HZ`, which the
//! Linux ABI fixes at 100 per second on every architecture it exposes it for. Over a 10–60 s
//! window that is a resolution of 0.02–0.1 % of a core. Memory is `VmRSS` (and its peak,
//! `VmHWM`) from `/proc/<pid>/status`.

use std::fs;
use std::io;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/<pid>/stat` and `/proc/stat` (USER_HZ).
const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub hwm_kib: u64,
}

/// Parses `utime + stime` out of the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may hold spaces and parentheses, so fields
/// are counted after its last `)`: `state` is then field 3, `utime` 14 and `stime` 15.
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Reads a `Key:   1234 kB` line of `/proc/<pid>/status`, in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Reads a process now. `pid` `None` means this process.
pub fn sample(pid: Option<u32>) -> io::Result<ProcSample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let at = Instant::now();
    let stat = fs::read_to_string(format!("{dir}/stat"))?;
    let status = fs::read_to_string(format!("{dir}/status"))?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{dir}: no {what}"));
    Ok(ProcSample {
        at,
        cpu_ticks: parse_stat_cpu(&stat).ok_or_else(|| bad("utime/stime"))?,
        rss_kib: parse_status_kib(&status, "VmRSS").ok_or_else(|| bad("VmRSS"))?,
        hwm_kib: parse_status_kib(&status, "VmHWM").unwrap_or(0),
    })
}

/// CPU used between two readings, in percent of one core.
pub fn cpu_percent(a: &ProcSample, b: &ProcSample) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / USER_HZ / secs * 100.0
}

/// The machine's CPU counters (first line of `/proc/stat`): busy and total ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SysSample {
    pub busy: u64,
    pub total: u64,
}

/// Parses the `cpu` line of `/proc/stat`: idle and iowait are idle, the rest busy.
pub fn parse_sys(stat: &str) -> Option<SysSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest counted in user already).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(SysSample {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Reads the machine's CPU counters now.
pub fn sample_sys() -> Option<SysSample> {
    parse_sys(&fs::read_to_string("/proc/stat").ok()?)
}

/// Share of all cores that was busy between two readings, in percent of the whole machine.
pub fn sys_busy_percent(a: &SysSample, b: &SysSample) -> Option<f64> {
    let total = b.total.checked_sub(a.total)?;
    (total > 0).then(|| b.busy.saturating_sub(a.busy) as f64 / total as f64 * 100.0)
}

/// Number of CPUs, model name and kernel, for the report.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_mib: u64,
}

impl Machine {
    /// Reads what `/proc` tells about this machine.
    pub fn read() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel,
            mem_total_mib: parse_status_kib(&meminfo, "MemTotal").unwrap_or(0) / 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_name() {
        let stat = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_stat_cpu(stat), Some(325));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn status_values() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t    10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn machine_counters() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n";
        let s = parse_sys(stat).unwrap();
        assert_eq!((s.busy, s.total), (150, 1000));
        let later = SysSample {
            busy: 250,
            total: 1200,
        };
        assert_eq!(sys_busy_percent(&s, &later), Some(50.0));
    }

    #[test]
    fn cpu_percent_of_a_core() {
        let at = Instant::now();
        let a = ProcSample {
            at,
            cpu_ticks: 100,
            rss_kib: 0,
            hwm_kib: 0,
        };
        let b = ProcSample {
            at: at + Duration::from_secs(10),
            cpu_ticks: 600,
            ..a
        };
        assert!((cpu_percent(&a, &b) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn reads_this_process() {
        let s = sample(None).expect("/proc/self");
        assert!(s.rss_kib > 0);
        assert!(s.hwm_kib >= s.rss_kib);
    }
}
