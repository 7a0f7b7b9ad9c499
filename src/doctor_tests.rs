//! Unit tests for [`super`]: version parsing, `SSH_AUTH_SOCK` and mode checks.

use super::*;

#[test]
fn openssh_versions() {
    assert_eq!(
        parse_openssh_version("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0"),
        Some((9, 2))
    );
    assert_eq!(
        parse_openssh_version("OpenSSH_10.0p2, LibreSSL"),
        Some((10, 0))
    );
    assert_eq!(openssh(Some("OpenSSH_8.9p1 Ubuntu")).outcome, Outcome::Ok);
    assert_eq!(openssh(Some("OpenSSH_8.4p1 Debian")).outcome, Outcome::Warn);
    assert_eq!(openssh(None).outcome, Outcome::Fail);
}

#[test]
fn ssh_auth_sock_must_name_our_socket() {
    let ours = Path::new("/run/user/1/keyward/agent.sock");
    assert_eq!(ssh_auth_sock(None, ours).outcome, Outcome::Fail);
    assert_eq!(ssh_auth_sock(Some(ours), ours).outcome, Outcome::Ok);
    let other = ssh_auth_sock(Some(Path::new("/tmp/ssh-x/agent.1")), ours);
    assert_eq!(other.outcome, Outcome::Warn);
    assert!(other.fix.unwrap().contains("IdentityAgent"));
}

#[test]
fn modes_wider_than_allowed_fail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = path_mode("dir", dir.path(), 0o700);
    assert_eq!(c.outcome, Outcome::Fail);
    assert!(c.fix.unwrap().starts_with("chmod 0700 "));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(path_mode("dir", dir.path(), 0o700).outcome, Outcome::Ok);
    assert_eq!(
        path_mode("x", &dir.path().join("none"), 0o600).outcome,
        Outcome::Fail
    );
    assert!(failed(&[path_mode("x", &dir.path().join("none"), 0o600)]));
}
