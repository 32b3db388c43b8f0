//! Waiting for a condition with a deadline instead of sleeping a fixed time.

use std::fmt;
use std::time::{Duration, Instant};

use super::{POLL_MAX, POLL_MIN};

/// A condition that did not hold before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitError {
    /// What was awaited, in words a person reading a test failure understands.
    pub what: String,
    /// How long was waited.
    pub waited: Duration,
    /// How often the condition was checked.
    pub attempts: u32,
    /// The last thing the condition reported, if it reported anything.
    pub last_observation: Option<String>,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:.2?} ({} checks) waiting for {}",
            self.waited, self.attempts, self.what
        )?;
        if let Some(last) = &self.last_observation {
            write!(f, "; last observation: {last}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WaitError {}

/// Polls `f` until it returns `Some`, backing off from 10 ms to 100 ms, for at most `timeout`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, WaitError> {
    wait_until_ok(what, timeout, || f().ok_or_else(String::new)).map_err(|mut e| {
        e.last_observation = None;
        e
    })
}

/// Polls `f` until it returns `Ok`; on timeout the error carries the last `Err` as the observation.
pub fn wait_until_ok<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, WaitError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut pause = POLL_MIN;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match f() {
            Ok(value) => return Ok(value),
            Err(observation) => observation,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError {
                what: what.to_string(),
                waited: now - start,
                attempts,
                last_observation: Some(last).filter(|s| !s.is_empty()),
            });
        }
        // The last check lands on the deadline rather than a pause past it.
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(POLL_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_that_appears() {
        let mut calls = 0;
        let got = wait_until("third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, Ok(3));
    }

    #[test]
    fn timeout_names_what_was_awaited_and_the_last_observation() {
        let mut n = 0;
        let err = wait_until_ok("the moon to turn blue", Duration::from_millis(50), || {
            n += 1;
            Err::<(), _>(format!("colour #{n} was grey"))
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("the moon to turn blue"), "{text}");
        assert!(text.contains(&format!("colour #{n} was grey")), "{text}");
        assert!(err.waited >= Duration::from_millis(50));
        assert_eq!(err.attempts, n);
    }

    #[test]
    fn option_variant_reports_no_observation() {
        let err = wait_until("nothing", Duration::ZERO, || None::<()>).unwrap_err();
        assert_eq!(err.last_observation, None);
        assert_eq!(err.attempts, 1);
    }
}
