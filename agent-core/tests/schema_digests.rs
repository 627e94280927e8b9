//! Pins schema digests: an accidental change to the canonical schema or the digest would
//! silently break every peer built from an older version, so it must fail here instead.

use agent_core::{Address, Message};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Message)]
struct Ping(u64);

#[derive(Serialize, Deserialize, Message)]
struct Quote {
    flight: String,
    price_cents: u64,
    seats: Vec<u32>,
}

#[derive(Serialize, Deserialize, Message)]
struct Bid {
    bidder: Address,
    amount: u128,
    memo: Option<String>,
}

#[derive(Serialize, Deserialize, Message)]
enum Decision {
    Accept { id: u64 },
    Reject(String),
    Withdraw,
}

#[derive(Serialize, Deserialize, Message)]
struct Heartbeat;

#[test]
fn pinned_digests() {
    let cases: [(&str, &str, agent_core::SchemaDigest); 5] = [
        (Ping::SCHEMA, "Ping(u64)", Ping::DIGEST),
        (Quote::SCHEMA, "Quote{flight:String,price_cents:u64,seats:Vec<u32>}", Quote::DIGEST),
        (Bid::SCHEMA, "Bid{amount:u128,bidder:Address,memo:Option<String>}", Bid::DIGEST),
        (Decision::SCHEMA, "Decision=Accept{id:u64}|Reject(String)|Withdraw", Decision::DIGEST),
        (Heartbeat::SCHEMA, "Heartbeat", Heartbeat::DIGEST),
    ];
    for (schema, expected_schema, digest) in cases {
        assert_eq!(schema, expected_schema);
        assert_eq!(digest, agent_core::protocol::schema_digest(schema), "the derive and the runtime agree");
    }
    let pinned = [
        (Ping::DIGEST, "c495582d0665346af58041333fc58237e930b7c93109cc94dfc821db725a3af7"),
        (Quote::DIGEST, "e0363df5195442548b54179c3d2d65aecaafc1f99df16ccf438c94ec8d6ea87d"),
        (Bid::DIGEST, "d374464ed3f684c3ba5afc15a6917989848bcd2f4659e30539a6fed76fcd6336"),
        (Decision::DIGEST, "7c6b40d17f04258032188619461b1be727307b9c474d76f023099ec4407234f9"),
        (Heartbeat::DIGEST, "ad6c02a9b108d5523a9db0f1be16b53203d78f5f629cd81ab14178ec9ba00132"),
    ];
    for (digest, expected) in pinned {
        assert_eq!(digest.to_string(), expected);
    }
}

mod same_type_other_binary {
    use super::*;

    /// Same name, fields reordered, doc comments added, paths spelled out.
    #[derive(Serialize, Deserialize, Message)]
    #[message(name = "Quote")]
    pub struct Reordered {
        /// Seats still free.
        pub seats: std::vec::Vec<u32>,
        /// In cents.
        pub price_cents: u64,
        pub flight: std::string::String,
    }

    #[derive(Serialize, Deserialize, Message)]
    #[message(name = "Quote")]
    pub struct Renamed {
        pub flight: String,
        pub price: u64,
        pub seats: Vec<u32>,
    }

    #[derive(Serialize, Deserialize, Message)]
    #[message(name = "Quote")]
    pub struct Retyped {
        pub flight: String,
        pub price_cents: u32,
        pub seats: Vec<u32>,
    }

    #[derive(Serialize, Deserialize, Message)]
    #[message(name = "Quote")]
    pub struct SerdeRenamed {
        pub flight: String,
        #[serde(rename = "price")]
        pub price_cents: u64,
        pub seats: Vec<u32>,
    }
}

#[test]
fn order_and_docs_do_not_matter_names_and_types_do() {
    use same_type_other_binary::*;
    assert_eq!(Reordered::DIGEST, Quote::DIGEST);
    assert_ne!(Renamed::DIGEST, Quote::DIGEST);
    assert_ne!(Retyped::DIGEST, Quote::DIGEST);
    assert_eq!(SerdeRenamed::DIGEST, Renamed::DIGEST, "the wire name counts, not the Rust name");
}
