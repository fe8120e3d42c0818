//! Arbitrary bytes as one admin request line, decoded exactly as the admin socket decodes
//! it (`serde_json` into `RequestLine`, before any authorization or dispatch). Decoding must
//! not panic; a request that decodes must encode back to JSON that decodes to the same
//! request (the same JSON value), so lunarctl and lunard agree on every request shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use target_daemon::admin::proto::{RequestLine, MAX_REQUEST_LINE};

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_REQUEST_LINE {
        return; // refused by length before decoding
    }
    let Ok(req) = serde_json::from_slice::<RequestLine>(data) else {
        return;
    };
    let value = serde_json::to_value(&req).expect("a decoded request encodes");
    let line = serde_json::to_vec(&req).expect("a decoded request encodes");
    let again: RequestLine = serde_json::from_slice(&line).expect("an encoded request decodes");
    assert_eq!(serde_json::to_value(&again).ok(), Some(value));
});
