//! vigil's subjects and stream names, derived from one prefix (default `vigil`):
//!
//! | subject                               | what                                                |
//! |---------------------------------------|-----------------------------------------------------|
//! | `<prefix>.in.<type>.<workspace>`      | inputs, captured by the stream `<PREFIX>_IN`        |
//! | `<prefix>.out.<type>.<workspace>`     | outputs, in the stream `<PREFIX>_OUT`               |
//! | `<prefix>.out.alert`                  | fleet-level alerts (they have no workspace)         |
//! | `<prefix>.log.tick`, `<prefix>.log.resume` | vigil's own records, in `<PREFIX>_IN` too      |
//! | `<prefix>.dlq`                        | inputs that are not valid events, `<PREFIX>_DLQ`    |
//! | `<prefix>.query.state.<workspace>`    | request/reply: one workspace's state as JSON        |
//! | `<prefix>.query.fleet`                | request/reply: counts per state, breaker status     |

use vigil_core::event::{Output, WorkspaceId};

/// Subjects and stream names for one prefix.
#[derive(Clone, Debug)]
pub struct Subjects {
    prefix: String,
}

/// What an input subject says (before the payload is read).
#[derive(Debug, PartialEq, Eq)]
pub struct InputSubject<'a> {
    pub kind: &'a str,
    pub workspace: &'a str,
}

impl Subjects {
    pub fn new(prefix: &str) -> Subjects {
        Subjects { prefix: prefix.to_string() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn stream_name(&self, suffix: &str) -> String {
        let base: String =
            self.prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        format!("{base}_{suffix}")
    }

    pub fn input_stream(&self) -> String {
        self.stream_name("IN")
    }

    pub fn output_stream(&self) -> String {
        self.stream_name("OUT")
    }

    pub fn dlq_stream(&self) -> String {
        self.stream_name("DLQ")
    }

    /// The KV bucket of leases: which instance owns the log.
    pub fn lease_bucket(&self) -> String {
        self.stream_name("LEASES")
    }

    /// The KV bucket of members: which instances are up (owner and standbys).
    pub fn members_bucket(&self) -> String {
        self.stream_name("MEMBERS")
    }

    /// Everything producers publish: `<prefix>.in.>`.
    pub fn inputs(&self) -> String {
        format!("{}.in.>", self.prefix)
    }

    /// vigil's own records in the input stream (ticks, resumes): `<prefix>.log.>`. Producers may
    /// not publish here (deploy/nats/vigil.conf).
    pub fn log(&self) -> String {
        format!("{}.log.>", self.prefix)
    }

    /// The subject vigil appends its own record of `kind` (`tick`, `resume`) on.
    pub fn log_record(&self, kind: &str) -> String {
        format!("{}.log.{kind}", self.prefix)
    }

    /// The `<kind>` of `<prefix>.log.<kind>`; `None` for any other subject.
    pub fn parse_log<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let kind = subject.strip_prefix(&self.prefix)?.strip_prefix(".log.")?;
        (!kind.contains('.')).then_some(kind)
    }

    /// Everything vigil publishes: `<prefix>.out.>`.
    pub fn outputs(&self) -> String {
        format!("{}.out.>", self.prefix)
    }

    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.prefix)
    }

    pub fn query_group(&self) -> String {
        format!("{}.query", self.prefix)
    }

    /// The subject an input of `kind` about `workspace` is published on.
    pub fn input(&self, kind: &str, workspace: &WorkspaceId) -> String {
        format!("{}.in.{kind}.{workspace}", self.prefix)
    }

    /// The partition of `partitions` that `workspace` belongs to: what nats-server's subject
    /// mapping `{{partition(P,2)}}` gives for `<prefix>.in.<type>.<workspace>` — the FNV-1a (32-bit)
    /// of the workspace id's bytes, modulo P (`tests/partitions.rs` holds it to the server's for
    /// 10 000 ids). `partitions` must be at least 1.
    pub fn partition(workspace: &WorkspaceId, partitions: u32) -> u32 {
        vigil_core::hash::fnv1a32(workspace.as_str().as_bytes()) % partitions.max(1)
    }

    /// The subject an output is published on.
    pub fn output(&self, out: &Output) -> String {
        match &out.workspace {
            Some(ws) => format!("{}.out.{}.{ws}", self.prefix, out.body.type_name()),
            None => format!("{}.out.{}", self.prefix, out.body.type_name()),
        }
    }

    /// Splits `<prefix>.in.<type>.<workspace>`; `None` if the subject has another shape.
    pub fn parse_input<'a>(&self, subject: &'a str) -> Option<InputSubject<'a>> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".in.")?;
        let (kind, workspace) = rest.split_once('.')?;
        (!workspace.contains('.')).then_some(InputSubject { kind, workspace })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_streams_follow_the_prefix() {
        let s = Subjects::new("acme.vigil");
        assert_eq!(s.inputs(), "acme.vigil.in.>");
        assert_eq!(s.input_stream(), "ACME_VIGIL_IN");
        assert_eq!(
            s.parse_input("acme.vigil.in.heartbeat.ws-a"),
            Some(InputSubject { kind: "heartbeat", workspace: "ws-a" })
        );
        assert_eq!(s.parse_input("acme.vigil.in.heartbeat"), None);
        assert_eq!(s.parse_input("acme.vigil.in.heartbeat.ws.a"), None);
        assert_eq!(s.parse_input("other.in.heartbeat.ws-a"), None);
        assert_eq!(s.parse_log("acme.vigil.log.tick"), Some("tick"));
        assert_eq!(s.parse_log("acme.vigil.log.tick.x"), None);
        assert_eq!(s.parse_log("acme.vigil.in.tick"), None);
    }
}
