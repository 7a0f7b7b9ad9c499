//! No private key material at rest in plaintext when the store has a passphrase: windows of the
//! exported private keys' secret values are searched for in every store file, raw, hex and base64
//! (at each of the three alignments); the same scan finds the public values, which proves it works.

use std::fs;
use std::path::PathBuf;

use ssh_key::PrivateKey;

use crate::env::{Env, STORE_PASS};
use crate::util::Agent;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 of `bytes`, whose length must be a multiple of 3 (no padding needed).
fn base64(bytes: &[u8]) -> Vec<u8> {
    assert_eq!(bytes.len() % 3, 0);
    let mut out = Vec::with_capacity(bytes.len() / 3 * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        for shift in [18, 12, 6, 0] {
            out.push(B64[((n >> shift) & 63) as usize]);
        }
    }
    out
}

fn hex(bytes: &[u8], upper: bool) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| {
            let s = if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            };
            s.into_bytes()
        })
        .collect()
}

/// Every encoding under which `window` (at least 32 bytes) could sit in a file.
fn needles(window: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut all = vec![
        ("raw".to_owned(), window.to_vec()),
        ("hex".to_owned(), hex(window, false)),
        ("HEX".to_owned(), hex(window, true)),
    ];
    for start in 0..3 {
        all.push((
            format!("base64@{start}"),
            base64(&window[start..start + 27]),
        ));
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The encodings of `window` found in `files`, with the file names.
fn scan(files: &[PathBuf], window: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let raw = fs::read(file).expect("read store file");
        // Base64 text may be wrapped; look at the bytes with line breaks removed as well.
        let unwrapped: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|b| *b != b'\n' && *b != b'\r')
            .collect();
        for (label, needle) in needles(window) {
            if contains(&raw, &needle) || contains(&unwrapped, &needle) {
                found.push(format!("{label} in {}", file.display()));
            }
        }
    }
    found
}

/// A 32-byte window from the middle of `bytes`.
fn middle(bytes: &[u8]) -> &[u8] {
    assert!(
        bytes.len() >= 64,
        "value too short for a distinctive window"
    );
    let start = bytes.len() / 2 - 16;
    &bytes[start..start + 32]
}

fn exported(env: &Env, agent: &Agent, name: &str) -> PrivateKey {
    let out = env.path(&format!("id_{name}"));
    // A private export needs the store passphrase.
    let pass = env.pass_file(STORE_PASS);
    let res = crate::util::run(
        env.kw_command()
            .env("KEYWARD_PASSPHRASE_FILE", &pass)
            .args(["key", "export", name, "--private", "--out", &out]),
    );
    assert!(
        res.status.success(),
        "export {name}: {res:#?}\nlog:\n{}",
        agent.log()
    );
    PrivateKey::from_openssh(fs::read_to_string(&out).expect("read export")).expect("parse export")
}

#[test]
fn no_plaintext_private_key_in_store_files() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(STORE_PASS);
    let mut agent = env.start_agent(&["--passphrase-file", &pass]);
    env.kw_ok(&["key", "generate", "-n", "rsa", "-C", "rsa@rest"]);
    env.kw_ok(&[
        "key", "generate", "-t", "ed25519", "-n", "ed", "-C", "ed@rest",
    ]);
    let rsa = exported(&env, &agent, "rsa");
    let ed = exported(&env, &agent, "ed");
    // Exporting must not have written anything either; stop so every write is on disk.
    let status = agent.signal_and_wait(libc::SIGTERM).expect("agent stops");
    assert!(status.success(), "{status}");
    drop(agent);

    let rsa = rsa.key_data().rsa().expect("an RSA key");
    let ed = ed.key_data().ed25519().expect("an Ed25519 key");
    let secrets: [(&str, Vec<u8>); 4] = [
        ("RSA d", middle(rsa.private.d.as_bytes()).to_vec()),
        ("RSA p", middle(rsa.private.p.as_bytes()).to_vec()),
        ("RSA q", middle(rsa.private.q.as_bytes()).to_vec()),
        ("Ed25519 seed", ed.private.to_bytes().to_vec()),
    ];
    let files = env.store_files();
    assert!(!files.is_empty(), "the store has files");
    let exports = [env.root().join("id_rsa"), env.root().join("id_ed")];
    for (what, window) in &secrets {
        let found = scan(&files, window);
        assert!(found.is_empty(), "{what} is stored in plaintext: {found:?}");
        // Negative control: the plaintext export holds it, base64-encoded, and the scan sees it.
        let found = scan(&exports, window);
        assert!(
            !found.is_empty(),
            "the scan must find the {what} in the export"
        );
    }

    // Positive controls: the public values are kept in the clear (listing works sealed), and the
    // same scan finds them.
    let controls: [(&str, Vec<u8>); 2] = [
        ("RSA n", middle(rsa.public.n.as_bytes()).to_vec()),
        ("Ed25519 public", ed.public.0.to_vec()),
    ];
    for (what, window) in &controls {
        let found = scan(&files, window);
        assert!(
            !found.is_empty(),
            "positive control: the scan must find the {what}"
        );
    }

    // The store still opens and holds both keys.
    assert_eq!(env.key_names(), ["ed", "rsa"]);
}
