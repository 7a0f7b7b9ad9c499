//! The one place that reads clocks.
//!
//! Key lifetimes and lock-out delays are measured on the boot clock (Linux `CLOCK_BOOTTIME`), which
//! keeps counting while the machine is suspended, as OpenSSH's agent does: a key added with
//! `ssh-add -t 3600` must not outlive its hour because the laptop slept. Everything else in the
//! crate takes `now` as an argument, so tests drive time by hand through [`ManualClock`].

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant on the boot clock, as the duration since boot.
pub type BootInstant = Duration;

/// A source of time, injected into the daemon so tests can control it.
pub trait Clock: Send + Sync + 'static {
    /// Time since boot, including time spent suspended.
    fn boot_now(&self) -> BootInstant;
    /// Wall-clock seconds since the Unix epoch.
    fn unix_now(&self) -> u64;
}

/// The real clocks of the machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn boot_now(&self) -> BootInstant {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let id = nix::time::ClockId::CLOCK_BOOTTIME;
        // macOS's CLOCK_MONOTONIC already counts time asleep.
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let id = nix::time::ClockId::CLOCK_MONOTONIC;
        let ts = nix::time::clock_gettime(id).expect("the boot clock is always readable");
        Duration::new(
            u64::try_from(ts.tv_sec()).unwrap_or(0),
            u32::try_from(ts.tv_nsec()).unwrap_or(0),
        )
    }

    fn unix_now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Mutex<(BootInstant, u64)>,
}

impl ManualClock {
    /// A clock at boot time `boot` and wall time `unix`.
    pub fn new(boot: BootInstant, unix: u64) -> Self {
        Self {
            now: Mutex::new((boot, unix)),
        }
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().expect("clock mutex poisoned");
        now.0 += by;
        now.1 += by.as_secs();
    }
}

impl Clock for ManualClock {
    fn boot_now(&self) -> BootInstant {
        self.now.lock().expect("clock mutex poisoned").0
    }

    fn unix_now(&self) -> u64 {
        self.now.lock().expect("clock mutex poisoned").1
    }
}

/// Parses an OpenSSH time value (`sshd_config(5)` TIME FORMATS): seconds, or numbers with the
/// units `s`, `m`, `h`, `d`, `w`, concatenated (`90`, `1h30m`, `2d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid time {text:?} (use e.g. 3600, 90m, 1h30m, 2d)");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.checked_add(n).ok_or_else(bad)?;
    }
    // The agent protocol carries lifetimes as a u32 of seconds.
    if total == 0 || total > u64::from(u32::MAX) {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssh_time_formats() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("1h30m", 5_400),
            ("2d", 172_800),
            ("1w", 604_800),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["", "0", "1x", "h", "99999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn boot_clock_moves_forward() {
        let clock = SystemClock;
        let a = clock.boot_now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(clock.boot_now() > a);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Duration::from_secs(10), 1_000);
        assert_eq!(clock.boot_now(), Duration::from_secs(10));
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.boot_now(), Duration::from_secs(15));
        assert_eq!(clock.unix_now(), 1_005);
    }
}
