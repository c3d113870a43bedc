//! The services API (`$SRV.*`) and the queries, answered by every instance: the public query
//! subjects (`<prefix>.query.state.<ws>`, `.fleet`, `.partitions`) are a micro service every vigil
//! runs for its whole life, and each request is forwarded to the owner of the partition it
//! concerns, which answers on `<prefix>.query.p.<partition>.<what>` from its live engine. So a
//! query reaches the right partition's state whichever instance the service's queue group picks,
//! and while a partition has no owner (a takeover under way) its queries say so (503) rather than
//! go unanswered.

use std::time::Duration;

use async_nats::service::{
    NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE, Request, ServiceExt, error::Error as ServiceError,
};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use crate::bus::BusError;
use crate::bus::headers::{self, HeaderText};
use crate::bus::subjects::Subjects;
use crate::core::event::WorkspaceId;

/// How long a forwarded query waits for the partition's owner.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// At most this many queries are being forwarded at once; more are answered `503` at once, so a
/// flood of queries costs a bounded number of tasks.
const MAX_IN_FLIGHT: usize = 1024;

/// An error answer: its status goes into a header, so it is escaped.
pub fn error(code: usize, status: &str) -> ServiceError {
    ServiceError { status: HeaderText::escape(status).to_string(), code }
}

/// A partition owner's answer as a reply message: the body, or the service-error headers (as the
/// micro spec puts them) and an empty body.
pub fn encode(answer: Result<Bytes, ServiceError>) -> (async_nats::HeaderMap, Bytes) {
    let mut headers = async_nats::HeaderMap::new();
    match answer {
        Ok(body) => (headers, body),
        Err(e) => {
            headers::insert(&mut headers, NATS_SERVICE_ERROR, &HeaderText::escape(&e.status));
            headers::insert(&mut headers, NATS_SERVICE_ERROR_CODE, &HeaderText::escape(&e.code.to_string()));
            (headers, Bytes::new())
        }
    }
}

/// Reads an answer [`encode`] made.
fn decode(message: &async_nats::Message) -> Result<Bytes, ServiceError> {
    let header = |name| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
    match header(NATS_SERVICE_ERROR_CODE) {
        Some(code) => Err(ServiceError {
            status: header(NATS_SERVICE_ERROR).unwrap_or_default(),
            code: code.parse().unwrap_or(500),
        }),
        None => Ok(message.payload.clone()),
    }
}

/// Runs the service until `stop` completes.
pub async fn serve(
    client: async_nats::Client,
    subjects: Subjects,
    partitions: u32,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), BusError> {
    let service = client
        .service_builder()
        .description("vigil: liveness and restart decisions for agent workspaces")
        .start("vigil", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(BusError::Service)?;
    let group = service.group(subjects.query_group());
    let mut state = group.endpoint("state.*").await.map_err(BusError::Service)?;
    let mut fleet = group.endpoint("fleet").await.map_err(BusError::Service)?;
    let mut partitions_endpoint = group.endpoint("partitions").await.map_err(BusError::Service)?;
    let forward = Forward { client, subjects, partitions };
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    tokio::pin!(stop);
    loop {
        // Each answer on its own task: one partition slow to answer holds up no other query.
        let (request, what) = tokio::select! {
            _ = &mut stop => break,
            Some(request) = state.next() => (request, What::State),
            Some(request) = fleet.next() => (request, What::Fleet),
            Some(request) = partitions_endpoint.next() => (request, What::Partitions),
            else => break,
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let busy = error(503, &format!("{MAX_IN_FLIGHT} queries are being answered already; ask again"));
            if let Err(e) = request.respond(Err(busy)).await {
                tracing::warn!(error = %e, "answering a query failed");
            }
            continue;
        };
        let forward = forward.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answer = match what {
                What::State => forward.state(&request).await,
                What::Fleet => forward.fleet().await,
                What::Partitions => forward.partitions().await,
            };
            if let Err(e) = request.respond(answer).await {
                tracing::warn!(error = %e, "answering a query failed");
            }
        });
    }
    let _ = service.stop().await;
    Ok(())
}

enum What {
    State,
    Fleet,
    Partitions,
}

/// What forwarding a query needs.
#[derive(Clone)]
struct Forward {
    client: async_nats::Client,
    subjects: Subjects,
    partitions: u32,
}

impl Forward {
    /// Asks partition `index`'s owner `what`.
    async fn ask(&self, index: u32, what: &str) -> Result<Bytes, ServiceError> {
        self.ask_on(index, self.subjects.partition_query(index, what)).await
    }

    async fn ask_on(&self, index: u32, subject: String) -> Result<Bytes, ServiceError> {
        match tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(subject, Bytes::new())).await {
            Ok(Ok(message)) => decode(&message),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Err(error(
                503,
                &format!("partition {index} has no owner at the moment (a takeover may be under way); ask again"),
            )),
            Ok(Err(e)) => Err(error(503, &format!("asking partition {index}'s owner failed: {e}"))),
            Err(_) => Err(error(504, &format!("partition {index}'s owner did not answer within {FORWARD_TIMEOUT:?}"))),
        }
    }

    /// One workspace's state, from its partition's owner: 400 for a token that is no workspace id.
    async fn state(&self, request: &Request) -> Result<Bytes, ServiceError> {
        let ws = request.message.subject.rsplit('.').next().unwrap_or_default();
        let id = WorkspaceId::parse(ws).map_err(|e| error(400, &format!("{ws:?} is not a workspace id: it {e}")))?;
        let index = Subjects::partition(&id, self.partitions);
        match self.ask(index, &format!("state.{ws}")).await {
            // No owner to answer (a takeover under way): a standby answers from its copy, saying
            // so and how far behind it is.
            Err(e) if e.code == 503 || e.code == 504 => {
                self.ask_on(index, self.subjects.standby_query(index, &format!("state.{ws}"))).await.map_err(|_| e)
            }
            answer => answer,
        }
    }

    /// The fleet: one partition's answer as it is; several summed (see [`sum_fleet`]).
    async fn fleet(&self) -> Result<Bytes, ServiceError> {
        if self.partitions == 1 {
            return self.ask(0, "fleet").await;
        }
        let answers = futures::future::join_all((0..self.partitions).map(|k| self.ask(k, "fleet"))).await;
        let mut parts = Vec::new();
        for answer in answers {
            let body = answer?;
            parts.push(serde_json::from_slice::<Value>(&body).map_err(|e| error(500, &e.to_string()))?);
        }
        Ok(serde_json::to_vec(&sum_fleet(&parts)).expect("json always encodes").into())
    }

    /// Every partition's owner, epoch, standbys and lag; a partition without an owner right now
    /// is listed with `"owner": null`.
    async fn partitions(&self) -> Result<Bytes, ServiceError> {
        let answers = futures::future::join_all((0..self.partitions).map(|k| self.ask(k, "partition"))).await;
        let list: Vec<Value> = answers
            .into_iter()
            .enumerate()
            .map(|(k, answer)| match answer.ok().and_then(|body| serde_json::from_slice::<Value>(&body).ok()) {
                Some(part) => part,
                None => serde_json::json!({"partition": k, "owner": null, "epoch": null, "standbys": [], "log_seq": null, "lag": null}),
            })
            .collect();
        Ok(serde_json::to_vec(&serde_json::json!({"partitions": list})).expect("json always encodes").into())
    }
}

/// A state answer marked with who gave it: the partition's owner, or a standby `behind` records
/// of the log.
pub fn served_by(body: Bytes, instance: &str, behind: Option<u64>) -> Bytes {
    let Ok(mut view) = serde_json::from_slice::<Value>(&body) else { return body };
    let by = match behind {
        None => serde_json::json!({"instance": instance, "role": "owner"}),
        Some(behind) => serde_json::json!({"instance": instance, "role": "standby", "behind": behind}),
    };
    view["served_by"] = by;
    serde_json::to_vec(&view).expect("json always encodes").into()
}

/// The fleet over several partitions: counts summed, the breaker open if any partition's is (it
/// closes at the latest one's time), and each partition's position in `partitions`.
fn sum_fleet(parts: &[Value]) -> Value {
    let mut total = serde_json::Map::new();
    for key in [
        "workspaces",
        "alive",
        "suspect",
        "restarting",
        "dead",
        "parked",
        "restarts_in_flight",
        "restart_queue",
        "held",
        "active",
        "unhealthy",
    ] {
        let sum: u64 = parts.iter().filter_map(|p| p[key].as_u64()).sum();
        total.insert(key.into(), sum.into());
    }
    total.insert("breaker_open".into(), parts.iter().any(|p| p["breaker_open"] == true).into());
    // The disruption modes are off with several partitions (SPEC §3.4): the declaration breaker.
    total.insert("disruption".into(), Value::Null);
    // Times are RFC 3339 in UTC, all of one width: their text orders them.
    let close_at =
        parts.iter().map(|p| p["breaker_close_at"].clone()).filter(|t| !t.is_null()).max_by_key(|t| t.to_string());
    total.insert("breaker_close_at".into(), close_at.unwrap_or(Value::Null));
    let positions: Vec<Value> = parts
        .iter()
        .enumerate()
        .map(|(k, p)| serde_json::json!({"partition": k, "input_stream_seq": p["input_stream_seq"], "log_seq": p["log_seq"]}))
        .collect();
    total.insert("partitions".into(), positions.into());
    Value::Object(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_of_several_partitions_is_their_sum() {
        let a = serde_json::json!({"workspaces": 3, "alive": 2, "suspect": 1, "restarting": 0, "dead": 0, "parked": 0,
            "breaker_open": false, "breaker_close_at": null, "restarts_in_flight": 0, "restart_queue": 0, "held": 0,
            "input_stream_seq": 10, "log_seq": 4});
        let b = serde_json::json!({"workspaces": 5, "alive": 1, "suspect": 0, "restarting": 1, "dead": 3, "parked": 0,
            "breaker_open": true, "breaker_close_at": "2026-12-02T10:00:00.000Z", "restarts_in_flight": 1, "restart_queue": 2, "held": 3,
            "input_stream_seq": 12, "log_seq": 6});
        let sum = sum_fleet(&[a, b]);
        assert_eq!(sum["workspaces"], 8);
        assert_eq!(sum["dead"], 3);
        assert_eq!(sum["breaker_open"], true);
        assert_eq!(sum["breaker_close_at"], "2026-12-02T10:00:00.000Z");
        assert_eq!(sum["partitions"][1]["input_stream_seq"], 12);
        assert_eq!(sum["disruption"], serde_json::Value::Null, "the modes are off with several partitions");
    }

    #[test]
    fn an_error_answer_survives_the_forwarding() {
        let (headers, body) = encode(Err(error(404, "no workspace \"ws-x\"")));
        let message = async_nats::Message {
            subject: "x".into(),
            reply: None,
            payload: body,
            headers: Some(headers),
            status: None,
            description: None,
            length: 0,
        };
        let e = decode(&message).unwrap_err();
        assert_eq!((e.code, e.status.as_str()), (404, "no workspace \"ws-x\""));
    }
}
