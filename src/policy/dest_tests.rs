//! The destination rules as a table: every row of issue 15's table, and each rule of OpenSSH's
//! `identity_permitted`, `match_key_hop` and sign handler.

use super::*;

/// 2026-11-27 12:00 UTC.
const NOW: u64 = 1_795_780_800;
const KEY: &[u8] = b"the user key blob";

fn plain(name: &str) -> HostKey {
    HostKey {
        fingerprint: format!("SHA256:{name}"),
        blob: format!("blob of {name}").into_bytes(),
        cert: None,
    }
}

/// Host `name`'s key, presented in a host certificate from `ca` for `principals`.
fn certified(name: &str, ca: &str, principals: &[&str]) -> HostKey {
    HostKey {
        fingerprint: format!("SHA256:{name}"),
        blob: format!("cert of {name}").into_bytes(),
        cert: Some(HostCert {
            ca_fingerprint: format!("SHA256:{ca}"),
            host: true,
            principals: principals.iter().map(|p| (*p).to_owned()).collect(),
            valid_after: NOW - 60,
            valid_before: NOW + 60,
            critical_options: false,
            signature_algorithm: "ssh-ed25519".into(),
        }),
    }
}

fn side(user: Option<&str>, host: &str, keys: Vec<KeyMatch>) -> HopSpec {
    HopSpec {
        user: user.map(str::to_owned),
        hostname: Some(host.to_owned()),
        keys,
    }
}

fn key(name: &str) -> KeyMatch {
    KeyMatch::Plain(format!("SHA256:{name}"))
}

fn ca(name: &str) -> KeyMatch {
    KeyMatch::Ca(format!("SHA256:{name}"))
}

/// `ssh-add -h` hops written as `"a"`, `"a>b"`, `"u@b"`, `"a>u@b"` with hosts named by their
/// keys, or `"@ca:host_c"`: to `host_c` by the CA `ca`.
fn h(spec: &str) -> Constraint {
    let (from, to) = spec
        .split_once('>')
        .map_or((None, spec), |(f, t)| (Some(f), t));
    let (user, to) = to.split_once('@').map_or((None, to), |(u, t)| (Some(u), t));
    let to = match to.split_once(':') {
        Some((ca_name, host)) => side(user.filter(|u| !u.is_empty()), host, vec![ca(ca_name)]),
        None => side(user, to, vec![key(to)]),
    };
    Constraint {
        from: from.map_or_else(HopSpec::default, |f| side(None, f, vec![key(f)])),
        to,
    }
}

fn dests(specs: &[&str]) -> Destinations {
    Destinations {
        constraints: specs.iter().map(|s| h(s)).collect(),
    }
}

fn fwd(host: &HostKey, sid: &[u8]) -> Binding {
    Binding {
        host: host.clone(),
        session_id: sid.to_vec(),
        forwarded: true,
    }
}

fn auth(host: &HostKey, sid: &[u8]) -> Binding {
    Binding {
        forwarded: false,
        ..fwd(host, sid)
    }
}

/// A login as `user` for the last binding's session, host-bound to its key when forwarded.
fn login_for(bindings: &[Binding], user: &str) -> SignedData {
    let last = bindings
        .last()
        .map_or(b"none".to_vec(), |b| b.session_id.clone());
    SignedData::Userauth {
        session_id: last,
        user: user.into(),
        host_key: (bindings.len() > 1).then(|| bindings.last().unwrap().host.blob.clone()),
        key: KEY.to_vec(),
    }
}

fn sign(d: &Destinations, bindings: &[Binding]) -> Result<(), DestRefusal> {
    sign_permitted(d, bindings, false, &login_for(bindings, "me"), KEY, NOW)
}

fn list(d: &Destinations, bindings: &[Binding]) -> Result<(), DestRefusal> {
    identity_permitted(d, bindings, false, None, NOW)
}

fn hop_refusal(from: &str, to: &str, user: &str) -> DestRefusal {
    DestRefusal::Hop {
        from: from.into(),
        to: to.into(),
        user: user.into(),
    }
}

/// Issue 15's table: what OpenSSH's agent does, now keyward's too.
#[test]
fn the_issue_table() {
    let (a, b) = (plain("A"), plain("B"));
    let a_then_b = dests(&["A", "A>B"]);
    // Positive paths: local -> A, and local -> A -> B.
    assert_eq!(sign(&a_then_b, &[auth(&a, b"s1")]), Ok(()));
    assert_eq!(sign(&a_then_b, &[fwd(&a, b"s1"), auth(&b, b"s2")]), Ok(()));
    // local -> B (forwarded) -> A: the first hop, origin to B, is not permitted.
    assert_eq!(
        sign(&a_then_b, &[fwd(&b, b"s1"), auth(&a, b"s2")]),
        Err(hop_refusal("origin", "SHA256:B", ""))
    );
    // local -> B (forwarded) -> B.
    assert_eq!(
        sign(&a_then_b, &[fwd(&b, b"s1"), auth(&b, b"s2")]),
        Err(hop_refusal("origin", "SHA256:B", ""))
    );
    // Direct login to B: refused; the key is hidden on B's forwarded agent.
    assert_eq!(
        sign(&a_then_b, &[auth(&b, b"s1")]),
        Err(hop_refusal("origin", "SHA256:B", " as me"))
    );
    assert!(list(&a_then_b, &[fwd(&b, b"s1")]).is_err());
    // ...and listed on A's (it may be used from A onwards, to B), not on a login to B.
    assert_eq!(list(&a_then_b, &[fwd(&a, b"s1")]), Ok(()));
    assert!(list(&a_then_b, &[auth(&b, b"s1")]).is_err());
    // "A>B" only: direct logins to A or B refused.
    let only_hop = dests(&["A>B"]);
    for host in [&a, &b] {
        assert!(matches!(
            sign(&only_hop, &[auth(host, b"s1")]),
            Err(DestRefusal::Hop { .. })
        ));
    }
    // -h host_a, reached through host_c presenting a host certificate: hidden on host_c,
    // refused from host_c to host_a.
    let c = certified("C", "CA", &["host_c"]);
    let to_a = dests(&["A"]);
    assert!(list(&to_a, &[fwd(&c, b"s1")]).is_err());
    assert!(sign(&to_a, &[fwd(&c, b"s1"), auth(&a, b"s2")]).is_err());
}

#[test]
fn host_certificates_match_their_ca_for_the_named_host() {
    let c = certified("C", "CA", &["host_c", "*.example.org"]);
    assert_eq!(sign(&dests(&["@CA:host_c"]), &[auth(&c, b"s")]), Ok(()));
    assert_eq!(
        sign(&dests(&["@CA:web.example.org"]), &[auth(&c, b"s")]),
        Ok(()),
        "principals are patterns"
    );
    let refused = |d: Destinations, host: &HostKey| sign(&d, &[auth(host, b"s")]).is_err();
    assert!(refused(dests(&["@CA:host_d"]), &c), "not a principal");
    assert!(refused(dests(&["@OTHER:host_c"]), &c), "another CA");
    assert!(
        refused(dests(&["C"]), &c),
        "a plain key never matches a certificate"
    );
    assert!(
        refused(dests(&["@C:host_c"]), &plain("C")),
        "a CA key never matches a plain key"
    );
    let with = |f: &dyn Fn(&mut HostCert)| {
        let mut host = c.clone();
        f(host.cert.as_mut().unwrap());
        host
    };
    let good = dests(&["@CA:host_c"]);
    assert!(
        refused(good.clone(), &with(&|c| c.host = false)),
        "a user certificate"
    );
    assert!(
        refused(good.clone(), &with(&|c| c.valid_after = NOW + 1)),
        "not yet valid"
    );
    assert!(
        refused(good.clone(), &with(&|c| c.valid_before = NOW)),
        "expired"
    );
    assert!(
        refused(good.clone(), &with(&|c| c.principals.clear())),
        "no principals"
    );
    assert!(refused(good.clone(), &with(&|c| c.critical_options = true)));
    assert!(
        refused(good, &with(&|c| c.signature_algorithm = "ssh-rsa".into())),
        "SHA-1 CA signature"
    );
    // A "from" side with a CA: the hop from a certified host onwards.
    let through_c = Destinations {
        constraints: vec![
            h("@CA:host_c"),
            Constraint {
                from: side(None, "host_c", vec![ca("CA")]),
                to: side(None, "B", vec![key("B")]),
            },
        ],
    };
    assert_eq!(list(&through_c, &[fwd(&c, b"s1")]), Ok(()));
    assert_eq!(
        sign(&through_c, &[fwd(&c, b"s1"), auth(&plain("B"), b"s2")]),
        Ok(())
    );
}

#[test]
fn user_patterns_apply_to_the_final_login_only() {
    let a = plain("A");
    let d = dests(&["al*@A"]);
    let as_user = |user: &str| {
        let bindings = [auth(&a, b"s")];
        sign_permitted(&d, &bindings, false, &login_for(&bindings, user), KEY, NOW)
    };
    assert_eq!(as_user("alice"), Ok(()));
    assert_eq!(as_user("al"), Ok(()));
    assert_eq!(
        as_user("bob"),
        Err(hop_refusal("origin", "SHA256:A", " as bob"))
    );
    assert_eq!(list(&d, &[auth(&a, b"s")]), Ok(()), "listing names no user");
    // On a forwarding hop the user is not checked; on the final one it is.
    let (b, via) = (plain("B"), dests(&["A", "A>bo?@B"]));
    let bindings = [fwd(&a, b"s1"), auth(&b, b"s2")];
    let signed = |user: &str| {
        sign_permitted(
            &via,
            &bindings,
            false,
            &login_for(&bindings, user),
            KEY,
            NOW,
        )
    };
    assert_eq!(signed("bob"), Ok(()));
    assert!(signed("bobby").is_err());
}

#[test]
fn binding_order_rules() {
    let (a, b) = (plain("A"), plain("B"));
    let d = dests(&["A", "A>B", "B>A"]);
    // Every binding but the last must be for forwarding.
    assert_eq!(
        list(&d, &[auth(&a, b"s1"), fwd(&b, b"s2")]),
        Err(DestRefusal::ForwardThroughAuth)
    );
    // A signature's last binding must not be for forwarding.
    assert_eq!(
        sign(&d, &[fwd(&a, b"s1")]),
        Err(DestRefusal::SignOnForwarding)
    );
    // Listing on a forwarded connection needs a hop from its last host onwards.
    assert_eq!(list(&d, &[fwd(&a, b"s1")]), Ok(()));
    assert_eq!(
        list(&dests(&["A"]), &[fwd(&a, b"s1")]),
        Err(DestRefusal::NotOnwards("SHA256:A".into()))
    );
    // Three hops: A -> B -> A.
    assert_eq!(
        sign(&d, &[fwd(&a, b"s1"), fwd(&b, b"s2"), auth(&a, b"s3")]),
        Ok(())
    );
    assert!(
        sign(
            &dests(&["A", "A>B"]),
            &[fwd(&a, b"s1"), fwd(&b, b"s2"), auth(&a, b"s3")]
        )
        .is_err()
    );
}

#[test]
fn unbound_and_failed_bindings() {
    let d = dests(&["A"]);
    // Local listing shows the key; a local signature is refused.
    assert_eq!(list(&d, &[]), Ok(()));
    assert_eq!(sign(&d, &[]), Err(DestRefusal::Unbound));
    // After a refused session-bind with nothing bound, the key is neither listed nor used.
    assert_eq!(
        identity_permitted(&d, &[], true, None, NOW),
        Err(DestRefusal::BindFailed)
    );
}

#[test]
fn sign_request_rules() {
    let (a, b) = (plain("A"), plain("B"));
    let d = dests(&["A", "A>B"]);
    let one = [auth(&a, b"s1")];
    let two = [fwd(&a, b"s1"), auth(&b, b"s2")];
    let login = |sid: &[u8], host_key: Option<&[u8]>, key: &[u8]| SignedData::Userauth {
        session_id: sid.to_vec(),
        user: "me".into(),
        host_key: host_key.map(<[u8]>::to_vec),
        key: key.to_vec(),
    };
    let run = |bindings: &[Binding], data: &SignedData| {
        sign_permitted(&d, bindings, false, data, KEY, NOW)
    };
    assert_eq!(run(&one, &SignedData::Other), Err(DestRefusal::NotLogin));
    assert_eq!(
        run(
            &one,
            &SignedData::Sshsig {
                namespace: "git".into()
            }
        ),
        Err(DestRefusal::NotLogin)
    );
    assert_eq!(
        run(&one, &login(b"s1", None, b"other key")),
        Err(DestRefusal::NotLogin)
    );
    assert_eq!(run(&one, &login(b"s1", None, KEY)), Ok(()));
    assert_eq!(
        run(&one, &login(b"s1", Some(&a.blob), KEY)),
        Ok(()),
        "host-bound, first hop"
    );
    assert_eq!(
        run(&one, &login(b"s0", None, KEY)),
        Err(DestRefusal::SessionMismatch)
    );
    assert_eq!(
        run(&one, &login(b"s1", Some(&b.blob), KEY)),
        Err(DestRefusal::HostKeyMismatch)
    );
    assert_eq!(run(&two, &login(b"s2", Some(&b.blob), KEY)), Ok(()));
    assert_eq!(
        run(&two, &login(b"s2", None, KEY)),
        Err(DestRefusal::NotHostbound)
    );
    assert_eq!(
        run(&two, &login(b"s1", Some(&b.blob), KEY)),
        Err(DestRefusal::SessionMismatch)
    );
}

#[test]
fn stored_fingerprints_compile_to_hops() {
    let (a, b) = (plain("A"), plain("B"));
    let listed = ["SHA256:A".to_owned(), "SHA256:B".to_owned()];
    let with_fwd = Destinations::from_fingerprints(&listed, true);
    let no_fwd = Destinations::from_fingerprints(&listed, false);
    for d in [&with_fwd, &no_fwd] {
        assert_eq!(sign(d, &[auth(&a, b"s")]), Ok(()));
        assert!(sign(d, &[auth(&plain("C"), b"s")]).is_err());
        // A stored fingerprint names the key, plain or certified.
        assert_eq!(
            sign(d, &[auth(&certified("A", "CA", &["x"]), b"s")]),
            Ok(())
        );
    }
    assert_eq!(sign(&with_fwd, &[fwd(&a, b"s1"), auth(&b, b"s2")]), Ok(()));
    assert!(sign(&with_fwd, &[fwd(&plain("C"), b"s1"), auth(&b, b"s2")]).is_err());
    assert!(sign(&no_fwd, &[fwd(&a, b"s1"), auth(&b, b"s2")]).is_err());
    assert_eq!(list(&with_fwd, &[fwd(&a, b"s1")]), Ok(()));
    assert!(list(&no_fwd, &[fwd(&a, b"s1")]).is_err());
}

#[test]
fn patterns() {
    for (s, p, want) in [
        ("host", "host", true),
        ("host", "h*", true),
        ("host", "*", true),
        ("host", "h?st", true),
        ("host", "h?t", false),
        ("host", "Host", false),
        ("a.example.org", "*.example.org", true),
        ("example.org", "*.example.org", false),
        ("", "*", true),
        ("", "?", false),
    ] {
        assert_eq!(match_pattern(s, p), want, "{s:?} ~ {p:?}");
    }
}
