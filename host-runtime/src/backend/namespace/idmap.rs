//! The unprivileged host id ranges namespace sandboxes' ids map to, and the map lines that say
//! so. Pure: parsing `/etc/subuid` and `/etc/subgid`, choosing the pool, formatting maps; the
//! lease of one block per sandbox is [`crate::backend::namespace::idlease`], the namespaces and mounts that use them
//! [`crate::backend::namespace::userns`] and [`crate::backend::namespace::idmount`].
//!
//! ```text
//!  sandbox ids   0 ............................ 65535
//!                │ uid_map / gid_map "0 BASE 65536"
//!  host ids      BASE ......................... BASE + 65535    (BASE >= 65536: never host root)
//!
//!  pool:  the `moat` entries of /etc/subuid and /etc/subgid (whole 65536-id blocks of them),
//!         else RESERVED_BLOCKS blocks from RESERVED_BASE (0x7000_0000), refused if another
//!         /etc/sub?id entry overlaps it.  BASE = pool base + k * 65536, block k leased per sandbox.
//! ```
//!
//! A volume (a `-v HOST:GUEST` bind) is idmapped with [`owner_map`]: its host owner is the
//! sandbox's root, so what the sandbox's root writes there belongs to the volume's owner on the
//! host. [`for_sandbox`] picks a sandbox's map; [`crate::backend::namespace::mapped`] applies it.

/// The account whose `/etc/subuid` and `/etc/subgid` entries moat uses, as docker's userns-remap
/// uses `dockremap`.
pub const SUBID_ACCOUNT: &str = "moat";

/// How many ids a sandbox gets: 0 ..= 65535 inside, so `nobody` (65534) exists.
pub const SANDBOX_ID_COUNT: u32 = 65_536;

/// The first host id of the range moat reserves when `/etc/subuid` has no `moat` entry: above
/// the range systemd-nspawn allocates containers from (524288 ..= 1879048191) and below the ids
/// some tools read as negative (2^31 and up).
pub const RESERVED_BASE: u32 = 0x7000_0000;

/// How many 65536-id blocks moat reserves from [`RESERVED_BASE`]: as many sandboxes can run at
/// once, each with its own ids.
pub const RESERVED_BLOCKS: u32 = 1024;

const _: () = assert!(
    RESERVED_BASE as u64 + RESERVED_BLOCKS as u64 * SANDBOX_ID_COUNT as u64 <= 0x8000_0000,
    "the reserved range stays below 2^31"
);

/// The file naming each account's subordinate user ids.
pub const SUBUID_FILE: &str = "/etc/subuid";
/// The file naming each account's subordinate group ids.
pub const SUBGID_FILE: &str = "/etc/subgid";

/// A contiguous block of host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first host id.
    pub base: u32,
    /// How many ids.
    pub count: u32,
}

impl IdRange {
    /// One past the last id, widened so `base + count` cannot overflow.
    fn end(self) -> u64 {
        u64::from(self.base) + u64::from(self.count)
    }

    /// Whether the two blocks share an id.
    pub fn overlaps(self, other: IdRange) -> bool {
        u64::from(self.base) < other.end() && u64::from(other.base) < self.end()
    }
}

/// One line of `/etc/subuid` or `/etc/subgid`: `owner:first:count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdEntry {
    /// An account name or a numeric uid, as written.
    pub owner: String,
    /// The ids it may use.
    pub range: IdRange,
}

/// The entries of a subordinate-id file. Blank lines, `#` comments and malformed lines are
/// skipped, as shadow-utils skips them.
pub fn parse_subid(text: &str) -> Vec<SubIdEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut fields = line.split(':');
            let owner = fields.next()?;
            let base = fields.next()?.parse().ok()?;
            let count = fields.next()?.parse().ok()?;
            if owner.is_empty() || count == 0 || fields.next().is_some() {
                return None;
            }
            Some(SubIdEntry { owner: owner.to_owned(), range: IdRange { base, count } })
        })
        .collect()
}

/// Where a sandbox's host ids come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSource {
    /// The `moat` entries of `/etc/subuid` and `/etc/subgid`.
    SubIdFiles,
    /// [`RESERVED_BASE`]: no usable `moat` entry.
    Reserved,
}

/// The host ids sandboxes' ids map to: whole blocks of [`SANDBOX_ID_COUNT`], one per sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPool {
    /// Host uids, a whole number of blocks.
    pub uids: IdRange,
    /// Host gids, a whole number of blocks.
    pub gids: IdRange,
    /// Where they came from.
    pub source: RangeSource,
}

impl IdPool {
    /// How many sandboxes can have ids at once.
    pub fn blocks(&self) -> u32 {
        self.uids.count.min(self.gids.count) / SANDBOX_ID_COUNT
    }

    /// Block `index` (below [`IdPool::blocks`]).
    pub fn block(&self, index: u32) -> SandboxIds {
        let at = |range: IdRange| IdRange {
            base: range.base + index * SANDBOX_ID_COUNT,
            count: SANDBOX_ID_COUNT,
        };
        SandboxIds { uids: at(self.uids), gids: at(self.gids), source: self.source }
    }

    /// Which block a sandbox whose uids start at host id `uid_base` has, if it is one of ours.
    pub fn block_of(&self, uid_base: u32) -> Option<u32> {
        let offset = uid_base.checked_sub(self.uids.base)?;
        let index = offset / SANDBOX_ID_COUNT;
        (offset % SANDBOX_ID_COUNT == 0 && index < self.blocks()).then_some(index)
    }
}

/// The host ids one sandbox's 65536 user and group ids map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxIds {
    /// Host uids for sandbox uids 0 ..= 65535.
    pub uids: IdRange,
    /// Host gids for sandbox gids 0 ..= 65535.
    pub gids: IdRange,
    /// Where they came from.
    pub source: RangeSource,
}

/// Why no range could be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdMapError {
    /// The `moat` entry is too small to hold a sandbox's ids.
    #[error(
        "the {SUBID_ACCOUNT:?} entry of {file} holds {count} ids; a sandbox needs {SANDBOX_ID_COUNT}"
    )]
    EntryTooSmall {
        /// `/etc/subuid` or `/etc/subgid`.
        file: &'static str,
        /// The ids it holds.
        count: u32,
    },
    /// The `moat` entry includes host ids below 65536 (host root, system and login accounts).
    #[error(
        "the {SUBID_ACCOUNT:?} entry of {file} starts at {base}, below {SANDBOX_ID_COUNT}: it would map the sandbox onto ordinary host accounts"
    )]
    EntryTooLow {
        /// `/etc/subuid` or `/etc/subgid`.
        file: &'static str,
        /// Its first id.
        base: u32,
    },
    /// Another account's subordinate ids overlap the reserved range.
    #[error("{file} gives {owner:?} ids {base}..{end} that overlap moat's reserved range {RESERVED_BASE}..; add a {SUBID_ACCOUNT:?} entry of {SANDBOX_ID_COUNT} ids to {file} instead", end = u64::from(*base) + u64::from(*count))]
    ReservedRangeTaken {
        /// `/etc/subuid` or `/etc/subgid`.
        file: &'static str,
        /// The account whose entry overlaps.
        owner: String,
        /// Its first id.
        base: u32,
        /// How many ids it holds.
        count: u32,
    },
}

/// Chooses the pool from the text of `/etc/subuid` and `/etc/subgid` (empty when a file is
/// missing): both `moat` entries when both exist (their whole blocks), else the reserved range.
pub fn choose(subuid: &str, subgid: &str) -> Result<IdPool, IdMapError> {
    let uid_entries = parse_subid(subuid);
    let gid_entries = parse_subid(subgid);
    let own = |entries: &[SubIdEntry]| {
        entries.iter().find(|entry| entry.owner == SUBID_ACCOUNT).map(|entry| entry.range)
    };
    if let (Some(uids), Some(gids)) = (own(&uid_entries), own(&gid_entries)) {
        return Ok(IdPool {
            uids: usable(SUBUID_FILE, uids)?,
            gids: usable(SUBGID_FILE, gids)?,
            source: RangeSource::SubIdFiles,
        });
    }
    let reserved = IdRange { base: RESERVED_BASE, count: RESERVED_BLOCKS * SANDBOX_ID_COUNT };
    for (file, entries) in [(SUBUID_FILE, &uid_entries), (SUBGID_FILE, &gid_entries)] {
        if let Some(entry) = entries.iter().find(|entry| entry.range.overlaps(reserved)) {
            return Err(IdMapError::ReservedRangeTaken {
                file,
                owner: entry.owner.clone(),
                base: entry.range.base,
                count: entry.range.count,
            });
        }
    }
    Ok(IdPool { uids: reserved, gids: reserved, source: RangeSource::Reserved })
}

/// Reads `/etc/subuid` and `/etc/subgid` (a missing file reads as empty) and [`choose`]s.
pub fn choose_for_host() -> Result<IdPool, IdMapError> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    choose(&read(SUBUID_FILE), &read(SUBGID_FILE))
}

/// Set to `1` in the environment of `moat`, it gives new namespace sandboxes the identity map:
/// for a `--rootfs` or volume on a filesystem that cannot be idmapped, or to compare.
pub const IDENTITY_ENV: &str = "MOAT_IDENTITY_ID_MAP";

/// The pool a new namespace sandbox's ids come from ([`crate::backend::namespace::idlease`] leases it a block), or
/// why it gets [`IdMapping::Identity`] instead: [`IDENTITY_ENV`] asks for it, no pool can be
/// chosen, or this host cannot idmap `/usr` (where the default root's system directories come
/// from). `moat run`/`create` print the reason on stderr (through
/// [`crate::backend::isolation::prepare_backend`]) and the sandbox process logs it; `moat doctor` shows
/// both checks.
pub fn for_sandbox() -> Result<IdPool, String> {
    if std::env::var_os(IDENTITY_ENV).is_some_and(|value| value == "1") {
        return Err(format!("{IDENTITY_ENV}=1 asks for it"));
    }
    let pool = choose_for_host().map_err(|err| format!("no unprivileged id range: {err}"))?;
    crate::backend::namespace::idmount::probe(std::path::Path::new("/usr"))
        .map_err(|err| format!("no idmapped mounts: {err}"))?;
    Ok(pool)
}

/// The one line that says a namespace sandbox gets the identity map, and why.
pub fn identity_warning(reason: &str) -> String {
    format!(
        "warning: the namespace sandbox gets the identity id map, so its root is host root over \
         the host files it can see ({reason})"
    )
}

fn usable(file: &'static str, range: IdRange) -> Result<IdRange, IdMapError> {
    if range.count < SANDBOX_ID_COUNT {
        return Err(IdMapError::EntryTooSmall { file, count: range.count });
    }
    if range.base < SANDBOX_ID_COUNT {
        return Err(IdMapError::EntryTooLow { file, base: range.base });
    }
    Ok(IdRange { base: range.base, count: range.count / SANDBOX_ID_COUNT * SANDBOX_ID_COUNT })
}

/// What a sandbox's user namespace maps its ids to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMapping {
    /// Every id to itself: the sandbox's root owns host files as host root does. Only on a host
    /// without idmapped mounts or a usable range.
    Identity,
    /// Sandbox ids 0 ..= 65535 onto an unprivileged host range: its root is nobody on the host.
    Range(SandboxIds),
    /// An unprivileged user's map: the sandbox's root is the user ([`crate::backend::namespace::rootless`]).
    Rootless(crate::backend::namespace::rootless::RootlessMap),
}

impl IdMapping {
    /// The text for `/proc/PID/uid_map`.
    pub fn uid_map(&self) -> String {
        match self {
            IdMapping::Identity => crate::backend::namespace::userns::IDENTITY_MAP.to_owned(),
            IdMapping::Range(ids) => map_line(0, ids.uids),
            IdMapping::Rootless(map) => map.uid_map(),
        }
    }

    /// The text for `/proc/PID/gid_map`.
    pub fn gid_map(&self) -> String {
        match self {
            IdMapping::Identity => crate::backend::namespace::userns::IDENTITY_MAP.to_owned(),
            IdMapping::Range(ids) => map_line(0, ids.gids),
            IdMapping::Rootless(map) => map.gid_map(),
        }
    }
}

/// One map line: ids `inside ..` of the namespace are host ids `range`.
pub fn map_line(inside: u32, range: IdRange) -> String {
    format!("{inside} {} {}\n", range.base, range.count)
}

/// The map of an idmapped mount that makes the host id `owner` the sandbox's root (host id
/// `sandbox_root`) and leaves every other id unmapped: files the sandbox's root creates through
/// the mount belong to `owner` on disk; files of other owners show as `nobody`.
pub fn owner_map(owner: u32, sandbox_root: u32) -> String {
    format!("{owner} {sandbox_root} 1\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lines_parse_names_and_numbers_and_skip_junk() {
        let text = "# comment\n\nalice:100000:65536\n1001:165536:65536\nbad\nx:1:y\nz::5\nw:5:0\n";
        let entries = parse_subid(text);
        assert_eq!(
            entries,
            [
                SubIdEntry {
                    owner: "alice".into(),
                    range: IdRange { base: 100_000, count: 65_536 }
                },
                SubIdEntry {
                    owner: "1001".into(),
                    range: IdRange { base: 165_536, count: 65_536 }
                },
            ]
        );
    }

    #[test]
    fn moat_entries_are_preferred_and_cut_to_whole_blocks() {
        let uids = "alice:100000:65536\nmoat:200000:140000\n";
        let pool = choose(uids, "moat:300000:65536\n").unwrap();
        assert_eq!(pool.source, RangeSource::SubIdFiles);
        assert_eq!(pool.uids, IdRange { base: 200_000, count: 2 * SANDBOX_ID_COUNT });
        assert_eq!(pool.gids, IdRange { base: 300_000, count: SANDBOX_ID_COUNT });
        assert_eq!(pool.blocks(), 1, "as many blocks as the smaller entry holds");
        let ids = pool.block(0);
        assert_eq!(ids.uids, IdRange { base: 200_000, count: SANDBOX_ID_COUNT });
        assert_eq!(ids.gids, IdRange { base: 300_000, count: SANDBOX_ID_COUNT });
    }

    #[test]
    fn without_both_moat_entries_the_reserved_range_is_used() {
        let pool = choose("moat:200000:65536\n", "").unwrap();
        assert_eq!(pool.source, RangeSource::Reserved);
        assert_eq!(pool.blocks(), RESERVED_BLOCKS);
        let last = pool.block(RESERVED_BLOCKS - 1);
        assert_eq!(last.uids.base, RESERVED_BASE + (RESERVED_BLOCKS - 1) * SANDBOX_ID_COUNT);
        assert_eq!(last.gids, last.uids);
    }

    #[test]
    fn a_block_is_found_from_its_base_only_on_a_block_boundary() {
        let pool = choose("moat:200000:196608\n", "moat:900000:196608\n").unwrap();
        assert_eq!(pool.block_of(pool.block(2).uids.base), Some(2));
        assert_eq!(pool.block_of(200_000), Some(0));
        assert_eq!(pool.block_of(200_001), None);
        assert_eq!(pool.block_of(199_999), None);
        assert_eq!(pool.block_of(200_000 + 3 * SANDBOX_ID_COUNT), None);
    }

    #[test]
    fn a_moat_entry_too_small_or_too_low_is_refused() {
        assert_eq!(
            choose("moat:200000:1000\n", "moat:200000:65536\n"),
            Err(IdMapError::EntryTooSmall { file: SUBUID_FILE, count: 1000 })
        );
        assert_eq!(
            choose("moat:200000:65536\n", "moat:0:65536\n"),
            Err(IdMapError::EntryTooLow { file: SUBGID_FILE, base: 0 })
        );
    }

    #[test]
    fn another_accounts_entry_over_the_reserved_range_is_refused() {
        let end = RESERVED_BASE + RESERVED_BLOCKS * SANDBOX_ID_COUNT;
        let taken = format!("bob:{}:10\n", end - 1);
        let err = choose("", &taken).unwrap_err();
        assert!(matches!(err, IdMapError::ReservedRangeTaken { file: SUBGID_FILE, .. }), "{err}");
        assert!(choose(&format!("bob:{end}:10\n"), "").is_ok());
    }

    #[test]
    fn overlap_is_exact_at_the_edges() {
        let a = IdRange { base: 10, count: 10 };
        assert!(a.overlaps(IdRange { base: 19, count: 1 }));
        assert!(!a.overlaps(IdRange { base: 20, count: 1 }));
        assert!(!a.overlaps(IdRange { base: 0, count: 10 }));
        assert!(
            IdRange { base: u32::MAX, count: u32::MAX }
                .overlaps(IdRange { base: u32::MAX, count: 1 })
        );
    }

    #[test]
    fn map_text_is_one_line_per_range() {
        let mapping = IdMapping::Range(choose("", "").unwrap().block(0));
        assert_eq!(mapping.uid_map(), format!("0 {RESERVED_BASE} 65536\n"));
        assert_eq!(IdMapping::Identity.gid_map(), "0 0 4294967295\n");
        assert_eq!(owner_map(1000, RESERVED_BASE), format!("1000 {RESERVED_BASE} 1\n"));
    }
}
