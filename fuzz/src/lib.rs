//! Helpers shared by the fuzz targets.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `data` as JSON `T` the way the services and the message router do
/// (`serde_json::from_slice`). What decodes must encode, and decoding that encoding must
/// give the same wire form again (the round trip); what does not decode must be a
/// `serde_json::Error`, never a panic. Returns the value, if any.
pub fn json_round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let encoded = serde_json::to_vec(&value).expect("a decoded value encodes");
    let again: T = serde_json::from_slice(&encoded).expect("an encoded value decodes");
    let re_encoded = serde_json::to_vec(&again).expect("a decoded value encodes");
    if encoded != re_encoded {
        // Maps without an order (HashMap) may print their entries in another order.
        let a: serde_json::Value = serde_json::from_slice(&encoded).expect("valid JSON");
        let b: serde_json::Value = serde_json::from_slice(&re_encoded).expect("valid JSON");
        assert_eq!(a, b, "decode(encode(x)) differs from x");
    }
    Some(value)
}

/// Like [`json_round_trip`], and also checks `decode(encode(x)) == x` by value.
pub fn json_round_trip_eq<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    let value: T = json_round_trip(data)?;
    let again: T = serde_json::from_slice(&serde_json::to_vec(&value).unwrap()).unwrap();
    assert_eq!(value, again, "decode(encode(x)) != x");
    Some(value)
}
