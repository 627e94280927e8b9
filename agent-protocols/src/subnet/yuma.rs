//! Yuma Consensus, the original (non-Yuma3, liquid alpha off) epoch of Bittensor's subtensor,
//! as a pure function.
//!
//! A subnet has `n` uids. Every uid may act as a miner (it is scored) and as a validator (it
//! scores others, if its stake earns it a permit). Each epoch, [`epoch`] takes the uids'
//! stakes, the weights each validator set on each uid, and the bonds left by the previous
//! epoch, and returns:
//!
//! - the consensus weight per uid: the highest weight that validators holding at least
//!   `kappa` of the active stake agree to give it;
//! - the clipped weights (no validator may give more than consensus), ranks, trust and the
//!   normalised incentive that pays miners;
//! - validator trust (how much of its weight survived clipping);
//! - the new bonds, an exponential moving average of clipped weight times stake, and the
//!   dividends they earn, which pay validators;
//! - the split of the epoch's tokens between the subnet owner, miners and validators, in
//!   whole tokens that add up exactly to the emission.
//!
//! The arithmetic is `f64`; subtensor computes the same formulas in 32.32 fixed point, so
//! its results differ from these by its rounding (about 1e-9). `docs/subnet.md` has every
//! formula, the subtensor source each follows, and what was left out.
//!
//! ```
//! use agent_protocols::subnet::yuma::{epoch, Inputs, Params};
//!
//! // uids 0 and 1 validate (60 and 40 tokens of stake); uids 2 and 3 mine.
//! let stakes = [60, 40, 0, 0];
//! let weights = vec![
//!     vec![0.0, 0.0, 0.75, 0.25], // uid 0 rates miner 2 higher
//!     vec![0.0, 0.0, 0.25, 0.75], // uid 1 rates miner 3 higher
//!     vec![],                     // miners set no weights
//!     vec![],
//! ];
//! let out = epoch(&Inputs { stakes: &stakes, weights: &weights, bonds: &[], emission: 1_000_000 }, &Params::default())?;
//!
//! // 60% of the stake backs 0.75 for miner 2; for miner 3 only 0.25 has majority backing,
//! // so uid 1's 0.75 is clipped to 0.25.
//! assert!((out.consensus[2] - 0.75).abs() < 1e-12);
//! assert!((out.consensus[3] - 0.25).abs() < 1e-12);
//! assert!((out.incentive[2] - 0.6875).abs() < 1e-12);
//! assert!((out.dividends[0] - 0.75).abs() < 1e-12);
//!
//! // 18% to the owner, the rest half to miners, half to validators, to the last token.
//! assert_eq!(out.emissions.owner, 179_995);
//! assert_eq!(out.emissions.total(), 1_000_000);
//! # Ok::<(), agent_protocols::subnet::yuma::YumaError>(())
//! ```

use thiserror::Error;

/// `u16::MAX` as a float: subtensor stores fractions such as kappa as `x / 65535`.
const U16_DENOMINATOR: f64 = 65535.0;
/// Denominator of the per-million parameters ([`Params::bonds_moving_average`], [`Params::miner_share`]).
const PER_MILLION: u64 = 1_000_000;

/// The parameters of one epoch, in subtensor's own encodings so chain hyperparameters can be
/// copied over unchanged. [`Params::default`] is subtensor's default for a new subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Consensus quantile, as `kappa / 65535`: a uid's consensus weight is the highest
    /// weight that validators holding at least this share of active stake give it or more.
    /// Default 32 767 (just under one half).
    pub kappa: u16,
    /// Weight of the old bonds in the bonds moving average, in millionths; the new epoch's
    /// bonds enter with weight `1 - bonds_moving_average / 1_000_000`. Default 900 000
    /// (old 0.9, new 0.1). At most 1 000 000.
    pub bonds_moving_average: u64,
    /// How far bonds follow clipped rather than raw weights, as `bonds_penalty / 65535`:
    /// 0 builds bonds from the raw weights, 65 535 from the clipped ones. Default 65 535.
    pub bonds_penalty: u16,
    /// How many uids, by stake, may validate (the top-k with non-zero stake). Default 128.
    pub max_allowed_validators: u16,
    /// Stakes below this count as zero. Default 0.
    pub min_stake: u64,
    /// The subnet owner's cut of each emission, as `owner_cut / 65535`. Default 11 796 (18%).
    pub owner_cut: u16,
    /// The miners' share of what is left after the owner's cut, in millionths; validators get
    /// the rest. Default 500 000 (half). At most 1 000 000.
    pub miner_share: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            kappa: 32_767,
            bonds_moving_average: 900_000,
            bonds_penalty: u16::MAX,
            max_allowed_validators: 128,
            min_stake: 0,
            owner_cut: 11_796,
            miner_share: 500_000,
        }
    }
}

impl Params {
    /// Kappa as a fraction in `[0, 1]`.
    pub fn kappa_fraction(&self) -> f64 {
        f64::from(self.kappa) / U16_DENOMINATOR
    }

    /// The weight of the new epoch's bonds in the moving average,
    /// `1 - bonds_moving_average / 1_000_000` (0.1 by default).
    pub fn bonds_alpha(&self) -> f64 {
        // As subtensor: scale the moving average down first, then subtract from one.
        1.0 - self.bonds_moving_average as f64 / PER_MILLION as f64
    }

    /// The bonds penalty as a fraction in `[0, 1]`.
    pub fn bonds_penalty_fraction(&self) -> f64 {
        f64::from(self.bonds_penalty) / U16_DENOMINATOR
    }
}

/// One epoch's inputs, indexed by uid.
///
/// The matrices are square, uid by uid, as in subtensor: row `i` is what uid `i` says as a
/// validator (or holds, for bonds), column `j` is about uid `j` as a miner. An empty slice
/// stands for a matrix of zeros, and an empty row for a row of zeros (a uid that set no
/// weights or holds no bonds).
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Each uid's stake, in tokens.
    pub stakes: &'a [u64],
    /// `weights[i][j]`: the weight validator `i` sets on uid `j`. Any finite non-negative
    /// scale; each row is normalised to sum to 1. A validator's weight on itself is ignored.
    pub weights: &'a [Vec<f64>],
    /// `bonds[i][j]`: validator `i`'s bond in uid `j` after the previous epoch, any finite
    /// non-negative scale (each column is normalised); pass [`Outcome::bonds`] back in.
    pub bonds: &'a [Vec<f64>],
    /// Tokens to distribute this epoch.
    pub emission: u64,
}

/// Why [`epoch`] refused its inputs.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum YumaError {
    /// There are no uids.
    #[error("the subnet has no uids (the stake vector is empty)")]
    Empty,
    /// A matrix has neither zero rows nor one per uid.
    #[error("{matrix} has {rows} rows; expected {uids} (one per uid) or none")]
    RowCount {
        /// `"weights"` or `"bonds"`.
        matrix: &'static str,
        /// Rows given.
        rows: usize,
        /// Number of uids.
        uids: usize,
    },
    /// A matrix row has neither zero entries nor one per uid.
    #[error("{matrix} row {row} has {len} entries; expected {uids} (one per uid) or none")]
    RowLength {
        /// `"weights"` or `"bonds"`.
        matrix: &'static str,
        /// The row (uid).
        row: usize,
        /// Entries given.
        len: usize,
        /// Number of uids.
        uids: usize,
    },
    /// A matrix entry is negative, infinite or NaN.
    #[error("{matrix}[{row}][{col}] is {value}; entries must be finite and non-negative")]
    InvalidEntry {
        /// `"weights"` or `"bonds"`.
        matrix: &'static str,
        /// Row (uid).
        row: usize,
        /// Column (uid).
        col: usize,
        /// The entry.
        value: f64,
    },
    /// A per-million parameter is above one million.
    #[error("parameter {name} is {value}; at most 1000000 (it is in millionths)")]
    ParamOutOfRange {
        /// The parameter's field name.
        name: &'static str,
        /// Its value.
        value: u64,
    },
}

/// Whole-token payouts of one epoch. `owner + Σ miners + Σ validators + unallocated` is
/// exactly the emission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emissions {
    /// The subnet owner's cut.
    pub owner: u64,
    /// Per uid, paid for its incentive (as a miner).
    pub miners: Vec<u64>,
    /// Per uid, paid for its dividends (as a validator).
    pub validators: Vec<u64>,
    /// Tokens nobody could be paid: non-zero only when no stake passes the
    /// [`Params::min_stake`] filter, so there is neither incentive nor anyone to fall back on.
    pub unallocated: u64,
}

impl Emissions {
    /// Each uid's miner plus validator payout.
    pub fn per_uid(&self) -> Vec<u64> {
        self.miners.iter().zip(&self.validators).map(|(m, v)| m.saturating_add(*v)).collect()
    }

    /// Everything paid or left unallocated; equals the epoch's emission.
    pub fn total(&self) -> u128 {
        let uids: u128 = self.per_uid().iter().map(|&x| u128::from(x)).sum();
        u128::from(self.owner) + uids + u128::from(self.unallocated)
    }
}

/// Everything one epoch computes, indexed by uid. Fractions are `f64` in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Stake after the [`Params::min_stake`] filter, normalised to sum to 1 (all 0 if none).
    pub stake: Vec<f64>,
    /// Whether the uid may validate this epoch: among the top [`Params::max_allowed_validators`]
    /// by stake, with non-zero stake.
    pub validator_permits: Vec<bool>,
    /// Stake of permitted validators, normalised to sum to 1 (all 0 if none).
    pub active_stake: Vec<f64>,
    /// The weights that count: rows of validators without a permit and each validator's
    /// weight on itself set to 0, then each row normalised to sum to 1 (or left all 0).
    pub weights: Vec<Vec<f64>>,
    /// Per uid, the `kappa`-quantile of the weights it received, weighted by active stake.
    pub consensus: Vec<f64>,
    /// `min(weights[i][j], consensus[j])`.
    pub clipped_weights: Vec<Vec<f64>>,
    /// Per uid, `Σ_i clipped_weights[i][j] · active_stake[i]` (not normalised).
    pub ranks: Vec<f64>,
    /// Per uid, its rank over the rank it would have had unclipped (0 if that is 0).
    pub trust: Vec<f64>,
    /// Ranks normalised to sum to 1 (all 0 if no rank is positive): the miners' share.
    pub incentive: Vec<f64>,
    /// Per validator, the sum of its clipped weights: how much of its weight survived.
    pub validator_trust: Vec<f64>,
    /// Per validator, `Σ_j bonds[i][j] · incentive[j]`, normalised to sum to 1 (or all 0).
    pub dividends: Vec<f64>,
    /// The new bonds to pass to the next epoch: the moving average, each column normalised to
    /// sum to 1, with the rows of uids without a validator permit cleared.
    pub bonds: Vec<Vec<f64>>,
    /// The token split.
    pub emissions: Emissions,
}

/// Runs one epoch of Yuma Consensus. Pure and deterministic: same inputs, same outcome.
///
/// # Errors
///
/// [`YumaError`] if there are no uids, a matrix has the wrong shape or an entry that is
/// negative or not finite, or a per-million parameter is above one million.
pub fn epoch(inputs: &Inputs<'_>, params: &Params) -> Result<Outcome, YumaError> {
    let n = validate(inputs, params)?;

    // Stake: filter by the threshold, normalise.
    let filtered: Vec<u64> = inputs.stakes.iter().map(|&s| if s < params.min_stake { 0 } else { s }).collect();
    let stake = normalized_stake(&filtered);

    // Validator permits and active stake.
    let validator_permits = top_k_nonzero(&filtered, usize::from(params.max_allowed_validators));
    let mut active_stake: Vec<f64> =
        stake.iter().zip(&validator_permits).map(|(&s, &p)| if p { s } else { 0.0 }).collect();
    normalize(&mut active_stake);

    // Weights: mask unpermitted rows and the diagonal, normalise rows.
    let mut weights = dense(inputs.weights, n);
    for (i, row) in weights.iter_mut().enumerate() {
        if validator_permits[i] {
            row[i] = 0.0;
        } else {
            row.fill(0.0);
        }
        normalize(row);
    }

    // Consensus and clipping.
    let consensus = weighted_median_cols(&active_stake, &weights, params.kappa_fraction());
    let clipped_weights: Vec<Vec<f64>> =
        weights.iter().map(|row| row.iter().zip(&consensus).map(|(&w, &c)| w.min(c)).collect()).collect();
    let validator_trust: Vec<f64> = clipped_weights.iter().map(|row| row.iter().sum()).collect();

    // Ranks, trust, incentive.
    let preranks = stake_weighted_col_sums(&weights, &active_stake);
    let ranks = stake_weighted_col_sums(&clipped_weights, &active_stake);
    let trust: Vec<f64> = ranks.iter().zip(&preranks).map(|(&r, &p)| if p > 0.0 { r / p } else { 0.0 }).collect();
    let mut incentive = ranks.clone();
    normalize(&mut incentive);

    // Bonds and dividends.
    let weights_for_bonds = interpolate(&weights, &clipped_weights, params.bonds_penalty_fraction());
    let mut old_bonds = dense(inputs.bonds, n);
    col_normalize(&mut old_bonds);
    let mut delta: Vec<Vec<f64>> =
        weights_for_bonds.iter().zip(&active_stake).map(|(row, &s)| row.iter().map(|&w| w * s).collect()).collect();
    col_normalize(&mut delta);
    let alpha = params.bonds_alpha();
    let mut bonds: Vec<Vec<f64>> = delta
        .iter()
        .zip(&old_bonds)
        .map(|(d_row, b_row)| d_row.iter().zip(b_row).map(|(&d, &b)| alpha * d + (1.0 - alpha) * b).collect())
        .collect();
    col_normalize(&mut bonds);
    let mut dividends: Vec<f64> =
        bonds.iter().map(|row| row.iter().zip(&incentive).map(|(&b, &i)| b * i).sum()).collect();
    normalize(&mut dividends);
    for (row, &permit) in bonds.iter_mut().zip(&validator_permits) {
        if !permit {
            row.fill(0.0);
        }
    }

    let emissions = split_emission(inputs.emission, params, &incentive, &dividends, &active_stake, &stake);

    Ok(Outcome {
        stake,
        validator_permits,
        active_stake,
        weights,
        consensus,
        clipped_weights,
        ranks,
        trust,
        incentive,
        validator_trust,
        dividends,
        bonds,
        emissions,
    })
}

/// Checks shapes, entries and parameters; returns the number of uids.
fn validate(inputs: &Inputs<'_>, params: &Params) -> Result<usize, YumaError> {
    let n = inputs.stakes.len();
    if n == 0 {
        return Err(YumaError::Empty);
    }
    check_matrix("weights", inputs.weights, n)?;
    check_matrix("bonds", inputs.bonds, n)?;
    if params.bonds_moving_average > PER_MILLION {
        return Err(YumaError::ParamOutOfRange { name: "bonds_moving_average", value: params.bonds_moving_average });
    }
    if u64::from(params.miner_share) > PER_MILLION {
        return Err(YumaError::ParamOutOfRange { name: "miner_share", value: u64::from(params.miner_share) });
    }
    Ok(n)
}

fn check_matrix(matrix: &'static str, rows: &[Vec<f64>], uids: usize) -> Result<(), YumaError> {
    if !rows.is_empty() && rows.len() != uids {
        return Err(YumaError::RowCount { matrix, rows: rows.len(), uids });
    }
    for (row, entries) in rows.iter().enumerate() {
        if !entries.is_empty() && entries.len() != uids {
            return Err(YumaError::RowLength { matrix, row, len: entries.len(), uids });
        }
        if let Some((col, &value)) = entries.iter().enumerate().find(|(_, v)| !v.is_finite() || **v < 0.0) {
            return Err(YumaError::InvalidEntry { matrix, row, col, value });
        }
    }
    Ok(())
}

/// An `n × n` copy, with missing rows (or a missing matrix) as zeros.
fn dense(rows: &[Vec<f64>], n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| match rows.get(i) {
            Some(row) if !row.is_empty() => row.clone(),
            _ => vec![0.0; n],
        })
        .collect()
}

/// Stakes as fractions of their total (all zero if the total is zero).
fn normalized_stake(stakes: &[u64]) -> Vec<f64> {
    let total: u128 = stakes.iter().map(|&s| u128::from(s)).sum();
    if total == 0 {
        return vec![0.0; stakes.len()];
    }
    let total = total as f64;
    stakes.iter().map(|&s| s as f64 / total).collect()
}

/// Scales non-negative finite values to sum to 1; leaves an all-zero vector alone.
fn normalize(values: &mut [f64]) {
    let mut sum: f64 = values.iter().sum();
    if !sum.is_finite() {
        // Huge entries overflowed the sum: scale by the largest first.
        let max = values.iter().copied().fold(0.0, f64::max);
        values.iter_mut().for_each(|v| *v /= max);
        sum = values.iter().sum();
    }
    if sum > 0.0 {
        values.iter_mut().for_each(|v| *v /= sum);
    }
}

/// [`normalize`] applied to each column of a square matrix.
fn col_normalize(matrix: &mut [Vec<f64>]) {
    let n = matrix.len();
    for j in 0..n {
        let mut column: Vec<f64> = matrix.iter().map(|row| row[j]).collect();
        normalize(&mut column);
        for (row, v) in matrix.iter_mut().zip(column) {
            row[j] = v;
        }
    }
}

/// `true` for the `k` largest non-zero stakes; ties go to the higher uid (subtensor sorts uids
/// by stake, stably, and takes permits from the front).
fn top_k_nonzero(stakes: &[u64], k: usize) -> Vec<bool> {
    let n = stakes.len();
    let mut permits: Vec<bool> = stakes.iter().map(|&s| s > 0).collect();
    if n < k {
        return permits;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| stakes[i]);
    for &i in order.iter().take(n - k) {
        permits[i] = false;
    }
    permits
}

/// Per column, the stake-weighted `kappa` quantile over validators with positive stake: sort
/// their weights ascending and take the first whose cumulative stake exceeds `(1 - kappa)` of
/// the total, i.e. the highest weight `c` such that validators giving `c` or more hold at least
/// `kappa` of the stake. 0 for a column when no validator has stake.
fn weighted_median_cols(stake: &[f64], weights: &[Vec<f64>], kappa: f64) -> Vec<f64> {
    let n = weights.len();
    (0..n)
        .map(|j| {
            let mut points: Vec<(f64, f64)> =
                weights.iter().zip(stake).filter(|(_, &s)| s > 0.0).map(|(row, &s)| (row[j], s)).collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total: f64 = points.iter().map(|p| p.1).sum();
            let minority = total * (1.0 - kappa);
            let mut cumulative = 0.0;
            for &(w, s) in &points {
                cumulative += s;
                if cumulative > minority {
                    return w;
                }
            }
            points.last().map_or(0.0, |p| p.0)
        })
        .collect()
}

/// `out[j] = Σ_i matrix[i][j] · stake[i]`.
fn stake_weighted_col_sums(matrix: &[Vec<f64>], stake: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; matrix.len()];
    for (row, &s) in matrix.iter().zip(stake) {
        for (o, &w) in out.iter_mut().zip(row) {
            *o += w * s;
        }
    }
    out
}

/// `a + ratio · (b - a)`, exactly `a` at 0 and `b` at 1 (as subtensor's `interpolate`).
fn interpolate(a: &[Vec<f64>], b: &[Vec<f64>], ratio: f64) -> Vec<Vec<f64>> {
    if ratio == 0.0 {
        return a.to_vec();
    }
    if ratio == 1.0 {
        return b.to_vec();
    }
    a.iter().zip(b).map(|(ra, rb)| ra.iter().zip(rb).map(|(&x, &y)| x + ratio * (y - x)).collect()).collect()
}

/// The owner's cut, then miners by incentive and validators by dividends (or, with no
/// dividends, by active stake, then by stake), in whole tokens.
fn split_emission(
    emission: u64,
    params: &Params,
    incentive: &[f64],
    dividends: &[f64],
    active_stake: &[f64],
    stake: &[f64],
) -> Emissions {
    let n = incentive.len();
    // Both quotients are at most `emission`, so they fit back into u64.
    let owner = (u128::from(emission) * u128::from(params.owner_cut) / u128::from(u16::MAX)) as u64;
    let rest = emission - owner;
    let incentive_paid = incentive.iter().any(|&x| x > 0.0);
    let miner_pool = if incentive_paid {
        (u128::from(rest) * u128::from(params.miner_share) / u128::from(PER_MILLION)) as u64
    } else {
        0
    };
    let validator_pool = rest - miner_pool;

    let mut unallocated = 0;
    let miners = apportion(miner_pool, incentive).unwrap_or_else(|| {
        unallocated += miner_pool;
        vec![0; n]
    });
    let validators = apportion(validator_pool, dividends)
        .or_else(|| apportion(validator_pool, active_stake))
        .or_else(|| apportion(validator_pool, stake))
        .unwrap_or_else(|| {
            unallocated += validator_pool;
            vec![0; n]
        });
    Emissions { owner, miners, validators, unallocated }
}

/// Splits `pool` tokens in proportion to `shares` by largest remainder: each share is rounded
/// to a multiple of 2⁻⁵³ of the total, every uid gets the floor of its exact quota, and the
/// tokens left (fewer than the number of uids) go one each to the largest fractional parts,
/// lower uid first among equals. `None` if every share is zero.
fn apportion(pool: u64, shares: &[f64]) -> Option<Vec<u64>> {
    const SCALE: f64 = 9_007_199_254_740_992.0; // 2^53
    let total: f64 = shares.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    // share / total is in [0, 1], so each part is at most 2^53 and the cast is exact.
    let parts: Vec<u128> = shares.iter().map(|&s| ((s / total) * SCALE).round() as u128).collect();
    let denominator: u128 = parts.iter().sum();
    if denominator == 0 {
        return None;
    }
    let pool = u128::from(pool);
    let mut paid: Vec<u128> = parts.iter().map(|&p| pool * p / denominator).collect();
    let mut left = pool - paid.iter().sum::<u128>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| (pool * parts[b] % denominator).cmp(&(pool * parts[a] % denominator)).then(a.cmp(&b)));
    for &i in &order {
        if left == 0 {
            break;
        }
        paid[i] += 1;
        left -= 1;
    }
    // Each payout is at most `pool`, itself a u64.
    Some(paid.into_iter().map(|p| p as u64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_is_exact_and_breaks_ties_to_the_lower_uid() {
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0]), Some(vec![4, 3, 3]));
        assert_eq!(apportion(7, &[0.0, 0.5, 0.5]), Some(vec![0, 4, 3]));
        assert_eq!(apportion(100, &[0.25, 0.75]), Some(vec![25, 75]));
        assert_eq!(apportion(u64::MAX, &[1.0, 1.0]), Some(vec![u64::MAX / 2 + 1, u64::MAX / 2]));
        assert_eq!(apportion(5, &[0.0, 0.0]), None);
        assert_eq!(apportion(0, &[0.3, 0.7]), Some(vec![0, 0]));
    }

    #[test]
    fn permits_go_to_the_top_k_nonzero_stakes_higher_uid_on_ties() {
        assert_eq!(top_k_nonzero(&[5, 0, 7, 5], 2), [false, false, true, true]);
        assert_eq!(top_k_nonzero(&[5, 0, 7], 5), [true, false, true]);
        assert_eq!(top_k_nonzero(&[5, 0, 7], 3), [true, false, true]);
        assert_eq!(top_k_nonzero(&[5, 6], 0), [false, false]);
    }

    #[test]
    fn weighted_median_edges() {
        let w = vec![vec![0.2, 0.9], vec![0.8, 0.1]];
        // Equal stakes, kappa just under one half: half the stake backs the higher weight.
        assert_eq!(weighted_median_cols(&[0.5, 0.5], &w, 32_767.0 / 65_535.0), [0.8, 0.9]);
        // Kappa just over one half: only the lower weight has enough backing.
        assert_eq!(weighted_median_cols(&[0.5, 0.5], &w, 32_768.0 / 65_535.0), [0.2, 0.1]);
        // Kappa 0 takes the highest, kappa 1 the lowest weight of any staked validator.
        assert_eq!(weighted_median_cols(&[0.3, 0.7], &w, 0.0), [0.8, 0.9]);
        assert_eq!(weighted_median_cols(&[0.3, 0.7], &w, 1.0), [0.2, 0.1]);
        // Unstaked validators do not vote; with no voters consensus is 0.
        assert_eq!(weighted_median_cols(&[0.0, 1.0], &w, 0.0), [0.8, 0.1]);
        assert_eq!(weighted_median_cols(&[0.0, 0.0], &w, 0.5), [0.0, 0.0]);
    }
}
