//! [`Name`]: a state, message or role name from a dialogue's rules.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name from a dialogue's [`Rules`](super::Rules): a state, a message or a role. Read it
/// as a `&str` (it derefs to one, and compares with `&str` and `String`).
///
/// Shared, not copied: every step of every dialogue records its state, message and sender,
/// and a contract-net round with a thousand participants takes thousands of steps; each
/// takes its names from the rules, so a step costs a reference count, not an allocation.
#[derive(Clone)]
pub struct Name {
    text: Arc<str>,
    /// Whether the text needs no escape in a JSON string: known once, when the name is
    /// made, instead of checked at every step that writes it.
    plain: bool,
}

impl Name {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the name goes into a JSON string as it is, with nothing to escape.
    pub(super) fn is_plain_json(&self) -> bool {
        self.plain
    }

    fn new(text: Arc<str>) -> Name {
        let plain = text.bytes().all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\');
        Name { text, plain }
    }
}

// Equality, order and hash are the text's alone (`plain` follows from it), so a `Name`
// and the `&str` it borrows as agree, as `HashMap` lookups by `&str` need.
impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.text == other.text
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl From<&str> for Name {
    fn from(name: &str) -> Name {
        Name::new(name.into())
    }
}

impl From<String> for Name {
    fn from(name: String) -> Name {
        Name::new(name.into())
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.text.as_ref().to_owned()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.text == **other
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.text
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        *self == *other.text
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// As a JSON string.
impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        String::deserialize(d).map(Name::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map keyed by names is read with plain `&str`s: a name hashes and compares as its
    /// text, whether or not it needs escaping in JSON.
    #[test]
    fn a_name_hashes_and_compares_as_its_text() {
        let names = ["proposed", "say \"hi\"", "line\nbreak", ""];
        let map: std::collections::HashMap<Name, usize> =
            names.iter().enumerate().map(|(i, n)| ((*n).into(), i)).collect();
        for (i, text) in names.iter().enumerate() {
            assert_eq!(map.get(*text), Some(&i), "{text:?}");
        }
        assert!(Name::from("proposed").is_plain_json());
        assert!(!Name::from("say \"hi\"").is_plain_json());
        assert!(!Name::from("back\\slash").is_plain_json());
        assert!(!Name::from("tab\there").is_plain_json());
        let (a, b): (Name, Name) = ("a".into(), "b".into());
        assert!(a < b);
    }
}
