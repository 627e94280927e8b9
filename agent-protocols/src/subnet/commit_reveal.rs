//! Commit-reveal: a validator first publishes only a hash of its weights, and the weights
//! are published only some epochs later, so a copier can only replay weights that are out
//! of date.
//!
//! # Timing
//!
//! Epochs are numbered from 0; epoch `e` is open from the close of `e − 1` to its own close.
//! `d` is the subnet's reveal delay
//! ([`owner::Config::with_reveal_delay`](super::owner::Config::with_reveal_delay), default
//! 3, at least 1).
//!
//! 1. During epoch `e` a validator scores the miners and sends a [`Commit`](super::Commit)
//!    for epoch `e` carrying [`commitment`]`(subnet, e, validator, weights, salt)`. One
//!    commit per validator per epoch; a commit naming any other epoch is refused.
//! 2. From epoch `e + 1` until the close of epoch `e + d` it sends the
//!    [`Reveal`](super::Reveal): the weights and salt. The owner recomputes the hash and
//!    refuses a mismatch. A reveal during `e` itself is refused as too early; after the
//!    close of `e + d`, as too late. The owner keeps the revealed weights to itself.
//! 3. When epoch `e + d` closes, the owner runs Yuma Consensus on the weights revealed for
//!    `e`, pays epoch `e`'s emission, and publishes those weights (answers to
//!    [`WeightsQuery`](super::WeightsQuery)). The weights count for the epoch they were
//!    committed in; the payout comes `d` epochs later.
//!
//! The first `d` closes have nothing to score and pay nothing.
//!
//! A copier can only replay published weights: in epoch `t` the freshest are those committed
//! in `t − d − 1`. When miners' quality moves, stale weights fall outside consensus, are
//! clipped, and earn the copier fewer bonds and dividends than an honest validator; and a
//! copier starts building bonds `d + 1` epochs after an honest validator that joined with
//! it. When quality does not move, correct weights copied late are still correct: no delay
//! makes copying them unprofitable (`docs/subnet.md`, "Known limits").
//!
//! With commit-reveal off ([`owner::Config::with_commit_reveal`](super::owner::Config::with_commit_reveal)),
//! validators send their `Reveal` for the open epoch directly, it is published at once, and
//! each close scores the epoch it closes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use agent_core::Address;

use super::wire::{SubnetId, Uid, UidWeight};

/// The random 32 bytes hashed with the weights, so a commitment cannot be opened by
/// guessing likely weight vectors.
pub type Salt = [u8; 32];

/// A fresh random salt.
pub fn new_salt() -> Salt {
    rand::random()
}

/// The commitment to `weights` for `epoch`:
///
/// ```text
/// sha256("agora.subnet.weights.v1" ‖ subnet (u16 BE) ‖ weights ‖ salt (32 bytes)
///        ‖ validator address (32 bytes) ‖ epoch (u64 BE))
/// ```
///
/// where `weights` is their count as u32 BE, then each `uid` and `weight` as u16 BE, in the
/// order given. The validator and epoch are in the hash so a commitment cannot be replayed
/// by another validator or in another epoch.
pub fn commitment(subnet: SubnetId, epoch: u64, validator: &Address, weights: &[UidWeight], salt: &Salt) -> [u8; 32] {
    let mut bytes = b"agora.subnet.weights.v1".to_vec();
    bytes.extend_from_slice(&subnet.to_be_bytes());
    encode_weights(&mut bytes, weights);
    bytes.extend_from_slice(salt);
    bytes.extend_from_slice(validator.as_bytes());
    bytes.extend_from_slice(&epoch.to_be_bytes());
    Sha256::digest(&bytes).into()
}

/// Appends the count (u32 BE) then each `(uid, weight)` (u16 BE each).
pub(crate) fn encode_weights(out: &mut Vec<u8>, weights: &[UidWeight]) {
    // A weight vector longer than u32::MAX cannot be built in memory on any machine this
    // runs on; saturating keeps the encoding total anyway.
    out.extend_from_slice(&u32::try_from(weights.len()).unwrap_or(u32::MAX).to_be_bytes());
    for w in weights {
        out.extend_from_slice(&w.uid.to_be_bytes());
        out.extend_from_slice(&w.weight.to_be_bytes());
    }
}

/// Turns scores into a weight vector: each score over the largest, times 65 535, rounded;
/// zero, negative and non-finite scores are left out. Empty if no score is positive.
///
/// ```
/// use agent_protocols::subnet::commit_reveal::weights_from_scores;
/// use agent_protocols::subnet::UidWeight;
///
/// let w = weights_from_scores(&[(2, 0.9), (3, 0.45), (4, 0.0), (5, f64::NAN)]);
/// assert_eq!(w, [UidWeight { uid: 2, weight: 65535 }, UidWeight { uid: 3, weight: 32768 }]);
/// ```
pub fn weights_from_scores(scores: &[(Uid, f64)]) -> Vec<UidWeight> {
    let max = scores.iter().map(|s| s.1).filter(|s| s.is_finite()).fold(0.0, f64::max);
    if max <= 0.0 {
        return Vec::new();
    }
    scores
        .iter()
        .filter(|(_, s)| s.is_finite() && *s > 0.0)
        // In [0, 65535] after the division, so the cast is exact after rounding.
        .map(|&(uid, s)| UidWeight { uid, weight: ((s / max) * f64::from(u16::MAX)).round() as u16 })
        .filter(|w| w.weight > 0)
        .collect()
}

/// Why a weight vector is unusable.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema, thiserror::Error,
)]
pub enum WeightsProblem {
    /// No weight is positive.
    #[error("no weight is positive")]
    AllZero,
    /// A uid appears twice.
    #[error("uid {uid} appears twice")]
    DuplicateUid {
        /// The uid.
        uid: Uid,
    },
    /// A uid the subnet does not have.
    #[error("uid {uid} is not registered ({uids} uids)")]
    UnknownUid {
        /// The uid.
        uid: Uid,
        /// How many uids the subnet has.
        uids: usize,
    },
}

/// Checks `weights` against a subnet of `uids` uids (`None`: skip the range check, as a
/// validator does before committing).
pub fn check_weights(weights: &[UidWeight], uids: Option<usize>) -> Result<(), WeightsProblem> {
    let mut seen = std::collections::HashSet::with_capacity(weights.len());
    for w in weights {
        if let Some(uids) = uids {
            if usize::from(w.uid) >= uids {
                return Err(WeightsProblem::UnknownUid { uid: w.uid, uids });
            }
        }
        if !seen.insert(w.uid) {
            return Err(WeightsProblem::DuplicateUid { uid: w.uid });
        }
    }
    if weights.iter().all(|w| w.weight == 0) {
        return Err(WeightsProblem::AllZero);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::Identity;

    fn w(uid: Uid, weight: u16) -> UidWeight {
        UidWeight { uid, weight }
    }

    #[test]
    fn the_commitment_binds_weights_salt_validator_epoch_and_subnet() {
        let a = Identity::from_seed("a").address();
        let b = Identity::from_seed("b").address();
        let weights = [w(1, 10), w(2, 20)];
        let salt = [7; 32];
        let base = commitment(1, 5, &a, &weights, &salt);
        assert_eq!(base, commitment(1, 5, &a, &weights, &salt), "deterministic");
        assert_ne!(base, commitment(1, 5, &a, &[w(1, 10), w(2, 21)], &salt));
        assert_ne!(base, commitment(1, 5, &a, &[w(2, 20), w(1, 10)], &salt), "order counts");
        assert_ne!(base, commitment(1, 5, &a, &weights, &[8; 32]));
        assert_ne!(base, commitment(1, 5, &b, &weights, &salt));
        assert_ne!(base, commitment(1, 6, &a, &weights, &salt));
        assert_ne!(base, commitment(2, 5, &a, &weights, &salt));
    }

    #[test]
    fn the_commitment_is_sha256_of_the_documented_bytes() {
        let v = Address::from_bytes([0xaa; 32]);
        let mut bytes = b"agora.subnet.weights.v1".to_vec();
        bytes.extend_from_slice(&[0x00, 0x03]); // subnet 3
        bytes.extend_from_slice(&[0, 0, 0, 1]); // one weight
        bytes.extend_from_slice(&[0x00, 0x02, 0xff, 0xff]); // uid 2, weight 65535
        bytes.extend_from_slice(&[0x11; 32]); // salt
        bytes.extend_from_slice(&[0xaa; 32]); // validator
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]); // epoch 9
        let expected: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(commitment(3, 9, &v, &[w(2, u16::MAX)], &[0x11; 32]), expected);
    }

    #[test]
    fn scores_become_weights_relative_to_the_best() {
        assert_eq!(weights_from_scores(&[(0, 2.0), (1, 1.0)]), [w(0, 65535), w(1, 32768)]);
        assert_eq!(weights_from_scores(&[(0, 0.0), (1, -1.0), (2, f64::INFINITY)]), []);
        assert_eq!(weights_from_scores(&[]), []);
        // A score so small it rounds to zero is dropped, not sent as a zero weight.
        assert_eq!(weights_from_scores(&[(0, 1.0), (1, 1e-9)]), [w(0, 65535)]);
    }

    #[test]
    fn weight_vectors_are_checked() {
        assert_eq!(check_weights(&[w(0, 1), w(1, 0)], Some(2)), Ok(()));
        assert_eq!(check_weights(&[w(0, 0)], Some(2)), Err(WeightsProblem::AllZero));
        assert_eq!(check_weights(&[], None), Err(WeightsProblem::AllZero));
        assert_eq!(check_weights(&[w(1, 1), w(1, 2)], None), Err(WeightsProblem::DuplicateUid { uid: 1 }));
        assert_eq!(check_weights(&[w(2, 1)], Some(2)), Err(WeightsProblem::UnknownUid { uid: 2, uids: 2 }));
        assert_eq!(check_weights(&[w(2, 1)], None), Ok(()));
    }
}
