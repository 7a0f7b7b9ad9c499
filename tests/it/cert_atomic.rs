//! Export targets are rewritten atomically: a reader polling `a.pem` and `a.cer` in a tight loop
//! while the daemon renews the certificate again and again only ever sees a whole certificate
//! (old or new), never a missing, empty or partial file; no temporary files are left behind.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use x509_cert::der::{Decode, DecodePem};

use crate::cert_renew::assert_exported;
use crate::env::{Env, text};

/// What the reader saw: how many reads, and each distinct file content.
#[derive(Default)]
struct Seen {
    reads: u64,
    pems: BTreeSet<Vec<u8>>,
    ders: BTreeSet<Vec<u8>>,
}

/// Reads both files until `stop`; panics on the first read that is not a whole certificate.
fn reader(pem: &Path, der: &Path, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let p = fs::read(pem).unwrap_or_else(|e| panic!("read a.pem: {e}"));
        if let Err(e) = x509_cert::Certificate::from_pem(&p) {
            panic!("a.pem read as a partial certificate ({e}): {p:?}");
        }
        let d = fs::read(der).unwrap_or_else(|e| panic!("read a.cer: {e}"));
        if let Err(e) = x509_cert::Certificate::from_der(&d) {
            panic!("a.cer read as a partial certificate ({e}): {d:?}");
        }
        seen.reads += 1;
        seen.pems.insert(p);
        seen.ders.insert(d);
    }
    seen
}

#[test]
fn readers_never_see_a_partial_export() {
    const RENEWALS: usize = 6;
    let env = Env::no_passphrase();
    let _agent = env.start_agent(&[]);
    env.kw_ok(&["key", "generate", "-n", "web"]);
    let id = text(&env.create("web", 90, &[]), "id");
    fs::create_dir(env.root().join("out")).expect("mkdir out");
    let (pem, cer) = (env.path("out/a.pem"), env.path("out/a.cer"));
    env.kw_ok(&["cert", "policy", &id, "--export", &pem, "--export", &cer]);
    // The first renewal creates the files; the reader starts once they exist.
    let mut current = env.kw_json(&["cert", "renew", &id, "--json"]);
    assert_exported(&env, &current);

    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let stop = Arc::clone(&stop);
        let (pem, cer) = (PathBuf::from(&pem), PathBuf::from(&cer));
        thread::spawn(move || reader(&pem, &cer, &stop))
    };
    let mut thumbprints = vec![text(&current, "sha1_thumbprint")];
    for _ in 0..RENEWALS {
        let id = text(&current, "id");
        current = env.kw_json(&["cert", "renew", &id, "--json"]);
        thumbprints.push(text(&current, "sha1_thumbprint"));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = handle.join().expect("the reader saw a partial file");
    eprintln!(
        "{} reads of both files during {RENEWALS} renewals; {} distinct PEM contents",
        seen.reads,
        seen.pems.len()
    );
    assert!(seen.reads > 0, "the reader never ran");
    assert_exported(&env, &current);

    // Every content the reader saw is one of the issued certificates, as openssl reads it.
    for (n, content) in seen.pems.iter().enumerate() {
        let file = format!("seen-{n}.pem");
        fs::write(env.path(&file), content).expect("write seen pem");
        let thumb = env.ssl_thumbprint(&file);
        assert!(thumbprints.contains(&thumb), "{thumb} was never issued");
    }
    for (n, content) in seen.ders.iter().enumerate() {
        let file = format!("seen-{n}.cer");
        fs::write(env.path(&file), content).expect("write seen der");
        let thumb = env.ssl_thumbprint(&file);
        assert!(thumbprints.contains(&thumb), "{thumb} was never issued");
    }

    // Only the two targets are left: no temporary files.
    let mut left: Vec<String> = fs::read_dir(env.root().join("out"))
        .expect("read out")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["a.cer", "a.pem"]);
}
