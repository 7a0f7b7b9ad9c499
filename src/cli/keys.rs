//! `keyward key ...`: generate, import, list, show, export, fingerprint, delete, rename, comment,
//! load.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ssh_key::PublicKey;
use zeroize::Zeroizing;

use crate::cli::{Backend, passphrase};
use crate::control::proto::{KeyCertView, KeyView, Request, Response};
use crate::files::write_atomic;
use crate::keys::fingerprint::{FingerprintHash, fingerprint_line};
use crate::keys::import;

/// The comment `ssh-keygen` gives a new key: `user@host`.
pub fn default_comment() -> String {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// `keyward key cert list` as text.
pub fn format_key_certs(certs: &[KeyCertView]) -> String {
    if certs.is_empty() {
        return "no OpenSSH certificates (add one with `keyward key cert add NAME FILE`)\n".into();
    }
    let mut out = format!(
        "{:16}  {:12}  {:9}  {:20}  {:6}  {:34}  KEY ID\n",
        "ID", "KEY", "STATE", "EXPIRES", "SERVED", "TYPE"
    );
    for c in certs {
        out.push_str(&format!(
            "{:16}  {:12}  {:9}  {:20}  {:6}  {:34}  {}\n",
            c.id.get(..16).unwrap_or(&c.id),
            c.key,
            c.state,
            c.expires,
            match c.served {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            },
            c.cert_type,
            c.key_id
        ));
    }
    out
}

/// The name a key gets when none is given: `id_rsa`, `id_ed25519`, `id_ecdsa`.
pub fn default_name(kind: &str) -> String {
    format!("id_{}", kind.to_ascii_lowercase())
}

fn expect_key(response: Response) -> anyhow::Result<KeyView> {
    match response {
        Response::Key(view) => Ok(view),
        other => bail!("unexpected answer from keyward-agent: {other:?}"),
    }
}

/// Shows a spinner on a terminal while `work` runs (RSA 4096 takes seconds).
fn with_spinner<T>(label: &str, work: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return work();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for c in ['|', '/', '-', '\\'].iter().cycle() {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                eprint!("\r{label} {c}");
                std::thread::sleep(Duration::from_millis(100));
            }
            eprint!("\r{}\r", " ".repeat(label.len() + 2));
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        result
    })
}

/// `keyward key generate`.
pub fn generate(
    backend: &mut Backend,
    kind: &str,
    bits: Option<u32>,
    name: Option<String>,
    comment: Option<String>,
) -> anyhow::Result<KeyView> {
    let name = name.unwrap_or_else(|| default_name(kind));
    let comment = comment.unwrap_or_else(default_comment);
    let label = format!("Generating {kind} key {name}...");
    let response = with_spinner(&label, || {
        backend.call(|| Request::KeyGenerate {
            name: name.clone(),
            kind: kind.to_owned(),
            bits,
            comment: comment.clone(),
        })
    })?;
    expect_key(response)
}

/// `keyward key import FILE`.
pub fn import(
    backend: &mut Backend,
    file: &Path,
    name: Option<String>,
    comment: Option<String>,
    passphrase_file: Option<&Path>,
) -> anyhow::Result<KeyView> {
    let text = Zeroizing::new(
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read key file {}", file.display()))?,
    );
    let passphrase = if import::is_encrypted(&text) {
        Some(passphrase::obtain(
            passphrase_file,
            &format!("Passphrase for {}: ", file.display()),
        )?)
    } else {
        None
    };
    let key = import::parse_private_key(&text, passphrase.as_ref().map(|p| p.as_bytes()))
        .with_context(|| format!("cannot import {}", file.display()))?;
    let stem = file.file_name().map_or_else(
        || "imported".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let comment = comment
        .or_else(|| Some(key.comment().to_owned()).filter(|c| !c.is_empty()))
        .or_else(|| pub_file_comment(file))
        .unwrap_or_else(|| stem.clone());
    let name = name.unwrap_or(stem);
    let openssh = key
        .to_openssh(ssh_key::LineEnding::LF)
        .context("cannot encode the key")?;
    let private_openssh = Zeroizing::new(openssh.to_string());
    expect_key(backend.call(|| Request::KeyImport {
        name: name.clone(),
        comment: comment.clone(),
        private_openssh: private_openssh.clone(),
    })?)
}

/// The comment of `FILE.pub` beside a private key file, if there is one.
fn pub_file_comment(file: &Path) -> Option<String> {
    let mut path = file.as_os_str().to_owned();
    path.push(".pub");
    let text = std::fs::read_to_string(PathBuf::from(path)).ok()?;
    let key = PublicKey::from_openssh(text.trim()).ok()?;
    Some(key.comment().to_owned()).filter(|c| !c.is_empty())
}

/// `keyward key show` / `list` entries as text.
pub fn format_key(view: &KeyView) -> String {
    let loaded = match view.loaded {
        Some(true) => "served by the agent",
        Some(false) => "not served (run `keyward key load`)",
        None => "agent not running",
    };
    format!(
        "name:        {}\nid:          {}\ntype:        {} {}\ncomment:     {}\nsha256:      {}\nmd5:         {}\nstatus:      {loaded}\npublic key:  {}\n",
        view.name,
        view.id,
        view.key_type,
        view.bits,
        view.comment,
        view.sha256,
        view.md5,
        view.public
    )
}

/// `keyward key list` as a table.
pub fn format_list(keys: &[KeyView]) -> String {
    if keys.is_empty() {
        return "no keys in the store (create one with `keyward key generate`)\n".into();
    }
    let width = keys.iter().map(|k| k.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:width$}  {:7}  {:4}  {:50}  COMMENT\n",
        "NAME", "TYPE", "BITS", "FINGERPRINT"
    );
    for k in keys {
        let served = if k.loaded == Some(false) {
            " (not served)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:width$}  {:7}  {:4}  {:50}  {}{served}\n",
            k.name, k.key_type, k.bits, k.sha256, k.comment
        ));
    }
    out
}

/// `keyward key fingerprint`: the line `ssh-keygen -l [-E md5]` prints.
pub fn fingerprint(view: &KeyView, hash: FingerprintHash) -> anyhow::Result<String> {
    let public =
        PublicKey::from_openssh(&view.public).context("stored public key is unreadable")?;
    Ok(fingerprint_line(&public, hash)?)
}

/// What `keyward key export` writes.
pub struct Export<'a> {
    /// Export the private key (to `out`, plus `out.pub`).
    pub private: bool,
    /// Target file; stdout for a public key when absent.
    pub out: Option<&'a Path>,
    /// Overwrite existing files.
    pub force: bool,
    /// Encrypt the exported private key with a passphrase.
    pub encrypt: bool,
    /// Read that passphrase from this file.
    pub passphrase_file: Option<&'a Path>,
}

/// `keyward key export`; returns what to print on stdout.
pub fn export(backend: &mut Backend, key: &str, how: &Export<'_>) -> anyhow::Result<String> {
    let view = expect_key(backend.call(|| Request::KeyShow {
        key: key.to_owned(),
    })?)?;
    let public_line = format!("{}\n", view.public);
    if !how.private {
        return match how.out {
            Some(out) => {
                write_atomic(out, public_line.as_bytes(), 0o644, how.force)?;
                Ok(String::new())
            }
            None => Ok(public_line),
        };
    }
    let Some(out) = how.out else {
        bail!("a private key is only written to a file: add --out FILE");
    };
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    if !how.force {
        for path in [out, pub_path.as_path()] {
            if path.exists() {
                bail!(
                    "{} already exists (use --force to overwrite it)",
                    path.display()
                );
            }
        }
    }
    let Response::Private { openssh } = backend.call(|| Request::KeyPrivate {
        key: key.to_owned(),
    })?
    else {
        bail!("unexpected answer from keyward-agent");
    };
    let text = if how.encrypt || how.passphrase_file.is_some() {
        let pass = passphrase::obtain_new(how.passphrase_file)?;
        let key = ssh_key::PrivateKey::from_openssh(openssh.as_str())
            .context("stored key is unreadable")?;
        let encrypted = key
            .encrypt(&mut rand_core::OsRng, pass.as_bytes())
            .context("cannot encrypt the key")?;
        Zeroizing::new(
            encrypted
                .to_openssh(ssh_key::LineEnding::LF)
                .context("cannot encode the key")?
                .to_string(),
        )
    } else {
        openssh
    };
    write_atomic(out, text.as_bytes(), 0o600, how.force)?;
    write_atomic(&pub_path, public_line.as_bytes(), 0o644, how.force)?;
    Ok(String::new())
}
