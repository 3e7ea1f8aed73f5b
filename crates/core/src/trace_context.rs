//! W3C Trace Context: the `traceparent` a submit may carry, stored with its task so the spans of
//! every attempt join the submitter's trace.
//!
//! A body field must be the version-00 form exactly; a header is read leniently, as the
//! recommendation asks (see [`TraceParent::from_header`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed `traceparent`: `00-<trace id, 32 hex>-<parent span id, 16 hex>-<flags, 2 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// Why a `traceparent` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("is not a W3C traceparent ({0}); expected 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>")]
pub struct BadTraceParent(&'static str);

impl TraceParent {
    /// A span in a trace. `None` when either id is all zeros, which the recommendation reserves
    /// for "no id".
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<TraceParent> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(TraceParent { trace_id, span_id, flags })
    }

    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller sampled the trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

fn hex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], BadTraceParent> {
    let bytes = s.as_bytes();
    // Lowercase only, as the recommendation requires.
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(BadTraceParent(what)),
    };
    if bytes.len() != 2 * N {
        return Err(BadTraceParent(what));
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(out)
}

impl TraceParent {
    /// Reads a `traceparent` header the way the recommendation asks of a reader that knows
    /// version 00: a later version is read by its first four fields, and anything unreadable is
    /// no parent (the request starts a trace of its own) rather than an error.
    pub fn from_header(s: &str) -> Option<TraceParent> {
        let mut parts = s.trim().splitn(5, '-');
        let [version] = hex::<1>(parts.next()?, "version").ok()?;
        let head = [parts.next()?, parts.next()?, parts.next()?].join("-");
        match (version, parts.next()) {
            (0xff, _) | (0, Some(_)) => None,
            _ => format!("00-{head}").parse().ok(),
        }
    }
}

/// The version-00 form exactly, as a request body's `traceparent` field must be.
impl FromStr for TraceParent {
    type Err = BadTraceParent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('-').collect();
        let [version, trace_id, span_id, flags] = parts[..] else {
            return Err(BadTraceParent("four fields joined by '-'"));
        };
        if version != "00" {
            return Err(BadTraceParent("version must be 00"));
        }
        let trace_id = hex::<16>(trace_id, "trace id")?;
        let span_id = hex::<8>(span_id, "span id")?;
        let [flags] = hex::<1>(flags, "flags")?;
        TraceParent::new(trace_id, span_id, flags).ok_or(BadTraceParent("an id is all zeros"))
    }
}

/// To and from OpenTelemetry's span context, for the server's and the worker SDK's spans.
#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::TraceParent;

    impl TraceParent {
        /// The remote span this names, to start a child of or link to.
        pub fn span_context(&self) -> SpanContext {
            SpanContext::new(
                TraceId::from_bytes(self.trace_id),
                SpanId::from_bytes(self.span_id),
                TraceFlags::new(self.flags),
                true,
                TraceState::default(),
            )
        }

        /// A span's context as a traceparent; `None` for an invalid (no-op) span's.
        pub fn of(context: &SpanContext) -> Option<TraceParent> {
            if !context.is_valid() {
                return None;
            }
            TraceParent::new(context.trace_id().to_bytes(), context.span_id().to_bytes(), context.trace_flags().to_u8())
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        self.trace_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("-")?;
        self.span_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", self.flags)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for TraceParent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$"))
            .description(Some("A W3C Trace Context traceparent: 00-<trace id>-<parent span id>-<flags>."))
            .examples(["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"])
            .into()
    }
}

impl utoipa::ToSchema for TraceParent {}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_round_trips() {
        let t: TraceParent = SAMPLE.parse().unwrap();
        assert_eq!(t.to_string(), SAMPLE);
        assert_eq!(t.trace_id()[0], 0x4b);
        assert_eq!(t.span_id()[7], 0xb7);
        assert!(t.sampled());
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{SAMPLE}\""));
        assert_eq!(serde_json::from_str::<TraceParent>(&format!("\"{SAMPLE}\"")).unwrap(), t);
    }

    #[test]
    fn a_header_of_a_later_version_is_read_by_its_first_four_fields() {
        let t = TraceParent::from_header("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-ever").unwrap();
        assert_eq!(t.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!t.sampled());
        assert_eq!(TraceParent::from_header(SAMPLE), SAMPLE.parse().ok());
        // Unreadable headers are no parent, not an error.
        assert_eq!(TraceParent::from_header("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), None);
        assert_eq!(TraceParent::from_header("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"), None);
        assert_eq!(TraceParent::from_header("garbage"), None);
        // A body field takes version 00 only.
        assert!("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".parse::<TraceParent>().is_err());
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn zero_ids_make_no_traceparent() {
        assert!(TraceParent::new([0; 16], [1; 8], 1).is_none());
        assert!(TraceParent::new([1; 16], [0; 8], 1).is_none());
        assert!(TraceParent::new([1; 16], [1; 8], 1).is_some());
    }
}
