//! The text of a scalar or a key, held inline when it is short.

use std::ops::Deref;

/// A scalar's or key's text. Most of a configuration's scalars are short (names,
/// hosts, paths, keys): those live inside the node, so reading a 50,000-route file
/// does not allocate (and later free) half a million small strings.
#[derive(Clone)]
pub(crate) struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

/// The longest text kept inline: the node stays the size a `String` made it.
const INLINE: usize = 22;

impl Text {
    /// A copy of `s`.
    pub fn new(s: &str) -> Self {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Self(Repr::Inline { len, bytes })
            }
            _ => Self(Repr::Heap(s.into())),
        }
    }

    /// The text.
    #[expect(
        unsafe_code,
        reason = "skips re-validating UTF-8 that `new` copied from a `str`"
    )]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let bytes = bytes.get(..usize::from(*len)).unwrap_or_default();
                // SAFETY: `Repr::Inline` is built only by `new`, from all `len` bytes of
                // a `str`, and never changed: whole UTF-8. Checking it again on every
                // read was ~11% of `portcullis check`'s CPU over 50,000 routes.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Heap(s) => s,
        }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        if s.len() <= INLINE {
            Self::new(&s)
        } else {
            Self(Repr::Heap(s.into_boxed_str()))
        }
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_texts_read_back() {
        for s in [
            "",
            "a",
            "t41.example.com",
            "exactly-twenty-two-ch",
            "é".repeat(11).as_str(),
            "a longer text than fits inline",
            &"é".repeat(12),
        ] {
            assert_eq!(Text::new(s).as_str(), s);
            assert_eq!(Text::from(s.to_string()).as_str(), s);
        }
        assert_eq!(std::mem::size_of::<Text>(), std::mem::size_of::<String>());
    }
}
