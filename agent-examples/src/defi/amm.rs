//! Constant-product automated market maker (Uniswap v2 style).
//!
//! A [`Pool`] holds reserves of two tokens and quotes swaps with the exact
//! integer formula of Uniswap v2's `getAmountOut`, generalised from the
//! hard-coded `997/1000` (a 0.3 % fee) to a fee in basis points:
//!
//! ```text
//! amount_in_with_fee = amount_in * (10_000 - fee_bps)
//! amount_out         = amount_in_with_fee * reserve_out
//!                      / (reserve_in * 10_000 + amount_in_with_fee)      (floor)
//! ```
//!
//! With `fee_bps = 30` this is exactly Uniswap v2 scaled by 10: `997 * 10 =
//! 9970` and `1000 * 10 = 10_000`, and because the scaling multiplies both the
//! numerator and the denominator, the floored quotient is identical.
//!
//! All arithmetic is checked: no function in this module panics. The product
//! `amount_in_with_fee * reserve_out` is computed in 256 bits (as Uniswap does
//! with `uint256`), so realistic 18-decimal amounts do not overflow; only the
//! two 128-bit sums/products `amount_in * (10_000 - fee_bps)` and
//! `reserve_in * 10_000 + amount_in_with_fee` must fit in a `u128`, which
//! holds for any amount below about `3.4e34` base units.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The fee denominator: fees are expressed in basis points of `10_000`.
pub const BPS_DENOMINATOR: u32 = 10_000;

/// A token identifier, e.g. `Token::new("USDC")`.
///
/// A newtype rather than a bare `String` so that token ids cannot be mixed up
/// with other strings (agent names, pool names) in signatures, while staying
/// cheap to clone, hash and order (it derives `Ord` so graphs built from
/// tokens are deterministic) and serialising as a plain JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub String);

impl Token {
    /// Builds a token id from anything string-like.
    pub fn new(id: impl Into<String>) -> Self {
        Token(id.into())
    }

    /// The token id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Token {
    fn from(s: &str) -> Self {
        Token::new(s)
    }
}

/// An unsigned 256-bit integer, just wide enough to hold the pool invariant
/// `k = reserve_a * reserve_b` of two `u128` reserves without overflow.
///
/// Ordering compares the numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct U256 {
    // Field order matters: the derived `Ord` compares `hi` first.
    hi: u128,
    lo: u128,
}

impl U256 {
    /// The exact product `a * b`.
    pub fn mul(a: u128, b: u128) -> Self {
        let (hi, lo) = widening_mul(a, b);
        U256 { hi, lo }
    }

    /// The high 128 bits.
    pub fn hi(self) -> u128 {
        self.hi
    }

    /// The low 128 bits.
    pub fn lo(self) -> u128 {
        self.lo
    }

    /// The value as a `u128`, or `None` if it does not fit.
    pub fn to_u128(self) -> Option<u128> {
        (self.hi == 0).then_some(self.lo)
    }

    /// The value as an `f64` (rounded; for display and plotting).
    pub fn to_f64(self) -> f64 {
        // 2^128 as f64 is exact.
        self.hi as f64 * 340_282_366_920_938_463_463_374_607_431_768_211_456.0 + self.lo as f64
    }
}

/// Full 128 x 128 -> 256-bit multiplication, returned as `(hi, lo)`.
fn widening_mul(a: u128, b: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & MASK);
    let (b1, b0) = (b >> 64, b & MASK);
    // Each partial product is < 2^128, so none of these overflow.
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // Sum of three values < 2^64 each: < 2^66, no overflow.
    let mid = (p00 >> 64) + (p01 & MASK) + (p10 & MASK);
    let lo = (p00 & MASK) | (mid << 64);
    // The full product is < 2^256, so the high word cannot overflow.
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

/// `floor((hi * 2^128 + lo) / d)`, or `None` if `d == 0` or the quotient
/// does not fit in a `u128`. Plain restoring long division, one bit at a time.
fn div_wide(hi: u128, lo: u128, d: u128) -> Option<u128> {
    if d == 0 || hi >= d {
        return None;
    }
    if hi == 0 {
        return Some(lo / d);
    }
    let mut rem = hi; // invariant: rem < d
    let mut q: u128 = 0;
    for i in (0..128).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((lo >> i) & 1);
        q <<= 1;
        // If a bit was shifted out, the true remainder is >= 2^128 > d.
        // The true value is < 2d, so one subtraction restores rem < d, and
        // the wrapping subtraction yields the correct low 128 bits.
        if carry == 1 || rem >= d {
            rem = rem.wrapping_sub(d);
            q |= 1;
        }
    }
    Some(q)
}

/// `floor(a * b / d)` with a 256-bit intermediate product; `None` if `d == 0`
/// or the result does not fit in a `u128`.
pub fn mul_div(a: u128, b: u128, d: u128) -> Option<u128> {
    let (hi, lo) = widening_mul(a, b);
    div_wide(hi, lo, d)
}

/// Exact Uniswap v2 output amount for a swap, with the fee in basis points.
///
/// `amount_in_with_fee = amount_in * (10_000 - fee_bps)`, then
/// `floor(amount_in_with_fee * reserve_out / (reserve_in * 10_000 + amount_in_with_fee))`.
///
/// Returns `None` when a reserve is zero, `fee_bps > 10_000`, or an
/// intermediate 128-bit value overflows. Unlike the Solidity function (which
/// reverts), `amount_in == 0` yields `Some(0)`. The result is always strictly
/// less than `reserve_out`, so a swap can never drain a pool.
pub fn amount_out(amount_in: u128, reserve_in: u128, reserve_out: u128, fee_bps: u32) -> Option<u128> {
    if reserve_in == 0 || reserve_out == 0 || fee_bps > BPS_DENOMINATOR {
        return None;
    }
    let fee_factor = u128::from(BPS_DENOMINATOR - fee_bps);
    let amount_in_with_fee = amount_in.checked_mul(fee_factor)?;
    let denominator = reserve_in.checked_mul(u128::from(BPS_DENOMINATOR))?.checked_add(amount_in_with_fee)?;
    mul_div(amount_in_with_fee, reserve_out, denominator)
}

/// Why a [`Pool`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// Both sides of the pool are the same token.
    SameToken,
    /// The fee is `10_000` bps or more (no output could ever be received).
    FeeTooHigh,
    /// A reserve is zero (the price would be undefined).
    ZeroReserve,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolError::SameToken => "a pool needs two different tokens",
            PoolError::FeeTooHigh => "fee must be below 10000 basis points",
            PoolError::ZeroReserve => "reserves must be non-zero",
        })
    }
}

impl std::error::Error for PoolError {}

/// A constant-product pool between two distinct tokens.
///
/// Invariants, enforced by [`Pool::new`] and preserved by [`Pool::swap`] (and
/// by deserialisation, which goes through `new`): the tokens differ, both
/// reserves are non-zero and `fee_bps < 10_000`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PoolParams", into = "PoolParams")]
pub struct Pool {
    token_a: Token,
    token_b: Token,
    reserve_a: u128,
    reserve_b: u128,
    fee_bps: u32,
}

/// The serialised form of a [`Pool`]; validated on the way in.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PoolParams {
    token_a: Token,
    token_b: Token,
    reserve_a: u128,
    reserve_b: u128,
    fee_bps: u32,
}

impl TryFrom<PoolParams> for Pool {
    type Error = PoolError;
    fn try_from(p: PoolParams) -> Result<Self, Self::Error> {
        Pool::new(p.token_a, p.reserve_a, p.token_b, p.reserve_b, p.fee_bps)
    }
}

impl From<Pool> for PoolParams {
    fn from(p: Pool) -> Self {
        PoolParams {
            token_a: p.token_a,
            token_b: p.token_b,
            reserve_a: p.reserve_a,
            reserve_b: p.reserve_b,
            fee_bps: p.fee_bps,
        }
    }
}

impl Pool {
    /// A pool holding `reserve_a` of `token_a` and `reserve_b` of `token_b`,
    /// charging `fee_bps` basis points on the input of every swap.
    pub fn new(
        token_a: Token,
        reserve_a: u128,
        token_b: Token,
        reserve_b: u128,
        fee_bps: u32,
    ) -> Result<Self, PoolError> {
        if token_a == token_b {
            return Err(PoolError::SameToken);
        }
        if fee_bps >= BPS_DENOMINATOR {
            return Err(PoolError::FeeTooHigh);
        }
        if reserve_a == 0 || reserve_b == 0 {
            return Err(PoolError::ZeroReserve);
        }
        Ok(Pool { token_a, token_b, reserve_a, reserve_b, fee_bps })
    }

    /// The first token.
    pub fn token_a(&self) -> &Token {
        &self.token_a
    }

    /// The second token.
    pub fn token_b(&self) -> &Token {
        &self.token_b
    }

    /// The reserve of the first token.
    pub fn reserve_a(&self) -> u128 {
        self.reserve_a
    }

    /// The reserve of the second token.
    pub fn reserve_b(&self) -> u128 {
        self.reserve_b
    }

    /// The swap fee in basis points.
    pub fn fee_bps(&self) -> u32 {
        self.fee_bps
    }

    /// Whether `token` is one of the pool's two tokens.
    pub fn contains(&self, token: &Token) -> bool {
        *token == self.token_a || *token == self.token_b
    }

    /// The pool's reserve of `token`, or `None` if the pool does not hold it.
    pub fn reserve_of(&self, token: &Token) -> Option<u128> {
        if *token == self.token_a {
            Some(self.reserve_a)
        } else if *token == self.token_b {
            Some(self.reserve_b)
        } else {
            None
        }
    }

    /// The pool's other token, or `None` if the pool does not hold `token`.
    pub fn other(&self, token: &Token) -> Option<&Token> {
        if *token == self.token_a {
            Some(&self.token_b)
        } else if *token == self.token_b {
            Some(&self.token_a)
        } else {
            None
        }
    }

    /// `(reserve_in, reserve_out)` for a swap selling `token_in`.
    fn reserves_for(&self, token_in: &Token) -> Option<(u128, u128)> {
        if *token_in == self.token_a {
            Some((self.reserve_a, self.reserve_b))
        } else if *token_in == self.token_b {
            Some((self.reserve_b, self.reserve_a))
        } else {
            None
        }
    }

    /// The invariant `k = reserve_a * reserve_b`, exact in 256 bits.
    pub fn k(&self) -> U256 {
        U256::mul(self.reserve_a, self.reserve_b)
    }

    /// Spot price of `of` in units of the other token, ignoring fees:
    /// `reserve_other / reserve_of`. `None` if the pool does not hold `of`.
    pub fn price(&self, of: &Token) -> Option<f64> {
        let (r_in, r_out) = self.reserves_for(of)?;
        Some(r_out as f64 / r_in as f64)
    }

    /// Marginal exchange rate for an infinitesimal sale of `token_in`, after
    /// the fee: `(1 - fee_bps / 10_000) * reserve_out / reserve_in`. This is
    /// the derivative of [`amount_out`] at zero input. `None` if the pool does
    /// not hold `token_in`.
    pub fn marginal_rate(&self, token_in: &Token) -> Option<f64> {
        let fee_factor = f64::from(BPS_DENOMINATOR - self.fee_bps) / f64::from(BPS_DENOMINATOR);
        Some(fee_factor * self.price(token_in)?)
    }

    /// The output a swap of `amount_in` of `token_in` would yield now,
    /// without changing the pool. `None` if the pool does not hold
    /// `token_in` or the arithmetic overflows.
    pub fn quote(&self, token_in: &Token, amount_in: u128) -> Option<u128> {
        let (r_in, r_out) = self.reserves_for(token_in)?;
        let out = amount_out(amount_in, r_in, r_out, self.fee_bps)?;
        // Make sure the swap could also be applied (reserve_in must not overflow).
        r_in.checked_add(amount_in)?;
        Some(out)
    }

    /// Sells `amount_in` of `token_in` to the pool and returns the amount of
    /// the other token paid out, updating the reserves: `reserve_in` grows by
    /// exactly `amount_in` and `reserve_out` shrinks by exactly the returned
    /// amount. On `None` (token not in the pool, overflow) the pool is
    /// unchanged.
    pub fn swap(&mut self, token_in: &Token, amount_in: u128) -> Option<u128> {
        let out = self.quote(token_in, amount_in)?;
        let (r_in, r_out) = self.reserves_for(token_in)?;
        let new_in = r_in.checked_add(amount_in)?;
        // out < r_out, so this never fails and the reserve stays non-zero.
        let new_out = r_out.checked_sub(out)?;
        if *token_in == self.token_a {
            self.reserve_a = new_in;
            self.reserve_b = new_out;
        } else {
            self.reserve_b = new_in;
            self.reserve_a = new_out;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Token {
        Token::new(s)
    }

    #[test]
    fn amount_out_worked_example_30_bps() {
        // 1000 in, reserves 100_000 / 200_000, fee 30 bps.
        // with_fee = 1000 * 9970 = 9_970_000
        // num      = 9_970_000 * 200_000 = 1_994_000_000_000
        // den      = 100_000 * 10_000 + 9_970_000 = 1_009_970_000
        // out      = floor(1_994_000_000_000 / 1_009_970_000) = floor(1974.31...) = 1974
        assert_eq!(amount_out(1000, 100_000, 200_000, 30), Some(1974));
    }

    #[test]
    fn amount_out_matches_uniswap_997_1000() {
        // Uniswap v2: with_fee = 1000 * 997 = 997_000
        // num = 997_000 * 200_000 = 199_400_000_000
        // den = 100_000 * 1000 + 997_000 = 100_997_000
        // out = floor(199_400_000_000 / 100_997_000) = floor(1974.31...) = 1974
        let uni = 997_000u128 * 200_000 / (100_000 * 1000 + 997_000);
        assert_eq!(uni, 1974);
        assert_eq!(amount_out(1000, 100_000, 200_000, 30), Some(uni));
    }

    #[test]
    fn amount_out_zero_fee_and_rounding() {
        // fee 0: with_fee = 10 * 10_000 = 100_000
        // num = 100_000 * 1000 = 100_000_000; den = 100 * 10_000 + 100_000 = 1_100_000
        // out = floor(100_000_000 / 1_100_000) = floor(90.909...) = 90
        assert_eq!(amount_out(10, 100, 1000, 0), Some(90));
        // 1 in, reserves 1000/1000, fee 30: with_fee = 9970
        // num = 9_970_000; den = 10_000_000 + 9970 = 10_009_970
        // out = floor(0.996...) = 0 (dust rounds to nothing)
        assert_eq!(amount_out(1, 1000, 1000, 30), Some(0));
        // 0 in -> 0 out
        assert_eq!(amount_out(0, 1000, 1000, 30), Some(0));
    }

    #[test]
    fn amount_out_rejects_bad_inputs() {
        assert_eq!(amount_out(1, 0, 1000, 30), None);
        assert_eq!(amount_out(1, 1000, 0, 30), None);
        assert_eq!(amount_out(1, 1000, 1000, 10_001), None);
        // 100% fee: nothing comes out.
        assert_eq!(amount_out(1000, 1000, 1000, 10_000), Some(0));
        // amount_in * 10_000 overflows.
        assert_eq!(amount_out(u128::MAX, 1000, 1000, 30), None);
        // reserve_in * 10_000 overflows.
        assert_eq!(amount_out(1, u128::MAX, 1000, 30), None);
    }

    #[test]
    fn amount_out_large_18_decimal_amounts() {
        // 1_000 tokens into a 1_000_000 / 2_000_000 token pool, 18 decimals.
        // with_fee * reserve_out ~ 1e21 * 9970 * 2e24 ~ 2e49 > u128::MAX (3.4e38),
        // so this needs the 256-bit intermediate. Exact value:
        // with_fee = 1e21 * 9970 = 9.97e24
        // num = 9.97e24 * 2e24 = 19_940_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000
        // den = 1e24 * 1e4 + 9.97e24 = 10_009_970_000_000_000_000_000_000_000
        // out = floor(num / den) = 1_992_013_962_079_806_432_986 (big-integer division
        //       done outside Rust, with Python's arbitrary-precision ints)
        let e18 = 1_000_000_000_000_000_000u128;
        let out = amount_out(1_000 * e18, 1_000_000 * e18, 2_000_000 * e18, 30).unwrap();
        assert_eq!(out, 1_992_013_962_079_806_432_986);
    }

    #[test]
    fn mul_div_wide() {
        assert_eq!(mul_div(u128::MAX, u128::MAX, u128::MAX), Some(u128::MAX));
        assert_eq!(mul_div(u128::MAX, 2, 4), Some(u128::MAX / 2));
        assert_eq!(mul_div(u128::MAX, 2, 1), None);
        assert_eq!(mul_div(1, 1, 0), None);
        assert_eq!(mul_div(1 << 100, 1 << 100, 1 << 90), Some(1 << 110));
    }

    #[test]
    fn pool_new_validates() {
        assert_eq!(Pool::new(t("A"), 1, t("A"), 1, 30), Err(PoolError::SameToken));
        assert_eq!(Pool::new(t("A"), 1, t("B"), 1, 10_000), Err(PoolError::FeeTooHigh));
        assert_eq!(Pool::new(t("A"), 0, t("B"), 1, 30), Err(PoolError::ZeroReserve));
        assert!(Pool::new(t("A"), 1, t("B"), 1, 9_999).is_ok());
    }

    #[test]
    fn pool_swap_updates_reserves() {
        let mut p = Pool::new(t("A"), 100_000, t("B"), 200_000, 30).unwrap();
        // Same numbers as `amount_out_worked_example_30_bps`: 1000 A -> 1974 B.
        assert_eq!(p.quote(&t("A"), 1000), Some(1974));
        assert_eq!(p.swap(&t("A"), 1000), Some(1974));
        assert_eq!(p.reserve_a(), 101_000);
        assert_eq!(p.reserve_b(), 198_026);
        // k: 100_000 * 200_000 = 20_000_000_000 before;
        //    101_000 * 198_026 = 20_000_626_000 after (the fee stays in the pool).
        assert_eq!(p.k().to_u128(), Some(20_000_626_000));
        // Swap back 1974 B: with_fee = 1974 * 9970 = 19_680_780
        // num = 19_680_780 * 101_000 = 1_987_758_780_000
        // den = 198_026 * 10_000 + 19_680_780 = 1_999_940_780
        // out = floor(993.90...) = 993 A
        assert_eq!(p.swap(&t("B"), 1974), Some(993));
        assert_eq!(p.reserve_a(), 100_007);
        assert_eq!(p.reserve_b(), 200_000);
        // Unknown token: no change.
        let before = p.clone();
        assert_eq!(p.swap(&t("C"), 5), None);
        assert_eq!(p, before);
    }

    #[test]
    fn pool_prices() {
        let p = Pool::new(t("ETH"), 1_000, t("USDC"), 2_000_000, 30).unwrap();
        // 1 ETH = 2_000_000 / 1_000 = 2000 USDC; 1 USDC = 0.0005 ETH.
        assert_eq!(p.price(&t("ETH")), Some(2000.0));
        assert_eq!(p.price(&t("USDC")), Some(0.0005));
        assert_eq!(p.price(&t("BTC")), None);
        // Marginal rate after a 0.3% fee: 0.997 * 2000 = 1994.
        let r = p.marginal_rate(&t("ETH")).unwrap();
        assert!((r - 1994.0).abs() < 1e-9);
        assert_eq!(p.other(&t("ETH")), Some(&t("USDC")));
        assert_eq!(p.reserve_of(&t("USDC")), Some(2_000_000));
    }

    #[test]
    fn pool_serde_roundtrip_is_validated() {
        let p = Pool::new(t("A"), 5, t("B"), 7, 30).unwrap();
        let params: PoolParams = p.clone().into();
        assert_eq!(Pool::try_from(params).unwrap(), p);
        let bad = PoolParams { token_a: t("A"), token_b: t("A"), reserve_a: 1, reserve_b: 1, fee_bps: 0 };
        assert_eq!(Pool::try_from(bad), Err(PoolError::SameToken));
    }

    #[test]
    fn u256_ordering_and_conversion() {
        let small = U256::mul(3, 4);
        let big = U256::mul(u128::MAX, 2);
        assert!(small < big);
        assert_eq!(small.to_u128(), Some(12));
        assert_eq!(big.to_u128(), None);
        assert_eq!(big.hi(), 1);
        assert_eq!(big.lo(), u128::MAX - 1);
        assert!((big.to_f64() - 2.0 * u128::MAX as f64).abs() / big.to_f64() < 1e-12);
    }

    proptest! {
        /// The 256-bit path agrees with the plain u128 formula whenever the
        /// latter does not overflow.
        #[test]
        fn amount_out_matches_naive_formula(
            a in 0u128..1u128 << 40,
            r_in in 1u128..1u128 << 40,
            r_out in 1u128..1u128 << 40,
            fee in 0u32..=10_000,
        ) {
            let f = a * u128::from(10_000 - fee);
            let naive = f * r_out / (r_in * 10_000 + f);
            prop_assert_eq!(amount_out(a, r_in, r_out, fee), Some(naive));
        }

        /// `mul_div` is exact: q = floor(a*b/d) iff q*d <= a*b < (q+1)*d,
        /// checked in 256 bits.
        #[test]
        fn mul_div_is_floor(a in any::<u128>(), b in any::<u128>(), d in 1u128..) {
            if let Some(q) = mul_div(a, b, d) {
                let ab = U256::mul(a, b);
                prop_assert!(U256::mul(q, d) <= ab);
                // (q+1)*d > a*b; q+1 may be 2^128 only if q == MAX.
                if let Some(q1) = q.checked_add(1) {
                    prop_assert!(U256::mul(q1, d) > ab);
                }
            } else {
                // Quotient does not fit: a*b >= 2^128 * d.
                prop_assert!(U256::mul(a, b).hi() >= d);
            }
        }

        /// Any sequence of swaps: k never decreases, reserves stay non-zero,
        /// and tokens are conserved (what the pool gains/loses is exactly
        /// what the trader pays/receives).
        #[test]
        fn swaps_conserve_tokens_and_never_decrease_k(
            r_a in 1u128..=1_000_000_000_000_000_000_000_000_000_000u128,
            r_b in 1u128..=1_000_000_000_000_000_000_000_000_000_000u128,
            fee in 0u32..10_000,
            swaps in prop::collection::vec(
                (any::<bool>(), 0u128..=1_000_000_000_000_000_000_000_000_000_000u128),
                1..20,
            ),
        ) {
            let (a, b) = (t("A"), t("B"));
            let mut pool = Pool::new(a.clone(), r_a, b.clone(), r_b, fee).unwrap();
            // The trader's balances; each swap's input is first minted to the
            // trader from outside, so per token `reserve + trader` must be the
            // same just before and just after every swap.
            let mut trader = [0u128; 2];
            for (sell_a, amount) in swaps {
                let (i_in, i_out, tin) = if sell_a { (0, 1, &a) } else { (1, 0, &b) };
                let Some(minted) = trader[i_in].checked_add(amount) else { continue };
                trader[i_in] = minted;
                let before = pool.clone();
                let reserves = |p: &Pool| [p.reserve_a(), p.reserve_b()];
                let r0 = reserves(&before);
                let totals_before = [r0[0].checked_add(trader[0]), r0[1].checked_add(trader[1])];
                match pool.swap(tin, amount) {
                    None => prop_assert_eq!(&pool, &before),
                    Some(out) => {
                        trader[i_in] -= amount;
                        trader[i_out] += out;
                        let r1 = reserves(&pool);
                        // The pool gains exactly the input and loses exactly the output.
                        prop_assert_eq!(r1[i_in], r0[i_in] + amount);
                        prop_assert_eq!(r1[i_out], r0[i_out] - out);
                        let totals_after = [r1[0].checked_add(trader[0]), r1[1].checked_add(trader[1])];
                        prop_assert_eq!(totals_after, totals_before);
                        prop_assert!(pool.k() >= before.k());
                        prop_assert!(r1[0] > 0 && r1[1] > 0);
                    }
                }
            }
        }
    }
}
