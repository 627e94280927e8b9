//! Schema digests cover a message's whole wire shape. Pinned digests: an accidental change
//! to the canonical schema or the digest would silently break every peer built from an
//! older version, so it must fail here instead. And each change of wire form, however
//! deep, changes the digest; what does not change the wire form does not.

use std::collections::BTreeMap;

use agent_core::{Address, Message};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, JsonSchema, Message)]
struct Ping(u64);

#[derive(Serialize, Deserialize, JsonSchema, Message)]
struct Quote {
    flight: String,
    price_cents: u64,
    seats: Vec<u32>,
}

#[derive(Serialize, Deserialize, JsonSchema, Message)]
struct Bid {
    bidder: Address,
    amount: u128,
    memo: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Message)]
enum Decision {
    Accept { id: u64 },
    Reject(String),
    Withdraw,
}

#[derive(Serialize, Deserialize, JsonSchema, Message)]
struct Heartbeat;

#[test]
fn pinned_digests() {
    assert_eq!(
        Quote::schema().json(),
        r#"{"name":"Quote","schema":{"properties":{"flight":{"type":"string"},"price_cents":{"format":"uint64","minimum":0,"type":"integer"},"seats":{"items":{"format":"uint32","minimum":0,"type":"integer"},"type":"array"}},"required":["flight","price_cents","seats"],"type":"object"}}"#
    );
    let pinned = [
        (Ping::digest(), Ping::schema(), "Ping"),
        (Quote::digest(), Quote::schema(), "Quote"),
        (Bid::digest(), Bid::schema(), "Bid"),
        (Decision::digest(), Decision::schema(), "Decision"),
        (Heartbeat::digest(), Heartbeat::schema(), "Heartbeat"),
    ];
    let mut printed = String::new();
    for (digest, schema, name) in pinned {
        assert_eq!(digest, agent_core::message::schema_digest(schema.json()), "the digest is of the published schema");
        printed += &format!("{name} {digest}\n");
    }
    assert_eq!(
        printed,
        "Ping 1d4140e2f558d9d89500b66befd72e2336a3dbe3c111a4c2af31111316a86d01\n\
         Quote 49d721912c4a95c0e6fd75f4dc70533f9862d6dc335a26e9f0444b1816a701c1\n\
         Bid ba4afeeed84b444ecee8c3f256f02bccc5e8cdf744cfd57894f9071c49cfc4ad\n\
         Decision cab84e31ec774545f092bb90d471cdf5d24f49f22d8dd7ea11b26e14e7d1e27e\n\
         Heartbeat 3fd14751274374da7ab157338af8812883e7943ad10bf0b607e21a8119b03d19\n"
    );
}

mod same_type_other_binary {
    use super::*;

    /// Same name, fields reordered, doc comments added, paths spelled out.
    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Quote")]
    pub struct Reordered {
        /// Seats still free.
        pub seats: std::vec::Vec<u32>,
        /// In cents.
        pub price_cents: u64,
        pub flight: std::string::String,
    }

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Quote")]
    pub struct Renamed {
        pub flight: String,
        pub price: u64,
        pub seats: Vec<u32>,
    }

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Quote")]
    pub struct Retyped {
        pub flight: String,
        pub price_cents: u32,
        pub seats: Vec<u32>,
    }

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
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
    assert_eq!(Reordered::digest(), Quote::digest());
    assert_ne!(Renamed::digest(), Quote::digest());
    assert_ne!(Retyped::digest(), Quote::digest());
    assert_eq!(SerdeRenamed::digest(), Renamed::digest(), "the wire name counts, not the Rust name");
}

/// Two versions of one program's types: `v1` and `v2` differ in one nested place each; the
/// message type itself is unchanged in source.
mod v1 {
    use super::*;

    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Seat {
        pub row: u32,
        pub letter: char,
    }

    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub enum Class {
        Economy,
        Business { lounge: bool },
    }

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Booking")]
    pub struct Booking {
        pub seat: Seat,
        pub class: Class,
        pub extras: Option<Vec<Seat>>,
        pub prices: BTreeMap<String, Seat>,
    }
}

macro_rules! variant {
    ($module:ident, $seat:item, $class:item) => {
        #[allow(dead_code)] // Only their schemas are used.
        mod $module {
            use super::*;
            $seat
            $class
            #[derive(Serialize, Deserialize, JsonSchema, Message)]
            #[message(name = "Booking")]
            pub struct Booking {
                pub seat: Seat,
                pub class: Class,
                pub extras: Option<Vec<Seat>>,
                pub prices: BTreeMap<String, Seat>,
            }
        }
    };
}

variant!(
    nested_field_retyped,
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Seat {
        pub row: u64,
        pub letter: char,
    },
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub enum Class {
        Economy,
        Business { lounge: bool },
    }
);
variant!(
    nested_rename_all,
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub struct Seat {
        pub row: u32,
        pub letter: char,
    },
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub enum Class {
        Economy,
        Business { lounge: bool },
    }
);
variant!(
    variant_field_added,
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Seat {
        pub row: u32,
        pub letter: char,
    },
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub enum Class {
        Economy,
        Business { lounge: bool, meals: u8 },
    }
);
variant!(
    enum_internally_tagged,
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Seat {
        pub row: u32,
        pub letter: char,
    },
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    #[serde(tag = "kind")]
    pub enum Class {
        Economy,
        Business { lounge: bool },
    }
);
variant!(
    enum_adjacently_tagged,
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Seat {
        pub row: u32,
        pub letter: char,
    },
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    #[serde(tag = "kind", content = "data")]
    pub enum Class {
        Economy,
        Business { lounge: bool },
    }
);
variant!(
    enum_untagged,
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Seat {
        pub row: u32,
        pub letter: char,
    },
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    #[serde(untagged)]
    pub enum Class {
        Economy,
        Business { lounge: bool },
    }
);
variant!(
    nested_field_skipped,
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Seat {
        pub row: u32,
        #[serde(skip)]
        pub letter: char,
    },
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub enum Class {
        Economy,
        Business { lounge: bool },
    }
);
variant!(
    nested_field_defaulted,
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Seat {
        pub row: u32,
        #[serde(default)]
        pub letter: char,
    },
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub enum Class {
        Economy,
        Business { lounge: bool },
    }
);
variant!(
    variants_reordered_and_documented,
    /// A seat.
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Seat {
        pub letter: char,
        /** The row. */
        pub row: u32,
    },
    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub enum Class {
        Business { lounge: bool },
        Economy,
    }
);

#[allow(dead_code)] // Only their schemas are used.
mod flattened {
    use super::*;

    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Row {
        pub row: u32,
    }

    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Seat {
        #[serde(flatten)]
        pub at: Row,
        pub letter: char,
    }

    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    pub struct Nested {
        pub at: Row,
        pub letter: char,
    }

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Seat")]
    pub struct Flat(pub Seat);

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Seat")]
    pub struct Deep(pub Nested);

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Seat")]
    pub struct Plain(pub super::v1::Seat);
}

#[test]
fn a_change_anywhere_in_the_wire_form_changes_the_digest() {
    let original = v1::Booking::digest();
    let changed = [
        ("a nested struct's field retyped", nested_field_retyped::Booking::digest()),
        ("rename_all on a nested struct", nested_rename_all::Booking::digest()),
        ("a field added to an enum variant", variant_field_added::Booking::digest()),
        ("enum tag", enum_internally_tagged::Booking::digest()),
        ("enum tag and content", enum_adjacently_tagged::Booking::digest()),
        ("untagged enum", enum_untagged::Booking::digest()),
        ("a nested field skipped", nested_field_skipped::Booking::digest()),
        ("a nested field defaulted", nested_field_defaulted::Booking::digest()),
    ];
    let mut seen = vec![original];
    for (what, digest) in changed {
        assert!(!seen.contains(&digest), "{what}: the digest must differ from the original and every other change");
        seen.push(digest);
    }
    assert_eq!(
        variants_reordered_and_documented::Booking::digest(),
        original,
        "reordering fields or variants and adding doc comments changes nothing on the wire"
    );
    // `flatten` puts the inner fields beside the outer ones: the same wire form as the
    // plain struct, and not the form of the same types nested.
    assert_eq!(flattened::Flat::digest(), flattened::Plain::digest());
    assert_ne!(flattened::Flat::digest(), flattened::Deep::digest());
}

async fn on_booking(_ctx: agent_core::Context, _from: Address, _booking: v1::Booking) -> Result<(), String> {
    Ok(())
}

/// The manifest publishes each message's schema beside its digest, and a program that
/// reads it can check the one against the other.
#[test]
fn the_manifest_publishes_schemas_a_reader_can_check() {
    use agent_core::protocol::{Manifest, Protocol};
    let protocol = Protocol::new("booking", "1.0.0").on_message(on_booking);
    let manifest = protocol.manifest();
    let text = manifest.to_json();
    let published: serde_json::Value = serde_json::from_str(&text).unwrap();
    let message = &published["messages"][0];
    assert_eq!(message["digest"], v1::Booking::digest().to_string());
    let schema = message["schema"].as_str().unwrap();
    assert_eq!(agent_core::message::schema_digest(schema), v1::Booking::digest());
    let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
    assert_eq!(schema["schema"]["properties"]["seat"]["properties"]["row"]["type"], "integer", "nested types inline");

    let tampered = text.replace("\\\"row\\\"", "\\\"rows\\\"");
    assert_ne!(tampered, text);
    assert!(Manifest::from_json(&tampered).is_err(), "a schema that does not match its digest is refused");
    assert_eq!(Manifest::from_json(&text).unwrap(), manifest);
}

/// A protocol whose messages carry open data (a task as JSON) publishes the data's type
/// beside its messages: the digest then tells apart programs that disagree on it, and a
/// reader can check each payload schema against its digest.
#[test]
fn payload_types_are_published_and_change_the_digest() {
    use agent_core::protocol::{Manifest, Protocol};
    let bare = Protocol::new("booking", "1.0.0").on_message(on_booking);
    assert!(!bare.manifest().to_json().contains("payloads"), "no payloads: the manifest and digest are as before");

    let with_seat = Protocol::new("booking", "1.0.0").on_message(on_booking).payload::<v1::Seat>("seat");
    let retyped =
        Protocol::new("booking", "1.0.0").on_message(on_booking).payload::<nested_field_retyped::Seat>("seat");
    let other_role = Protocol::new("booking", "1.0.0").on_message(on_booking).payload::<v1::Seat>("place");
    let digests = [bare.digest(), with_seat.digest(), retyped.digest(), other_role.digest()];
    for (i, digest) in digests.iter().enumerate() {
        assert!(!digests[..i].contains(digest), "protocol {i}: a payload's type and role are part of the digest");
    }
    let reordered = Protocol::new("booking", "1.0.0")
        .payload::<v1::Class>("class")
        .payload::<v1::Seat>("seat")
        .on_message(on_booking);
    let in_order = Protocol::new("booking", "1.0.0")
        .on_message(on_booking)
        .payload::<v1::Seat>("seat")
        .payload::<v1::Class>("class");
    assert_eq!(reordered.digest(), in_order.digest(), "declaration order does not matter");

    let text = with_seat.manifest().to_json();
    let published: serde_json::Value = serde_json::from_str(&text).unwrap();
    let payload = &published["payloads"][0];
    assert_eq!(payload["role"], "seat");
    let schema = payload["schema"].as_str().unwrap();
    assert_eq!(payload["digest"], agent_core::message::schema_digest(schema).to_string());
    assert_eq!(Manifest::from_json(&text).unwrap().digest(), with_seat.digest());
    // Only the payload mentions `letter` here, so only its digest can catch the change.
    let text = Protocol::new("seats", "1.0.0").payload::<v1::Seat>("seat").manifest().to_json();
    let tampered = text.replace("\\\"letter\\\"", "\\\"letters\\\"");
    assert_ne!(tampered, text);
    assert!(
        matches!(
            Manifest::from_json(&tampered),
            Err(agent_core::protocol::ManifestError::PayloadDigestMismatch { .. })
        ),
        "a payload schema that does not match its digest is refused"
    );
}

mod annotation_named_fields {
    use super::*;

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Book")]
    pub struct Text {
        pub title: String,
        pub description: String,
    }

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Book")]
    pub struct Number {
        pub title: u64,
        pub description: String,
    }

    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    #[serde(untagged)]
    pub enum IntFirst {
        I(u64),
        F(f64),
    }

    #[derive(Serialize, Deserialize, JsonSchema, agent_core::WireSchema)]
    #[serde(untagged)]
    pub enum FloatFirst {
        F(f64),
        I(u64),
    }

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Reading")]
    pub struct ReadingA(pub IntFirst);

    #[derive(Serialize, Deserialize, JsonSchema, Message)]
    #[message(name = "Reading")]
    pub struct ReadingB(pub FloatFirst);
}

#[test]
fn fields_named_like_schema_keywords_and_untagged_variant_order_count() {
    use annotation_named_fields::*;
    assert_ne!(Text::digest(), Number::digest(), "a field named `title` is a field, not an annotation");
    assert!(Text::schema().json().contains(r#""title":{"type":"string"}"#), "{}", Text::schema().json());
    // serde tries untagged variants in order: `5` is an integer in one, a float in the other.
    assert_ne!(ReadingA::digest(), ReadingB::digest());
}
