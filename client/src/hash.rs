//! Stable hashing for consistent-hash keys and ring points.
//!
//! Every client process must map a key to the same node, so the hash must not
//! depend on the process (std's `RandomState`) or the Rust release
//! (`DefaultHasher`). We use 64-bit FNV-1a over the bytes followed by the
//! splitmix64 finalizer, which spreads FNV's weak low bits over the whole word.

/// The key of a call for the `consistent_hash` balancer: calls with the same key go
/// to the same node while the node set is unchanged.
///
/// # Examples
///
/// ```
/// use cluster_client::HashKey;
///
/// let a = HashKey::of("user-42");
/// assert_eq!(a, HashKey::of(b"user-42"));
/// assert_ne!(a, HashKey::of("user-43"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashKey(u64);

impl HashKey {
    /// The key of some bytes (a user id, a session id, ...), hashed with a hash that
    /// is the same in every process and release.
    pub fn of(key: impl AsRef<[u8]>) -> Self {
        Self(mix64(fnv1a(key.as_ref())))
    }

    /// A key from a hash the caller computed (taken as it is, so it should already
    /// be well spread over 64 bits).
    pub fn from_hash(hash: u64) -> Self {
        Self(hash)
    }

    /// The 64-bit hash.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A hasher for keys that already carry a well-spread 64-bit hash (such as a
/// [`Selector`](crate::Selector)'s fingerprint): the word is the hash. Other
/// writes are folded in with FNV-1a and mixed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PrehashedHasher(u64);

impl std::hash::Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix64(self.0 ^ fnv1a(bytes));
    }

    fn write_u64(&mut self, word: u64) {
        self.0 ^= word;
    }
}

/// Builds [`PrehashedHasher`]s.
pub(crate) type Prehashed = std::hash::BuildHasherDefault<PrehashedHasher>;

/// 64-bit FNV-1a.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The splitmix64 finalizer: a bijection that mixes every input bit into every
/// output bit.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn keys_are_stable_values() {
        // Pinned: changing the hash would move every key of every running client.
        assert_eq!(HashKey::of("user-42").get(), mix64(fnv1a(b"user-42")));
        assert_eq!(HashKey::from_hash(7).get(), 7);
    }
}
