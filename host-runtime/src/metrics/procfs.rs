//! Parsers of the `/proc` files metrics read: `/proc/PID/stat`, `io`, `status`, `net/dev`, and
//! a scan of `/proc` for a sandbox's process tree. The parsers take text, so tests use fixtures.

use std::collections::HashMap;
use std::path::Path;

/// What metrics need of `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: i32,
    /// Its command name (up to 15 bytes).
    pub comm: String,
    /// Its parent.
    pub ppid: i32,
    /// User + system time of the process, plus that of its waited-for children, in clock ticks.
    pub cpu_ticks: u64,
    /// When it started, in clock ticks after boot.
    pub start_ticks: u64,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid ...`; the comm may hold spaces and `)`, so
/// the fields after it are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ppid = fields.get(1)?.parse().ok()?;
    let cpu_ticks = [14, 15, 16, 17].iter().map(|&n| field(n)).sum::<Option<u64>>()?;
    Some(ProcStat { pid, comm, ppid, cpu_ticks, start_ticks: field(22)? })
}

/// `read_bytes` and `write_bytes` of `/proc/PID/io` (bytes that reached the storage layer).
pub fn parse_io(text: &str) -> Option<(u64, u64)> {
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((value("read_bytes")?, value("write_bytes")?))
}

/// `VmRSS` of `/proc/PID/status`, in bytes (0 for a kernel thread or a zombie, which have none).
pub fn parse_status_rss(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Received and sent bytes of `/proc/PID/net/dev`, summed over every interface but loopback.
pub fn parse_net_dev(text: &str) -> Option<(u64, u64)> {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let (name, counters) = line.split_once(':')?;
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> =
            counters.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
        rx = rx.saturating_add(*fields.first()?);
        tx = tx.saturating_add(*fields.get(8)?);
    }
    Some((rx, tx))
}

/// Seconds since boot, from `/proc/uptime`.
pub fn parse_uptime_secs(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Every process of this host, by pid (a process that exits while it is read is left out).
pub fn scan(proc_root: &Path) -> HashMap<i32, ProcStat> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else { return out };
    for entry in entries.flatten() {
        let is_pid =
            entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        if let Some(stat) =
            std::fs::read_to_string(entry.path().join("stat")).ok().as_deref().and_then(parse_stat)
        {
            out.insert(stat.pid, stat);
        }
    }
    out
}

/// `root` and every process below it in `processes`, `root` first.
pub fn subtree(processes: &HashMap<i32, ProcStat>, root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for stat in processes.values() {
        children.entry(stat.ppid).or_default().push(stat.pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if !processes.contains_key(&pid) || out.contains(&pid) {
            continue;
        }
        out.push(pid);
        stack.extend(children.get(&pid).into_iter().flatten());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "1234 (moat) agentd) S 1200 1234 1234 0 -1 4194560 100 0 0 0 \
        7 3 2 1 20 0 1 0 5000 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_counts_fields_after_the_last_parenthesis() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(stat.pid, 1234);
        assert_eq!(stat.comm, "moat) agentd");
        assert_eq!(stat.ppid, 1200);
        assert_eq!(stat.cpu_ticks, 7 + 3 + 2 + 1);
        assert_eq!(stat.start_ticks, 5000);
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat("1 (x) S 0 1 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn io_reads_storage_bytes_not_rchar() {
        let text = "rchar: 6976\nwchar: 0\nsyscr: 10\nsyscw: 0\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(text), Some((4096, 8192)));
        assert_eq!(parse_io("rchar: 1\n"), None);
    }

    #[test]
    fn status_rss_is_in_bytes_and_zero_when_absent() {
        assert_eq!(parse_status_rss("Name:\tsh\nVmRSS:\t    1524 kB\n"), 1524 * 1024);
        assert_eq!(parse_status_rss("Name:\tkthreadd\n"), 0);
    }

    #[test]
    fn net_dev_sums_every_interface_but_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo: 900 9 0 0 0 0 0 0 900 9 0 0 0 0 0 0\n  \
            eth0: 100 1 0 0 0 0 0 0 40 1 0 0 0 0 0 0\n  \
            eth1: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(text), Some((105, 46)));
        assert_eq!(parse_net_dev("h\nh\n  eth0: 1 2\n"), None);
    }

    #[test]
    fn uptime_is_the_first_number() {
        assert_eq!(parse_uptime_secs("350735.47 234388.90\n"), Some(350_735.47));
    }

    #[test]
    fn subtree_follows_parents_from_the_root() {
        let stat =
            |pid, ppid| ProcStat { pid, comm: String::new(), ppid, cpu_ticks: 0, start_ticks: 0 };
        let processes: HashMap<i32, ProcStat> =
            [stat(1, 0), stat(10, 1), stat(11, 10), stat(12, 11), stat(20, 1)]
                .into_iter()
                .map(|s| (s.pid, s))
                .collect();
        let mut below = subtree(&processes, 10);
        below.sort_unstable();
        assert_eq!(below, vec![10, 11, 12]);
        assert!(subtree(&processes, 99).is_empty());
    }
}
