//! Hearth wire types: the versioned gRPC protocol between coordinator, participants, operators and apps.
//!
//! The source of truth is `proto/hearth/v1/federation.proto`; this crate only compiles it (with `protox`,
//! no `protoc` needed) and adds the constants both sides must agree on. It holds no logic: services own
//! validation, limits and state.
//!
//! - [`v1`]: generated messages, `coordinator_client`/`coordinator_server`,
//!   `inference_client`/`inference_server` and `model_source_client`/`model_source_server` modules.
//! - [`PROTOCOL_VERSION`], [`MAX_CHUNK_BYTES`]: what a peer must speak and respect.
#![forbid(unsafe_code)]

/// Generated types of package `hearth.v1`.
#[allow(missing_docs, clippy::all, unreachable_pub, unused_qualifications)]
pub mod v1 {
    tonic::include_proto!("hearth.v1");
}

/// The protocol version this build speaks, `major.minor`. Peers must share the major version. 1.2 adds
/// federated evaluation (`EvalOpen`, `RoundSummary.evaluation`); 1.3 the revocation list (`GetRevocations`);
/// 1.4 the model source for inference replicas (`ModelSource`) and the instance a decline names
/// (`DeclineRequest.instance`); 1.5 the instance each secure-aggregation message and relay belongs to
/// (`SecAggHeader.instance`, `SecAggRelay.instance`).
pub const PROTOCOL_VERSION: &str = "1.5";

/// The secure-round id of the federated evaluation of `job`'s versions (`EvalOpen`): coordinator and
/// participants name its relays and declines by it. Job ids carry no '/', so it never names a job.
pub fn eval_key(job: &str) -> String {
    format!("{job}/eval")
}

/// The protocol's major version: a peer whose major differs is refused at registration.
pub const PROTOCOL_MAJOR: u32 = 1;

/// Analytics statistic `spend`: grid units one record's clipped value spans (`value_bound` is this many
/// units), and the units each record adds to the count. Both ends of a query must agree on it.
pub const SPEND_UNITS: i64 = 100;

/// Largest `data` chunk in a model or update stream, in bytes.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Largest single gRPC message either side decodes: a chunk plus framing and header room.
pub const MAX_MESSAGE_BYTES: usize = MAX_CHUNK_BYTES + (64 << 10);

/// Returns the major version of a `major.minor` protocol string, or `None` if it is malformed.
pub fn protocol_major(version: &str) -> Option<u32> {
    let (major, minor) = version.split_once('.')?;
    minor.parse::<u32>().ok()?;
    major.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_major_parses_only_major_dot_minor() {
        assert_eq!(protocol_major("1.0"), Some(1));
        assert_eq!(protocol_major("2.13"), Some(2));
        for bad in ["", "1", "1.", ".1", "a.b", "1.0.0", "-1.0"] {
            assert_eq!(protocol_major(bad), None, "{bad:?}");
        }
    }
}
