//! A task event's JSON, written straight into a buffer: the very bytes `serde_json` makes of a
//! [`TaskEvent`] (a property test holds the two to that), without serde's field-by-field
//! machinery. A stream following a busy log makes one for every event it sends, and serde's
//! encoding was most of what the stream cost the server (`serialize_entry`, string escaping).

use super::TaskEvent;
use crate::time::Timestamp;

impl TaskEvent<'_> {
    /// Appends the event as `serde_json::to_writer` would write it.
    pub fn write_json(&self, out: &mut String) {
        out.push_str(r#"{"type":""#);
        out.push_str(self.event_type.as_str());
        out.push_str(r#"","at":"#);
        push_time(out, self.at);
        out.push_str(r#","queue":"#);
        push_str(out, self.queue);
        out.push_str(r#","kind":"#);
        push_str(out, self.kind);
        out.push_str(r#","task_id":""#);
        push_id(out, self.task_id);
        out.push('"');
        if let Some(w) = self.workflow_id {
            out.push_str(r#","workflow_id":""#);
            push_id(out, w);
            out.push('"');
        }
        if let Some(a) = self.attempt {
            out.push_str(r#","attempt":"#);
            out.push_str(itoa::Buffer::new().format(a));
        }
        if !self.tags.is_empty() {
            out.push_str(r#","tags":["#);
            for (i, tag) in self.tags.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, tag);
            }
            out.push(']');
        }
        out.push_str(r#","data":{"#);
        let d = &self.data;
        let mut first = true;
        let mut key = |out: &mut String, name: &str| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
        };
        if let Some(error) = d.error {
            key(out, "error");
            push_str(out, error);
        }
        if let Some(fraction) = d.fraction {
            key(out, "fraction");
            // Rare (progress only), and floats have their own rules (`null` for NaN): serde's.
            out.push_str(&serde_json::to_string(&fraction).expect("a float serializes"));
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
            out.push_str(itoa::Buffer::new().format(us));
        }
        if let Some(state) = d.state {
            key(out, "state");
            push_str(out, state);
        }
        if let Some(us) = d.wait_us {
            key(out, "wait_us");
            out.push_str(itoa::Buffer::new().format(us));
        }
        if let Some(worker) = d.worker_id {
            key(out, "worker_id");
            push_str(out, worker);
        }
        out.push_str("}}");
    }
}

fn push_id(out: &mut String, id: crate::TaskId) {
    let mut buf = uuid::Uuid::encode_buffer();
    out.push_str(uuid::Uuid::from_bytes(*id.as_bytes()).hyphenated().encode_lower(&mut buf));
}

fn push_time(out: &mut String, t: Timestamp) {
    match t.rfc3339() {
        Some(text) => {
            out.push('"');
            out.push_str(text.as_str());
            out.push('"');
        }
        None => push_str(out, &t.to_string()),
    }
}

/// A JSON string as `serde_json` writes one: `"` and `\` escaped, the control characters as
/// `\b \t \n \f \r` or `\u00xx`, everything else (`/`, DEL, any non-ASCII) as it is.
fn push_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => '"',
            b'\\' => '\\',
            0x08 => 'b',
            b'\t' => 't',
            b'\n' => 'n',
            0x0c => 'f',
            b'\r' => 'r',
            0x00..=0x1f => 'u',
            _ => continue,
        };
        // `i` is an ASCII byte's, so a character boundary.
        out.push_str(&s[plain..i]);
        plain = i + 1;
        out.push('\\');
        out.push(short);
        if short == 'u' {
            out.push_str("00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out.push_str(&s[plain..]);
    out.push('"');
}
