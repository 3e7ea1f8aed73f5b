//! Lists in request bodies whose length is bounded while they are parsed, not after: a body of a
//! million tiny items must be refused at item `limit + 1`, before the rest is built in memory.
//!
//! The bound is a per-thread setting, since serde gives a field's deserializer no arguments: the
//! server sets it around each parse ([`with_caps`]); outside such a call lists are unbounded.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

/// The most items a parsed list of each kind may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// A batch of submits, reports, leases or finished ids.
    pub batch: usize,
    /// A workflow's tasks or a fan-out's children.
    pub workflow: usize,
}

impl Caps {
    pub const NONE: Caps = Caps { batch: usize::MAX, workflow: usize::MAX };
}

thread_local! {
    static CAPS: Cell<Caps> = const { Cell::new(Caps::NONE) };
}

/// Runs `parse` with lists bounded by `caps`.
pub fn with_caps<R>(caps: Caps, parse: impl FnOnce() -> R) -> R {
    let before = CAPS.with(|c| c.replace(caps));
    let out = parse();
    CAPS.with(|c| c.set(before));
    out
}

struct Capped<T> {
    cap: usize,
    kind: &'static str,
    item: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Capped<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {} {}", self.cap, self.kind)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // Never trust a size hint for the allocation: it comes from the input.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            if items.len() == self.cap {
                return Err(serde::de::Error::custom(format!("at most {} {} are allowed", self.cap, self.kind)));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// For `#[serde(deserialize_with)]` on a batch list.
pub fn batch<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let cap = CAPS.with(|c| c.get().batch);
    d.deserialize_seq(Capped { cap, kind: "items", item: PhantomData })
}

/// For `#[serde(deserialize_with)]` on a workflow's tasks or a fan-out's children.
pub fn workflow<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let cap = CAPS.with(|c| c.get().workflow);
    d.deserialize_seq(Capped { cap, kind: "tasks", item: PhantomData })
}

/// For `#[serde(deserialize_with)]` on a batch list of structs (each must be a JSON object).
pub fn batch_of_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    batch::<D, Object<T>>(d).map(|v| v.into_iter().map(|o| o.0).collect())
}

/// For `#[serde(deserialize_with)]` on a workflow's tasks or a fan-out's children.
pub fn workflow_of_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    workflow::<D, Object<T>>(d).map(|v| v.into_iter().map(|o| o.0).collect())
}

/// A struct read only from a JSON object. serde's derive also reads a struct from an array of its
/// fields in order, which no request's schema allows: a field holding a struct goes through this.
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMaps<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(OnlyMaps(PhantomData)).map(Object)
    }
}

/// For `#[serde(deserialize_with)]` on a struct field (see [`Object`]).
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Object::<T>::deserialize(d).map(|o| o.0)
}

/// For `#[serde(deserialize_with)]` on an optional struct field (see [`Object`]).
pub fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Object<T>>::deserialize(d).map(|o| o.map(|o| o.0))
}

/// The largest integer a JSON number carries exactly everywhere (2^53 - 1): what counts and
/// durations that have no smaller bound of their own are held to.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// For `#[serde(deserialize_with)]` on an optional count held to [`MAX_SAFE_INTEGER`].
pub fn optional_safe_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(n) if n > MAX_SAFE_INTEGER => {
            Err(serde::de::Error::custom(format!("{n} is larger than {MAX_SAFE_INTEGER} (2^53 - 1)")))
        }
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Body {
        #[serde(deserialize_with = "batch")]
        items: Vec<u32>,
    }

    #[test]
    fn a_list_past_its_cap_is_refused_while_parsing() {
        let caps = Caps { batch: 3, workflow: 1 };
        let ok: Body = with_caps(caps, || serde_json::from_str(r#"{"items":[1,2,3]}"#)).unwrap();
        assert_eq!(ok.items, vec![1, 2, 3]);
        let e = with_caps(caps, || serde_json::from_str::<Body>(r#"{"items":[1,2,3,4]}"#)).unwrap_err();
        assert!(e.to_string().contains("at most 3"), "{e}");
        // Outside `with_caps`, and after it, nothing is bounded.
        let big: Body = serde_json::from_str(r#"{"items":[1,2,3,4,5]}"#).unwrap();
        assert_eq!(big.items.len(), 5);
    }
}
