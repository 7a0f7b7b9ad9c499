//! Slow drip: many connections each send a frame header announcing a full-size body and withhold
//! the body. The daemon must drop every one of them after its body deadline, keep answering other
//! clients meanwhile, and hold them without setting aside memory for the bodies they announced.
//!
//! The daemon is started with a soft descriptor limit far below the connection count, so the test
//! also shows that it raises its own limit (`harden::raise_open_files`) to hold them.
//!
//! `KEYWARD_DRIP_CONNECTIONS` sets the count (200 by default; `scripts/soak` uses 1,000). The
//! figures are printed on one `slow drip:` line.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::procstat::{Memory, env_size, nofile_soft, open_fds, p99_and_max, raise_nofile};
use crate::util::{Agent, HANG_GUARD, agent_bin, clean_command, poll_until, require_tool};
use crate::wire::{Client, MAX_FRAME};

/// The daemon's body deadline (`daemon::BODY_DEADLINE`).
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Timer slack allowed below the deadline.
const SLACK: Duration = Duration::from_millis(200);

/// How long after its deadline a dropped connection may still be seen open: a guard for a loaded
/// machine, far above the milliseconds it takes.
const DROP_MARGIN: Duration = Duration::from_secs(30);

/// The soft descriptor limit the daemon is started with.
const LOW_SOFT_LIMIT: u64 = 128;

/// Peak resident growth allowed per held connection. A connection's task and buffers take a few
/// KiB; a daemon that set aside the announced 256 KiB body per connection would be far over this.
const GROWTH_PER_CONNECTION_KIB: u64 = MAX_FRAME as u64 / 1024 / 8;

/// Starts the daemon from `sh` after `ulimit -Sn LOW_SOFT_LIMIT`.
fn agent_with_low_fd_limit() -> Agent {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("sock").join("agent.sock");
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("create log");
    let child = clean_command(require_tool("sh"), dir.path())
        .current_dir(dir.path())
        .arg("-c")
        .arg(format!(
            "ulimit -Sn {LOW_SOFT_LIMIT} && exec \"$0\" --socket \"$1\" -d"
        ))
        .arg(agent_bin())
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn agent with a low descriptor limit");
    Agent::adopt(child, dir, socket)
}

/// Whether the daemon has closed `stream`; panics if it sent reply bytes instead.
fn closed(stream: &mut UnixStream) -> bool {
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("a withheld frame got {n} reply bytes: {:?}", &buf[..n]),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            false
        }
        Err(e) => panic!("reading a withheld-frame connection: {e}"),
    }
}

#[test]
fn slow_drip_connections_are_dropped_and_memory_stays_bounded() {
    let count = env_size("KEYWARD_DRIP_CONNECTIONS", 200);
    raise_nofile(count as u64 + 256);
    let agent = agent_with_low_fd_limit();
    let pid = agent.pid();
    let soft = nofile_soft(pid);
    assert!(
        soft >= count as u64 + 64,
        "started with a soft limit of {LOW_SOFT_LIMIT}, the daemon should raise it to hold \
         {count} connections; it has {soft}"
    );

    let mut lister = Client::connect(agent.socket());
    assert!(lister.identities().is_empty(), "the daemon answers");
    let base_fds = open_fds(pid);
    let before = Memory::of(pid);

    // A header announcing the largest body the daemon accepts, and no body.
    let header = MAX_FRAME.to_be_bytes();
    let mut drips: Vec<(UnixStream, Instant)> = (0..count)
        .map(|_| {
            let mut stream = UnixStream::connect(agent.socket()).expect("connect");
            stream.write_all(&header).expect("write a frame header");
            stream.set_nonblocking(true).expect("nonblocking");
            (stream, Instant::now())
        })
        .collect();
    assert!(
        poll_until(HANG_GUARD, || open_fds(pid) >= base_fds + count),
        "the daemon never accepted all {count} connections ({} descriptors open)",
        open_fds(pid)
    );

    // Until they are all dropped: others are served, memory is sampled, drops are timed.
    let mut peak = Memory::of(pid);
    let mut latencies = Vec::new();
    let mut dropped_after = Vec::with_capacity(count);
    let give_up = Instant::now() + BODY_DEADLINE + DROP_MARGIN;
    while !drips.is_empty() && Instant::now() < give_up {
        let started = Instant::now();
        assert!(lister.identities().is_empty(), "a list answered meanwhile");
        latencies.push(started.elapsed());
        peak = peak.max(Memory::of(pid));
        drips.retain_mut(|(stream, sent)| {
            let gone = closed(stream);
            if gone {
                dropped_after.push(sent.elapsed());
            }
            !gone
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        drips.is_empty(),
        "{} of {count} withheld-body connections still open {DROP_MARGIN:?} after the \
         {BODY_DEADLINE:?} body deadline",
        drips.len()
    );
    let (first, last) = (
        dropped_after.iter().min().copied().unwrap_or_default(),
        dropped_after.iter().max().copied().unwrap_or_default(),
    );
    // Seen closed no sooner than the deadline (an observation may lag a drop, never precede it).
    assert!(
        first + SLACK >= BODY_DEADLINE,
        "a withheld-body connection was dropped after only {first:?}"
    );
    assert!(
        poll_until(HANG_GUARD, || open_fds(pid) <= base_fds),
        "the daemon kept descriptors of dropped connections ({} open, {base_fds} before)",
        open_fds(pid)
    );
    let after = Memory::of(pid);
    peak = peak.max(after);
    assert!(lister.identities().is_empty(), "a list answered afterwards");

    let (p99, max) = p99_and_max(&mut latencies);
    let growth = peak.hwm.saturating_sub(before.rss);
    let reserved = peak.data.saturating_sub(before.data);
    let count_u64 = count as u64;
    eprintln!(
        "slow drip: {count} connections dropped {first:?}..{last:?} after the header \
         (deadline {BODY_DEADLINE:?}); daemon soft nofile {soft}; {} lists meanwhile p99 \
         {p99:?} max {max:?}; memory before {before}, peak {peak}, after {after}; peak growth \
         rss {growth} KiB ({} KiB per connection), data {reserved} KiB ({} KiB per \
         connection), bound {GROWTH_PER_CONNECTION_KIB} KiB per connection",
        latencies.len(),
        growth / count_u64,
        reserved / count_u64,
    );
    // Resident memory would show a body buffer that is written to; reserved (VmData) memory also
    // shows one that is allocated and left untouched.
    for (what, grew) in [("resident", growth), ("reserved", reserved)] {
        assert!(
            grew / count_u64 < GROWTH_PER_CONNECTION_KIB,
            "holding {count} withheld-body connections grew the daemon's {what} memory by \
             {grew} KiB ({} KiB each): memory set aside for bodies that never came?",
            grew / count_u64
        );
    }
}
