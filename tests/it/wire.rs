//! A deliberately small, independent ssh-agent protocol client for tests: it writes exactly the
//! bytes a test asks for (including malformed frames) and decodes replies by hand, so it shares no
//! code with the daemon.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::util::HANG_GUARD;

pub const SSH_AGENT_FAILURE: u8 = 5;
pub const SSH_AGENT_SUCCESS: u8 = 6;
pub const SSH_AGENTC_REMOVE_ALL_RSA_IDENTITIES: u8 = 9;
pub const SSH2_AGENTC_REQUEST_IDENTITIES: u8 = 11;
pub const SSH2_AGENT_IDENTITIES_ANSWER: u8 = 12;
pub const SSH2_AGENTC_SIGN_REQUEST: u8 = 13;
pub const SSH2_AGENT_SIGN_RESPONSE: u8 = 14;
pub const SSH2_AGENTC_ADD_IDENTITY: u8 = 17;
pub const SSH2_AGENTC_REMOVE_ALL_IDENTITIES: u8 = 19;
pub const SSH_AGENTC_LOCK: u8 = 22;
pub const SSH_AGENTC_UNLOCK: u8 = 23;
pub const SSH2_AGENTC_ADD_ID_CONSTRAINED: u8 = 25;
pub const SSH_AGENTC_EXTENSION: u8 = 27;
pub const SSH_AGENT_EXTENSION_FAILURE: u8 = 28;
pub const SSH_AGENT_EXTENSION_RESPONSE: u8 = 29;

pub const SSH_AGENT_RSA_SHA2_256: u32 = 2;
pub const SSH_AGENT_RSA_SHA2_512: u32 = 4;

/// Largest frame the agent must accept (256 KiB).
pub const MAX_FRAME: u32 = 256 * 1024;

/// Builds one agent message payload (without the length prefix).
#[derive(Default, Clone)]
pub struct Msg(pub Vec<u8>);

impl Msg {
    pub fn new(kind: u8) -> Msg {
        Msg(vec![kind])
    }

    pub fn byte(mut self, b: u8) -> Msg {
        self.0.push(b);
        self
    }

    pub fn u32(mut self, v: u32) -> Msg {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn string(mut self, s: impl AsRef<[u8]>) -> Msg {
        let s = s.as_ref();
        self.0
            .extend_from_slice(&u32::try_from(s.len()).expect("short").to_be_bytes());
        self.0.extend_from_slice(s);
        self
    }

    pub fn raw(mut self, bytes: &[u8]) -> Msg {
        self.0.extend_from_slice(bytes);
        self
    }
}

/// Reads SSH wire fields from a reply.
pub struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    pub fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().expect("reply too short for a byte");
        self.0 = rest;
        *b
    }

    pub fn u32(&mut self) -> u32 {
        assert!(self.0.len() >= 4, "reply too short for a uint32");
        let (head, rest) = self.0.split_at(4);
        self.0 = rest;
        u32::from_be_bytes(head.try_into().expect("4 bytes"))
    }

    pub fn string(&mut self) -> &'a [u8] {
        let len = self.u32() as usize;
        assert!(self.0.len() >= len, "reply too short for a string of {len}");
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        head
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One connection to an agent socket.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects to `socket`; reads give up after the hang guard.
    pub fn connect(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        stream
            .set_read_timeout(Some(HANG_GUARD))
            .expect("set read timeout");
        Client { stream }
    }

    /// Writes raw bytes with no framing.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes one length-prefixed frame.
    pub fn send(&mut self, msg: &Msg) {
        let mut frame = u32::try_from(msg.0.len())
            .expect("short")
            .to_be_bytes()
            .to_vec();
        frame.extend_from_slice(&msg.0);
        self.write_raw(&frame).expect("write frame");
    }

    /// Reads one frame; `Ok(None)` when the agent closed the connection (EOF or reset) at a frame
    /// boundary.
    pub fn read_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len);
        assert!(len <= MAX_FRAME, "agent sent an oversized frame ({len})");
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Some(body))
    }

    /// Sends `msg` and returns the reply, panicking if the connection closes instead.
    #[track_caller]
    pub fn request(&mut self, msg: &Msg) -> Vec<u8> {
        self.send(msg);
        match self.read_frame() {
            Ok(Some(reply)) => {
                assert!(!reply.is_empty(), "empty reply frame to {:?}", msg.0);
                reply
            }
            Ok(None) => panic!(
                "agent closed the connection instead of answering {:?}",
                msg.0
            ),
            Err(e) => panic!("reading the reply to {:?}: {e}", msg.0),
        }
    }

    /// Asserts that the agent closes this connection without sending any reply bytes.
    #[track_caller]
    pub fn assert_closed_without_reply(&mut self) {
        let mut buf = [0u8; 64];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => panic!(
                    "expected the agent to close, got {n} reply bytes: {:?}",
                    &buf[..n]
                ),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("expected the agent to close the connection, got {e}"),
            }
        }
    }

    /// Requests the identity list; returns (key blob, comment) pairs.
    #[track_caller]
    pub fn identities(&mut self) -> Vec<(Vec<u8>, String)> {
        let reply = self.request(&Msg::new(SSH2_AGENTC_REQUEST_IDENTITIES));
        let mut f = Fields(&reply);
        assert_eq!(f.byte(), SSH2_AGENT_IDENTITIES_ANSWER, "reply {reply:?}");
        let n = f.u32();
        let mut ids = Vec::new();
        for _ in 0..n {
            let blob = f.string().to_vec();
            let comment = String::from_utf8_lossy(f.string()).into_owned();
            ids.push((blob, comment));
        }
        assert!(f.is_empty(), "trailing bytes in identities answer");
        ids
    }

    /// Sends a sign request; returns the raw reply.
    pub fn sign(&mut self, blob: &[u8], data: &[u8], flags: u32) -> Vec<u8> {
        self.request(
            &Msg::new(SSH2_AGENTC_SIGN_REQUEST)
                .string(blob)
                .string(data)
                .u32(flags),
        )
    }

    /// Sends an unlock request with `password`; returns the reply type byte.
    pub fn unlock(&mut self, password: &str) -> u8 {
        self.request(&Msg::new(SSH_AGENTC_UNLOCK).string(password))[0]
    }

    /// Sends a lock request with `password`; returns the reply type byte.
    pub fn lock(&mut self, password: &str) -> u8 {
        self.request(&Msg::new(SSH_AGENTC_LOCK).string(password))[0]
    }
}

/// Splits a successful sign reply into (signature algorithm name, raw signature bytes).
#[track_caller]
pub fn parse_sign_response(reply: &[u8]) -> (String, Vec<u8>) {
    let mut f = Fields(reply);
    assert_eq!(f.byte(), SSH2_AGENT_SIGN_RESPONSE, "sign reply {reply:?}");
    let sig_blob = f.string();
    assert!(f.is_empty(), "trailing bytes after the signature");
    let mut s = Fields(sig_blob);
    let alg = String::from_utf8(s.string().to_vec()).expect("utf-8 algorithm name");
    let sig = s.string().to_vec();
    assert!(s.is_empty(), "trailing bytes in the signature blob");
    (alg, sig)
}

/// Whether a reply type is one of the two failure answers an extension may get.
pub fn is_failure(kind: u8) -> bool {
    kind == SSH_AGENT_FAILURE || kind == SSH_AGENT_EXTENSION_FAILURE
}
