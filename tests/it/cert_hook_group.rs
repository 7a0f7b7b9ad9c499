//! A renewal hook runs in its own process group: a hook that leaves `sleep 1000` in the
//! background returns `keyward cert renew` at once (it used to hold it for the 60-second hook
//! timeout, through the job's copy of the output pipe) and the job does not outlive the hook.
//! The timeout itself killing a whole group is shown by `rotation`'s unit tests with a short
//! timeout.

use std::fs;
use std::time::{Duration, Instant};

use crate::env::{Env, text};
use crate::util::{pid_alive, poll_until};

#[test]
fn hook_background_job_neither_holds_renew_nor_survives() {
    let env = Env::no_passphrase();
    env.kw_ok(&["key", "generate", "-n", "k"]);
    let id = text(&env.create("k", 60, &[]), "id");
    let pidfile = env.path("job.pid");
    let hook = format!("sleep 1000 & echo $! > '{pidfile}'; echo hook-ran; exit 0");
    env.kw_ok(&["cert", "policy", &id, "--hook", &hook]);

    let started = Instant::now();
    let renewed = env.kw_json(&["cert", "renew", &id, "--json"]);
    let took = started.elapsed();
    eprintln!("cert renew with a backgrounding hook took {took:?}");
    assert!(renewed["id"].is_string(), "{renewed}");
    assert!(took < Duration::from_secs(10), "cert renew waited {took:?}");
    let pid: u32 = fs::read_to_string(&pidfile)
        .expect("the hook ran")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        poll_until(Duration::from_secs(5), || !pid_alive(pid)),
        "the hook's background job {pid} survived it"
    );
}
