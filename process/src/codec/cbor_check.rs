//! A non-recursive walk over one CBOR data item (RFC 8949 §3): well-formed,
//! not deeper than a limit, no declared length past the end of the input.

use super::CodecError;

/// What is left of one open container.
#[derive(Clone, Copy)]
enum Open {
    /// Items still to come (a map counts keys and values).
    Items(u64),
    /// An indefinite-length array or map: items until a break byte.
    UntilBreak,
}

const BREAK: u8 = 0xff;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn malformed(&self, reason: &'static str) -> CodecError {
        CodecError::Malformed {
            format: "CBOR",
            reason,
            offset: self.pos,
        }
    }

    fn left(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.malformed("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    /// The argument of an initial byte; `None` for "indefinite" (info 31).
    fn argument(&mut self, info: u8) -> Result<Option<u64>, CodecError> {
        let width = match info {
            0..=23 => return Ok(Some(u64::from(info))),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 => return Ok(None),
            _ => return Err(self.malformed("reserved additional information")),
        };
        if self.left() < width {
            return Err(self.malformed("truncated"));
        }
        let mut value = 0u64;
        for _ in 0..width {
            value = (value << 8) | u64::from(self.bytes[self.pos]);
            self.pos += 1;
        }
        Ok(Some(value))
    }

    /// Skips `len` bytes of string content.
    fn skip(&mut self, len: u64) -> Result<(), CodecError> {
        if len > self.left() {
            return Err(self.malformed("declared length runs past the end"));
        }
        self.pos += len as usize;
        Ok(())
    }
}

/// Checks that `bytes` is exactly one well-formed CBOR item nested at most
/// `max_depth` levels deep.
pub(super) fn check(bytes: &[u8], max_depth: usize) -> Result<(), CodecError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut open: Vec<Open> = Vec::new();
    loop {
        let start = r.pos;
        let initial = r.byte()?;
        let (major, info) = (initial >> 5, initial & 0x1f);
        // `Some(n)`: a container with n items (or until break) was opened.
        let opened = if initial == BREAK {
            match open.last() {
                Some(Open::UntilBreak) => {
                    open.pop();
                    None
                }
                _ => return Err(r.malformed("break outside an indefinite-length item")),
            }
        } else {
            let argument = r.argument(info)?;
            match (major, argument) {
                (0 | 1, Some(_)) | (7, Some(_)) => None,
                (0 | 1 | 6, None) | (7, None) => {
                    return Err(r.malformed("indefinite length on a type without one"));
                }
                (2 | 3, Some(len)) => {
                    r.skip(len)?;
                    None
                }
                (2 | 3, None) => {
                    // Chunks of the same major type, each of definite length.
                    loop {
                        let chunk = r.byte()?;
                        if chunk == BREAK {
                            break;
                        }
                        if chunk >> 5 != major {
                            return Err(r.malformed("chunk of another type in a string"));
                        }
                        match r.argument(chunk & 0x1f)? {
                            Some(len) => r.skip(len)?,
                            None => return Err(r.malformed("nested indefinite string")),
                        }
                    }
                    None
                }
                (4, Some(n)) => Some(Open::Items(n)),
                (5, Some(n)) => {
                    Some(Open::Items(n.checked_mul(2).ok_or_else(|| {
                        r.malformed("declared length runs past the end")
                    })?))
                }
                (4 | 5, None) => Some(Open::UntilBreak),
                (6, Some(_)) => Some(Open::Items(1)),
                _ => unreachable!("major type is three bits"),
            }
        };
        match opened {
            Some(Open::Items(0)) => {}
            Some(container) => {
                if open.len() >= max_depth {
                    return Err(CodecError::TooDeep {
                        limit: max_depth,
                        offset: start,
                    });
                }
                // Every item takes at least one byte: a longer count is a lie
                // (and would otherwise reserve memory for it).
                if let Open::Items(n) = container
                    && n > r.left()
                {
                    return Err(r.malformed("declared length runs past the end"));
                }
                open.push(container);
                continue;
            }
            None => {}
        }
        // One item is complete: count it against the containers it closes.
        loop {
            match open.last_mut() {
                None => {
                    return if r.pos == bytes.len() {
                        Ok(())
                    } else {
                        Err(r.malformed("bytes after the item"))
                    };
                }
                Some(Open::UntilBreak) => break,
                Some(Open::Items(n)) => {
                    *n -= 1;
                    if *n > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: &[u8]) -> bool {
        check(bytes, 4).is_ok()
    }

    #[test]
    fn accepts_well_formed_items() {
        assert!(ok(&[0x00]));
        assert!(ok(&[0x83, 0x01, 0x02, 0x03])); // [1, 2, 3]
        assert!(ok(&[0xa1, 0x61, b'a', 0x80])); // {"a": []}
        assert!(ok(&[0x9f, 0x01, 0x9f, 0xff, 0xff])); // [_ 1, [_ ]]
        assert!(ok(&[0x7f, 0x61, b'a', 0x62, b'b', b'c', 0xff])); // (_ "a", "bc")
        assert!(ok(&[0xc1, 0x1a, 0, 0, 0, 1])); // tag 1 (epoch)
        assert!(ok(&[0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0])); // 1.5f64
        assert!(ok(&[0x84, 0x81, 0x81, 0x81, 0x00, 0, 0, 0])); // depth 4
    }

    #[test]
    fn rejects_depth_lengths_and_truncation() {
        let deep = check(&[0x81, 0x81, 0x81, 0x81, 0x81, 0x00], 4).unwrap_err();
        assert!(deep.is_too_deep(), "{deep}");
        assert!(
            check(&[0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0x00], 4)
                .unwrap_err()
                .is_too_deep()
        );
        assert!(
            check(&[0x9f, 0x9f, 0x9f, 0x9f, 0x9f, 0xff], 4)
                .unwrap_err()
                .is_too_deep()
        );
        for bad in [
            &[][..],
            &[0x82, 0x01],                                           // one item short
            &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // 2^64-1 items
            &[0x5b, 0, 0, 0, 0x10, 0, 0, 0, 0],                      // a 64 GiB byte string
            &[0xbb, 0x80, 0, 0, 0, 0, 0, 0, 0],                      // 2^63 pairs: 2^64 items
            &[0xff],                                                 // a lone break
            &[0x1c],                                                 // reserved info
            &[0x1f],                                                 // indefinite integer
            &[0x7f, 0x41, 0x00, 0xff],                               // byte chunk in a text string
            &[0x00, 0x00],                                           // trailing bytes
            &[0x19, 0x01],                                           // truncated argument
        ] {
            let e = check(bad, 4).unwrap_err();
            assert!(e.is_malformed(), "{bad:02x?}: {e}");
        }
    }
}
