//! Deterministic consistent hashing of routing keys onto handler streams.
//!
//! Same construction as SE (SEMANTICS §6.3): each member contributes
//! `load_factor` virtual nodes hashed from `"<stream name> #<i>"`; a key goes
//! to the first virtual node at or after its hash, wrapping around. SE uses
//! MD5 hex strings; SEMANTICS allows any deterministic hash, so this uses
//! 64-bit FNV-1a to stay dependency-free. The only guarantee tests rely on:
//! the same key reaches the same member while the membership is unchanged.

/// 64-bit FNV-1a followed by the MurmurHash3 finaliser, so that similar
/// strings ("h1.7 #3", "h1.7 #4") spread over the whole ring.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// Picks the member for `key` among `members` (`(member id, member name, load factor)`).
pub(crate) fn pick(key: &str, members: &[(u64, &str, i32)]) -> Option<u64> {
    if members.len() <= 1 {
        return members.first().map(|m| m.0);
    }
    let target = fnv1a(key.as_bytes());
    let mut best: Option<(u64, u64)> = None; // (hash, member) of the first node >= target
    let mut lowest: Option<(u64, u64)> = None; // wrap-around candidate
    for (id, name, load_factor) in members {
        for i in 0..(*load_factor).max(1) {
            let hash = fnv1a(format!("{name} #{i}").as_bytes());
            if hash >= target && best.is_none_or(|(h, _)| hash < h) {
                best = Some((hash, *id));
            }
            if lowest.is_none_or(|(h, _)| hash < h) {
                lowest = Some((hash, *id));
            }
        }
    }
    best.or(lowest).map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn same_key_same_member_and_spread() {
        let members = [(1, "a.1", 100), (2, "b.2", 100), (3, "c.3", 100)];
        let mut hits = [0usize; 4];
        for n in 0..300 {
            let key = format!("key-{n}");
            let first = pick(&key, &members).expect("member");
            assert_eq!(pick(&key, &members), Some(first));
            hits[usize::try_from(first).expect("small")] += 1;
        }
        assert!(hits[1] > 0 && hits[2] > 0 && hits[3] > 0, "{hits:?}");
    }
}
