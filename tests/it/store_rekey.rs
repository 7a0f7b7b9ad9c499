//! `keyward passwd` re-keys the store: tried by someone who copied the store directory before
//! the passphrase was set (or changed) and copies it again afterwards. Every file of the later
//! copy is searched for the old master key, the old master key is planted as the key file of the
//! later copy, and the old passphrase is tried on it: none of it opens a key, while the user keeps
//! every key.

use std::fs;
use std::path::{Path, PathBuf};

use keyward::store::{KeyStore as _, SledStore, StoreError, Vault as _};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::env::{Env, STORE_PASS, stop};

/// Copies directory `from` to `to` (`cp -a` without ownership).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir copy");
    for e in fs::read_dir(from).expect("read store dir") {
        let e = e.expect("dir entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).expect("copy file");
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Files under `dir` that contain `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|f| {
            fs::read(f)
                .expect("read file")
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect()
}

/// The key file's body (between the version byte and the 8-byte checksum), as JSON.
fn key_file_json(store: &Path) -> Value {
    let bytes = fs::read(store.join("master.key")).expect("read master.key");
    serde_json::from_slice(&bytes[1..bytes.len() - 8]).expect("master.key body is JSON")
}

/// Writes a key file holding `vault` for `generation`, with a valid checksum (the checksum is
/// not a secret: anyone can recompute it).
fn plant_key_file(store: &Path, generation: u64, vault: &Value) {
    let body = serde_json::to_vec(&serde_json::json!({"generation": generation, "vault": vault}))
        .expect("json");
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&body);
    let sum = Sha256::new()
        .chain_update([1u8])
        .chain_update(&body)
        .finalize();
    bytes.extend_from_slice(&sum[..8]);
    fs::write(store.join("master.key"), bytes).expect("write master.key");
}

/// A home whose store is a copy of `store`.
fn env_with_copy_of(store: &Path) -> Env {
    let env = Env::new();
    copy_dir(store, &env.store());
    env
}

/// The plain master key a passphrase-less store's key file holds (hex).
fn plain_master(store: &Path) -> String {
    let vault = &key_file_json(store)["vault"];
    assert_eq!(vault["passphrase"], Value::Bool(false), "{vault}");
    vault["master_plain"]
        .as_str()
        .expect("master_plain")
        .to_owned()
}

fn generation(store: &Path) -> u64 {
    key_file_json(store)["generation"]
        .as_u64()
        .expect("generation")
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Exports key `name`'s private key from the store of `env` (offline); `Ok` with the key text.
fn export_private(env: &Env, name: &str) -> Result<String, String> {
    export_private_with(env, name, None)
}

/// A private export, proving the store passphrase (`pass`: a passphrase file) when the store
/// has one: the agent asks for it before it reveals a private key.
fn export_private_with(env: &Env, name: &str, pass: Option<&str>) -> Result<String, String> {
    let out_file = env.path(&format!("{name}.exported"));
    let _ = fs::remove_file(&out_file);
    let mut args = vec!["key", "export", name, "--private", "--out", &out_file];
    if let Some(pass) = pass {
        args.splice(0..0, ["--store-passphrase-file", pass]);
    }
    let out = env.kw(&args);
    if out.status.success() {
        Ok(fs::read_to_string(&out_file).expect("read exported key"))
    } else {
        Err(out.stderr)
    }
}

#[test]
fn setting_a_passphrase_leaves_nothing_the_old_plain_master_key_opens() {
    let env = Env::no_passphrase();
    let mut agent = env.start_agent(&[]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "early"]);
    stop(&mut agent);
    let before = env.root().join("before");
    copy_dir(&env.store(), &before);
    let old_hex = plain_master(&before);
    let old_generation = generation(&before);
    let early = export_private(&env, "early").expect("the user exports the key");

    let new = env.pass_file(STORE_PASS);
    let mut agent = env.start_agent(&[]);
    env.kw_ok(&["passwd", "--new-passphrase-file", &new]);
    // Made after the passphrase was set: it must not decrypt under the old key either.
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "late"]);
    stop(&mut agent);
    let after = env.root().join("after");
    copy_dir(&env.store(), &after);

    assert_eq!(holding(&after, old_hex.as_bytes()), Vec::<PathBuf>::new());
    assert_eq!(
        holding(&after, &hex_decode(&old_hex)),
        Vec::<PathBuf>::new()
    );
    let new_generation = generation(&after);
    assert!(new_generation > old_generation);
    assert!(
        !after.join(format!("db-{old_generation}")).exists(),
        "the old database (whose sled log holds the old ciphertexts) is gone"
    );

    // The attacker plants the old plain master key as the key file of the later copy.
    let attacker = env_with_copy_of(&after);
    plant_key_file(
        &attacker.store(),
        new_generation,
        &serde_json::json!({"passphrase": false, "master_plain": old_hex}),
    );
    for name in ["early", "late"] {
        let err = export_private(&attacker, name)
            .expect_err("the old master key must not decrypt the re-keyed store");
        assert!(
            err.contains("does not authenticate"),
            "{name}: the refusal says why: {err}"
        );
    }

    // The user loses nothing: both keys export with the new passphrase.
    let user = env_with_copy_of(&after);
    let pass = user.pass_file(STORE_PASS);
    let mut agent = user.start_agent(&["--passphrase-file", &pass]);
    let exported = export_private_with(&user, "early", Some(&pass));
    assert!(export_private_with(&user, "late", Some(&pass)).is_ok());
    stop(&mut agent);
    assert_eq!(exported, Ok(early));
}

#[test]
fn a_passphrase_change_leaves_nothing_the_old_passphrase_opens() {
    let env = Env::with_passphrase();
    let old = env.pass_file(STORE_PASS);
    let new = env.pass_file("an entirely new passphrase");
    let mut agent = env.start_agent(&["--passphrase-file", &old]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "k"]);
    stop(&mut agent);
    let before = env.root().join("before");
    copy_dir(&env.store(), &before);
    let old_vault = key_file_json(&before)["vault"].clone();

    let mut agent = env.start_agent(&["--passphrase-file", &old]);
    env.kw_ok(&[
        "passwd",
        "--old-passphrase-file",
        &old,
        "--new-passphrase-file",
        &new,
    ]);
    stop(&mut agent);
    let after = env.root().join("after");
    copy_dir(&env.store(), &after);

    // Nothing of the old key file is left: not its salt, not its wrapped master key.
    for field in ["salt", "verifier"] {
        let value = old_vault[field].as_str().expect(field);
        assert_eq!(holding(&after, value.as_bytes()), Vec::<PathBuf>::new());
    }
    let wrapped = old_vault["master_wrapped"]["ciphertext"]
        .as_str()
        .expect("ciphertext");
    assert_eq!(holding(&after, wrapped.as_bytes()), Vec::<PathBuf>::new());

    // The old passphrase does not open the later copy...
    let attacker = env_with_copy_of(&after);
    let out = crate::util::run(
        crate::util::clean_command(crate::util::agent_bin(), attacker.root())
            .arg("--socket")
            .arg(attacker.socket())
            .arg("--store")
            .arg(attacker.store())
            .arg("--passphrase-file")
            .arg(&old),
    );
    out.assert_failure("keyward-agent with the old passphrase on the later copy");
    assert!(out.stderr.contains("wrong passphrase"), "{out:#?}");
    // ... nor does the old key file planted into it (the old passphrase then unwraps the old
    // master key, which decrypts nothing there).
    plant_key_file(&attacker.store(), generation(&after), &old_vault);
    let store = SledStore::open(&attacker.store()).expect("open the planted copy");
    store
        .unseal(STORE_PASS.as_bytes())
        .expect("the old key file opens with the old passphrase");
    let keys = store.list_keys().expect("list keys");
    assert_eq!(keys.len(), 1);
    for key in keys {
        let err = store.private_key(key.id).err();
        assert!(
            matches!(err, Some(StoreError::Corrupt { .. })),
            "the old master key decrypted {}: {err:?}",
            key.name
        );
    }
}

/// Runs `keyward ARGS` of `env` on a terminal (a pseudo-terminal made by `script`) whose keyboard
/// types `typed`; returns what the terminal showed.
fn kw_on_terminal(env: &Env, args: &str, typed: &str) -> crate::util::Output {
    let script = crate::util::require_tool("script");
    let input = env.root().join("typed");
    fs::write(&input, typed).expect("write typed input");
    let kw = env.kw_command();
    let mut cmd = std::process::Command::new(script);
    cmd.env_clear();
    for (k, v) in kw.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.current_dir(env.root())
        .arg("-qec")
        .arg(format!("{} {args}", crate::util::cli_bin()))
        .arg("/dev/null")
        .stdin(fs::File::open(&input).expect("typed input"));
    crate::util::run(&mut cmd)
}

#[test]
fn creating_a_store_on_a_terminal_asks_for_a_passphrase() {
    // A passphrase typed twice: the store is created with it.
    let env = Env::new();
    let out = kw_on_terminal(&env, "key list", "typed secret\ntyped secret\n");
    out.assert_success("keyward key list creating the store on a terminal");
    assert!(out.stdout.contains("choose a passphrase"), "{out:#?}");
    let vault = &key_file_json(&env.store())["vault"];
    assert_eq!(vault["passphrase"], Value::Bool(true), "{vault}");
    let store = SledStore::open(&env.store()).expect("open");
    assert!(store.is_sealed());
    store
        .unseal(b"typed secret")
        .expect("the typed passphrase opens it");

    // Empty: no passphrase, and the warning is on the terminal, not only in a log.
    let env = Env::new();
    let out = kw_on_terminal(&env, "key list", "\n");
    out.assert_success("keyward key list, empty passphrase");
    assert!(out.stdout.contains("NO passphrase"), "{out:#?}");
    assert_eq!(
        key_file_json(&env.store())["vault"]["passphrase"],
        Value::Bool(false)
    );

    // Not on a terminal (scripts, tests, systemd): nothing is asked, as before.
    let env = Env::new();
    env.kw_ok(&["key", "list"]);
    assert_eq!(
        key_file_json(&env.store())["vault"]["passphrase"],
        Value::Bool(false)
    );
}

/// The daemon is killed with SIGKILL at a random moment of `keyward passwd` (deriving the keys,
/// copying the database, replacing the key file), many times: afterwards the store opens with
/// exactly one of the two passphrases and every key decrypts.
#[test]
fn sigkill_during_passwd_leaves_one_whole_store() {
    use rand_core::{OsRng, RngCore as _};
    const CYCLES: u32 = 8;
    let env = Env::with_passphrase();
    let passes = [STORE_PASS, "the other passphrase"];
    let files = passes.map(|p| env.pass_file(p));
    let mut current = 0usize;
    let mut agent = env.start_agent(&["--passphrase-file", &files[current]]);
    let names = ["a", "b", "c"];
    for name in names {
        env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", name]);
    }
    // One whole change, timed: the kills fall anywhere inside such a run.
    let started = std::time::Instant::now();
    env.kw_ok(&[
        "passwd",
        "--old-passphrase-file",
        &files[current],
        "--new-passphrase-file",
        &files[1 - current],
    ]);
    let took = started.elapsed();
    current = 1 - current;
    stop(&mut agent);
    let (mut committed, mut kept) = (0, 0);
    for cycle in 0..CYCLES {
        let mut agent = env.start_agent(&["--passphrase-file", &files[current]]);
        let mut passwd = env
            .kw_command()
            .args([
                "passwd",
                "--old-passphrase-file",
                &files[current],
                "--new-passphrase-file",
                &files[1 - current],
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn keyward passwd");
        let window = u64::try_from(took.as_millis()).unwrap_or(u64::MAX).max(1) * 12 / 10;
        std::thread::sleep(std::time::Duration::from_millis(
            u64::from(OsRng.next_u32()) % window,
        ));
        agent
            .signal_and_wait(libc::SIGKILL)
            .expect("the agent dies");
        passwd.wait().expect("keyward passwd ends");

        let store = SledStore::open(&env.store())
            .unwrap_or_else(|e| panic!("cycle {cycle}: the store opens: {e:#?}"));
        let opened: Vec<usize> = [current, 1 - current]
            .into_iter()
            .filter(|&i| store.unseal(passes[i].as_bytes()).is_ok())
            .collect();
        assert_eq!(
            opened.len(),
            1,
            "cycle {cycle}: exactly one passphrase opens it"
        );
        if opened[0] == current {
            kept += 1;
        } else {
            committed += 1;
            current = opened[0];
        }
        let keys = store.list_keys().expect("list keys");
        assert_eq!(keys.len(), names.len(), "cycle {cycle}");
        for key in keys {
            store
                .private_key(key.id)
                .unwrap_or_else(|e| panic!("cycle {cycle}: {} decrypts: {e}", key.name));
        }
        let dbs = fs::read_dir(env.store())
            .expect("store dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("db-"))
            })
            .count();
        assert_eq!(
            dbs, 1,
            "cycle {cycle}: one database generation after opening"
        );
    }
    eprintln!("passwd killed {CYCLES} times: {committed} committed, {kept} kept the old key");
}
