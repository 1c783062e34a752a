//! Model files (`.hearthm`): what a participant stores and `hearth model show` reads, and what a model
//! download becomes. No input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hearth_models::decode_any_model_file(data, 1 << 24);
});
