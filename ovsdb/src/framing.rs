//! JSON-RPC over a stream as ovsdb-server speaks it: JSON values back to back
//! with no length prefix and no delimiter, so message boundaries are found
//! by reading the JSON itself.
//!
//! A scanner tracks nesting depth and string state byte by byte, across
//! reads, and hands each complete value to serde_json. Re-parsing the
//! buffer with `serde_json::StreamDeserializer` after every read would be
//! simpler, but a large message (a Southbound database's initial dump runs
//! to hundreds of megabytes) arrives in many reads and would be parsed from
//! its start again on each: quadratic. The scanner looks at each byte once.
use serde_json::Value;

/// The largest message accepted by default: far above any real database
/// dump, small enough that a broken peer cannot make us buffer without end.
pub const DEFAULT_MAX_MESSAGE: usize = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("message larger than {limit} bytes ({seen} bytes read of it)")]
    TooLarge { limit: usize, seen: usize },
    #[error("expected a JSON object, found byte 0x{byte:02x} between messages")]
    NotAnObject { byte: u8 },
    #[error("malformed JSON message: {0}")]
    Json(String),
}

/// serde_json's own recursion limit: deeper input would fail there anyway.
const MAX_DEPTH: usize = 128;

fn closer(open: u8) -> u8 {
    if open == b'{' {
        b'}'
    } else {
        b']'
    }
}

/// Splits a byte stream into JSON values.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Next byte to scan.
    pos: usize,
    /// Start of the message being scanned, if one has started.
    start: Option<usize>,
    /// The closing bracket each open one expects: a mismatch is caught at
    /// once rather than leaving the scanner waiting for a balance that
    /// never comes.
    open: Vec<u8>,
    in_string: bool,
    escaped: bool,
    max: usize,
}

impl Decoder {
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            start: None,
            open: Vec::new(),
            in_string: false,
            escaped: false,
            max: max_message,
        }
    }

    /// Bytes held that do not yet form a complete message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Adds `bytes` and appends every message they complete to `out`.
    /// After an error the decoder is unusable: the stream is out of step
    /// and the connection must be dropped.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Value>) -> Result<(), FramingError> {
        self.buf.extend_from_slice(bytes);
        let mut consumed = 0;
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            let Some(start) = self.start else {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => consumed = self.pos,
                    b'{' | b'[' => {
                        self.start = Some(self.pos - 1);
                        self.open.push(closer(b));
                    }
                    byte => return Err(FramingError::NotAnObject { byte }),
                }
                continue;
            };
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    if self.open.len() >= MAX_DEPTH {
                        return Err(FramingError::Json(format!("nested deeper than {MAX_DEPTH}")));
                    }
                    self.open.push(closer(b));
                }
                b'}' | b']' => {
                    if self.open.pop() != Some(b) {
                        return Err(FramingError::Json(format!("unexpected '{}'", b as char)));
                    }
                    if self.open.is_empty() {
                        let len = self.pos - start;
                        if len > self.max {
                            return Err(FramingError::TooLarge { limit: self.max, seen: len });
                        }
                        let v = serde_json::from_slice(&self.buf[start..self.pos])
                            .map_err(|e| FramingError::Json(e.to_string()))?;
                        out.push(v);
                        self.start = None;
                        consumed = self.pos;
                    }
                }
                _ => {}
            }
        }
        self.buf.drain(..consumed);
        self.pos -= consumed;
        if let Some(s) = self.start.as_mut() {
            *s -= consumed;
        }
        if self.buf.len() > self.max {
            return Err(FramingError::TooLarge { limit: self.max, seen: self.buf.len() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(d: &mut Decoder, chunks: &[&[u8]]) -> Result<Vec<Value>, FramingError> {
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out)?;
        }
        Ok(out)
    }

    fn sample() -> (Vec<u8>, Vec<Value>) {
        let msgs = vec![
            json!({"id": 1, "method": "echo", "params": []}),
            json!({"id": null, "method": "update3", "params": [["monid", "OVN_Southbound"], "0b8a1c2d-3e4f-4a5b-8c6d-7e8f90a1b2c3",
                {"Chassis": {"0b8a1c2d-3e4f-4a5b-8c6d-7e8f90a1b2c3": {"modify": {"name": "a\"}]{[\\", "other_config": ["map", [["k", "v}"]]]}}}}]}),
            json!({"id": 7, "result": [{"uuid": ["uuid", "0b8a1c2d-3e4f-4a5b-8c6d-7e8f90a1b2c3"]}, {}], "error": null}),
            json!({"id": 8, "result": "é ü \u{1F600} \\u0041", "error": null}),
        ];
        let mut bytes = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            bytes.extend_from_slice(serde_json::to_string(m).unwrap().as_bytes());
            if i == 1 {
                bytes.extend_from_slice(b" \n\t\r ");
            }
        }
        (bytes, msgs)
    }

    #[test]
    fn concatenated_messages_in_one_read() {
        let (bytes, msgs) = sample();
        assert_eq!(all(&mut Decoder::new(DEFAULT_MAX_MESSAGE), &[&bytes]).unwrap(), msgs);
    }

    #[test]
    fn split_at_every_byte() {
        let (bytes, msgs) = sample();
        for cut in 0..=bytes.len() {
            let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
            let got = all(&mut d, &[&bytes[..cut], &bytes[cut..]]).unwrap();
            assert_eq!(got, msgs, "cut at {cut}");
            assert_eq!(d.pending(), 0);
        }
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(all(&mut d, &chunks).unwrap(), msgs);
    }

    #[test]
    fn keeps_an_incomplete_tail() {
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        let got = all(&mut d, &[br#"{"id":1,"result":[],"error":null}{"id":2,"res"#]).unwrap();
        assert_eq!(got, vec![json!({"id":1,"result":[],"error":null})]);
        assert_eq!(d.pending(), br#"{"id":2,"res"#.len());
        let got = all(&mut d, &[br#"ult":{"a":"}"},"error":null}"#]).unwrap();
        assert_eq!(got, vec![json!({"id":2,"result":{"a":"}"},"error":null})]);
    }

    #[test]
    fn refuses_oversized_message() {
        let mut d = Decoder::new(64);
        let mut out = Vec::new();
        d.feed(br#"{"id":1,"result":""#, &mut out).unwrap();
        let e = d.feed(&[b'x'; 100], &mut out).unwrap_err();
        assert!(matches!(e, FramingError::TooLarge { limit: 64, .. }), "{e}");
        assert!(e.to_string().contains("larger than 64 bytes"));
        // A complete message is measured too, however it arrived.
        let e = Decoder::new(64).feed(format!("{{\"a\":\"{}\"}}", "x".repeat(100)).as_bytes(), &mut out).unwrap_err();
        assert!(matches!(e, FramingError::TooLarge { limit: 64, seen: 108 }), "{e}");
        // Complete messages of any number are fine as long as each fits.
        let mut d = Decoder::new(64);
        let one = br#"{"id":1,"result":null,"error":null}"#;
        let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 100).collect();
        assert_eq!(all(&mut d, &[&many]).unwrap().len(), 100);
    }

    #[test]
    fn refuses_garbage() {
        let mut out = Vec::new();
        let e = Decoder::new(1024).feed(b"HTTP/1.1 200 OK\r\n", &mut out).unwrap_err();
        assert_eq!(e, FramingError::NotAnObject { byte: b'H' });
        let e = Decoder::new(1024).feed(br#"{"id":1,"result":nul}"#, &mut out).unwrap_err();
        assert!(matches!(e, FramingError::Json(_)), "{e}");
        let e = Decoder::new(1024).feed(b"{\"a\":\"\xff\xfe\"}", &mut out).unwrap_err();
        assert!(matches!(e, FramingError::Json(_)), "{e}");
        // Brackets that do not pair are an error at once, not a wait.
        let e = Decoder::new(1024).feed(br#"{"params":[}"#, &mut out).unwrap_err();
        assert_eq!(e, FramingError::Json("unexpected '}'".into()));
        let deep = "[".repeat(200);
        let e = Decoder::new(1024).feed(deep.as_bytes(), &mut out).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }
}
