//! Message ids, the client-id suffix and jitter, from a per-process random
//! seed (no random-number crate: the standard library's randomly keyed
//! hasher is enough for ids that must not collide and delays that must not
//! line up).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static KEYS: OnceLock<RandomState> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 64 fresh random bits.
pub(crate) fn random_u64() -> u64 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = KEYS.get_or_init(RandomState::new).build_hasher();
    h.write_u64(n);
    h.finish()
}

/// A random UUID (version 4 layout), as Axon Framework writes message ids.
pub(crate) fn uuid() -> String {
    let (a, b) = (random_u64(), random_u64());
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Eight random hex digits (the client-id suffix).
pub(crate) fn hex8() -> String {
    format!("{:08x}", random_u64() as u32)
}

/// A random number in `[0, 1)`.
pub(crate) fn unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_distinct_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let u = super::uuid();
            assert_eq!(u.len(), 36);
            assert_eq!(&u[14..15], "4");
            assert!(seen.insert(u));
        }
        let x = super::unit();
        assert!((0.0..1.0).contains(&x));
    }
}
