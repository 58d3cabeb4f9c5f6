//! A readable PDF health summary of one patient, for the patient to keep or hand to a new
//! doctor: who they are (name, birth date, sex, identifiers), current problems, current
//! medicines, allergies, immunizations, recent lab results with their flags, upcoming
//! appointments, and on every page a footer with the generation time and "Page X of Y".
//!
//! **This crate does not decide access.** It renders exactly the resources it is given and
//! nothing else: no store, no gate, no I/O. The caller (the bulk export) must pass only
//! resources that `portico_policy::Gate` has already permitted for this requester; anything
//! left out simply does not appear, and the first page says that the summary shows only
//! what was included. Equally, it does not check that the resources belong to the patient:
//! that is the caller's compartment-confined search.
//!
//! Robustness: FHIR allows most elements to be absent, so every field is optional here and
//! odd values are shown as written or skipped; long lists are capped per section with an
//! "and N more" line; long strings are wrapped and cut; characters the built-in Helvetica
//! (WinAnsi) cannot show are replaced with `?` (or a base letter) and the document says so.
//! [`render`] never panics (property-tested with random JSON).
//!
//! ```
//! use serde_json::json;
//! let input = portico_summary::SummaryInput {
//!     patient: json!({"resourceType": "Patient", "name": [{"given": ["Ada"], "family": "Lovelace"}]}),
//!     resources: vec![],
//!     generated_at: time::OffsetDateTime::UNIX_EPOCH,
//!     server_name: "portico".to_owned(),
//! };
//! let pdf = portico_summary::render(&input)?;
//! assert!(pdf.starts_with(b"%PDF-"));
//! # Ok::<(), portico_summary::SummaryError>(())
//! ```

mod layout;
mod model;
mod read;
mod text;

use printpdf::{PdfDocument, PdfSaveOptions};
use serde_json::Value;
use time::OffsetDateTime;

use layout::{BODY, Layout};
use model::{Style, Summary};
use text::Face;

/// The resource types the summary shows (besides the Patient); callers can leave every
/// other type out of [`SummaryInput::resources`].
pub const SHOWN_TYPES: &[&str] = &[
    "Condition",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
    "Immunization",
    "Observation",
    "Appointment",
];

pub use model::{MAX_ALLERGIES, MAX_APPOINTMENTS, MAX_IMMUNIZATIONS, MAX_LABS, MAX_MEDICATIONS, MAX_PROBLEMS};

/// Everything the summary is made from.
#[derive(Debug, Clone)]
pub struct SummaryInput {
    /// The Patient resource.
    pub patient: Value,
    /// The patient's other resources, **already permitted by the policy gate**. Types the
    /// summary does not show (vital signs, encounters, …) are counted and otherwise ignored.
    pub resources: Vec<Value>,
    /// When the summary is made. Also "now" for what counts as an *upcoming* appointment
    /// and for the patient's age.
    pub generated_at: OffsetDateTime,
    /// The server's name, printed in the footer.
    pub server_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The `patient` value is not a FHIR Patient resource.
    #[error("the summary needs a Patient resource, got {found}")]
    NotAPatient { found: String },
}

/// Render the summary as PDF bytes.
pub fn render(input: &SummaryInput) -> Result<Vec<u8>, SummaryError> {
    match input.patient.get("resourceType").and_then(Value::as_str) {
        Some("Patient") => {}
        other => {
            let found = other.map_or_else(|| "no resourceType".to_owned(), |t| t.chars().take(64).collect());
            return Err(SummaryError::NotAPatient { found });
        }
    }
    let summary = model::build(&input.patient, &input.resources, input.generated_at);
    let generated = read::instant_words(input.generated_at);
    // The note about replaced characters belongs at the top, but whether it is needed is
    // only known after laying everything out; lay out again in the (rare) case it is.
    let (pages, substituted) = lay_out(&summary, input, &generated, false);
    let pages = if substituted > 0 { lay_out(&summary, input, &generated, true).0 } else { pages };

    let mut doc = PdfDocument::new("Health summary");
    let info = &mut doc.metadata.info;
    // Dated by the generation time, not the wall clock, so the same input gives the same
    // document.
    let in_pdf_range = (1..=9999).contains(&input.generated_at.year());
    if let Ok(when) = printpdf::OffsetDateTime::from_unix_timestamp(input.generated_at.unix_timestamp())
        && in_pdf_range
    {
        info.creation_date = when;
        info.modification_date = when;
        info.metadata_date = when;
    }
    info.creator = "portico".to_owned();
    info.producer = "portico".to_owned();
    let mut warnings = Vec::new();
    Ok(doc.with_pages(pages).save(&PdfSaveOptions::default(), &mut warnings))
}

fn lay_out(
    summary: &Summary,
    input: &SummaryInput,
    generated: &str,
    note_substitutions: bool,
) -> (Vec<printpdf::PdfPage>, usize) {
    let mut l = Layout::new(&format!("Health summary of {} (continued)", summary.name));
    l.title("Health summary", 20.0);
    l.space(4.0);
    l.title(&summary.name, 15.0);
    l.space(2.0);
    l.paragraph(&format!("Prepared by {} on {generated}.", input.server_name), Face::Regular, BODY, Style::Muted, 2);
    l.space(8.0);
    l.facts(&summary.facts);
    l.space(10.0);
    let mut notice = vec![
        "This summary shows only the records that were included when it was made. Some \
         information may have been left out, for example information you chose not to share \
         or that is kept private. If something is missing or looks wrong, ask your care team."
            .to_owned(),
    ];
    if note_substitutions {
        notice.push(
            "Some characters in this record cannot be shown with this document's font. They \
             are printed as \"?\" or without their accent marks. Your record itself is unchanged."
                .to_owned(),
        );
    }
    l.callout(&notice);
    for section in &summary.sections {
        l.table(section);
    }
    l.heading("About this summary");
    l.paragraph(
        &format!(
            "Made from {} records. {} of them are of kinds this summary does not show (for \
             example vital signs, past problems, stopped medicines, earlier appointments and \
             visit notes).",
            summary.used + summary.not_shown,
            summary.not_shown
        ),
        Face::Regular,
        BODY,
        Style::Normal,
        6,
    );
    let substituted = l.substituted();
    let footer = format!("Generated {generated} by {} for {}", input.server_name, summary.name);
    (l.finish(&footer), substituted)
}
