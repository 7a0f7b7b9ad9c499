//! The privileged requests, the back-off and the audit summaries, on a real store.

use std::sync::Arc;

use super::*;
use crate::clock::SystemClock;
use crate::control::proto::ErrorKind;
use crate::policy::Policy;
use crate::store::{KdfParams, SledStore};

fn service(dir: &std::path::Path, passphrase: Option<&[u8]>) -> Service {
    let store = SledStore::init(dir, passphrase, KdfParams::insecure_fast()).unwrap();
    let svc = Service::new(Some(Arc::new(store)), None, Arc::new(SystemClock));
    if let Some(p) = passphrase {
        let p = Zeroizing::new(String::from_utf8(p.to_vec()).unwrap());
        assert!(matches!(
            svc.handle(Request::Unlock { passphrase: p }),
            Response::Ok
        ));
    }
    assert!(matches!(
        svc.handle(Request::KeyGenerate {
            name: "k".into(),
            kind: "ed25519".into(),
            bits: None,
            comment: String::new(),
        }),
        Response::Key(_)
    ));
    svc
}

fn kind(response: &Response) -> Option<ErrorKind> {
    match response {
        Response::Error { kind, .. } => Some(*kind),
        _ => None,
    }
}

fn set(policy: Option<Policy>) -> Request {
    Request::PolicySet {
        key: "k".into(),
        policy,
    }
}

fn with(passphrase: &str, request: Request) -> Request {
    Request::Authorized {
        passphrase: Zeroizing::new(passphrase.into()),
        request: Box::new(request),
    }
}

#[test]
fn privileged_requests_need_the_passphrase_and_tightening_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir.path().join("s"), Some(b"pw"));
    let strict = Policy {
        confirm: true,
        deny_forwarding: true,
        ..Policy::default()
    };
    assert!(matches!(
        svc.handle(set(Some(strict))),
        Response::Policy { .. }
    ));
    let private = || Request::KeyPrivate { key: "k".into() };
    let required = Some(ErrorKind::PassphraseRequired);
    assert_eq!(kind(&svc.handle(private())), required);
    assert_eq!(kind(&svc.handle(set(None))), required);
    assert_eq!(kind(&svc.handle(set(Some(Policy::default())))), required);
    assert_eq!(
        kind(&svc.handle(Request::KeyDelete { key: "k".into() })),
        required
    );
    assert_eq!(
        kind(&svc.handle(with("wrong", set(None)))),
        Some(ErrorKind::WrongPassphrase)
    );
    assert_eq!(
        kind(&svc.handle(with("pw", with("pw", set(None))))),
        Some(ErrorKind::Invalid),
        "no nesting"
    );
    assert!(matches!(
        svc.handle(with("pw", set(None))),
        Response::Policy { .. }
    ));
    // With no policy of its own and no askpass, confirm is off again: the export goes ahead.
    assert!(matches!(
        svc.handle(with("pw", private())),
        Response::Private { .. }
    ));
}

#[test]
fn a_confirm_key_without_askpass_is_not_exported() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir.path().join("s"), None);
    let confirm = Policy {
        confirm: true,
        ..Policy::default()
    };
    assert!(matches!(
        svc.handle(set(Some(confirm))),
        Response::Policy { .. }
    ));
    assert_eq!(
        kind(&svc.handle(Request::KeyPrivate { key: "k".into() })),
        Some(ErrorKind::Declined)
    );
}

#[test]
fn wrong_guesses_wait_longer_each_time_and_a_right_one_resets() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir.path().join("s"), Some(b"pw"));
    let guess = |p: &str| {
        let started = std::time::Instant::now();
        let r = svc.handle(with(p, Request::KeyPrivate { key: "k".into() }));
        (kind(&r), started.elapsed())
    };
    let (k1, t1) = guess("a");
    let (k2, t2) = guess("b");
    assert_eq!(
        (k1, k2),
        (
            Some(ErrorKind::WrongPassphrase),
            Some(ErrorKind::WrongPassphrase)
        )
    );
    assert!(
        t1 >= unlock_delay(1) && t2 >= unlock_delay(2),
        "{t1:?} {t2:?}"
    );
    assert_eq!(guess("pw").0, None);
    assert_eq!(*svc.gate.0.lock().unwrap(), 0);
}

#[test]
fn summaries_keep_no_secret() {
    for request in [
        Request::Unlock {
            passphrase: Zeroizing::new("s3cret".into()),
        },
        Request::ChangePassphrase {
            old: Zeroizing::new("s3cret".into()),
            new: Some(Zeroizing::new("s3cret".into())),
        },
        Request::KeyImport {
            name: "n".into(),
            comment: String::new(),
            private_openssh: Zeroizing::new("s3cret".into()),
        },
    ] {
        let text = summary(&request).unwrap().to_string();
        assert!(!text.contains("s3cret"), "{text}");
    }
    assert!(summary(&Request::KeyList).is_none());
}
