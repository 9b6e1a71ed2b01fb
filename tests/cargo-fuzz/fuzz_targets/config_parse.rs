//! The daemon's TOML config file: any input gives a config or a one-line
//! error (the operator sees it as one line naming the field), never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = xgw::config::Config::parse(text) {
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "multi-line config error: {msg:?}");
        assert!(!msg.is_empty());
    }
});
