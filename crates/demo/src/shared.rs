//! The shared directory: Organizations, Locations, Practitioners and PractitionerRoles that
//! every patient bundle refers to. Fixed tables, independent of the seed, so references from
//! any patient bundle always resolve.

use serde_json::{Value, json};

use crate::fhirjson::{coding, concept, reference, reference_display, sys, transaction};

/// Stable ids of shared resources that the patient generators refer to.
pub(crate) mod ids {
    pub(crate) const ORG_CARDIOLOGY: &str = "org-001";
    pub(crate) const ORG_FAMILY: &str = "org-002";
    pub(crate) const ORG_BEHAVIORAL: &str = "org-003";
    pub(crate) const ORG_LAB: &str = "org-004";
    pub(crate) const ORG_WOMENS: &str = "org-005";
    pub(crate) const LOC_CARDIOLOGY: &str = "loc-001";
    pub(crate) const LOC_FAMILY: &str = "loc-002";
    pub(crate) const LOC_BEHAVIORAL: &str = "loc-003";
    pub(crate) const LOC_WOMENS: &str = "loc-005";
    pub(crate) const PR_CARDIOLOGISTS: [&str; 2] = ["pr-001", "pr-002"];
    /// Adult primary care: two family physicians and a nurse practitioner.
    pub(crate) const PR_FAMILY: [&str; 3] = ["pr-003", "pr-004", "pr-006"];
    pub(crate) const PR_PEDIATRICS: &str = "pr-005";
    pub(crate) const PR_PSYCHIATRY: &str = "pr-007";
    pub(crate) const PR_ADDICTION: &str = "pr-008";
    pub(crate) const PR_OBGYN: &str = "pr-009";
}

/// An organization and its one site.
pub(crate) struct Org {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) location: &'static str,
    pub(crate) site: &'static str,
    pub(crate) street: &'static str,
    pub(crate) city: &'static str,
    pub(crate) postal: &'static str,
    pub(crate) phone: &'static str,
    npi_base: u32,
}

/// The organizations of the demo service area.
#[rustfmt::skip]
pub(crate) const ORGS: [Org; 5] = [
    Org { id: ids::ORG_CARDIOLOGY, name: "Riverside Cardiology", location: ids::LOC_CARDIOLOGY, site: "Riverside Cardiology Clinic", street: "400 River Road, Suite 200", city: "Riverside", postal: "98101", phone: "(206) 555-0110", npi_base: 154_820_331 },
    Org { id: ids::ORG_FAMILY, name: "Northside Family Practice", location: ids::LOC_FAMILY, site: "Northside Family Practice Clinic", street: "12 Orchard Street", city: "Northfield", postal: "98112", phone: "(206) 555-0111", npi_base: 163_049_772 },
    Org { id: ids::ORG_BEHAVIORAL, name: "Lakeside Behavioral Health", location: ids::LOC_BEHAVIORAL, site: "Lakeside Behavioral Health Center", street: "88 Lakeview Drive", city: "Lakeside", postal: "98120", phone: "(206) 555-0112", npi_base: 172_305_914 },
    Org { id: ids::ORG_LAB, name: "Northside Clinical Laboratory", location: "loc-004", site: "Northside Clinical Laboratory", street: "14 Orchard Street", city: "Northfield", postal: "98112", phone: "(206) 555-0113", npi_base: 185_511_206 },
    Org { id: ids::ORG_WOMENS, name: "Harbor Women's Health", location: ids::LOC_WOMENS, site: "Harbor Women's Health Clinic", street: "5 Bay Street", city: "Harbor City", postal: "98133", phone: "(206) 555-0114", npi_base: 190_467_158 },
];

/// A practitioner, with the one role they hold.
pub(crate) struct Clinician {
    pub(crate) id: &'static str,
    pub(crate) given: &'static [&'static str],
    pub(crate) family: &'static str,
    /// `MD`, `NP` (v2-0360 degree codes) or a credential with no code.
    credential: &'static str,
    gender: &'static str,
    pub(crate) org: &'static str,
    pub(crate) location: &'static str,
    taxonomy: (&'static str, &'static str),
    npi_base: u32,
}

/// The ten practitioners of the demo service area.
#[rustfmt::skip]
pub(crate) const PRACTITIONERS: [Clinician; 10] = [
    Clinician { id: "pr-001", given: &["Samuel"], family: "Adeyemi", credential: "MD", gender: "male", org: ids::ORG_CARDIOLOGY, location: ids::LOC_CARDIOLOGY, taxonomy: ("207RC0000X", "Cardiovascular Disease Physician"), npi_base: 124_466_013 },
    Clinician { id: "pr-002", given: &["Elena"], family: "Petrova", credential: "MD", gender: "female", org: ids::ORG_CARDIOLOGY, location: ids::LOC_CARDIOLOGY, taxonomy: ("207RC0000X", "Cardiovascular Disease Physician"), npi_base: 130_987_245 },
    Clinician { id: "pr-003", given: &["Hannah"], family: "Whitaker", credential: "MD", gender: "female", org: ids::ORG_FAMILY, location: ids::LOC_FAMILY, taxonomy: ("207Q00000X", "Family Medicine Physician"), npi_base: 141_652_098 },
    Clinician { id: "pr-004", given: &["Miguel", "Ángel"], family: "Torres", credential: "MD", gender: "male", org: ids::ORG_FAMILY, location: ids::LOC_FAMILY, taxonomy: ("207Q00000X", "Family Medicine Physician"), npi_base: 157_320_446 },
    Clinician { id: "pr-005", given: &["Priya"], family: "Raman", credential: "MD", gender: "female", org: ids::ORG_FAMILY, location: ids::LOC_FAMILY, taxonomy: ("208000000X", "Pediatrics Physician"), npi_base: 168_004_512 },
    Clinician { id: "pr-006", given: &["Jordan"], family: "Ellis", credential: "NP", gender: "male", org: ids::ORG_FAMILY, location: ids::LOC_FAMILY, taxonomy: ("363LF0000X", "Family Nurse Practitioner"), npi_base: 171_238_890 },
    Clinician { id: "pr-007", given: &["Ingrid"], family: "Sørensen", credential: "MD", gender: "female", org: ids::ORG_BEHAVIORAL, location: ids::LOC_BEHAVIORAL, taxonomy: ("2084P0800X", "Psychiatry Physician"), npi_base: 182_750_364 },
    Clinician { id: "pr-008", given: &["Marcus"], family: "Webb", credential: "LADC", gender: "male", org: ids::ORG_BEHAVIORAL, location: ids::LOC_BEHAVIORAL, taxonomy: ("101YA0400X", "Addiction (Substance Use Disorder) Counselor"), npi_base: 193_115_627 },
    Clinician { id: "pr-009", given: &["Aisha"], family: "Rahman", credential: "MD", gender: "female", org: ids::ORG_WOMENS, location: ids::LOC_WOMENS, taxonomy: ("207V00000X", "Obstetrics & Gynecology Physician"), npi_base: 120_594_771 },
    Clinician { id: "pr-010", given: &["Thomas"], family: "Brennan", credential: "MD", gender: "male", org: ids::ORG_LAB, location: "loc-004", taxonomy: ("207ZP0102X", "Anatomic Pathology & Clinical Pathology Physician"), npi_base: 135_876_209 },
];

impl Clinician {
    /// "Dr. Hannah Whitaker" / "Jordan Ellis, NP".
    pub(crate) fn display(&self) -> String {
        let given = self.given.join(" ");
        match self.credential {
            "MD" => format!("Dr. {given} {}", self.family),
            other => format!("{given} {}, {other}", self.family),
        }
    }
}

/// The practitioner with `id` (falls back to the first family physician).
pub(crate) fn clinician(id: &str) -> &'static Clinician {
    PRACTITIONERS.iter().find(|c| c.id == id).unwrap_or(&PRACTITIONERS[2])
}

/// The organization with `id` (falls back to the family practice).
pub(crate) fn org(id: &str) -> &'static Org {
    ORGS.iter().find(|o| o.id == id).unwrap_or(&ORGS[1])
}

/// A 10-digit NPI: the 9-digit base plus its Luhn check digit (computed with the `80840`
/// card-issuer prefix, as CMS specifies).
pub(crate) fn npi(base: u32) -> String {
    let base = base % 1_000_000_000;
    let digits = format!("{base:09}");
    let mut sum = 24; // the contribution of the "80840" prefix
    for (i, c) in digits.bytes().rev().enumerate() {
        let d = u32::from(c - b'0');
        sum += if i % 2 == 0 {
            let x = d * 2;
            x / 10 + x % 10
        } else {
            d
        };
    }
    format!("{digits}{}", (10 - sum % 10) % 10)
}

fn address(street: &str, city: &str, postal: &str) -> Value {
    json!({ "use": "work", "line": [street], "city": city, "state": crate::names::STATE, "postalCode": postal, "country": "US" })
}

fn organization(o: &Org) -> Value {
    json!({
        "resourceType": "Organization",
        "id": o.id,
        "identifier": [{ "system": sys::NPI, "value": npi(o.npi_base) }],
        "active": true,
        "type": [concept("http://terminology.hl7.org/CodeSystem/organization-type", "prov", "Healthcare Provider")],
        "name": o.name,
        "telecom": [{ "system": "phone", "value": o.phone, "use": "work" }],
        "address": [address(o.street, o.city, o.postal)],
    })
}

fn location(o: &Org) -> Value {
    json!({
        "resourceType": "Location",
        "id": o.location,
        "status": "active",
        "name": o.site,
        "mode": "instance",
        "telecom": [{ "system": "phone", "value": o.phone, "use": "work" }],
        "address": address(o.street, o.city, o.postal),
        "physicalType": concept("http://terminology.hl7.org/CodeSystem/location-physical-type", "bu", "Building"),
        "managingOrganization": reference_display("Organization", o.id, o.name),
    })
}

fn practitioner(c: &Clinician) -> Value {
    let o = org(c.org);
    let mut name = json!({ "use": "official", "text": c.display(), "family": c.family, "given": c.given });
    let qualification = match c.credential {
        "MD" => {
            name["prefix"] = json!(["Dr."]);
            name["suffix"] = json!(["MD"]);
            json!({ "coding": [coding("http://terminology.hl7.org/CodeSystem/v2-0360", "MD", "Doctor of Medicine")] })
        }
        "NP" => {
            name["suffix"] = json!(["NP"]);
            json!({ "coding": [coding("http://terminology.hl7.org/CodeSystem/v2-0360", "NP", "Nurse Practitioner")] })
        }
        _ => {
            name["suffix"] = json!([c.credential]);
            json!({ "text": "Licensed Alcohol and Drug Counselor" })
        }
    };
    let email = format!("{}@example.org", crate::names::handle(c.given.first().copied().unwrap_or(""), c.family));
    json!({
        "resourceType": "Practitioner",
        "id": c.id,
        "identifier": [{ "system": sys::NPI, "value": npi(c.npi_base) }],
        "active": true,
        "name": [name],
        "telecom": [{ "system": "phone", "value": o.phone, "use": "work" }, { "system": "email", "value": email, "use": "work" }],
        "address": [address(o.street, o.city, o.postal)],
        "gender": c.gender,
        "qualification": [{ "code": qualification, "issuer": { "display": "Washington State Department of Health" } }],
    })
}

fn practitioner_role(n: usize, c: &Clinician) -> Value {
    let o = org(c.org);
    let role = match c.credential {
        "MD" => Some(("doctor", "Doctor")),
        "NP" => Some(("nurse", "Nurse")),
        _ => None,
    };
    let mut r = json!({
        "resourceType": "PractitionerRole",
        "id": format!("prr-{:03}", n + 1),
        "active": true,
        "practitioner": reference_display("Practitioner", c.id, &c.display()),
        "organization": reference_display("Organization", o.id, o.name),
    });
    if let Some((code, display)) = role {
        r["code"] = json!([concept("http://terminology.hl7.org/CodeSystem/practitioner-role", code, display)]);
    }
    r["specialty"] = json!([concept(sys::NUCC, c.taxonomy.0, c.taxonomy.1)]);
    r["location"] = json!([reference("Location", c.location)]);
    r["telecom"] = json!([{ "system": "phone", "value": o.phone, "use": "work" }]);
    r
}

/// Every shared resource, in dependency order (organizations before what refers to them).
pub(crate) fn resources() -> Vec<Value> {
    let mut out: Vec<Value> = ORGS.iter().map(organization).collect();
    out.extend(ORGS.iter().map(location));
    out.extend(PRACTITIONERS.iter().map(practitioner));
    out.extend(PRACTITIONERS.iter().enumerate().map(|(n, c)| practitioner_role(n, c)));
    out
}

/// The shared directory as one `transaction` Bundle.
pub(crate) fn bundle() -> Value {
    transaction(resources())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npi_check_digit() {
        // CMS's published example: 123456789 → 1234567893.
        assert_eq!(npi(123_456_789), "1234567893");
        assert_eq!(npi(124_466_013).len(), 10);
    }

    #[test]
    fn ids_point_at_existing_entries() {
        for c in &PRACTITIONERS {
            assert!(ORGS.iter().any(|o| o.id == c.org && o.location == c.location), "{}", c.id);
        }
        for id in ids::PR_FAMILY.iter().chain(ids::PR_CARDIOLOGISTS.iter()) {
            assert_eq!(clinician(id).id, *id);
        }
    }
}
