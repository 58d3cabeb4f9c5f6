//! The R4 element table (`data/schema-r4.json`, made by `tools/gen_fhir_schema.py`), loaded
//! once into lookup structures.
//!
//! The table is embedded with `include_str!`, so a malformed table is a build defect, not
//! bad input: loading panics with a clear message, and `schema_loads` in the tests catches
//! it before anything ships.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

const SCHEMA_JSON: &str = include_str!("../../data/schema-r4.json");

/// FHIR primitive data types (the JSON form each must take is checked in `primitives`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prim {
    Base64Binary,
    Boolean,
    Canonical,
    Code,
    Date,
    DateTime,
    Decimal,
    Id,
    Instant,
    Integer,
    Markdown,
    Oid,
    PositiveInt,
    String,
    Time,
    UnsignedInt,
    Uri,
    Url,
    Uuid,
    Xhtml,
}

impl Prim {
    fn from_name(name: &str) -> Option<Prim> {
        Some(match name {
            "base64Binary" => Prim::Base64Binary,
            "boolean" => Prim::Boolean,
            "canonical" => Prim::Canonical,
            "code" => Prim::Code,
            "date" => Prim::Date,
            "dateTime" => Prim::DateTime,
            "decimal" => Prim::Decimal,
            "id" => Prim::Id,
            "instant" => Prim::Instant,
            "integer" => Prim::Integer,
            "markdown" => Prim::Markdown,
            "oid" => Prim::Oid,
            "positiveInt" => Prim::PositiveInt,
            "string" => Prim::String,
            "time" => Prim::Time,
            "unsignedInt" => Prim::UnsignedInt,
            "uri" => Prim::Uri,
            "url" => Prim::Url,
            "uuid" => Prim::Uuid,
            "xhtml" => Prim::Xhtml,
            _ => return None,
        })
    }
}

pub(crate) type TypeId = usize;

/// What one element holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    Prim(Prim),
    Complex(TypeId),
    /// Any resource, dispatched on its own `resourceType` (contained, Bundle.entry.resource).
    Resource,
    /// A `code` with a required binding: the index of its allowed codes in `Schema::enums`.
    Code(usize),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ElementDef {
    pub base: Base,
    pub array: bool,
}

#[derive(Debug)]
pub(crate) struct TypeDef {
    /// The schema's name: `Patient`, `HumanName`, `Patient_Contact` (backbone elements).
    pub name: Box<str>,
    pub elements: HashMap<Box<str>, ElementDef>,
}

#[derive(Debug)]
pub(crate) struct Schema {
    pub types: Vec<TypeDef>,
    pub resources: HashMap<Box<str>, TypeId>,
    pub enums: Vec<Vec<Box<str>>>,
    /// `Reference`, whose `reference` string gets the reference-format check.
    pub reference: TypeId,
}

impl Schema {
    pub fn resource(&self, name: &str) -> Option<TypeId> {
        self.resources.get(name).copied()
    }
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.resources.contains_key(name)
    }
}

pub(crate) fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| match load(SCHEMA_JSON) {
        Ok(s) => s,
        // Embedded, generated data: failing here is a build defect (see module docs).
        Err(e) => panic!("embedded data/schema-r4.json is malformed: {e}"),
    })
}

fn load(text: &str) -> Result<Schema, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let types_obj = root.get("types").and_then(Value::as_object).ok_or("no types")?;
    let ids: HashMap<&str, TypeId> = types_obj.keys().enumerate().map(|(i, k)| (k.as_str(), i)).collect();

    let enums: Vec<Vec<Box<str>>> = root
        .get("enums")
        .and_then(Value::as_array)
        .ok_or("no enums")?
        .iter()
        .map(|e| {
            e.as_array()
                .ok_or("enum is not a list")?
                .iter()
                .map(|c| c.as_str().map(Box::from).ok_or("enum code is not a string"))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;

    let mut types = Vec::with_capacity(types_obj.len());
    for (name, elements) in types_obj {
        let elements = elements.as_object().ok_or_else(|| format!("{name} is not an object"))?;
        let mut table = HashMap::with_capacity(elements.len());
        for (element, spec) in elements {
            let spec = spec.as_str().ok_or_else(|| format!("{name}.{element}: not a string"))?;
            let (base, array) = match spec.strip_suffix('*') {
                Some(b) => (b, true),
                None => (spec, false),
            };
            let base = if let Some(n) = base.strip_prefix('=') {
                let n: usize = n.parse().map_err(|_| format!("{name}.{element}: bad enum"))?;
                if n >= enums.len() {
                    return Err(format!("{name}.{element}: enum {n} out of range"));
                }
                Base::Code(n)
            } else if base == "Resource" {
                Base::Resource
            } else if let Some(p) = Prim::from_name(base) {
                Base::Prim(p)
            } else {
                Base::Complex(*ids.get(base).ok_or_else(|| format!("{name}.{element}: unknown {base}"))?)
            };
            table.insert(Box::from(element.as_str()), ElementDef { base, array });
        }
        types.push(TypeDef { name: Box::from(name.as_str()), elements: table });
    }

    let resources = root
        .get("resources")
        .and_then(Value::as_array)
        .ok_or("no resources")?
        .iter()
        .map(|r| {
            let r = r.as_str().ok_or("resource name is not a string")?;
            let id = *ids.get(r).ok_or_else(|| format!("no table for resource {r}"))?;
            Ok((Box::from(r), id))
        })
        .collect::<Result<HashMap<_, _>, String>>()?;
    let reference = *ids.get("Reference").ok_or("no Reference type")?;
    Ok(Schema { types, resources, enums, reference })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_loads() {
        let s = schema();
        assert_eq!(s.resources.len(), 146);
        assert!(s.is_resource_type("Patient") && s.is_resource_type("Consent"));
        assert!(!s.is_resource_type("Project"), "Medplum types must be stripped");
        let patient = &s.types[s.resource("Patient").expect("Patient")];
        assert!(matches!(patient.elements["gender"].base, Base::Code(_)));
        assert!(patient.elements["name"].array);
        assert!(!patient.elements.contains_key("resourceType"));
        let obs = &s.types[s.resource("Observation").expect("Observation")];
        assert!(obs.elements.contains_key("valueQuantity") && obs.elements.contains_key("_valueString"));
    }
}
