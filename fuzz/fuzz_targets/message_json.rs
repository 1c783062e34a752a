//! The body of `POST /v1/messages` an app sends, and the normalisation of every identifier in it. No input
//! may panic.
#![no_main]

use hearth_desk::identity::{normalise, Kind};
use hearth_desk::MessageBody;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<MessageBody>(data) else { return };
    let ids = &body.identifiers;
    for (kind, raw) in [
        (Kind::Phone, &ids.phone),
        (Kind::Email, &ids.email),
        (Kind::OpenId, &ids.openid),
        (Kind::Device, &ids.device),
    ] {
        if let Some(raw) = raw {
            let _ = normalise(kind, raw, Some("86"));
            let _ = normalise(kind, raw, None);
        }
    }
});
