//! A task event's JSON, written straight into a buffer: the very bytes `serde_json` makes of a
//! [`TaskEvent`] (a property test holds the two to that), without serde's field-by-field
//! machinery. A stream following a busy log makes one for every event it sends, and serde's
//! encoding was most of what the stream cost the server (`serialize_entry`, string escaping).

use super::TaskEvent;
use crate::time::Timestamp;

impl TaskEvent<'_> {
    /// Appends the event as `serde_json::to_writer` would write it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"type":""#);
        out.extend_from_slice(self.event_type.as_str().as_bytes());
        out.extend_from_slice(br#"","at":"#);
        push_time(out, self.at);
        out.extend_from_slice(br#","queue":"#);
        push_str(out, self.queue);
        out.extend_from_slice(br#","kind":"#);
        push_str(out, self.kind);
        out.extend_from_slice(br#","task_id":""#);
        push_id(out, self.task_id);
        out.push(b'"');
        if let Some(w) = self.workflow_id {
            out.extend_from_slice(br#","workflow_id":""#);
            push_id(out, w);
            out.push(b'"');
        }
        if let Some(a) = self.attempt {
            out.extend_from_slice(br#","attempt":"#);
            out.extend_from_slice(itoa::Buffer::new().format(a).as_bytes());
        }
        if !self.tags.is_empty() {
            out.extend_from_slice(br#","tags":["#);
            for (i, tag) in self.tags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_str(out, tag);
            }
            out.push(b']');
        }
        out.extend_from_slice(br#","data":{"#);
        let d = &self.data;
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, name: &str| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        if let Some(error) = d.error {
            key(out, "error");
            push_str(out, error);
        }
        if let Some(fraction) = d.fraction {
            key(out, "fraction");
            // Rare (progress only), and floats have their own rules (`null` for NaN): serde's.
            serde_json::to_writer(&mut *out, &fraction).expect("a float serializes");
        }
        if let Some(message) = d.message {
            key(out, "message");
            push_str(out, message);
        }
        if let Some(run_at) = d.run_at {
            key(out, "run_at");
            push_time(out, run_at);
        }
        if let Some(us) = d.run_us {
            key(out, "run_us");
            out.extend_from_slice(itoa::Buffer::new().format(us).as_bytes());
        }
        if let Some(state) = d.state {
            key(out, "state");
            push_str(out, state);
        }
        if let Some(us) = d.wait_us {
            key(out, "wait_us");
            out.extend_from_slice(itoa::Buffer::new().format(us).as_bytes());
        }
        if let Some(worker) = d.worker_id {
            key(out, "worker_id");
            push_str(out, worker);
        }
        out.extend_from_slice(b"}}");
    }
}

fn push_id(out: &mut Vec<u8>, id: crate::TaskId) {
    let mut buf = uuid::Uuid::encode_buffer();
    out.extend_from_slice(uuid::Uuid::from_bytes(*id.as_bytes()).hyphenated().encode_lower(&mut buf).as_bytes());
}

fn push_time(out: &mut Vec<u8>, t: Timestamp) {
    match t.rfc3339() {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_str().as_bytes());
            out.push(b'"');
        }
        None => push_str(out, &t.to_string()),
    }
}

/// A JSON string as `serde_json` writes one: `"` and `\` escaped, the control characters as
/// `\b \t \n \f \r` or `\u00xx`, everything else (`/`, DEL, any non-ASCII) as it is.
fn push_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            b'\t' => b't',
            b'\n' => b'n',
            0x0c => b'f',
            b'\r' => b'r',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            out.extend_from_slice(&[b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}
