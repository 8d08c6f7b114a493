//! The replicated log as one peer holds it, with the cursors that say how far each entry has
//! travelled: persisted (`stabled`), committed, and handed to the state machine (`applied`).

use crate::types::{Entry, LogIndex, Term};

#[derive(Debug, Default)]
pub struct RaftLog {
    /// `entries[i]` holds index `i + 1`: there is no compaction yet, so the log starts at 1.
    entries: Vec<Entry>,
    /// Invariant: every entry at or below `stabled` is in stable storage.
    /// Invariant: stabled <= last_index().
    stabled: LogIndex,
    /// Invariant: applied <= committed <= last_index().
    committed: LogIndex,
    applied: LogIndex,
}

impl RaftLog {
    /// A log recovered from storage: everything in it is already stable.
    pub fn restore(entries: Vec<Entry>) -> RaftLog {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.index, LogIndex(i as u64 + 1), "recovered log has a gap");
        }
        for w in entries.windows(2) {
            assert!(w[0].term <= w[1].term, "recovered log has decreasing terms");
        }
        let stabled = LogIndex(entries.len() as u64);
        RaftLog {
            entries,
            stabled,
            ..RaftLog::default()
        }
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(Term(0), |e| e.term)
    }

    /// The term of the entry at `index`; index 0 has term 0; None past the end.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index.0 == 0 {
            return Some(Term(0));
        }
        self.entries.get(index.0 as usize - 1).map(|e| e.term)
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

    /// The first index holding `term`, scanning back from `index` (for the conflict hint).
    pub fn first_index_of_term(&self, term: Term, index: LogIndex) -> LogIndex {
        let mut i = index;
        while i.0 > 1 && self.term_at(i.prev()) == Some(term) {
            i = i.prev();
        }
        i
    }

    /// The last index holding `term`, if the log has any entry of that term.
    pub fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        self.entries
            .iter()
            .rev()
            .skip_while(|e| e.term > term)
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    pub fn append(&mut self, term: Term, command: Vec<u8>) -> LogIndex {
        assert!(
            term >= self.last_term(),
            "terms in the log must not decrease"
        );
        let index = self.last_index().next();
        self.entries.push(Entry {
            term,
            index,
            command,
        });
        index
    }

    /// Figure 2, AppendEntries receiver steps 3 and 4: drop a conflicting suffix, append what is
    /// new. Entries already present with the same term are kept (a delayed, shorter
    /// AppendEntries must not truncate entries that a later one delivered).
    pub fn merge(&mut self, entries: &[Entry]) {
        for e in entries {
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

    fn push(&mut self, e: Entry) {
        assert!(
            e.term >= self.last_term(),
            "terms in the log must not decrease"
        );
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
        self.entries.truncate(index.0 as usize);
        self.stabled = self.stabled.min(index);
    }

    /// Entries in `[from, to]`, at most `max_bytes` of commands (but always at least one).
    pub fn slice(&self, from: LogIndex, to: LogIndex, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = from;
        while i <= to && i <= self.last_index() {
            let e = &self.entries[i.0 as usize - 1];
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
        &self.entries[self.stabled.0 as usize..]
    }

    /// Entries committed but not yet handed out for applying.
    pub fn next_committed(&self) -> &[Entry] {
        &self.entries[self.applied.0 as usize..self.committed.0 as usize]
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

    /// Checks the cursors' invariants; cheap enough to run after every step. (That terms never
    /// decrease is checked as entries are added.)
    pub fn check_invariants(&self) {
        assert!(self.applied <= self.committed);
        assert!(self.committed <= self.last_index());
        assert!(self.stabled <= self.last_index());
    }
}
