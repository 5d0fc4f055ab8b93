//! Fuzzes `stasis::instrument::instrument` with arbitrary bytes; whatever it accepts must validate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = stasis::instrument::instrument(data) {
        let mut validator =
            wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
        assert!(
            validator.validate_all(&out.wasm).is_ok(),
            "instrument produced an invalid module"
        );
    }
});
