//! Encoding of agent replies, and the message numbers of the protocol
//! (draft-miller-ssh-agent and OpenSSH's PROTOCOL.agent).

use std::sync::Arc;

use ssh_encoding::Encode;

/// `SSH_AGENT_FAILURE`.
pub const FAILURE: u8 = 5;
/// `SSH_AGENT_SUCCESS`.
pub const SUCCESS: u8 = 6;
/// `SSH2_AGENT_IDENTITIES_ANSWER`.
pub const IDENTITIES_ANSWER: u8 = 12;
/// `SSH2_AGENT_SIGN_RESPONSE`.
pub const SIGN_RESPONSE: u8 = 14;
/// `SSH_AGENT_EXTENSION_FAILURE`.
pub const EXTENSION_FAILURE: u8 = 28;
/// `SSH_AGENT_EXTENSION_RESPONSE`.
pub const EXTENSION_RESPONSE: u8 = 29;
/// `SSH_AGENTC_LOCK`.
pub const LOCK: u8 = 22;
/// `SSH_AGENTC_UNLOCK`.
pub const UNLOCK: u8 = 23;

/// One reply payload (without its length prefix).
#[derive(Debug, Clone)]
pub enum Reply {
    /// A fixed message such as FAILURE or SUCCESS.
    Static(&'static [u8]),
    /// A cached message shared between connections (the identities answer).
    Shared(Arc<[u8]>),
    /// A message built for this request.
    Owned(Vec<u8>),
}

impl Reply {
    /// `SSH_AGENT_FAILURE`.
    pub const FAILURE: Self = Self::Static(&[FAILURE]);
    /// `SSH_AGENT_SUCCESS`.
    pub const SUCCESS: Self = Self::Static(&[SUCCESS]);

    /// SUCCESS or FAILURE.
    pub fn status(ok: bool) -> Self {
        if ok { Self::SUCCESS } else { Self::FAILURE }
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Static(b) => b,
            Self::Shared(b) => b,
            Self::Owned(b) => b,
        }
    }
}

/// Builds an identities answer from `(key blob, comment)` pairs.
pub fn identities_answer<'a>(
    identities: impl ExactSizeIterator<Item = (&'a [u8], &'a str)>,
) -> Vec<u8> {
    let mut out = vec![IDENTITIES_ANSWER];
    let count = u32::try_from(identities.len()).unwrap_or(u32::MAX);
    put_u32(&mut out, count);
    for (blob, comment) in identities {
        put_string(&mut out, blob);
        put_string(&mut out, comment.as_bytes());
    }
    out
}

/// Builds a sign response around an encoded signature blob.
pub fn sign_response(signature_blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + signature_blob.len());
    out.push(SIGN_RESPONSE);
    put_string(&mut out, signature_blob);
    out
}

/// Builds the answer to the `query` extension: the names of the supported extensions, as
/// consecutive strings after the extension name (OpenSSH's layout).
pub fn query_response(names: &[&str]) -> Vec<u8> {
    let mut out = vec![EXTENSION_RESPONSE];
    put_string(&mut out, b"query");
    for name in names {
        put_string(&mut out, name.as_bytes());
    }
    out
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Frames are capped far below 4 GiB, so the length always fits.
    let _ = bytes.encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_answer_layout() {
        let answer = identities_answer([(&b"blob"[..], "c")].into_iter());
        assert_eq!(
            answer,
            [
                &[12u8, 0, 0, 0, 1, 0, 0, 0, 4][..],
                b"blob",
                &[0, 0, 0, 1],
                b"c"
            ]
            .concat()
        );
    }

    #[test]
    fn query_lists_names_after_the_extension_name() {
        let r = query_response(&["a"]);
        assert_eq!(
            r,
            [&[29u8, 0, 0, 0, 5][..], b"query", &[0, 0, 0, 1], b"a"].concat()
        );
    }
}
