//! Agent identities: ed25519 keys and the addresses derived from them.
//!
//! An [`Address`] is the sha256 digest of an agent's ed25519 public key, printed as a
//! bech32m string with the prefix `agent` (for example `agent1q…`). The checksum catches
//! typing mistakes; [`Address::from_str`](std::str::FromStr) names what is wrong.
//!
//! An [`Identity`] holds the private key. Create one from a seed phrase (deterministic:
//! the same seed gives the same address on every machine), from a key file, or fresh (held
//! in memory only). A key file is written only by [`Identity::save`], with mode 0600.
//! Neither `Debug` nor `Display` of an identity shows the key.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The human-readable prefix of every agent address.
pub const ADDRESS_PREFIX: &str = "agent";

/// A checksummed agent address: sha256 of the agent's ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address([u8; 32]);

impl Address {
    /// The address that belongs to `key`.
    pub fn from_public_key(key: &PublicKey) -> Self {
        let digest: [u8; 32] = Sha256::new().chain_update(b"agora.address.v1").chain_update(key.0).finalize().into();
        Address(digest)
    }

    /// Wraps raw address bytes (as carried in an envelope).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Address(bytes)
    }

    /// The raw 32 address bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse_unchecked(ADDRESS_PREFIX);
        bech32::encode_lower_to_fmt::<Bech32m, _>(f, hrp, &self.0).map_err(|_| fmt::Error)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

/// Why a string is not an agent address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The string is not bech32m at all, or its checksum does not match (a typo).
    #[error("not a valid agent address (bad bech32m encoding or checksum): {0}")]
    Checksum(String),
    /// Well-formed bech32m, but for another kind of key.
    #[error("wrong address prefix `{found}`, expected `{ADDRESS_PREFIX}`")]
    Prefix {
        /// The prefix the string carries.
        found: String,
    },
    /// Well-formed bech32m with the right prefix, but not 32 bytes long.
    #[error("agent address holds {0} bytes, expected 32")]
    Length(usize),
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let checked = CheckedHrpstring::new::<Bech32m>(s.trim()).map_err(|e| AddressError::Checksum(e.to_string()))?;
        let hrp = checked.hrp();
        if !hrp.as_str().eq_ignore_ascii_case(ADDRESS_PREFIX) {
            return Err(AddressError::Prefix { found: hrp.to_string() });
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| AddressError::Length(bytes.len()))?;
        Ok(Address(array))
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// On the wire an address is its bech32m text, so its schema (and every message schema
/// containing one) says so.
impl schemars::JsonSchema for Address {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Address".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^agent1[02-9ac-hj-np-z]{58}$" })
    }
}

impl crate::message::WireSchema for Address {}

/// An ed25519 public key, as carried in envelopes and registrations.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0))
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::message::hex_digest::serialize(&self.0, s)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::message::hex_digest::deserialize(d).map(PublicKey)
    }
}

/// On the wire a public key is 64 hex digits.
impl schemars::JsonSchema for PublicKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PublicKey".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^[0-9a-f]{64}$" })
    }
}

impl crate::message::WireSchema for PublicKey {}

impl PublicKey {
    /// Checks `signature` over `message`. Fails on a key that is not a curve point too.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::InvalidKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(message, &sig).map_err(|_| SignatureError::Mismatch)
    }
}

/// Verifies many signatures together (about twice as fast per signature as one by one).
/// Returns, for each `(key, message, signature)`, whether it was verified here; one that was
/// not must be checked on its own with [`PublicKey::verify`] (it may still be valid).
///
/// A plain batch checks the cofactored equation and lets small-order keys through, so it
/// would accept, for any message, "signatures" under a weak key that strict verification
/// refuses. Here an item enters the batch only if its key is a point of the prime-order
/// subgroup (checked once per distinct key in the batch) and its `R` is canonical and not
/// of small order. What the batch accepts then differs from [`PublicKey::verify`] only for
/// a signature whose `R` carries a torsion part: something only the key's holder can make,
/// about a message they could as well have signed properly (`docs/wire-format.md`).
pub fn verify_batch_strict(items: &[(&PublicKey, &[u8], &[u8; 64])]) -> Vec<bool> {
    let mut verified = vec![false; items.len()];
    let mut members = Vec::with_capacity(items.len());
    let (mut keys, mut messages, mut signatures) = (Vec::new(), Vec::new(), Vec::new());
    let mut sound_keys: std::collections::HashMap<[u8; 32], bool> = std::collections::HashMap::new();
    for (i, (key, message, signature)) in items.iter().enumerate() {
        let Ok(verifying) = VerifyingKey::from_bytes(&key.0) else { continue };
        let sound = *sound_keys.entry(key.0).or_insert_with(|| is_prime_order_point(&key.0));
        if !sound || !is_acceptable_r(&signature[..32]) {
            continue;
        }
        members.push(i);
        keys.push(verifying);
        messages.push(*message);
        signatures.push(ed25519_dalek::Signature::from_bytes(signature));
    }
    if members.len() >= 2 && ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        for i in members {
            verified[i] = true;
        }
    }
    verified
}

/// Whether `bytes` canonically encodes a point of the prime-order subgroup other than the
/// identity: not of small order, no torsion part (a scalar multiplication: worth it once per
/// key, not per signature).
fn is_prime_order_point(bytes: &[u8]) -> bool {
    let Ok(bytes) = <[u8; 32]>::try_from(bytes) else { return false };
    let compressed = curve25519_dalek::edwards::CompressedEdwardsY(bytes);
    match compressed.decompress() {
        Some(point) => point.compress() == compressed && !point.is_small_order() && point.is_torsion_free(),
        None => false,
    }
}

/// Whether a signature's `R` may enter a batch: its `y` is canonical (below the field
/// prime) and it is none of the eight points of small order, which strict verification
/// refuses. Byte comparisons only, so it costs next to nothing per signature; whether `R`
/// is a point at all is for the batch to find out.
fn is_acceptable_r(bytes: &[u8]) -> bool {
    let Ok(mut y) = <[u8; 32]>::try_from(bytes) else { return false };
    y[31] &= 0x7f;
    // The field prime 2^255 - 19, little-endian.
    let mut prime = [0xffu8; 32];
    prime[0] = 0xed;
    prime[31] = 0x7f;
    let below_prime = y.iter().rev().cmp(prime.iter().rev()) == std::cmp::Ordering::Less;
    below_prime && !small_order_ys().contains(&y)
}

/// The `y` coordinates (sign bit cleared) of the eight points of small order.
fn small_order_ys() -> &'static [[u8; 32]; 8] {
    static YS: std::sync::OnceLock<[[u8; 32]; 8]> = std::sync::OnceLock::new();
    YS.get_or_init(|| {
        curve25519_dalek::constants::EIGHT_TORSION.map(|point| {
            let mut y = point.compress().to_bytes();
            y[31] &= 0x7f;
            y
        })
    })
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key bytes are not a valid ed25519 key.
    #[error("public key is not a valid ed25519 key")]
    InvalidKey,
    /// The signature was not made by this key over this message.
    #[error("signature does not match the message and key")]
    Mismatch,
}

/// Serde for a 64-byte ed25519 signature as 128 hex digits:
/// `#[serde(with = "agent_core::identity::signature_hex")]`.
pub mod signature_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the signature as hex.
    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Reads a signature from hex, refusing any other length.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(text.as_ref(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// An agent's private key and the address it proves.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    address: Address,
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file does not hold a key in the expected format (64 hex digits).
    #[error("key file {path} is malformed: expected 64 hex digits of an ed25519 secret key")]
    Malformed {
        /// The file.
        path: String,
    },
    /// The file may be read by other users; a key must be readable by its owner alone.
    #[error("key file {path} is readable by others (mode {mode:o}); run `chmod 600` on it")]
    Permissions {
        /// The file.
        path: String,
        /// Its current mode bits.
        mode: u32,
    },
}

impl Identity {
    /// A fresh random identity, held in memory only.
    pub fn generate() -> Self {
        Self::from_secret(SigningKey::generate(&mut rand::rngs::OsRng).to_bytes())
    }

    /// A deterministic identity: the same seed phrase gives the same key everywhere.
    ///
    /// A seed is a secret: anyone who knows it can act as this agent.
    pub fn from_seed(seed: &str) -> Self {
        let secret: [u8; 32] =
            Sha256::new().chain_update(b"agora.seed.v1").chain_update(seed.as_bytes()).finalize().into();
        Self::from_secret(secret)
    }

    /// An identity from raw ed25519 secret key bytes.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&secret);
        let address = Address::from_public_key(&PublicKey(key.verifying_key().to_bytes()));
        Identity { key, address }
    }

    /// Loads a key file written by [`Identity::save`]. On Unix, refuses a file that others
    /// may read.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let io = |source| IdentityError::Io { path: shown.clone(), source };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::Permissions { path: shown, mode });
            }
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| IdentityError::Malformed { path: shown.clone() })?;
        Ok(Self::from_secret(secret))
    }

    /// Writes the secret key to `path`, readable and writable by the owner alone (0600).
    /// Refuses to overwrite an existing file, so a key is never lost by accident.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), IdentityError> {
        use std::io::Write;
        let path = path.as_ref();
        let io = |source| IdentityError::Io { path: path.display().to_string(), source };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        file.write_all(hex::encode(self.key.to_bytes()).as_bytes()).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// A separate identity derived from this one for `purpose` (for example `"wallet"`):
    /// deterministic, and revealing nothing about this identity's key.
    pub fn derive(&self, purpose: &str) -> Identity {
        let secret: [u8; 32] = Sha256::new()
            .chain_update(b"agora.derive.v1")
            .chain_update(self.key.to_bytes())
            .chain_update(purpose.as_bytes())
            .finalize()
            .into();
        Self::from_secret(secret)
    }

    /// This identity's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// This identity's public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// Signs `message` with this identity's key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Identity").field("address", &self.address).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    /// A weak key (the identity point) with `R` the identity and `s` zero "signs" every
    /// message under a plain batch; strict verification, alone or batched, refuses it.
    #[test]
    fn batches_are_as_strict_as_single_verification() {
        let honest = super::Identity::from_seed("honest batch signer");
        let (m1, m2) = (b"first message".as_slice(), b"second message".as_slice());
        let (s1, s2) = (honest.sign(m1), honest.sign(m2));
        let key = honest.public_key();
        assert_eq!(super::verify_batch_strict(&[(&key, m1, &s1), (&key, m2, &s2)]), vec![true, true]);

        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = super::PublicKey(identity);
        let mut forged = [0u8; 64];
        forged[0] = 1; // R = identity, s = 0.
        let anything = b"pay the forger".as_slice();
        assert!(weak.verify(anything, &forged).is_err(), "strict verification refuses it");
        let plain = ed25519_dalek::verify_batch(
            &[m1, anything],
            &[ed25519_dalek::Signature::from_bytes(&s1), ed25519_dalek::Signature::from_bytes(&forged)],
            &[
                ed25519_dalek::VerifyingKey::from_bytes(&key.0).unwrap(),
                ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap(),
            ],
        );
        assert!(plain.is_ok(), "a plain batch accepts the forgery");
        assert_eq!(super::verify_batch_strict(&[(&key, m1, &s1), (&weak, anything, &forged)]), vec![false, false]);

        for point in curve25519_dalek::constants::EIGHT_TORSION {
            assert!(!super::is_acceptable_r(point.compress().as_bytes()), "small-order R refused");
        }
        assert!(super::is_acceptable_r(&s1[..32]), "an honest R is accepted");
        assert!(!super::is_acceptable_r(&[0xff; 32]), "a non-canonical y is refused");

        let mut tampered = s2;
        tampered[40] ^= 1;
        assert_eq!(super::verify_batch_strict(&[(&key, m1, &s1), (&key, m2, &tampered)]), vec![false, false]);
    }

    use super::*;

    #[test]
    fn seed_is_deterministic_and_address_round_trips() {
        let a = Identity::from_seed("alice seed");
        let b = Identity::from_seed("alice seed");
        assert_eq!(a.address(), b.address());
        assert_ne!(a.address(), Identity::from_seed("bob seed").address());
        let text = a.address().to_string();
        assert!(text.starts_with("agent1"), "{text}");
        assert_eq!(text.parse::<Address>().unwrap(), a.address());
    }

    #[test]
    fn bad_addresses_get_named_errors() {
        let text = Identity::from_seed("x").address().to_string();
        // Flip one data character: the checksum must catch it.
        let mut chars: Vec<char> = text.chars().collect();
        chars[10] = if chars[10] == 'q' { 'p' } else { 'q' };
        let typo: String = chars.into_iter().collect();
        assert!(matches!(typo.parse::<Address>(), Err(AddressError::Checksum(_))));
        assert!(matches!("hello".parse::<Address>(), Err(AddressError::Checksum(_))));
        let other = bech32::encode::<Bech32m>(Hrp::parse("fetch").unwrap(), &[0u8; 32]).unwrap();
        assert!(matches!(other.parse::<Address>(), Err(AddressError::Prefix { .. })));
        let short = bech32::encode::<Bech32m>(Hrp::parse("agent").unwrap(), &[0u8; 20]).unwrap();
        assert_eq!(short.parse::<Address>(), Err(AddressError::Length(20)));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let id = Identity::from_seed("secret seed");
        let secret_hex = hex::encode(id.key.to_bytes());
        assert!(!format!("{id:?}").contains(&secret_hex));
    }

    #[test]
    fn key_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        let id = Identity::generate();
        id.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(Identity::load(&path).unwrap().address(), id.address());
        assert!(matches!(id.save(&path), Err(IdentityError::Io { .. })), "never overwrites");
        std::fs::write(dir.path().join("bad.key"), "zz").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let bad = dir.path().join("bad.key");
            std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(matches!(Identity::load(&bad), Err(IdentityError::Malformed { .. })));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(Identity::load(&path), Err(IdentityError::Permissions { .. })));
        }
    }
}
