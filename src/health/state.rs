//! The rise/fall state machine: one counter, as HAProxy keeps it.
//!
//! `health` runs from 0 to `rise + fall - 1`. A server is up while `health >= rise`.
//! A success moves the counter up (jumping to the top once it reaches `rise`), a failure
//! moves it down (dropping to 0 once it falls below `rise`). So an up server needs `fall`
//! consecutive failures to go down and a down server `rise` consecutive successes to come
//! up, and a flapping result never flips the state on a single probe.
//!
//! The very first probe decides outright: a server that was never checked has no history,
//! and neither optimism (HAProxy's "up until proven down", which sends clients to an
//! unsynced Galera node) nor making a healthy server wait `rise` intervals is right.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentUp,
    WentDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    rise: u32,
    fall: u32,
    /// `None` until the first probe result.
    health: Option<u32>,
}

impl HealthState {
    pub fn new(rise: u32, fall: u32) -> Self {
        HealthState { rise: rise.max(1), fall: fall.max(1), health: None }
    }

    /// Go on from a state already known (a server kept across a reload): no first-probe
    /// verdict, and the `streak` of probes already counted toward a change still counts
    /// (short of completing it, should the reload have lowered `rise` or `fall`).
    pub fn resume(rise: u32, fall: u32, up: bool, streak: u32) -> Self {
        let mut s = HealthState::new(rise, fall);
        s.health = Some(if up { s.top() - streak.min(s.fall - 1) } else { streak.min(s.rise - 1) });
        s
    }

    /// Probes in a row toward a pending change: passes while down, failures while up.
    pub fn streak(&self) -> u32 {
        match self.health {
            Some(h) if h >= self.rise => self.top() - h,
            Some(h) => h,
            None => 0,
        }
    }

    fn top(&self) -> u32 {
        self.rise + self.fall - 1
    }

    pub fn is_up(&self) -> bool {
        self.health.is_some_and(|h| h >= self.rise)
    }

    pub fn checked(&self) -> bool {
        self.health.is_some()
    }

    /// True while a state change is pending (some but not enough probes disagree).
    pub fn transitioning(&self) -> bool {
        match self.health {
            Some(h) if h >= self.rise => h < self.top(),
            Some(h) => h > 0,
            None => false,
        }
    }

    /// Passive health marked the server down: it needs `rise` successes to come back.
    pub fn force_down(&mut self) {
        self.health = Some(0);
    }

    /// Feed one probe result; returns the transition it caused, if any.
    /// The first result always reports a transition so the caller logs the initial state.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        let was_up = self.is_up();
        let next = match self.health {
            None => {
                self.health = Some(if ok { self.top() } else { 0 });
                return Some(if ok { Transition::WentUp } else { Transition::WentDown });
            }
            // Reaching `rise` jumps to the top, so an up server always has `fall` to spend.
            Some(h) if ok => {
                if h + 1 >= self.rise {
                    self.top()
                } else {
                    h + 1
                }
            }
            // Falling below `rise` drops to 0, so a down server always needs `rise` in a row.
            Some(h) => match h.saturating_sub(1) {
                n if n < self.rise => 0,
                n => n,
            },
        };
        self.health = Some(next);
        match (was_up, self.is_up()) {
            (false, true) => Some(Transition::WentUp),
            (true, false) => Some(Transition::WentDown),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rise: u32, fall: u32, seq: &str) -> String {
        let mut s = HealthState::new(rise, fall);
        seq.chars()
            .map(|c| {
                s.observe(c == '+');
                if s.is_up() {
                    'U'
                } else {
                    'D'
                }
            })
            .collect()
    }

    #[test]
    fn resume_keeps_the_streak_toward_a_change() {
        // Down with 2 of rise 3 passes: one more brings it up.
        let mut s = HealthState::resume(3, 2, false, 2);
        assert_eq!((s.is_up(), s.streak()), (false, 2));
        assert_eq!(s.observe(true), Some(Transition::WentUp));
        // Up with 1 of fall 2 failures: one more takes it down.
        let mut s = HealthState::resume(3, 2, true, 1);
        assert!(s.transitioning());
        assert_eq!(s.observe(false), Some(Transition::WentDown));
        // A streak longer than the new thresholds allow stops one short of the change.
        let mut s = HealthState::resume(2, 2, false, 5);
        assert_eq!(s.streak(), 1);
        assert_eq!(s.observe(true), Some(Transition::WentUp));
        let s = HealthState::resume(2, 3, true, 9);
        assert_eq!((s.is_up(), s.streak()), (true, 2));
        // No streak: as before.
        assert_eq!(HealthState::resume(2, 3, true, 0).streak(), 0);
        assert!(!HealthState::resume(2, 3, true, 0).transitioning());
    }

    #[test]
    fn streak_follows_observations() {
        let mut s = HealthState::new(3, 3);
        s.observe(false);
        s.observe(true);
        s.observe(true);
        assert_eq!((s.is_up(), s.streak()), (false, 2));
        s.observe(true);
        assert_eq!((s.is_up(), s.streak()), (true, 0));
        s.observe(false);
        assert_eq!(s.streak(), 1);
    }

    #[test]
    fn first_probe_decides() {
        assert_eq!(run(2, 3, "+"), "U");
        assert_eq!(run(2, 3, "-"), "D");
        assert!(!HealthState::new(2, 3).checked());
    }

    #[test]
    fn up_needs_fall_consecutive_failures() {
        assert_eq!(run(2, 3, "+---"), "UUUD");
        assert_eq!(run(2, 3, "+--+--"), "UUUUUU"); // a success resets toward the top
        assert_eq!(run(2, 3, "+--+---"), "UUUUUUD");
        assert_eq!(run(1, 1, "+-"), "UD");
    }

    #[test]
    fn down_needs_rise_consecutive_successes() {
        assert_eq!(run(2, 3, "-++"), "DDU");
        assert_eq!(run(2, 3, "-+-++"), "DDDDU");
        assert_eq!(run(3, 2, "-+++"), "DDDU");
        assert_eq!(run(1, 3, "-+"), "DU");
    }

    #[test]
    fn exhaustive_small_thresholds() {
        // Property: the state changes only after `rise` (resp. `fall`) equal results in a row.
        for rise in 1..=4u32 {
            for fall in 1..=4u32 {
                for bits in 0u32..(1 << 10) {
                    let seq: Vec<bool> = (0..10).map(|i| bits & (1 << i) != 0).collect();
                    let mut s = HealthState::new(rise, fall);
                    let mut prev: Option<bool> = None;
                    let mut streak = 0u32;
                    let mut last = None;
                    for (n, &ok) in seq.iter().enumerate() {
                        streak = if last == Some(ok) { streak + 1 } else { 1 };
                        last = Some(ok);
                        let t = s.observe(ok);
                        let up = s.is_up();
                        if n == 0 {
                            assert_eq!(up, ok);
                        } else if let Some(p) = prev {
                            if up != p {
                                assert!(t.is_some());
                                let need = if up { rise } else { fall };
                                assert!(streak >= need, "rise={rise} fall={fall} seq={seq:?} at {n}");
                                assert_eq!(up, ok);
                            } else {
                                assert!(t.is_none());
                            }
                            // Enough equal results in a row always flip it.
                            if ok && streak >= rise {
                                assert!(up, "rise={rise} fall={fall} seq={seq:?} at {n}");
                            }
                            if !ok && streak >= fall {
                                assert!(!up, "rise={rise} fall={fall} seq={seq:?} at {n}");
                            }
                        }
                        prev = Some(up);
                    }
                }
            }
        }
    }
}
