//! Every protobuf message a peer sends over gRPC (participants to the coordinator, the coordinator to
//! participants, apps to inference, a participant to its inference replicas and back), and the model spec JSON a round announcement carries. No input may
//! panic.
#![no_main]

use hearth_proto::v1;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 14 {
        0 => {
            if let Ok(a) = v1::Announcement::decode(bytes) {
                if let Some(v1::announcement::Kind::RoundOpen(open)) = a.kind {
                    let _ = hearth_models::ModelSpec::from_json(&open.model_spec_json);
                }
            }
        }
        1 => drop(v1::SecAggChunk::decode(bytes)),
        2 => drop(v1::UpdateChunk::decode(bytes)),
        3 => {
            if let Ok(v1::ModelChunk { kind: Some(v1::model_chunk::Kind::Header(h)) }) =
                v1::ModelChunk::decode(bytes)
            {
                let _ = hearth_models::ModelSpec::from_json(&h.model_spec_json);
            }
        }
        4 => drop(v1::JobSpec::decode(bytes)),
        5 => drop(v1::QueryRequest::decode(bytes)),
        6 => drop(v1::RegisterRequest::decode(bytes)),
        7 => drop(v1::DeclineRequest::decode(bytes)),
        8 => drop(v1::SetPolicyRequest::decode(bytes)),
        9 => drop(v1::IntentRequest::decode(bytes)),
        10 => drop(v1::RecommendRequest::decode(bytes)),
        11 => drop(v1::WatchJobRequest::decode(bytes)),
        12 => drop(v1::ServedModelRequest::decode(bytes)),
        _ => drop(v1::ServedModelChunk::decode(bytes)),
    }
});
