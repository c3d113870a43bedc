//! An error told whole: its own message, then each source's, the way `anyhow` prints `{:#}`.
//!
//! vigil's errors keep what caused them as their `source` and leave it out of their own message,
//! so a log line or a reply that shows only `Display` would lose the cause. Everything that tells
//! an error to a person — logs, the service's last words — goes through [`Chain`].

use std::error::Error;
use std::fmt;

/// Displays an error and its sources, joined by `": "`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
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

    #[test]
    fn an_error_is_told_with_its_causes() {
        let e = Outer(std::io::Error::other("the key broke"));
        assert_eq!(Chain(&e).to_string(), "cannot open the door: the key broke");
    }
}
