#!/usr/bin/env python3
"""Write the PEERS.md benchmark workload as FHIR R4 transaction Bundles (stdlib only).

One Bundle per patient, every entry a `PUT` (so loading twice is idempotent):
1 Patient, 50 laboratory Observations (LOINC codes, UCUM units, reference ranges),
3 Conditions, 3 MedicationRequests, 2 Appointments = 59 resources per patient.
Ids: Patient `pt-00001`, then `pt-00001-obs-01`, `pt-00001-cond-1`, `pt-00001-med-1`,
`pt-00001-appt-1`. Deterministic for a given --seed.

    python3 bench/gen_bundles.py --patients 1000 --out DIR    # DIR/bundle-00001.json ...
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

# (LOINC, display, UCUM unit, low, high)
LABS = [
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 99),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.2),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 136, 145),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12.0, 17.5),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4.5, 11.0),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 150, 400),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 0, 200),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 5.6),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 7, 56),
]
CONDITIONS = [
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("55822004", "Hyperlipidemia"),
    ("195967001", "Asthma"),
    ("35489007", "Depressive disorder"),
    ("431855005", "Chronic kidney disease stage 1"),
]
MEDICATIONS = [
    ("860975", "metformin hydrochloride 500 MG Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("617312", "atorvastatin 20 MG Oral Tablet"),
    ("745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    ("312940", "sertraline 50 MG Oral Tablet"),
]
GIVEN = ["Alex", "Sam", "Robin", "Maria", "Jun", "Aisha", "Lars", "Noor", "Ines", "Tomas"]
FAMILY = ["Meyer", "Garcia", "Okafor", "Nakamura", "Silva", "Novak", "Haddad", "Kim", "Berg"]
BASE_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(resource: dict) -> dict:
    url = f"{resource['resourceType']}/{resource['id']}"
    full_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'portico-bench:' + url)}"
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "PUT", "url": url}}


def patient_bundle(n: int, seed: int) -> dict:
    rng = random.Random(seed * 1_000_003 + n)
    pid = f"pt-{n:05d}"
    subject = {"reference": f"Patient/{pid}"}
    entries = [
        _entry(
            {
                "resourceType": "Patient",
                "id": pid,
                "identifier": [{"system": "urn:portico:bench:mrn", "value": f"MRN{n:07d}"}],
                "name": [{"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN)]}],
                "gender": rng.choice(["female", "male", "other", "unknown"]),
                "birthDate": f"{rng.randint(1930, 2015)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "address": [{"city": "Springfield", "postalCode": f"{rng.randint(10000, 99999)}"}],
            }
        )
    ]
    for i in range(1, 51):
        code, display, unit, low, high = LABS[(i - 1) % len(LABS)]
        span = high - low
        value = round(rng.uniform(low - 0.2 * span, high + 0.2 * span), 2)
        when = BASE_TIME + timedelta(days=rng.randint(0, 729), minutes=rng.randint(0, 1439))
        entries.append(
            _entry(
                {
                    "resourceType": "Observation",
                    "id": f"{pid}-obs-{i:02d}",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory",
                                    "display": "Laboratory",
                                }
                            ]
                        }
                    ],
                    "code": {
                        "coding": [{"system": "http://loinc.org", "code": code, "display": display}],
                        "text": display,
                    },
                    "subject": subject,
                    "effectiveDateTime": _ts(when),
                    "issued": _ts(when + timedelta(hours=4)),
                    "valueQuantity": {
                        "value": value,
                        "unit": unit,
                        "system": "http://unitsofmeasure.org",
                        "code": unit,
                    },
                    "referenceRange": [
                        {
                            "low": {"value": low, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
                            "high": {"value": high, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
                        }
                    ],
                }
            )
        )
    for i, (code, display) in enumerate(rng.sample(CONDITIONS, 3), start=1):
        entries.append(
            _entry(
                {
                    "resourceType": "Condition",
                    "id": f"{pid}-cond-{i}",
                    "clinicalStatus": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                "code": "active",
                            }
                        ]
                    },
                    "verificationStatus": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                "code": "confirmed",
                            }
                        ]
                    },
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
                    "subject": subject,
                    "onsetDateTime": _ts(BASE_TIME - timedelta(days=rng.randint(30, 3650))),
                }
            )
        )
    for i, (code, display) in enumerate(rng.sample(MEDICATIONS, 3), start=1):
        entries.append(
            _entry(
                {
                    "resourceType": "MedicationRequest",
                    "id": f"{pid}-med-{i}",
                    "status": "active",
                    "intent": "order",
                    "medicationCodeableConcept": {
                        "coding": [
                            {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code, "display": display}
                        ]
                    },
                    "subject": subject,
                    "authoredOn": _ts(BASE_TIME + timedelta(days=rng.randint(0, 729))),
                    "dosageInstruction": [{"text": "1 tablet once daily"}],
                }
            )
        )
    for i in range(1, 3):
        start = BASE_TIME + timedelta(days=730 + rng.randint(0, 90), hours=rng.randint(8, 16))
        entries.append(
            _entry(
                {
                    "resourceType": "Appointment",
                    "id": f"{pid}-appt-{i}",
                    "status": "booked",
                    "description": "Follow-up visit",
                    "start": _ts(start),
                    "end": _ts(start + timedelta(minutes=30)),
                    "participant": [{"actor": subject, "status": "accepted"}],
                }
            )
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for n in range(1, args.patients + 1):
        bundle = patient_bundle(n, args.seed)
        total += len(bundle["entry"])
        (args.out / f"bundle-{n:05d}.json").write_text(json.dumps(bundle, separators=(",", ":")))
    print(f"wrote {args.patients} bundles, {total} resources, to {args.out}")


if __name__ == "__main__":
    main()
