//! The RSA-2048 test keys: generated once with aws-lc-rs (as fast as OpenSSL, several times faster
//! than the `rsa` crate) on every core, then cached under the target directory so later runs start
//! at once. The cache is plain concatenated OpenSSH private keys (`ssh-keygen -y` reads each).

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use rsa::pkcs8::DecodePrivateKey as _;
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::{LineEnding, PrivateKey};

const END_MARKER: &str = "-----END OPENSSH PRIVATE KEY-----";

/// Returns `n` RSA-2048 keys, reading them from `cache` and generating (and caching) any missing.
pub fn load_or_generate(cache: &Path, n: usize) -> Result<Vec<RsaKeypair>> {
    let mut keys = read_cache(cache).unwrap_or_default();
    if keys.len() >= n {
        keys.truncate(n);
        return Ok(keys);
    }
    let missing = n - keys.len();
    let start = Instant::now();
    eprintln!(
        "generating {missing} RSA-2048 keys (once; cached in {})",
        cache.display()
    );
    keys.extend(generate(missing)?);
    eprintln!("  took {:.1} s", start.elapsed().as_secs_f64());
    write_cache(cache, &keys)?;
    Ok(keys)
}

fn read_cache(cache: &Path) -> Option<Vec<RsaKeypair>> {
    let text = fs::read_to_string(cache).ok()?;
    text.split_inclusive(END_MARKER)
        .filter(|pem| pem.contains(END_MARKER))
        .map(
            |pem| match PrivateKey::from_openssh(pem.trim()).ok()?.key_data() {
                KeypairData::Rsa(k) => Some(k.clone()),
                _ => None,
            },
        )
        .collect()
}

fn write_cache(cache: &Path, keys: &[RsaKeypair]) -> Result<()> {
    let mut text = String::new();
    for (i, key) in keys.iter().enumerate() {
        let pk = PrivateKey::new(KeypairData::Rsa(key.clone()), format!("keyward-bench-{i}"))?;
        text.push_str(&pk.to_openssh(LineEnding::LF)?);
    }
    if let Some(dir) = cache.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = cache.with_extension("tmp");
    fs::write(&tmp, text).context("writing the key cache")?;
    fs::rename(&tmp, cache).context("replacing the key cache")?;
    Ok(())
}

/// Generates `n` keys on every available core.
fn generate(n: usize) -> Result<Vec<RsaKeypair>> {
    let workers = thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let next = AtomicUsize::new(0);
    thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        out.push(generate_one()?);
                    }
                    Ok::<_, anyhow::Error>(out)
                })
            })
            .collect();
        let mut keys = Vec::with_capacity(n);
        for h in handles {
            keys.extend(h.join().map_err(|_| anyhow!("key generation panicked"))??);
        }
        Ok(keys)
    })
}

fn generate_one() -> Result<RsaKeypair> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| anyhow!("aws-lc keygen failed"))?;
    let der = pair
        .as_der()
        .map_err(|_| anyhow!("aws-lc PKCS#8 export failed"))?;
    let key = rsa::RsaPrivateKey::from_pkcs8_der(der.as_ref()).context("reading PKCS#8")?;
    RsaKeypair::try_from(key).context("converting to an SSH key")
}
