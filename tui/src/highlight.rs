//! Syntax highlighting for the editor: a small lexer per language, one line
//! at a time, carrying only what spans lines (a block comment, a template
//! literal, a triple-quoted string, a code fence). Cheap enough to run on
//! every frame for the visible lines, and it cannot hang on odd input.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    JavaScript,
    TypeScript,
    Python,
    Json,
    Markdown,
    Plain,
}

impl Language {
    pub fn from_path(path: &str) -> Language {
        let ext = path
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "js" | "mjs" | "cjs" | "jsx" => Language::JavaScript,
            "ts" | "mts" | "cts" | "tsx" => Language::TypeScript,
            "py" | "pyi" => Language::Python,
            "json" => Language::Json,
            "md" | "markdown" => Language::Markdown,
            _ => Language::Plain,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::JavaScript => "JavaScript",
            Language::TypeScript => "TypeScript",
            Language::Python => "Python",
            Language::Json => "JSON",
            Language::Markdown => "Markdown",
            Language::Plain => "text",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Keyword,
    /// true, false, null, None and the like.
    Constant,
    String,
    Number,
    Comment,
    /// Names of types and classes in declarations, JSON keys.
    Name,
    Heading,
    Code,
    Emphasis,
}

/// What a line leaves open for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Carry {
    #[default]
    Nothing,
    BlockComment,
    TemplateLiteral,
    TripleQuote(u8),
    CodeFence,
}

const JS_KEYWORDS: &[&str] = &[
    "async",
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "export",
    "extends",
    "finally",
    "for",
    "from",
    "function",
    "if",
    "import",
    "in",
    "instanceof",
    "let",
    "new",
    "of",
    "return",
    "static",
    "super",
    "switch",
    "this",
    "throw",
    "try",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
];
const TS_KEYWORDS: &[&str] = &[
    "abstract",
    "as",
    "declare",
    "enum",
    "implements",
    "interface",
    "keyof",
    "namespace",
    "private",
    "protected",
    "public",
    "readonly",
    "satisfies",
    "type",
    "unknown",
    "never",
    "any",
    "string",
    "number",
    "boolean",
];
const JS_CONSTANTS: &[&str] = &["true", "false", "null", "undefined", "NaN", "Infinity"];
const PY_KEYWORDS: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif", "else", "except",
    "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "match", "nonlocal", "not", "or", "pass",
    "raise", "return", "try", "while", "with", "yield",
];
const PY_CONSTANTS: &[&str] = &["True", "False", "None", "self"];

/// Highlights one line; returns byte ranges with their kinds (in order, not
/// overlapping) and what the line leaves open.
pub fn line(language: Language, text: &str, carry: Carry) -> (Vec<(Range<usize>, Kind)>, Carry) {
    match language {
        Language::JavaScript => code(text, carry, JS_KEYWORDS, &[], JS_CONSTANTS, Syntax::C),
        Language::TypeScript => code(text, carry, JS_KEYWORDS, TS_KEYWORDS, JS_CONSTANTS, Syntax::C),
        Language::Python => code(text, carry, PY_KEYWORDS, &[], PY_CONSTANTS, Syntax::Python),
        Language::Json => code(text, carry, &[], &[], &["true", "false", "null"], Syntax::Json),
        Language::Markdown => markdown(text, carry),
        Language::Plain => (Vec::new(), Carry::Nothing),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    C,
    Python,
    Json,
}

fn code(
    text: &str,
    mut carry: Carry,
    keywords: &[&str],
    more_keywords: &[&str],
    constants: &[&str],
    syntax: Syntax,
) -> (Vec<(Range<usize>, Kind)>, Carry) {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    // Finish what the previous line left open.
    match carry {
        Carry::BlockComment => match text.find("*/") {
            Some(end) => {
                spans.push((0..end + 2, Kind::Comment));
                i = end + 2;
                carry = Carry::Nothing;
            }
            None => return (vec![(0..text.len(), Kind::Comment)], carry),
        },
        Carry::TemplateLiteral => match closing_quote(bytes, 0, b'`') {
            Some(end) => {
                spans.push((0..end, Kind::String));
                i = end;
                carry = Carry::Nothing;
            }
            None => return (vec![(0..text.len(), Kind::String)], carry),
        },
        Carry::TripleQuote(q) => {
            let delimiter = if q == b'"' { "\"\"\"" } else { "'''" };
            match text.find(delimiter) {
                Some(end) => {
                    spans.push((0..end + 3, Kind::String));
                    i = end + 3;
                    carry = Carry::Nothing;
                }
                None => return (vec![(0..text.len(), Kind::String)], carry),
            }
        }
        Carry::Nothing | Carry::CodeFence => carry = Carry::Nothing,
    }
    let mut after_declaration = false;
    while i < bytes.len() {
        let c = bytes[i];
        let rest = &text[i..];
        if syntax == Syntax::C && rest.starts_with("//") || syntax == Syntax::Python && c == b'#' {
            spans.push((i..text.len(), Kind::Comment));
            break;
        }
        if syntax == Syntax::C && rest.starts_with("/*") {
            match text[i + 2..].find("*/") {
                Some(end) => {
                    spans.push((i..i + 2 + end + 2, Kind::Comment));
                    i += 2 + end + 2;
                    continue;
                }
                None => {
                    spans.push((i..text.len(), Kind::Comment));
                    return (spans, Carry::BlockComment);
                }
            }
        }
        if syntax == Syntax::Python && (rest.starts_with("\"\"\"") || rest.starts_with("'''")) {
            let delimiter = &rest[..3];
            match text[i + 3..].find(delimiter) {
                Some(end) => {
                    spans.push((i..i + 3 + end + 3, Kind::String));
                    i += 3 + end + 3;
                    continue;
                }
                None => {
                    spans.push((i..text.len(), Kind::String));
                    return (spans, Carry::TripleQuote(c));
                }
            }
        }
        if c == b'"' || c == b'\'' || (c == b'`' && syntax == Syntax::C) {
            match closing_quote(bytes, i + 1, c) {
                Some(end) => {
                    // A JSON string followed by a colon is a key.
                    let key = syntax == Syntax::Json && text[end..].trim_start().starts_with(':');
                    spans.push((i..end, if key { Kind::Name } else { Kind::String }));
                    i = end;
                }
                None if c == b'`' => {
                    spans.push((i..text.len(), Kind::String));
                    return (spans, Carry::TemplateLiteral);
                }
                None => {
                    spans.push((i..text.len(), Kind::String));
                    break;
                }
            }
            continue;
        }
        if c.is_ascii_digit() {
            let end = i + bytes[i..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'.' || *b == b'_'))
                .unwrap_or(bytes.len() - i);
            spans.push((i..end, Kind::Number));
            i = end;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            let end = i + bytes[i..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$'))
                .unwrap_or(bytes.len() - i);
            let word = &text[i..end];
            if after_declaration {
                spans.push((i..end, Kind::Name));
                after_declaration = false;
            } else if keywords.contains(&word) || more_keywords.contains(&word) {
                spans.push((i..end, Kind::Keyword));
                after_declaration = matches!(word, "class" | "def" | "function" | "interface" | "type" | "enum");
            } else if constants.contains(&word) {
                spans.push((i..end, Kind::Constant));
            }
            i = end;
            continue;
        }
        // Skip one whole character, never half of one.
        i += text[i..].chars().next().map_or(1, char::len_utf8);
    }
    (spans, carry)
}

/// The index just past the quote closing a string opened before `from`, or
/// None when the line ends first. Backslashes escape.
fn closing_quote(bytes: &[u8], from: usize, quote: u8) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn markdown(text: &str, carry: Carry) -> (Vec<(Range<usize>, Kind)>, Carry) {
    let trimmed = text.trim_start();
    if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
        let next = if carry == Carry::CodeFence {
            Carry::Nothing
        } else {
            Carry::CodeFence
        };
        return (vec![(0..text.len(), Kind::Code)], next);
    }
    if carry == Carry::CodeFence {
        return (vec![(0..text.len(), Kind::Code)], carry);
    }
    if trimmed.starts_with('#') {
        return (vec![(0..text.len(), Kind::Heading)], Carry::Nothing);
    }
    let mut spans = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => match text[i + 1..].find('`') {
                Some(end) => {
                    spans.push((i..i + 1 + end + 1, Kind::Code));
                    i += end + 2;
                }
                None => break,
            },
            b'*' | b'_' if bytes.get(i + 1) == Some(&bytes[i]) => {
                let marker = &text[i..i + 2];
                match text[i + 2..].find(marker) {
                    Some(end) => {
                        spans.push((i..i + 2 + end + 2, Kind::Emphasis));
                        i += end + 4;
                    }
                    None => i += 2,
                }
            }
            b'[' => match text[i..].find("](") {
                Some(mid) => match text[i + mid..].find(')') {
                    Some(end) => {
                        spans.push((i..i + mid + end + 1, Kind::Name));
                        i += mid + end + 1;
                    }
                    None => i += 1,
                },
                None => i += 1,
            },
            _ => i += text[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    (spans, Carry::Nothing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(language: Language, text: &str) -> Vec<(&str, Kind)> {
        let (spans, _) = line(language, text, Carry::Nothing);
        spans.into_iter().map(|(r, k)| (&text[r], k)).collect()
    }

    #[test]
    fn javascript_keywords_strings_numbers_comments() {
        assert_eq!(
            kinds(Language::JavaScript, "const x = 'a\\'b' + 42; // done"),
            vec![
                ("const", Kind::Keyword),
                ("'a\\'b'", Kind::String),
                ("42", Kind::Number),
                ("// done", Kind::Comment)
            ]
        );
        assert_eq!(
            kinds(Language::JavaScript, "function serve() { return null }"),
            vec![
                ("function", Kind::Keyword),
                ("serve", Kind::Name),
                ("return", Kind::Keyword),
                ("null", Kind::Constant)
            ]
        );
    }

    #[test]
    fn typescript_adds_its_own_keywords() {
        assert_eq!(
            kinds(Language::TypeScript, "interface Port { n: number }"),
            vec![
                ("interface", Kind::Keyword),
                ("Port", Kind::Name),
                ("number", Kind::Keyword)
            ]
        );
        assert!(kinds(Language::JavaScript, "interface").is_empty());
    }

    #[test]
    fn block_comments_and_template_literals_span_lines() {
        let (spans, carry) = line(Language::JavaScript, "a /* open", Carry::Nothing);
        assert_eq!(carry, Carry::BlockComment);
        assert_eq!(spans, vec![(2..9, Kind::Comment)]);
        let (spans, carry) = line(Language::JavaScript, "still */ let", carry);
        assert_eq!(carry, Carry::Nothing);
        assert_eq!(spans, vec![(0..8, Kind::Comment), (9..12, Kind::Keyword)]);
        let (_, carry) = line(Language::JavaScript, "const s = `multi", Carry::Nothing);
        assert_eq!(carry, Carry::TemplateLiteral);
    }

    #[test]
    fn python_triple_quotes_and_comments() {
        assert_eq!(
            kinds(Language::Python, "def main():  # entry"),
            vec![("def", Kind::Keyword), ("main", Kind::Name), ("# entry", Kind::Comment)]
        );
        let (_, carry) = line(Language::Python, "doc = \"\"\"start", Carry::Nothing);
        assert_eq!(carry, Carry::TripleQuote(b'"'));
        let (spans, carry) = line(Language::Python, "end\"\"\" if True else None", carry);
        assert_eq!(carry, Carry::Nothing);
        assert_eq!(spans[0], (0..6, Kind::String));
        assert!(spans.contains(&(10..14, Kind::Constant)));
    }

    #[test]
    fn json_keys_differ_from_values() {
        assert_eq!(
            kinds(Language::Json, r#"  "port": 3000, "name": "x", "on": true"#),
            vec![
                ("\"port\"", Kind::Name),
                ("3000", Kind::Number),
                ("\"name\"", Kind::Name),
                ("\"x\"", Kind::String),
                ("\"on\"", Kind::Name),
                ("true", Kind::Constant)
            ]
        );
    }

    #[test]
    fn markdown_headings_code_and_emphasis() {
        assert_eq!(kinds(Language::Markdown, "# Title"), vec![("# Title", Kind::Heading)]);
        assert_eq!(
            kinds(Language::Markdown, "run `npm start` **now**"),
            vec![("`npm start`", Kind::Code), ("**now**", Kind::Emphasis)]
        );
        let (_, carry) = line(Language::Markdown, "```python", Carry::Nothing);
        assert_eq!(carry, Carry::CodeFence);
        let (spans, carry) = line(Language::Markdown, "# not a heading in code", carry);
        assert_eq!(spans[0].1, Kind::Code);
        let (_, carry) = line(Language::Markdown, "```", carry);
        assert_eq!(carry, Carry::Nothing);
    }

    #[test]
    fn odd_input_never_panics_or_splits_characters() {
        for text in ["'", "\"\\", "/*", "`", "é'ü", "0x", "\u{1F600}/", "[a](", "**", "\\"] {
            for language in [
                Language::JavaScript,
                Language::TypeScript,
                Language::Python,
                Language::Json,
                Language::Markdown,
            ] {
                let (spans, _) = line(language, text, Carry::Nothing);
                for (range, _) in spans {
                    assert!(text.get(range.clone()).is_some(), "{language:?} {text:?} {range:?}");
                }
            }
        }
    }
}
