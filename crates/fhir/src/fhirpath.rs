//! The FHIRPath subset that R4 SearchParameter expressions use, evaluated over JSON.
//!
//! Why in-house: the Rust FHIRPath crates are either too young, pin incompatible serde
//! versions or need a newer compiler (see STACK.md 3.4), and search indexing needs only a
//! small, well-known subset. Supported: paths (arrays flatten), `|`, `[n]`, `=`/`!=`,
//! `and`/`or`, `is`/`as` and their function forms, `ofType()`, `where()`, `exists()`,
//! `empty()`, `not()`, `first()`, `last()`, `hasValue()`, `extension('url')`, `resolve()`
//! (for `resolve() is Type` only), `$this`, `%resource`. Anything else parses to a node
//! that yields nothing: an unsupported construct loses index values, it never panics.
//!
//! JSON carries no type information, so two conventions stand in for the FHIR model:
//! a choice element (`value[x]`) is found by its suffixed key (`valueQuantity`), and the
//! suffix becomes the value's type for `as`/`is`/`ofType`; a leading type name
//! (`Observation.code`) matches when it equals `resourceType` (or is `Resource` /
//! `DomainResource`), so multi-base expressions are safe to evaluate on any resource.

use serde_json::Value;

use crate::extract::reference_target;

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// Nesting limit of the parser: expressions may one day come from clients.
const MAX_DEPTH: usize = 64;
/// Length limit in tokens, which also bounds the depth of left-nested chains such as
/// `a.b.c…` or `a | b | …` (the longest R4 expression has about 330 tokens).
const MAX_TOKENS: usize = 2048;

/// Why an expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath parse error at byte {pos}: {msg}")]
pub struct ParseError {
    /// Byte offset into the expression.
    pub pos: usize,
    /// What was wrong.
    pub msg: &'static str,
}

/// A parsed expression: parse once (per search parameter), evaluate on every write.
#[derive(Debug, Clone)]
pub struct Compiled {
    root: Node,
}

/// One result value plus, when known, its FHIR type (the choice suffix such as `Quantity`,
/// `DateTime`, `Period`, or the target type after `resolve()`).
#[derive(Debug, Clone, Copy)]
pub struct Typed<'a> {
    /// The JSON node in the resource.
    pub value: &'a Value,
    /// The FHIR type name if the expression revealed it; `None` for ordinary elements.
    pub type_hint: Option<&'a str>,
}

impl Compiled {
    /// Parse an expression.
    pub fn parse(expr: &str) -> Result<Self, ParseError> {
        let toks = lex(expr)?;
        if toks.len() > MAX_TOKENS {
            return Err(ParseError { pos: 0, msg: "expression too long" });
        }
        let mut p = Parser { toks, i: 0, depth: 0, len: expr.len() };
        let root = p.expr()?;
        match p.toks.get(p.i) {
            None => Ok(Compiled { root }),
            Some((_, pos)) => Err(ParseError { pos: *pos, msg: "unexpected trailing input" }),
        }
    }

    /// Evaluate against a resource; results are borrowed from it (or are static booleans).
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Vec<&'a Value> {
        self.evaluate_typed(resource).into_iter().map(|t| t.value).collect()
    }

    /// Evaluate, keeping the type hints that choice elements and `resolve()` provide.
    pub fn evaluate_typed<'a>(&self, resource: &'a Value) -> Vec<Typed<'a>> {
        let focus = [Typed { value: resource, type_hint: None }];
        eval(&self.root, resource, &focus)
    }
}

/// Parse and evaluate in one go. Parsing is repeated on every call: hot paths should keep
/// a [`Compiled`] (search parameters do). An unparsable expression yields nothing.
pub fn evaluate<'a>(expr: &str, resource: &'a Value) -> Vec<&'a Value> {
    Compiled::parse(expr).map(|c| c.evaluate(resource)).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Syntax

#[derive(Debug, Clone)]
enum Node {
    Str(String),
    Num(String),
    Bool(bool),
    /// `$this` (also the implicit start of a path).
    This,
    /// `%resource` / `%rootResource` / `%context`.
    Root,
    Member(Box<Node>, String),
    Call(Box<Node>, String, Vec<Node>),
    Index(Box<Node>, Box<Node>),
    Union(Box<Node>, Box<Node>),
    Is(Box<Node>, String),
    As(Box<Node>, String),
    Eq(Box<Node>, Box<Node>, bool),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    /// Valid FHIRPath outside the subset: evaluates to nothing.
    Unsupported,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Var(String),
    Dollar(String),
    Sym(&'static str),
}

#[rustfmt::skip]
const SYMBOLS: [&str; 22] = [
    "!=", "!~", "<=", ">=", "(", ")", "[", "]", "{", "}", ".", ",", "|", "=", "~", "<", ">",
    "+", "-", "*", "/", "&",
];

fn lex(s: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |pos, msg| ParseError { pos, msg };
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let word = |mut j: usize| {
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            j
        };
        if c.is_ascii_alphabetic() || c == b'_' {
            i = word(i);
            out.push((Tok::Ident(s[start..i].to_owned()), start));
        } else if c == b'%' || c == b'$' {
            i = word(i + 1);
            let name = s[start + 1..i].to_owned();
            if name.is_empty() {
                return Err(err(start, "empty variable name"));
            }
            out.push((if c == b'%' { Tok::Var(name) } else { Tok::Dollar(name) }, start));
        } else if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push((Tok::Num(s[start..i].to_owned()), start));
        } else if c == b'\'' || c == b'`' {
            let (text, end) = quoted(s, i).ok_or(err(start, "unterminated string"))?;
            i = end;
            out.push((if c == b'`' { Tok::Ident(text) } else { Tok::Str(text) }, start));
        } else if let Some(sym) = SYMBOLS.iter().find(|sym| s[i..].starts_with(**sym)) {
            i += sym.len();
            out.push((Tok::Sym(sym), start));
        } else {
            return Err(err(start, "unexpected character"));
        }
    }
    Ok(out)
}

/// Read a `'…'` or `` `…` `` literal starting at byte `i`; returns the unescaped text and
/// the byte after the closing quote.
fn quoted(s: &str, i: usize) -> Option<(String, usize)> {
    let quote = s[i..].chars().next()?;
    let mut out = String::new();
    let mut chars = s[i + 1..].char_indices();
    while let Some((k, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, e) = chars.next()?;
                out.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'f' => '\u{c}',
                    other => other,
                });
            }
            c if c == quote => return Some((out, i + 1 + k + 1)),
            c => out.push(c),
        }
    }
    None
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
    depth: usize,
    len: usize,
}

/// Binary operators, loosest first (FHIRPath §6 precedence; `is`/`as` handled apart).
const LEVELS: [&[&str]; 10] = [
    &["implies"],
    &["or", "xor"],
    &["and"],
    &["in", "contains"],
    &["=", "~", "!=", "!~"],
    &["<", ">", "<=", ">="],
    &["|"],
    &["is", "as"],
    &["+", "-", "&"],
    &["*", "/", "div", "mod"],
];

impl Parser {
    fn pos(&self) -> usize {
        self.toks.get(self.i).map_or(self.len, |t| t.1)
    }
    fn err(&self, msg: &'static str) -> ParseError {
        ParseError { pos: self.pos(), msg }
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.0)
    }
    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect_sym(&mut self, sym: &'static str) -> Result<(), ParseError> {
        if self.eat_sym(sym) { Ok(()) } else { Err(self.err("expected a symbol")) }
    }
    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(Tok::Ident(name)) => {
                let name = name.clone();
                self.i += 1;
                Ok(name)
            }
            _ => Err(self.err("expected an identifier")),
        }
    }

    fn expr(&mut self) -> Result<Node, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("expression nested too deeply"));
        }
        let node = self.binary(0);
        self.depth -= 1;
        node
    }

    fn binary(&mut self, level: usize) -> Result<Node, ParseError> {
        let Some(ops) = LEVELS.get(level) else {
            return self.unary();
        };
        let mut left = self.binary(level + 1)?;
        loop {
            let op = match self.peek() {
                Some(Tok::Sym(s)) if ops.contains(s) => *s,
                Some(Tok::Ident(w)) => match ops.iter().find(|o| *o == w) {
                    Some(o) => *o,
                    None => break,
                },
                _ => break,
            };
            self.i += 1;
            left = match op {
                "is" => Node::Is(Box::new(left), self.type_spec()?),
                "as" => Node::As(Box::new(left), self.type_spec()?),
                _ => {
                    let right = Box::new(self.binary(level + 1)?);
                    let left = Box::new(left);
                    match op {
                        "|" => Node::Union(left, right),
                        "=" => Node::Eq(left, right, false),
                        "!=" => Node::Eq(left, right, true),
                        "and" => Node::And(left, right),
                        "or" => Node::Or(left, right),
                        _ => Node::Unsupported,
                    }
                }
            };
        }
        Ok(left)
    }

    /// `Quantity`, `FHIR.Quantity`, `System.String`: the qualifier is dropped.
    fn type_spec(&mut self) -> Result<String, ParseError> {
        let mut name = self.ident()?;
        while self.eat_sym(".") {
            name = self.ident()?;
        }
        Ok(name)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        if self.eat_sym("-") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.err("expression nested too deeply"));
            }
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(match inner {
                Node::Num(n) => Node::Num(format!("-{n}")),
                _ => Node::Unsupported,
            });
        }
        self.eat_sym("+");
        let mut node = self.term()?;
        loop {
            if self.eat_sym(".") {
                let name = self.ident()?;
                node = if self.eat_sym("(") {
                    Node::Call(Box::new(node), name, self.args()?)
                } else {
                    Node::Member(Box::new(node), name)
                };
            } else if self.eat_sym("[") {
                let index = self.expr()?;
                self.expect_sym("]")?;
                node = Node::Index(Box::new(node), Box::new(index));
            } else {
                return Ok(node);
            }
        }
    }

    fn args(&mut self) -> Result<Vec<Node>, ParseError> {
        let mut args = Vec::new();
        if self.eat_sym(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat_sym(")") {
                return Ok(args);
            }
            self.expect_sym(",")?;
        }
    }

    fn term(&mut self) -> Result<Node, ParseError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(self.err("unexpected end"));
        };
        self.i += 1;
        Ok(match tok {
            Tok::Str(s) => Node::Str(s),
            Tok::Num(n) => Node::Num(n),
            Tok::Ident(w) if w == "true" => Node::Bool(true),
            Tok::Ident(w) if w == "false" => Node::Bool(false),
            Tok::Ident(name) => {
                if self.eat_sym("(") {
                    Node::Call(Box::new(Node::This), name, self.args()?)
                } else {
                    Node::Member(Box::new(Node::This), name)
                }
            }
            Tok::Var(v) => match v.as_str() {
                "resource" | "rootResource" | "context" => Node::Root,
                "ucum" => Node::Str("http://unitsofmeasure.org".into()),
                "sct" => Node::Str("http://snomed.info/sct".into()),
                "loinc" => Node::Str("http://loinc.org".into()),
                _ => Node::Unsupported,
            },
            Tok::Dollar(v) => {
                if v == "this" {
                    Node::This
                } else {
                    Node::Unsupported
                }
            }
            Tok::Sym("(") => {
                let inner = self.expr()?;
                self.expect_sym(")")?;
                inner
            }
            Tok::Sym("{") => {
                self.expect_sym("}")?;
                Node::Unsupported
            }
            Tok::Sym(_) => {
                self.i -= 1;
                return Err(self.err("unexpected symbol"));
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation

fn boolean<'a>(b: bool) -> Vec<Typed<'a>> {
    vec![Typed { value: if b { &TRUE } else { &FALSE }, type_hint: None }]
}

/// FHIRPath singleton evaluation of a criterion: `[true]` is true, `[false]` and `[]` are
/// not; a single non-boolean item counts as true.
fn truthy(items: &[Typed<'_>]) -> Option<bool> {
    match items {
        [] => None,
        [one] => Some(one.value.as_bool().unwrap_or(true)),
        _ => Some(true),
    }
}

fn eval<'a>(node: &Node, root: &'a Value, focus: &[Typed<'a>]) -> Vec<Typed<'a>> {
    match node {
        Node::This => focus.to_vec(),
        Node::Root => vec![Typed { value: root, type_hint: None }],
        Node::Bool(b) => boolean(*b),
        Node::Str(_) | Node::Num(_) | Node::Unsupported => Vec::new(),
        Node::Member(target, name) => {
            let mut out = Vec::new();
            for item in eval(target, root, focus) {
                member(item, name, &mut out);
            }
            out
        }
        Node::Call(target, name, args) => {
            let input = eval(target, root, focus);
            call(&input, name, args, root)
        }
        Node::Index(target, index) => {
            let items = eval(target, root, focus);
            match index.as_ref() {
                Node::Num(n) => n.parse::<usize>().ok().and_then(|k| items.get(k).copied()),
                _ => None,
            }
            .into_iter()
            .collect()
        }
        Node::Union(a, b) => {
            let mut out = eval(a, root, focus);
            for item in eval(b, root, focus) {
                if !out.iter().any(|o| std::ptr::eq(o.value, item.value)) {
                    out.push(item);
                }
            }
            out
        }
        Node::Is(target, ty) => match eval(target, root, focus).first() {
            Some(item) => boolean(type_matches(item, ty)),
            None => Vec::new(),
        },
        Node::As(target, ty) => eval(target, root, focus).into_iter().filter(|i| type_matches(i, ty)).collect(),
        Node::Eq(a, b, negate) => {
            let (l, r) = (operand(a, root, focus), operand(b, root, focus));
            if l.is_empty() || r.is_empty() {
                return Vec::new();
            }
            let equal = l.len() == r.len() && l.iter().zip(&r).all(|(x, y)| x.equals(y));
            boolean(equal != *negate)
        }
        Node::And(a, b) => match (truthy(&eval(a, root, focus)), truthy(&eval(b, root, focus))) {
            (Some(false), _) | (_, Some(false)) => boolean(false),
            (Some(true), Some(true)) => boolean(true),
            _ => Vec::new(),
        },
        Node::Or(a, b) => match (truthy(&eval(a, root, focus)), truthy(&eval(b, root, focus))) {
            (Some(true), _) | (_, Some(true)) => boolean(true),
            (Some(false), Some(false)) => boolean(false),
            _ => Vec::new(),
        },
    }
}

/// Choice-type suffixes (`value[x]` → `valueQuantity`): every R4 type a choice can take.
#[rustfmt::skip]
const CHOICE_TYPES: [&str; 50] = [
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id",
    "Instant", "Integer", "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt",
    "Uri", "Url", "Uuid", "Address", "Age", "Annotation", "Attachment", "CodeableConcept",
    "Coding", "ContactPoint", "Count", "Distance", "Duration", "HumanName", "Identifier",
    "Money", "Period", "Quantity", "Range", "Ratio", "Reference", "SampledData", "Signature",
    "Timing", "ContactDetail", "Contributor", "DataRequirement", "Expression",
    "ParameterDefinition", "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage",
    "Meta",
];

/// Push the children called `name`, flattening arrays and skipping JSON nulls (the
/// placeholders FHIR JSON uses to align primitive extensions).
fn member<'a>(item: Typed<'a>, name: &str, out: &mut Vec<Typed<'a>>) {
    let Some(obj) = item.value.as_object() else {
        return;
    };
    let mut push = |v: &'a Value, type_hint| match v {
        Value::Array(items) => {
            out.extend(items.iter().filter(|v| !v.is_null()).map(|value| Typed { value, type_hint }))
        }
        Value::Null => {}
        value => out.push(Typed { value, type_hint }),
    };
    if let Some(v) = obj.get(name) {
        push(v, None);
        return;
    }
    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
        // A type name at the head of a path filters the focus by its type.
        let rt = obj.get("resourceType").and_then(Value::as_str);
        if rt.is_some() && (rt == Some(name) || name == "Resource" || name == "DomainResource") {
            out.push(item);
        }
        return;
    }
    for (key, v) in obj {
        if let Some(suffix) = key.strip_prefix(name)
            && CHOICE_TYPES.contains(&suffix)
        {
            push(v, Some(suffix));
            return;
        }
    }
}

fn call<'a>(input: &[Typed<'a>], name: &str, args: &[Node], root: &'a Value) -> Vec<Typed<'a>> {
    let type_arg = || args.first().and_then(type_name);
    match (name, args.len()) {
        ("where", 1) => input
            .iter()
            .filter(|item| truthy(&eval(&args[0], root, std::slice::from_ref(*item))) == Some(true))
            .copied()
            .collect(),
        ("exists", 0) => boolean(!input.is_empty()),
        ("exists", 1) => {
            boolean(input.iter().any(|item| truthy(&eval(&args[0], root, std::slice::from_ref(item))) == Some(true)))
        }
        ("empty", 0) => boolean(input.is_empty()),
        ("hasValue", 0) => boolean(matches!(input, [one] if !one.value.is_object() && !one.value.is_array())),
        ("not", 0) => match truthy(input) {
            Some(b) => boolean(!b),
            None => Vec::new(),
        },
        ("first", 0) => input.first().copied().into_iter().collect(),
        ("last", 0) => input.last().copied().into_iter().collect(),
        ("tail", 0) => input.iter().skip(1).copied().collect(),
        ("as" | "ofType", 1) => match type_arg() {
            Some(ty) => input.iter().filter(|i| type_matches(i, ty)).copied().collect(),
            None => Vec::new(),
        },
        ("is", 1) => match (type_arg(), input.first()) {
            (Some(ty), Some(item)) => boolean(type_matches(item, ty)),
            _ => Vec::new(),
        },
        ("extension", 1) => {
            let Some(Node::Str(url)) = args.first() else {
                return Vec::new();
            };
            let mut exts = Vec::new();
            for item in input {
                member(*item, "extension", &mut exts);
            }
            exts.retain(|e| e.value.get("url").and_then(Value::as_str) == Some(url.as_str()));
            exts
        }
        ("resolve", 0) => {
            input.iter().map(|item| Typed { value: item.value, type_hint: resolved_type(item.value, root) }).collect()
        }
        _ => Vec::new(),
    }
}

/// The type name written as a function argument: `as(Quantity)`, `ofType(FHIR.Period)`.
fn type_name(node: &Node) -> Option<&str> {
    match node {
        Node::Member(_, name) => Some(name),
        _ => None,
    }
}

/// What `resolve()` would return the type of, without resolving: the `Type/id` tail of the
/// reference, the type of a contained resource (`#id`), or `Reference.type`.
fn resolved_type<'a>(v: &'a Value, root: &'a Value) -> Option<&'a str> {
    let reference = match v {
        Value::String(s) => Some(s.as_str()),
        _ => v.get("reference").and_then(Value::as_str),
    };
    if let Some(r) = reference {
        if let Some(local) = r.strip_prefix('#') {
            let contained = root.get("contained").and_then(Value::as_array)?;
            return contained
                .iter()
                .find(|c| c.get("id").and_then(Value::as_str) == Some(local))
                .and_then(|c| c.get("resourceType"))
                .and_then(Value::as_str);
        }
        if let Some((ty, _)) = reference_target(r) {
            return Some(ty);
        }
    }
    let ty = v.get("type").and_then(Value::as_str)?;
    let ty = ty.rsplit('/').next().unwrap_or(ty);
    crate::resource_types::is_resource_type(ty).then_some(ty)
}

/// Subtypes that `as`/`is` must accept for a wanted type (FHIR R4 type hierarchy; the
/// primitives `code`/`id`/`markdown` specialise `string`, and so on).
fn is_subtype(actual: &str, wanted: &str) -> bool {
    let family: &[&str] = match wanted.to_ascii_lowercase().as_str() {
        "quantity" => &["Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"],
        "string" => &["Code", "Id", "Markdown"],
        "uri" => &["Url", "Canonical", "Oid", "Uuid"],
        "integer" => &["PositiveInt", "UnsignedInt"],
        _ => &[],
    };
    family.iter().any(|t| t.eq_ignore_ascii_case(actual))
}

fn type_matches(item: &Typed<'_>, ty: &str) -> bool {
    if let Some(actual) = item.type_hint {
        return actual.eq_ignore_ascii_case(ty) || is_subtype(actual, ty);
    }
    // No type from the path: judge by the JSON shape, which is all we have.
    let v = item.value;
    if crate::resource_types::is_resource_type(ty) {
        return v.get("resourceType").and_then(Value::as_str) == Some(ty);
    }
    match ty {
        "boolean" | "Boolean" => v.is_boolean(),
        "integer" | "decimal" | "positiveInt" | "unsignedInt" | "Integer" | "Decimal" => v.is_number(),
        _ if ty.starts_with(|c: char| c.is_ascii_lowercase())
            || matches!(ty, "String" | "Date" | "DateTime" | "Time") =>
        {
            v.is_string()
        }
        _ => v.is_object(),
    }
}

/// One side of `=` / `!=`: literals from the expression or nodes from the resource.
enum Scalar<'s> {
    Str(&'s str),
    Num(&'s str),
    Bool(bool),
    Json(&'s Value),
}

fn operand<'s, 'a: 's>(node: &'s Node, root: &'a Value, focus: &[Typed<'a>]) -> Vec<Scalar<'s>> {
    match node {
        Node::Str(s) => vec![Scalar::Str(s)],
        Node::Num(n) => vec![Scalar::Num(n)],
        Node::Bool(b) => vec![Scalar::Bool(*b)],
        other => eval(other, root, focus).into_iter().map(|t| Scalar::Json(t.value)).collect(),
    }
}

impl Scalar<'_> {
    fn text(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            Scalar::Json(Value::String(s)) => Some(s),
            _ => None,
        }
    }
    fn number(&self) -> Option<f64> {
        match self {
            Scalar::Num(n) => n.parse().ok(),
            Scalar::Json(Value::Number(n)) => n.as_f64(),
            _ => None,
        }
    }
    fn boolean(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            Scalar::Json(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    fn equals(&self, other: &Scalar<'_>) -> bool {
        if let (Some(a), Some(b)) = (self.text(), other.text()) {
            return a == b;
        }
        if let (Some(a), Some(b)) = (self.number(), other.number()) {
            return a == b;
        }
        if let (Some(a), Some(b)) = (self.boolean(), other.boolean()) {
            return a == b;
        }
        match (self, other) {
            (Scalar::Json(a), Scalar::Json(b)) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval_json(expr: &str, v: &Value) -> Vec<Value> {
        let c = Compiled::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        c.evaluate(v).into_iter().cloned().collect()
    }

    fn obs() -> Value {
        json!({
            "resourceType": "Observation",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Practitioner/d1"}, {"reference": "Patient/p1"}],
            "valueQuantity": {"value": 72.5, "unit": "/min"},
            "component": [
                {"code": {"text": "a"}, "valueQuantity": {"value": 1}},
                {"code": {"text": "b"}, "valueString": "x"}
            ],
            "extension": [{"url": "http://e/1", "valueString": "one"}, {"url": "http://e/2"}],
            "contained": [{"resourceType": "Patient", "id": "c1"}],
            "focus": [{"reference": "#c1"}]
        })
    }

    #[test]
    fn paths_unions_and_type_roots() {
        let o = obs();
        assert_eq!(eval_json("Observation.code.coding.code", &o), vec![json!("8867-4")]);
        assert!(eval_json("Condition.code", &o).is_empty());
        assert_eq!(eval_json("Condition.code | Observation.subject", &o).len(), 1);
        assert_eq!(eval_json("Resource.resourceType", &o), vec![json!("Observation")]);
        assert_eq!(eval_json("Observation.component.code.text", &o), vec![json!("a"), json!("b")]);
        assert_eq!(eval_json("Observation.performer[1].reference", &o), vec![json!("Patient/p1")]);
        assert_eq!(eval_json("code.coding.system", &o), vec![json!("http://loinc.org")]);
    }

    #[test]
    fn decimals_keep_their_text() {
        // Parsed from text: the json! macro would go through f64 and lose the zero.
        let o: Value = serde_json::from_str(r#"{"resourceType":"Observation","valueQuantity":{"value":72.50}}"#)
            .unwrap_or_default();
        let v = eval_json("Observation.value.value", &o);
        assert_eq!(serde_json::to_string(&v).unwrap_or_default(), "[72.50]");
    }

    #[test]
    fn choice_types_and_casts() {
        let o = obs();
        let c = Compiled::parse("(Observation.value as Quantity)").unwrap_or_else(|e| panic!("{e}"));
        let typed = c.evaluate_typed(&o);
        assert_eq!(typed.len(), 1);
        assert_eq!(typed[0].type_hint, Some("Quantity"));
        assert!(eval_json("(Observation.value as CodeableConcept)", &o).is_empty());
        assert_eq!(eval_json("Observation.value.as(Quantity).unit", &o), vec![json!("/min")]);
        assert_eq!(eval_json("Observation.component.value.ofType(string)", &o), vec![json!("x")]);
        assert_eq!(eval_json("(Observation.component.value as Quantity).value", &o), vec![json!(1)]);
        let cond = json!({"resourceType": "Condition", "onsetAge": {"value": 40}});
        assert_eq!(eval_json("Condition.onset.as(Quantity)", &cond).len(), 1, "Age is a Quantity");
        assert!(eval_json("Condition.onset.as(Range)", &cond).is_empty());
    }

    #[test]
    fn where_resolve_and_equality() {
        let o = obs();
        let pats = eval_json("Observation.performer.where(resolve() is Patient).reference", &o);
        assert_eq!(pats, vec![json!("Patient/p1")]);
        assert_eq!(eval_json("Observation.focus.where(resolve() is Patient)", &o).len(), 1);
        assert_eq!(eval_json("Observation.extension.where(url='http://e/1').value", &o), vec![json!("one")]);
        assert_eq!(eval_json("Observation.extension('http://e/2').url", &o), vec![json!("http://e/2")]);
        assert_eq!(eval_json("Observation.subject.exists()", &o), vec![json!(true)]);
        assert_eq!(eval_json("Observation.issued.exists()", &o), vec![json!(false)]);
        assert_eq!(eval_json("Observation.performer.first().reference", &o), vec![json!("Practitioner/d1")]);
        let p = json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"});
        let deceased = "Patient.deceased.exists() and Patient.deceased != false";
        assert_eq!(eval_json(deceased, &p), vec![json!(true)]);
        assert_eq!(
            eval_json(deceased, &json!({"resourceType": "Patient", "deceasedBoolean": false})),
            vec![json!(false)]
        );
        assert_eq!(eval_json(deceased, &json!({"resourceType": "Patient"})), vec![json!(false)]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_expressions_never_panic(expr in "\\PC{0,60}") {
            let _ = evaluate(&expr, &obs());
        }

        #[test]
        fn expression_shaped_input_never_panics(expr in "[A-Za-z.()' |=!\\[\\]0-9$%,]{0,60}") {
            let _ = evaluate(&expr, &obs());
        }
    }

    #[test]
    fn unsupported_yields_nothing_and_bad_syntax_errors() {
        let o = obs();
        assert!(eval_json("Observation.component.count() + 1", &o).is_empty());
        assert!(eval_json("Observation.code.memberOf('x')", &o).is_empty());
        for bad in ["Observation.", "(a", "a |", "'open", "a ? b", "Observation..code", ""] {
            assert!(Compiled::parse(bad).is_err(), "{bad:?}");
            assert!(evaluate(bad, &o).is_empty());
        }
        let deep = format!("{}a{}", "(".repeat(500), ")".repeat(500));
        assert!(Compiled::parse(&deep).is_err());
        let deep_neg = format!("{}1", "-".repeat(500));
        assert!(Compiled::parse(&deep_neg).is_err());
        let long_chain = format!("a{}", ".b".repeat(5000));
        assert!(Compiled::parse(&long_chain).is_err());
    }
}
