//! Process metrics in the names every Prometheus client library uses (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, ...), so the usual dashboards and alerts work on
//! Ficus unchanged. Read from /proc when `/metrics` is scraped, never on the request path, and written as
//! Prometheus text after the recorder's own output (the recorder's counters are integers; CPU seconds are not).

use std::fmt::Write as _;

/// What /proc says about this process now.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

impl ProcessStats {
    /// `None` where /proc is not there or not what Linux writes (the metrics are then left out).
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let boot_time: u64 = boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
        // SAFETY: sysconf and getrlimit only read system values into what we pass.
        let (ticks, page, max_fds) = unsafe {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 { lim.rlim_cur } else { 0 };
            (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE), max)
        };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        parse_stat(&stat, boot_time, ticks as f64, page as u64, open_fds, max_fds)
    }

    /// Appends the Prometheus text of these values.
    pub fn render(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", self.resident_bytes as f64);
        metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", self.virtual_bytes as f64);
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds,
        );
        metric("process_open_fds", "gauge", "Number of open file descriptors.", self.open_fds as f64);
        metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", self.max_fds as f64);
    }
}

/// `/proc/self/stat`: fields after the command name (which is in parentheses and may hold spaces), counted
/// from 1 as in proc(5): utime 14, stime 15 and starttime 22 in clock ticks, vsize 23 in bytes, rss 24 in pages.
fn parse_stat(stat: &str, boot_time: u64, ticks: f64, page: u64, open_fds: u64, max_fds: u64) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (ficus (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 \
                    123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(stat, 1_700_000_000, 100.0, 4096, 7, 1024).expect("parses");
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!(s.virtual_bytes, 123_456_789);
        assert_eq!(s.resident_bytes, 2048 * 4096);
        assert_eq!((s.open_fds, s.max_fds), (7, 1024));
    }

    #[test]
    fn this_process_reads_and_renders() {
        let s = ProcessStats::read().expect("Linux /proc");
        assert!(s.resident_bytes > 0 && s.open_fds > 0 && s.start_time_seconds > 1e9, "{s:?}");
        let mut out = String::new();
        s.render(&mut out);
        assert!(out.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "), "{out}");
    }
}
