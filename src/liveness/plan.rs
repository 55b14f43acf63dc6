//! What a liveness challenge asks of the person: a short sequence of distinct head, eye and mouth
//! actions, each with its own time limit and a pause before it is announced. `ChallengePlan::random`
//! draws the actions, their order, the time limits, the pauses and the step ids afresh for every
//! session, so a recording made for one session does not fit another. `judge` decides whether the
//! person did what the plan asked.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Serialize, Serializer};

/// One thing the person is asked to do. "Left" and "right" are the person's own, not the image's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Turn the head to the person's own left (towards image-right on a non-mirrored camera).
    TurnLeft,
    /// Turn the head to the person's own right (towards image-left on a non-mirrored camera).
    TurnRight,
    /// Tilt the head back: chin up.
    LookUp,
    /// Tilt the head forward: chin down.
    LookDown,
    /// Close both eyes briefly and open them again.
    Blink,
    /// Open the mouth wide and close it again.
    OpenMouth,
    /// Move the face closer to the camera.
    MoveCloser,
    /// Read a few random digits aloud (the spoken step; only when the session wants audio). Not
    /// in `ALL`: `ChallengePlan::random` never draws it, `with_spoken_step` adds it.
    SpeakDigits,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::TurnLeft,
        Action::TurnRight,
        Action::LookUp,
        Action::LookDown,
        Action::Blink,
        Action::OpenMouth,
        Action::MoveCloser,
    ];

    /// The stable name, the same as the serialized form.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::TurnLeft => "turn_left",
            Action::TurnRight => "turn_right",
            Action::LookUp => "look_up",
            Action::LookDown => "look_down",
            Action::Blink => "blink",
            Action::OpenMouth => "open_mouth",
            Action::MoveCloser => "move_closer",
            Action::SpeakDigits => "speak_digits",
        }
    }

    pub fn from_str_code(code: &str) -> Option<Action> {
        Self::ALL
            .into_iter()
            .chain([Action::SpeakDigits])
            .find(|a| a.as_str() == code)
    }
}

/// Shortest and longest time limit `ChallengePlan::random` draws, in 100 ms units (6.0..=9.0 s).
const TIME_LIMIT_DECIS: std::ops::RangeInclusive<u64> = 60..=90;
/// Range of lead-ins `ChallengePlan::random` draws, in ms (0.3 s up to but excluding 1.2 s).
const LEAD_IN_MS: std::ops::Range<u64> = 300..1200;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChallengeStep {
    /// Random per session; names the step in events.
    pub id: u32,
    pub action: Action,
    /// Time allowed once the step is running (paused time does not count). Serialized in ms.
    #[serde(rename = "time_limit_ms", serialize_with = "ms")]
    pub time_limit: Duration,
    /// Pause before announcing this step, counted from the end of the previous step (or from the
    /// start of the plan for the first step). Serialized in ms.
    #[serde(rename = "lead_in_ms", serialize_with = "ms")]
    pub lead_in: Duration,
}

/// The steps of one session's challenge, in the order they are asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChallengePlan {
    pub steps: Vec<ChallengeStep>,
}

impl ChallengePlan {
    /// `count` distinct actions in random order (no repeats; `count` is capped at the 7 actions
    /// there are), random time limits (6..=9 s in whole 100 ms), random lead-ins (0.3..1.2 s, whole
    /// ms) and random, distinct step ids, so a recording made for one session does not fit
    /// another.
    pub fn random<R: Rng>(rng: &mut R, count: usize) -> ChallengePlan {
        let count = count.min(Action::ALL.len());
        let actions: Vec<Action> = Action::ALL.choose_multiple(rng, count).copied().collect();
        let mut ids: Vec<u32> = Vec::with_capacity(count);
        while ids.len() < count {
            let id = rng.gen::<u32>();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let steps = actions
            .into_iter()
            .zip(ids)
            .map(|(action, id)| ChallengeStep {
                id,
                action,
                time_limit: Duration::from_millis(rng.gen_range(TIME_LIMIT_DECIS) * 100),
                lead_in: Duration::from_millis(rng.gen_range(LEAD_IN_MS)),
            })
            .collect();
        ChallengePlan { steps }
    }

    /// A deterministic plan for tests: the given actions in order, ids 1, 2, ..., the same time
    /// limit for every step and no lead-in.
    pub fn from_actions(actions: &[Action], time_limit: Duration) -> ChallengePlan {
        let steps = actions
            .iter()
            .zip(1u32..)
            .map(|(&action, id)| ChallengeStep {
                id,
                action,
                time_limit,
                lead_in: Duration::ZERO,
            })
            .collect();
        ChallengePlan { steps }
    }
}

/// Time allowed for the spoken step: the speech judge decides within its onset window plus its
/// listening window (6.2 s); this is the backstop.
pub(crate) const SPOKEN_STEP_LIMIT: Duration = Duration::from_secs(8);

impl ChallengePlan {
    /// Appends the spoken step (after the motions, so the person has settled in front of the
    /// camera) with a random id distinct from the others and a random lead-in like theirs.
    pub(crate) fn with_spoken_step<R: Rng>(mut self, rng: &mut R) -> ChallengePlan {
        if self.steps.iter().any(|s| s.action == Action::SpeakDigits) {
            return self;
        }
        let id = loop {
            let id = rng.gen::<u32>();
            if !self.steps.iter().any(|s| s.id == id) {
                break id;
            }
        };
        self.steps.push(ChallengeStep {
            id,
            action: Action::SpeakDigits,
            time_limit: SPOKEN_STEP_LIMIT,
            lead_in: Duration::from_millis(rng.gen_range(LEAD_IN_MS)),
        });
        self
    }
}

fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn check(plan: &ChallengePlan, count: usize) {
        assert_eq!(plan.steps.len(), count);
        for (i, s) in plan.steps.iter().enumerate() {
            assert!(
                plan.steps[..i]
                    .iter()
                    .all(|o| o.action != s.action && o.id != s.id),
                "repeat in {plan:?}"
            );
            let limit = s.time_limit.as_millis();
            assert!((6000..=9000).contains(&limit), "{limit}");
            assert_eq!(limit % 100, 0, "{limit}");
            let lead = s.lead_in.as_millis();
            assert!((300..1200).contains(&lead), "{lead}");
        }
    }

    #[test]
    fn random_plans_are_distinct_in_range_and_reproducible() {
        let plans: Vec<ChallengePlan> = (0..50u64)
            .map(|seed| ChallengePlan::random(&mut StdRng::seed_from_u64(seed), 3))
            .collect();
        for p in &plans {
            check(p, 3);
        }
        // Different seeds give different plans, and different action sequences too.
        for (i, p) in plans.iter().enumerate() {
            assert!(plans[..i].iter().all(|o| o != p));
        }
        let sequences: std::collections::HashSet<Vec<Action>> = plans
            .iter()
            .map(|p| p.steps.iter().map(|s| s.action).collect())
            .collect();
        assert!(sequences.len() > 20, "{}", sequences.len());
        // Every action gets asked sometimes, and every position varies.
        for a in Action::ALL {
            assert!(
                plans.iter().any(|p| p.steps[0].action == a),
                "{a:?} never first"
            );
        }
        // Same seed, same plan.
        assert_eq!(
            ChallengePlan::random(&mut StdRng::seed_from_u64(7), 3),
            ChallengePlan::random(&mut StdRng::seed_from_u64(7), 3)
        );
    }

    #[test]
    fn random_count_is_capped_and_zero_is_empty() {
        let mut rng = StdRng::seed_from_u64(1);
        check(&ChallengePlan::random(&mut rng, 99), 7);
        assert!(ChallengePlan::random(&mut rng, 0).steps.is_empty());
    }

    #[test]
    fn from_actions_is_deterministic() {
        let plan =
            ChallengePlan::from_actions(&[Action::Blink, Action::TurnLeft], Duration::from_secs(6));
        assert_eq!(plan.steps[0].id, 1);
        assert_eq!(plan.steps[1].id, 2);
        assert_eq!(plan.steps[1].action, Action::TurnLeft);
        assert_eq!(plan.steps[1].lead_in, Duration::ZERO);
        assert_eq!(
            plan,
            ChallengePlan::from_actions(&[Action::Blink, Action::TurnLeft], Duration::from_secs(6))
        );
    }

    #[test]
    fn the_spoken_step_comes_last_once_and_is_never_drawn() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            assert!(ChallengePlan::random(&mut rng, 7)
                .steps
                .iter()
                .all(|s| s.action != Action::SpeakDigits));
        }
        let plan = ChallengePlan::random(&mut rng, 3)
            .with_spoken_step(&mut rng)
            .with_spoken_step(&mut rng);
        assert_eq!(plan.steps.len(), 4);
        let last = &plan.steps[3];
        assert_eq!(last.action, Action::SpeakDigits);
        assert_eq!(last.time_limit, SPOKEN_STEP_LIMIT);
        assert!(plan.steps[..3].iter().all(|s| s.id != last.id));
        assert_eq!(
            Action::from_str_code("speak_digits"),
            Some(Action::SpeakDigits)
        );
    }

    #[test]
    fn names_and_json() {
        for a in Action::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
            assert_eq!(Action::from_str_code(a.as_str()), Some(a));
        }
        let plan = ChallengePlan {
            steps: vec![ChallengeStep {
                id: 42,
                action: Action::OpenMouth,
                time_limit: Duration::from_millis(7300),
                lead_in: Duration::from_millis(450),
            }],
        };
        assert_eq!(
            serde_json::to_value(&plan).unwrap(),
            serde_json::json!({"steps": [
                {"id": 42, "action": "open_mouth", "time_limit_ms": 7300, "lead_in_ms": 450}
            ]})
        );
    }
}
