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
//! | `<prefix>.query.partitions`           | request/reply: each partition's owner, epoch, lag   |
//!
//! With more than one partition (SPEC §4 "Partitions") the input stream stores an input as
//! `<prefix>.in.<partition>.<type>.<workspace>` (its subject transform `{{partition(P,2)}}` adds the
//! token; producers publish as above), vigil's own records of a partition are
//! `<prefix>.log.<partition>.<kind>`, the death declarations every partition counts (the fleet's
//! breaker) are `<prefix>.log.fleet.<partition>`, and the owner of a partition answers its part of the queries on
//! `<prefix>.query.p.<partition>.<what>`. A [`Subjects`] scoped to one partition
//! ([`Subjects::scoped`]) names that partition's subjects.

use vigil_core::event::{Output, WorkspaceId};

/// Subjects and stream names for one prefix.
#[derive(Clone, Debug)]
pub struct Subjects {
    prefix: String,
    /// The partition these subjects are scoped to, of how many; `None` with one partition (whose
    /// subjects carry no partition token).
    part: Option<Part>,
}

/// One partition of several.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub index: u32,
    pub of: u32,
}

/// What an input subject says (before the payload is read).
#[derive(Debug, PartialEq, Eq)]
pub struct InputSubject<'a> {
    pub kind: &'a str,
    pub workspace: &'a str,
}

impl Subjects {
    pub fn new(prefix: &str) -> Subjects {
        Subjects { prefix: prefix.to_string(), part: None }
    }

    /// These subjects, scoped to partition `index` of `of` (unscoped when `of` is 1).
    pub fn scoped(&self, index: u32, of: u32) -> Subjects {
        let part = (of > 1).then_some(Part { index, of });
        Subjects { prefix: self.prefix.clone(), part }
    }

    /// The partition these subjects are scoped to, if any.
    pub fn part(&self) -> Option<Part> {
        self.part
    }

    /// The partition's number (0 when there is only one).
    pub fn partition_index(&self) -> u32 {
        self.part.map_or(0, |p| p.index)
    }

    /// What the input stream of a deployment with `partitions` partitions captures. With one:
    /// `<prefix>.in.>` and `<prefix>.log.>`, so that any subject a producer gets wrong is read and
    /// dead-lettered. With several, only what some partition reads: `<prefix>.in.*.*` (stored
    /// under its partition by the transform) and each partition's `<prefix>.log.<K>.*`. A subject
    /// of another shape — or published straight onto a partition's — is not stored at all (a
    /// JetStream publish is told no stream answers), rather than stored where nobody reads it.
    pub fn input_stream_subjects(&self, partitions: u32) -> Vec<String> {
        let p = &self.prefix;
        if partitions <= 1 {
            return vec![self.inputs(), format!("{p}.log.>")];
        }
        let mut subjects = vec![format!("{p}.in.*.*")];
        subjects.extend((0..partitions).map(|k| format!("{p}.log.{k}.*")));
        subjects.push(self.declarations());
        subjects
    }

    /// The subject transform of the input stream for `partitions` partitions (none for one):
    /// `<prefix>.in.*.*` stored as `<prefix>.in.{{partition(P,2)}}.{{wildcard(1)}}.{{wildcard(2)}}`.
    pub fn input_transform(&self, partitions: u32) -> Option<(String, String)> {
        (partitions > 1).then(|| {
            let p = &self.prefix;
            (
                format!("{p}.in.*.*"),
                format!("{p}.in.{{{{partition({partitions},2)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"),
            )
        })
    }

    /// What the partition's consumer reads: its inputs, its own records, and every partition's
    /// death declarations. Unscoped, the whole stream.
    pub fn partition_filters(&self) -> Vec<String> {
        match self.part {
            Some(Part { index, .. }) => vec![
                format!("{}.in.{index}.>", self.prefix),
                format!("{}.log.{index}.>", self.prefix),
                self.declarations(),
            ],
            None => self.input_stream_subjects(1),
        }
    }

    /// The partition's key in the leases bucket: `p.<partition>`.
    pub fn lease_key(&self) -> String {
        format!("p.{}", self.partition_index())
    }

    /// Where the owner of partition `index` answers its part of query `what` (`state.<ws>`,
    /// `fleet`, `partition`).
    pub fn partition_query(&self, index: u32, what: &str) -> String {
        format!("{}.query.p.{index}.{what}", self.prefix)
    }

    /// Where the standbys of partition `index` answer a state query (`state.<ws>`) while it has
    /// no owner: one of them, from its own copy.
    pub fn standby_query(&self, index: u32, what: &str) -> String {
        format!("{}.query.s.{index}.{what}", self.prefix)
    }

    /// Whether `workspace` belongs to the partition these subjects are scoped to (always, unscoped).
    pub fn holds(&self, workspace: &WorkspaceId) -> bool {
        self.part.is_none_or(|p| Subjects::partition(workspace, p.of) == p.index)
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

    /// The subject vigil appends its own record of `kind` (`tick`, `resume`) on (in the scoped
    /// partition's log).
    pub fn log_record(&self, kind: &str) -> String {
        match self.part {
            Some(Part { index, .. }) => format!("{}.log.{index}.{kind}", self.prefix),
            None => format!("{}.log.{kind}", self.prefix),
        }
    }

    /// Every partition's death declarations, which every partition reads: `<prefix>.log.fleet.*`.
    pub fn declarations(&self) -> String {
        format!("{}.log.fleet.*", self.prefix)
    }

    /// Where partition `index` appends its death declarations: `<prefix>.log.fleet.<index>`.
    pub fn declaration_record(&self, index: u32) -> String {
        format!("{}.log.fleet.{index}", self.prefix)
    }

    /// The `<kind>` of `<prefix>.log.<kind>` (scoped: `<prefix>.log.<partition>.<kind>`, and
    /// `declaration` for `<prefix>.log.fleet.<partition>`); `None` for any other subject.
    pub fn parse_log<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".log.")?;
        if self.part.is_some()
            && let Some(k) = rest.strip_prefix("fleet.")
        {
            return (!k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())).then_some("declaration");
        }
        let kind = match self.part {
            Some(Part { index, .. }) => rest.strip_prefix(index.to_string().as_str())?.strip_prefix('.')?,
            None => rest,
        };
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

    /// Splits `<prefix>.in.<type>.<workspace>` (scoped: as the input stream stores it,
    /// `<prefix>.in.<partition>.<type>.<workspace>`); `None` if the subject has another shape.
    pub fn parse_input<'a>(&self, subject: &'a str) -> Option<InputSubject<'a>> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".in.")?;
        let rest = match self.part {
            Some(Part { index, .. }) => rest.strip_prefix(index.to_string().as_str())?.strip_prefix('.')?,
            None => rest,
        };
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
        assert_eq!(s.lease_key(), "p.0");
    }

    #[test]
    fn a_scoped_partition_names_its_own_log_and_inputs() {
        let all = Subjects::new("v");
        assert_eq!(all.scoped(0, 1).part(), None, "one partition is the unscoped layout");
        let s = all.scoped(3, 16);
        assert_eq!(s.log_record("tick"), "v.log.3.tick");
        assert_eq!(s.parse_log("v.log.3.tick"), Some("tick"));
        assert_eq!(s.parse_log("v.log.13.tick"), None);
        assert_eq!(s.parse_log("v.log.tick"), None);
        assert_eq!(s.parse_input("v.in.3.heartbeat.ws-a"), Some(InputSubject { kind: "heartbeat", workspace: "ws-a" }));
        assert_eq!(s.parse_input("v.in.heartbeat.ws-a"), None);
        assert_eq!(s.parse_input("v.in.31.heartbeat.ws-a"), None);
        // Every partition reads every partition's death declarations (the fleet's breaker).
        assert_eq!(s.partition_filters(), ["v.in.3.>", "v.log.3.>", "v.log.fleet.*"]);
        assert_eq!(s.declaration_record(3), "v.log.fleet.3");
        assert_eq!(s.parse_log("v.log.fleet.3"), Some("declaration"));
        assert_eq!(s.parse_log("v.log.fleet.12"), Some("declaration"));
        assert_eq!(s.parse_log("v.log.fleet.x"), None);
        assert_eq!(all.parse_log("v.log.fleet.3"), None, "unscoped there is no such record: dead-lettered");
        assert_eq!(s.lease_key(), "p.3");
        assert_eq!(s.input_stream_subjects(1), ["v.in.>", "v.log.>"]);
        assert_eq!(s.input_stream_subjects(3), ["v.in.*.*", "v.log.0.*", "v.log.1.*", "v.log.2.*", "v.log.fleet.*"]);
        let (source, dest) = s.input_transform(16).unwrap();
        assert_eq!(
            (source.as_str(), dest.as_str()),
            ("v.in.*.*", "v.in.{{partition(16,2)}}.{{wildcard(1)}}.{{wildcard(2)}}")
        );
        assert_eq!(all.input_transform(1), None);
    }
}
