//! One API request line as the daemon reads it off its socket: parsed or
//! refused, never a panic; what parses serializes back to the same request.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xgw::api::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        let text = serde_json::to_string(&req).expect("a parsed request serializes");
        assert_eq!(serde_json::from_str::<Request>(&text).expect("round trip"), req);
    }
});
