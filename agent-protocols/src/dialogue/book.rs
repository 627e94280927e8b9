//! An agent's dialogues of one kind: every message in or out is checked against the rules
//! before it counts, and each dialogue is kept in the agent's storage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::storage::Storage;
use agent_core::{Address, Message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::rules::{Rules, Transition};
use super::{Name, Standing};

/// The state a dialogue is put in when a deadline passes before the next step.
pub const EXPIRED: &str = "expired";

/// One message of a dialogue, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said {
    /// The message's name.
    pub message: Name,
    /// The role that sent it.
    pub sender: Name,
    /// When it was checked, ms since the Unix epoch.
    pub at_ms: u64,
}

/// A conversation between this agent and one peer, under one kind of rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialogue {
    /// The dialogue's id: the session its messages travel in.
    #[serde(with = "id_hex")]
    pub id: u128,
    /// The rules' name.
    pub rules: Name,
    /// This agent's role.
    pub me: Name,
    /// The other party.
    #[serde(with = "address_hex")]
    pub peer: Address,
    /// The other party's role.
    pub peer_role: Name,
    /// Where the dialogue is.
    pub state: Name,
    /// When the current state's deadline passes, if it has one; for a closed dialogue, the
    /// deadline it closed under.
    pub deadline_ms: Option<u64>,
    /// When the dialogue opened.
    pub opened_ms: u64,
    /// Every message that counted, in order.
    pub said: Vec<Said>,
    /// What the protocol keeps with the dialogue in its current state (a proposal held or
    /// received), written in the same record as the step that set it. Every step replaces
    /// it (with nothing, unless the step gives it: [`Step::keeping`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
}

/// What a protocol keeps with a dialogue's state ([`Dialogue::data`]): one JSON value, held
/// as its text. A dialogue is written at every step, and the text goes into the record as
/// it is, where a `serde_json::Value` would be walked and encoded again at each step;
/// clones share the text (a call keeps the same data with each of its thousand dialogues).
#[derive(Clone, PartialEq, Eq)]
pub struct Data(Arc<str>);

impl Data {
    /// `value`, encoded as JSON.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Data, serde_json::Error> {
        serde_json::to_string(value).map(|text| Data(text.into()))
    }

    /// The value, decoded as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

impl From<serde_json::Value> for Data {
    fn from(value: serde_json::Value) -> Data {
        Data(value.to_string().into())
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// As the JSON value it holds, as if it were a `serde_json::Value`.
impl Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.decode::<serde_json::Value>().map_err(serde::ser::Error::custom)?.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Data, D::Error> {
        serde_json::Value::deserialize(d).map(Data::from)
    }
}

/// What a step sets besides the new state: a deadline of its own instead of the rules' (a
/// call for proposals carries its own), and what to keep with the new state
/// ([`Dialogue::data`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    deadline_ms: Option<u64>,
    data: Option<Data>,
}

impl Step {
    /// The new state's deadline is `deadline_ms` (ms since the Unix epoch), not the rules'.
    pub fn until(mut self, deadline_ms: u64) -> Step {
        self.deadline_ms = Some(deadline_ms);
        self
    }

    /// Keeps `data` (a [`Data`], or a `serde_json::Value`) with the new state, in the same
    /// write as the step.
    pub fn keeping(mut self, data: impl Into<Data>) -> Step {
        self.data = Some(data.into());
        self
    }
}

impl Dialogue {
    /// Whether the dialogue is over (a terminal state, or expired).
    pub fn is_closed(&self, rules: &Rules) -> bool {
        self.state == EXPIRED || rules.is_terminal(&self.state)
    }

    /// Where the dialogue stands: open or closed, in its state.
    pub fn standing(&self, rules: &Rules) -> Standing {
        let state = self.state.to_string();
        match self.is_closed(rules) {
            true => Standing::Closed { state },
            false => Standing::Open { state },
        }
    }
}

/// Why a message was refused. The dialogue is unchanged by a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogueError {
    /// No dialogue with this id, and the message does not open one.
    #[error("no dialogue {dialogue:032x}, and {message} does not open one")]
    Unknown {
        /// The id.
        dialogue: u128,
        /// The message.
        message: String,
    },
    /// The id is already in use.
    #[error("dialogue {dialogue:032x} already exists, {standing}")]
    Exists {
        /// The id.
        dialogue: u128,
        /// Where the dialogue with that id stands.
        standing: Standing,
    },
    /// The dialogue is over: nothing more is accepted.
    #[error("dialogue {dialogue:032x} is closed in state {state}; {message} refused")]
    Closed {
        /// The id.
        dialogue: u128,
        /// Its final state.
        state: String,
        /// The refused message.
        message: String,
    },
    /// The message may not follow in this state (from this sender).
    #[error(
        "dialogue {dialogue:032x} in state {state}: {message} from {sender} may not follow; expected {expected:?}"
    )]
    OutOfOrder {
        /// The id.
        dialogue: u128,
        /// Its state.
        state: String,
        /// The refused message.
        message: String,
        /// The role that sent it.
        sender: String,
        /// What may follow, as "message from role".
        expected: Vec<String>,
    },
    /// The sender is not a party to the dialogue. It is told nothing of the dialogue (its
    /// refusal says there is no such dialogue, for it): an id it guessed or overheard must
    /// not let it follow someone else's conversation.
    #[error("dialogue {dialogue:032x}: {from} is not a party; {message} refused")]
    NotAParty {
        /// The id.
        dialogue: u128,
        /// Where the dialogue stands, for this agent's own diagnosis (boxed, as in
        /// [`Late`](Self::Late)); never sent.
        standing: Box<Standing>,
        /// The sender.
        from: Address,
        /// The refused message.
        message: String,
    },
    /// The current state's deadline has passed.
    #[error("dialogue {dialogue:032x} ({standing}): {message} came after the deadline ({deadline_ms} ms, now {now_ms} ms); still allowed: {expected:?}")]
    Late {
        /// The id.
        dialogue: u128,
        /// Where it stands: open in the state whose deadline passed, or closed (a message
        /// after the close of a dialogue that closed at its deadline). Boxed, as `expected`
        /// is: refusals are rare, and every `Result` carrying this error (each step's) would
        /// otherwise be larger.
        standing: Box<Standing>,
        /// The refused message.
        message: String,
        /// The deadline that passed.
        deadline_ms: u64,
        /// The time of the check.
        now_ms: u64,
        /// What may still follow after the deadline, as "message from role".
        expected: Box<[String]>,
    },
    /// The peer already has as many dialogues open here as one peer may open: it must let
    /// some end (or expire) before it opens another.
    #[error("dialogue {dialogue:032x}: {from} already has {open} dialogues open here, the most one peer may open")]
    TooManyOpen {
        /// The id of the dialogue it tried to open.
        dialogue: u128,
        /// The peer.
        from: Address,
        /// Its dialogues open here.
        open: usize,
    },
    /// The agent's storage failed: the step was not recorded.
    #[error("dialogue {dialogue:032x}: storage failed: {reason}")]
    Storage {
        /// The id.
        dialogue: u128,
        /// What failed.
        reason: String,
    },
}

impl DialogueError {
    /// What to tell the peer whose message was refused: the dialogue, where it stands (or
    /// that there is no such dialogue), what was expected, and for a late message the
    /// deadline that passed. `None` for failures that are not the peer's doing (storage).
    pub fn refusal(&self) -> Option<Refused> {
        let cause = self.cause()?;
        let (dialogue, standing, expected, deadline_ms) = match self {
            DialogueError::Unknown { dialogue, .. }
            | DialogueError::TooManyOpen { dialogue, .. }
            | DialogueError::NotAParty { dialogue, .. } => (*dialogue, Standing::NoSuchDialogue, Vec::new(), None),
            DialogueError::Exists { dialogue, standing } => (*dialogue, standing.clone(), Vec::new(), None),
            DialogueError::Closed { dialogue, state, .. } => {
                (*dialogue, Standing::Closed { state: state.clone() }, Vec::new(), None)
            }
            DialogueError::OutOfOrder { dialogue, state, expected, .. } => {
                (*dialogue, Standing::Open { state: state.clone() }, expected.clone(), None)
            }
            DialogueError::Late { dialogue, standing, expected, deadline_ms, .. } => {
                (*dialogue, Standing::clone(standing), expected.to_vec(), Some(*deadline_ms))
            }
            DialogueError::Storage { .. } => return None,
        };
        Some(Refused { dialogue, standing, expected, deadline_ms, cause, detail: self.to_string() })
    }
}

/// Sent back to a peer whose message a dialogue refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::Message)]
#[message(name = "agora.dialogue.Refused")]
pub struct Refused {
    /// The dialogue, as 32 hex digits.
    #[serde(with = "id_hex")]
    #[schemars(with = "String")]
    pub dialogue: u128,
    /// Where the dialogue stands here: open or closed in a state, or no such dialogue.
    pub standing: Standing,
    /// What may follow, as "message from role": in the state, for a message out of order;
    /// after the deadline, for a late one. Empty when nothing may (a closed dialogue), or
    /// nothing from this sender (not a party).
    pub expected: Vec<String>,
    /// For a late message, the deadline that passed (ms since the Unix epoch).
    pub deadline_ms: Option<u64>,
    /// Why: what a program acts on.
    pub cause: super::RefusalCause,
    /// The cause in words, for people.
    pub detail: String,
}

impl Refused {
    /// The dialogue's state here; `None` if there is no such dialogue.
    pub fn state(&self) -> Option<&str> {
        self.standing.state()
    }
}

/// An agent's dialogues of one kind, playing one role in each.
///
/// Check each message with [`incoming`](Self::incoming) before acting on it and with
/// [`outgoing`](Self::outgoing) before sending it: a refused message changes nothing. Each
/// step is written to the agent's [`Storage`] before it counts (on disk at the storage's
/// next [`flush`](Storage::flush)), so a restarted agent that [`load`](Self::load)s its
/// dialogues resumes them.
pub struct Dialogues {
    rules: Arc<Rules>,
    me: Name,
    storage: Storage,
    live: parking_lot::Mutex<HashMap<u128, Dialogue>>,
    /// Where each dialogue stood before this agent's last step in it, until a later step:
    /// what [`unsay`](Self::unsay) puts back when that step was not sent after all.
    before_sent: parking_lot::Mutex<HashMap<u128, Before>>,
    /// Whether `before_sent` is kept ([`taking_back`](Dialogues::taking_back)).
    taking_back: bool,
    max_open_per_peer: usize,
}

/// A dialogue as it stood before one of this agent's steps. Names and data are shared, so
/// keeping it costs no copy of what was said.
enum Before {
    /// The step opened it.
    Unopened,
    Stood {
        /// How many steps had been taken (the step is the one after them).
        said: usize,
        state: Name,
        deadline_ms: Option<u64>,
        data: Option<Data>,
    },
}

/// How many dialogues one peer may have open with an agent at once, unless set with
/// [`Dialogues::with_max_open_per_peer`]. Each is kept in the agent's storage until it ends
/// or expires, so without a bound any peer could fill it.
pub const DEFAULT_MAX_OPEN_PER_PEER: usize = 256;

impl Dialogues {
    /// This agent's dialogues under `rules`, in which it plays `me`, with those already
    /// in `storage` (from before a restart), all read now: load them when the agent
    /// starts, not in the middle of a negotiation.
    pub fn load(rules: Rules, me: &str, storage: Storage) -> Result<Dialogues, DialogueError> {
        let prefix = key_prefix(rules.name());
        let mut live = HashMap::new();
        for key in &storage.keys_starting_with(&prefix).map_err(|e| storage_error(0, e))? {
            let Ok(id) = u128::from_str_radix(&key[prefix.len()..], 16) else {
                tracing::warn!(key, "a dialogue under an unreadable key is skipped");
                continue;
            };
            match storage.get::<Stored>(key) {
                Ok(Some(stored)) if stored.me == me => {
                    live.insert(id, stored.into_dialogue(id, rules.name()));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(key, error = %e, "an unreadable dialogue is skipped"),
            }
        }
        let me = rules.role(me).cloned().unwrap_or_else(|| me.into());
        Ok(Dialogues {
            rules: Arc::new(rules),
            me,
            storage,
            live: parking_lot::Mutex::new(live),
            before_sent: parking_lot::Mutex::default(),
            taking_back: false,
            max_open_per_peer: DEFAULT_MAX_OPEN_PER_PEER,
        })
    }

    /// Keeps where each dialogue stood before this agent's last step in it, so that a step
    /// that was not sent after all can be taken back with [`unsay`](Self::unsay) (as
    /// [`Checked`](super::Checked) does). Costs a small record per dialogue.
    pub fn taking_back(mut self) -> Dialogues {
        self.taking_back = true;
        self
    }

    /// Lets one peer open at most `max` dialogues at once here (those it opens: a message
    /// that would open one more is refused with [`DialogueError::TooManyOpen`]). Dialogues
    /// this agent opens are not counted.
    pub fn with_max_open_per_peer(mut self, max: usize) -> Dialogues {
        self.max_open_per_peer = max;
        self
    }

    /// The role this agent plays in these dialogues.
    pub fn role(&self) -> &str {
        &self.me
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The dialogue `id`, as it stands.
    pub fn get(&self, id: u128) -> Option<Dialogue> {
        self.live.lock().get(&id).cloned()
    }

    /// What dialogue `id` keeps ([`Dialogue::data`]), without copying the rest of it.
    pub fn data(&self, id: u128) -> Option<Data> {
        self.live.lock().get(&id).and_then(|d| d.data.clone())
    }

    /// Every dialogue held, open or closed.
    pub fn all(&self) -> Vec<Dialogue> {
        self.live.lock().values().cloned().collect()
    }

    /// Opens dialogue `id` with `peer` (playing `peer_role`), in the initial state.
    pub fn open(&self, id: u128, peer: Address, peer_role: &str, now_ms: u64) -> Result<Dialogue, DialogueError> {
        let mut live = self.live.lock();
        if let Some(existing) = live.get(&id) {
            return Err(DialogueError::Exists { dialogue: id, standing: existing.standing(&self.rules) });
        }
        let dialogue = self.opened(id, peer, self.role_named(peer_role), now_ms);
        self.save(&dialogue)?;
        live.insert(id, dialogue.clone());
        Ok(dialogue)
    }

    /// Opens dialogue `id` with `peer` by sending its first message, `message` (a step out
    /// of the initial state), in one write. Nothing is recorded if the step is refused.
    pub fn open_with(
        &self,
        message: &str,
        id: u128,
        peer: Address,
        peer_role: &str,
        now_ms: u64,
        step: Step,
    ) -> Result<(), DialogueError> {
        let mut live = self.live.lock();
        if let Some(existing) = live.get(&id) {
            return Err(DialogueError::Exists { dialogue: id, standing: existing.standing(&self.rules) });
        }
        let mut opened = self.opened(id, peer, self.role_named(peer_role), now_ms);
        opened.deadline_ms = None;
        let me = self.me.clone();
        self.take_step(&mut opened, message, &me, now_ms, step)?;
        live.insert(id, opened);
        if self.taking_back {
            // Nothing stood before: undone, the dialogue is forgotten.
            self.before_sent.lock().insert(id, Before::Unopened);
        }
        Ok(())
    }

    /// A new dialogue `id` with `peer`, in the initial state.
    fn opened(&self, id: u128, peer: Address, peer_role: Name, now_ms: u64) -> Dialogue {
        let initial = self.rules.initial().clone();
        Dialogue {
            id,
            rules: self.rules.name().clone(),
            me: self.me.clone(),
            peer,
            peer_role,
            deadline_ms: self.rules.deadline(&initial).map(|d| now_ms.saturating_add(d.as_millis() as u64)),
            state: initial,
            opened_ms: now_ms,
            // Most protocols' dialogues take a few steps: room for them at once, instead of
            // growing the list at the first, second and third.
            said: Vec::with_capacity(4),
            data: None,
        }
    }

    /// Checks that this agent may send an `M` in dialogue `id` now, and records it. Returns
    /// what was kept with the state it left ([`Dialogue::data`]).
    pub fn outgoing<M: Message>(&self, id: u128, now_ms: u64) -> Result<Option<Data>, DialogueError> {
        self.outgoing_with(M::NAME, id, now_ms, Step::default())
    }

    /// [`outgoing`](Self::outgoing) for a step declared with
    /// [`named_step`](super::RulesBuilder::named_step).
    pub fn outgoing_named(&self, message: &str, id: u128, now_ms: u64) -> Result<Option<Data>, DialogueError> {
        self.outgoing_with(message, id, now_ms, Step::default())
    }

    /// [`outgoing_named`](Self::outgoing_named), setting what `step` gives in the same
    /// write.
    pub fn outgoing_with(
        &self,
        message: &str,
        id: u128,
        now_ms: u64,
        step: Step,
    ) -> Result<Option<Data>, DialogueError> {
        let mut live = self.live.lock();
        let Some(dialogue) = live.get_mut(&id) else {
            return Err(DialogueError::Unknown { dialogue: id, message: message.into() });
        };
        let me = self.me.clone();
        let before = Before::Stood {
            said: dialogue.said.len(),
            state: dialogue.state.clone(),
            deadline_ms: dialogue.deadline_ms,
            data: dialogue.data.clone(),
        };
        let kept = self.take_step(dialogue, message, &me, now_ms, step)?;
        if self.taking_back {
            self.before_sent.lock().insert(id, before);
        }
        Ok(kept)
    }

    /// Takes back this agent's step `message` in dialogue `id`, recorded by
    /// [`outgoing`](Self::outgoing) or [`open_with`](Self::open_with), when it was not sent
    /// after all (the target unknown, its mailbox full): the dialogue stands where it stood
    /// before, recorded, and the same step may be sent again. A dialogue the step opened is
    /// forgotten. Nothing changes, and `Ok(false)` is returned, unless that step is still
    /// the dialogue's last and nothing else changed the dialogue since (it expired, its data
    /// was taken, its deadline set), or these dialogues are not
    /// [`taking_back`](Self::taking_back). Call it only when the message surely did not
    /// leave: a message that may have been delivered is a step the peer may act on.
    pub fn unsay(&self, message: &str, id: u128) -> Result<bool, DialogueError> {
        let mut live = self.live.lock();
        let Some(dialogue) = live.get_mut(&id) else { return Ok(false) };
        let mut before_sent = self.before_sent.lock();
        let steps_before = match before_sent.get(&id) {
            None => return Ok(false),
            Some(Before::Unopened) => 0,
            Some(Before::Stood { said, .. }) => *said,
        };
        let last = dialogue.said.last();
        let still_last = dialogue.said.len() == steps_before + 1
            && last.is_some_and(|said| *said.message == *message && *said.sender == *self.me);
        if !still_last {
            return Ok(false);
        }
        // Taken out before the dialogue is saved (which forgets it anyway).
        let Some(before) = before_sent.remove(&id) else { return Ok(false) };
        drop(before_sent);
        match before {
            Before::Unopened => {
                self.storage.remove(&key(self.rules.name(), id)).map_err(|e| storage_error(id, e))?;
                live.remove(&id);
            }
            Before::Stood { state, deadline_ms, data, .. } => {
                let mut restored = dialogue.clone();
                restored.said.pop();
                restored.state = state;
                restored.deadline_ms = deadline_ms;
                restored.data = data;
                self.save(&restored)?;
                *dialogue = restored;
            }
        }
        Ok(true)
    }

    /// Checks that `from` may send an `M` in dialogue `id` now, and records it. A message
    /// that may open a dialogue (a step out of the initial state sent by a role other than
    /// this agent's) opens one with its sender as the peer. Returns what was kept with the
    /// state it left ([`Dialogue::data`]).
    pub fn incoming<M: Message>(&self, id: u128, from: Address, now_ms: u64) -> Result<Option<Data>, DialogueError> {
        self.incoming_with(M::NAME, id, from, now_ms, Step::default())
    }

    /// [`incoming`](Self::incoming) for a step declared with
    /// [`named_step`](super::RulesBuilder::named_step).
    pub fn incoming_named(
        &self,
        message: &str,
        id: u128,
        from: Address,
        now_ms: u64,
    ) -> Result<Option<Data>, DialogueError> {
        self.incoming_with(message, id, from, now_ms, Step::default())
    }

    /// [`incoming_named`](Self::incoming_named), setting what `step` gives in the same
    /// write.
    pub fn incoming_with(
        &self,
        message: &str,
        id: u128,
        from: Address,
        now_ms: u64,
        step: Step,
    ) -> Result<Option<Data>, DialogueError> {
        let mut live = self.live.lock();
        match live.get_mut(&id) {
            Some(dialogue) if dialogue.peer != from => Err(DialogueError::NotAParty {
                dialogue: id,
                standing: Box::new(dialogue.standing(&self.rules)),
                from,
                message: message.into(),
            }),
            Some(dialogue) => {
                let sender = dialogue.peer_role.clone();
                self.take_step(dialogue, message, &sender, now_ms, step)
            }
            None => {
                let opening =
                    self.rules.steps_from(self.rules.initial()).find(|t| t.message == message && t.sender != self.me);
                let Some(opening) = opening else {
                    return Err(DialogueError::Unknown { dialogue: id, message: message.into() });
                };
                // Counted only when there could be that many: the common case costs nothing.
                if live.len() >= self.max_open_per_peer {
                    let open = live.values().filter(|d| d.peer == from && !d.is_closed(&self.rules)).count();
                    if open >= self.max_open_per_peer {
                        return Err(DialogueError::TooManyOpen { dialogue: id, from, open });
                    }
                }
                let sender = opening.sender.clone();
                let mut opened = self.opened(id, from, sender.clone(), now_ms);
                self.take_step(&mut opened, message, &sender, now_ms, step)?;
                live.insert(id, opened);
                Ok(None)
            }
        }
    }

    /// Sets the current state's deadline of dialogue `id` (a call for proposals carries its
    /// own).
    pub fn set_deadline(&self, id: u128, deadline_ms: u64) -> Result<(), DialogueError> {
        let mut live = self.live.lock();
        let Some(dialogue) = live.get_mut(&id) else {
            return Err(DialogueError::Unknown { dialogue: id, message: "(deadline)".into() });
        };
        let before = dialogue.deadline_ms.replace(deadline_ms);
        if let Err(e) = self.save(dialogue) {
            dialogue.deadline_ms = before;
            return Err(e);
        }
        Ok(())
    }

    /// Takes what is kept with dialogue `id`'s current state ([`Dialogue::data`]) out of it,
    /// without a step (a hold that ended), if it is `only` (or anything, when `only` is
    /// `None`). Returns what was taken.
    pub fn take_data(&self, id: u128, only: Option<&Data>) -> Result<Option<Data>, DialogueError> {
        let mut live = self.live.lock();
        let Some(dialogue) = live.get_mut(&id) else { return Ok(None) };
        if dialogue.data.is_none() || only.is_some_and(|only| dialogue.data.as_ref() != Some(only)) {
            return Ok(None);
        }
        let taken = dialogue.data.take();
        if let Err(e) = self.save(dialogue) {
            dialogue.data = taken;
            return Err(e);
        }
        Ok(taken)
    }

    /// Puts every open dialogue whose deadline has passed in the state [`EXPIRED`], and
    /// forgets every dialogue older than the rules' maximum age. Returns the dialogues that
    /// expired now.
    pub fn expire(&self, now_ms: u64) -> Result<Vec<Dialogue>, DialogueError> {
        self.expire_after(now_ms, Duration::ZERO)
    }

    /// [`expire`](Self::expire), sparing open dialogues for `grace` after their deadline:
    /// for protocols that still answer then (a late proposal is rejected as late).
    pub fn expire_after(&self, now_ms: u64, grace: Duration) -> Result<Vec<Dialogue>, DialogueError> {
        let grace = grace.as_millis() as u64;
        let mut live = self.live.lock();
        let max_age = self.rules.max_age().as_millis() as u64;
        let stale: Vec<u128> =
            live.values().filter(|d| now_ms >= d.opened_ms.saturating_add(max_age)).map(|d| d.id).collect();
        for id in stale {
            self.storage.remove(&key(self.rules.name(), id)).map_err(|e| storage_error(id, e))?;
            live.remove(&id);
            if self.taking_back {
                self.before_sent.lock().remove(&id);
            }
        }
        let mut expired = Vec::new();
        for dialogue in live.values_mut() {
            let overdue = dialogue.deadline_ms.is_some_and(|deadline| now_ms > deadline.saturating_add(grace));
            if overdue && !dialogue.is_closed(&self.rules) {
                expired.push(self.close_expired(dialogue)?);
            }
        }
        Ok(expired)
    }

    /// How many dialogues are open (neither terminal nor expired).
    pub fn open_count(&self) -> usize {
        self.live.lock().values().filter(|d| !d.is_closed(&self.rules)).count()
    }

    /// Closes the open dialogue `id` as [`EXPIRED`] now, whatever its deadline: for an agent
    /// that keeps a bounded number open and makes room for a new one. `None` if there is no
    /// such dialogue or it is closed already.
    pub fn expire_now(&self, id: u128) -> Result<Option<Dialogue>, DialogueError> {
        let mut live = self.live.lock();
        match live.get_mut(&id) {
            Some(dialogue) if !dialogue.is_closed(&self.rules) => self.close_expired(dialogue).map(Some),
            _ => Ok(None),
        }
    }

    /// Puts `dialogue` in the state [`EXPIRED`], recorded; unchanged if the write fails.
    fn close_expired(&self, dialogue: &mut Dialogue) -> Result<Dialogue, DialogueError> {
        let mut next = dialogue.clone();
        next.state = EXPIRED.into();
        next.deadline_ms = None;
        next.data = None;
        self.save(&next)?;
        *dialogue = next.clone();
        Ok(next)
    }

    /// Checks `message` from `sender` in `dialogue` and, if it may follow, records the step
    /// and applies it in place. Returns what was kept with the state it left. A refused or
    /// unrecorded step leaves `dialogue` as it was. What is recorded (the new state, the
    /// message and its sender) takes its names from the rules' step.
    fn take_step(
        &self,
        dialogue: &mut Dialogue,
        message: &str,
        sender: &str,
        now_ms: u64,
        step: Step,
    ) -> Result<Option<Data>, DialogueError> {
        let taken = self.check(dialogue, message, sender, now_ms)?;
        let to = &taken.to;
        let deadline_ms = match step
            .deadline_ms
            .or_else(|| self.rules.deadline(to).map(|d| now_ms.saturating_add(d.as_millis() as u64)))
        {
            Some(deadline_ms) => Some(deadline_ms),
            // Staying in a state does not restart its clock (bids keep an auction open
            // only until it closes), and a closed dialogue keeps the deadline it closed
            // under, so a message after it can still be told it came late.
            None if *to == dialogue.state || self.rules.is_terminal(to) => dialogue.deadline_ms,
            None => None,
        };
        let state = std::mem::replace(&mut dialogue.state, to.clone());
        let deadline_before = std::mem::replace(&mut dialogue.deadline_ms, deadline_ms);
        let data = std::mem::replace(&mut dialogue.data, step.data);
        dialogue.said.push(Said { message: taken.message.clone(), sender: taken.sender.clone(), at_ms: now_ms });
        if let Err(e) = self.save(dialogue) {
            dialogue.said.pop();
            dialogue.data = data;
            dialogue.deadline_ms = deadline_before;
            dialogue.state = state;
            return Err(e);
        }
        Ok(data)
    }

    /// The state `message` from `sender` leads `dialogue` to now, or why it may not follow.
    fn check<'r>(
        &'r self,
        dialogue: &Dialogue,
        message: &str,
        sender: &str,
        now_ms: u64,
    ) -> Result<&'r Transition, DialogueError> {
        let id = dialogue.id;
        if dialogue.is_closed(&self.rules) {
            return Err(DialogueError::Closed {
                dialogue: id,
                state: dialogue.state.to_string(),
                message: message.into(),
            });
        }
        let step = self.rules.step(&dialogue.state, message, sender);
        let overdue = dialogue.deadline_ms.filter(|deadline| now_ms > *deadline);
        if let (Some(deadline_ms), false) = (overdue, step.is_some_and(|s| s.after_deadline)) {
            return Err(DialogueError::Late {
                dialogue: id,
                standing: Box::new(Standing::Open { state: dialogue.state.to_string() }),
                message: message.into(),
                deadline_ms,
                now_ms,
                expected: self
                    .rules
                    .steps_from(&dialogue.state)
                    .filter(|t| t.after_deadline)
                    .map(|t| format!("{} from {}", t.message, t.sender))
                    .collect(),
            });
        }
        let Some(step) = step else {
            return Err(DialogueError::OutOfOrder {
                dialogue: id,
                state: dialogue.state.to_string(),
                message: message.into(),
                sender: sender.into(),
                expected: self
                    .rules
                    .steps_from(&dialogue.state)
                    .map(|t| format!("{} from {}", t.message, t.sender))
                    .collect(),
            });
        };
        Ok(step)
    }

    /// `role` as the rules name it, shared with every dialogue that names it.
    fn role_named(&self, role: &str) -> Name {
        self.rules.role(role).cloned().unwrap_or_else(|| role.into())
    }

    /// Writes `dialogue`'s record, encoded when the store commits it: a dialogue takes its
    /// steps milliseconds apart, and only its last record before a commit is ever encoded,
    /// on the store's thread instead of the agent's. The record encodes a snapshot (names
    /// and kept data are shared, so it costs the list of what was said).
    fn save(&self, dialogue: &Dialogue) -> Result<(), DialogueError> {
        if self.taking_back {
            // Changed since this agent's last step (by another step, an expiry, its data or
            // deadline): that step can no longer be taken back. (An outgoing step records
            // where it started from after this.)
            self.before_sent.lock().remove(&dialogue.id);
        }
        let snapshot = dialogue.clone();
        self.storage
            .set_json_later(&key(self.rules.name(), dialogue.id), move || record(&snapshot))
            .map_err(|e| storage_error(dialogue.id, e))
    }
}

/// The record of `dialogue` written at each step, as JSON: its id and rules are in the key,
/// so they are not written again; what was said is written as `[message, sender, at_ms]`
/// triples (the whole list is written at every step, and field names were most of it); the
/// peer as 64 hex digits (several times cheaper than its bech32 text); what is kept as its
/// text. Encoded by hand: a record is written at every step of every dialogue, and this is
/// several times faster than serde's walk over the same fields. [`Stored`] reads it back.
fn record(dialogue: &Dialogue) -> Vec<u8> {
    let data = dialogue.data.as_ref().map_or("", Data::as_json);
    // Room for all of it, so the record is never copied as it grows: the names, the
    // peer's 64 hex digits, up to 20 digits per number, and the punctuation around them.
    let names = dialogue.me.len() + dialogue.peer_role.len() + dialogue.state.len();
    let said: usize = dialogue.said.iter().map(|said| said.message.len() + said.sender.len() + 30).sum();
    let mut out = Vec::with_capacity(160 + names + said + data.len());
    out.extend_from_slice(b"{\"me\":");
    json_name(&mut out, &dialogue.me);
    out.extend_from_slice(b",\"peer\":\"");
    json_hex(&mut out, dialogue.peer.as_bytes());
    out.extend_from_slice(b"\",\"peer_role\":");
    json_name(&mut out, &dialogue.peer_role);
    out.extend_from_slice(b",\"state\":");
    json_name(&mut out, &dialogue.state);
    out.extend_from_slice(b",\"deadline_ms\":");
    match dialogue.deadline_ms {
        Some(deadline_ms) => json_u64(&mut out, deadline_ms),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"opened_ms\":");
    json_u64(&mut out, dialogue.opened_ms);
    out.extend_from_slice(b",\"said\":[");
    for (i, said) in dialogue.said.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"[" } else { b",[" });
        json_name(&mut out, &said.message);
        out.push(b',');
        json_name(&mut out, &said.sender);
        out.push(b',');
        json_u64(&mut out, said.at_ms);
        out.push(b']');
    }
    out.push(b']');
    if !data.is_empty() {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data.as_bytes());
    }
    out.push(b'}');
    out
}

/// `name` as a JSON string: copied whole when it has nothing to escape.
fn json_name(out: &mut Vec<u8>, name: &Name) {
    if !name.is_plain_json() {
        return json_str(out, name);
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
}

/// `text` as a JSON string: quoted, with `"`, `\\` and control characters escaped.
fn json_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut plain = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if byte >= 0x20 && byte != b'"' && byte != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[plain..i]);
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\r' => out.extend_from_slice(b"\\r"),
            control => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(control >> 4) as usize],
                HEX[(control & 15) as usize],
            ]),
        }
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn json_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn json_hex(out: &mut Vec<u8>, bytes: &[u8; 32]) {
    let mut hex = [0u8; 64];
    // 64 bytes of room for 32 bytes' digits: cannot fail.
    if hex::encode_to_slice(bytes, &mut hex).is_ok() {
        out.extend_from_slice(&hex);
    }
}

/// One entry of a stored record's `said`: a triple, or (written before lists were
/// triples) a [`Said`] with named fields.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredSaid {
    Triple(String, String, u64),
    Named(Said),
}

impl From<StoredSaid> for Said {
    fn from(stored: StoredSaid) -> Said {
        match stored {
            StoredSaid::Triple(message, sender, at_ms) => {
                Said { message: message.into(), sender: sender.into(), at_ms }
            }
            StoredSaid::Named(said) => said,
        }
    }
}

/// A [`record`] as read back.
#[derive(Deserialize)]
struct Stored {
    me: Name,
    #[serde(with = "address_hex")]
    peer: Address,
    peer_role: Name,
    state: Name,
    deadline_ms: Option<u64>,
    opened_ms: u64,
    said: Vec<StoredSaid>,
    #[serde(default)]
    data: Option<Data>,
}

impl Stored {
    fn into_dialogue(self, id: u128, rules: &Name) -> Dialogue {
        let Stored { me, peer, peer_role, state, deadline_ms, opened_ms, said, data } = self;
        let said = said.into_iter().map(Said::from).collect();
        Dialogue { id, rules: rules.clone(), me, peer, peer_role, state, deadline_ms, opened_ms, said, data }
    }
}

fn key_prefix(rules: &str) -> String {
    format!("agora.dialogue/{rules}/")
}

/// Where dialogue `id` under `rules` is stored: on the stack when it fits, as it does for
/// every rules name shorter than [`Key::INLINE`] less the rest (the key is only read, to
/// build the storage's own, and every step of every dialogue writes one).
fn key(rules: &str, id: u128) -> Key {
    const PREFIX: &[u8] = b"agora.dialogue/";
    let mut hex = [0u8; 32];
    for (i, byte) in id.to_be_bytes().into_iter().enumerate() {
        hex[2 * i] = HEX[(byte >> 4) as usize];
        hex[2 * i + 1] = HEX[(byte & 15) as usize];
    }
    let parts: [&[u8]; 4] = [PREFIX, rules.as_bytes(), b"/", &hex];
    let len: usize = parts.iter().map(|part| part.len()).sum();
    if len > Key::INLINE {
        return Key::Heap(parts.concat());
    }
    let mut inline = [0u8; Key::INLINE];
    let mut at = 0;
    for part in parts {
        inline[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    Key::Inline(inline, len)
}

/// A dialogue's storage key ([`key`]): UTF-8 by construction (ASCII and the rules' name).
enum Key {
    Inline([u8; Key::INLINE], usize),
    Heap(Vec<u8>),
}

impl Key {
    const INLINE: usize = 112;
}

impl std::ops::Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        let bytes = match self {
            Key::Inline(bytes, len) => &bytes[..*len],
            Key::Heap(bytes) => bytes,
        };
        // Whole UTF-8 pieces joined (ASCII and a &str): the fallback is unreachable.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

fn storage_error(dialogue: u128, e: impl std::error::Error) -> DialogueError {
    DialogueError::Storage { dialogue, reason: e.to_string() }
}

/// An address as 64 hex digits in stored dialogues: several times cheaper to write than
/// its bech32 text, and a dialogue is written at every step.
mod address_hex {
    use agent_core::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(address: &Address, s: S) -> Result<S::Ok, S::Error> {
        // On the stack: `hex::encode` builds its string a char at a time.
        let mut text = [0u8; 64];
        hex::encode_to_slice(address.as_bytes(), &mut text).map_err(serde::ser::Error::custom)?;
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.as_ref(), &mut bytes).map_err(serde::de::Error::custom)?;
        Ok(Address::from_bytes(bytes))
    }
}

/// A dialogue id as 32 hex digits (JSON numbers lose precision past 2^53 in many readers).
mod id_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{id:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        u128::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written record reads back as the dialogue it was written from, whatever
    /// the text in it (quotes, backslashes, control characters, any script).
    #[test]
    fn a_record_reads_back_as_its_dialogue() {
        let tricky = ["plain", "", "say \"hi\"", "back\\slash", "line\nbreak\ttab\r", "\u{1}\u{1f}", "é ✓ 🦀"];
        for (i, text) in tricky.iter().enumerate() {
            let dialogue = Dialogue {
                id: u128::MAX - i as u128,
                rules: "haggle".into(),
                me: format!("me {text}").into(),
                peer: Address::from_bytes([i as u8 * 37; 32]),
                peer_role: (*text).into(),
                state: format!("{text} state").into(),
                deadline_ms: (i % 2 == 0).then_some(u64::MAX - i as u64),
                opened_ms: i as u64,
                said: (0..i)
                    .map(|n| Said {
                        message: format!("{text}{n}").into(),
                        sender: (*text).into(),
                        at_ms: n as u64 * 10,
                    })
                    .collect(),
                data: (i % 3 != 0).then(|| Data::from(serde_json::json!({ "text": text, "n": [i, 0] }))),
            };
            let written = record(&dialogue);
            let stored: Stored = serde_json::from_slice(&written)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&written)));
            assert_eq!(stored.into_dialogue(dialogue.id, &Name::from("haggle")), dialogue, "{text:?}");
        }
    }

    #[test]
    fn a_key_names_the_rules_and_the_id_in_32_hex_digits() {
        assert_eq!(&*key("contract-net", 0xab), format!("agora.dialogue/contract-net/{:032x}", 0xab));
        assert_eq!(&*key("x", u128::MAX), format!("agora.dialogue/x/{}", "f".repeat(32)));
        // Too long for the stack: the same key, on the heap.
        let long = "r".repeat(200);
        assert_eq!(&*key(&long, 7), format!("agora.dialogue/{long}/{:032x}", 7));
    }
}
