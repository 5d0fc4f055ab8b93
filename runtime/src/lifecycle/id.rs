//! Identifiers of sandboxes and snapshots: 128 random bits from the OS, written in lowercase base-36 so they
//! are URL-safe, unguessable, and look like the ids of other sandbox platforms.

/// Length of an id in characters: enough base-36 digits for 128 bits.
const ID_LEN: usize = 25;
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A new random id, prefixed (e.g. `sbx`-less plain ids for sandboxes, `snap_` for snapshots).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes);
    let mut value = u128::from_le_bytes(bytes);
    let mut digits = [b'0'; ID_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(value % 36) as usize];
        value /= 36;
    }
    let mut id = String::with_capacity(prefix.len() + ID_LEN);
    id.push_str(prefix);
    id.extend(digits.iter().map(|&b| b as char));
    id
}

/// Whether `id` could be an id made by [`new_id`] with `prefix`: checked before an id from a request is
/// used as a path component, so that `../x` or `a/b` can never reach the filesystem.
pub fn is_valid(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == ID_LEN && rest.bytes().all(|b| ALPHABET.contains(&b)))
}

/// Fills `bytes` from the OS's generator. It cannot fail on the platforms Stasis runs on; if it ever did,
/// ids must still be unique, so the clock and a counter are mixed in rather than panicking.
pub(crate) fn fill_random(bytes: &mut [u8]) {
    if getrandom::fill(bytes).is_ok() {
        return;
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u128;
    let mixed = (nanos ^ (count << 64) ^ u128::from(std::process::id())).to_le_bytes();
    for (b, m) in bytes.iter_mut().zip(mixed.iter().cycle()) {
        *b = *m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_unique_and_url_safe() {
        let a = new_id("");
        let b = new_id("");
        assert_ne!(a, b);
        assert!(is_valid(&a, ""));
        assert!(is_valid(&new_id("snap_"), "snap_"));
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn path_like_ids_are_invalid() {
        for bad in [
            "",
            "../etc",
            "a/b",
            &"x".repeat(ID_LEN + 1),
            &"A".repeat(ID_LEN),
        ] {
            assert!(!is_valid(bad, ""), "{bad:?}");
        }
    }
}
