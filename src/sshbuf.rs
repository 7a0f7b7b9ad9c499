//! The SSH wire encoding's integers and strings (RFC 4251 §5), read in place: for the parsers
//! that keep the original bytes (certificates, private key parts, helper replies) and name their
//! own errors. Each reader returns `None` when the input is too short.

/// Takes a big-endian `uint32`.
pub fn take_u32(r: &mut &[u8]) -> Option<u32> {
    let (head, rest) = r.split_first_chunk::<4>()?;
    *r = rest;
    Some(u32::from_be_bytes(*head))
}

/// Takes a big-endian `uint64`.
pub fn take_u64(r: &mut &[u8]) -> Option<u64> {
    let (head, rest) = r.split_first_chunk::<8>()?;
    *r = rest;
    Some(u64::from_be_bytes(*head))
}

/// Takes a `string` (a `uint32` length and that many bytes), borrowed from the input.
pub fn take_string<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut rest = *r;
    let len = take_u32(&mut rest)? as usize;
    if rest.len() < len {
        return None;
    }
    let (head, rest) = rest.split_at(len);
    *r = rest;
    Some(head)
}

/// Appends `bytes` as a `string`. Every caller's data is far below 4 GiB (frames are capped at
/// 256 KiB), so the length always fits.
pub fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_short_input_takes_nothing() {
        let mut out = Vec::new();
        put_string(&mut out, b"abc");
        out.extend_from_slice(&7u64.to_be_bytes());
        let mut r = out.as_slice();
        assert_eq!(take_string(&mut r), Some(&b"abc"[..]));
        assert_eq!(take_u64(&mut r), Some(7));
        assert!(r.is_empty());
        let short = [0, 0, 0, 5, b'a'];
        let mut r = &short[..];
        assert_eq!(take_string(&mut r), None);
        assert_eq!(r, &short[..], "a failed read consumes nothing");
        assert_eq!(take_u32(&mut &[0u8, 1][..]), None);
    }
}
