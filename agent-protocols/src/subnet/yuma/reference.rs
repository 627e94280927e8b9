//! The epoch as it was before it was made fast (kept to test against): one thread, every
//! column's weights sorted for consensus, every step a separate pass. [`epoch`] must give the
//! same outcome, to the bit, as [`super::epoch`] in every layout.

use std::borrow::Cow;

use super::{
    delta_entry, moving_average, normalize, normalize_row, normalized_stake, sorted_nonzero, split_emission,
    top_k_nonzero, ColumnScale, Inputs, Outcome, Params, SparseRow, YumaError, PER_MILLION,
};

/// The reference epoch.
pub(super) fn epoch(inputs: &Inputs<'_>, params: &Params) -> Result<Outcome, YumaError> {
    let n = validate(inputs, params)?;

    // Stake: filter by the threshold, normalise.
    let filtered: Vec<u64> = inputs.stakes.iter().map(|&s| if s < params.min_stake { 0 } else { s }).collect();
    let stake = normalized_stake(&filtered);

    // Validator permits and active stake.
    let validator_permits = top_k_nonzero(&filtered, usize::from(params.max_allowed_validators));
    let mut active_stake: Vec<f64> =
        stake.iter().zip(&validator_permits).map(|(&s, &p)| if p { s } else { 0.0 }).collect();
    normalize(&mut active_stake);

    // Only permitted validators' rows of the weight matrices can be non-zero, and only their
    // non-zero entries count: the steps below run on those, rows in ascending uid and each
    // row's entries in ascending uid. Every sum therefore adds the same non-zero terms in the
    // same order as it would over the whole square matrix, and gives the same result.
    let validators: Vec<usize> = (0..n).filter(|&i| validator_permits[i]).collect();
    let validator_stake: Vec<f64> = validators.iter().map(|&i| active_stake[i]).collect();

    // Weights: unpermitted rows are zero; mask the diagonal, normalise rows.
    let mut scratch = Vec::new();
    let weights: Vec<SparseRow> = validators
        .iter()
        .map(|&i| {
            let given = inputs.weights.get(i).map_or(&[][..], Vec::as_slice);
            sorted_nonzero(&mut scratch, given.iter().filter(|&&(j, _)| j != i));
            normalize_row(&mut scratch);
            scratch.retain(|&(_, w)| w != 0.0); // Entries too small to survive normalisation.
            scratch.to_vec()
        })
        .collect();

    // Consensus and clipping.
    let consensus = weighted_median_cols(&validator_stake, &weights, n, params.kappa_fraction());
    let clipped_weights: Vec<SparseRow> = weights
        .iter()
        .map(|row| {
            scratch.clear();
            scratch.extend(row.iter().map(|&(j, w)| (j, w.min(consensus[j]))).filter(|&(_, c)| c != 0.0));
            scratch.to_vec()
        })
        .collect();
    let mut validator_trust = vec![0.0; n];
    for (&i, row) in validators.iter().zip(&clipped_weights) {
        validator_trust[i] = row.iter().map(|&(_, c)| c).sum();
    }

    // Ranks, trust, incentive.
    let preranks = stake_weighted_col_sums(&weights, &validator_stake, n);
    let ranks = stake_weighted_col_sums(&clipped_weights, &validator_stake, n);
    let trust: Vec<f64> = ranks.iter().zip(&preranks).map(|(&r, &p)| if p > 0.0 { r / p } else { 0.0 }).collect();
    let mut incentive = ranks.clone();
    normalize(&mut incentive);

    // Bonds delta: the weights for bonds times stake, on the validators' rows, each column
    // normalised. Computed entry by entry where it is used, rather than stored.
    let penalty = params.bonds_penalty_fraction();
    let consensus_ref = &consensus;
    let delta_scale = column_scale(n, || {
        weights
            .iter()
            .zip(&validator_stake)
            .flat_map(|(row, &s)| row.iter().map(move |&(j, w)| (j, delta_entry(w, consensus_ref[j], penalty, s))))
    });

    // Old bonds, each column normalised; on the rows given, each sorted by uid.
    let old_scale = column_scale(n, || inputs.bonds.iter().flatten().copied());
    let holders: Vec<(usize, Cow<'_, [_]>)> = (0..inputs.bonds.len())
        .filter(|&i| !inputs.bonds[i].is_empty())
        .map(|i| {
            let row = &inputs.bonds[i];
            if row.windows(2).all(|p| p[0].0 < p[1].0) {
                (i, Cow::Borrowed(row.as_slice()))
            } else {
                let mut sorted = row.clone();
                sorted.sort_unstable_by_key(|&(j, _)| j); // Uids are distinct.
                (i, Cow::Owned(sorted))
            }
        })
        .collect();

    // The moving average, on the rows of validators and of old bond holders (a row or an
    // entry missing from one side counts as zero there), each column normalised again.
    let alpha = params.bonds_alpha();
    let mut bond_uids = Vec::with_capacity(validators.len() + holders.len());
    let mut bonds = Vec::with_capacity(validators.len() + holders.len());
    let (mut v, mut h) = (0, 0);
    loop {
        let (new_uid, old_uid) = (validators.get(v).copied(), holders.get(h).map(|&(i, _)| i));
        let Some(uid) = new_uid.into_iter().chain(old_uid).min() else { break };
        let (new, s): (&[(usize, f64)], f64) = if new_uid == Some(uid) {
            v += 1;
            (&weights[v - 1], validator_stake[v - 1])
        } else {
            (&[], 0.0)
        };
        let old: &[(usize, f64)] = if old_uid == Some(uid) {
            h += 1;
            &holders[h - 1].1
        } else {
            &[]
        };
        moving_average(
            &mut scratch,
            new,
            |j, w| delta_scale.apply(j, delta_entry(w, consensus_ref[j], penalty, s)),
            old,
            |j, b| old_scale.apply(j, b),
            alpha,
        );
        bond_uids.push(uid);
        bonds.push(scratch.to_vec());
    }
    let bonds_scale = column_scale(n, || bonds.iter().flatten().copied());
    for row in &mut bonds {
        row.iter_mut().for_each(|(j, b)| *b = bonds_scale.apply(*j, *b));
    }
    let mut dividends = vec![0.0; n];
    for (&i, row) in bond_uids.iter().zip(&bonds) {
        dividends[i] = row.iter().map(|&(j, b)| b * incentive[j]).sum();
    }
    normalize(&mut dividends);

    let emissions = split_emission(inputs.emission, params, &incentive, &dividends, &active_stake, &stake);

    // Every other row is zero: left empty. Bonds of uids that lost their permit are cleared.
    let bonds = spread(bond_uids.into_iter().zip(bonds).filter(|&(i, _)| validator_permits[i]), n);
    Ok(Outcome {
        stake,
        validator_permits,
        active_stake,
        weights: spread(validators.iter().copied().zip(weights), n),
        consensus,
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

fn check_matrix(matrix: &'static str, rows: &[SparseRow], uids: usize) -> Result<(), YumaError> {
    if !rows.is_empty() && rows.len() != uids {
        return Err(YumaError::RowCount { matrix, rows: rows.len(), uids });
    }
    // `seen[j] == row + 1` once `row` has an entry for uid `j` (needed only for rows whose
    // uids are not strictly ascending).
    let mut seen = Vec::new();
    for (row, entries) in rows.iter().enumerate() {
        let ascending = entries.windows(2).all(|p| p[0].0 < p[1].0);
        if !ascending && seen.is_empty() {
            seen = vec![0usize; uids];
        }
        for &(uid, value) in entries {
            if uid >= uids {
                return Err(YumaError::UnknownUid { matrix, row, uid, uids });
            }
            if !value.is_finite() || value < 0.0 {
                return Err(YumaError::InvalidEntry { matrix, row, col: uid, value });
            }
            if !ascending {
                if seen[uid] == row + 1 {
                    return Err(YumaError::DuplicateEntry { matrix, row, uid });
                }
                seen[uid] = row + 1;
            }
        }
    }
    Ok(())
}

/// Per column of `n`, the stake-weighted `kappa` quantile over the rows with positive stake
/// (`stake[k]` is that of `rows[k]`, a sparse row in ascending uid; rows not given are zero):
/// sort their weights ascending and take the first whose cumulative stake exceeds
/// `(1 - kappa)` of the total, i.e. the highest weight `c` such that validators giving `c` or
/// more hold at least `kappa` of the stake. 0 for a column when no validator has stake.
///
/// The weights are non-negative, so a column sorts as its zeros, in row order (the sort is
/// stable), then its positive weights. In a large subnet most columns are mostly zeros: where
/// the zeros' stake exceeds the minority by far more than any rounding of these sums could
/// move either, the answer is 0 without sorting. Every other column is computed exactly as
/// described, so the result is the same as sorting every column.
fn weighted_median_cols(stake: &[f64], rows: &[SparseRow], n: usize, kappa: f64) -> Vec<f64> {
    let voters: Vec<usize> = (0..rows.len()).filter(|&k| stake[k] > 0.0).collect();
    let positive = |k: usize| rows[k].iter().filter(|&&(_, w)| w != 0.0);
    // Each column's count of positive weights, and the stake behind them.
    let mut count = vec![0usize; n];
    let mut backing = vec![0.0; n];
    for &k in &voters {
        for &(j, _) in positive(k) {
            count[j] += 1;
            backing[j] += stake[k];
        }
    }
    // Sums of at most 2^16 positive terms (one per validator) are each within 2^-37 of their
    // exact value, relative to the total; allow 1e-9.
    let voting: f64 = voters.iter().map(|&k| stake[k]).sum();
    let margin = voting * 1e-9;
    let minority_bound = voting * (1.0 - kappa) + margin;
    let zeros_decide = |j: usize| count[j] == 0 || voting - backing[j] - margin > minority_bound;

    // The other columns: their positive weights with the row giving each, grouped by column,
    // each group in row order.
    let exact: Vec<usize> = (0..n).filter(|&j| !zeros_decide(j)).collect();
    let mut start = vec![usize::MAX; n];
    let mut next = 0;
    for &j in &exact {
        start[j] = next;
        next += count[j];
    }
    // A positive finite weight's bits order as the weight does.
    let mut points = vec![(0u64, 0usize); next];
    let mut fill = start.clone();
    for &k in &voters {
        for &(j, w) in positive(k) {
            if fill[j] != usize::MAX {
                points[fill[j]] = (w.to_bits(), k);
                fill[j] += 1;
            }
        }
    }

    let mut consensus = vec![0.0; n];
    for &j in &exact {
        let points = &mut points[start[j]..start[j] + count[j]];
        // The zeros' stake, summed in row order.
        let mut zero_stake = 0.0;
        let mut given = points.iter().map(|&(_, k)| k).peekable();
        for &k in &voters {
            if given.next_if_eq(&k).is_none() {
                zero_stake += stake[k];
            }
        }
        consensus[j] = column_quantile(points, zero_stake, stake, kappa);
    }
    consensus
}

/// One column's stake-weighted `kappa` quantile, from its positive weights `(bits, row)` in
/// row order and the stake `zero_stake` of the rows giving it zero.
fn column_quantile(points: &mut [(u64, usize)], zero_stake: f64, stake: &[f64], kappa: f64) -> f64 {
    // Ascending weight, ties in row order: what a stable sort gives.
    points.sort_unstable();
    let total = points.iter().fold(zero_stake, |total, &(_, k)| total + stake[k]);
    let minority = total * (1.0 - kappa);
    // The running total only grows, so it exceeds the minority within the zeros exactly
    // when it does after them.
    if zero_stake > minority {
        0.0
    } else {
        let mut cumulative = zero_stake;
        points
            .iter()
            .find(|&&(_, k)| {
                cumulative += stake[k];
                cumulative > minority
            })
            .or(points.last())
            .map_or(0.0, |&(w, _)| f64::from_bits(w))
    }
}

/// `out[j] = Σ_k rows[k][j] · stake[k]`, over `n` columns.
fn stake_weighted_col_sums(rows: &[SparseRow], stake: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n];
    for (row, &s) in rows.iter().zip(stake) {
        for &(j, w) in row {
            out[j] += w * s;
        }
    }
    out
}

/// The scales of the `n` columns of the matrix whose entries `entries` yields, rows in order.
fn column_scale<I: Iterator<Item = (usize, f64)>>(n: usize, entries: impl Fn() -> I) -> ColumnScale {
    let mut sums = vec![0.0; n];
    for (j, v) in entries() {
        sums[j] += v;
    }
    ColumnScale::from_sums(sums, entries)
}

/// An `n`-row matrix from the rows of some uids, the other rows empty, zeros left out.
fn spread(rows: impl Iterator<Item = (usize, SparseRow)>, n: usize) -> Vec<SparseRow> {
    let mut matrix = vec![Vec::new(); n];
    for (i, mut row) in rows {
        row.retain(|&(_, v)| v != 0.0);
        matrix[i] = row;
    }
    matrix
}
