//! Yuma Consensus: worked examples against an independent reference, and properties.
//!
//! The `EX*` constants below are printed by `tests/fixtures/yuma_reference.py`, a separate
//! implementation in exact rational arithmetic written from the formulas in
//! `docs/subnet.md` (not from the Rust code). To regenerate them:
//!
//! ```text
//! python3 agent-protocols/tests/fixtures/yuma_reference.py
//! ```
//!
//! and paste the printed blocks over the ones here. Fractions are compared within
//! [`TOLERANCE`]; token amounts exactly.

use agent_protocols::subnet::yuma::{epoch, Inputs, Outcome, Params, SparseRow, YumaError};
use proptest::prelude::*;

/// The reference is exact; the implementation is f64. 1e-9 leaves room for a few dozen
/// roundings at 2^-53 each, and is far below anything that changes a payout.
const TOLERANCE: f64 = 1e-9;

fn assert_close(actual: &[f64], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (j, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= TOLERANCE, "{what}[{j}]: got {a}, expected {e}\n  all: {actual:?}");
    }
}

/// Compares an outcome's sparse matrix with a dense square one, and checks the outcome's
/// form: rows list non-zero entries only, in ascending uid.
fn assert_close_matrix<const N: usize>(actual: &[SparseRow], expected: &[[f64; N]; N], what: &str) {
    assert_eq!(actual.len(), N, "{what}: rows");
    for (i, e) in expected.iter().enumerate() {
        assert_sparse_form(&actual[i], N, &format!("{what}[{i}]"));
        assert_close(&dense(&actual[i], N), e, &format!("{what}[{i}]"));
    }
}

fn assert_sparse_form(row: &[(usize, f64)], n: usize, what: &str) {
    assert!(row.windows(2).all(|p| p[0].0 < p[1].0), "{what}: uids not ascending: {row:?}");
    assert!(row.iter().all(|&(j, v)| j < n && v != 0.0), "{what}: {row:?}");
}

/// A sparse row as a dense one of `n` entries.
fn dense(row: &[(usize, f64)], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n];
    for &(j, v) in row {
        out[j] = v;
    }
    out
}

/// `matrix[i][j]` of a sparse matrix.
fn at(matrix: &[SparseRow], i: usize, j: usize) -> f64 {
    matrix[i].iter().find(|&&(k, _)| k == j).map_or(0.0, |&(_, v)| v)
}

/// A sparse matrix from dense rows (explicit zeros and all; an empty row stays empty).
fn rows(m: &[&[f64]]) -> Vec<SparseRow> {
    m.iter().map(|r| r.iter().copied().enumerate().collect()).collect()
}

// ---------------------------------------------------------------------------------------
// Printed by tests/fixtures/yuma_reference.py (see the module doc to regenerate).

// EX1
const EX1_CONSENSUS: [f64; 4] = [0.0, 0.0, 0.75, 0.25];
const EX1_RANKS: [f64; 4] = [0.0, 0.0, 0.55, 0.25];
const EX1_TRUST: [f64; 4] = [0.0, 0.0, 1.0, 0.5555555555555556];
const EX1_INCENTIVE: [f64; 4] = [0.0, 0.0, 0.6875, 0.3125];
const EX1_VALIDATOR_TRUST: [f64; 4] = [1.0, 0.5, 0.0, 0.0];
const EX1_DIVIDENDS: [f64; 4] = [0.75, 0.25, 0.0, 0.0];
const EX1_BONDS: [[f64; 4]; 4] = [
    [0.0, 0.0, 0.8181818181818182, 0.6],
    [0.0, 0.0, 0.18181818181818182, 0.4],
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
];
const EX1_OWNER: u64 = 179995;
const EX1_MINERS: [u64; 4] = [0, 0, 281876, 128126];
const EX1_VALIDATORS: [u64; 4] = [307502, 102501, 0, 0];
const EX1_UNALLOCATED: u64 = 0;

// EX2
const EX2_CONSENSUS: [f64; 6] = [0.0, 0.0, 0.0, 0.6, 0.2, 0.2];
const EX2_RANKS: [f64; 6] = [0.0, 0.0, 0.0, 0.45, 0.2, 0.2];
const EX2_TRUST: [f64; 6] = [0.0, 0.0, 0.0, 1.0, 0.7272727272727273, 0.7272727272727273];
const EX2_INCENTIVE: [f64; 6] = [0.0, 0.0, 0.0, 0.5294117647058824, 0.23529411764705882, 0.23529411764705882];
const EX2_VALIDATOR_TRUST: [f64; 6] = [1.0, 0.6, 0.0, 0.0, 0.0, 0.0];
const EX2_DIVIDENDS: [f64; 6] = [0.3266785802053984, 0.552313016433257, 0.12100840336134454, 0.0, 0.0, 0.0];
const EX2_BONDS: [[f64; 6]; 6] = [
    [0.0, 0.0, 0.0, 0.4523809523809524, 0.26526341150790017, 0.10526341150790018],
    [0.0, 0.0, 0.0, 0.319047619047619, 0.7347365884920998, 0.8947365884920998],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
];
const EX2_OWNER: u64 = 98772967;
const EX2_MINERS: [u64; 6] = [0, 0, 0, 192939541, 85750907, 85750907];
const EX2_VALIDATORS: [u64; 6] = [171323314, 289655038, 63461647, 0, 0, 0];
const EX2_UNALLOCATED: u64 = 0;

// EX3 (every epoch)
const EX3_CONSENSUS: [f64; 6] = [0.0, 0.0, 0.0, 0.5, 0.4, 0.0];
const EX3_RANKS: [f64; 6] = [0.0, 0.0, 0.0, 0.375, 0.30000000000000004, 0.0];
const EX3_TRUST: [f64; 6] = [0.0, 0.0, 0.0, 0.9036144578313253, 0.8955223880597015, 0.0];
const EX3_INCENTIVE: [f64; 6] = [0.0, 0.0, 0.0, 0.5555555555555556, 0.4444444444444445, 0.0];
const EX3_VALIDATOR_TRUST: [f64; 6] = [0.9, 0.9, 0.0, 0.0, 0.0, 0.0];
const EX3_OWNER: u64 = 179995422;
const EX3_MINERS: [u64; 6] = [0, 0, 0, 227779049, 182223240, 0];
// EX3, one row per epoch
const EX3_DIVIDENDS: [[f64; 6]; 5] = [
    [0.41333333333333333, 0.36166666666666664, 0.225, 0.0, 0.0, 0.0],
    [0.42533333333333334, 0.37216666666666665, 0.2025, 0.0, 0.0, 0.0],
    [0.4361333333333334, 0.38161666666666666, 0.18225, 0.0, 0.0, 0.0],
    [0.4458533333333333, 0.39012166666666664, 0.164025, 0.0, 0.0, 0.0],
    [0.45460133333333336, 0.39777616666666665, 0.1476225, 0.0, 0.0, 0.0],
];
const EX3_VALIDATORS: [[u64; 6]; 5] = [
    [169467613, 148284161, 92250515, 0, 0, 0],
    [174387640, 152589185, 83025464, 0, 0, 0],
    [178815665, 156463707, 74722917, 0, 0, 0],
    [182800887, 159950776, 67250626, 0, 0, 0],
    [186387587, 163089139, 60525563, 0, 0, 0],
];
const EX3_FINAL_BONDS: [[f64; 6]; 6] = [
    [0.0, 0.0, 0.0, 0.45460133333333336, 0.45460133333333336, 0.0],
    [0.0, 0.0, 0.0, 0.39777616666666665, 0.39777616666666665, 0.0],
    [0.0, 0.0, 0.0, 0.1476225, 0.1476225, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
];

// ---------------------------------------------------------------------------------------
// Worked examples.

/// Two validators (60 and 40 tokens), two miners, no bonds yet. Validator 0 also puts a
/// weight of 5 on itself, which must be ignored. Small enough to follow by hand:
/// docs/subnet.md's first example runs as the page shows it: the same two validators and
/// two miners as below, with the bonds of an epoch before in which they agreed.
#[test]
fn the_docs_example_runs_as_shown() -> Result<(), YumaError> {
    let (stakes, emission) = ([60, 40, 0, 0], 1_000_000);
    let agreed = rows(&[&[0.0, 0.0, 0.5, 0.5], &[0.0, 0.0, 0.5, 0.5], &[], &[]]);
    let last = epoch(&Inputs { stakes: &stakes, weights: &agreed, bonds: &[], emission }, &Params::default())?;
    // ANCHOR: epoch
    use agent_protocols::subnet::yuma::{epoch, Inputs, Params};

    // weights[i]: validator i's (uid, weight) pairs; a miner's row is empty.
    let weights = vec![vec![(2, 0.75), (3, 0.25)], vec![(2, 0.25), (3, 0.75)], vec![], vec![]];
    let out = epoch(&Inputs { stakes: &stakes, weights: &weights, bonds: &last.bonds, emission }, &Params::default())?;
    // out.consensus, out.incentive, out.dividends, out.validator_trust, out.bonds, out.emissions, ...
    // ANCHOR_END: epoch
    assert_close(&out.consensus, &EX1_CONSENSUS, "consensus as in the example below");
    assert_eq!(out.emissions.total(), u128::from(emission));
    assert!(out.bonds[0].iter().any(|&(j, b)| j == 2 && b > 0.0), "bonds carried from the epoch before");

    let source = include_str!("yuma.rs");
    let (start, end) = ("// ANCHOR: epoch\n", "    // ANCHOR_END: epoch\n");
    let region = &source[source.find(start).unwrap() + start.len()..source.find(end).unwrap()];
    let shown: String = region.lines().map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line))).collect();
    let docs = include_str!("../../docs/subnet.md");
    assert!(docs.contains(&format!("```rust\n{shown}```\n")), "docs/subnet.md must show:\n{shown}");
    Ok(())
}

/// consensus is (0.75, 0.25), validator 1's 0.75 on miner 3 is clipped to 0.25, ranks are
/// 0.6·0.75 + 0.4·0.25 = 0.55 and 0.6·0.25 + 0.4·0.25 = 0.25, incentive 0.6875 / 0.3125,
/// dividends 0.75 / 0.25.
#[test]
fn example_two_validators_two_miners() {
    let stakes = [60, 40, 0, 0];
    let weights = rows(&[&[5.0, 0.0, 0.75, 0.25], &[0.0, 0.0, 0.25, 0.75], &[], &[]]);
    let out =
        epoch(&Inputs { stakes: &stakes, weights: &weights, bonds: &[], emission: 1_000_000 }, &Params::default())
            .unwrap();

    assert_close(&out.consensus, &EX1_CONSENSUS, "consensus");
    assert_close(&out.ranks, &EX1_RANKS, "ranks");
    assert_close(&out.trust, &EX1_TRUST, "trust");
    assert_close(&out.incentive, &EX1_INCENTIVE, "incentive");
    assert_close(&out.validator_trust, &EX1_VALIDATOR_TRUST, "validator_trust");
    assert_close(&out.dividends, &EX1_DIVIDENDS, "dividends");
    assert_close_matrix(&out.bonds, &EX1_BONDS, "bonds");
    assert_eq!(out.emissions.owner, EX1_OWNER);
    assert_eq!(out.emissions.miners, EX1_MINERS);
    assert_eq!(out.emissions.validators, EX1_VALIDATORS);
    assert_eq!(out.emissions.unallocated, EX1_UNALLOCATED);
    assert_eq!(out.emissions.total(), 1_000_000);
    assert_eq!(at(&out.weights, 0, 0), 0.0, "self-weight masked");
}

/// Every parameter away from its default, and bonds from a previous epoch: only two
/// validator permits (uid 2 is third by stake and loses its say, but its old bonds still
/// earn it dividends this once, then are cleared), a min_stake that silences uid 5, bonds
/// built half from raw and half from clipped weights, kappa 0.6, bonds moving average 0.8,
/// owner cut 10%, miners 41% of the rest.
#[test]
fn example_non_default_parameters_and_prior_bonds() {
    let params = Params {
        kappa: 39_321,
        bonds_moving_average: 800_000,
        bonds_penalty: 32_768,
        max_allowed_validators: 2,
        min_stake: 10,
        owner_cut: 6_554,
        miner_share: 410_000,
    };
    let stakes = [500, 300, 200, 0, 0, 9];
    let weights = rows(&[
        &[0.0, 0.0, 0.0, 3.0, 1.0, 1.0],
        &[0.0, 0.0, 0.0, 1.0, 2.0, 2.0],
        &[0.0, 0.0, 0.0, 0.0, 0.0, 7.0],
        &[],
        &[],
        &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
    ]);
    let bonds = rows(&[
        &[0.0, 0.0, 0.0, 0.5, 0.2, 0.0],
        &[0.0, 0.0, 0.0, 0.5, 0.8, 1.0],
        &[0.0, 0.0, 0.0, 0.4, 0.0, 0.0],
        &[],
        &[],
        &[],
    ]);
    let out =
        epoch(&Inputs { stakes: &stakes, weights: &weights, bonds: &bonds, emission: 987_654_321 }, &params).unwrap();

    assert_eq!(out.validator_permits, [true, true, false, false, false, false]);
    assert_eq!(out.stake[5], 0.0, "below min_stake");
    assert_close(&out.consensus, &EX2_CONSENSUS, "consensus");
    assert_close(&out.ranks, &EX2_RANKS, "ranks");
    assert_close(&out.trust, &EX2_TRUST, "trust");
    assert_close(&out.incentive, &EX2_INCENTIVE, "incentive");
    assert_close(&out.validator_trust, &EX2_VALIDATOR_TRUST, "validator_trust");
    assert_close(&out.dividends, &EX2_DIVIDENDS, "dividends");
    assert_close_matrix(&out.bonds, &EX2_BONDS, "bonds");
    assert_eq!(out.emissions.owner, EX2_OWNER);
    assert_eq!(out.emissions.miners, EX2_MINERS);
    assert_eq!(out.emissions.validators, EX2_VALIDATORS);
    assert_eq!(out.emissions.unallocated, EX2_UNALLOCATED);
    assert_eq!(out.emissions.total(), 987_654_321);
}

/// Collusion: honest validators 0 and 1 (40 and 35 of stake) score miners 3 and 4; uid 2
/// (25) gives all its weight to miner 5, whom nobody else weights. 25% is short of kappa,
/// so miner 5's consensus is 0 and its weight is clipped away: miner 5 earns nothing, and
/// incentive is exactly what it would be had the colluder set no weights at all. Having
/// built no new bonds, the colluder's old bonds decay by 0.9 each epoch, and its dividends
/// with them.
#[test]
fn example_colluding_validator_is_clipped_and_its_dividends_fall() {
    let stakes = [40, 35, 25, 0, 0, 0];
    let weights = rows(&[
        &[0.0, 0.0, 0.0, 0.6, 0.4, 0.0],
        &[0.0, 0.0, 0.0, 0.5, 0.5, 0.0],
        &[0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        &[],
        &[],
        &[],
    ]);
    // Before this, all three held bonds in miners 3 and 4 in proportion to stake.
    let mut bonds = rows(&[
        &[0.0, 0.0, 0.0, 0.40, 0.40, 0.0],
        &[0.0, 0.0, 0.0, 0.35, 0.35, 0.0],
        &[0.0, 0.0, 0.0, 0.25, 0.25, 0.0],
        &[],
        &[],
        &[],
    ]);
    let emission = 1_000_000_000;
    let params = Params::default();

    let mut colluder_dividends = Vec::new();
    for (t, (expected_dividends, expected_validators)) in EX3_DIVIDENDS.iter().zip(&EX3_VALIDATORS).enumerate() {
        let out = epoch(&Inputs { stakes: &stakes, weights: &weights, bonds: &bonds, emission }, &params).unwrap();
        assert_close(&out.consensus, &EX3_CONSENSUS, &format!("epoch {t} consensus"));
        assert_close(&out.ranks, &EX3_RANKS, &format!("epoch {t} ranks"));
        assert_close(&out.trust, &EX3_TRUST, &format!("epoch {t} trust"));
        assert_close(&out.incentive, &EX3_INCENTIVE, &format!("epoch {t} incentive"));
        assert_close(&out.validator_trust, &EX3_VALIDATOR_TRUST, &format!("epoch {t} validator_trust"));
        assert_close(&out.dividends, expected_dividends, &format!("epoch {t} dividends"));
        assert_eq!(out.emissions.owner, EX3_OWNER);
        assert_eq!(out.emissions.miners, EX3_MINERS, "epoch {t} miners");
        assert_eq!(out.emissions.validators, *expected_validators, "epoch {t} validators");
        assert_eq!(out.emissions.total(), u128::from(emission));
        colluder_dividends.push(out.dividends[2]);
        bonds = out.bonds;
    }
    assert_close_matrix(&bonds, &EX3_FINAL_BONDS, "final bonds");

    // The colluder's share falls every epoch, by the bonds moving average.
    for pair in colluder_dividends.windows(2) {
        assert!(pair[1] < pair[0], "colluder dividends must fall: {colluder_dividends:?}");
        assert!((pair[1] / pair[0] - 0.9).abs() < 1e-9);
    }

    // Its weights have no effect on incentive: same as if it had set none.
    let mut silent = weights.clone();
    silent[2] = vec![];
    let with = epoch(&Inputs { stakes: &stakes, weights: &weights, bonds: &[], emission }, &params).unwrap();
    let without = epoch(&Inputs { stakes: &stakes, weights: &silent, bonds: &[], emission }, &params).unwrap();
    assert_eq!(with.incentive, without.incentive);
    assert_eq!(with.consensus, without.consensus);
    assert_eq!(with.incentive[5], 0.0);
    assert_eq!(with.validator_trust[2], 0.0);
}

/// Nobody has set weights: no incentive, so the whole remainder after the owner's cut goes
/// to validators by active stake. By hand: owner ⌊1000 · 11796 / 65535⌋ = 179, rest 821;
/// only uid 0 (the larger stake) has a permit, so it gets all 821.
#[test]
fn example_no_weights_pays_validators_by_stake() {
    let params = Params { max_allowed_validators: 1, ..Params::default() };
    let out = epoch(&Inputs { stakes: &[3, 1, 0], weights: &[], bonds: &[], emission: 1000 }, &params).unwrap();
    assert_eq!(out.incentive, [0.0; 3]);
    assert_eq!(out.dividends, [0.0; 3]);
    assert_eq!(out.consensus, [0.0; 3]);
    assert_eq!(out.emissions.owner, 179);
    assert_eq!(out.emissions.miners, [0, 0, 0]);
    assert_eq!(out.emissions.validators, [821, 0, 0]);
    assert_eq!(out.emissions.unallocated, 0);

    // With no permits at all (max 0), subtensor falls back to plain stake: 3:1 of 821.
    let params = Params { max_allowed_validators: 0, ..Params::default() };
    let out = epoch(&Inputs { stakes: &[3, 1, 0], weights: &[], bonds: &[], emission: 1000 }, &params).unwrap();
    assert_eq!(out.emissions.validators, [616, 205, 0]); // 615.75 and 205.25; the spare token to .75

    // And with no stake anywhere, nobody can be paid.
    let out = epoch(&Inputs { stakes: &[0, 0], weights: &[], bonds: &[], emission: 1000 }, &Params::default()).unwrap();
    assert_eq!(out.emissions.owner, 179);
    assert_eq!(out.emissions.unallocated, 821);
    assert_eq!(out.emissions.total(), 1000);
}

#[test]
fn defaults_are_subtensors() {
    let p = Params::default();
    assert_eq!(p.kappa, 32_767);
    assert_eq!(p.bonds_moving_average, 900_000);
    assert!((p.bonds_alpha() - 0.1).abs() < 1e-15);
    assert_eq!(p.bonds_penalty, u16::MAX);
    assert_eq!(p.max_allowed_validators, 128);
    assert_eq!(p.min_stake, 0);
    assert_eq!(p.owner_cut, 11_796);
    assert_eq!(p.miner_share, 500_000);
}

#[test]
fn bad_inputs_are_refused_not_panicked_on() {
    let p = Params::default();
    let run = |stakes: &[u64], weights: &[SparseRow], bonds: &[SparseRow], params: &Params| {
        epoch(&Inputs { stakes, weights, bonds, emission: 10 }, params)
    };
    assert_eq!(run(&[], &[], &[], &p), Err(YumaError::Empty));
    assert_eq!(
        run(&[1, 2], &rows(&[&[0.0, 1.0]]), &[], &p),
        Err(YumaError::RowCount { matrix: "weights", rows: 1, uids: 2 })
    );
    assert_eq!(
        run(&[1, 2], &[], &[vec![(1, 0.5)], vec![(0, 1.0), (2, 1.0)]], &p),
        Err(YumaError::UnknownUid { matrix: "bonds", row: 1, uid: 2, uids: 2 })
    );
    assert_eq!(
        run(&[1, 2], &[vec![(1, 0.5), (0, 1.0), (1, 0.0)], vec![]], &[], &p),
        Err(YumaError::DuplicateEntry { matrix: "weights", row: 0, uid: 1 })
    );
    for bad in [f64::NAN, -0.5, f64::INFINITY, f64::NEG_INFINITY] {
        let err = run(&[1, 2], &rows(&[&[0.0, bad], &[]]), &[], &p).unwrap_err();
        assert!(matches!(err, YumaError::InvalidEntry { matrix: "weights", row: 0, col: 1, .. }), "{err}");
        let err = run(&[1, 2], &[], &rows(&[&[], &[bad, 0.0]]), &p).unwrap_err();
        assert!(matches!(err, YumaError::InvalidEntry { matrix: "bonds", row: 1, col: 0, .. }), "{err}");
    }
    let too_much = Params { bonds_moving_average: 1_000_001, ..p };
    assert_eq!(
        run(&[1], &[], &[], &too_much),
        Err(YumaError::ParamOutOfRange { name: "bonds_moving_average", value: 1_000_001 })
    );
    let too_much = Params { miner_share: 2_000_000, ..p };
    assert!(matches!(run(&[1], &[], &[], &too_much), Err(YumaError::ParamOutOfRange { name: "miner_share", .. })));
}

/// Huge (but finite) entries and stakes must not overflow into NaN.
#[test]
fn extreme_magnitudes_stay_finite() {
    let stakes = [u64::MAX, u64::MAX, 1];
    let weights = rows(&[&[0.0, f64::MAX, f64::MAX], &[f64::MAX, 0.0, 1.0], &[]]);
    let bonds = rows(&[&[f64::MAX, f64::MAX, f64::MAX], &[f64::MAX, 0.0, f64::MAX], &[]]);
    let out =
        epoch(&Inputs { stakes: &stakes, weights: &weights, bonds: &bonds, emission: u64::MAX }, &Params::default())
            .unwrap();
    let all = [&out.consensus, &out.incentive, &out.dividends, &out.trust, &out.ranks, &out.validator_trust];
    assert!(all.iter().all(|v| v.iter().all(|x| x.is_finite())), "{out:?}");
    assert!(out.bonds.iter().flatten().all(|(_, x)| x.is_finite()));
    assert_eq!(out.emissions.total(), u128::from(u64::MAX));
}

// ---------------------------------------------------------------------------------------
// Properties.

fn stake() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 3 => 1u64..1_000_000]
}

fn entry() -> impl Strategy<Value = f64> {
    prop_oneof![1 => Just(0.0), 3 => 0.0f64..1.0]
}

/// A sparse row of `n` uids: the non-zero entries of a dense one (or an empty row).
fn row(n: usize) -> impl Strategy<Value = SparseRow> {
    prop_oneof![1 => Just(Vec::new()), 4 => prop::collection::vec(entry(), n).prop_map(|r| sparse(&r))]
}

/// The non-zero entries of a dense row.
fn sparse(row: &[f64]) -> SparseRow {
    row.iter().copied().enumerate().filter(|&(_, v)| v != 0.0).collect()
}

/// A subnet of 1–8 uids: stakes, weights and bonds.
fn subnet() -> impl Strategy<Value = (Vec<u64>, Vec<SparseRow>, Vec<SparseRow>)> {
    (1usize..=8).prop_flat_map(|n| {
        (prop::collection::vec(stake(), n), prop::collection::vec(row(n), n), prop::collection::vec(row(n), n))
    })
}

/// A [`subnet`] and a `target` uid on which every other uid sets a positive weight, the
/// target's own stake zero half the time (then every validator that counts backs it).
fn backed_subnet() -> impl Strategy<Value = (Vec<u64>, Vec<SparseRow>, Vec<SparseRow>, usize)> {
    subnet()
        .prop_flat_map(|(stakes, weights, bonds)| {
            let n = stakes.len();
            (Just(stakes), Just(weights), Just(bonds), 0..n, any::<bool>(), prop::collection::vec(0.01f64..1.0, n))
        })
        .prop_map(|(mut stakes, mut weights, bonds, target, unstaked, backing)| {
            if unstaked {
                stakes[target] = 0;
            }
            for (i, row) in weights.iter_mut().enumerate().filter(|&(i, _)| i != target) {
                row.retain(|&(j, _)| j != target);
                row.push((target, backing[i]));
            }
            (stakes, weights, bonds, target)
        })
}

fn params() -> impl Strategy<Value = Params> {
    (any::<u16>(), 0u64..=1_000_000, any::<u16>(), 0u16..10, 0u64..1000, any::<u16>(), 0u32..=1_000_000).prop_map(
        |(kappa, bonds_moving_average, bonds_penalty, max_allowed_validators, min_stake, owner_cut, miner_share)| {
            Params {
                kappa,
                bonds_moving_average,
                bonds_penalty,
                max_allowed_validators,
                min_stake,
                owner_cut,
                miner_share,
            }
        },
    )
}

fn run(stakes: &[u64], weights: &[SparseRow], bonds: &[SparseRow], emission: u64, params: &Params) -> Outcome {
    epoch(&Inputs { stakes, weights, bonds, emission }, params).expect("valid inputs")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Incentive sums to 1, or is all zero, and is all zero when nobody set weights.
    /// Dividends likewise.
    #[test]
    fn incentive_sums_to_one_or_zero((stakes, weights, bonds) in subnet(), params in params()) {
        let out = run(&stakes, &weights, &bonds, 1_000, &params);
        for (name, v) in [("incentive", &out.incentive), ("dividends", &out.dividends)] {
            let sum: f64 = v.iter().sum();
            prop_assert!(v.iter().all(|&x| x >= 0.0), "{name} {v:?}");
            prop_assert!((sum - 1.0).abs() < 1e-9 || v.iter().all(|&x| x == 0.0), "{name} sums to {sum}: {v:?}");
        }
        let none = run(&stakes, &[], &bonds, 1_000, &params);
        prop_assert!(none.incentive.iter().all(|&x| x == 0.0));
        prop_assert!(none.emissions.miners.iter().all(|&x| x == 0));
    }

    /// Incentive is not all zero whenever it should not be: if the validators that count (stake
    /// at least `min_stake`, a permit) and set a positive weight on some uid are all of them,
    /// or hold more than kappa of their stake, incentive sums to 1, the uid's share is positive
    /// and the miners are paid. (`incentive_sums_to_one_or_zero` alone would pass with
    /// incentive always zero.) Permits and backing are computed here, not read from the outcome.
    #[test]
    fn incentive_sums_to_one_when_a_counted_validator_weights_a_miner(
        (stakes, weights, bonds, target) in backed_subnet(),
        params in params(),
    ) {
        let n = stakes.len();
        let filtered: Vec<u64> = stakes.iter().map(|&s| if s < params.min_stake { 0 } else { s }).collect();
        // Top `max_allowed_validators` non-zero stakes, the higher uid first among equals.
        let mut permitted: Vec<usize> = (0..n).filter(|&i| filtered[i] > 0).collect();
        permitted.sort_by_key(|&i| std::cmp::Reverse((filtered[i], i)));
        permitted.truncate(usize::from(params.max_allowed_validators));
        let total: f64 = permitted.iter().map(|&i| filtered[i] as f64).sum();
        prop_assume!(total > 0.0, "no validator counts");
        let backs = |i: usize| i != target && weights[i].iter().any(|&(j, w)| j == target && w > 0.0);
        let backing = permitted.iter().filter(|&&i| backs(i)).map(|&i| filtered[i] as f64).sum::<f64>() / total;
        let everyone = permitted.iter().all(|&i| backs(i));
        prop_assume!(everyone || backing > params.kappa_fraction() + 1e-9, "too little backing");

        let out = run(&stakes, &weights, &bonds, 1_000_000, &params);
        let sum: f64 = out.incentive.iter().sum();
        prop_assert!((sum - 1.0).abs() < 1e-9, "incentive sums to {sum} with backing {backing}: {:?}", out.incentive);
        prop_assert!(out.incentive[target] > 0.0, "target {target} unpaid: {:?}", out.incentive);
        prop_assert!(out.emissions.miners.iter().sum::<u64>() > 0, "no miner paid: {:?}", out.emissions);
    }

    /// Every token is accounted for: owner + miners + validators + unallocated = emission,
    /// the owner's cut is ⌊emission · owner_cut / 65535⌋, and nothing is left unallocated
    /// while anyone has stake that counts.
    #[test]
    fn emissions_conserve_supply((stakes, weights, bonds) in subnet(), params in params(), emission in any::<u64>()) {
        let out = run(&stakes, &weights, &bonds, emission, &params);
        let e = &out.emissions;
        prop_assert_eq!(e.total(), u128::from(emission));
        prop_assert_eq!(u128::from(e.owner), u128::from(emission) * u128::from(params.owner_cut) / 65_535);
        let anyone = stakes.iter().any(|&s| s > 0 && s >= params.min_stake);
        prop_assert!(!anyone || e.unallocated == 0, "{e:?}");
        let incentive_paid = out.incentive.iter().any(|&x| x > 0.0);
        let miners: u128 = e.miners.iter().map(|&x| u128::from(x)).sum();
        let rest = u128::from(emission - e.owner);
        let expected_miners = if incentive_paid { rest * u128::from(params.miner_share) / 1_000_000 } else { 0 };
        prop_assert_eq!(miners, expected_miners);
    }

    /// A validator with zero stake has no influence: whatever weights it sets, the whole
    /// outcome is the same.
    #[test]
    fn zero_stake_validator_has_no_influence(
        (mut stakes, mut weights, bonds) in subnet(),
        params in params(),
        pick in any::<prop::sample::Index>(),
        other in prop::collection::vec(0.0f64..1.0, 8),
    ) {
        let n = stakes.len();
        let z = pick.index(n);
        stakes[z] = 0;
        let a = run(&stakes, &weights, &bonds, 1_000_000, &params);
        weights[z] = sparse(&other[..n]);
        let b = run(&stakes, &weights, &bonds, 1_000_000, &params);
        prop_assert_eq!(&a, &b);
        prop_assert!(!a.validator_permits[z]);
        prop_assert!(a.bonds[z].is_empty());
    }

    /// Clipping, on a subnet with a majority and a minority validator: the majority holds
    /// more than kappa, so consensus is the majority's weights. Where the minority weights a
    /// miner above that, its weight is cut to consensus; where below, it is kept.
    #[test]
    fn clipping_cuts_above_consensus_and_keeps_below(
        miners in 1usize..6,
        majority_stake in 600u64..1000,
        minority_stake in 1u64..400,
        raw in prop::collection::vec((0.01f64..1.0, 0.01f64..1.0), 6),
    ) {
        let n = miners + 2;
        let mut weights = vec![Vec::new(); n];
        for (j, &(high, low)) in raw.iter().take(miners).enumerate() {
            weights[0].push((j + 2, high));
            weights[1].push((j + 2, low));
        }
        let mut stakes = vec![0; n];
        stakes[0] = majority_stake;
        stakes[1] = minority_stake;
        let out = run(&stakes, &weights, &[], 1_000_000, &Params::default());

        let mut above = 0;
        for j in 2..n {
            let (major, minor, c) = (at(&out.weights, 0, j), at(&out.weights, 1, j), out.consensus[j]);
            prop_assert!((c - major).abs() < 1e-12, "consensus {c} is the majority's {major}");
            if minor > c {
                above += 1;
                prop_assert_eq!(at(&out.clipped_weights(), 1, j), c, "above consensus: cut to it");
            } else {
                prop_assert_eq!(at(&out.clipped_weights(), 1, j), minor, "at or below consensus: kept");
            }
            prop_assert_eq!(at(&out.clipped_weights(), 0, j), major);
        }
        // Both rows sum to 1 over the same miners, so unless they are equal the minority is
        // above consensus somewhere.
        let equal = (2..n).all(|j| at(&out.weights, 0, j) == at(&out.weights, 1, j));
        prop_assert!(equal || above > 0);
        prop_assert!((out.validator_trust[0] - 1.0).abs() < 1e-12);
        prop_assert!(out.validator_trust[1] <= 1.0 + 1e-12);
    }

    /// On any subnet: consensus is the kappa-quantile (validators giving it or more hold at
    /// least kappa of active stake, those giving more hold less), every clipped weight is
    /// min(weight, consensus), and ranks and validator trust are built from the clipped ones.
    #[test]
    fn consensus_is_the_kappa_quantile_and_clipping_is_min((stakes, weights, bonds) in subnet(), params in params()) {
        let out = run(&stakes, &weights, &bonds, 1, &params);
        let n = stakes.len();
        let kappa = params.kappa_fraction();
        let voters: Vec<usize> = (0..n).filter(|&i| out.active_stake[i] > 0.0).collect();
        for j in 0..n {
            let c = out.consensus[j];
            if voters.is_empty() {
                prop_assert_eq!(c, 0.0);
                continue;
            }
            let ge: f64 = voters.iter().filter(|&&i| at(&out.weights, i, j) >= c).map(|&i| out.active_stake[i]).sum();
            let gt: f64 = voters.iter().filter(|&&i| at(&out.weights, i, j) > c).map(|&i| out.active_stake[i]).sum();
            prop_assert!(ge >= kappa - 1e-9, "col {j}: {ge} back {c}, kappa {kappa}");
            prop_assert!(gt < kappa + 1e-9, "col {j}: {gt} back more than {c}, kappa {kappa}");
            prop_assert!(voters.iter().any(|&i| at(&out.weights, i, j) == c), "consensus is one of the weights");
            let mut rank = 0.0;
            for i in 0..n {
                let (w, clipped) = (at(&out.weights, i, j), at(&out.clipped_weights(), i, j));
                prop_assert_eq!(clipped, if w > c { c } else { w });
                rank += clipped * out.active_stake[i];
            }
            prop_assert!((rank - out.ranks[j]).abs() < 1e-12);
        }
        for i in 0..n {
            let vtrust: f64 = out.clipped_row(i).map(|(_, c)| c).sum();
            prop_assert!((vtrust - out.validator_trust[i]).abs() < 1e-12);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Permutations and the form of the input.

/// A subnet of 1–8 uids as [`subnet`] makes, but with every non-zero stake different, and a
/// permutation of its uids. (Equal stakes would not do: permits go to the higher uid among
/// equal stakes, and renumbering changes which one that is.)
#[allow(clippy::type_complexity)]
fn permuted_subnet() -> impl Strategy<Value = (Vec<u64>, Vec<SparseRow>, Vec<SparseRow>, Vec<usize>)> {
    (1usize..=8).prop_flat_map(|n| {
        (
            prop::collection::vec(prop::option::weighted(0.75, 1u64..100_000), n),
            prop::collection::vec(row(n), n),
            prop::collection::vec(row(n), n),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        )
            .prop_map(|(stakes, weights, bonds, order)| {
                // base · 8 + uid: distinct for distinct uids, as n ≤ 8.
                let stakes = stakes.iter().enumerate().map(|(i, s)| s.map_or(0, |s| s * 8 + i as u64)).collect();
                (stakes, weights, bonds, order)
            })
    })
}

/// Renumbers a matrix: new uid `k` is old uid `order[k]`, in rows and columns alike.
fn renumber(matrix: &[SparseRow], order: &[usize], new_uid: &[usize]) -> Vec<SparseRow> {
    if matrix.is_empty() {
        return Vec::new();
    }
    order.iter().map(|&old| matrix[old].iter().map(|&(j, v)| (new_uid[j], v)).collect()).collect()
}

/// Within [`TOLERANCE`]: `actual[k]` against `expected[order[k]]`.
fn assert_permuted(actual: &[f64], expected: &[f64], order: &[usize], what: &str) -> Result<(), TestCaseError> {
    for (k, &old) in order.iter().enumerate() {
        let (a, e) = (actual[k], expected[old]);
        prop_assert!((a - e).abs() <= TOLERANCE, "{}: new uid {} (old {}) has {}, expected {}", what, k, old, a, e);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Renumbering the uids (validators and miners alike: stakes, rows and columns of the
    /// weights and bonds) renumbers every per-uid output the same way, and nothing else
    /// changes. Fractions agree within rounding (the sums run in another order); payouts
    /// within one token per uid, with every total exact: the tokens left after flooring go
    /// to the lower uid among equal remainders, and rounding can make or break such a tie.
    /// (Emissions up to 10^12 tokens, so that rounding in the shares, about 10^-16 of the
    /// emission, stays below a token.)
    #[test]
    fn permuting_uids_permutes_the_outcome(
        (stakes, weights, bonds, order) in permuted_subnet(),
        params in params(),
        emission in 0u64..=1_000_000_000_000,
    ) {
        let n = stakes.len();
        let mut new_uid = vec![0; n];
        for (k, &old) in order.iter().enumerate() {
            new_uid[old] = k;
        }
        let p_stakes: Vec<u64> = order.iter().map(|&old| stakes[old]).collect();
        let p_weights = renumber(&weights, &order, &new_uid);
        let p_bonds = renumber(&bonds, &order, &new_uid);

        let a = run(&stakes, &weights, &bonds, emission, &params);
        let b = run(&p_stakes, &p_weights, &p_bonds, emission, &params);

        let permits: Vec<bool> = order.iter().map(|&old| a.validator_permits[old]).collect();
        prop_assert_eq!(&b.validator_permits, &permits);
        for (what, x, y) in [
            ("stake", &b.stake, &a.stake),
            ("active_stake", &b.active_stake, &a.active_stake),
            ("consensus", &b.consensus, &a.consensus),
            ("ranks", &b.ranks, &a.ranks),
            ("trust", &b.trust, &a.trust),
            ("incentive", &b.incentive, &a.incentive),
            ("validator_trust", &b.validator_trust, &a.validator_trust),
            ("dividends", &b.dividends, &a.dividends),
        ] {
            assert_permuted(x, y, &order, what)?;
        }
        for (what, x, y) in [
            ("weights", &b.weights, &a.weights),
            ("clipped_weights", &b.clipped_weights(), &a.clipped_weights()),
            ("bonds", &b.bonds, &a.bonds),
        ] {
            for (k, &old_k) in order.iter().enumerate() {
                for (l, &old_l) in order.iter().enumerate() {
                    let (got, was) = (at(x, k, l), at(y, old_k, old_l));
                    prop_assert!(
                        (got - was).abs() <= TOLERANCE,
                        "{}[{}][{}] is {}; [{}][{}] was {}", what, k, l, got, old_k, old_l, was
                    );
                }
            }
        }

        let (ea, eb) = (&a.emissions, &b.emissions);
        prop_assert_eq!(eb.owner, ea.owner);
        prop_assert_eq!(eb.unallocated, ea.unallocated);
        for (what, x, y) in [("miners", &eb.miners, &ea.miners), ("validators", &eb.validators, &ea.validators)] {
            let total = |v: &[u64]| v.iter().map(|&t| u128::from(t)).sum::<u128>();
            prop_assert_eq!(total(x), total(y), "{} total", what);
            for (k, &old) in order.iter().enumerate() {
                prop_assert!(
                    x[k].abs_diff(y[old]) <= 1,
                    "{}: new uid {} has {}, old uid {} had {}", what, k, x[k], old, y[old]
                );
            }
        }
    }

    /// The order of a row's entries, and zeros listed in it, make no difference at all.
    #[test]
    fn entry_order_and_listed_zeros_change_nothing(
        (stakes, weights, bonds) in subnet(),
        params in params(),
        seed in any::<u64>(),
    ) {
        let shuffle = |matrix: &[SparseRow]| -> Vec<SparseRow> {
            matrix
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    // Every uid without an entry gets a listed zero; then rotate, and reverse.
                    let mut row = row.clone();
                    let unlisted: Vec<usize> = (0..stakes.len()).filter(|&j| row.iter().all(|e| e.0 != j)).collect();
                    row.extend(unlisted.into_iter().map(|j| (j, 0.0)));
                    let turn = (seed as usize).wrapping_add(i) % row.len().max(1);
                    row.rotate_left(turn);
                    if seed % 2 == 1 {
                        row.reverse();
                    }
                    row
                })
                .collect()
        };
        let a = run(&stakes, &weights, &bonds, 1_000_000, &params);
        let b = run(&stakes, &shuffle(&weights), &shuffle(&bonds), 1_000_000, &params);
        prop_assert_eq!(a, b);
    }
}
