//! The cache of search configurations already explored (Lowe's
//! memoisation): a configuration is the set of operations linearized so far
//! together with the state they lead to. Two paths reaching the same
//! configuration have the same future, so the second one is pruned.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A fixed-size set of operation indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    pub(crate) fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
        }
    }

    pub(crate) fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub(crate) fn clear(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }
}

/// A 128-bit fingerprint of a state.
///
/// The cache keeps fingerprints rather than states because states can be
/// large (a value grown by thousands of appends) and there is one cache entry
/// per explored configuration. With 128 bits an accidental collision, which
/// could only prune a configuration that was not actually explored, is
/// vanishingly unlikely. The hash is fixed, so results are reproducible.
pub(crate) fn fingerprint<T: Hash + ?Sized>(value: &T) -> u128 {
    let mut h = FingerprintHasher::default();
    value.hash(&mut h);
    h.finish128()
}

/// Two independent multiply-rotate lanes over the byte stream, eight bytes
/// at a time. SipHash, the standard library's hasher, is several times
/// slower, and states are hashed at every search step. Each lane's update is
/// a bijection of its state for a fixed input word, so inputs of equal length
/// that differ in a single word never collide. Input is buffered so that only the byte
/// stream matters, not how `Hash` implementations split it into writes.
#[derive(Default)]
struct FingerprintHasher {
    a: u64,
    b: u64,
    buffer: u64,
    buffered: u32,
    length: u64,
}

const LANE_A: u64 = 0x9e37_79b9_7f4a_7c15;
const LANE_B: u64 = 0xc2b2_ae3d_27d4_eb4f;

impl FingerprintHasher {
    fn word(&mut self, w: u64) {
        self.a = (self.a ^ w).wrapping_mul(LANE_A).rotate_left(29);
        self.b = (self.b ^ w.rotate_left(32))
            .wrapping_mul(LANE_B)
            .rotate_left(37);
    }

    fn finish128(mut self) -> u128 {
        if self.buffered > 0 {
            let tail = self.buffer;
            self.word(tail);
        }
        let a = mix(self.a ^ self.length);
        let b = mix(self.b ^ self.length.rotate_left(32) ^ LANE_A);
        (u128::from(a) << 64) | u128::from(b)
    }
}

/// The murmur3 finaliser: spreads every input bit over the whole word.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        unreachable!("fingerprints are read with finish128")
    }

    fn write(&mut self, mut bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len() as u64);
        // Top up a partial word first.
        while self.buffered > 0 && !bytes.is_empty() {
            self.buffer |= u64::from(bytes[0]) << (8 * self.buffered);
            self.buffered += 1;
            bytes = &bytes[1..];
            if self.buffered == 8 {
                let w = self.buffer;
                self.word(w);
                self.buffer = 0;
                self.buffered = 0;
            }
        }
        if self.buffered > 0 {
            return; // all of `bytes` went into the partial word
        }
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.word(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        for (i, &byte) in chunks.remainder().iter().enumerate() {
            self.buffer |= u64::from(byte) << (8 * i);
        }
        self.buffered = chunks.remainder().len() as u32;
    }
}

/// A pseudo-random 64-bit value per operation index, so that the hash of a
/// set can be maintained incrementally by XOR as operations are linearized
/// and undone (Zobrist hashing) instead of rehashing the whole bitset.
pub(crate) fn zobrist(i: usize) -> u64 {
    // splitmix64 finaliser
    let mut z = (i as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The hash-table key: the Zobrist hash of the set and the state fingerprint.
/// Both are already well mixed, so the table hashes the key by folding them
/// rather than running them through SipHash again.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    set_hash: u64,
    state: u128,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.set_hash ^ (self.state as u64) ^ ((self.state >> 64) as u64));
    }
}

#[derive(Default)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

const NONE: u32 = u32::MAX;

/// Identifies a recorded configuration, to mark it finished later.
pub(crate) type EntryId = u32;

/// What the search has explored.
///
/// A configuration is recorded as the set of linearized operations with a
/// known return, the set of linearized operations without one ("open"), and
/// the state. Open operations can always be linearized last (see
/// [`crate::Operation`]), so if a configuration has been fully explored
/// without success, so has every configuration with the same closed set and
/// state and more open operations: whatever completes the larger one also
/// completes the smaller one, with the extra open operations appended. The
/// search therefore skips a configuration that equals a recorded one, or that
/// extends a finished one by open operations only. Without this, every
/// choice of which unanswered writes have already happened multiplies the
/// work of refuting a history.
///
/// The exact sets are kept (Zobrist hashes of different sets collide once
/// there are more than 64 operations), packed back to back in one arena to
/// avoid an allocation per entry; entries whose keys collide are chained.
pub(crate) struct Memo {
    closed_words: usize,
    open_words: usize,
    heads: HashMap<Key, EntryId, BuildHasherDefault<FoldHasher>>,
    arena: Vec<u64>,
    chain: Vec<EntryId>,
    finished: Vec<bool>,
}

impl Memo {
    pub(crate) fn new(closed_len: usize, open_len: usize) -> Self {
        Self {
            closed_words: closed_len.div_ceil(64),
            open_words: open_len.div_ceil(64),
            heads: HashMap::default(),
            arena: Vec::new(),
            chain: Vec::new(),
            finished: Vec::new(),
        }
    }

    /// Records a configuration about to be explored, or returns `None` if it
    /// need not be (see the type's docs). `closed_hash` must be a hash of
    /// `closed` alone.
    pub(crate) fn insert(
        &mut self,
        closed_hash: u64,
        closed: &Bitset,
        open: &Bitset,
        state: u128,
    ) -> Option<EntryId> {
        let key = Key {
            set_hash: closed_hash,
            state,
        };
        let (closed, open) = (closed.words(), open.words());
        debug_assert_eq!(closed.len(), self.closed_words);
        debug_assert_eq!(open.len(), self.open_words);
        let width = self.closed_words + self.open_words;
        let id = self.chain.len() as EntryId;
        match self.heads.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(id);
                self.chain.push(NONE);
            }
            Entry::Occupied(mut slot) => {
                let mut at = *slot.get();
                while at != NONE {
                    let start = at as usize * width;
                    let (seen_closed, seen_open) =
                        self.arena[start..start + width].split_at(self.closed_words);
                    if seen_closed == closed
                        && (seen_open == open
                            || (self.finished[at as usize] && is_subset(seen_open, open)))
                    {
                        return None;
                    }
                    at = self.chain[at as usize];
                }
                self.chain.push(*slot.get());
                slot.insert(id);
            }
        }
        self.arena.extend_from_slice(closed);
        self.arena.extend_from_slice(open);
        self.finished.push(false);
        Some(id)
    }

    /// Marks a configuration as fully explored without success.
    pub(crate) fn finish(&mut self, id: EntryId) {
        self.finished[id as usize] = true;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.chain.len()
    }
}

fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small.iter().zip(large).all(|(s, l)| s & !l == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitset_set_and_clear() {
        let mut b = Bitset::new(130);
        assert_eq!(b.words().len(), 3);
        b.set(0);
        b.set(64);
        b.set(129);
        assert!(b.contains(0) && b.contains(64) && b.contains(129));
        assert!(!b.contains(1));
        b.clear(64);
        assert!(!b.contains(64));
        assert_eq!(b.words(), &[1, 0, 1 << 1]);
    }

    #[test]
    fn memo_distinguishes_sets_and_states() {
        let mut memo = Memo::new(70, 0);
        let none = Bitset::new(0);
        let mut a = Bitset::new(70);
        a.set(3);
        let mut b = Bitset::new(70);
        b.set(69);
        let s1 = fingerprint("x");
        let s2 = fingerprint("y");
        assert!(memo.insert(zobrist(3), &a, &none, s1).is_some());
        assert!(memo.insert(zobrist(3), &a, &none, s1).is_none());
        assert!(memo.insert(zobrist(3), &a, &none, s2).is_some());
        assert!(memo.insert(zobrist(69), &b, &none, s1).is_some());
        // Same key but a different set must not be mistaken for a hit.
        assert!(memo.insert(zobrist(3), &b, &none, s1).is_some());
        assert!(memo.insert(zobrist(3), &b, &none, s1).is_none());
        assert_eq!(memo.len(), 4);
    }

    #[test]
    fn finished_configurations_cover_more_open_operations() {
        let mut memo = Memo::new(4, 3);
        let mut closed = Bitset::new(4);
        closed.set(1);
        let h = zobrist(1);
        let s = fingerprint("x");
        let mut open = Bitset::new(3);
        open.set(0);
        let id = memo.insert(h, &closed, &open, s).unwrap();
        let mut more = open.clone();
        more.set(2);
        // Not finished yet: it may still succeed, so the extension counts.
        let more_id = memo.insert(h, &closed, &more, s).unwrap();
        memo.finish(id);
        memo.finish(more_id);
        let mut other = open.clone();
        other.set(1);
        assert!(memo.insert(h, &closed, &other, s).is_none());
        // Fewer open operations, or another state, is not covered.
        assert!(memo.insert(h, &closed, &Bitset::new(3), s).is_some());
        assert!(memo.insert(h, &closed, &other, fingerprint("y")).is_some());
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        assert_eq!(fingerprint("abc"), fingerprint(&"abc".to_string()));
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
        assert_ne!(fingerprint(""), fingerprint("\0"));
        assert_ne!(fingerprint(&(1u8, 2u8)), fingerprint(&(2u8, 1u8)));
        assert_ne!(zobrist(0), zobrist(1));
    }

    #[test]
    fn fingerprints_depend_on_bytes_not_on_how_they_are_written() {
        let whole = {
            let mut h = FingerprintHasher::default();
            h.write(b"hello, linearizable world");
            h.finish128()
        };
        let pieces = {
            let mut h = FingerprintHasher::default();
            for piece in [&b"hel"[..], b"l", b"o, linea", b"", b"rizable w", b"orld"] {
                h.write(piece);
            }
            h.finish128()
        };
        assert_eq!(whole, pieces);
    }

    #[test]
    fn fingerprints_of_reordered_tokens_differ() {
        let tokens: Vec<String> = (0..12).map(|i| format!("{i}.{};", i * 7)).collect();
        let mut seen = std::collections::HashSet::new();
        for rotation in 0..tokens.len() {
            let mut t = tokens.clone();
            t.rotate_left(rotation);
            assert!(seen.insert(fingerprint(&t.concat())));
            t.swap(0, 1);
            assert!(seen.insert(fingerprint(&t.concat())));
        }
    }
}
