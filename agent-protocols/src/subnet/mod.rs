//! Scored subnets: validators score miners, and stake-weighted agreement decides who is paid.
//!
//! [`yuma`] is the scoring rule, Yuma Consensus as Bittensor's subtensor computes it, as a
//! pure function of plain numbers (stakes, a weight matrix, last epoch's bonds, parameters).
//! It knows nothing about networking: feed it what your validators reported and it returns
//! consensus, incentive, dividends, new bonds and the token split. `docs/subnet.md` gives
//! every formula and where it comes from.

pub mod yuma;
