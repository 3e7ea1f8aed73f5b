//! The OpenAPI schemas of what `#[derive(ToSchema)]` cannot see through: ids, times, lease
//! tokens, rates, resources, labels, names and any-JSON payloads. The server's OpenAPI document
//! is generated from the wire types and these, so each rule the server checks is written once
//! here, beside the code that checks it.
//!
//! A schema here is exactly what the server accepts, no more and no less: a schemathesis run
//! checks both ways (data the schema allows is accepted; data it forbids is refused).

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ArrayItems, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};

/// The longest name (queue, kind, tag, key) the server takes by default, in characters.
pub const NAME_MAX_CHARS: usize = 128;

/// No control characters (Unicode category Cc, which is what `char::is_control` tests).
pub const NO_CONTROL_CHARACTERS: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// A resource or label name (and a label's value): 1 to 64 of `a-z A-Z 0-9 _ - . : /`.
pub const PLACEMENT_NAME: &str = "^[A-Za-z0-9_.:/-]{1,64}$";

/// A rate as the wire carries it: `N/s`, `N/m`, `N/h` or `N/<ms>ms`, with N from 1 to 1,000,000
/// and a period of at most a day.
pub const RATE: &str =
    "^([1-9][0-9]{0,5}|1000000)/(s|m|h|([1-9][0-9]{0,6}|[1-7][0-9]{7}|8[0-5][0-9]{6}|86[0-3][0-9]{5}|86400000)ms)$";

/// A lease token: 1 to 16 hex digits.
pub const LEASE_TOKEN: &str = "^[0-9a-fA-F]{1,16}$";

fn items(s: Schema) -> ArrayItems {
    ArrayItems::RefOrSchema(Box::new(RefOr::T(s)))
}

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).description(Some(description))
}

fn nullable(s: ObjectBuilder) -> ObjectBuilder {
    s.schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

/// One variant of an internally tagged enum: an object whose `tag` field is `value`, taking no
/// field it does not list (serde's `deny_unknown_fields`). Add its own fields to it.
pub(crate) fn tagged_variant(tag: &str, value: &str, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property(tag, ObjectBuilder::new().schema_type(Type::String).enum_values(Some([value])))
        .required(tag)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

/// A name: a queue, kind, tag or key.
pub fn name() -> Schema {
    string("A name: 1 to 128 characters, no control characters.")
        .min_length(Some(1))
        .max_length(Some(NAME_MAX_CHARS))
        .pattern(Some(NO_CONTROL_CHARACTERS))
        .into()
}

/// A name, or null (the same as leaving it out).
pub fn optional_name() -> Schema {
    nullable(string("A name: 1 to 128 characters, no control characters; null is the same as leaving it out."))
        .min_length(Some(1))
        .max_length(Some(NAME_MAX_CHARS))
        .pattern(Some(NO_CONTROL_CHARACTERS))
        .into()
}

/// A list of names (`tags`): at most 32, or null.
pub fn optional_tags() -> Schema {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(items(name()))
        .max_items(Some(32))
        .description(Some("At most 32 tags; null is the same as leaving them out."))
        .into()
}

/// The queues a worker serves or fetches from: 1 to 64 names, none twice.
pub fn queue_list() -> Schema {
    ArrayBuilder::new().items(items(name())).min_items(Some(1)).max_items(Some(64)).unique_items(true).into()
}

/// The kinds a worker runs: at most 1000 names, none twice.
pub fn kind_list() -> Schema {
    ArrayBuilder::new()
        .items(items(name()))
        .max_items(Some(1000))
        .unique_items(true)
        .description(Some("The kinds it has handlers for (at most 1000, none twice); left out: any kind."))
        .into()
}

/// The JSON Schemas of a worker's kinds' payloads, by kind.
pub fn kind_schemas() -> Schema {
    let schema = ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some("A JSON Schema (draft 2020-12 unless its $schema says otherwise)."));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(name()))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(schema.into()))))
        .max_properties(Some(1000))
        .description(Some(
            "A JSON Schema for the payload of some of its kinds (each one of its kinds); left out: none.",
        ))
        .into()
}

/// Any JSON value.
pub fn any_json() -> Schema {
    ObjectBuilder::new().schema_type(SchemaType::AnyValue).description(Some("Any JSON value.")).into()
}

/// Labels: `{"region": "eu"}`, at most 32.
pub fn labels() -> Schema {
    let part = || string("1 to 64 of a-z A-Z 0-9 _ - . : /").pattern(Some(PLACEMENT_NAME));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(part()))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(part().into()))))
        .max_properties(Some(32))
        .description(Some("Labels: {\"region\": \"eu\"}; at most 32, each side 1 to 64 of a-z A-Z 0-9 _ - . : /."))
        .into()
}

/// Labels, or null.
pub fn optional_labels() -> Schema {
    match labels() {
        Schema::Object(o) => {
            let mut o = o;
            o.schema_type = SchemaType::from_iter([Type::Object, Type::Null]);
            Schema::Object(o)
        }
        other => other,
    }
}

fn resources_with(types: SchemaType) -> Schema {
    ObjectBuilder::new()
        .schema_type(types)
        .property_names(Some(string("1 to 64 of a-z A-Z 0-9 _ - . : /").pattern(Some(PLACEMENT_NAME))))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(crate::bounded::MAX_SAFE_INTEGER as f64))
                .into(),
        ))))
        .max_properties(Some(32))
        .description(Some(
            "Amounts of named resources: {\"gpu\": 2, \"memory_mb\": 512}; at most 32, names 1 to 64 of a-z A-Z 0-9 _ - . : /.",
        ))
        .into()
}

/// Resources, or null.
pub fn optional_resources() -> Schema {
    resources_with(SchemaType::from_iter([Type::Object, Type::Null]))
}

impl utoipa::PartialSchema for crate::placement::Resources {
    fn schema() -> RefOr<Schema> {
        resources_with(SchemaType::Type(Type::Object)).into()
    }
}
impl utoipa::ToSchema for crate::placement::Resources {}

impl utoipa::PartialSchema for crate::id::TaskId {
    fn schema() -> RefOr<Schema> {
        string("A task id (a UUID).").format(Some(SchemaFormat::Custom("uuid".into()))).into()
    }
}
impl utoipa::ToSchema for crate::id::TaskId {}

impl utoipa::PartialSchema for crate::id::LeaseToken {
    fn schema() -> RefOr<Schema> {
        string("The lease (fencing) token: 1 to 16 hex digits.").pattern(Some(LEASE_TOKEN)).into()
    }
}
impl utoipa::ToSchema for crate::id::LeaseToken {}

impl utoipa::PartialSchema for crate::time::Timestamp {
    fn schema() -> RefOr<Schema> {
        string("An RFC 3339 time, such as 2026-01-02T03:04:05.123456Z.")
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}
impl utoipa::ToSchema for crate::time::Timestamp {}

impl utoipa::PartialSchema for crate::limits::Rate {
    fn schema() -> RefOr<Schema> {
        string("A rate: N/s, N/m, N/h or N/<ms>ms, N from 1 to 1000000, the period at most a day (86400000ms).")
            .pattern(Some(RATE))
            .into()
    }
}
impl utoipa::ToSchema for crate::limits::Rate {}

impl utoipa::PartialSchema for crate::auth::QueueScope {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new().items(string("A queue name, or a prefix ending in *.")).into()
    }
}
impl utoipa::ToSchema for crate::auth::QueueScope {}

/// A bulk call's cursor (`STATE_INDEX:TASK_ID`, the id empty at the start of a state), or null.
pub fn optional_bulk_cursor() -> Schema {
    nullable(string("From a previous answer's next_cursor."))
        .pattern(Some("^[0-9]{1,2}:([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"))
        .into()
}

/// A workflow node's id: required (non-empty) in a graph, left out in a fan-out.
pub fn node_id() -> Schema {
    string("The node's id within its workflow: required (1 to 128 characters) in a graph; left out for a fan-out's children and join, which are named after their parent.")
        .max_length(Some(NAME_MAX_CHARS))
        .pattern(Some(NO_CONTROL_CHARACTERS))
        .into()
}

/// The ids of a node's parents, none twice.
pub fn node_ids() -> Schema {
    ArrayBuilder::new()
        .items(items(name()))
        .unique_items(true)
        .description(Some("The ids of the nodes this one waits for, each at most once."))
        .into()
}

/// A token's name.
pub fn token_name() -> Schema {
    string("1 to 64 letters, digits or - _ . @ :, not starting with tok_ (token ids do).")
        .pattern(Some("^[A-Za-z0-9_.@:-]{1,64}$"))
        .into()
}

#[cfg(test)]
mod tests {
    //! Each rule the document states, held against the code that checks it: what the schema
    //! allows parses, what it forbids is refused. (Found by schemathesis; `tests/contract` runs it.)

    use crate::id::{LeaseToken, TaskId};
    use crate::limits::Rate;
    use crate::time::Timestamp;

    fn matches(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).expect("the schema's pattern is a regex").is_match(s)
    }

    #[test]
    fn rates_on_the_wire_are_exactly_the_written_back_form() {
        for ok in ["1/s", "10/m", "5/h", "3/500ms", "1000000/s", "1/86400000ms"] {
            let r = Rate::from_wire(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(Rate::from_wire(&r.to_string()).unwrap(), r, "{ok} round-trips");
            assert!(matches(super::RATE, ok));
        }
        for bad in ["0/h", "01/s", "1000001/s", "1/86400001ms", "1/0ms", "1/sec", " 1/s", "1/s ", "+1/s", "1/1.5s", ""]
        {
            assert!(Rate::from_wire(bad).is_err(), "{bad:?} must be refused on the wire");
            assert!(!matches(super::RATE, bad), "{bad:?} must not fit the schema's pattern");
        }
        // People still write the looser forms on the command line.
        assert_eq!("10/sec".parse::<Rate>().unwrap(), Rate::from_wire("10/s").unwrap());
    }

    #[test]
    fn task_ids_and_lease_tokens_take_only_their_documented_form() {
        let id = "0192f0c1-7e2a-7c3b-9d4e-5f6a7b8c9d0e";
        assert!(id.parse::<TaskId>().is_ok());
        for bad in [
            "0192f0c17e2a7c3b9d4e5f6a7b8c9d0e",
            "{0192f0c1-7e2a-7c3b-9d4e-5f6a7b8c9d0e}",
            "urn:uuid:0192f0c1-7e2a-7c3b-9d4e-5f6a7b8c9d0e",
        ] {
            assert!(bad.parse::<TaskId>().is_err(), "{bad}");
            assert!(serde_json::from_str::<TaskId>(&format!("{bad:?}")).is_err(), "{bad}");
        }
        for bad in ["+1", "-1", "", "00000000000000000"] {
            assert!(serde_json::from_str::<LeaseToken>(&format!("{bad:?}")).is_err(), "{bad:?}");
            assert!(!matches(super::LEASE_TOKEN, bad));
        }
        assert!(serde_json::from_str::<LeaseToken>("\"aBc\"").is_ok());
    }

    #[test]
    fn timestamps_take_any_rfc3339_time_and_print_back_as_rfc3339() {
        for (text, back) in [
            ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000000Z"),
            ("2026-01-02T04:04:05.5+01:00", "2026-01-02T03:04:05.500000Z"),
            ("0436-11-25T07:28:00-07:45", "0436-11-25T15:13:00.000000Z"),
            ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59.000000Z"),
        ] {
            let t: Timestamp = serde_json::from_str(&format!("{text:?}")).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(t.to_string(), back);
            assert_eq!(serde_json::from_str::<Timestamp>(&format!("{back:?}")).unwrap(), t);
        }
        for bad in ["2026-01-02 03:04:05", "2026-01-02T03:04:05", "yesterday"] {
            assert!(serde_json::from_str::<Timestamp>(&format!("{bad:?}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_struct_field_is_never_read_from_an_array() {
        let spec = r#"{"queue":"q","kind":"k","backoff":[1000,2000,2.0,0.1]}"#;
        let e = serde_json::from_str::<crate::protocol::SubmitTask>(spec).unwrap_err();
        assert!(e.to_string().contains("a JSON object"), "{e}");
        let ok = r#"{"queue":"q","kind":"k","backoff":{"min_ms":1000,"max_ms":2000,"multiplier":2.0,"jitter":0.1}}"#;
        assert!(serde_json::from_str::<crate::protocol::SubmitTask>(ok).is_ok());
        let batch = r#"{"tasks":[["q","k"]]}"#;
        assert!(serde_json::from_str::<crate::protocol::SubmitBatch>(batch).is_err());
        let policy = r#"{"failure_policy":["quorum",1],"tasks":[{"id":"a","kind":"k"}]}"#;
        assert!(serde_json::from_str::<crate::workflow::WorkflowSpec>(policy).is_err());
    }

    #[test]
    fn an_outcome_takes_only_its_own_status_fields() {
        let parse = |s: &str| serde_json::from_str::<crate::protocol::Outcome>(s);
        assert!(parse(r#"{"status":"succeeded","result":1}"#).is_ok());
        assert!(parse(r#"{"status":"failed","error":"x","retry_after_ms":5,"permanent":true}"#).is_ok());
        assert!(parse(r#"{"status":"succeeded","error":"x"}"#).is_err());
        assert!(parse(r#"{"status":"cancelled","result":1}"#).is_err());
        assert!(parse(r#"{"status":"failed","error":"x","result":1}"#).is_err());
        assert!(parse(r#"{"status":"failed","error":"x","retry_after_ms":9007199254740992}"#).is_err());
    }

    #[test]
    fn the_name_pattern_refuses_exactly_control_characters() {
        let limits = crate::Limits::default();
        for s in ["queue", "é-ü", "a b", "\u{7}", "a\nb", "\u{85}", "\u{a0}", "\u{7f}"] {
            let fits = matches(super::NO_CONTROL_CHARACTERS, s);
            assert_eq!(fits, crate::validate::check_name("q", s, &limits).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn names_are_counted_in_characters_as_the_schema_counts_them() {
        let limits = crate::Limits::default();
        let wide = "é".repeat(super::NAME_MAX_CHARS);
        assert!(crate::validate::check_name("queue", &wide, &limits).is_ok(), "128 two-byte characters fit");
        assert!(crate::validate::check_name("queue", &format!("{wide}é"), &limits).is_err());
    }
}
