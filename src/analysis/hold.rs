//! A condition that must hold for a while before it is raised, and be gone for a while before it
//! clears, so hints never flicker. Shared by the device, face and other guidance trackers.

use std::time::{Duration, Instant};

use crate::reasons::ReasonCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    Raised(ReasonCode),
    Cleared(ReasonCode),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    code: ReasonCode,
    clear_hold: Duration,
    active: bool,
    since: Option<Instant>,
    fine_since: Option<Instant>,
}

impl Held {
    pub fn new(clear_hold: Duration, code: ReasonCode) -> Self {
        Held {
            code,
            clear_hold,
            active: false,
            since: None,
            fine_since: None,
        }
    }

    pub fn code(&self) -> ReasonCode {
        self.code
    }

    pub fn active(&self) -> bool {
        self.active
    }

    /// When the current bad spell started, if one is running.
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    /// Backdates the start of a bad spell (for conditions detected after the fact).
    pub(crate) fn start_at(&mut self, at: Instant) {
        self.since = Some(at);
    }

    /// `bad` is the condition at `at`; it is raised once it has held for `hold`, and cleared
    /// once it has been absent for the clear hold.
    pub fn update(&mut self, at: Instant, bad: bool, hold: Duration, out: &mut Vec<HealthChange>) {
        if bad {
            self.fine_since = None;
            let since = *self.since.get_or_insert(at);
            if !self.active && at.saturating_duration_since(since) >= hold {
                self.active = true;
                out.push(HealthChange::Raised(self.code));
            }
        } else {
            self.since = None;
            if self.active {
                let fine = *self.fine_since.get_or_insert(at);
                if at.saturating_duration_since(fine) >= self.clear_hold {
                    self.active = false;
                    self.fine_since = None;
                    out.push(HealthChange::Cleared(self.code));
                }
            }
        }
    }
}
