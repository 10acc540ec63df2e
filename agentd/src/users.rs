//! User and group resolution from the sandbox's own `/etc/passwd` and `/etc/group`.
//!
//! agentd is a static binary, so it cannot use NSS: it reads the two files itself. A spec is
//! `USER`, `UID`, `USER:GROUP`, `UID:GID` (names and numbers may be mixed). An empty spec means
//! root. This module owns parsing and lookup; applying the identity happens in the exec child.

use std::path::Path;

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
    fn unknown_names_are_typed_errors() {
        assert_eq!(db().resolve("mallory"), Err(UserError::UserNotFound("mallory".into())));
        assert_eq!(db().resolve("alice:nogroup"), Err(UserError::GroupNotFound("nogroup".into())));
    }
}
