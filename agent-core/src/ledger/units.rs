//! Amounts on screen: integers end to end, shown with a fixed number of decimals.

use std::fmt;

use super::tx::Amount;

/// Shows an [`Amount`] of the token's smallest unit with `decimals` digits after the
/// point, with no float anywhere: `Units::new(123_456, 2)` shows as `1234.56`.
///
/// ```
/// use agent_core::ledger::Units;
/// assert_eq!(Units::new(123_456, 2).to_string(), "1234.56");
/// assert_eq!(Units::new(5, 3).to_string(), "0.005");
/// assert_eq!(Units::new(42, 0).to_string(), "42");
/// assert_eq!(Units::new(u128::MAX, 2).to_string(), "3402823669209384634633746074317682114.55");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Units {
    amount: Amount,
    decimals: u32,
}

impl Units {
    /// `amount` smallest units, shown with `decimals` digits after the point (at most 38,
    /// the digits of the largest amount; more are shown as 38).
    pub fn new(amount: Amount, decimals: u32) -> Units {
        Units { amount, decimals: decimals.min(38) }
    }
}

impl fmt::Display for Units {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.decimals == 0 {
            return write!(f, "{}", self.amount);
        }
        let scale = 10u128.pow(self.decimals);
        let width = self.decimals as usize;
        write!(f, "{}.{:0width$}", self.amount / scale, self.amount % scale)
    }
}
