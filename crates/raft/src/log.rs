//! The replicated log as one peer holds it, with the cursors that say how far each entry has
//! travelled: persisted (`stabled`), committed, and handed to the state machine (`applied`).
//!
//! The log starts after a snapshot (§7): entries up to `snapshot.index` are compacted away, and
//! only the index and term of the last of them are kept, for the consistency check of the
//! entry that follows.

use crate::types::{Entry, LogIndex, SnapshotMeta, Term};

#[derive(Debug, Default)]
pub struct RaftLog {
    /// What the entries before the log's first one were compacted into (index 0, term 0 when
    /// nothing was).
    snapshot: SnapshotMeta,
    /// `entries[i]` holds index `snapshot.index + 1 + i`.
    entries: Vec<Entry>,
    /// Command bytes in `entries` (a measure of the log's size in storage).
    bytes: usize,
    /// Invariant: every entry at or below `stabled` is in stable storage.
    /// Invariant: snapshot.index <= stabled <= last_index().
    stabled: LogIndex,
    /// Invariant: snapshot.index <= applied <= committed <= last_index().
    committed: LogIndex,
    applied: LogIndex,
}

/// Storage overhead of one entry beyond its command (index, term, framing), for `bytes`.
const ENTRY_OVERHEAD: usize = 24;

impl RaftLog {
    /// A log recovered from storage: a snapshot (if any) and the entries that follow it, all
    /// stable; everything up to the snapshot counts as committed and applied (the service
    /// starts from the snapshot).
    pub fn restore(snapshot: Option<SnapshotMeta>, entries: Vec<Entry>) -> RaftLog {
        let snapshot = snapshot.unwrap_or_default();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                LogIndex(snapshot.index.0 + 1 + i as u64),
                "recovered log has a gap"
            );
        }
        let mut last_term = snapshot.term;
        for e in &entries {
            assert!(e.term >= last_term, "recovered log has decreasing terms");
            last_term = e.term;
        }
        let bytes = entries.iter().map(entry_bytes).sum();
        let stabled = LogIndex(snapshot.index.0 + entries.len() as u64);
        RaftLog {
            snapshot,
            entries,
            bytes,
            stabled,
            committed: snapshot.index,
            applied: snapshot.index,
        }
    }

    /// The snapshot the log starts after.
    pub fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }

    /// The first index still held as an entry.
    pub fn first_index(&self) -> LogIndex {
        self.snapshot.index.next()
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot.index.0 + self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot.term, |e| e.term)
    }

    /// Roughly how many bytes the log's entries take in storage.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held (after the snapshot).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The term of the entry at `index`: the snapshot's term at its index, None below it
    /// (compacted) or past the end. Index 0 has term 0 while nothing is compacted.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index {
            return None;
        }
        self.entry(index).map(|e| e.term)
    }

    /// Whether `index` was compacted into the snapshot (its term is no longer known).
    pub fn is_compacted(&self, index: LogIndex) -> bool {
        index < self.snapshot.index
    }

    fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.snapshot.index.0 + 1)?;
        self.entries.get(offset as usize)
    }

    fn offset(&self, index: LogIndex) -> usize {
        (index.0 - self.snapshot.index.0 - 1) as usize
    }

    pub fn committed(&self) -> LogIndex {
        self.committed
    }

    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    pub fn stabled(&self) -> LogIndex {
        self.stabled
    }

    /// §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up to date as ours?
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index holding `term`, scanning back from `index` (for the conflict hint); it
    /// stops at the first entry held.
    pub fn first_index_of_term(&self, term: Term, index: LogIndex) -> LogIndex {
        let mut i = index;
        while i > self.first_index() && self.term_at(i.prev()) == Some(term) {
            i = i.prev();
        }
        i
    }

    /// The last index holding `term`, if the log has any entry of that term (the snapshot's
    /// last entry included).
    pub fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let held = self
            .entries
            .iter()
            .rev()
            .skip_while(|e| e.term > term)
            .find(|e| e.term == term)
            .map(|e| e.index);
        held.or((self.snapshot.term == term && self.snapshot.index.0 > 0)
            .then_some(self.snapshot.index))
    }

    pub fn append(&mut self, term: Term, command: Vec<u8>) -> LogIndex {
        let index = self.last_index().next();
        self.push(Entry {
            term,
            index,
            command,
        });
        index
    }

    fn push(&mut self, e: Entry) {
        assert!(
            e.term >= self.last_term(),
            "terms in the log must not decrease"
        );
        self.bytes += entry_bytes(&e);
        self.entries.push(e);
    }

    /// Drops every entry after `index` (only a conflict may do this: see `merge`). Committed
    /// entries are never dropped.
    pub fn truncate_after(&mut self, index: LogIndex) {
        if index >= self.last_index() {
            return;
        }
        assert!(
            index >= self.committed,
            "truncating committed entry {} (committed {})",
            index.next(),
            self.committed
        );
        let keep = self.offset(index.next());
        self.bytes -= self.entries[keep..].iter().map(entry_bytes).sum::<usize>();
        self.entries.truncate(keep);
        self.stabled = self.stabled.min(index);
    }

    /// Figure 2, AppendEntries receiver steps 3 and 4: drop a conflicting suffix, append what is
    /// new. Entries already present with the same term are kept (a delayed, shorter
    /// AppendEntries must not truncate entries that a later one delivered). Entries at or below
    /// the snapshot are covered by it and skipped.
    pub fn merge(&mut self, entries: &[Entry]) {
        for e in entries {
            if e.index <= self.snapshot.index {
                continue;
            }
            match self.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    self.truncate_after(e.index.prev());
                    self.push(e.clone());
                }
                None => {
                    assert_eq!(
                        e.index,
                        self.last_index().next(),
                        "entries must be contiguous"
                    );
                    self.push(e.clone());
                }
            }
        }
    }

    /// Entries in `[from, to]`, at most `max_bytes` of commands (but always at least one).
    /// `from` must not be compacted.
    pub fn slice(&self, from: LogIndex, to: LogIndex, max_bytes: usize) -> Vec<Entry> {
        assert!(from >= self.first_index(), "slice of compacted entries");
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = from;
        while i <= to && i <= self.last_index() {
            let e = &self.entries[self.offset(i)];
            bytes += e.command.len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            i = i.next();
        }
        out
    }

    pub fn commit_to(&mut self, index: LogIndex) {
        if index > self.committed {
            assert!(index <= self.last_index(), "commit beyond the log");
            self.committed = index;
        }
    }

    /// Entries not yet persisted.
    pub fn unstable(&self) -> &[Entry] {
        &self.entries[self.offset(self.stabled.next())..]
    }

    /// Entries committed but not yet handed out for applying.
    pub fn next_committed(&self) -> &[Entry] {
        &self.entries[self.offset(self.applied.next())..self.offset(self.committed.next())]
    }

    /// Records that entries up to `index` (of `term`) are persisted. A suffix that was replaced
    /// meanwhile is not covered, so the check on the term.
    pub fn stable_to(&mut self, index: LogIndex, term: Term) {
        if self.term_at(index) == Some(term) && index > self.stabled {
            self.stabled = index;
        }
    }

    pub fn applied_to(&mut self, index: LogIndex) {
        assert!(index <= self.committed, "applied beyond commit");
        self.applied = self.applied.max(index);
    }

    /// §7: the service has a durable snapshot of its state through `meta.index` (which it has
    /// applied): the entries it covers are dropped.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        if meta.index <= self.snapshot.index {
            return;
        }
        assert!(
            meta.index <= self.applied,
            "compacting entries not yet applied"
        );
        assert_eq!(
            self.term_at(meta.index),
            Some(meta.term),
            "snapshot term does not match the log"
        );
        let drop = self.offset(meta.index.next());
        self.bytes -= self.entries[..drop].iter().map(entry_bytes).sum::<usize>();
        self.entries.drain(..drop);
        self.snapshot = meta;
    }

    /// §7, InstallSnapshot receiver: the log now starts after `meta`, a snapshot newer than
    /// anything committed here. If the log holds the snapshot's last entry (same index and
    /// term), the entries after it are kept; otherwise the whole log is discarded. Everything
    /// up to the snapshot is committed, and counts as applied once the service has it.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) {
        assert!(meta.index > self.committed, "installing an old snapshot");
        if self.term_at(meta.index) == Some(meta.term) {
            let drop = self.offset(meta.index.next());
            self.bytes -= self.entries[..drop].iter().map(entry_bytes).sum::<usize>();
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
            self.bytes = 0;
        }
        self.snapshot = meta;
        self.committed = meta.index;
        self.applied = meta.index;
        self.stabled = self.stabled.clamp(meta.index, self.last_index());
    }

    /// Checks the cursors' invariants; cheap enough to run after every step. (That terms never
    /// decrease is checked as entries are added.)
    pub fn check_invariants(&self) {
        assert!(self.snapshot.index <= self.applied);
        assert!(self.applied <= self.committed);
        assert!(self.committed <= self.last_index());
        assert!(self.snapshot.index <= self.stabled && self.stabled <= self.last_index());
    }
}

fn entry_bytes(e: &Entry) -> usize {
    e.command.len() + ENTRY_OVERHEAD
}
