//! The endpoints file parser and the clusterset validator on arbitrary text: whatever
//! an operator (or an attacker with write access to the file) puts there must come back
//! as a value or a list of errors, never a panic, a hang or an unbounded allocation.
#![no_main]

use causeway_crds::manifest::load_clusterset;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The gateway reads the file as UTF-8 and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match load_clusterset(text) {
        Ok(check) => {
            // Accepted sites passed validation: every CIDR of every pair is disjoint.
            for (i, a) in check.sites.iter().enumerate() {
                for b in &check.sites[i + 1..] {
                    for x in a.cidrs() {
                        for y in b.cidrs() {
                            assert!(
                                !causeway_crds::validate::overlaps(x, y),
                                "accepted overlapping {x} and {y}"
                            );
                        }
                    }
                }
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without a reason");
            for e in &errors {
                // Rendering the message is what the gateway does next; it must not panic.
                let _ = e.to_string();
            }
        }
    }
});
