//! Closed-loop load: N client threads, each with its own connection, sending one request, waiting
//! for the reply, and sending the next, for a fixed duration. All clients connect first and start
//! together; throughput is the sum of each client's operations over its own elapsed time.

use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use ssh_key::public::KeyData;

use crate::proto::{self, Client, REQUEST_IDENTITIES, SIGN_RESPONSE};

/// The outcome of one load run.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Operations per second over all clients.
    pub rate: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Operations completed.
    pub ops: u64,
    /// CPU time the agent process spent per operation, microseconds (filled in by the caller,
    /// which knows the process; NaN until then). Unlike wall-clock rates it barely moves when
    /// other work shares the machine.
    pub cpu_us: f64,
}

impl Run {
    /// The median of each figure over several runs (at least one).
    pub fn median(runs: &[Run]) -> Run {
        let mid = |f: fn(&Run) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Run {
            rate: mid(|r| r.rate),
            p50_us: mid(|r| r.p50_us),
            p99_us: mid(|r| r.p99_us),
            ops: runs.iter().map(|r| r.ops).sum(),
            cpu_us: mid(|r| r.cpu_us),
        }
    }
}

/// What one client's state needs to do for one operation.
trait Op: Send {
    /// One timed request and reply.
    fn once(&mut self) -> Result<()>;
    /// Untimed checks on the reply just received.
    fn check(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Runs `clients` threads for `dur`, each built by `setup(client_index)`.
fn drive<S: Op>(
    clients: usize,
    dur: Duration,
    setup: impl Fn(usize) -> Result<S> + Sync,
) -> Result<Run> {
    let barrier = Barrier::new(clients);
    let results: Vec<Result<(f64, Vec<u64>)>> = thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let (barrier, setup) = (&barrier, &setup);
                s.spawn(move || {
                    // Everyone reaches the barrier even if setup fails, or the others would hang.
                    let state = setup(i);
                    barrier.wait();
                    let mut state = state?;
                    let mut lat = Vec::with_capacity(1 << 14);
                    let start = Instant::now();
                    let deadline = start + dur;
                    loop {
                        let t = Instant::now();
                        if t >= deadline {
                            break;
                        }
                        state.once()?;
                        lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                        state.check()?;
                    }
                    Ok((start.elapsed().as_secs_f64(), lat))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("client panicked"))))
            .collect()
    });
    let mut rate = 0.0;
    let mut all = Vec::new();
    for r in results {
        let (secs, lat) = r?;
        #[allow(clippy::cast_precision_loss)]
        let ops = lat.len() as f64;
        rate += ops / secs;
        all.extend(lat);
    }
    if all.is_empty() {
        return Err(anyhow!("no operation completed"));
    }
    all.sort_unstable();
    Ok(Run {
        rate,
        p50_us: percentile(&all, 50),
        p99_us: percentile(&all, 99),
        ops: all.len() as u64,
        cpu_us: f64::NAN,
    })
}

#[allow(clippy::cast_precision_loss)]
fn percentile(sorted: &[u64], p: usize) -> f64 {
    let idx = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[idx] as f64 / 1_000.0
}

/// Length of the data each sign request carries.
const SIGN_DATA_LEN: usize = 400;
/// One signature in this many is verified (untimed).
const VERIFY_EVERY: u64 = 64;

struct Sign {
    client: Client,
    key: KeyData,
    frame: Vec<u8>,
    count: u64,
}

impl Sign {
    /// The data inside the frame: the last field before the 4-byte flags.
    fn data_range(&self) -> std::ops::Range<usize> {
        let end = self.frame.len() - 4;
        end - SIGN_DATA_LEN..end
    }
}

impl Op for Sign {
    fn once(&mut self) -> Result<()> {
        // New data every time, as every login signs a new session: an agent cannot answer from
        // a cache of (deterministic) PKCS#1 v1.5 signatures.
        self.count += 1;
        let end = self.data_range().end;
        self.frame[end - 8..end].copy_from_slice(&self.count.to_be_bytes());
        self.client.call_expect(&self.frame, SIGN_RESPONSE)?;
        Ok(())
    }

    fn check(&mut self) -> Result<()> {
        if self.count % VERIFY_EVERY == 1 {
            let reply = self.client.last_reply();
            let data = &self.frame[self.data_range()];
            proto::verify_sign_response(reply, &self.key, data, proto::RSA_SHA2_256)?;
        }
        Ok(())
    }
}

/// rsa-sha2-256 signatures with `key`, over fresh data each time; one in [`VERIFY_EVERY`] replies
/// is verified outside the timed section.
pub fn sign(socket: &Path, key: &KeyData, clients: usize, dur: Duration) -> Result<Run> {
    drive(clients, dur, |i| {
        let frame = proto::sign_request(key, &sign_data(i), proto::RSA_SHA2_256)?;
        Ok(Sign {
            client: Client::connect(socket)?,
            key: key.clone(),
            frame,
            count: 0,
        })
    })
}

/// About the size of what ssh signs for a publickey login (session id, user, service, key blob),
/// different for each client.
pub fn sign_data(client: usize) -> Vec<u8> {
    let salt = client.to_be_bytes();
    (0..SIGN_DATA_LEN)
        .map(|i| salt[i % salt.len()] ^ u8::try_from(i % 251).unwrap_or(0))
        .collect()
}

struct List {
    client: Client,
    expect: u32,
}

impl Op for List {
    fn once(&mut self) -> Result<()> {
        let reply = self.client.call(&REQUEST_IDENTITIES)?;
        check_count(reply, self.expect)
    }
}

fn check_count(reply: &[u8], expect: u32) -> Result<()> {
    let n = proto::identity_count(reply)?;
    if n == expect {
        Ok(())
    } else {
        Err(anyhow!("agent listed {n} keys, {expect} expected"))
    }
}

/// Request-identities on long-lived connections, expecting `expect` keys.
pub fn list(socket: &Path, expect: u32, clients: usize, dur: Duration) -> Result<Run> {
    drive(clients, dur, |_| {
        Ok(List {
            client: Client::connect(socket)?,
            expect,
        })
    })
}

struct Churn<'a> {
    socket: &'a Path,
    expect: u32,
}

impl Op for Churn<'_> {
    fn once(&mut self) -> Result<()> {
        let mut client = Client::connect(self.socket)?;
        check_count(client.call(&REQUEST_IDENTITIES)?, self.expect)
    }
}

/// Connect, request identities, close: a new connection per operation, as `ssh` and `git` do.
pub fn churn(socket: &Path, expect: u32, clients: usize, dur: Duration) -> Result<Run> {
    drive(clients, dur, |_| Ok(Churn { socket, expect }))
}
