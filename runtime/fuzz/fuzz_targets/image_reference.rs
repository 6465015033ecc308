//! Image references as kubelet and users write them: parsing never panics, and a parsed
//! reference's canonical form parses back to the same canonical form.
#![no_main]

use capstan_runtime::image::reference::{ImageRef, digest_hex, parse_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let _ = parse_id(input);
    let _ = digest_hex(input);
    if let Ok(reference) = ImageRef::parse(input) {
        let canonical = reference.canonical();
        let again = ImageRef::parse(&canonical).unwrap_or_else(|e| panic!("{input:?} → {canonical:?} does not parse: {e}"));
        assert_eq!(again.canonical(), canonical, "canonical form of {input:?} is not stable");
        let _ = reference.tagged();
        let _ = reference.to_client_reference();
    }
});
