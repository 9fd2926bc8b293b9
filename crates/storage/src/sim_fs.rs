//! An in-memory [`FileSystem`] that models what a crash does to a disk, for tests and
//! concord-sim.
//!
//! Every file has the bytes a process sees and the bytes that would survive a crash.
//! `sync_data` makes a file's writes and truncations durable; `sync_dir` makes the
//! creations, renames and removals in a directory durable. Until then a crash undoes
//! them: [`SimFs::crash`] keeps only what was synced, and [`SimFs::crash_torn`] also keeps
//! a seeded-random prefix of each file's unsynced writes, cutting the last one kept at
//! a random byte (a torn write), and a random prefix of the unsynced directory changes.
//! [`SimFs::crash_at_sync`] loses power in the middle of a write (when a sync starts).
//! [`SimFs::flip_bit`] damages stored data; [`SimFs::fail_next_sync`] makes a sync fail
//! the way Linux does: the unsynced data is never made durable by a later sync.
//!
//! Handles opened before a crash stop working (their process died), as do directory
//! locks. Directories themselves are durable as soon as they are created. Everything is
//! deterministic for a given seed and sequence of calls.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{DirLock, File, FileSystem};

/// A simulated disk. Clones share the same disk.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

/// Counters of what the simulated disk was asked to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimFsStats {
    /// Successful `sync_data` calls.
    pub data_syncs: u64,
    /// Successful `sync_dir` calls.
    pub dir_syncs: u64,
    /// Bytes passed to `write_at`.
    pub bytes_written: u64,
    /// Simulated crashes.
    pub crashes: u64,
}

#[derive(Clone)]
struct SimState {
    /// splitmix64 state, advanced by every random choice.
    rng: u64,
    /// Increases at every crash; handles from an older epoch are dead.
    epoch: u64,
    next_file_id: u64,
    files: BTreeMap<u64, FileData>,
    /// The namespace a process sees.
    names: BTreeMap<PathBuf, u64>,
    /// The namespace that survives a crash.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Namespace changes not yet made durable, oldest first.
    pending_names: Vec<NameChange>,
    dirs: BTreeSet<PathBuf>,
    /// How many of the next syncs (of either kind) fail.
    failing_syncs: u32,
    /// How many of the next directory syncs fail.
    failing_dir_syncs: u32,
    /// Crash (torn if `.1`) when a sync starts after `.0` more syncs.
    crash_at_sync: Option<(u32, bool)>,
    /// Locked directories and the token of the guard that holds each.
    locks: BTreeMap<PathBuf, u64>,
    next_lock_token: u64,
    stats: SimFsStats,
}

#[derive(Clone, Default)]
struct FileData {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Changes since the last sync, oldest first.
    pending: Vec<FileChange>,
    /// Open handles of the current epoch.
    handles: usize,
}

#[derive(Clone)]
enum FileChange {
    Write { offset: u64, data: Vec<u8> },
    Truncate { len: u64 },
}

#[derive(Clone)]
enum NameChange {
    Link { path: PathBuf, id: u64 },
    Unlink { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf, id: u64 },
}

impl NameChange {
    fn touches_dir(&self, dir: &Path) -> bool {
        let in_dir = |path: &Path| path.parent() == Some(dir);
        match self {
            NameChange::Link { path, .. } | NameChange::Unlink { path } => in_dir(path),
            NameChange::Rename { from, to, .. } => in_dir(from) || in_dir(to),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            NameChange::Link { path, id } => {
                names.insert(path.clone(), *id);
            }
            NameChange::Unlink { path } => {
                names.remove(path);
            }
            NameChange::Rename { from, to, id } => {
                names.remove(from);
                names.insert(to.clone(), *id);
            }
        }
    }

    fn references(&self, file_id: u64) -> bool {
        match self {
            NameChange::Link { id, .. } | NameChange::Rename { id, .. } => *id == file_id,
            NameChange::Unlink { .. } => false,
        }
    }
}

impl FileChange {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            FileChange::Write { offset, data } => write_into(bytes, *offset, data),
            FileChange::Truncate { len } => bytes.resize(*len as usize, 0),
        }
    }
}

fn write_into(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let offset = offset as usize;
    let end = offset + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset..end].copy_from_slice(data);
}

impl SimState {
    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random number in `0..=max`.
    fn random_up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_random();
        }
        self.next_random() % (max + 1)
    }

    fn file(&mut self, id: u64) -> &mut FileData {
        self.files.get_mut(&id).expect("file data of a live name")
    }

    /// Drops file data nothing can reach any more.
    fn collect_garbage(&mut self) {
        let reachable: BTreeSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        let pending = &self.pending_names;
        self.files.retain(|id, data| {
            data.handles > 0
                || reachable.contains(id)
                || pending.iter().any(|change| change.references(*id))
        });
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if self.dirs.contains(parent) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory for {}", path.display()),
            )),
        }
    }

    /// The machine loses power (see [`SimFs::crash`] and [`SimFs::crash_torn`]).
    fn crash(&mut self, torn: bool) {
        self.epoch += 1;
        self.stats.crashes += 1;
        self.locks.clear();
        self.crash_at_sync = None;
        let pending_names = std::mem::take(&mut self.pending_names);
        let kept_names = if torn {
            self.random_up_to(pending_names.len() as u64) as usize
        } else {
            0
        };
        let mut durable_names = std::mem::take(&mut self.durable_names);
        for change in &pending_names[..kept_names] {
            change.apply(&mut durable_names);
        }
        self.names = durable_names.clone();
        self.durable_names = durable_names;
        let ids: Vec<u64> = self.files.keys().copied().collect();
        for id in ids {
            let pending = std::mem::take(&mut self.file(id).pending);
            if torn && !pending.is_empty() {
                let kept = self.random_up_to(pending.len() as u64) as usize;
                let torn_bytes = match pending.get(kept) {
                    Some(FileChange::Write { data, .. }) if !data.is_empty() => {
                        Some(self.random_up_to(data.len() as u64 - 1) as usize)
                    }
                    _ => None,
                };
                let file = self.file(id);
                for change in &pending[..kept] {
                    change.apply(&mut file.durable);
                }
                if let (Some(cut), Some(FileChange::Write { offset, data })) =
                    (torn_bytes, pending.get(kept))
                {
                    write_into(&mut file.durable, *offset, &data[..cut]);
                }
            }
            let file = self.file(id);
            file.current = file.durable.clone();
            file.handles = 0;
        }
        self.collect_garbage();
    }

    /// If a crash was armed for the next sync, crashes now and returns the error the
    /// dying process would see.
    fn maybe_crash_at_sync(&mut self) -> io::Result<()> {
        match self.crash_at_sync {
            Some((0, torn)) => {
                self.crash(torn);
                Err(io::Error::other("simulated power loss during fsync"))
            }
            Some((skips, torn)) => {
                self.crash_at_sync = Some((skips - 1, torn));
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn take_failing_sync(&mut self) -> bool {
        if self.failing_syncs > 0 {
            self.failing_syncs -= 1;
            return true;
        }
        false
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

fn simulated_sync_failure() -> io::Error {
    io::Error::other("simulated fsync failure (EIO)")
}

impl SimFs {
    /// An empty disk whose random choices (torn writes) come from `seed`.
    pub fn new(seed: u64) -> Self {
        SimFs {
            state: Arc::new(Mutex::new(SimState {
                rng: seed,
                epoch: 0,
                next_file_id: 1,
                files: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                pending_names: Vec::new(),
                dirs: BTreeSet::from([PathBuf::from("/")]),
                failing_syncs: 0,
                failing_dir_syncs: 0,
                crash_at_sync: None,
                locks: BTreeMap::new(),
                next_lock_token: 1,
                stats: SimFsStats::default(),
            })),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The machine loses power: everything not synced is gone, open handles and locks
    /// die.
    pub fn crash(&self) {
        self.crash_with(false);
    }

    /// As [`SimFs::crash`], but each file keeps a random prefix of its unsynced writes,
    /// the last of them cut at a random byte, and the directory keeps a random prefix of
    /// its unsynced changes.
    pub fn crash_torn(&self) {
        self.crash_with(true);
    }

    fn crash_with(&self, torn: bool) {
        self.lock_state().crash(torn);
    }

    /// Flips bit `bit` (0..8) of byte `offset` of `path`, in what is stored and in what
    /// processes see.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut state = self.lock_state();
        let id = *state.names.get(path).ok_or_else(|| not_found(path))?;
        let file = state.file(id);
        let offset = offset as usize;
        if offset >= file.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no byte {offset}", path.display()),
            ));
        }
        file.current[offset] ^= 1 << (bit % 8);
        if offset < file.durable.len() {
            file.durable[offset] ^= 1 << (bit % 8);
        }
        Ok(())
    }

    /// The next `sync_data` or `sync_dir` fails; the changes it would have made durable
    /// never become durable (a later sync does not save them).
    pub fn fail_next_sync(&self) {
        self.lock_state().failing_syncs += 1;
    }

    /// The machine loses power when the next `sync_data` or `sync_dir` starts: the
    /// sync returns an error and the disk is left as [`SimFs::crash_torn`] (if `torn`)
    /// or [`SimFs::crash`] leaves it. This is a crash in the middle of a write: what was
    /// being written may be partly on disk.
    pub fn crash_at_next_sync(&self, torn: bool) {
        self.crash_at_sync(0, torn);
    }

    /// As [`SimFs::crash_at_next_sync`], but `skip` more syncs (of files or
    /// directories) complete first.
    pub fn crash_at_sync(&self, skip: u32, torn: bool) {
        self.lock_state().crash_at_sync = Some((skip, torn));
    }

    /// The next `sync_dir` fails, as [`SimFs::fail_next_sync`] (file syncs are not
    /// affected).
    pub fn fail_next_dir_sync(&self) {
        self.lock_state().failing_dir_syncs += 1;
    }

    /// Cuts `path` to `len` bytes, durably (as if a crash had torn it there).
    pub fn truncate_durably(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.lock_state();
        let id = *state.names.get(path).ok_or_else(|| not_found(path))?;
        let file = state.file(id);
        file.current.truncate(len as usize);
        file.durable.truncate(len as usize);
        file.pending.clear();
        Ok(())
    }

    /// What a process would read from `path` now, or None if there is no such file.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock_state();
        let id = state.names.get(path)?;
        Some(state.files[id].current.clone())
    }

    /// The files a process sees, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock_state().names.keys().cloned().collect()
    }

    /// An independent copy of this disk: same files, durability state and random state.
    /// Handles and locks are not copied.
    pub fn fork(&self) -> SimFs {
        let mut copy = self.lock_state().clone();
        copy.epoch += 1;
        copy.locks.clear();
        for file in copy.files.values_mut() {
            file.handles = 0;
        }
        copy.collect_garbage();
        SimFs {
            state: Arc::new(Mutex::new(copy)),
        }
    }

    /// Counters of syncs, bytes written and crashes so far.
    pub fn stats(&self) -> SimFsStats {
        self.lock_state().stats
    }
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock_state();
        f.debug_struct("SimFs")
            .field("files", &state.names.len())
            .field("epoch", &state.epoch)
            .finish()
    }
}

/// A handle on a simulated file.
struct SimFile {
    state: Arc<Mutex<SimState>>,
    id: u64,
    epoch: u64,
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimFile({})", self.path.display())
    }
}

impl SimFile {
    fn with_data<T>(
        &self,
        action: impl FnOnce(&mut SimState, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.epoch != self.epoch {
            return Err(io::Error::other(format!(
                "{}: handle opened before a simulated crash",
                self.path.display()
            )));
        }
        action(&mut state, self.id)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.epoch == self.epoch {
            if let Some(file) = state.files.get_mut(&self.id) {
                file.handles -= 1;
            }
            state.collect_garbage();
        }
    }
}

impl File for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with_data(|state, id| {
            let current = &state.files[&id].current;
            let end = offset as usize + buf.len();
            if end > current.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                ));
            }
            buf.copy_from_slice(&current[offset as usize..end]);
            Ok(())
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with_data(|state, id| {
            state.stats.bytes_written += data.len() as u64;
            let file = state.file(id);
            write_into(&mut file.current, offset, data);
            file.pending.push(FileChange::Write {
                offset,
                data: data.to_vec(),
            });
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with_data(|state, id| Ok(state.files[&id].current.len() as u64))
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.with_data(|state, id| {
            let file = state.file(id);
            file.current.resize(len as usize, 0);
            file.pending.push(FileChange::Truncate { len });
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_data(|state, id| {
            state.maybe_crash_at_sync()?;
            let failed = state.take_failing_sync();
            let file = state.file(id);
            let pending = std::mem::take(&mut file.pending);
            if failed {
                return Err(simulated_sync_failure());
            }
            for change in &pending {
                change.apply(&mut file.durable);
            }
            state.stats.data_syncs += 1;
            Ok(())
        })
    }
}

struct SimLockGuard {
    state: Arc<Mutex<SimState>>,
    dir: PathBuf,
    token: u64,
}

impl Drop for SimLockGuard {
    fn drop(&mut self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.locks.get(&self.dir) == Some(&self.token) {
            state.locks.remove(&self.dir);
        }
    }
}

impl SimFs {
    fn open_handle(&self, state: &mut SimState, path: &Path, id: u64) -> Arc<dyn File> {
        state.file(id).handles += 1;
        Arc::new(SimFile {
            state: self.state.clone(),
            id,
            epoch: state.epoch,
            path: path.to_owned(),
        })
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        for ancestor in dir.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                state.dirs.insert(ancestor.to_owned());
            }
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        let mut state = self.lock_state();
        state.check_parent(path)?;
        let id = state.next_file_id;
        state.next_file_id += 1;
        state.files.insert(id, FileData::default());
        state.names.insert(path.to_owned(), id);
        state.pending_names.push(NameChange::Link {
            path: path.to_owned(),
            id,
        });
        let handle = self.open_handle(&mut state, path, id);
        state.collect_garbage();
        Ok(handle)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        let mut state = self.lock_state();
        let id = *state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(self.open_handle(&mut state, path, id))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.check_parent(to)?;
        let id = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_owned(), id);
        state.pending_names.push(NameChange::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
            id,
        });
        state.collect_garbage();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.names.remove(path).ok_or_else(|| not_found(path))?;
        state.pending_names.push(NameChange::Unlink {
            path: path.to_owned(),
        });
        state.collect_garbage();
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock_state();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.maybe_crash_at_sync()?;
        let failed = if state.failing_dir_syncs > 0 {
            state.failing_dir_syncs -= 1;
            true
        } else {
            state.take_failing_sync()
        };
        let pending = std::mem::take(&mut state.pending_names);
        let (in_dir, others): (Vec<NameChange>, Vec<NameChange>) = pending
            .into_iter()
            .partition(|change| change.touches_dir(dir));
        state.pending_names = others;
        if failed {
            state.collect_garbage();
            return Err(simulated_sync_failure());
        }
        for change in &in_dir {
            change.apply(&mut state.durable_names);
        }
        state.stats.dir_syncs += 1;
        state.collect_garbage();
        Ok(())
    }

    fn lock(&self, dir: &Path) -> io::Result<DirLock> {
        let mut state = self.lock_state();
        if state.locks.contains_key(dir) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked", dir.display()),
            ));
        }
        let token = state.next_lock_token;
        state.next_lock_token += 1;
        state.locks.insert(dir.to_owned(), token);
        Ok(DirLock::new(Box::new(SimLockGuard {
            state: self.state.clone(),
            dir: dir.to_owned(),
            token,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/data")
    }

    // A crash keeps exactly the synced bytes of a file whose creation was made durable,
    // and loses a file whose directory entry was never synced.
    #[test]
    fn crash_keeps_only_synced_data_and_names() {
        let fs = SimFs::new(1);
        fs.create_dir_all(&dir()).unwrap();
        let kept = fs.create(&dir().join("kept")).unwrap();
        kept.write_at(0, b"synced").unwrap();
        kept.sync_data().unwrap();
        fs.sync_dir(&dir()).unwrap();
        kept.write_at(6, b" lost").unwrap();
        let lost = fs.create(&dir().join("lost")).unwrap();
        lost.write_at(0, b"x").unwrap();
        lost.sync_data().unwrap();
        fs.crash();
        assert_eq!(fs.paths(), vec![dir().join("kept")]);
        assert_eq!(fs.file_bytes(&dir().join("kept")).unwrap(), b"synced");
        assert!(kept.len().is_err(), "handles die with the crash");
    }

    // A torn crash keeps the synced bytes plus a prefix of the unsynced writes, and the
    // same seed tears the same way.
    #[test]
    fn torn_crash_keeps_a_prefix_deterministically() {
        let run = |seed| {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).unwrap();
            let file = fs.create(&dir().join("log")).unwrap();
            fs.sync_dir(&dir()).unwrap();
            file.write_at(0, b"0123").unwrap();
            file.sync_data().unwrap();
            file.write_at(4, b"456789").unwrap();
            file.write_at(10, b"abcdef").unwrap();
            fs.crash_torn();
            fs.file_bytes(&dir().join("log")).unwrap()
        };
        let mut lengths = BTreeSet::new();
        for seed in 0..64 {
            let bytes = run(seed);
            assert_eq!(bytes, run(seed));
            assert!(b"0123456789abcdef".starts_with(&bytes), "{bytes:?}");
            assert!(bytes.len() >= 4);
            lengths.insert(bytes.len());
        }
        assert!(lengths.len() > 4, "tears land at many offsets: {lengths:?}");
    }

    // A failed sync loses its writes for good: a later successful sync does not make
    // them durable.
    #[test]
    fn failed_sync_never_saves_its_writes() {
        let fs = SimFs::new(1);
        fs.create_dir_all(&dir()).unwrap();
        let file = fs.create(&dir().join("f")).unwrap();
        fs.sync_dir(&dir()).unwrap();
        file.write_at(0, b"aaaa").unwrap();
        fs.fail_next_sync();
        assert!(file.sync_data().is_err());
        file.write_at(4, b"bbbb").unwrap();
        file.sync_data().unwrap();
        fs.crash();
        assert_eq!(
            fs.file_bytes(&dir().join("f")).unwrap(),
            b"\0\0\0\0bbbb".to_vec()
        );
    }

    // A directory lock excludes a second holder until dropped or until a crash.
    #[test]
    fn lock_is_exclusive() {
        let fs = SimFs::new(1);
        fs.create_dir_all(&dir()).unwrap();
        let guard = fs.lock(&dir()).unwrap();
        assert_eq!(
            fs.lock(&dir()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(guard);
        let _again = fs.lock(&dir()).unwrap();
        fs.crash();
        let _after_crash = fs.lock(&dir()).unwrap();
    }
}
