//! Narrative safety (`Narrative.div`), a simplified form of the R4 XHTML rules.
//!
//! R4 says the narrative is XHTML with a `<div>` root and SHALL NOT contain scripts, forms,
//! frames, objects, `head`/`body`, `base`/`link`, or event-handler attributes. The portal
//! renders narratives, so this is an XSS gate: we scan tags and attributes (we do not check
//! XML well-formedness) and refuse anything executable. Attribute values are checked after
//! decoding character references and dropping whitespace/control characters, so
//! `java&#x09;script:` and `JaVaScRiPt:` are caught too.

/// Elements R4 forbids in narrative (all lower case).
const FORBIDDEN_ELEMENTS: &[&str] = &[
    "script", "form", "input", "button", "select", "textarea", "iframe", "frame", "frameset", "object", "embed",
    "applet", "base", "link", "meta", "head", "body", "html", "svg", "math",
];

/// URL schemes that execute code when followed or loaded.
const FORBIDDEN_SCHEMES: &[&str] = &["javascript:", "vbscript:", "livescript:"];

/// `None` when the narrative is acceptable, otherwise why not (no input echoed).
pub(crate) fn check_div(div: &str) -> Option<String> {
    if !div.trim_start().starts_with("<div") {
        return Some("narrative must be XHTML with a <div> root element".into());
    }
    let bytes = div.as_bytes();
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'<') {
        i += off + 1;
        let rest = &div[i..];
        if rest.starts_with("!--") {
            // Comment: skip to its end; nothing inside is markup.
            match rest.find("-->") {
                Some(end) => i += end + 3,
                None => return Some("unterminated comment in narrative".into()),
            }
            continue;
        }
        if rest.starts_with('!') || rest.starts_with('?') {
            return Some("DOCTYPE, CDATA and processing instructions are not allowed in narrative".into());
        }
        let name_start = usize::from(rest.starts_with('/'));
        let name_len = rest[name_start..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'))
            .count();
        if name_len == 0 {
            continue; // a stray '<' in text (invalid XML, harmless here)
        }
        let name = &rest[name_start..name_start + name_len];
        let local = name.rsplit(':').next().unwrap_or(name);
        if FORBIDDEN_ELEMENTS.iter().any(|f| local.eq_ignore_ascii_case(f)) {
            return Some(format!("element <{}> is not allowed in narrative", local.to_ascii_lowercase()));
        }
        let (problem, consumed) = scan_attributes(&rest[name_start + name_len..]);
        if problem.is_some() {
            return problem;
        }
        i += name_start + name_len + consumed;
    }
    None
}

/// Scan the attributes of one tag, up to and including its `>`. Returns a problem, if any,
/// and how many bytes were consumed.
fn scan_attributes(tag: &str) -> (Option<String>, usize) {
    let b = tag.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        if i >= b.len() {
            return (None, i);
        }
        if b[i] == b'>' {
            return (None, i + 1);
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let name = &tag[start..i];
        let local = name.rsplit(':').next().unwrap_or(name);
        if local.len() > 2 && local.as_bytes()[..2].eq_ignore_ascii_case(b"on") {
            return (Some("event-handler attributes (on*) are not allowed in narrative".into()), i);
        }
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let quote = b[i];
                let vstart = i + 1;
                let vend = b[vstart..].iter().position(|&c| c == quote).map_or(b.len(), |p| vstart + p);
                i = (vend + 1).min(b.len());
                &tag[vstart..vend]
            } else {
                let vstart = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                &tag[vstart..i]
            };
            if has_forbidden_scheme(value) {
                return (Some("script URLs (javascript: and similar) are not allowed in narrative".into()), i);
            }
        } else if start == i {
            // Unparseable byte: skip it rather than loop forever.
            i += 1;
        }
    }
}

/// Does an attribute value contain a script URL once character references are decoded and
/// whitespace/control characters (which browsers ignore inside schemes) are removed?
fn has_forbidden_scheme(value: &str) -> bool {
    if !value.contains(':') && !value.contains('&') {
        return false; // fast path: no scheme can be spelled
    }
    let mut norm = String::with_capacity(value.len());
    let mut chars = value.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        let c = if c == '&' {
            match decode_reference(&value[pos..]) {
                Some((decoded, len)) => {
                    // Skip the rest of the reference (`len` bytes in all, '&' already read).
                    while chars.peek().is_some_and(|&(p, _)| p < pos + len) {
                        chars.next();
                    }
                    decoded
                }
                None => c,
            }
        } else {
            c
        };
        if !(c.is_whitespace() || c.is_control()) {
            norm.extend(c.to_lowercase());
        }
    }
    FORBIDDEN_SCHEMES.iter().any(|s| norm.contains(s))
}

/// Decode a character reference at the start of `s` (`&#106;`, `&#x6A;`, `&colon;`, `&Tab;`,
/// `&NewLine;`; the `;` is optional for numeric ones, as browsers accept). Returns the
/// character and the reference's byte length.
fn decode_reference(s: &str) -> Option<(char, usize)> {
    let body = s.strip_prefix('&')?;
    if let Some(num) = body.strip_prefix('#') {
        let (radix, digits_start) = match num.as_bytes().first() {
            Some(b'x' | b'X') => (16, 1),
            _ => (10, 0),
        };
        let is_digit = |b: &u8| {
            if radix == 16 { b.is_ascii_hexdigit() } else { b.is_ascii_digit() }
        };
        let digits = num[digits_start..].bytes().take_while(is_digit).count();
        let digits_str = &num[digits_start..digits_start + digits];
        // Leading zeros pad references (`&#0000106;`): ignore them before bounding the length.
        let significant = digits_str.trim_start_matches('0');
        if digits == 0 || significant.len() > 8 {
            return None;
        }
        let code = if significant.is_empty() { 0 } else { u32::from_str_radix(significant, radix).ok()? };
        let mut len = 2 + digits_start + digits;
        if num[digits_start + digits..].starts_with(';') {
            len += 1;
        }
        return Some((char::from_u32(code).unwrap_or('\u{fffd}'), len));
    }
    for (name, c) in [("colon;", ':'), ("tab;", '\t'), ("newline;", '\n')] {
        if body.as_bytes().get(..name.len()).is_some_and(|b| b.eq_ignore_ascii_case(name.as_bytes())) {
            return Some((c, 1 + name.len()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_narrative() {
        for ok in [
            r#"<div xmlns="http://www.w3.org/1999/xhtml"><p>Hi <b>there</b></p></div>"#,
            r##"<div xmlns="http://www.w3.org/1999/xhtml"><a href="http://x/y?a=1&amp;b=2">l</a><img src="#p1"/></div>"##,
            r#"<div><table class="grid"><tr><td style="color:red">1 &lt; 2</td></tr></table><!-- <script> --></div>"#,
            r#"<div>a < b and onclick= in text, javascript: in text</div>"#,
        ] {
            assert_eq!(check_div(ok), None, "{ok}");
        }
    }

    #[test]
    fn refuses_executable_content() {
        for bad in [
            r#"<div><script>alert(1)</script></div>"#,
            r#"<div><SCRIPT src="x"></SCRIPT></div>"#,
            r#"<div><x:script/></div>"#,
            r#"<div><img src="x" onerror="alert(1)"/></div>"#,
            r#"<div><p ONMOUSEOVER='x'>a</p></div>"#,
            r#"<div><a href="javascript:alert(1)">x</a></div>"#,
            r#"<div><a href=" JaVa&#x09;ScRiPt:alert(1)">x</a></div>"#,
            r#"<div><a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">x</a></div>"#,
            r#"<div><a href="&#0000106avascript&colon;x">x</a></div>"#,
            r#"<div><a href=javascript:alert(1)>x</a></div>"#,
            r#"<div><iframe src="http://evil"></iframe></div>"#,
            r#"<div><form action="x"></form></div>"#,
            r#"<div><p style="background:url(javascript:x)">a</p></div>"#,
            r#"<div><!DOCTYPE x></div>"#,
            r#"<p>not a div</p>"#,
            r#"<div><!-- unterminated"#,
        ] {
            assert!(check_div(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn never_panics_on_odd_text() {
        for odd in [
            "<div",
            "<div <",
            "<div><a href=\"",
            "<div><a href='&#x",
            "<div>&#xFFFFFFFFFFFF;<a b=&#1114112;>",
            "<div><a \u{e9}=\u{e9}>",
            "<div><a href=\"&#x110000;\">",
        ] {
            let _ = check_div(odd);
        }
    }
}
