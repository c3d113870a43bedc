//! A partition owner's answers to `<prefix>.query.state.<workspace>` and `<prefix>.query.fleet`, as
//! JSON (forwarded to it by [`crate::bus::api`]): what a proxy needs to answer a 503 with
//! `Retry-After`, and what an operator needs at a glance.
//!
//! Answers come from the live engine, which may be a group commit ahead of the local copy (the
//! group being flushed): a state can be shown a few milliseconds before the copy holds it, and a
//! crash in between re-reads those records from the input stream. The fleet query's
//! `input_stream_seq` is the copy's durable position, so "everything up to N is applied" holds when
//! it says N.

use async_nats::service::error::Error as ServiceError;
use bytes::Bytes;

use crate::bus::api::error;
use crate::core::Engine;
use crate::core::event::WorkspaceId;

/// The workspace `ws`: 404 if vigil does not know it, 400 if it is not a workspace id at all.
pub fn state(engine: &Engine, ws: &str) -> Result<Bytes, ServiceError> {
    if let Err(e) = WorkspaceId::parse(ws) {
        return Err(error(400, &format!("{ws:?} is not a workspace id: it {e}")));
    }
    match engine.view(ws) {
        Some(view) => Ok(serde_json::to_vec(&view).expect("views serialise").into()),
        None => Err(error(404, &format!("no workspace {ws:?}"))),
    }
}

/// Counts per state, the breaker's status, and how far vigil has read its input stream (the
/// stream sequence of the last input committed).
pub fn fleet(engine: &Engine, input_stream_seq: u64) -> Result<Bytes, ServiceError> {
    let mut view = serde_json::to_value(engine.fleet_view()).expect("views serialise");
    view["input_stream_seq"] = input_stream_seq.into();
    view["log_seq"] = engine.seq().into();
    Ok(serde_json::to_vec(&view).expect("views serialise").into())
}
