//! Child processes that are stopped when the test that started them ends.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{POLL_MAX, POLL_MIN};

/// How long `Drop` lets a process shut down after SIGTERM before SIGKILL.
pub const DROP_GRACE: Duration = Duration::from_secs(3);

/// A child process that is terminated (SIGTERM, then SIGKILL) when dropped.
///
/// Only this PID is ever signalled, and only while the child is un-reaped, so
/// the PID cannot have been reused by an unrelated process.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    label: String,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl ChildGuard {
    /// Wraps a started child whose stdout and stderr go to `log`; `label` names it in messages.
    pub fn new(child: Child, label: impl Into<String>, log: PathBuf) -> ChildGuard {
        ChildGuard {
            child,
            label: label.into(),
            log,
            exited: None,
        }
    }

    /// The process id (for `ip netns exec` children, the program's own, since `ip` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The human-readable name given when the process was started.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Where the process's stdout and stderr are written.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the process has not exited yet (reaps it if it has).
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// The exit status if the process has exited, reaping it.
    pub fn try_status(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// Sends SIGTERM without waiting (nothing if it has exited), so several
    /// processes can be asked to stop at once and then waited for.
    pub fn terminate(&mut self) -> io::Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        self.signal(Signal::SIGTERM)
    }

    /// Sends SIGTERM, waits up to `timeout` for exit, then SIGKILLs and reaps.
    pub fn terminate_and_wait(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        let mut pause = POLL_MIN;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(POLL_MAX);
        }
        eprintln!(
            "causeway-tests: {} (pid {}) ignored SIGTERM for {timeout:?}; sending SIGKILL",
            self.label,
            self.pid()
        );
        self.kill9()
    }

    /// Sends SIGKILL and reaps the process, as a crash would end it.
    pub fn kill9(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        self.signal(Signal::SIGKILL)?;
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }

    /// The last `n` lines of the process's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        match fs::read(&self.log) {
            Ok(bytes) => tail_lines(&String::from_utf8_lossy(&bytes), n),
            Err(e) => format!("<cannot read {}: {e}>", self.log.display()),
        }
    }

    fn signal(&self, signal: Signal) -> io::Result<()> {
        let pid = i32::try_from(self.pid()).map_err(io::Error::other)?;
        match kill(Pid::from_raw(pid), signal) {
            // The child exited between try_wait and kill; the reap will follow.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.terminate_and_wait(DROP_GRACE) {
            eprintln!(
                "causeway-tests: stopping {} (pid {}) failed: {e}",
                self.label,
                self.pid()
            );
        }
    }
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a\nb", 5), "a\nb");
        assert_eq!(tail_lines("", 3), "");
        assert_eq!(tail_lines("a\nb", 0), "");
    }
}
