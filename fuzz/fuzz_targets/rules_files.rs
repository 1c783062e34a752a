//! The desk's rules file (routing, templates, workflows), reloaded by an operator or DPO at run time. No
//! input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hearth_desk::rules::Rules::parse(text);
    }
});
