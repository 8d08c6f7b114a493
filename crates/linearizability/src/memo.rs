//! The cache of search configurations already explored (Lowe's
//! memoisation): a configuration is the set of operations linearized so far
//! together with the state they lead to. Two paths reaching the same
//! configuration have the same future, so the second one is pruned.

use std::collections::hash_map::{DefaultHasher, Entry};
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
/// per explored configuration. Two independently salted SipHash passes make an
/// accidental collision, which could only prune a configuration that was not
/// actually explored, vanishingly unlikely. `DefaultHasher::new()` uses fixed
/// keys, so results are reproducible.
pub(crate) fn fingerprint<T: Hash + ?Sized>(value: &T) -> u128 {
    let lane = |salt: u64| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        value.hash(&mut h);
        h.finish()
    };
    (u128::from(lane(0x9e37_79b9_7f4a_7c15)) << 64) | u128::from(lane(0xc2b2_ae3d_27d4_eb4f))
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

/// Set of explored configurations.
///
/// The exact bitsets are kept (Zobrist hashes of different sets can collide
/// once there are more than 64 operations), packed back to back in one arena
/// to avoid an allocation per entry. Entries whose keys collide are chained.
pub(crate) struct Memo {
    words_per_set: usize,
    heads: HashMap<Key, u32, BuildHasherDefault<FoldHasher>>,
    arena: Vec<u64>,
    chain: Vec<u32>,
}

impl Memo {
    pub(crate) fn new(set_len: usize) -> Self {
        Self {
            words_per_set: set_len.div_ceil(64),
            heads: HashMap::default(),
            arena: Vec::new(),
            chain: Vec::new(),
        }
    }

    /// Records a configuration; returns `false` if it had been seen before.
    pub(crate) fn insert(&mut self, set_hash: u64, set: &Bitset, state: u128) -> bool {
        let key = Key { set_hash, state };
        let words = set.words();
        debug_assert_eq!(words.len(), self.words_per_set);
        let new_index = self.chain.len() as u32;
        match self.heads.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(new_index);
                self.chain.push(NONE);
            }
            Entry::Occupied(mut slot) => {
                let mut at = *slot.get();
                while at != NONE {
                    let start = at as usize * self.words_per_set;
                    if &self.arena[start..start + self.words_per_set] == words {
                        return false;
                    }
                    at = self.chain[at as usize];
                }
                self.chain.push(*slot.get());
                slot.insert(new_index);
            }
        }
        self.arena.extend_from_slice(words);
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.chain.len()
    }
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
        let mut memo = Memo::new(70);
        let mut a = Bitset::new(70);
        a.set(3);
        let mut b = Bitset::new(70);
        b.set(69);
        let s1 = fingerprint("x");
        let s2 = fingerprint("y");
        assert!(memo.insert(zobrist(3), &a, s1));
        assert!(!memo.insert(zobrist(3), &a, s1));
        assert!(memo.insert(zobrist(3), &a, s2));
        assert!(memo.insert(zobrist(69), &b, s1));
        // Same key but a different set must not be mistaken for a hit.
        assert!(memo.insert(zobrist(3), &b, s1));
        assert!(!memo.insert(zobrist(3), &b, s1));
        assert_eq!(memo.len(), 4);
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        assert_eq!(fingerprint("abc"), fingerprint(&"abc".to_string()));
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
        assert_ne!(zobrist(0), zobrist(1));
    }
}
