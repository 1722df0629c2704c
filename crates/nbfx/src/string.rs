//! [`Str`]: the string type of names, namespaces and dictionary text.
//!
//! A binary document names most strings by reference: a static dictionary id, a session
//! dictionary id, or (for namespaces) a prefix declared once on an ancestor. Copying the
//! referenced string into every element that uses it lets a few input bytes cost thousands of
//! bytes of memory (a 60 KB namespace and 10,000 two-byte child elements would take 600 MB).
//! A `Str` therefore either borrows the input, points at the static dictionary, or shares one
//! reference-counted allocation: the tree's memory grows with the records it holds, never with
//! the length of the strings they refer to.

use std::{
    borrow::{Borrow, Cow},
    cmp::Ordering,
    fmt,
    hash::{Hash, Hasher},
    ops::Deref,
    sync::Arc,
};

/// A string borrowed from the input, static, or shared by every node that refers to it.
///
/// It dereferences to `str` and compares, orders and hashes as its text, so the three forms of
/// one text are equal.
#[derive(Clone)]
pub enum Str<'a> {
    /// Borrowed from the input (or any other owner).
    Borrowed(&'a str),
    /// A string that lives for the whole program (the static dictionary, constants).
    Static(&'static str),
    /// One reference-counted copy, shared by every clone.
    Shared(Arc<str>),
}

impl<'a> Str<'a> {
    /// The text.
    pub fn as_str(&self) -> &str {
        self
    }

    /// An owned form: borrowed text is copied once into a shared allocation; static and shared
    /// text is kept as it is (no copy).
    pub fn into_owned(self) -> Str<'static> {
        match self {
            Self::Borrowed(s) => Str::Shared(Arc::from(s)),
            Self::Static(s) => Str::Static(s),
            Self::Shared(s) => Str::Shared(s),
        }
    }

    /// A borrowed view of the same text.
    pub fn borrowed(&self) -> Str<'_> {
        match self {
            Self::Static(s) => Str::Static(s),
            other => Str::Borrowed(other),
        }
    }
}

impl Default for Str<'_> {
    fn default() -> Self {
        Self::Static("")
    }
}

impl Deref for Str<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Self::Borrowed(s) | Self::Static(s) => s,
            Self::Shared(s) => s,
        }
    }
}

impl AsRef<str> for Str<'_> {
    fn as_ref(&self) -> &str {
        self
    }
}

impl Borrow<str> for Str<'_> {
    fn borrow(&self) -> &str {
        self
    }
}

impl fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl PartialEq for Str<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Str<'_> {}

impl PartialOrd for Str<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl Hash for Str<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl PartialEq<str> for Str<'_> {
    fn eq(&self, other: &str) -> bool {
        &**self == other
    }
}

impl PartialEq<&str> for Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        &**self == *other
    }
}

impl PartialEq<String> for Str<'_> {
    fn eq(&self, other: &String) -> bool {
        **self == **other
    }
}

impl PartialEq<Str<'_>> for str {
    fn eq(&self, other: &Str<'_>) -> bool {
        self == &**other
    }
}

impl PartialEq<Str<'_>> for &str {
    fn eq(&self, other: &Str<'_>) -> bool {
        *self == &**other
    }
}

impl PartialEq<Str<'_>> for String {
    fn eq(&self, other: &Str<'_>) -> bool {
        **self == **other
    }
}

impl<'a> From<&'a str> for Str<'a> {
    fn from(s: &'a str) -> Self {
        Self::Borrowed(s)
    }
}

impl<'a> From<&'a String> for Str<'a> {
    fn from(s: &'a String) -> Self {
        Self::Borrowed(s)
    }
}

impl From<String> for Str<'_> {
    fn from(s: String) -> Self {
        Self::Shared(Arc::from(s))
    }
}

impl From<Arc<str>> for Str<'_> {
    fn from(s: Arc<str>) -> Self {
        Self::Shared(s)
    }
}

impl<'a> From<Cow<'a, str>> for Str<'a> {
    fn from(s: Cow<'a, str>) -> Self {
        match s {
            Cow::Borrowed(s) => Self::Borrowed(s),
            Cow::Owned(s) => s.into(),
        }
    }
}

impl From<Str<'_>> for String {
    fn from(s: Str<'_>) -> Self {
        (*s).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_one_text_are_equal_and_hash_alike() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |s: &Str<'_>| {
            let mut h = DefaultHasher::new();
            s.hash(&mut h);
            h.finish()
        };
        let text = String::from("urn:x");
        let forms = [
            Str::Borrowed(&text),
            Str::Static("urn:x"),
            Str::from(text.clone()),
        ];
        for a in &forms {
            assert_eq!(a, "urn:x");
            assert_eq!(a.as_str(), "urn:x");
            for b in &forms {
                assert_eq!(a, b);
                assert_eq!(hash(a), hash(b));
            }
        }
    }

    #[test]
    fn owning_copies_borrowed_text_once_and_shares_it_after() {
        let text = String::from("http://example.org/a-long-namespace");
        let owned = Str::Borrowed(&text).into_owned();
        let Str::Shared(first) = &owned else {
            panic!("borrowed text becomes shared: {owned:?}")
        };
        let clone = owned.clone();
        let Str::Shared(second) = &clone else {
            panic!("a clone stays shared")
        };
        assert!(Arc::ptr_eq(first, second), "a clone shares the allocation");
        assert!(matches!(Str::Static("a").into_owned(), Str::Static("a")));
    }
}
