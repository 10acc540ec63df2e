//! User and group resolution from the sandbox's own `/etc/passwd` and `/etc/group`.
//!
//! agentd is a static binary, so it cannot use NSS: it reads the two files itself. A spec is
//! `USER`, `UID`, `USER:GROUP`, `UID:GID` (names and numbers may be mixed). An empty spec means
//! root. This module owns parsing and lookup; applying the identity happens in the exec child.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long after its last change a file's stamp is trusted. A file rewritten twice within one
/// tick of the kernel's coarse clock can keep its mtime (and, written in place, its size and
/// inode), so [`CachedUserDb`] re-reads a file changed this recently on every lookup.
pub const STAMP_SETTLE: Duration = Duration::from_secs(2);

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership), primary group included.
    pub groups: Vec<u32>,
    /// Home directory, when the user has a passwd entry.
    pub home: Option<String>,
    /// User name, when the user has a passwd entry.
    pub name: Option<String>,
}

/// Why a spec did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A user name with no passwd entry.
    #[error("user {0:?} not found in /etc/passwd")]
    UserNotFound(String),
    /// A group name with no group entry.
    #[error("group {0:?} not found in /etc/group")]
    GroupNotFound(String),
}

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The sandbox's user database.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    passwd: Vec<PasswdEntry>,
    groups: Vec<GroupEntry>,
}

impl UserDb {
    /// Reads `<root>/etc/passwd` and `<root>/etc/group`; a missing file reads as empty.
    pub fn load(root: &Path) -> UserDb {
        let read =
            |name: &str| std::fs::read_to_string(root.join("etc").join(name)).unwrap_or_default();
        UserDb::parse(&read("passwd"), &read("group"))
    }

    /// Parses the two files' contents. Malformed lines are skipped.
    pub fn parse(passwd: &str, group: &str) -> UserDb {
        let passwd = passwd
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 7 || line.starts_with('#') {
                    return None;
                }
                Some(PasswdEntry {
                    name: f[0].to_owned(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_owned(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 4 || line.starts_with('#') {
                    return None;
                }
                Some(GroupEntry {
                    name: f[0].to_owned(),
                    gid: f[2].parse().ok()?,
                    members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect(),
                })
            })
            .collect();
        UserDb { passwd, groups }
    }

    /// Resolves a spec (`USER[:GROUP]` or `UID[:GID]`); an empty spec is root.
    pub fn resolve(&self, spec: &str) -> Result<Identity, UserError> {
        let spec = spec.trim();
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let user = if user.is_empty() { "0" } else { user };
        let entry = match user.parse::<u32>() {
            Ok(uid) => self.passwd.iter().find(|e| e.uid == uid).cloned().or(Some(PasswdEntry {
                name: String::new(),
                uid,
                gid: uid,
                home: String::new(),
            })),
            Err(_) => self.passwd.iter().find(|e| e.name == user).cloned(),
        }
        .ok_or_else(|| UserError::UserNotFound(user.to_owned()))?;
        let known = !entry.name.is_empty();
        let gid = match group.filter(|g| !g.is_empty()) {
            None => entry.gid,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    self.groups
                        .iter()
                        .find(|e| e.name == g)
                        .ok_or_else(|| UserError::GroupNotFound(g.to_owned()))?
                        .gid
                }
            },
        };
        let mut groups = vec![gid];
        if known {
            for g in &self.groups {
                if g.members.contains(&entry.name) && !groups.contains(&g.gid) {
                    groups.push(g.gid);
                }
            }
        }
        Ok(Identity {
            uid: entry.uid,
            gid,
            groups,
            home: known.then(|| entry.home.clone()),
            name: known.then(|| entry.name.clone()),
        })
    }
}

/// A [`UserDb`] that re-reads `<root>/etc/passwd` and `<root>/etc/group` only when one of them
/// changed: each lookup `stat`s both files and compares device, inode, size, mtime and ctime with
/// the ones the cached copy was read under. A file changed less than [`STAMP_SETTLE`] ago is
/// always re-read, since its stamp may not show a second change within the same clock tick.
#[derive(Debug)]
pub struct CachedUserDb {
    root: PathBuf,
    /// The stamps of passwd and group the cached copy was read under; `None` before the first
    /// read and while a file is too fresh to trust.
    stamps: Option<[Stamp; 2]>,
    db: UserDb,
}

/// What identifies one version of a file; `Missing` reads as an empty file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Missing,
    File { dev: u64, ino: u64, size: u64, mtime: (i64, i64), ctime: (i64, i64) },
}

impl Stamp {
    fn of(path: &Path) -> Stamp {
        match std::fs::metadata(path) {
            Ok(m) => Stamp::File {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
            },
            // Unreadable counts as missing, as in `UserDb::load`; the stamp still changes when
            // the file appears.
            Err(_) => Stamp::Missing,
        }
    }

    /// Whether the file changed less than [`STAMP_SETTLE`] before `now` (or in its future).
    fn is_fresh(&self, now: SystemTime) -> bool {
        let Stamp::File { ctime: (secs, nanos), .. } = *self else { return false };
        let (Ok(secs), Ok(nanos)) = (u64::try_from(secs), u32::try_from(nanos)) else {
            return true;
        };
        let changed = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        now.duration_since(changed).map_or(true, |age| age < STAMP_SETTLE)
    }
}

impl CachedUserDb {
    /// A cache of the database under `root`; nothing is read until [`CachedUserDb::current`].
    pub fn new(root: PathBuf) -> CachedUserDb {
        CachedUserDb { root, stamps: None, db: UserDb::default() }
    }

    /// The database as the files are now, re-read only if they changed since the last call.
    pub fn current(&mut self) -> &UserDb {
        let etc = self.root.join("etc");
        let stamps = [Stamp::of(&etc.join("passwd")), Stamp::of(&etc.join("group"))];
        if self.stamps != Some(stamps) {
            // Stamped before reading: a change during the read shows as a new stamp next time.
            self.db = UserDb::load(&self.root);
            let now = SystemTime::now();
            self.stamps = (!stamps.iter().any(|s| s.is_fresh(now))).then_some(stamps);
        }
        &self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken line\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\n";

    fn db() -> UserDb {
        UserDb::parse(PASSWD, GROUP)
    }

    #[test]
    fn empty_spec_is_root_with_home() {
        let id = db().resolve("").unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_deref()), (0, 0, Some("/root")));
    }

    #[test]
    fn name_resolves_with_supplementary_groups() {
        let id = db().resolve("alice").unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (1000, 1000, vec![1000, 10]));
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        let id = db().resolve("4242:77").unwrap();
        assert_eq!((id.uid, id.gid, id.home), (4242, 77, None));
    }

    #[test]
    fn group_name_overrides_primary_group() {
        assert_eq!(db().resolve("alice:wheel").unwrap().gid, 10);
    }

    #[test]
    fn cached_db_rereads_a_changed_file_and_trusts_a_settled_one() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        let passwd = root.path().join("etc/passwd");
        std::fs::write(&passwd, PASSWD).unwrap();
        let mut cache = CachedUserDb::new(root.path().to_owned());
        assert_eq!(cache.current().resolve("alice").unwrap().uid, 1000);
        // Fresh files are re-read every time, so a same-size rewrite is seen.
        std::fs::write(&passwd, PASSWD.replace("alice", "alicf")).unwrap();
        assert_eq!(cache.current().resolve("alicf").unwrap().uid, 1000);
        assert!(cache.stamps.is_none(), "a file changed just now must not be trusted");
        // A new file (another inode) is noticed whatever its times.
        let staged = root.path().join("etc/passwd.new");
        std::fs::write(&staged, "bob:x:7:7::/home/bob:/bin/sh\n").unwrap();
        std::fs::rename(&staged, &passwd).unwrap();
        assert_eq!(cache.current().resolve("bob").unwrap().uid, 7);
        assert!(cache.current().resolve("alicf").is_err());
    }

    #[test]
    fn settled_stamp_is_trusted_until_the_file_changes() {
        let root = Path::new("/");
        let stamp = Stamp::of(&root.join("proc/self/nonexistent"));
        assert_eq!(stamp, Stamp::Missing);
        assert!(!stamp.is_fresh(SystemTime::now()));
        let old = Stamp::File { dev: 1, ino: 2, size: 3, mtime: (0, 0), ctime: (1_000, 0) };
        assert!(!old.is_fresh(SystemTime::UNIX_EPOCH + Duration::from_secs(1_003)));
        assert!(old.is_fresh(SystemTime::UNIX_EPOCH + Duration::from_secs(1_001)));
        assert!(old.is_fresh(SystemTime::UNIX_EPOCH + Duration::from_secs(999)));
    }

    #[test]
    fn unknown_names_are_typed_errors() {
        assert_eq!(db().resolve("mallory"), Err(UserError::UserNotFound("mallory".into())));
        assert_eq!(db().resolve("alice:nogroup"), Err(UserError::GroupNotFound("nogroup".into())));
    }
}
