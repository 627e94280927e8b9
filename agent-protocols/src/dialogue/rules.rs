//! A dialogue's declared state machine: which message may follow which, who may send it,
//! where it ends, and how long each state may last.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agent_core::protocol::{StateMachine, TransitionSpec};
use agent_core::{Message, SchemaDigest};
use serde::Serialize;

use super::Name;

/// One allowed step: in state `from`, the party playing `sender` may send `message`, and
/// the dialogue moves to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// The state the step leaves.
    pub from: Name,
    /// The message's name ([`Message::NAME`]), or the name of one of its variants.
    pub message: Name,
    /// The schema digest of the message type carrying the step, if declared with its type
    /// ([`RulesBuilder::step`], [`RulesBuilder::variant_step`]).
    pub schema: Option<SchemaDigest>,
    /// The role that may send it.
    pub sender: Name,
    /// The state the step enters.
    pub to: Name,
    /// Whether the step is allowed after the state's deadline too (answering a late
    /// message, giving up on a silent peer).
    pub after_deadline: bool,
}

/// A dialogue's rules, checked when built. Declare them with [`Rules::builder`].
#[derive(Debug, Clone)]
pub struct Rules {
    name: Name,
    initial: Name,
    terminal: BTreeSet<String>,
    transitions: Vec<Transition>,
    deadlines: BTreeMap<String, Duration>,
    max_age: Duration,
}

/// Why a set of rules was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// No initial state was named.
    #[error("dialogue rules {0}: no initial state")]
    NoInitial(String),
    /// Two steps leave one state on the same message from the same role.
    #[error("dialogue rules {rules}: in state {state}, {message} from {sender} leads to two states")]
    Ambiguous {
        /// The rules' name.
        rules: String,
        /// The state.
        state: String,
        /// The message.
        message: String,
        /// The sending role.
        sender: String,
    },
    /// A terminal state has a step out of it: nothing may follow a terminal message.
    #[error("dialogue rules {rules}: terminal state {state} has a step out of it ({message})")]
    TerminalHasExit {
        /// The rules' name.
        rules: String,
        /// The state.
        state: String,
        /// The message leaving it.
        message: String,
    },
    /// A state that is not terminal has no step out of it: a dialogue there would hang.
    #[error("dialogue rules {rules}: state {state} is neither terminal nor left by any step")]
    DeadEnd {
        /// The rules' name.
        rules: String,
        /// The state.
        state: String,
    },
    /// A state no step reaches from the initial one.
    #[error("dialogue rules {rules}: state {state} cannot be reached from the initial state")]
    Unreachable {
        /// The rules' name.
        rules: String,
        /// The state.
        state: String,
    },
}

/// Builds [`Rules`]; see [`Rules::builder`].
#[derive(Debug, Clone)]
pub struct RulesBuilder {
    rules: Rules,
}

/// How long a dialogue is remembered after it opened, by default: a day.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

impl Rules {
    /// Starts declaring the rules of the dialogue kind `name`.
    pub fn builder(name: impl Into<String>) -> RulesBuilder {
        RulesBuilder {
            rules: Rules {
                name: Name::from(name.into()),
                initial: Name::from(""),
                terminal: BTreeSet::new(),
                transitions: Vec::new(),
                deadlines: BTreeMap::new(),
                max_age: DEFAULT_MAX_AGE,
            },
        }
    }

    /// The dialogue kind's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The state every dialogue starts in.
    pub fn initial(&self) -> &Name {
        &self.initial
    }

    /// `role` as these rules name it (shared with every dialogue under them), if a step
    /// names it as a sender.
    pub(crate) fn role(&self, role: &str) -> Option<&Name> {
        self.transitions.iter().map(|t| &t.sender).find(|sender| **sender == *role)
    }

    /// Whether nothing may follow `state`.
    pub fn is_terminal(&self, state: &str) -> bool {
        self.terminal.contains(state)
    }

    /// The steps allowed out of `state`.
    pub fn steps_from<'a>(&'a self, state: &'a str) -> impl Iterator<Item = &'a Transition> + 'a {
        self.transitions.iter().filter(move |t| *t.from == *state)
    }

    /// Every step, in declaration order.
    pub fn transitions(&self) -> &[Transition] {
        &self.transitions
    }

    /// How long a dialogue may stay in `state`, if bounded.
    pub fn deadline(&self, state: &str) -> Option<Duration> {
        self.deadlines.get(state).copied()
    }

    /// How long a dialogue is remembered after it opened (closed or not).
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The rules as a protocol's manifest publishes them
    /// ([`Protocol::state_machine`](agent_core::Protocol::state_machine)), so its digest
    /// changes with any step, terminal state or deadline.
    pub fn state_machine(&self) -> StateMachine {
        let mut states: Vec<String> =
            self.transitions.iter().flat_map(|t| [t.from.to_string(), t.to.to_string()]).collect();
        states.push(self.initial.to_string());
        states.extend(self.terminal.iter().cloned());
        states.extend(self.deadlines.keys().cloned());
        states.sort();
        states.dedup();
        StateMachine {
            name: self.name.to_string(),
            initial: self.initial.to_string(),
            states,
            terminal: self.terminal.iter().cloned().collect(),
            transitions: self
                .transitions
                .iter()
                .map(|t| TransitionSpec {
                    from: t.from.to_string(),
                    message: t.message.to_string(),
                    schema: t.schema,
                    sender: t.sender.to_string(),
                    to: t.to.to_string(),
                    after_deadline: t.after_deadline,
                })
                .collect(),
            deadlines_ms: self.deadlines.iter().map(|(state, limit)| (state.clone(), millis(*limit))).collect(),
            max_age_ms: millis(self.max_age),
        }
    }

    /// The step `message` from `sender` takes out of `state`, if allowed.
    pub(crate) fn step(&self, state: &str, message: &str, sender: &str) -> Option<&Transition> {
        self.transitions.iter().find(|t| *t.from == *state && *t.message == *message && *t.sender == *sender)
    }
}

impl RulesBuilder {
    /// The state every dialogue starts in.
    pub fn initial(mut self, state: impl Into<String>) -> Self {
        self.rules.initial = Name::from(state.into());
        self
    }

    /// In state `from`, the party playing `sender` may send an `M`, which moves the
    /// dialogue to `to`.
    pub fn step<M: Message>(self, from: &str, sender: &str, to: &str) -> Self {
        self.push(M::NAME, Some(M::digest()), from, sender, to, false)
    }

    /// A step that is one variant of the message type `M`, named `variant` (an answer that
    /// is a proposal or a refusal), or `M` itself allowed after the deadline when
    /// `variant` is [`Message::NAME`]. Unlike [`named_step`](Self::named_step), the
    /// published rules name the type carrying the step.
    pub fn variant_step<M: Message>(
        self,
        variant: &str,
        from: &str,
        sender: &str,
        to: &str,
        after_deadline: bool,
    ) -> Self {
        self.push(variant, Some(M::digest()), from, sender, to, after_deadline)
    }

    /// A step named `message` rather than by a message type: for a message type whose
    /// variants are different steps (an answer that is a proposal or a refusal).
    /// The published rules name no type for it, so `message` must be the name of one of the
    /// protocol's messages for its manifest to be read back; prefer
    /// [`variant_step`](Self::variant_step).
    pub fn named_step(self, message: &str, from: &str, sender: &str, to: &str, after_deadline: bool) -> Self {
        self.push(message, None, from, sender, to, after_deadline)
    }

    fn push(
        mut self,
        message: &str,
        schema: Option<SchemaDigest>,
        from: &str,
        sender: &str,
        to: &str,
        after_deadline: bool,
    ) -> Self {
        self.rules.transitions.push(Transition {
            from: from.into(),
            message: message.into(),
            schema,
            sender: sender.into(),
            to: to.into(),
            after_deadline,
        });
        self
    }

    /// Marks `state` terminal: the dialogue is closed there and nothing more is accepted.
    pub fn terminal(mut self, state: impl Into<String>) -> Self {
        self.rules.terminal.insert(state.into());
        self
    }

    /// A dialogue may stay in `state` at most `limit`; a message after that is refused as
    /// late (and changes nothing), and [`Dialogues::expire`](super::Dialogues::expire)
    /// closes the dialogue as expired.
    pub fn deadline(mut self, state: impl Into<String>, limit: Duration) -> Self {
        self.rules.deadlines.insert(state.into(), limit);
        self
    }

    /// How long a dialogue is remembered after it opened (default [`DEFAULT_MAX_AGE`]).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.rules.max_age = age;
        self
    }

    /// Checks the rules: an initial state, one outcome per (state, message, sender),
    /// nothing out of a terminal state, no state without a way out, every state reachable.
    pub fn build(self) -> Result<Rules, RulesError> {
        let rules = self.rules;
        let name = || rules.name.to_string();
        if rules.initial.is_empty() {
            return Err(RulesError::NoInitial(name()));
        }
        for (i, t) in rules.transitions.iter().enumerate() {
            let clash = rules.transitions[..i]
                .iter()
                .find(|o| o.from == t.from && o.message == t.message && o.sender == t.sender);
            if clash.is_some_and(|o| o.to != t.to) {
                return Err(RulesError::Ambiguous {
                    rules: name(),
                    state: t.from.to_string(),
                    message: t.message.to_string(),
                    sender: t.sender.to_string(),
                });
            }
            if rules.terminal.contains(t.from.as_str()) {
                return Err(RulesError::TerminalHasExit {
                    rules: name(),
                    state: t.from.to_string(),
                    message: t.message.to_string(),
                });
            }
        }
        let mut states: BTreeSet<&str> =
            rules.transitions.iter().flat_map(|t| [t.from.as_str(), t.to.as_str()]).collect();
        states.insert(&rules.initial);
        states.extend(rules.terminal.iter().map(String::as_str));
        states.extend(rules.deadlines.keys().map(String::as_str));
        for state in &states {
            if !rules.terminal.contains(*state) && !rules.transitions.iter().any(|t| t.from == *state) {
                return Err(RulesError::DeadEnd { rules: name(), state: state.to_string() });
            }
        }
        let mut reached = BTreeSet::from([rules.initial.as_str()]);
        let mut frontier = vec![rules.initial.as_str()];
        while let Some(state) = frontier.pop() {
            for t in rules.transitions.iter().filter(|t| t.from == state) {
                if reached.insert(&t.to) {
                    frontier.push(&t.to);
                }
            }
        }
        if let Some(unreached) = states.iter().find(|s| !reached.contains(*s)) {
            return Err(RulesError::Unreachable { rules: name(), state: unreached.to_string() });
        }
        Ok(rules)
    }
}

/// `limit` in ms, saturating (a deadline of centuries is as good as none).
fn millis(limit: Duration) -> u64 {
    u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)
}
