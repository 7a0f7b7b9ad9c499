//! `keyward doctor`'s store checks: sealed or not, passphrase or not, from the running daemon.

use std::path::Path;

use super::{Check, Outcome, check};
use crate::control::client::Client;
use crate::control::proto::{Request, Response};

/// The store's state, from the running daemon.
pub fn store(control: &Path) -> Vec<Check> {
    let Some(mut client) = Client::connect(control) else {
        return vec![check(
            "store",
            Outcome::Skip,
            format!("no daemon answers on {}", control.display()),
            None,
        )];
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
            "none: private keys are protected by file permissions only".into(),
            Some("keyward passwd"),
        )
    });
    checks.push(check(
        "certificates",
        Outcome::Skip,
        "expiry is not exposed over the control socket yet; run `keyward cert check --within 30d`"
            .into(),
        None,
    ));
    checks
}
