//! A tiny synchronous ssh-agent client: u32 big-endian length framing over a blocking Unix
//! stream, with requests built from `ssh_agent_lib::proto` types.
//!
//! Requests are encoded once into complete frames so the measured loop only writes bytes, reads
//! the reply and checks its type; full decoding and signature verification happen outside the
//! timed loops.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use rsa::signature::Verifier as _;
use ssh_agent_lib::proto::{
    AddIdentity, Identity, PrivateCredential, PublicCredential, Request, Response, SignRequest,
};
use ssh_agent_lib::ssh_encoding::{Decode as _, Encode as _};
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, Signature};

/// `SSH_AGENT_SUCCESS`.
pub const SUCCESS: u8 = 6;
/// `SSH_AGENT_IDENTITIES_ANSWER`.
pub const IDENTITIES_ANSWER: u8 = 12;
/// `SSH_AGENT_SIGN_RESPONSE`.
pub const SIGN_RESPONSE: u8 = 14;
/// Sign flag asking for an `rsa-sha2-256` signature.
pub const RSA_SHA2_256: u32 = 2;
/// Sign flag asking for an `rsa-sha2-512` signature.
pub const RSA_SHA2_512: u32 = 4;

/// A full `SSH_AGENTC_REQUEST_IDENTITIES` frame.
pub const REQUEST_IDENTITIES: [u8; 5] = [0, 0, 0, 1, 11];

/// Largest reply we accept. 1,000 RSA-2048 identities take about 300 KiB, which is already above
/// the 256 KiB that OpenSSH's own client (`ssh-add -l`) accepts, so the cap here is generous.
const MAX_REPLY: usize = 16 << 20;

/// A hung agent fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to an agent.
pub struct Client {
    stream: UnixStream,
    reply: Vec<u8>,
}

impl Client {
    /// Connects to the agent socket at `path`.
    pub fn connect(path: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            stream,
            reply: Vec::with_capacity(1024),
        })
    }

    /// Sends one complete frame (length prefix included) and returns the reply body, whose first
    /// byte is the message type.
    pub fn call(&mut self, frame: &[u8]) -> Result<&[u8]> {
        self.stream.write_all(frame).context("sending a request")?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .context("reading a reply length (did the agent close the connection?)")?;
        let len = u32::from_be_bytes(len) as usize;
        ensure!(
            (1..=MAX_REPLY).contains(&len),
            "reply length {len} out of range"
        );
        self.reply.resize(len, 0);
        self.stream
            .read_exact(&mut self.reply)
            .context("reading a reply body")?;
        Ok(&self.reply)
    }

    /// The body of the last reply received.
    pub fn last_reply(&self) -> &[u8] {
        &self.reply
    }

    /// Sends `frame` and fails unless the reply has message type `expect`.
    pub fn call_expect(&mut self, frame: &[u8], expect: u8) -> Result<&[u8]> {
        let reply = self.call(frame)?;
        if reply[0] != expect {
            bail!(
                "agent answered message {} where {expect} was expected",
                reply[0]
            );
        }
        Ok(reply)
    }
}

/// Encodes `request` as a complete frame, length prefix included.
pub fn frame(request: &Request) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    request.encode(&mut body).context("encoding a request")?;
    let len = u32::try_from(body.len()).context("request too large")?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// An `SSH_AGENTC_ADD_IDENTITY` frame for an RSA key.
pub fn add_identity(key: &RsaKeypair, comment: &str) -> Result<Vec<u8>> {
    frame(&Request::AddIdentity(AddIdentity {
        credential: PrivateCredential::Key {
            privkey: KeypairData::Rsa(key.clone()),
            comment: comment.to_owned(),
        },
    }))
}

/// An `SSH_AGENTC_SIGN_REQUEST` frame.
pub fn sign_request(key: &KeyData, data: &[u8], flags: u32) -> Result<Vec<u8>> {
    frame(&Request::SignRequest(SignRequest {
        credential: PublicCredential::Key(key.clone()),
        data: data.to_vec(),
        flags,
    }))
}

/// The identity count of an `SSH_AGENT_IDENTITIES_ANSWER`, checked cheaply (no decoding).
pub fn identity_count(reply: &[u8]) -> Result<u32> {
    ensure!(
        reply.len() >= 5 && reply[0] == IDENTITIES_ANSWER,
        "not an identities answer"
    );
    Ok(u32::from_be_bytes([reply[1], reply[2], reply[3], reply[4]]))
}

/// Fully decodes an `SSH_AGENT_IDENTITIES_ANSWER`.
pub fn identities(reply: &[u8]) -> Result<Vec<Identity>> {
    let mut reader = reply;
    match Response::decode(&mut reader).context("decoding an identities answer")? {
        Response::IdentitiesAnswer(ids) => Ok(ids),
        other => bail!("expected an identities answer, got {other:?}"),
    }
}

/// Decodes an `SSH_AGENT_SIGN_RESPONSE` and verifies it over `data` with `key`, so an agent that
/// answers fast but wrong cannot win. `flags` selects the hash the signature must use.
pub fn verify_sign_response(reply: &[u8], key: &KeyData, data: &[u8], flags: u32) -> Result<()> {
    let mut reader = reply;
    let sig: Signature = match Response::decode(&mut reader).context("decoding a sign response")? {
        Response::SignResponse(sig) => sig,
        other => bail!("expected a sign response, got {other:?}"),
    };
    let hash = if flags & RSA_SHA2_512 != 0 {
        HashAlg::Sha512
    } else {
        HashAlg::Sha256
    };
    let want = Algorithm::Rsa { hash: Some(hash) };
    ensure!(
        sig.algorithm() == want,
        "signature algorithm {} where {want} was asked for",
        sig.algorithm()
    );
    key.verify(data, &sig)
        .map_err(|e| anyhow::anyhow!("signature does not verify: {e}"))
}
