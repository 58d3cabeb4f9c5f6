//! Name, street and city pools, and ASCII folding for usernames and e-mail addresses.
//!
//! A few entries carry non-ASCII letters (José, Zoë, Nguyễn, Ødegaard, …) so that search,
//! sorting and rendering are exercised with real-world names.

/// Female given names.
pub(crate) const FEMALE: [&str; 24] = [
    "Alice", "Maria", "Sofía", "Zoë", "Chloé", "Hannah", "Grace", "Amara", "Mei", "Priya", "Fatima", "Olivia", "Emma",
    "Leila", "Ingrid", "Aaliyah", "Noor", "Ana", "Renée", "Yuki", "Isabel", "Naomi", "Ruth", "Clara",
];

/// Male given names.
pub(crate) const MALE: [&str; 24] = [
    "James",
    "José",
    "Björn",
    "Liam",
    "Noah",
    "Mateo",
    "Ahmed",
    "Kwame",
    "Luis",
    "Wei",
    "Daniel",
    "Samuel",
    "Łukasz",
    "François",
    "Omar",
    "Ethan",
    "Kenji",
    "Rafael",
    "Tomás",
    "Elijah",
    "Arjun",
    "Henry",
    "Felix",
    "Victor",
];

/// Middle names (ASCII only; used for some patients).
pub(crate) const MIDDLE: [&str; 10] =
    ["Marie", "Lee", "Ann", "James", "Rose", "Jay", "Elizabeth", "Alexander", "Grace", "Michael"];

/// Family names.
pub(crate) const FAMILY: [&str; 32] = [
    "Nguyen",
    "Nguyễn",
    "García",
    "Müller",
    "Okafor",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Patel",
    "Kim",
    "Chen",
    "Martínez",
    "O'Connor",
    "Rossi",
    "Kowalski",
    "Haddad",
    "Nakamura",
    "Ødegaard",
    "Fernández",
    "Taylor",
    "Anderson",
    "Thompson",
    "Mensah",
    "Silva",
    "Johansson",
    "Dubois",
    "Novak",
    "Sánchez",
    "Walker",
    "Hughes",
    "Reyes",
];

/// Street names (all fictional addresses).
pub(crate) const STREETS: [&str; 16] = [
    "Maple Avenue",
    "Cedar Lane",
    "Harbor Road",
    "Orchard Street",
    "Willow Court",
    "Lakeview Drive",
    "Birch Street",
    "Elm Street",
    "Summit Avenue",
    "River Road",
    "Meadow Lane",
    "Pine Street",
    "Aspen Way",
    "Hillcrest Drive",
    "Juniper Place",
    "Bay Street",
];

/// `(city, postal code prefix)` in the fictional service area.
pub(crate) const CITIES: [(&str, &str); 6] = [
    ("Riverside", "9810"),
    ("Northfield", "9811"),
    ("Lakeside", "9812"),
    ("Harbor City", "9813"),
    ("Cedar Falls", "9814"),
    ("Millbrook", "9815"),
];

/// The state of the fictional service area.
pub(crate) const STATE: &str = "WA";

/// Folds a name to lowercase ASCII letters and digits (`"Nguyễn"` → `"nguyen"`,
/// `"O'Connor"` → `"oconnor"`); characters without a known folding are dropped.
pub(crate) fn ascii_fold(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let folded = match c {
            'á' | 'à' | 'â' | 'ä' | 'å' | 'ã' | 'Á' | 'À' | 'Å' | 'Ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' | 'ễ' | 'ế' | 'É' | 'È' => 'e',
            'í' | 'ì' | 'î' | 'ï' | 'Í' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'ø' | 'õ' | 'Ó' | 'Ö' | 'Ø' => 'o',
            'ú' | 'ù' | 'û' | 'ü' | 'Ú' | 'Ü' => 'u',
            'ñ' | 'Ñ' => 'n',
            'ç' | 'Ç' => 'c',
            'ł' | 'Ł' => 'l',
            c if c.is_ascii_alphanumeric() => c.to_ascii_lowercase(),
            _ => continue,
        };
        out.push(folded);
    }
    out
}

/// `given.family`, ASCII-folded (`"Zoë", "Müller"` → `"zoe.muller"`).
pub(crate) fn handle(given: &str, family: &str) -> String {
    format!("{}.{}", ascii_fold(given), ascii_fold(family))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_every_pool_entry_to_something() {
        for n in FEMALE.iter().chain(MALE.iter()).chain(FAMILY.iter()) {
            let f = ascii_fold(n);
            assert!(!f.is_empty() && f.is_ascii(), "{n} -> {f}");
            assert_eq!(f.chars().count(), n.chars().filter(|c| *c != '\'').count(), "{n}");
        }
        assert_eq!(handle("Zoë", "Müller"), "zoe.muller");
        assert_eq!(handle("Łukasz", "Nguyễn"), "lukasz.nguyen");
        assert_eq!(handle("Liam", "O'Connor"), "liam.oconnor");
    }

    #[test]
    fn some_names_are_not_ascii() {
        let non_ascii = FEMALE.iter().chain(MALE.iter()).chain(FAMILY.iter());
        assert!(non_ascii.filter(|n| !n.is_ascii()).count() >= 6);
    }
}
