//! An error told whole: its own message, then each source's, the way `anyhow` prints `{:#}`.
//!
//! vigil's errors keep what caused them as their `source` and leave it out of their own message,
//! so a log line or a reply that shows only `Display` would lose the cause. Everything that tells
//! an error to a person — logs, the binary's last words — goes through [`Chain`]. Some libraries'
//! errors (async-nats, rmp-serde) both quote their source in their message and return it from
//! `source()`; a source whose text the message before it already ends with is not told again.

use std::error::Error;
use std::fmt;

/// Displays an error and its sources, joined by `": "`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut told = self.0.to_string();
        f.write_str(&told)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            let text = e.to_string();
            if !told.ends_with(&text) {
                write!(f, ": {text}")?;
                told = text;
            }
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the door")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("the lock is jammed: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot leave")]
    struct Top(#[source] Quoting);

    #[test]
    fn an_error_is_told_with_its_causes() {
        let e = Outer(std::io::Error::other("the key broke"));
        assert_eq!(Chain(&e).to_string(), "cannot open the door: the key broke");
    }

    #[test]
    fn a_cause_its_error_already_quotes_is_told_once() {
        let e = Top(Quoting(std::io::Error::other("rust")));
        assert_eq!(Chain(&e).to_string(), "cannot leave: the lock is jammed: rust");
    }
}
