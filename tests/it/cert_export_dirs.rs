//! Exports only into directories no other user can write to: `cert export`, `key export` and a
//! renewal policy's `--export` into a world-writable (0777) or sticky `/tmp`-like (1777)
//! directory are refused with an error naming the directory and why; a policy whose export
//! directory was opened up after it was set refuses the renewal before anything changes; the
//! same export into a private directory works, and the file has its final mode.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::env::{Env, assert_clean_error, text};
use crate::util::mode_of;

fn shared(env: &Env, name: &str, mode: u32) -> String {
    let dir = env.root().join(name);
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
    dir.display().to_string()
}

#[track_caller]
fn assert_refused_for_sharing(out: &crate::util::Output, what: &str) {
    assert_clean_error(out, what);
    assert!(
        out.stderr.contains("writable by every user") && out.stderr.contains("only you can write"),
        "{what}: {out:#?}"
    );
}

#[test]
fn exports_into_directories_others_can_write_are_refused() {
    let env = Env::no_passphrase();
    env.kw_ok(&["key", "generate", "-n", "k"]);
    let id = text(&env.create("k", 60, &[]), "id");
    let world = shared(&env, "world", 0o777);
    let sticky = shared(&env, "sticky", 0o1777);

    for dir in [&world, &sticky] {
        let pem = format!("{dir}/c.pem");
        let out = env.kw(&["cert", "export", &id, "--out", &pem]);
        assert_refused_for_sharing(&out, "cert export");
        let out = env.kw(&["key", "export", "k", "--out", &format!("{dir}/k.pub")]);
        assert_refused_for_sharing(&out, "key export");
        let out = env.kw(&["cert", "policy", &id, "--export", &pem]);
        assert_refused_for_sharing(&out, "cert policy --export");
        assert_eq!(
            fs::read_dir(dir).expect("read dir").count(),
            0,
            "nothing written in {dir}"
        );
    }
    assert!(
        env.cert_show(&id)["renewal"]["exports"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "the refused policy was not stored"
    );

    // Set while private, opened up later: the renewal is refused before anything changes.
    let private = shared(&env, "private", 0o700);
    let pem = format!("{private}/c.pem");
    env.kw_ok(&["cert", "policy", &id, "--export", &pem]);
    fs::set_permissions(&private, fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = env.kw(&["cert", "renew", &id]);
    assert_refused_for_sharing(&out, "cert renew into a now-shared directory");
    assert_eq!(env.all_certs().len(), 1, "no new certificate");

    // Private again: renewed and exported with its final mode.
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).expect("chmod");
    env.kw_ok(&["cert", "renew", &id]);
    assert_eq!(env.all_certs().len(), 2);
    assert_eq!(mode_of(std::path::Path::new(&pem)), 0o644);
    env.kw_ok(&[
        "cert",
        "export",
        &id,
        "--out",
        &format!("{private}/old.pem"),
    ]);
}
