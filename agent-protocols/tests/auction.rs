//! Each auction's winner and price, on random bids, against a direct computation of its
//! rules (written as plainly as possible, not as the library computes them).

use agent_core::Address;
use agent_protocols::auction::{self, Acceptance, Award, Bid, Order};
use proptest::prelude::*;

fn trader(i: u8) -> Address {
    Address::from_bytes([i; 32])
}

/// Arrival numbers: distinct and increasing, with gaps, so that a rule applied by position
/// instead of by arrival would not pass by chance.
fn arrivals(gaps: impl IntoIterator<Item = u64>, offset: u64) -> impl Iterator<Item = u64> {
    gaps.into_iter().scan(offset, |seq, gap| {
        *seq += gap;
        Some(*seq)
    })
}

/// Bids as they might be handed over: in any order, each with its arrival number.
fn bids() -> impl Strategy<Value = Vec<Bid>> {
    prop::collection::vec((0u8..8, 0u128..200, 1u64..4), 0..24)
        .prop_map(|raw| {
            let seqs = arrivals(raw.iter().map(|r| r.2), 0);
            raw.iter()
                .zip(seqs)
                .map(|((who, amount, _), seq)| Bid { bidder: trader(*who), amount: *amount, seq })
                .collect()
        })
        .prop_shuffle()
}

/// Orders of the traders numbered in `traders`, in any order, arrival numbers from `offset`.
fn orders(traders: std::ops::Range<u8>, offset: u64) -> impl Strategy<Value = Vec<Order>> {
    prop::collection::vec((traders, 0u128..100, 0u64..5, 1u64..4), 0..10)
        .prop_map(move |raw| {
            let seqs = arrivals(raw.iter().map(|r| r.3), offset);
            raw.iter()
                .zip(seqs)
                .map(|((who, price, quantity, _), seq)| Order {
                    trader: trader(*who),
                    price: *price,
                    quantity: *quantity,
                    seq,
                })
                .collect()
        })
        .prop_shuffle()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// English: a bid counts if it reaches the reserve and beats every counted bid before
    /// it by the increment; the last one counted wins at its amount.
    #[test]
    fn english_matches_its_rules(bids in bids(), reserve_asked in 0u128..100, increment in 0u128..20) {
        // Nothing trades at 0 (the ledger cannot pay it): a reserve of 0 is one of 1.
        let (increment, reserve) = (increment.max(1), reserve_asked.max(1));
        let mut arrived = bids.clone();
        arrived.sort_by_key(|b| b.seq);
        let mut counted: Vec<Bid> = Vec::new();
        for bid in &arrived {
            let beats_all = counted.iter().all(|c| bid.amount >= c.amount + increment);
            if bid.amount >= reserve && beats_all {
                counted.push(*bid);
            }
        }
        let expected = counted.last().map(|b| Award { winner: b.bidder, price: b.amount });
        prop_assert_eq!(auction::english(&bids, reserve_asked, increment), expected);
    }

    /// Vickrey: the highest counted bid (earliest among equals) wins and pays the highest
    /// counted bid of another bidder, or the reserve.
    #[test]
    fn vickrey_matches_its_rules(bids in bids(), reserve_asked in 0u128..100) {
        let reserve = reserve_asked.max(1);
        let mut counted: Vec<Bid> = bids.iter().filter(|b| b.amount >= reserve).copied().collect();
        counted.sort_by(|a, b| b.amount.cmp(&a.amount).then(a.seq.cmp(&b.seq)));
        let expected = counted.first().map(|w| Award {
            winner: w.bidder,
            price: counted.iter().find(|b| b.bidder != w.bidder).map_or(reserve, |s| s.amount.max(reserve)),
        });
        prop_assert_eq!(auction::vickrey(&bids, reserve_asked), expected);
    }

    /// First price: the highest counted bid (earliest among equals) wins and pays itself.
    #[test]
    fn first_price_matches_its_rules(bids in bids(), reserve_asked in 0u128..100) {
        let reserve = reserve_asked.max(1);
        let mut counted: Vec<Bid> = bids.iter().filter(|b| b.amount >= reserve).copied().collect();
        counted.sort_by(|a, b| b.amount.cmp(&a.amount).then(a.seq.cmp(&b.seq)));
        let expected = counted.first().map(|w| Award { winner: w.bidder, price: w.amount });
        prop_assert_eq!(auction::first_price(&bids, reserve_asked), expected);
    }

    /// Dutch: in order of arrival, the first acceptance at a tick the clock reached (from the
    /// start price, a step less each tick, down to the floor) wins at that tick's price.
    #[test]
    fn dutch_matches_its_rules(
        raw in prop::collection::vec((0u8..8, 0u64..40, 1u64..4), 0..16).prop_shuffle(),
        start in 50u128..500,
        step in 1u128..30,
        floor in 0u128..100,
    ) {
        // Shuffled before numbering: arrival numbers are not in list order.
        let mut seqs: Vec<u64> = arrivals(raw.iter().map(|r| r.2), 0).collect();
        seqs.reverse();
        let acceptances: Vec<Acceptance> = raw.iter().zip(seqs)
            .map(|((who, tick, _), seq)| Acceptance { bidder: trader(*who), tick: *tick, seq })
            .collect();
        let mut by_arrival: Vec<&Acceptance> = acceptances.iter().collect();
        by_arrival.sort_by_key(|a| a.seq);
        let mut expected = None;
        for accepted in by_arrival {
            // The clock reaches a tick while its price is at the floor or above.
            let fall = step * u128::from(accepted.tick);
            if start >= fall && start - fall >= floor.max(1) {
                expected = Some(Award { winner: accepted.bidder, price: start - fall });
                break;
            }
        }
        prop_assert_eq!(auction::dutch(&acceptances, start, step, floor), expected);
    }

    /// Double auction: unit by unit, the k-th highest bid unit trades with the k-th lowest
    /// ask unit while it is at least as high; the volume is the number of such units, and
    /// the price clears the market (willing matched units, unwilling unmatched ones). The
    /// units filled are the best-ranked ones, per trader exactly. Every buyer gets no more
    /// than it bid for at no more than its limit; every seller likewise.
    #[test]
    fn double_auction_matches_its_rules(
        bids in orders(0..6, 0),
        asks in orders(6..12, 100),
    ) {
        let cleared = auction::double(&bids, &asks);
        // Nothing trades at 0 (the ledger cannot pay it): a bid of 0 does not count, and an
        // ask of 0 is one of 1.
        let bids: Vec<Order> = bids.iter().filter(|o| o.price >= 1).copied().collect();
        let asks: Vec<Order> = asks.iter().map(|o| Order { price: o.price.max(1), ..*o }).collect();
        let mut bid_units: Vec<u128> = bids.iter().flat_map(|o| std::iter::repeat_n(o.price, o.quantity as usize)).collect();
        let mut ask_units: Vec<u128> = asks.iter().flat_map(|o| std::iter::repeat_n(o.price, o.quantity as usize)).collect();
        bid_units.sort_by(|a, b| b.cmp(a));
        ask_units.sort();
        let matched = bid_units.iter().zip(&ask_units).take_while(|(b, a)| b >= a).count();
        if matched == 0 {
            prop_assert!(cleared.is_none());
        } else {
            let cleared = cleared.unwrap();
            prop_assert_eq!(cleared.volume(), matched as u64);
            let (last_bid, last_ask) = (bid_units[matched - 1], ask_units[matched - 1]);
            let low = bid_units.get(matched).map_or(last_ask, |next| last_ask.max(*next));
            let high = ask_units.get(matched).map_or(last_bid, |next| last_bid.min(*next));
            prop_assert_eq!(cleared.price, low + (high - low) / 2);
            // Clearing: every matched unit is willing at the price, no unmatched one is.
            prop_assert!(bid_units[..matched].iter().all(|b| *b >= cleared.price));
            prop_assert!(ask_units[..matched].iter().all(|a| *a <= cleared.price));
            prop_assert!(bid_units[matched..].iter().all(|b| *b <= cleared.price), "an unmatched buyer would buy");
            prop_assert!(ask_units[matched..].iter().all(|a| *a >= cleared.price), "an unmatched seller would sell");
            // Who is filled: the first `matched` units in rank order (bids highest first,
            // asks lowest first, the earlier order first at an equal price), each trader
            // getting exactly the units of its orders among them.
            let ranked_units = |orders: &[Order], highest_first: bool| -> Vec<Address> {
                let mut ranked: Vec<&Order> = orders.iter().collect();
                ranked.sort_by_key(|o| (if highest_first { u128::MAX - o.price } else { o.price }, o.seq));
                ranked.iter().flat_map(|o| std::iter::repeat_n(o.trader, o.quantity as usize)).collect()
            };
            let (buyers, sellers) = (ranked_units(&bids, true), ranked_units(&asks, false));
            for who in bids.iter().map(|o| o.trader) {
                let expected = buyers[..matched].iter().filter(|b| **b == who).count() as u64;
                let bought: u64 = cleared.fills.iter().filter(|f| f.buyer == who).map(|f| f.quantity).sum();
                prop_assert_eq!(bought, expected, "buyer {:?} filled out of rank order", who);
            }
            for who in asks.iter().map(|o| o.trader) {
                let expected = sellers[..matched].iter().filter(|s| **s == who).count() as u64;
                let sold: u64 = cleared.fills.iter().filter(|f| f.seller == who).map(|f| f.quantity).sum();
                prop_assert_eq!(sold, expected, "seller {:?} filled out of rank order", who);
            }
            for order in &bids {
                let bought: u64 = cleared.fills.iter().filter(|f| f.buyer == order.trader).map(|f| f.quantity).sum();
                let wanted: u64 = bids.iter().filter(|o| o.trader == order.trader && o.price >= cleared.price).map(|o| o.quantity).sum();
                prop_assert!(bought <= wanted, "a buyer got more than it bid for at this price");
            }
            for order in &asks {
                let sold: u64 = cleared.fills.iter().filter(|f| f.seller == order.trader).map(|f| f.quantity).sum();
                let offered: u64 = asks.iter().filter(|o| o.trader == order.trader && o.price <= cleared.price).map(|o| o.quantity).sum();
                prop_assert!(sold <= offered, "a seller sold more than it asked to at this price");
            }
        }
    }
}

#[test]
fn a_vickrey_winner_does_not_pay_its_own_second_bid() {
    let (a, b) = (trader(1), trader(2));
    let bids = [
        Bid { bidder: a, amount: 100, seq: 0 },
        Bid { bidder: a, amount: 90, seq: 1 },
        Bid { bidder: b, amount: 60, seq: 2 },
    ];
    assert_eq!(auction::vickrey(&bids, 10), Some(Award { winner: a, price: 60 }));
}

#[test]
fn documented_ties_go_to_the_earlier_bid() {
    let (a, b) = (trader(1), trader(2));
    let tied = [Bid { bidder: b, amount: 50, seq: 2 }, Bid { bidder: a, amount: 50, seq: 1 }];
    assert_eq!(auction::vickrey(&tied, 10), Some(Award { winner: a, price: 50 }));
    assert_eq!(
        auction::english(&tied, 10, 1),
        Some(Award { winner: a, price: 50 }),
        "the later equal bid does not beat it"
    );
    let accepted = [Acceptance { bidder: b, tick: 3, seq: 9 }, Acceptance { bidder: a, tick: 3, seq: 4 }];
    assert_eq!(auction::dutch(&accepted, 100, 10, 0), Some(Award { winner: a, price: 70 }));
}

/// Nothing trades at 0, which the ledger could not pay: a reserve or floor of 0 is one of
/// 1, a bid of 0 does not count, and an ask of 0 is one of 1.
#[test]
fn nothing_is_awarded_at_zero() {
    let (a, b) = (trader(1), trader(2));
    let zero = [Bid { bidder: a, amount: 0, seq: 0 }];
    assert_eq!(auction::english(&zero, 0, 1), None);
    assert_eq!(auction::first_price(&zero, 0), None);
    assert_eq!(auction::vickrey(&zero, 0), None);
    let alone = [Bid { bidder: a, amount: 10, seq: 0 }];
    assert_eq!(auction::vickrey(&alone, 0), Some(Award { winner: a, price: 1 }), "the reserve, as 1");
    // From 10, 5 less each tick: 10, 5, then 0, which the clock does not call.
    let at_zero = [Acceptance { bidder: a, tick: 2, seq: 0 }];
    assert_eq!(auction::dutch(&at_zero, 10, 5, 0), None);
    let at_five = [Acceptance { bidder: a, tick: 1, seq: 0 }];
    assert_eq!(auction::dutch(&at_five, 10, 5, 0), Some(Award { winner: a, price: 5 }));
    let order = |trader, price| Order { trader, price, quantity: 1, seq: 0 };
    assert_eq!(auction::double(&[order(a, 0)], &[order(b, 0)]), None);
    let cleared = auction::double(&[order(a, 10)], &[order(b, 0)]).unwrap();
    assert_eq!((cleared.price, cleared.volume()), (5, 1), "between the ask as 1 and the bid of 10");
}
