//! The digests of the protocols this crate ships, pinned. Agents find each other by these
//! digests and check each message's schema digest on arrival: a change to any message of
//! a protocol (a field renamed in `Payment`, a variant added to `RejectReason`, a change in
//! how `Address` is described) changes them, and every deployed peer would stop finding
//! or understanding the new build. Such a change must be deliberate: a new version in the
//! protocol's name, and these pins updated with it.

use agent_protocols::{contract_net, double_auction, dutch, english, sealed_bid, settlement};

#[test]
fn shipped_protocol_digests_change_only_deliberately() {
    let shipped = [
        ("contract-net <String, u64, String>", contract_net::protocol::<String, u64, String>()),
        ("english", english::protocol()),
        ("dutch", dutch::protocol()),
        ("sealed-bid", sealed_bid::protocol()),
        ("double auction", double_auction::protocol()),
        ("settlement", settlement::protocol()),
    ];
    let mut printed = String::new();
    for (name, protocol) in &shipped {
        let manifest = protocol.manifest();
        printed += &format!("{name} {} {} {}\n", manifest.name, manifest.version, protocol.digest());
    }
    assert_eq!(printed, PINNED, "a shipped protocol's wire form changed; if deliberate, bump its version and pin anew");
}

const PINNED: &str = "\
contract-net <String, u64, String> agora.contract-net 2.1.0 5c89ba2d124e7e23560b97f13a4e462adc8411b1a8c2e6ec1fa21370b695ed6b
english agora.auction.english 1.0.0 d081f37cf78513d36b6ab42a745d7420a7e313204720a77f6e3efffb7e7495f0
dutch agora.auction.dutch 1.0.0 6ab29655e2b9c3cf70c14e9a32c4a98d2776e95c298e7f9c2d07bf4d713d5ca8
sealed-bid agora.auction.sealed 2.0.0 888851af0644495394df730ee3914da9cad75ee46fe4aebbbb7dd78e62fc7185
double auction agora.auction.double 1.0.0 305644d2cd94ecc78f6b10ea9655ab1d6b54ffd68dd59e3a82d3a2724492cdf8
settlement agora.settlement 2.0.0 60f5cc8d9a65c8b20ab6ea537cb0d2f7951522131d895d3c9b0f6439c191b5d3
";
