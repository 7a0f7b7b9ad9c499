//! FIDO security-key keys (`sk-ecdsa-sha2-nistp256@openssh.com`, `sk-ssh-ed25519@openssh.com`).
//!
//! The agent holds what `ssh-add` sends for such a key: its public key, application, flags and
//! key handle (the private key stays on the authenticator). Each signature is made by the provider
//! library named when the key was added (the `sk-provider@openssh.com` constraint), implementing
//! OpenSSH's `sk-api.h`. A provider is never loaded into the agent: the helper (the agent's own
//! binary started again with [`HELPER_ARG`]), a separate short-lived process, loads it, makes one signature and exits, as OpenSSH's
//! `ssh-sk-helper` does. The two speak a tiny protocol over the helper's stdin and stdout: one
//! request ([`Request`]), one reply.
//!
//! The built-in (`internal`) provider, ssh-add's default, is libfido2 code compiled into
//! OpenSSH's own `ssh-sk-helper`; keyward does not link libfido2, so for `internal` it runs the
//! installed `ssh-sk-helper` (a separate process too) with OpenSSH's helper protocol. Where no
//! such helper is installed, `internal` keys are refused with a message saying so.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ssh_encoding::Encode;
use ssh_key::private::KeypairData;

use crate::keys::KeyError;
use crate::sshbuf::{put_string, take_string};

/// The name of the provider constraint extension.
pub const PROVIDER_EXTENSION: &str = "sk-provider@openssh.com";
/// What error messages call the helper.
pub const HELPER: &str = "the security-key helper";
/// Overrides where the helper program is (tests, unusual installs).
pub const HELPER_ENV: &str = "KEYWARD_SK_HELPER";
/// The sk-api major version this helper speaks (OpenSSH 9.x's `SSH_SK_VERSION_MAJOR`).
const API_MAJOR: u32 = 0x000a_0000;
const API_MAJOR_MASK: u32 = 0xffff_0000;
/// sk-api algorithm numbers.
const SK_ECDSA: u32 = 0;
const SK_ED25519: u32 = 1;
/// The largest request or reply the helper reads.
const MAX_MESSAGE: u64 = 256 * 1024;

/// OpenSSH's helper, which has the built-in provider, by default (`$KEYWARD_OPENSSH_SK_HELPER`
/// overrides).
const OPENSSH_HELPERS: &[&str] = &[
    "/usr/lib/openssh/ssh-sk-helper",
    "/usr/libexec/openssh/ssh-sk-helper",
    "/usr/libexec/ssh-sk-helper",
    "/usr/local/libexec/ssh-sk-helper",
];
/// Overrides where OpenSSH's `ssh-sk-helper` is.
pub const OPENSSH_HELPER_ENV: &str = "KEYWARD_OPENSSH_SK_HELPER";
/// The provider name that means OpenSSH's built-in one.
pub const INTERNAL: &str = "internal";
/// OpenSSH 9.x's `SSH_SK_HELPER_VERSION` and `SSH_SK_HELPER_SIGN`.
const OPENSSH_HELPER_VERSION: u8 = 5;
const OPENSSH_HELPER_SIGN: u32 = 1;

/// Where OpenSSH's `ssh-sk-helper` is installed, if it is.
pub fn openssh_helper() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(OPENSSH_HELPER_ENV) {
        return Some(PathBuf::from(path));
    }
    OPENSSH_HELPERS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A security key as the agent holds it, with the provider it signs through: a library path,
/// or [`INTERNAL`].
pub struct SkSigner {
    keypair: KeypairData,
    provider: PathBuf,
}

impl SkSigner {
    /// A signer for `keypair` (an sk key) through the provider library at `provider` (a
    /// canonical path the caller has checked against the allow-list).
    pub fn new(keypair: &KeypairData, provider: PathBuf) -> Result<Self, KeyError> {
        if !matches!(
            keypair,
            KeypairData::SkEcdsaSha2NistP256(_) | KeypairData::SkEd25519(_)
        ) {
            return Err(KeyError::Unsupported("not a security key".into()));
        }
        Ok(Self {
            keypair: keypair.clone(),
            provider,
        })
    }

    /// The key in wire form.
    pub fn keypair(&self) -> &KeypairData {
        &self.keypair
    }

    /// The provider library.
    pub fn provider(&self) -> &Path {
        &self.provider
    }

    /// The signature algorithm (the plain key type).
    pub fn algorithm(&self) -> &'static str {
        match self.keypair {
            KeypairData::SkEd25519(_) => "sk-ssh-ed25519@openssh.com",
            _ => "sk-ecdsa-sha2-nistp256@openssh.com",
        }
    }

    /// Signs `data` through the helper; returns the SSH signature blob (`string algorithm,
    /// string signature, byte flags, uint32 counter`), as OpenSSH's `sshsk_sign` builds it.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (alg, application, flags, handle) = match &self.keypair {
            KeypairData::SkEcdsaSha2NistP256(k) => (
                SK_ECDSA,
                k.public().application(),
                k.flags(),
                k.key_handle(),
            ),
            KeypairData::SkEd25519(k) => (
                SK_ED25519,
                k.public().application(),
                k.flags(),
                k.key_handle(),
            ),
            _ => return Err(KeyError::Unsupported("not a security key".into())),
        };
        if self.provider.as_os_str() == INTERNAL {
            return self.sign_with_openssh_helper(data);
        }
        let request = Request {
            provider: self.provider.as_os_str().as_encoded_bytes().to_vec(),
            alg,
            data: data.to_vec(),
            application: application.as_bytes().to_vec(),
            key_handle: handle.to_vec(),
            flags,
        };
        let reply = run_helper(&request.encode())?;
        let signed = Response::decode(&reply)?;
        let mut out = Vec::new();
        put_string(&mut out, self.algorithm().as_bytes());
        if alg == SK_ECDSA {
            let mut inner = Vec::new();
            for part in [&signed.r, &signed.s] {
                ssh_key::Mpint::from_positive_bytes(part)
                    .map_err(|_| KeyError::Signing("provider returned a malformed r or s".into()))?
                    .encode(&mut inner)
                    .map_err(KeyError::Encoding)?;
            }
            put_string(&mut out, &inner);
        } else {
            put_string(&mut out, &signed.r);
        }
        out.push(signed.flags);
        out.extend_from_slice(&signed.counter.to_be_bytes());
        Ok(out)
    }
}

impl SkSigner {
    /// Signs through OpenSSH's `ssh-sk-helper` with its built-in provider: one framed request
    /// (`uint32 length, byte version`, then `uint32 SIGN, byte log_on_stderr, uint32 log_level,
    /// string key, string provider, string data, string alg, uint32 compat, string pin`), one
    /// framed reply (`byte version, uint32 type`, then the signature or an error code), as
    /// OpenSSH's `ssh-sk-client.c` speaks it.
    fn sign_with_openssh_helper(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let path = openssh_helper()
            .ok_or_else(|| KeyError::Signing("OpenSSH's ssh-sk-helper is not installed".into()))?;
        let mut key = Vec::new();
        self.keypair.encode(&mut key).map_err(KeyError::Encoding)?;
        let mut body = vec![OPENSSH_HELPER_VERSION];
        body.extend_from_slice(&OPENSSH_HELPER_SIGN.to_be_bytes());
        body.push(0);
        body.extend_from_slice(&0u32.to_be_bytes());
        put_string(&mut body, &key);
        put_string(&mut body, INTERNAL.as_bytes());
        put_string(&mut body, data);
        put_string(&mut body, b"");
        body.extend_from_slice(&0u32.to_be_bytes());
        put_string(&mut body, b"");
        let mut request = Vec::with_capacity(4 + body.len());
        put_string(&mut request, &body);
        let reply = spawn_and_converse(&path, &[], &request)?;
        let malformed = || KeyError::Signing("malformed reply from ssh-sk-helper".into());
        let mut r = reply.as_slice();
        let frame = take_string(&mut r).ok_or_else(malformed)?;
        let (&version, rest) = frame.split_first().ok_or_else(malformed)?;
        if version != OPENSSH_HELPER_VERSION {
            return Err(KeyError::Signing(format!(
                "ssh-sk-helper speaks version {version}, keyward {OPENSSH_HELPER_VERSION}"
            )));
        }
        let (kind, mut rest) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
        match u32::from_be_bytes(*kind) {
            OPENSSH_HELPER_SIGN => {
                let signature = take_string(&mut rest).ok_or_else(malformed)?;
                Ok(signature.to_vec())
            }
            0 => {
                let (code, _) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
                Err(KeyError::Signing(format!(
                    "built-in security-key provider: {}",
                    openssh_error(u32::from_be_bytes(*code))
                )))
            }
            _ => Err(malformed()),
        }
    }
}

/// OpenSSH's name for the helper's error codes (sent as the negated `SSH_ERR_*`).
fn openssh_error(code: u32) -> String {
    match code {
        60 => "no security key device found".into(),
        43 => "the security key needs a PIN".into(),
        14 => "key type not supported by this OpenSSH".into(),
        other => format!("OpenSSH error -{other}"),
    }
}

/// The argument that makes `keyward-agent` (or `keyward agent`) act as the helper instead of an
/// agent. It starts with `--`, so ssh-agent's command line can never read it as a command.
pub const HELPER_ARG: &str = "--keyward-sk-helper";

/// How the helper is run: `$KEYWARD_SK_HELPER` when set, else the running binary itself with
/// [`HELPER_ARG`] (`keyward agent --keyward-sk-helper` when the binary is the CLI), so an agent
/// installed as one file signs with security keys too.
pub fn helper_command() -> Result<(PathBuf, Vec<&'static str>), KeyError> {
    if let Some(path) = std::env::var_os(HELPER_ENV) {
        return Ok((PathBuf::from(path), Vec::new()));
    }
    let exe = std::env::current_exe()
        .map_err(|e| KeyError::Signing(format!("cannot locate {HELPER}: {e}")))?;
    let args = if exe.file_name().is_some_and(|name| name == "keyward") {
        vec!["agent", HELPER_ARG]
    } else {
        vec![HELPER_ARG]
    };
    Ok((exe, args))
}

/// Runs one request through a fresh helper process and returns its reply.
fn run_helper(request: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (program, args) = helper_command()?;
    spawn_and_converse(&program, &args, request)
}

/// Starts the helper at `path`, writes `request` to its stdin, and reads its stdout to the end.
fn spawn_and_converse(path: &Path, args: &[&str], request: &[u8]) -> Result<Vec<u8>, KeyError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        KeyError::Signing(format!("{what} {}: {e}", path.display()))
    };
    // No environment is passed on: the provider sees nothing of the agent's.
    let mut child = Command::new(path)
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail("cannot start", &e))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let written = stdin.write_all(request);
    drop(stdin);
    let mut reply = Vec::new();
    let read = child
        .stdout
        .take()
        .expect("stdout is piped")
        .take(MAX_MESSAGE)
        .read_to_end(&mut reply);
    let status = child.wait().map_err(|e| fail("lost", &e))?;
    written.map_err(|e| fail("cannot write to", &e))?;
    read.map_err(|e| fail("cannot read from", &e))?;
    if !status.success() && reply.is_empty() {
        return Err(fail("signature failed in", &status));
    }
    Ok(reply)
}

/// A signature request to the helper.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// The provider library's path.
    pub provider: Vec<u8>,
    /// sk-api algorithm number.
    pub alg: u32,
    /// The data to sign.
    pub data: Vec<u8>,
    /// The key's application (`ssh:` ...).
    pub application: Vec<u8>,
    /// The key handle.
    pub key_handle: Vec<u8>,
    /// The key's flags (user presence, verification).
    pub flags: u8,
}

impl Request {
    /// `string provider, uint32 alg, string data, string application, string key_handle,
    /// byte flags`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, &self.provider);
        out.extend_from_slice(&self.alg.to_be_bytes());
        put_string(&mut out, &self.data);
        put_string(&mut out, &self.application);
        put_string(&mut out, &self.key_handle);
        out.push(self.flags);
        out
    }

    /// Reads what [`encode`](Self::encode) wrote.
    pub fn decode(mut r: &[u8]) -> Option<Self> {
        let provider = take_string(&mut r)?.to_vec();
        let (alg, rest) = r.split_first_chunk::<4>()?;
        r = rest;
        let data = take_string(&mut r)?.to_vec();
        let application = take_string(&mut r)?.to_vec();
        let key_handle = take_string(&mut r)?.to_vec();
        let (&flags, rest) = r.split_first()?;
        rest.is_empty().then(|| Self {
            provider,
            alg: u32::from_be_bytes(*alg),
            data,
            application,
            key_handle,
            flags,
        })
    }
}

/// The helper's answer: `byte 0, byte flags, uint32 counter, string r, string s`, or `byte 1,
/// string error`.
struct Response {
    flags: u8,
    counter: u32,
    r: Vec<u8>,
    s: Vec<u8>,
}

impl Response {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0, self.flags];
        out.extend_from_slice(&self.counter.to_be_bytes());
        put_string(&mut out, &self.r);
        put_string(&mut out, &self.s);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let malformed = || KeyError::Signing("malformed reply from the security-key helper".into());
        let (&status, mut r) = bytes.split_first().ok_or_else(malformed)?;
        if status != 0 {
            let message = take_string(&mut r).ok_or_else(malformed)?;
            return Err(KeyError::Signing(format!(
                "security-key provider: {}",
                String::from_utf8_lossy(message)
            )));
        }
        let (&flags, rest) = r.split_first().ok_or_else(malformed)?;
        let (counter, mut rest) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
        let sig_r = take_string(&mut rest).ok_or_else(malformed)?.to_vec();
        let sig_s = take_string(&mut rest).ok_or_else(malformed)?.to_vec();
        if !rest.is_empty() {
            return Err(malformed());
        }
        Ok(Self {
            flags,
            counter: u32::from_be_bytes(*counter),
            r: sig_r,
            s: sig_s,
        })
    }
}

fn error_reply(message: &str) -> Vec<u8> {
    let mut out = vec![1];
    put_string(&mut out, message.as_bytes());
    out
}

/// The helper (`keyward-agent --keyward-sk-helper`): reads one request on stdin, signs through the provider it names, writes
/// the reply on stdout. Exit status 0 when a reply (success or error) was written.
pub fn helper_main() -> std::process::ExitCode {
    let mut request = Vec::new();
    let reply = match std::io::stdin()
        .take(MAX_MESSAGE)
        .read_to_end(&mut request)
        .ok()
        .and_then(|_| Request::decode(&request))
    {
        Some(request) => match sign_in_this_process(&request) {
            Ok(response) => response.encode(),
            Err(message) => error_reply(&message),
        },
        None => error_reply("malformed request"),
    };
    match std::io::stdout().write_all(&reply) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// OpenSSH's `struct sk_sign_response` (sk-api.h).
#[repr(C)]
struct SkSignResponse {
    flags: u8,
    counter: u32,
    sig_r: *mut u8,
    sig_r_len: usize,
    sig_s: *mut u8,
    sig_s_len: usize,
}

type SkApiVersion = unsafe extern "C" fn() -> u32;
type SkSign = unsafe extern "C" fn(
    alg: u32,
    data: *const u8,
    data_len: usize,
    application: *const c_char,
    key_handle: *const u8,
    key_handle_len: usize,
    flags: u8,
    pin: *const c_char,
    options: *mut *mut c_void,
    sign_response: *mut *mut SkSignResponse,
) -> c_int;

/// Loads the provider and signs. Only ever called in the helper process.
fn sign_in_this_process(request: &Request) -> Result<Response, String> {
    let path = CString::new(request.provider.clone()).map_err(|_| "provider path has a NUL")?;
    let application =
        CString::new(request.application.clone()).map_err(|_| "application has a NUL")?;
    let shown = String::from_utf8_lossy(&request.provider).into_owned();
    // SAFETY: dlopen with a NUL-terminated path; the handle is never closed (the process exits
    // after this one signature).
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
    if handle.is_null() {
        return Err(format!("cannot load provider {shown}: {}", dl_error()));
    }
    let symbol = |name: &CStr| {
        // SAFETY: dlsym on a live handle with a NUL-terminated name.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if p.is_null() {
            Err(format!("provider {shown} has no {name:?}"))
        } else {
            Ok(p)
        }
    };
    let version = symbol(c"sk_api_version")?;
    // SAFETY: sk-api.h declares `uint32_t sk_api_version(void)`.
    let version: SkApiVersion = unsafe { std::mem::transmute(version) };
    // SAFETY: calling the provider's version function, which takes no arguments.
    let version = unsafe { version() };
    if version & API_MAJOR_MASK != API_MAJOR {
        return Err(format!(
            "provider {shown} implements sk-api {version:#010x}, keyward speaks {API_MAJOR:#010x}"
        ));
    }
    let sign = symbol(c"sk_sign")?;
    // SAFETY: sk-api.h declares sk_sign with exactly this signature.
    let sign: SkSign = unsafe { std::mem::transmute(sign) };
    let mut response: *mut SkSignResponse = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the lengths given and outlives the call; no options
    // and no PIN, as OpenSSH passes for a key without one.
    let rc = unsafe {
        sign(
            request.alg,
            request.data.as_ptr(),
            request.data.len(),
            application.as_ptr(),
            request.key_handle.as_ptr(),
            request.key_handle.len(),
            request.flags,
            std::ptr::null(),
            std::ptr::null_mut(),
            &raw mut response,
        )
    };
    if rc != 0 || response.is_null() {
        return Err(format!("provider {shown}: sk_sign failed with code {rc}"));
    }
    // SAFETY: on success the provider filled `response`; the lengths describe its buffers.
    let response = unsafe { &*response };
    let copy = |p: *const u8, len: usize| {
        if p.is_null() {
            Vec::new()
        } else {
            // SAFETY: the provider's buffer of `len` bytes.
            unsafe { std::slice::from_raw_parts(p, len) }.to_vec()
        }
    };
    Ok(Response {
        flags: response.flags,
        counter: response.counter,
        r: copy(response.sig_r, response.sig_r_len),
        s: copy(response.sig_s, response.sig_s_len),
    })
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message valid until the next dl call.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: see above.
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_refuse_trailing_bytes() {
        let request = Request {
            provider: b"/usr/lib/p.so".to_vec(),
            alg: SK_ED25519,
            data: b"data".to_vec(),
            application: b"ssh:".to_vec(),
            key_handle: vec![1, 2, 3],
            flags: 1,
        };
        let mut bytes = request.encode();
        assert_eq!(Request::decode(&bytes), Some(request));
        bytes.push(0);
        assert_eq!(Request::decode(&bytes), None);
    }

    #[test]
    fn helper_errors_reach_the_caller() {
        let err = Response::decode(&error_reply("no device")).err().unwrap();
        assert!(err.to_string().contains("no device"));
        assert!(Response::decode(&[0, 1]).is_err());
    }

    #[test]
    fn a_missing_provider_is_an_error_not_a_crash() {
        let request = Request {
            provider: b"/nonexistent/provider.so".to_vec(),
            alg: SK_ECDSA,
            data: vec![],
            application: b"ssh:".to_vec(),
            key_handle: vec![],
            flags: 0,
        };
        let err = sign_in_this_process(&request).err().unwrap();
        assert!(err.contains("cannot load provider"), "{err}");
    }
}
