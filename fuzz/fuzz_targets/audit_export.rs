//! An audit export an auditor verifies offline (entries, checkpoints, cosignatures, one JSON object per
//! line), and its lines one by one. No input may panic.
#![no_main]

use hearth_audit::export::{parse_checkpoint_line, parse_entry_line};
use hearth_audit::verify::verify_export;
use hearth_audit::Trust;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verify_export(data, &Trust { log_keys: Vec::new(), witnesses: Vec::new() });
    for line in data.split(|b| *b == b'\n').take(64) {
        let _ = parse_entry_line(line);
        let _ = parse_checkpoint_line(line);
    }
});
