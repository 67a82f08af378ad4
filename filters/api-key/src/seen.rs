//! Keys this VM has already verified, so that a client sending the same key request
//! after request is not hashed with SHA-256 every time (~3k guest instructions, a
//! quarter of the filter's cost per request).
//!
//! A presented key is remembered by a 128-bit tag: two SipHash-1-3 of it under keys
//! drawn at random when the filter is configured (std's `RandomState`, seeded by WASI's
//! `random_get`). Only keys that matched are remembered, never the key itself. A tag
//! match stands for the SHA-256 match it was recorded after: without the random keys,
//! another string with the same tag can only be found by guessing (2^64 requests even
//! if the two halves, under keys that differ in one word, were no stronger than one),
//! and the lookup's timing depends on nothing an attacker can steer. A memory dump
//! (tags and their keys) allows the same offline search a SHA-256 digest does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// The most keys remembered; past it the memory starts afresh (a client with a key
/// not remembered pays one SHA-256 again).
const CAPACITY: usize = 256;

/// Verified keys, by tag: the index of the configured key each matched.
#[derive(Debug, Default)]
pub struct Seen {
    hashers: (RandomState, RandomState),
    tags: RefCell<HashMap<u128, usize, BuildHasherDefault<TagHasher>>>,
}

impl Seen {
    /// The tag of `presented`, under this VM's random keys.
    pub fn tag(&self, presented: &[u8]) -> u128 {
        let (a, b) = &self.hashers;
        (u128::from(a.hash_one(presented)) << 64) | u128::from(b.hash_one(presented))
    }

    /// The index of the configured key that a key with `tag` matched, if remembered.
    pub fn get(&self, tag: u128) -> Option<usize> {
        self.tags.borrow().get(&tag).copied()
    }

    /// Remembers that a key with `tag` matched configured key `index`.
    pub fn insert(&self, tag: u128, index: usize) {
        let mut tags = self.tags.borrow_mut();
        if tags.len() >= CAPACITY {
            tags.clear();
        }
        tags.insert(tag, index);
    }
}

/// Hashes a tag by its low 64 bits: it is already the output of a keyed hash.
#[derive(Debug, Default)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        // Truncation intended: the low half of a keyed hash is as random as the whole.
        self.0 = n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_by_tag_and_starts_afresh_when_full() {
        let seen = Seen::default();
        let tag = seen.tag(b"s3cret");
        assert_eq!(seen.tag(b"s3cret"), tag, "the same key, the same tag");
        assert_ne!(seen.tag(b"s3creT"), tag);
        assert_eq!(seen.get(tag), None);
        seen.insert(tag, 1);
        assert_eq!(seen.get(tag), Some(1));
        for i in 0..CAPACITY {
            seen.insert(seen.tag(format!("k{i}").as_bytes()), 0);
        }
        assert!(seen.tags.borrow().len() <= CAPACITY);
        assert_eq!(seen.get(tag), None, "forgotten when the memory filled up");
    }

    #[test]
    fn another_vm_tags_differently() {
        assert_ne!(Seen::default().tag(b"k"), Seen::default().tag(b"k"));
    }
}
