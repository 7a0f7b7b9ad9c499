//! Getting passphrases from the user: from a file named on the command line, or from the terminal.

use std::path::Path;

use anyhow::{Context as _, bail};
use zeroize::Zeroizing;

/// Reads a passphrase file; a trailing newline is not part of the passphrase.
pub fn from_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read passphrase file {}", path.display()))?,
    );
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// A passphrase from `file`, else asked on the terminal with `prompt`.
pub fn obtain(file: Option<&Path>, prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    if let Some(file) = file {
        return from_file(file);
    }
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .context("no terminal to ask for the passphrase: use --passphrase-file FILE")
}

/// A new passphrase: from `file`, else asked twice on the terminal.
pub fn obtain_new(file: Option<&Path>) -> anyhow::Result<Zeroizing<String>> {
    let passphrase = if let Some(file) = file {
        from_file(file)?
    } else {
        let first = obtain(None, "New passphrase: ")?;
        let again = obtain(None, "Same passphrase again: ")?;
        if first != again {
            bail!("the passphrases do not match");
        }
        first
    };
    if passphrase.is_empty() {
        bail!("the passphrase is empty: give one, or use --no-passphrase");
    }
    Ok(passphrase)
}

/// The passphrase for a store about to be created implicitly (the agent's first start, or a
/// command run before any store exists). On a terminal, asks for one (twice); empty means none,
/// and the warning is printed right there. Without a terminal on stdin (tests, systemd, scripts)
/// nothing is asked and the store is made without a passphrase, as before; the caller logs that.
pub fn for_new_store(dir: &Path) -> anyhow::Result<Option<Zeroizing<String>>> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    eprintln!(
        "keyward: creating the store {}: choose a passphrase to encrypt its keys (empty: none)",
        dir.display()
    );
    let first = obtain(None, "New store passphrase: ")?;
    if first.is_empty() {
        eprintln!(
            "keyward: WARNING: the store has NO passphrase: its private keys are protected by file permissions only (set one with `keyward passwd`)"
        );
        return Ok(None);
    }
    let again = obtain(None, "Same passphrase again: ")?;
    if first != again {
        bail!("the passphrases do not match: the store was not created");
    }
    Ok(Some(first))
}
