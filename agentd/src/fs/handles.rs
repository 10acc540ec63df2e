//! The table of open file and directory handles (PROTOCOL.md §9.1, "Handles").
//!
//! ```text
//!  handle (u64, from 1, never reused) ──► Entry { owner_id, owner slot, File | Dir }
//!  per slot: at most MAX_HANDLES_PER_SLOT entries
//! ```
//!
//! Each handle belongs to the relay slot of the correlation id that opened it
//! ([`Slot::of_id`]); every later use must come from an id of the same slot, and an id in no slot
//! matches nothing. A client's handles are dropped when its id range is released. The table is
//! shared (`Arc<Mutex<..>>`) between the service and its blocking workers; its lock is held only
//! for lookups and updates, never across I/O. Open objects are `Arc`s, so a stream that is still
//! reading a handle keeps its file open after the handle is closed.
//!
//! This module owns ownership, kind and access checks; it does not perform I/O.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, ReadDir};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use moat_protocol::relay::{IdRange, Slot};

/// Open handles one relay slot may hold at once.
pub(crate) const MAX_HANDLES_PER_SLOT: usize = 1024;

/// Why a handle cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HandleError {
    /// No such open handle.
    #[error("invalid handle: {0}")]
    Unknown(u64),
    /// The handle belongs to another relay client (or the caller's id is in no slot).
    #[error("handle {0} is owned by a different relay client")]
    NotOwner(u64),
    /// A read on a handle opened without `read`.
    #[error("handle {0} is not open for reading")]
    NotReadable(u64),
    /// A write on a handle opened without `write` or `append`.
    #[error("handle {0} is not open for writing")]
    NotWritable(u64),
    /// A file operation on a directory handle.
    #[error("handle {0} is a directory")]
    IsDir(u64),
    /// A directory operation on a file handle.
    #[error("handle {0} is a file")]
    IsFile(u64),
    /// The opener's slot already holds [`MAX_HANDLES_PER_SLOT`] handles.
    #[error("too many open filesystem handles for relay client: {0}")]
    TooMany(usize),
}

/// An open file.
#[derive(Debug)]
pub(crate) struct OpenFile {
    /// The file.
    pub(crate) file: File,
    /// The request path it was opened under (reported by `FStat`).
    pub(crate) path: String,
    /// Opened with `read`.
    pub(crate) readable: bool,
    /// Opened with `write`.
    pub(crate) writable: bool,
    /// Opened with `append`: writes go to the end.
    pub(crate) append: bool,
}

/// An open directory being iterated by `ReadDir`.
#[derive(Debug)]
pub(crate) struct OpenDir {
    /// The iteration state; one `ReadDir` batch at a time.
    pub(crate) entries: Mutex<ReadDir>,
    /// The request path it was opened under.
    pub(crate) path: String,
    /// The agent-side path.
    pub(crate) resolved: PathBuf,
}

/// What a handle refers to.
#[derive(Debug, Clone)]
pub(crate) enum Handle {
    /// A file.
    File(Arc<OpenFile>),
    /// A directory.
    Dir(Arc<OpenDir>),
}

/// The access a file operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// `Read`.
    Read,
    /// `Write`.
    Write,
    /// `FSetStat`: any open file.
    Any,
}

#[derive(Debug)]
struct Entry {
    owner_id: u32,
    owner: Option<Slot>,
    handle: Handle,
}

#[derive(Debug)]
struct Table {
    last: u64,
    entries: BTreeMap<u64, Entry>,
    /// Open handles per owner slot (`None` counts ids in no slot, so they are bounded too).
    per_slot: HashMap<Option<Slot>, usize>,
}

/// The shared handle table.
#[derive(Debug, Clone)]
pub(crate) struct HandleTable {
    inner: Arc<Mutex<Table>>,
}

impl HandleTable {
    /// An empty table; the first handle is 1.
    pub(crate) fn new() -> HandleTable {
        let table = Table { last: 0, entries: BTreeMap::new(), per_slot: HashMap::new() };
        HandleTable { inner: Arc::new(Mutex::new(table)) }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table's invariants hold between statements, so a panicked holder leaves it usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `handle`, owned by the slot of `opener_id`.
    pub(crate) fn insert(&self, opener_id: u32, handle: Handle) -> Result<u64, HandleError> {
        let owner = Slot::of_id(opener_id);
        let mut table = self.lock();
        let count = table.per_slot.get(&owner).copied().unwrap_or(0);
        if count >= MAX_HANDLES_PER_SLOT {
            return Err(HandleError::TooMany(count));
        }
        table.last += 1;
        let number = table.last;
        table.entries.insert(number, Entry { owner_id: opener_id, owner, handle });
        *table.per_slot.entry(owner).or_insert(0) += 1;
        Ok(number)
    }

    /// The handle, if `caller_id` may use it.
    pub(crate) fn get(&self, caller_id: u32, number: u64) -> Result<Handle, HandleError> {
        let table = self.lock();
        let entry = table.entries.get(&number).ok_or(HandleError::Unknown(number))?;
        check_owner(entry, caller_id, number)?;
        Ok(entry.handle.clone())
    }

    /// The open file behind `number`, checked for `access`.
    pub(crate) fn file(
        &self,
        caller_id: u32,
        number: u64,
        access: Access,
    ) -> Result<Arc<OpenFile>, HandleError> {
        match self.get(caller_id, number)? {
            Handle::File(file) => {
                match access {
                    Access::Read if !file.readable => return Err(HandleError::NotReadable(number)),
                    Access::Write if !file.writable && !file.append => {
                        return Err(HandleError::NotWritable(number));
                    }
                    Access::Read | Access::Write | Access::Any => {}
                }
                Ok(file)
            }
            Handle::Dir(_) => Err(HandleError::IsDir(number)),
        }
    }

    /// The open directory behind `number`.
    pub(crate) fn dir(&self, caller_id: u32, number: u64) -> Result<Arc<OpenDir>, HandleError> {
        match self.get(caller_id, number)? {
            Handle::Dir(dir) => Ok(dir),
            Handle::File(_) => Err(HandleError::IsFile(number)),
        }
    }

    /// Removes `number` if `caller_id` may use it, returning what it referred to.
    pub(crate) fn remove(&self, caller_id: u32, number: u64) -> Result<Handle, HandleError> {
        let mut table = self.lock();
        let entry = table.entries.get(&number).ok_or(HandleError::Unknown(number))?;
        check_owner(entry, caller_id, number)?;
        let entry = table.entries.remove(&number).ok_or(HandleError::Unknown(number))?;
        table.forget(entry.owner);
        Ok(entry.handle)
    }

    /// Closes every handle opened by an id in `range`; returns how many.
    pub(crate) fn release(&self, range: IdRange) -> usize {
        let mut table = self.lock();
        let doomed: Vec<u64> = table
            .entries
            .iter()
            .filter(|(_, entry)| range.contains(entry.owner_id))
            .map(|(number, _)| *number)
            .collect();
        for number in &doomed {
            if let Some(entry) = table.entries.remove(number) {
                table.forget(entry.owner);
            }
        }
        doomed.len()
    }

    /// Closes every handle; returns how many.
    pub(crate) fn clear(&self) -> usize {
        let mut table = self.lock();
        let closed = table.entries.len();
        table.entries.clear();
        table.per_slot.clear();
        closed
    }
}

impl Table {
    fn forget(&mut self, owner: Option<Slot>) {
        if let Some(count) = self.per_slot.get_mut(&owner) {
            *count -= 1;
            if *count == 0 {
                self.per_slot.remove(&owner);
            }
        }
    }
}

fn check_owner(entry: &Entry, caller_id: u32, number: u64) -> Result<(), HandleError> {
    match (entry.owner, Slot::of_id(caller_id)) {
        (Some(owner), Some(caller)) if owner == caller => Ok(()),
        _ => Err(HandleError::NotOwner(number)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::testing::TempRoot;

    const SLOT0_ID: u32 = 5;
    const SLOT1_ID: u32 = 33_554_432 + 5;

    fn file_handle(tmp: &TempRoot, readable: bool, writable: bool) -> Handle {
        let path = tmp.path().join("f");
        let file = File::options().create(true).append(true).read(true).open(path).unwrap();
        let path = "/f".to_owned();
        Handle::File(Arc::new(OpenFile { file, path, readable, writable, append: false }))
    }

    #[test]
    fn handles_count_up_from_one() {
        let tmp = TempRoot::new();
        let table = HandleTable::new();
        assert_eq!(table.insert(SLOT0_ID, file_handle(&tmp, true, false)), Ok(1));
        assert_eq!(table.insert(SLOT0_ID, file_handle(&tmp, true, false)), Ok(2));
    }

    #[test]
    fn closed_handle_numbers_are_not_reused() {
        let tmp = TempRoot::new();
        let table = HandleTable::new();
        let first = table.insert(SLOT0_ID, file_handle(&tmp, true, false)).unwrap();
        table.remove(SLOT0_ID, first).unwrap();
        assert_eq!(table.insert(SLOT0_ID, file_handle(&tmp, true, false)), Ok(first + 1));
    }

    #[test]
    fn other_slot_is_refused() {
        let tmp = TempRoot::new();
        let table = HandleTable::new();
        let h = table.insert(SLOT0_ID, file_handle(&tmp, true, false)).unwrap();
        assert_eq!(table.get(SLOT1_ID, h).unwrap_err(), HandleError::NotOwner(h));
        assert!(table.get(SLOT0_ID + 1, h).is_ok());
    }

    #[test]
    fn id_in_no_slot_matches_nothing() {
        let tmp = TempRoot::new();
        let table = HandleTable::new();
        let h = table.insert(0, file_handle(&tmp, true, false)).unwrap();
        assert_eq!(table.get(0, h).unwrap_err(), HandleError::NotOwner(h));
    }

    #[test]
    fn access_is_checked_against_open_options() {
        let tmp = TempRoot::new();
        let table = HandleTable::new();
        let h = table.insert(SLOT0_ID, file_handle(&tmp, false, false)).unwrap();
        assert_eq!(table.file(SLOT0_ID, h, Access::Read).unwrap_err(), HandleError::NotReadable(h));
        assert_eq!(
            table.file(SLOT0_ID, h, Access::Write).unwrap_err(),
            HandleError::NotWritable(h)
        );
        assert!(table.file(SLOT0_ID, h, Access::Any).is_ok());
        assert_eq!(table.dir(SLOT0_ID, h).unwrap_err(), HandleError::IsFile(h));
    }

    #[test]
    fn limit_is_per_slot_and_frees_on_close() {
        let tmp = TempRoot::new();
        let table = HandleTable::new();
        let Handle::File(shared) = file_handle(&tmp, true, false) else { unreachable!() };
        for _ in 0..MAX_HANDLES_PER_SLOT {
            table.insert(SLOT0_ID, Handle::File(Arc::clone(&shared))).unwrap();
        }
        let over = table.insert(SLOT0_ID, Handle::File(Arc::clone(&shared)));
        assert_eq!(over, Err(HandleError::TooMany(MAX_HANDLES_PER_SLOT)));
        assert!(table.insert(SLOT1_ID, Handle::File(Arc::clone(&shared))).is_ok());
        table.remove(SLOT0_ID, 1).unwrap();
        assert!(table.insert(SLOT0_ID, Handle::File(shared)).is_ok());
    }

    #[test]
    fn release_closes_only_the_range() {
        let tmp = TempRoot::new();
        let table = HandleTable::new();
        let mine = table.insert(SLOT0_ID, file_handle(&tmp, true, false)).unwrap();
        let theirs = table.insert(SLOT1_ID, file_handle(&tmp, true, false)).unwrap();
        let slot0 = Slot::of_id(SLOT0_ID).unwrap().range();
        assert_eq!(table.release(slot0), 1);
        assert_eq!(table.get(SLOT0_ID, mine).unwrap_err(), HandleError::Unknown(mine));
        assert!(table.get(SLOT1_ID, theirs).is_ok());
        assert_eq!(table.clear(), 1);
        assert_eq!(table.get(SLOT1_ID, theirs).unwrap_err(), HandleError::Unknown(theirs));
    }
}
