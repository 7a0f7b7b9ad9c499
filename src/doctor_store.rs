//! `keyward doctor`'s store checks: sealed or not, passphrase or not, from the running daemon.

use std::path::Path;

use super::{Check, Outcome, check};
use crate::control::client::Client;
use crate::control::proto::{Request, Response};

/// The store's state, from the running daemon.
pub fn store(control: &Path) -> Vec<Check> {
    let mut client = match Client::connect(control) {
        Ok(Some(client)) => client,
        Ok(None) => {
            return vec![check(
                "store",
                Outcome::Skip,
                format!("no daemon answers on {}", control.display()),
                None,
            )];
        }
        Err(e) => {
            return vec![check(
                "store",
                Outcome::Fail,
                e.to_string(),
                Some("another user controls the control socket: never use it; remove it"),
            )];
        }
    };
    let status = match client.call(Request::Status) {
        Ok(Response::Status(status)) => status,
        Ok(Response::Error { message, .. }) => {
            return vec![check(
                "store",
                Outcome::Warn,
                message,
                Some(
                    "the agent runs without a store; start it without --no-store (or store.enabled = true)",
                ),
            )];
        }
        Ok(_) => {
            return vec![check(
                "store",
                Outcome::Fail,
                "unexpected answer".into(),
                None,
            )];
        }
        Err(e) => {
            return vec![check(
                "store",
                Outcome::Fail,
                crate::service::error_chain(&e),
                Some("restart the agent with this version of keyward"),
            )];
        }
    };
    let mut checks = Vec::new();
    checks.push(if status.sealed {
        check(
            "store",
            Outcome::Warn,
            format!("{} is sealed: its keys are not served", status.store),
            Some(
                "keyward unlock (or set store.passphrase_file / store.credential in keyward.toml)",
            ),
        )
    } else {
        check(
            "store",
            Outcome::Ok,
            format!(
                "{} unsealed, {} keys, {} certificates",
                status.store, status.key_count, status.cert_count
            ),
            None,
        )
    });
    checks.push(if status.passphrase_set {
        check(
            "passphrase",
            Outcome::Ok,
            "private keys are encrypted with your passphrase".into(),
            None,
        )
    } else {
        check(
            "passphrase",
            Outcome::Warn,
            "none: file permissions are the only guard (any process of yours can export private keys, loosen policies and set renewal hooks)".into(),
            Some("keyward passwd"),
        )
    });
    checks.push(certificates(&mut client));
    checks
}

/// Certificates that expire within 30 days (the scheduler renews the ones it can).
fn certificates(client: &mut Client) -> Check {
    const WINDOW: u64 = 30 * 86_400;
    match client.call(Request::CertCheck { within: WINDOW }) {
        Ok(Response::Certs { certs }) if certs.is_empty() => check(
            "certificates",
            Outcome::Ok,
            "none expires within 30 days".into(),
            None,
        ),
        Ok(Response::Certs { certs }) => {
            let names: Vec<String> = certs
                .iter()
                .map(|c| format!("{} ({} days)", c.subject, c.days_left))
                .collect();
            check(
                "certificates",
                Outcome::Warn,
                format!("expiring within 30 days: {}", names.join(", ")),
                Some(
                    "keyward cert list; keyward cert renew ID (imported ones must be renewed where they were made)",
                ),
            )
        }
        Ok(other) => check(
            "certificates",
            Outcome::Fail,
            format!("unexpected answer: {other:?}"),
            None,
        ),
        Err(e) => check(
            "certificates",
            Outcome::Fail,
            crate::service::error_chain(&e),
            None,
        ),
    }
}
