//! Every secure-aggregation wire message a peer (a participant, or the coordinator relaying) can send:
//! `Message::decode` over the bytes, with the header's version, type and context either taken from the
//! input or set right (so the fuzzer reaches the bodies). No input may panic.
#![no_main]

use hearth_secagg::{Limits, Message, VERSION};
use libfuzzer_sys::fuzz_target;

const CONTEXT: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let limits = Limits {
        context: CONTEXT,
        n: 8,
        degree: 4,
        vector_len: 16,
        // 20 bits: words of 3 bytes, not byte-aligned values.
        modulus_bits: if mode & 0x40 == 0 { 20 } else { 32 },
        agreement_key_len: if mode & 0x20 == 0 { 32 } else { 65 },
    };
    if mode & 0x80 != 0 {
        let _ = Message::decode(rest, &limits);
        return;
    }
    let Some((&kind, body)) = rest.split_first() else { return };
    let mut bytes = Vec::with_capacity(34 + body.len());
    bytes.extend_from_slice(&[VERSION, kind % 16]);
    bytes.extend_from_slice(&CONTEXT);
    bytes.extend_from_slice(body);
    let _ = Message::decode(&bytes, &limits);
});
