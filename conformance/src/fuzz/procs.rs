//! What `--pid PID` watches: the process's open file descriptors (`/proc/PID/fd`) and how many
//! descendants it has (every `/proc/N/stat` whose parent chain reaches PID). Linux only; read
//! through procfs, no unsafe.

use std::collections::HashMap;
use std::io;

/// A snapshot of one process's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Open file descriptors.
    pub fds: usize,
    /// Live descendant processes (children, their children, ...).
    pub descendants: usize,
}

/// The resources of `pid` now.
pub fn usage(pid: u32) -> io::Result<Usage> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(Usage { fds, descendants: descendants(pid)? })
}

/// How many live processes descend from `pid`.
fn descendants(pid: u32) -> io::Result<usize> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some(parent) = parent_of(&stat) {
            children.entry(parent).or_default().push(child);
        }
    }
    let mut count = 0;
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        if let Some(kids) = children.get(&p) {
            count += kids.len();
            queue.extend(kids);
        }
    }
    Ok(count)
}

/// The parent pid in a `/proc/N/stat` line (`pid (comm) state ppid ...`; comm may hold spaces
/// and parentheses, so the fields are read after the last `)`). Zombies count as gone.
fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_read_after_a_comm_with_spaces_and_parentheses() {
        assert_eq!(parent_of("12 (a b) c) S 7 12 12 0"), Some(7));
        assert_eq!(parent_of("12 (zombie) Z 7 12 12 0"), None);
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn a_spawned_child_counts_as_a_descendant() {
        let me = std::process::id();
        let before = usage(me).unwrap();
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let during = usage(me).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(during.descendants > before.descendants, "{before:?} {during:?}");
    }
}
