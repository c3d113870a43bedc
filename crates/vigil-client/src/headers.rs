//! NATS headers built from text vigil does not control.
//!
//! A header value may not hold CR or LF — async-nats panics on one (`HeaderValue::from`), and a
//! panic in the serve loop before the input is acknowledged is a crash loop: every restart reads
//! the same message again. Error texts, subjects and ids all carry bytes a producer chose, so
//! nothing reaches a header except through [`HeaderText`], which can only be made by escaping: one
//! line of printable ASCII, at most [`HEADER_TEXT_MAX`] bytes. `clippy.toml` forbids the panicking
//! constructors everywhere else, so the rule holds by construction, not by care.

use std::fmt;

use async_nats::HeaderMap;
use async_nats::header::HeaderValue;
use async_nats::jetstream::message::PublishMessage;

/// The longest header value vigil writes, in bytes.
pub const HEADER_TEXT_MAX: usize = 1024;

/// Text that is safe in a header: printable ASCII (0x20–0x7e), at most [`HEADER_TEXT_MAX`] bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderText(String);

impl HeaderText {
    /// Escapes `text`: a backslash becomes `\\`, newline, carriage return and tab become `\n`,
    /// `\r` and `\t`, any other control or non-ASCII character `\u{..}`. Distinct texts stay
    /// distinct unless they are cut: a text longer than the limit keeps its head and says how many
    /// bytes of the original were left out (`...[+N bytes]`).
    pub fn escape(text: &str) -> HeaderText {
        let mut out = String::with_capacity(text.len().min(HEADER_TEXT_MAX));
        for (i, c) in text.char_indices() {
            let before = out.len();
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                ' '..='~' => out.push(c),
                _ => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            }
            // Room is kept for the marker, so the cut text is never longer than the limit.
            if out.len() > HEADER_TEXT_MAX - CUT_MARKER_MAX && i + c.len_utf8() < text.len() {
                out.truncate(before);
                out.push_str(&format!("...[+{} bytes]", text.len() - i));
                break;
            }
        }
        debug_assert!(out.len() <= HEADER_TEXT_MAX && out.bytes().all(|b| (0x20..0x7f).contains(&b)));
        HeaderText(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn value(&self) -> HeaderValue {
        // Cannot fail: an escaped text has no CR or LF. Were it ever to, an empty value is still
        // no panic.
        self.0.parse().unwrap_or_default()
    }
}

/// The longest `...[+N bytes]` marker (N below 10^20).
const CUT_MARKER_MAX: usize = 32;

impl fmt::Display for HeaderText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Sets header `name` (one of vigil's own names, a constant) to `value`.
#[allow(clippy::disallowed_methods)] // the one place headers are set
pub fn insert(headers: &mut HeaderMap, name: &'static str, value: &HeaderText) {
    headers.insert(name, value.value());
}

/// Sets a JetStream publish's `Nats-Msg-Id` (the de-duplication id) to `id`.
#[allow(clippy::disallowed_methods)]
pub fn with_message_id(message: PublishMessage, id: &HeaderText) -> PublishMessage {
    message.header(async_nats::header::NATS_MESSAGE_ID, id.value())
}

/// How many bytes a header block takes on the wire (`NATS/1.0\r\n`, each `Name: value\r\n`, a
/// blank line), which counts against the server's maximum payload together with the payload.
pub fn wire_len(headers: &HeaderMap) -> usize {
    let mut len = b"NATS/1.0\r\n".len() + b"\r\n".len();
    for (name, values) in headers.iter() {
        for v in values {
            len += AsRef::<str>::as_ref(name).len() + b": ".len() + v.as_str().len() + b"\r\n".len();
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe(t: &HeaderText) -> bool {
        t.as_str().len() <= HEADER_TEXT_MAX && t.as_str().bytes().all(|b| (0x20..0x7f).contains(&b))
    }

    #[test]
    fn control_characters_and_non_ascii_are_escaped_and_backslashes_doubled() {
        assert_eq!(HeaderText::escape("field `evil\nkey`: eof").as_str(), r"field `evil\nkey`: eof");
        assert_eq!(HeaderText::escape("a\r\tb\u{0}").as_str(), r"a\r\tb\u{0}");
        assert_eq!(HeaderText::escape("vigil.in.heartbeat.wé").as_str(), r"vigil.in.heartbeat.w\u{e9}");
        assert_eq!(HeaderText::escape(r"C:\n").as_str(), r"C:\\n", "distinct from an escaped newline");
        assert_eq!(HeaderText::escape("plain text").as_str(), "plain text");
    }

    #[test]
    fn long_texts_are_cut_to_the_limit_and_say_so() {
        for text in ["x".repeat(5000), "é".repeat(3000), "\n".repeat(2000), "a".repeat(HEADER_TEXT_MAX)] {
            let t = HeaderText::escape(&text);
            assert!(safe(&t), "{} bytes", t.as_str().len());
            if text.len() > HEADER_TEXT_MAX {
                assert!(t.as_str().ends_with(" bytes]"), "{}", &t.as_str()[t.as_str().len() - 20..]);
            }
        }
        assert_eq!(HeaderText::escape(&"a".repeat(HEADER_TEXT_MAX - CUT_MARKER_MAX)).as_str().len(), 992);
    }

    #[test]
    fn wire_len_counts_what_the_protocol_sends() {
        let mut h = HeaderMap::new();
        insert(&mut h, "Vigil-Reason", &HeaderText::escape("syntax"));
        assert_eq!(wire_len(&h), "NATS/1.0\r\nVigil-Reason: syntax\r\n\r\n".len());
    }
}
