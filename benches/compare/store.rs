//! Phase 3: how soon keyward-agent answers after it starts on a large store.
//!
//! A store with N Ed25519 keys (default 10,000; RSA keys would take minutes to generate) and N
//! certificates (one per key, all sharing the DER of one real certificate made by
//! `create_self_signed` from an RSA-2048 test key, each with its own id and `not_after` between
//! 400 and 4,000 days ahead, so none is due for renewal) is built once through the library and
//! cached in `<target>/bench/store-ed25519-N/` (a `complete` marker guards against a half-built
//! cache; delete the directory to rebuild it).
//!
//! Each start copies the cached store into a fresh directory (not timed), spawns
//! `keyward-agent --socket S --store COPY` and polls: `connect()` every 0.5 ms until the socket
//! accepts, then `REQUEST_IDENTITIES` until the answer lists all N keys. Reported, as medians over
//! `KEYWARD_BENCH_STARTS` starts (default 5), from spawn: the first answer of any kind and the full
//! list; then the first signature with a stored key (its private half is decrypted on first use)
//! and the peak RSS. `ssh-agent` has no store: its reference is an empty start, and so is an empty
//! keyward store, which shows the fixed cost of a start. An in-process breakdown (open, list,
//! key-ring load) goes to the JSON and stderr to show where start-up time goes.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use ssh_key::LineEnding;
use ssh_key::private::{KeypairData, RsaKeypair};

use keyward::agent::Keyring;
use keyward::certs::{SECS_PER_DAY, Subject, create_self_signed};
use keyward::clock::SystemClock;
use keyward::keys::Signer;
use keyward::keys::generate::{KeySpec, generate};
use keyward::service::Service;
use keyward::store::{
    CertId, CertOrigin, CertRecord, CertStatus, CertStore as _, KdfParams, KeyStore as _, NewKey,
    PrivateKeyBytes, SledStore, Store,
};

use crate::Config;
use crate::agents::{Agent, Kind};
use crate::proto::{self, Client, REQUEST_IDENTITIES, SIGN_RESPONSE};
use crate::report::{Better, NOT_APPLICABLE, Row};
use crate::timing::{closure_ms, median, ms, summary};

/// The target for start to first answer with 10,000 keys and certificates.
const TARGET_MS: f64 = 300.0;
/// Certificates per `put_certs` transaction while building the cache.
const CHUNK: usize = 1_000;
/// How long a start may take before the run gives up.
const PATIENCE: Duration = Duration::from_secs(60);
/// Between two polls of a starting agent.
const POLL: Duration = Duration::from_micros(500);

/// One measured start.
struct Start {
    first_ms: f64,
    full_ms: f64,
    sign_ms: Option<f64>,
    rss_mib: f64,
}

/// Runs the phase: adds its rows and returns its JSON parameters.
pub fn run(cfg: &Config, rsa: &RsaKeypair, rows: &mut Vec<Row>) -> Result<Value> {
    let n = cfg.store_keys;
    let cached = cached_store(&cfg.bench_dir, n, rsa)?;
    let scratch = tempfile::Builder::new()
        .prefix("kwbench-store-")
        .tempdir()?;
    let empty = scratch.path().join("empty");
    drop(SledStore::init(&empty, None, KdfParams::default())?);
    let expect = u32::try_from(n)?;

    let (mut full, mut bare, mut ssh) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..cfg.starts {
        // Alternate, so a change in background load hits all three alike.
        let copy = scratch.path().join(format!("copy-{i}"));
        copy_dir(&cached, &copy)?;
        full.push(start_once(Kind::Keyward, Some(&copy), expect)?);
        fs::remove_dir_all(&copy)?;
        let copy = scratch.path().join(format!("empty-{i}"));
        copy_dir(&empty, &copy)?;
        bare.push(start_once(Kind::Keyward, Some(&copy), 0)?);
        ssh.push(start_once(Kind::OpenSsh, None, 0)?);
    }
    let pick = |v: &[Start], f: fn(&Start) -> f64| v.iter().map(f).collect::<Vec<_>>();
    let first = pick(&full, |s| s.first_ms);
    let listed = pick(&full, |s| s.full_ms);
    let signs: Vec<f64> = full.iter().filter_map(|s| s.sign_ms).collect();
    let rss = pick(&full, |s| s.rss_mib);
    let bare_first = pick(&bare, |s| s.first_ms);
    let ssh_first = pick(&ssh, |s| s.first_ms);
    let na = || Err(NOT_APPLICABLE.to_owned());
    let what = format!("{n} Ed25519 keys + {n} certs in store");
    rows.extend([
        Row::new(
            format!("start to first answer, {what}"),
            "ms",
            Better::Lower,
            [Ok(median(&first)), Ok(median(&ssh_first))],
        )
        .reference("ssh-agent (empty)")
        .limit(TARGET_MS),
        Row::new(
            format!("start to full list of {n} keys, {what}"),
            "ms",
            Better::Lower,
            [Ok(median(&listed)), na()],
        )
        .reference("ssh-agent (no store)")
        .limit(TARGET_MS),
        Row::new(
            "start to first answer, empty store",
            "ms",
            Better::Lower,
            [Ok(median(&bare_first)), Ok(median(&ssh_first))],
        )
        .reference("ssh-agent (empty)"),
        Row::new(
            format!("first signature with stored key #{n} after start"),
            "ms",
            Better::Lower,
            [Ok(median(&signs)), na()],
        )
        .reference("ssh-agent (no store)"),
        Row::new(
            format!("peak RSS after start, {what}"),
            "MiB",
            Better::Lower,
            [Ok(median(&rss)), na()],
        )
        .reference("ssh-agent (no store)"),
    ]);
    let breakdown = breakdown(&cached, &scratch.path().join("breakdown"))?;
    eprintln!("  in-process start-up breakdown (ms): {breakdown}");
    Ok(json!({
        "store": cached,
        "keys": n,
        "certificates": n,
        "key_type": "ed25519",
        "first_answer_ms": summary(&first),
        "full_list_ms": summary(&listed),
        "first_sign_ms": summary(&signs),
        "peak_rss_mib": summary(&rss),
        "empty_store_first_answer_ms": summary(&bare_first),
        "ssh_agent_empty_first_answer_ms": summary(&ssh_first),
        "in_process_breakdown_ms": breakdown,
    }))
}

/// Spawns an agent (on `store` for keyward) and times its first answers.
fn start_once(kind: Kind, store: Option<&Path>, expect: u32) -> Result<Start> {
    let mut extra: Vec<&OsStr> = Vec::new();
    if let Some(dir) = store {
        extra.extend([OsStr::new("--store"), dir.as_os_str()]);
    }
    let t0 = Instant::now();
    let mut agent = Agent::spawn(kind, &extra)?;
    let mut client = loop {
        if let Ok(c) = Client::connect(agent.socket()) {
            break c;
        }
        agent.check_alive()?;
        if t0.elapsed() > PATIENCE {
            bail!("{} not listening after {PATIENCE:?}", kind.name());
        }
        thread::sleep(POLL);
    };
    let mut first = None;
    let (full, last) = loop {
        let reply = client.call(&REQUEST_IDENTITIES)?;
        let at = t0.elapsed();
        first.get_or_insert(at);
        if proto::identity_count(reply)? == expect {
            break (at, proto::identities(reply)?.pop());
        }
        if at > PATIENCE {
            bail!(
                "{} did not list {expect} keys within {PATIENCE:?}",
                kind.name()
            );
        }
        thread::sleep(POLL);
    };
    let sign_ms = match last {
        Some(id) => {
            let frame = proto::sign_request(id.credential.key_data(), b"keyward-bench", 0)?;
            let start = Instant::now();
            client
                .call_expect(&frame, SIGN_RESPONSE)
                .context("first signature with a stored key")?;
            Some(ms(start.elapsed()))
        }
        None => None,
    };
    #[allow(clippy::cast_precision_loss)]
    let rss_mib = agent.peak_rss_kib()? as f64 / 1024.0;
    Ok(Start {
        first_ms: ms(first.unwrap_or(full)),
        full_ms: ms(full),
        sign_ms,
        rss_mib,
    })
}

/// What a start does, in this process on a fresh copy: open the store, list the keys, load
/// them into a key ring (lazily, as the daemon does); and what decrypting every private key at
/// once would add.
fn breakdown(cached: &Path, copy: &Path) -> Result<Value> {
    copy_dir(cached, copy)?;
    let (open, store) = closure_ms(|| Ok(SledStore::open(copy)?))?;
    let store: Arc<dyn Store> = Arc::new(store);
    let (list, infos) = closure_ms(|| Ok(store.list_keys()?))?;
    let (certs, _) = closure_ms(|| Ok(store.list_certs()?.len()))?;
    let service = Service::new(
        Some(Arc::clone(&store)),
        Some(Arc::new(Keyring::new())),
        Arc::new(SystemClock),
    );
    let (load, served) = closure_ms(|| Ok(service.load_stored_keys()?))?;
    let (decrypt, texts) = closure_ms(|| {
        infos
            .iter()
            .map(|i| Ok(store.private_key(i.id)?))
            .collect::<Result<Vec<_>>>()
    })?;
    let (parse, ()) = closure_ms(|| {
        for t in &texts {
            let key = ssh_key::PrivateKey::from_openssh(t.as_bytes())?;
            Signer::from_keypair(key.key_data())?;
        }
        Ok(())
    })?;
    Ok(json!({
        "open": open,
        "list_keys": list,
        "list_certs (not at start)": certs,
        "load_stored_keys (list + key ring)": load,
        "keys_served": served,
        "decrypt_all_private (not at start)": decrypt,
        "parse_all_private_and_signers (not at start)": parse,
    }))
}

/// The cached store with `n` keys and certificates, built on first use.
fn cached_store(bench_dir: &Path, n: usize, rsa: &RsaKeypair) -> Result<PathBuf> {
    let root = bench_dir.join(format!("store-ed25519-{n}"));
    let (dir, done) = (root.join("store"), root.join("complete"));
    if done.is_file() {
        return Ok(dir);
    }
    if root.exists() {
        fs::remove_dir_all(&root).context("removing a half-built store cache")?;
    }
    fs::create_dir_all(&root)?;
    eprintln!(
        "building a store with {n} Ed25519 keys and {n} certificates (once; cached in {})",
        root.display()
    );
    let started = Instant::now();
    build(&dir, n, rsa)?;
    eprintln!("  took {:.1} s", started.elapsed().as_secs_f64());
    fs::write(&done, format!("{n} keys, {n} certificates\n"))?;
    Ok(dir)
}

fn build(dir: &Path, n: usize, rsa: &RsaKeypair) -> Result<()> {
    let store = SledStore::init(dir, None, KdfParams::default())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let signer = Signer::from_keypair(&KeypairData::Rsa(rsa.clone()))?;
    let der = create_self_signed(&signer, &Subject::new("keyward-bench")?, 365, now)?
        .der()
        .to_vec();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let key = generate(KeySpec::Ed25519, &format!("bench-{i}"))?;
        let text = key.to_openssh(LineEnding::LF)?;
        ids.push(store.put_key(
            NewKey {
                name: format!("k{i:05}"),
                comment: key.comment().to_owned(),
                public: key.public_key().clone(),
                private: PrivateKeyBytes::from(text.as_bytes().to_vec()),
            },
            now,
        )?);
    }
    for (c, chunk) in ids.chunks(CHUNK).enumerate() {
        let certs: Vec<CertRecord> = chunk
            .iter()
            .enumerate()
            .map(|(j, key_id)| {
                let i = (c * CHUNK + j) as u64;
                CertRecord {
                    id: CertId::random(),
                    key_id: Some(*key_id),
                    subject: format!("CN=bench-{i}"),
                    der: der.clone(),
                    not_before: now,
                    not_after: now + (400 + i % 3_600) * SECS_PER_DAY,
                    origin: CertOrigin::Issued,
                    status: CertStatus::Active,
                    created_at: now,
                }
            })
            .collect();
        store.put_certs(&certs)?;
    }
    Ok(())
}

/// Copies a directory tree, keeping permissions (the store refuses loose ones).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
