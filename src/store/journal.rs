//! The audit journal: the store's audit records, appended to segment files in `<store>/audit/`
//! rather than kept in a sled tree.
//!
//! Why not sled: an audit trail is written once per signature and read rarely, in order. In sled
//! every record is a tree insert whose log buffers, page fragments and epoch garbage stay in the
//! daemon's memory: a signing benchmark grew the agent from 10.6 MiB to 29-64 MiB. Appending to a
//! file costs one `write(2)` per record and no memory.
//!
//! Layout:
//! - segment files `NNNNNNNNNNNNNNNNNNNN.log`, named by the (20-digit, zero-padded) sequence
//!   number of their first record; the last one is appended to, and a new one is started every
//!   [`SEGMENT_RECORDS`] records or [`SEGMENT_BYTES`] bytes (a segment of records moved from an
//!   older store's sled tree may be larger);
//! - each record is a frame `len: u32 BE ‖ seq: u64 BE ‖ envelope`, where `len` counts the bytes
//!   after it and `envelope` is the store's versioned, checksummed record ([`super::records`]);
//!   sequence numbers are consecutive (`last + 1`), so `next - head` is the number of records;
//! - `HEAD` holds the oldest sequence number kept: pruning moves it forward (written to a
//!   temporary file, synced and renamed), then deletes the segments wholly below it.
//!
//! Anchor: while the store has its audit key, the journal rewrites its anchor (see
//! [`super::audit_key`]) after every synced append, after each background sync and before a
//! prune moves `HEAD`, naming only records already on disk.
//!
//! A *gapped* journal (the retained refusals and changes, `<store>/audit/retained/`) keeps the
//! sequence numbers of the trail it copies, so its records are counted by reading them (once,
//! then kept) rather than as `next - head`.
//!
//! Durability: [`Journal::append`] with `sync` calls `fdatasync` before returning; without it the
//! record is in the kernel's page cache when `append` returns (so it survives a crash of the
//! daemon) and a background thread syncs it within [`SYNC_EVERY`]. A frame cut short by a power
//! failure at the end of the last segment is cut off on the next open; damage anywhere else is
//! reported as a corrupt record when read.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::audit_key::{Anchor, AnchorFile, AuditKey};
use super::error::{CorruptError, Result, StoreError};
use super::records::{AUDIT_V, decode, encode, unwrap_envelope};
use super::types::{AuditEntry, AuditEvent};

/// Records per segment file before a new one is started.
pub(crate) const SEGMENT_RECORDS: u64 = 8_192;
/// Bytes per segment file before a new one is started: the last segment is read whole on open.
const SEGMENT_BYTES: u64 = 1024 * 1024;
/// Largest frame accepted when reading (`len` field); audit records are a few hundred bytes.
const MAX_FRAME: u32 = 1024 * 1024;
/// How long an unsynced append may wait for `fdatasync`.
pub(crate) const SYNC_EVERY: Duration = Duration::from_millis(500);
/// Frame header: `len` and `seq`.
const HEADER: usize = 12;
/// The sequence number of the first record of a new journal.
const FIRST_SEQ: u64 = 1;
const HEAD_FILE: &str = "HEAD";
const HEAD_TMP: &str = "HEAD.tmp";

/// The file a segment starting at `first` lives in.
fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// One frame's bytes.
pub(crate) fn frame(seq: u64, envelope: &[u8]) -> Vec<u8> {
    let len = u32::try_from(8 + envelope.len()).expect("audit records are far below 4 GiB");
    let mut out = Vec::with_capacity(HEADER + envelope.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(envelope);
    out
}

/// What reading one frame from a stream gave.
enum Next {
    /// A whole frame: its sequence number and envelope.
    Frame(u64, Vec<u8>),
    /// Clean end of the stream.
    End,
    /// A frame cut short, or a length that cannot be right: where the damage starts.
    Torn,
}

fn read_frame(r: &mut impl Read) -> io::Result<Next> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) => return Ok(if got == 0 { Next::End } else { Next::Torn }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    if !(8..=MAX_FRAME).contains(&len) {
        return Ok(Next::Torn);
    }
    let seq = u64::from_be_bytes(header[4..].try_into().expect("8 bytes"));
    let mut envelope = vec![0u8; len as usize - 8];
    match r.read_exact(&mut envelope) {
        Ok(()) => Ok(Next::Frame(seq, envelope)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Next::Torn),
        Err(e) => Err(e),
    }
}

/// The segment being appended to.
struct Active {
    file: Arc<File>,
    first: u64,
    records: u64,
    len: u64,
}

struct State {
    /// First sequence number of every segment file, oldest first; the last is `active`'s.
    segments: VecDeque<u64>,
    active: Option<Active>,
    /// The next record's sequence number.
    next: u64,
    /// The oldest sequence number kept.
    head: u64,
    last: Option<AuditEntry>,
    /// `last`'s envelope, for the anchor.
    last_env: Option<Vec<u8>>,
    /// Appended since the last `fdatasync`.
    dirty: bool,
    /// Records kept, once counted (gapped journals only).
    count: Option<u64>,
}

/// Writes the anchor (see [`super::audit_key`]) while the store has its audit key.
struct AnchorWriter {
    /// The anchor file, in the store directory; `None` until first written.
    file: Option<AnchorFile>,
    key: Option<(u64, AuditKey)>,
    counter: u64,
    /// The newest record anchored: sequence number and envelope hash.
    rec: (u64, [u8; 32]),
    /// The newest head anchored.
    head: u64,
}

struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    anchor: Mutex<AnchorWriter>,
    /// The anchor file (outside `dir`).
    anchor_path: PathBuf,
    /// Records keep the sequence numbers of the trail they copy, with gaps (the journal of
    /// retained records): counted by reading, not by `next - head`.
    gapped: bool,
}

/// The audit journal of one store. Only the process holding the store's lock opens it.
pub(crate) struct Journal {
    inner: Arc<Inner>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, cutting off a torn frame at the end of the
    /// last segment, and starts its background sync thread.
    pub(crate) fn open(dir: &Path, anchor_path: &Path, gapped: bool) -> Result<Self> {
        let err = io_err(dir);
        super::perms::prepare_dir(dir)?;
        let _ = fs::remove_file(dir.join(HEAD_TMP));
        let head = match fs::read_to_string(dir.join(HEAD_FILE)) {
            Ok(s) => s.trim().parse().map_err(|_| {
                StoreError::corrupt(
                    format!("{}/{HEAD_FILE}", dir.display()),
                    CorruptError::Field("head"),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => FIRST_SEQ,
            Err(e) => return Err(err(e)),
        };
        let mut firsts: Vec<u64> = Vec::new();
        for entry in fs::read_dir(dir).map_err(&err)? {
            let entry = entry.map_err(&err)?;
            if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments: VecDeque<u64> = firsts.into();
        let (mut next, mut last, mut last_env, mut active) = (head, None, None, None);
        if let Some(&first) = segments.back() {
            let (tail, records, len) = recover_tail(dir, first)?;
            next = tail.last.as_ref().map_or(first, |e| e.seq + 1);
            (last, last_env) = (tail.last, tail.last_env);
            // A crash right after a new segment was created leaves it empty: the chain goes on
            // from the last record of the segments before it.
            for &older in segments.iter().rev().skip(1) {
                if last.is_some() {
                    break;
                }
                let found = scan(dir, older)?;
                (last, last_env) = (found.last, found.last_env);
            }
            let file = append_file(&dir.join(segment_name(first))).map_err(&err)?;
            active = Some(Active {
                file: Arc::new(file),
                first,
                records,
                len,
            });
        }
        // Segments left behind by a prune that stopped between writing HEAD and deleting them.
        while segments.len() > 1 && segments[1] <= head {
            let first = segments.pop_front().expect("two segments");
            fs::remove_file(dir.join(segment_name(first))).map_err(&err)?;
        }
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                segments,
                active,
                next: next.max(head),
                head,
                last,
                last_env,
                dirty: false,
                count: None,
            }),
            anchor_path: anchor_path.to_path_buf(),
            gapped,
            anchor: Mutex::new(AnchorWriter {
                file: None,
                key: None,
                counter: 0,
                rec: (0, [0; 32]),
                head: 0,
            }),
        });
        spawn_syncer(Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// Whether the journal holds no segment at all (a new store, or one whose audit records are
    /// still in the sled tree of schema 1).
    pub(crate) fn is_empty(&self) -> bool {
        self.inner.lock().segments.is_empty()
    }

    /// Appends `event`; with `sync`, it is on disk when this returns.
    pub(crate) fn append(&self, event: &AuditEvent, sync: bool) -> Result<u64> {
        self.append_at(event, sync, None)
    }

    /// [`append`](Self::append) with sequence number `at` (at least the next one) in a gapped
    /// journal.
    pub(crate) fn append_at(&self, event: &AuditEvent, sync: bool, at: Option<u64>) -> Result<u64> {
        let envelope = encode(AUDIT_V, event);
        // Only a synced record is anchored at once (hashed here, before `envelope` moves).
        let anchored = sync.then(|| hash(&envelope));
        let mut st = self.inner.lock();
        if let Some(at) = at {
            if at < st.next {
                return Err(StoreError::corrupt(
                    format!("audit/{at}"),
                    CorruptError::Index,
                ));
            }
            if st.last.is_none() && at > st.head {
                // The first record of a gapped journal is its head.
                write_head(&self.inner.dir, at)?;
                st.head = at;
            }
            st.next = at;
        }
        let seq = st.next;
        let bytes = frame(seq, &envelope);
        let active = self.writable_segment(&mut st)?;
        let file = Arc::clone(&active.file);
        let before = active.len;
        if let Err(e) = (&*file).write_all(&bytes) {
            // Never leave half a frame for the next append to follow.
            let _ = file.set_len(before);
            return Err(io_err(&self.inner.dir)(e));
        }
        active.len += bytes.len() as u64;
        active.records += 1;
        st.next = seq + 1;
        st.last = Some(AuditEntry {
            seq,
            event: event.clone(),
        });
        st.last_env = Some(envelope);
        if let Some(c) = &mut st.count {
            *c += 1;
        }
        if let Some(h) = anchored {
            st.dirty = false;
            let head = st.head;
            drop(st);
            file.sync_data().map_err(io_err(&self.inner.dir))?;
            self.inner.anchor(head, (seq, h));
        } else {
            st.dirty = true;
        }
        Ok(seq)
    }

    /// The segment to append to, starting a new one when the active one is full.
    fn writable_segment<'s>(&self, st: &'s mut State) -> Result<&'s mut Active> {
        let full = st
            .active
            .as_ref()
            .is_none_or(|a| a.records >= SEGMENT_RECORDS || a.len >= SEGMENT_BYTES);
        if full {
            let dir = &self.inner.dir;
            let first = st.next;
            let path = dir.join(segment_name(first));
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_err(dir))?;
            if let Some(old) = &st.active {
                old.file.sync_data().map_err(io_err(dir))?;
            }
            sync_dir(dir)?;
            st.segments.push_back(first);
            st.active = Some(Active {
                file: Arc::new(file),
                first,
                records: 0,
                len: 0,
            });
        }
        Ok(st.active.as_mut().expect("a segment was just made"))
    }

    /// Up to `limit` records with `seq >= since`, oldest first.
    pub(crate) fn read(&self, since: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.each_frame(since, |seq, envelope| {
            let event = decode(|| format!("audit/{seq}"), AUDIT_V, &envelope)?;
            out.push(AuditEntry { seq, event });
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Calls `f` with every kept frame with `seq >= since`, oldest first, while it returns true.
    fn each_frame(
        &self,
        since: u64,
        mut f: impl FnMut(u64, Vec<u8>) -> Result<bool>,
    ) -> Result<()> {
        let (segments, head, active) = {
            let st = self.inner.lock();
            let active = st.active.as_ref().map(|a| (a.first, a.len));
            (st.segments.clone(), st.head, active)
        };
        let start = since.max(head);
        // The last segment starting at or before `start` holds it (or whatever follows it).
        let from = segments
            .partition_point(|&first| first <= start)
            .saturating_sub(1);
        for &first in segments.iter().skip(from) {
            let path = self.inner.dir.join(segment_name(first));
            let file = match File::open(&path) {
                Ok(f) => f,
                // Pruned since the list was taken: its records are gone on purpose.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&self.inner.dir)(e)),
            };
            // The active segment is read only as far as it was written when we looked.
            let len = match active {
                Some((a, len)) if a == first => len,
                _ => u64::MAX,
            };
            let mut reader = BufReader::new(file).take(len);
            let mut prev = None;
            loop {
                match read_frame(&mut reader).map_err(io_err(&self.inner.dir))? {
                    Next::End => break,
                    Next::Torn => {
                        return Err(StoreError::corrupt(
                            format!("audit/{} after {prev:?}", segment_name(first)),
                            CorruptError::Truncated(0),
                        ));
                    }
                    Next::Frame(seq, envelope) => {
                        if prev.is_some_and(|p| seq <= p) || seq < first {
                            return Err(StoreError::corrupt(
                                format!("audit/{seq}"),
                                CorruptError::Index,
                            ));
                        }
                        prev = Some(seq);
                        if seq < start {
                            continue;
                        }
                        if !f(seq, envelope)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The newest record.
    pub(crate) fn last(&self) -> Option<AuditEntry> {
        self.inner.lock().last.clone()
    }

    /// Keeps the newest `max_count` records; returns how many were dropped.
    pub(crate) fn prune(&self, max_count: usize) -> Result<usize> {
        let max = max_count as u64;
        let gapped_head = if self.inner.gapped {
            match self.gapped_head(max)? {
                Some(head) => Some(head),
                None => return Ok(0),
            }
        } else {
            None
        };
        let mut st = self.inner.lock();
        let kept = st.next - st.head;
        if gapped_head.is_none() && kept <= max {
            return Ok(0);
        }
        let head = gapped_head.unwrap_or(st.next - max);
        if self.inner.gapped {
            st.count = Some(max);
        }
        let dir = &self.inner.dir;
        // The anchor learns the new head first: a crash before HEAD is written leaves an anchor
        // whose head is newer than HEAD, which is not mistaken for records cut from the front.
        if let (Some(active), Some(env)) = (&st.active, &st.last_env) {
            active.file.sync_data().map_err(io_err(dir))?;
            let rec = (st.last.as_ref().map_or(0, |e| e.seq), hash(env));
            st.dirty = false;
            self.inner.anchor(head, rec);
        }
        write_head(dir, head)?;
        let dropped = head - st.head;
        st.head = head;
        while st.segments.len() > 1 && st.segments[1] <= head {
            let first = st.segments.pop_front().expect("two segments");
            fs::remove_file(dir.join(segment_name(first))).map_err(io_err(dir))?;
        }
        Ok(usize::try_from(dropped).unwrap_or(usize::MAX))
    }

    /// The head that keeps the newest `max` records of a gapped journal; `None` if it holds no
    /// more. Counts the records by reading them once, then keeps the count.
    fn gapped_head(&self, max: u64) -> Result<Option<u64>> {
        let (head, count) = {
            let st = self.inner.lock();
            (st.head, st.count)
        };
        if count.is_some_and(|c| c <= max) {
            return Ok(None);
        }
        let mut seqs = Vec::new();
        self.each_frame(head, |seq, _| {
            seqs.push(seq);
            Ok(true)
        })?;
        let n = seqs.len() as u64;
        if n <= max {
            self.inner.lock().count = Some(n);
            return Ok(None);
        }
        Ok(Some(seqs[usize::try_from(n - max).expect("fits")]))
    }

    /// Copies audit records of an older store (sled tree values, oldest first) into this empty
    /// journal, numbered from 1, all or nothing: written to a temporary file, synced, renamed.
    pub(crate) fn import(&self, envelopes: impl IntoIterator<Item = Vec<u8>>) -> Result<u64> {
        let dir = &self.inner.dir;
        let mut st = self.inner.lock();
        assert!(st.segments.is_empty(), "import into an empty journal only");
        let first = st.next;
        let tmp = dir.join(format!("{}.tmp", segment_name(first)));
        let mut out = io::BufWriter::new(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(dir))?,
        );
        let mut seq = first;
        let mut last = None;
        let mut len = 0;
        for envelope in envelopes {
            let bytes = frame(seq, &envelope);
            out.write_all(&bytes).map_err(io_err(dir))?;
            len += bytes.len() as u64;
            last = Some((seq, envelope));
            seq += 1;
        }
        let file = out.into_inner().map_err(|e| io_err(dir)(e.into_error()))?;
        file.sync_all().map_err(io_err(dir))?;
        drop(file);
        let path = dir.join(segment_name(first));
        fs::rename(&tmp, &path).map_err(io_err(dir))?;
        sync_dir(dir)?;
        st.segments.push_back(first);
        st.active = Some(Active {
            file: Arc::new(append_file(&path).map_err(io_err(dir))?),
            first,
            records: seq - first,
            len,
        });
        st.next = seq;
        st.last = match &last {
            Some((seq, envelope)) => Some(AuditEntry {
                seq: *seq,
                event: decode(|| format!("audit/{seq}"), AUDIT_V, envelope)?,
            }),
            None => None,
        };
        st.last_env = last.map(|(_, e)| e);
        Ok(seq - first)
    }

    /// Syncs appended records if any are waiting.
    fn sync_if_dirty(inner: &Inner) {
        let (file, head, rec) = {
            let mut st = inner.lock();
            if !st.dirty {
                return;
            }
            st.dirty = false;
            let rec = st.last_rec();
            (
                st.active.as_ref().map(|a| Arc::clone(&a.file)),
                st.head,
                rec,
            )
        };
        if let Some(file) = file {
            if let Err(e) = file.sync_data() {
                tracing::error!(error = %e, dir = %inner.dir.display(), "cannot sync the audit journal");
                return;
            }
            if let Some(rec) = rec {
                inner.anchor(head, rec);
            }
        }
    }

    /// Gives the journal the audit key to anchor with (`None`: sealed, stop anchoring) and, with
    /// a key, anchors what is on disk now. `counter` is the newest anchor counter found.
    pub(crate) fn set_anchor_key(&self, key: Option<(u64, AuditKey)>, counter: u64) -> Result<()> {
        let has_key = key.is_some();
        {
            let mut a = self
                .inner
                .anchor
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            a.key = key;
            a.counter = a.counter.max(counter);
        }
        if has_key {
            self.anchor_now()?;
        }
        Ok(())
    }

    /// Whether the journal is anchoring (has an audit key).
    pub(crate) fn is_anchoring(&self) -> bool {
        self.inner
            .anchor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .key
            .is_some()
    }

    /// Syncs the journal and anchors its newest record.
    pub(crate) fn anchor_now(&self) -> Result<()> {
        let (file, head, rec) = {
            let mut st = self.inner.lock();
            st.dirty = false;
            let rec = st.last_rec();
            (
                st.active.as_ref().map(|a| Arc::clone(&a.file)),
                st.head,
                rec,
            )
        };
        if let Some(file) = file {
            file.sync_data().map_err(io_err(&self.inner.dir))?;
        }
        self.inner
            .try_anchor(head, rec.unwrap_or((0, [0; 32])))
            .map_err(io_err(&self.inner.dir))
    }

    /// The envelope of record `seq`, if the journal holds it.
    pub(crate) fn envelope(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        let mut found = None;
        self.each_frame(seq, |s, env| {
            if s == seq {
                found = Some(env);
            }
            Ok(false)
        })?;
        Ok(found)
    }

    /// The oldest sequence number kept (`HEAD`), and the first and last record's.
    pub(crate) fn bounds(&self) -> Result<(u64, Option<u64>, Option<u64>)> {
        let (head, last) = {
            let st = self.inner.lock();
            (st.head, st.last.as_ref().map(|e| e.seq))
        };
        // A gapped journal that never had a record has no head of its own yet.
        let head = if self.inner.gapped && last.is_none() {
            0
        } else {
            head
        };
        let mut first = None;
        self.each_frame(head, |s, _| {
            first = Some(s);
            Ok(false)
        })?;
        Ok((head, first, last))
    }

    /// The journal's directory.
    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        Self::sync_if_dirty(&self.inner);
    }
}

impl State {
    /// The newest record's sequence number and envelope hash, for the anchor.
    fn last_rec(&self) -> Option<(u64, [u8; 32])> {
        Some((self.last.as_ref()?.seq, hash(self.last_env.as_ref()?)))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Anchors record `rec` (on disk) with `head`, logging a failure: the record itself is
    /// written, and `audit verify` reports an anchor that lags.
    fn anchor(&self, head: u64, rec: (u64, [u8; 32])) {
        if let Err(e) = self.try_anchor(head, rec) {
            tracing::error!(error = %e, "cannot write the audit anchor");
        }
    }

    fn try_anchor(&self, head: u64, rec: (u64, [u8; 32])) -> io::Result<()> {
        let mut a = self
            .anchor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((epoch, key)) = a.key.clone() else {
            return Ok(());
        };
        // Never move back to an older record or head (a synced append or a prune racing the
        // sync thread).
        let rec = if rec.0 >= a.rec.0 { rec } else { a.rec };
        let head = head.max(a.head);
        if a.file.is_none() {
            a.file = Some(AnchorFile::open(&self.anchor_path)?);
        }
        let anchor = Anchor {
            epoch,
            counter: a.counter + 1,
            head,
            seq: rec.0,
            record_hash: rec.1,
        };
        a.file
            .as_ref()
            .expect("opened above")
            .write(&anchor, &key)?;
        a.counter = anchor.counter;
        a.rec = rec;
        a.head = head;
        Ok(())
    }
}

/// SHA-256 of a record's envelope, as the anchor holds it.
pub(crate) fn hash(envelope: &[u8]) -> [u8; 32] {
    Sha256::digest(envelope).into()
}

/// Syncs dirty records every [`SYNC_EVERY`] until the journal is dropped.
fn spawn_syncer(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("audit-sync".into())
        .spawn(move || {
            loop {
                std::thread::sleep(SYNC_EVERY);
                let Some(inner) = inner.upgrade() else { break };
                Journal::sync_if_dirty(&inner);
            }
        });
    if let Err(e) = spawned {
        // Records are still synced by every flushed append and when the journal closes.
        tracing::error!(error = %e, "cannot start the audit journal's sync thread");
    }
}

/// What [`scan`] found in a segment.
struct Scan {
    /// The last whole, valid record.
    last: Option<AuditEntry>,
    /// Its envelope.
    last_env: Option<Vec<u8>>,
    /// Frames up to and including it.
    records: u64,
    /// Bytes up to and including it.
    good: u64,
}

/// Reads a segment from the start: its last whole, valid frame, and where it ends. A damaged
/// frame followed by valid ones is counted (it is reported when read).
fn scan(dir: &Path, first: u64) -> Result<Scan> {
    let err = io_err(dir);
    let path = dir.join(segment_name(first));
    let mut reader = BufReader::new(File::open(&path).map_err(&err)?);
    let (mut offset, mut frames) = (0u64, 0u64);
    let (mut good, mut records, mut last) = (0u64, 0u64, None);
    loop {
        match read_frame(&mut reader).map_err(&err)? {
            Next::End | Next::Torn => break,
            Next::Frame(seq, envelope) => {
                offset += (HEADER + envelope.len()) as u64;
                frames += 1;
                if unwrap_envelope(&envelope).is_ok() {
                    good = offset;
                    records = frames;
                    last = Some((seq, envelope));
                }
            }
        }
    }
    let (last, last_env) = match last {
        Some((seq, envelope)) => (
            Some(AuditEntry {
                seq,
                event: decode(|| format!("audit/{seq}"), AUDIT_V, &envelope)?,
            }),
            Some(envelope),
        ),
        None => (None, None),
    };
    Ok(Scan {
        last,
        last_env,
        records,
        good,
    })
}

/// Scans the last segment and cuts off what follows its last whole, valid frame (a frame cut
/// short or never written, as a power failure during an append leaves). Returns what the scan
/// found, the record count and the length.
fn recover_tail(dir: &Path, first: u64) -> Result<(Scan, u64, u64)> {
    let err = io_err(dir);
    let path = dir.join(segment_name(first));
    let found = scan(dir, first)?;
    let size = fs::metadata(&path).map_err(&err)?.len();
    if size > found.good {
        tracing::warn!(
            segment = %path.display(),
            kept = found.good,
            dropped = size - found.good,
            "cutting off a torn record at the end of the audit journal"
        );
        let file = OpenOptions::new().write(true).open(&path).map_err(&err)?;
        file.set_len(found.good).map_err(&err)?;
        file.sync_all().map_err(&err)?;
    }
    let (records, good) = (found.records, found.good);
    Ok((found, records, good))
}

fn append_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).mode(0o600).open(path)
}

/// Writes `HEAD` atomically: temporary file, sync, rename, directory sync.
fn write_head(dir: &Path, head: u64) -> Result<()> {
    let err = io_err(dir);
    let tmp = dir.join(HEAD_TMP);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(&err)?;
    file.write_all(format!("{head}\n").as_bytes())
        .map_err(&err)?;
    file.sync_all().map_err(&err)?;
    fs::rename(&tmp, dir.join(HEAD_FILE)).map_err(&err)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn io_err(dir: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |source| StoreError::Journal {
        path: dir.to_path_buf(),
        source,
    }
}

/// The raw records (sequence number and envelope) of the audit journal of the store in
/// `store_dir`, oldest first, whole segments as they are on disk (pruned-but-not-deleted records
/// included): for tools such as the fuzzers' seed recorder. Stops at the first torn frame.
pub fn raw_audit_records(store_dir: &Path) -> Result<Vec<(u64, Vec<u8>)>> {
    let dir = store_dir.join(super::sled_store::JOURNAL_DIR);
    let err = io_err(&dir);
    let mut firsts: Vec<u64> = fs::read_dir(&dir)
        .map_err(&err)?
        .filter_map(|e| e.ok()?.file_name().to_str().and_then(parse_segment_name))
        .collect();
    firsts.sort_unstable();
    let mut out = Vec::new();
    for first in firsts {
        let mut reader = BufReader::new(File::open(dir.join(segment_name(first))).map_err(&err)?);
        while let Next::Frame(seq, envelope) = read_frame(&mut reader).map_err(&err)? {
            out.push((seq, envelope));
        }
    }
    Ok(out)
}

/// Rewrites every frame of the journal in `dir` (closed) through `edit`: `None` drops the frame.
#[cfg(test)]
pub(crate) fn rewrite_for_test(dir: &Path, mut edit: impl FnMut(u64, Vec<u8>) -> Option<Vec<u8>>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().and_then(|n| n.to_str());
        if name.and_then(parse_segment_name).is_none() {
            continue;
        }
        let mut reader = BufReader::new(File::open(&path).unwrap());
        let mut out = Vec::new();
        while let Next::Frame(seq, envelope) = read_frame(&mut reader).unwrap() {
            if let Some(envelope) = edit(seq, envelope) {
                out.extend_from_slice(&frame(seq, &envelope));
            }
        }
        fs::write(&path, out).unwrap();
    }
}
