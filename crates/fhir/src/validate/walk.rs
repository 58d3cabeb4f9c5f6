//! The walk over one resource: dispatches each element to its definition in the schema
//! table and collects issues with a FHIRPath-like location.
//!
//! The current location is a stack of borrowed segments, rendered only when an issue is
//! reported, so a valid resource costs no string building at all.

use serde_json::{Map, Value};

use super::primitives::{self, quote};
use super::reference::{RefKind, check_reference};
use super::schema::{Base, ElementDef, Prim, Schema, TypeId};
use super::{Issue, Severity, UNKNOWN_ELEMENT, xhtml};

/// At most this many issues are listed; the rest are summarised in one issue.
pub(crate) const MAX_ISSUES: usize = 100;
/// Nesting guard for values that did not come through `json::parse_resource_json` (which
/// already stops at 64 levels): the walk recurses once per complex element.
const MAX_DEPTH: usize = 128;

#[derive(Clone, Copy)]
enum Seg<'v> {
    Name(&'v str),
    Index(usize),
}

/// Where a resource sits, which decides its rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The resource being validated, or a Bundle/Parameters entry: has its own contained.
    Root,
    Entry,
    /// Inside `contained`: may not nest further resources, shares the container's ids.
    Contained,
}

pub(crate) struct Walker<'v> {
    schema: &'static Schema,
    path: Vec<Seg<'v>>,
    issues: Vec<Issue>,
    /// Issues past `MAX_ISSUES`: (errors, unknown-element errors, warnings).
    dropped: (usize, usize, usize),
    /// Ids of the contained resources in scope, one frame per non-contained resource.
    contained_ids: Vec<Vec<&'v str>>,
    depth: usize,
}

impl<'v> Walker<'v> {
    pub(crate) fn new(schema: &'static Schema) -> Self {
        Walker {
            schema,
            path: Vec::with_capacity(16),
            issues: Vec::new(),
            dropped: (0, 0, 0),
            contained_ids: Vec::new(),
            depth: 0,
        }
    }

    pub(crate) fn run(mut self, resource: &'v Value) -> Vec<Issue> {
        self.resource(resource, Place::Root);
        let (errors, unknown, warnings) = self.dropped;
        let total = errors + unknown + warnings;
        if total > 0 {
            let (severity, code, diagnostics) = if errors > 0 {
                (Severity::Error, "invalid", format!("{total} more issues not listed, including errors"))
            } else if unknown > 0 {
                // Keeps the "only unknown elements" distinction for lenient handling.
                (Severity::Error, "structure", format!("{UNKNOWN_ELEMENT}s: {total} more issues not listed"))
            } else {
                (Severity::Warning, "invalid", format!("{total} more warnings not listed"))
            };
            self.issues.push(Issue { severity, code, diagnostics, expression: None });
        }
        self.issues
    }

    fn report(&mut self, severity: Severity, code: &'static str, diagnostics: String) {
        if self.issues.len() >= MAX_ISSUES {
            match severity {
                Severity::Warning => self.dropped.2 += 1,
                Severity::Error if code == "structure" && diagnostics.starts_with(UNKNOWN_ELEMENT) => {
                    self.dropped.1 += 1
                }
                Severity::Error => self.dropped.0 += 1,
            }
            return;
        }
        let expression = self.expression();
        self.issues.push(Issue { severity, code, diagnostics, expression });
    }

    fn error(&mut self, code: &'static str, diagnostics: String) {
        self.report(Severity::Error, code, diagnostics);
    }

    fn expression(&self) -> Option<String> {
        if self.path.is_empty() {
            return None;
        }
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Name(n) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    // Element names come from the input: never echo a long one.
                    if n.len() > 64 { out.push_str(&quote(n)) } else { out.push_str(n) }
                }
                Seg::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        Some(out)
    }

    fn resource(&mut self, value: &'v Value, place: Place) {
        let Some(obj) = value.as_object() else {
            self.error("structure", format!("a resource must be a JSON object, found {}", kind(value)));
            return;
        };
        let type_id = match obj.get("resourceType") {
            None => return self.error("required", "missing resourceType".into()),
            Some(Value::String(rt)) => match self.schema.resource(rt) {
                Some(t) => {
                    if place == Place::Root {
                        self.path.push(Seg::Name(rt));
                    }
                    t
                }
                None => {
                    return self.error("not-supported", format!("unknown resource type {}", quote(rt)));
                }
            },
            Some(other) => {
                return self.error("structure", format!("resourceType must be a string, found {}", kind(other)));
            }
        };
        if place == Place::Contained {
            if obj.contains_key("contained") {
                // dom-2: contained resources SHALL NOT contain additional contained resources.
                self.error("invalid", "a contained resource may not itself contain resources".into());
            }
        } else {
            self.contained_ids.push(contained_ids(obj));
        }
        self.object(type_id, obj, true);
        if place != Place::Contained {
            self.contained_ids.pop();
        }
        if place == Place::Root {
            self.path.pop();
        }
    }

    fn object(&mut self, type_id: TypeId, obj: &'v Map<String, Value>, is_resource: bool) {
        let schema = self.schema;
        let def = &schema.types[type_id];
        for (key, value) in obj {
            if is_resource && key == "resourceType" {
                continue;
            }
            self.path.push(Seg::Name(key));
            match def.elements.get(key.as_str()) {
                Some(element) => self.element(*element, key, value),
                None => {
                    let msg = format!("{UNKNOWN_ELEMENT} {} (not defined on {})", quote(key), def.name);
                    self.error("structure", msg);
                }
            }
            self.path.pop();
        }
        if obj.is_empty() && !is_resource {
            self.report(Severity::Warning, "structure", "empty object (FHIR JSON omits empty elements)".into());
        }
        if type_id == schema.reference
            && let Some(Value::String(r)) = obj.get("reference")
        {
            self.path.push(Seg::Name("reference"));
            self.check_reference(r);
            self.path.pop();
        }
    }

    fn element(&mut self, def: ElementDef, name: &str, value: &'v Value) {
        match (def.array, value) {
            (true, Value::Array(items)) => {
                if items.is_empty() {
                    self.report(Severity::Warning, "structure", "empty array (FHIR JSON omits empty elements)".into());
                }
                // FHIR JSON keeps primitive arrays and their `_x` companions aligned with nulls.
                let null_ok = matches!(def.base, Base::Prim(_) | Base::Code(_)) || name.starts_with('_');
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    if item.is_null() {
                        if !null_ok {
                            self.error("structure", "null is only allowed in arrays of primitive values".into());
                        }
                    } else if item.is_array() {
                        self.error("structure", "arrays may not contain arrays".into());
                    } else {
                        self.single(def.base, name, item);
                    }
                    self.path.pop();
                }
            }
            (true, other) => {
                self.error("structure", format!("element must be an array, found {}", kind(other)));
            }
            (false, Value::Array(_)) => {
                self.error("structure", "element must be a single value, not an array".into());
            }
            (false, Value::Null) => self.error("structure", "null is not allowed here".into()),
            (false, v) => self.single(def.base, name, v),
        }
    }

    fn single(&mut self, base: Base, name: &str, value: &'v Value) {
        match base {
            Base::Prim(p) => {
                if let Some(problem) = primitives::check(p, value) {
                    self.report(problem.severity, problem.code, problem.message);
                } else if p == Prim::Xhtml
                    && let Some(s) = value.as_str()
                    && let Some(problem) = xhtml::check_div(s)
                {
                    self.error("value", problem);
                }
            }
            Base::Code(e) => self.code(e, value),
            Base::Complex(t) => {
                let Some(obj) = value.as_object() else {
                    let ty = &self.schema.types[t].name;
                    return self.error("structure", format!("{ty} must be a JSON object, found {}", kind(value)));
                };
                if self.enter() {
                    self.object(t, obj, false);
                    self.depth -= 1;
                }
            }
            Base::Resource => {
                if self.enter() {
                    let place = if name == "contained" { Place::Contained } else { Place::Entry };
                    self.resource(value, place);
                    self.depth -= 1;
                }
            }
        }
    }

    /// Go one level deeper, or report that the value nests too deep.
    fn enter(&mut self) -> bool {
        if self.depth >= MAX_DEPTH {
            self.error("structure", format!("nesting deeper than {MAX_DEPTH} levels"));
            return false;
        }
        self.depth += 1;
        true
    }

    fn code(&mut self, enum_index: usize, value: &Value) {
        if let Some(problem) = primitives::check(Prim::Code, value) {
            return self.report(problem.severity, problem.code, problem.message);
        }
        let (Some(code), Some(allowed)) = (value.as_str(), self.schema.enums.get(enum_index)) else {
            return;
        };
        if !allowed.iter().any(|a| a.as_ref() == code) {
            let mut list = allowed.iter().take(12).map(AsRef::as_ref).collect::<Vec<&str>>().join(", ");
            if allowed.len() > 12 {
                list.push_str(", …");
            }
            self.error("code-invalid", format!("{} is not a valid code here (allowed: {list})", quote(code)));
        }
    }

    fn check_reference(&mut self, r: &str) {
        let schema = self.schema;
        match check_reference(r, |t| schema.is_resource_type(t)) {
            Ok(RefKind::Local(id)) if !id.is_empty() => {
                let known = self.contained_ids.last().is_some_and(|ids| ids.contains(&id));
                if !known {
                    // ref-1: a local reference SHALL point at a contained resource.
                    self.error("invalid", format!("local reference {} matches no contained resource", quote(r)));
                }
            }
            Ok(_) => {}
            Err(why) => self.error("invalid", format!("invalid reference {}: {why}", quote(r))),
        }
    }
}

/// Ids of the resources in `obj.contained`, for resolving `#id` references.
fn contained_ids(obj: &Map<String, Value>) -> Vec<&str> {
    match obj.get("contained") {
        Some(Value::Array(items)) => items.iter().filter_map(|c| c.get("id")?.as_str()).collect(),
        _ => Vec::new(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
