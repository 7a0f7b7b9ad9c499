//! Asking the user before a key is used (`ssh-add -c`), through an `SSH_ASKPASS` program.
//!
//! Same contract as OpenSSH's agent: the program gets the prompt as its argument and
//! `SSH_ASKPASS_PROMPT=confirm` in its environment; the use is allowed when it exits 0 and prints
//! nothing or "yes". Anything else, including no program at all, refuses.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// How long a confirmation may wait for the user before it counts as a refusal.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(120);

/// Asks `askpass` to confirm `prompt`; true only on an explicit approval.
pub async fn confirm(askpass: Option<&Path>, prompt: &str) -> bool {
    let Some(program) = askpass else {
        tracing::warn!("key needs confirmation but no askpass program is set (SSH_ASKPASS)");
        return false;
    };
    let child = tokio::process::Command::new(program)
        .arg(prompt)
        .env("SSH_ASKPASS_PROMPT", "confirm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(CONFIRM_TIMEOUT, child).await {
        Ok(Ok(out)) => {
            let answer = String::from_utf8_lossy(&out.stdout);
            let answer = answer.trim();
            out.status.success() && (answer.is_empty() || answer.eq_ignore_ascii_case("yes"))
        }
        Ok(Err(e)) => {
            tracing::warn!(program = %program.display(), error = %e, "cannot run askpass");
            false
        }
        Err(_) => {
            tracing::warn!("confirmation timed out");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        path
    }

    #[tokio::test]
    async fn follows_the_askpass_contract() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let yes = script(
            d,
            "yes",
            "[ \"$SSH_ASKPASS_PROMPT\" = confirm ] && echo yes",
        );
        let empty = script(d, "empty", "exit 0");
        let no = script(d, "no", "exit 1");
        let other = script(d, "other", "echo no");
        assert!(confirm(Some(&yes), "Allow?").await);
        assert!(confirm(Some(&empty), "Allow?").await);
        assert!(!confirm(Some(&no), "Allow?").await);
        assert!(!confirm(Some(&other), "Allow?").await);
        assert!(!confirm(Some(&d.join("missing")), "Allow?").await);
        assert!(!confirm(None, "Allow?").await);
    }
}
