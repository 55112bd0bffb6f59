//! A non-recursive scan of JSON nesting: `[` and `{` outside strings.
//! Everything else is left to serde_json, which checks well-formedness.

use super::CodecError;

/// Checks that `bytes` nests at most `max_depth` arrays and objects deep.
pub(super) fn check(bytes: &[u8], max_depth: usize) -> Result<(), CodecError> {
    // Nesting never exceeds the number of opening brackets (counted in
    // strings too): most bodies have few, and this count is a fast,
    // vectorised pass, so the scan below runs only when it could matter.
    // `[` (0x5B) and `{` (0x7B) are the only bytes that are `{` with the
    // 0x20 bit set; counted in chunks whose per-byte sums fit a `u8`.
    let openers: usize = bytes
        .chunks(255)
        .map(|chunk| {
            usize::from(
                chunk
                    .iter()
                    .fold(0u8, |n, &b| n + u8::from((b | 0x20) == b'{')),
            )
        })
        .sum();
    if openers <= max_depth {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(CodecError::TooDeep {
                        limit: max_depth,
                        offset,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_brackets_outside_strings_only() {
        assert!(check(br#"[[{"a": [1]}]]"#, 4).is_ok());
        assert!(check(br#"[[{"a": [[1]]}]]"#, 4).unwrap_err().is_too_deep());
        assert!(check(br#"["[[[[[[[[", "\"[[[[[[["]"#, 2).is_ok());
        assert!(check(&[b'['; 100_000], 128).unwrap_err().is_too_deep());
        // Many brackets, none deep: the full scan runs and passes.
        assert!(check("[1],".repeat(1000).as_bytes(), 2).is_ok());
        assert!(
            check(format!("[{}]", "[1],".repeat(9)).as_bytes(), 1)
                .unwrap_err()
                .is_too_deep()
        );
    }
}
