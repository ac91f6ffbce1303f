//! Short text kept inline: a flow's uid and community ID, made for every exported record.

/// Text of at most [`ShortText::CAPACITY`] bytes kept inline: a uid or a community ID, made for
/// every exported record, where a `String` would cost an allocation and a free each.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortText {
    len: u8,
    bytes: [u8; ShortText::CAPACITY],
}

impl ShortText {
    /// A community ID (`1:` and 28 base64 characters) is the longest text kept.
    pub const CAPACITY: usize = 30;

    /// The text of `s`, or `None` when longer than the capacity.
    pub fn new(s: &str) -> Option<ShortText> {
        ShortText::copied(s.as_bytes())
    }

    /// The text of ASCII bytes (a uid's digits, base64), or `None` when they are not ASCII or
    /// do not fit.
    pub fn from_ascii(b: &[u8]) -> Option<ShortText> {
        if !b.is_ascii() {
            return None;
        }
        ShortText::copied(b)
    }

    /// Bytes that are valid UTF-8 (the callers' promise), or `None` when they do not fit.
    fn copied(b: &[u8]) -> Option<ShortText> {
        let mut t = ShortText { len: 0, bytes: [0; ShortText::CAPACITY] };
        t.bytes.get_mut(..b.len())?.copy_from_slice(b);
        t.len = b.len() as u8;
        Some(t)
    }

    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        let b = &self.bytes[..self.len as usize];
        // SAFETY: the bytes are a whole `&str` (`new`) or ASCII (`from_ascii`), copied as they
        // were and never changed: valid UTF-8. Checking it again on every cell written was 3 %
        // of the instructions of `flows` on a flow-heavy capture.
        unsafe { std::str::from_utf8_unchecked(b) }
    }
}

impl std::fmt::Debug for ShortText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text that fits is kept whole; text that does not, or is not ASCII where ASCII is
    /// promised, is refused, not cut.
    #[test]
    fn keeps_what_fits() {
        let id = "1:KXW93/jAcpeBncylgsTkLvvHFIU=";
        assert_eq!(ShortText::new(id).map(|t| t.as_str().to_owned()), Some(id.to_owned()));
        assert_eq!(ShortText::new("").map(|t| t.as_str().len()), Some(0));
        assert!(ShortText::new(&format!("{id}x")).is_none());
        assert_eq!(ShortText::from_ascii(b"C1").map(|t| t.as_str().to_owned()), Some("C1".into()));
        assert!(ShortText::from_ascii("é".as_bytes()).is_none());
        assert!(ShortText::from_ascii(&[b'a'; 31]).is_none());
        assert_eq!(format!("{:?}", ShortText::new("Cab").unwrap()), "\"Cab\"");
    }
}
