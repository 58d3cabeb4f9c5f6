//! Text as the built-in Helvetica can show it: cleaning to WinAnsi, measuring and wrapping.
//!
//! The base-14 fonts are single-byte WinAnsi (CP1252). printpdf turns any other character
//! into `?` without telling anyone; we do the substitution ourselves first so that we can
//! count it and print a note saying that characters were replaced (a patient whose name
//! is written in another script must see *that* something is missing, not a name that
//! silently lost letters). Letters with diacritics outside Latin-1 (Polish, Czech,
//! Turkish, …) are shown as their base letter, which is still a substitution and counted.

use std::sync::OnceLock;

use printpdf::BuiltinFont;

/// What an unshowable character becomes.
pub const SUBSTITUTE: char = '?';
/// Longest raw text looked at, in characters: hostile megabyte strings are cut here
/// before any per-character work.
pub const MAX_RAW_CHARS: usize = 600;
const ELLIPSIS: char = '\u{2026}';

/// Turns arbitrary text into WinAnsi-showable text, counting substitutions.
#[derive(Debug, Default)]
pub struct Cleaner {
    substituted: usize,
}

impl Cleaner {
    /// Characters replaced (or folded to a base letter) so far.
    pub fn substituted(&self) -> usize {
        self.substituted
    }

    /// Clean one piece of text: cut at [`MAX_RAW_CHARS`], whitespace and control
    /// characters collapsed to single spaces, everything else showable or substituted.
    pub fn clean(&mut self, raw: &str) -> String {
        let mut out = String::with_capacity(raw.len().min(MAX_RAW_CHARS));
        let mut pending_space = false;
        let mut chars = raw.chars();
        for c in chars.by_ref().take(MAX_RAW_CHARS) {
            if c.is_whitespace() || c.is_control() {
                pending_space = !out.is_empty();
                continue;
            }
            // Zero-width and formatting characters (ZWJ, bidi marks, BOM) carry no glyph.
            if is_invisible(c) {
                continue;
            }
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            if is_win_ansi(c) {
                out.push(c);
            } else if let Some(base) = fold(c) {
                self.substituted += 1;
                out.push(base);
            } else if is_combining_mark(c) {
                // A decomposed accent: the base letter is already there.
                self.substituted += 1;
            } else {
                self.substituted += 1;
                out.push(SUBSTITUTE);
            }
        }
        if chars.next().is_some() {
            out.push(ELLIPSIS);
        }
        out
    }
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
}

fn is_combining_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}')
}

/// WinAnsi (CP1252) as printpdf encodes it: ASCII, Latin-1 and the typographic 0x80–0x9F.
pub fn is_win_ansi(c: char) -> bool {
    matches!(c as u32, 0x20..=0x7E | 0xA0..=0xFF) || win_ansi_high(c).is_some()
}

/// WinAnsi 0x80–0x9F: where it differs from Latin-1 (PDF 32000-1, Annex D.2).
const WIN_ANSI_HIGH: [(char, u8); 27] = [
    ('\u{20AC}', 0x80),
    ('\u{201A}', 0x82),
    ('\u{0192}', 0x83),
    ('\u{201E}', 0x84),
    ('\u{2026}', 0x85),
    ('\u{2020}', 0x86),
    ('\u{2021}', 0x87),
    ('\u{02C6}', 0x88),
    ('\u{2030}', 0x89),
    ('\u{0160}', 0x8A),
    ('\u{2039}', 0x8B),
    ('\u{0152}', 0x8C),
    ('\u{017D}', 0x8E),
    ('\u{2018}', 0x91),
    ('\u{2019}', 0x92),
    ('\u{201C}', 0x93),
    ('\u{201D}', 0x94),
    ('\u{2022}', 0x95),
    ('\u{2013}', 0x96),
    ('\u{2014}', 0x97),
    ('\u{02DC}', 0x98),
    ('\u{2122}', 0x99),
    ('\u{0161}', 0x9A),
    ('\u{203A}', 0x9B),
    ('\u{0153}', 0x9C),
    ('\u{017E}', 0x9E),
    ('\u{0178}', 0x9F),
];

fn win_ansi_high(c: char) -> Option<u8> {
    WIN_ANSI_HIGH.iter().find(|(ch, _)| *ch == c).map(|(_, b)| *b)
}

/// The WinAnsi byte of a showable character (for width lookup).
fn win_ansi_byte(c: char) -> Option<u8> {
    match c as u32 {
        cp @ (0x20..=0x7E | 0xA0..=0xFF) => u8::try_from(cp).ok(),
        _ => win_ansi_high(c),
    }
}

/// Latin Extended-A (U+0100–U+017F) by base letter, in code point order.
const LATIN_EXT_A: &str = "AaAaAaCcCcCcCcDdDdEeEeEeEeEeGgGgGgGgHhHhIiIiIiIiIiIiJjKkkLlLlLlLlLlNnNnNnnNnOoOoOoOoRrRrRrSsSsSsSsTtTtTtUuUuUuUuUuUuWwYyYZzZzZzs";

/// A base letter for accented Latin letters WinAnsi lacks, and plain forms of common
/// punctuation; `None` when there is no honest approximation.
fn fold(c: char) -> Option<char> {
    let cp = c as u32;
    if (0x100..=0x17F).contains(&cp) {
        let idx = usize::try_from(cp - 0x100).ok()?;
        return LATIN_EXT_A.chars().nth(idx);
    }
    Some(match c {
        'Ș' | 'Ş' => 'S',
        'ș' | 'ş' => 's',
        'Ț' | 'Ţ' => 'T',
        'ț' | 'ţ' => 't',
        'Ǎ' => 'A',
        'ǎ' => 'a',
        'Ǐ' => 'I',
        'ǐ' => 'i',
        'Ǒ' => 'O',
        'ǒ' => 'o',
        'Ǔ' => 'U',
        'ǔ' => 'u',
        'Ə' => 'E',
        'ə' => 'e',
        'Ơ' => 'O',
        'ơ' => 'o',
        'Ư' => 'U',
        'ư' => 'u',
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2212}' => '-',
        '\u{2032}' => '\'',
        '\u{2033}' => '"',
        '\u{2264}' => '<',
        '\u{2265}' => '>',
        _ => return None,
    })
}

/// Font faces used by the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Regular,
    Bold,
}

impl Face {
    pub fn builtin(self) -> BuiltinFont {
        match self {
            Face::Regular => BuiltinFont::Helvetica,
            Face::Bold => BuiltinFont::HelveticaBold,
        }
    }
}

/// Advance widths of the 256 WinAnsi codes in 1/1000 em.
type WidthTable = [u16; 256];

/// Helvetica's average advance, used when a width is unknown.
const FALLBACK_WIDTH: u16 = 556;

fn widths(face: Face) -> &'static WidthTable {
    static REGULAR: OnceLock<WidthTable> = OnceLock::new();
    static BOLD: OnceLock<WidthTable> = OnceLock::new();
    let cell = match face {
        Face::Regular => &REGULAR,
        Face::Bold => &BOLD,
    };
    cell.get_or_init(|| load_widths(face.builtin()))
}

/// Read the widths from the font program printpdf ships for the base-14 face, so wrapping
/// agrees with what the PDF carries. Any gap falls back to an average width.
fn load_widths(font: BuiltinFont) -> WidthTable {
    let mut table = [FALLBACK_WIDTH; 256];
    let Some(parsed) = font.get_parsed_font() else {
        return table;
    };
    let upem = u32::from(parsed.pdf_font_metrics.units_per_em.max(1));
    let latin = (0x20u8..=0x7E).chain(0xA0..=0xFF).map(|b| (char::from(b), b));
    for (c, code) in latin.chain(WIN_ANSI_HIGH.iter().copied()) {
        if let Some(w) = parsed.lookup_glyph_index(c as u32).and_then(|gid| parsed.get_glyph_width(gid)) {
            table[usize::from(code)] = u16::try_from(u32::from(w) * 1000 / upem).unwrap_or(FALLBACK_WIDTH);
        }
    }
    table
}

/// Width of cleaned text in points.
pub fn width(text: &str, face: Face, size: f32) -> f32 {
    let table = widths(face);
    let units: u32 =
        text.chars().map(|c| u32::from(win_ansi_byte(c).map_or(FALLBACK_WIDTH, |b| table[usize::from(b)]))).sum();
    units as f32 * size / 1000.0
}

/// Wrap cleaned text into at most `max_lines` lines no wider than `max_width` points.
/// Words longer than a line are broken; text beyond the last line is cut with an ellipsis.
pub fn wrap(text: &str, face: Face, size: f32, max_width: f32, max_lines: usize) -> Vec<String> {
    let max_lines = max_lines.max(1);
    let space = width(" ", face, size);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut line_w = 0.0f32;
    let mut truncated = false;

    'words: for word in text.split(' ').filter(|w| !w.is_empty()) {
        let word_w = width(word, face, size);
        let needed = if line.is_empty() { word_w } else { line_w + space + word_w };
        if needed <= max_width {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
            line_w = needed;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
            line_w = 0.0;
            if lines.len() == max_lines {
                truncated = true;
                break 'words;
            }
        }
        if word_w <= max_width {
            line.push_str(word);
            line_w = word_w;
            continue;
        }
        // A word wider than the column (a URL, a hostile run of letters): break it.
        for c in word.chars() {
            let cw = width(c.encode_utf8(&mut [0u8; 4]), face, size);
            if line_w + cw > max_width && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
                line_w = 0.0;
                if lines.len() == max_lines {
                    truncated = true;
                    break 'words;
                }
            }
            line.push(c);
            line_w += cw;
        }
    }
    if !line.is_empty() {
        if lines.len() < max_lines {
            lines.push(line);
        } else {
            truncated = true;
        }
    }
    if truncated && let Some(last) = lines.last_mut() {
        let ell = width("\u{2026}", face, size);
        while !last.is_empty() && width(last, face, size) + ell > max_width {
            last.pop();
        }
        last.push(ELLIPSIS);
    }
    lines
}

/// Cut cleaned text to one line of `max_width` points, with an ellipsis if cut.
pub fn fit(text: &str, face: Face, size: f32, max_width: f32) -> String {
    if width(text, face, size) <= max_width {
        return text.to_owned();
    }
    let ell = width("\u{2026}", face, size);
    let mut out = String::new();
    let mut w = 0.0;
    for c in text.chars() {
        let cw = width(c.encode_utf8(&mut [0u8; 4]), face, size);
        if w + cw + ell > max_width {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push(ELLIPSIS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn latin1_passes_and_others_are_counted() {
        let mut c = Cleaner::default();
        assert_eq!(c.clean("Nicolás Dávila – “ok”"), "Nicolás Dávila – “ok”");
        assert_eq!(c.substituted(), 0);
        assert_eq!(c.clean("Łukasz Wałęsa"), "Lukasz Walesa");
        assert_eq!(c.substituted(), 3);
        assert_eq!(c.clean("张伟"), "??");
        assert_eq!(c.substituted(), 5);
        assert_eq!(c.clean("e\u{0301}"), "e", "a combining accent is dropped but counted");
        assert_eq!(c.substituted(), 6);
    }

    #[test]
    fn whitespace_controls_and_length() {
        let mut c = Cleaner::default();
        assert_eq!(c.clean("  a\n\tb\u{0}c  "), "a b c");
        assert_eq!(c.clean("a\u{200B}b"), "ab");
        let long = "x".repeat(MAX_RAW_CHARS * 3);
        let out = c.clean(&long);
        assert_eq!(out.chars().count(), MAX_RAW_CHARS + 1);
        assert!(out.ends_with('\u{2026}'));
    }

    #[test]
    fn latin_ext_a_table_is_complete() {
        assert_eq!(LATIN_EXT_A.chars().count(), 0x180 - 0x100);
        assert_eq!(fold('ž'), Some('z'), "U+017E is in WinAnsi, but the table still agrees");
        assert_eq!(fold('Ő'), Some('O'));
        assert_eq!(fold('ſ'), Some('s'));
    }

    #[test]
    fn widths_come_from_the_font() {
        let w_i = width("i", Face::Regular, 1000.0);
        let w_m = width("M", Face::Regular, 1000.0);
        assert!(w_i < w_m, "{w_i} {w_m}");
        assert!(width("Hello", Face::Bold, 10.0) > width("Hello", Face::Regular, 10.0));
    }

    #[test]
    fn wrap_breaks_and_truncates() {
        let lines = wrap("one two three four five six", Face::Regular, 10.0, 40.0, 10);
        assert!(lines.len() > 1);
        for l in &lines {
            assert!(width(l, Face::Regular, 10.0) <= 40.0, "{l}");
        }
        let lines = wrap(&"a".repeat(500), Face::Regular, 10.0, 50.0, 3);
        assert_eq!(lines.len(), 3);
        assert!(lines[2].ends_with('\u{2026}'));
        assert!(wrap("", Face::Regular, 10.0, 50.0, 3).is_empty());
    }

    proptest! {
        #[test]
        fn wrap_never_panics_and_respects_width(s in "\\PC{0,300}", w in 1.0f32..400.0, n in 0usize..6) {
            let mut c = Cleaner::default();
            let clean = c.clean(&s);
            prop_assert!(clean.chars().all(is_win_ansi));
            let lines = wrap(&clean, Face::Regular, 9.0, w, n);
            prop_assert!(lines.len() <= n.max(1));
            let _ = fit(&clean, Face::Bold, 9.0, w);
        }
    }
}
