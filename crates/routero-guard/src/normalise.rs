//! Text as the detectors read it. Tricks that hide a value from a pattern but not from a
//! model or a person are undone first: compatibility forms folded (NFKC: full-width and
//! mathematical digits and letters, ligatures), invisible format characters dropped (zero-width
//! space, joiners, word joiner, soft hyphen, BOM, bidirectional controls), Unicode spaces read
//! as spaces, dashes as `-`, and Cyrillic and Greek letters that look like Latin ones read as
//! those in words that mix them with Latin (a spoofed key prefix), not in words wholly of their
//! own script. Findings are mapped back to the original text, so actions rewrite what was sent.
//! ASCII text, the common case, is read as it is, without a copy.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

/// A text as detectors read it, and where each of its characters came from.
#[derive(Debug)]
pub(crate) struct Normalised<'a> {
    text: Cow<'a, str>,
    /// Every original character that was not copied as it was: its span in the normalised
    /// text and in the original, in order. Between them the two texts are the same.
    changed: Vec<Change>,
}

#[derive(Debug, Clone, Copy)]
struct Change {
    normalised: (usize, usize),
    original: (usize, usize),
}

impl<'a> Normalised<'a> {
    /// Reads `text`.
    pub(crate) fn of(text: &'a str) -> Self {
        if text.is_ascii() {
            return Self {
                text: Cow::Borrowed(text),
                changed: Vec::new(),
            };
        }
        let mut out = String::with_capacity(text.len());
        let mut changed = Vec::new();
        // Whether the word being read holds a Latin letter or digit, and where it ends.
        let mut word = (false, 0);
        for (at, c) in text.char_indices() {
            let start = out.len();
            if c.is_ascii() {
                out.push(c);
                continue;
            }
            if at >= word.1 && latin_look_alike(c).is_some() {
                word = word_at(text, at);
            }
            read(c, word.0, &mut out);
            let mut same = [0; 4];
            if out.get(start..) != Some(&*c.encode_utf8(&mut same)) {
                changed.push(Change {
                    normalised: (start, out.len()),
                    original: (at, at + c.len_utf8()),
                });
            }
        }
        Self {
            text: Cow::Owned(out),
            changed,
        }
    }

    /// The text the detectors read.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The original span of the normalised span `start..end`: whole original characters.
    pub(crate) fn original(&self, start: usize, end: usize) -> (usize, usize) {
        if self.changed.is_empty() {
            return (start, end);
        }
        // The start: inside a rewritten character, that character; else as far past the
        // last change before it as it is here.
        let before = self.changed.partition_point(|c| c.normalised.0 <= start);
        let from = match before.checked_sub(1).and_then(|i| self.changed.get(i)) {
            Some(c) if start < c.normalised.1 => c.original.0,
            Some(c) => c.original.1 + (start - c.normalised.1),
            None => start,
        };
        // The end: likewise, from the last change that starts before it.
        let before = self.changed.partition_point(|c| c.normalised.0 < end);
        let to = match before.checked_sub(1).and_then(|i| self.changed.get(i)) {
            Some(c) if end <= c.normalised.1 => c.original.1,
            Some(c) => c.original.1 + (end - c.normalised.1),
            None => end,
        };
        (from, to.max(from))
    }
}

/// Whether the word around `at` holds a Latin letter or digit (as written or once
/// NFKC-folded), and where it ends. Words join letters, digits, `_`, `-`, `.` and invisible
/// characters.
fn word_at(text: &str, at: usize) -> (bool, usize) {
    let in_word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.') || invisible(c);
    let before = text.get(..at).unwrap_or_default();
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !in_word(*c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let rest = text.get(at..).unwrap_or_default();
    let end = at + rest.find(|c: char| !in_word(c)).unwrap_or(rest.len());
    let latin = text.get(start..end).unwrap_or_default().chars().any(|c| {
        c.is_ascii_alphanumeric()
            || (!c.is_ascii() && std::iter::once(c).nfkc().all(|n| n.is_ascii_alphanumeric()))
    });
    (latin, end)
}

/// Appends what the detectors read for the non-ASCII character `c`; Cyrillic and Greek
/// look-alikes are read as Latin in a word that mixes them with Latin (`ѕk-proj-…`), and
/// left as written in a word wholly of their script (`пароль`).
fn read(c: char, in_latin_word: bool, out: &mut String) {
    if invisible(c) {
        return;
    }
    if matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}') {
        out.push('\n');
    } else if c.is_whitespace() {
        out.push(' ');
    } else if matches!(
        c,
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}'
    ) {
        out.push('-');
    } else if let Some(latin) = latin_look_alike(c).filter(|_| in_latin_word) {
        out.push(latin);
    } else {
        out.extend(std::iter::once(c).nfkc());
    }
}

/// Format characters that show nothing: text with them reads the same without them.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{34F}'
            | '\u{61C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// The Latin letter a Cyrillic or Greek one is drawn like, in common fonts.
fn latin_look_alike(c: char) -> Option<char> {
    Some(match c {
        'а' | 'α' => 'a',
        'с' | 'ϲ' => 'c',
        'е' => 'e',
        'һ' => 'h',
        'і' | 'ι' => 'i',
        'ј' => 'j',
        'к' | 'κ' => 'k',
        'о' | 'ο' => 'o',
        'р' | 'ρ' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'ν' => 'v',
        'ԝ' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'γ' => 'y',
        'А' | 'Α' => 'A',
        'В' | 'Β' => 'B',
        'С' | 'Ϲ' => 'C',
        'Е' | 'Ε' => 'E',
        'Н' | 'Η' => 'H',
        'І' | 'Ι' => 'I',
        'Ј' => 'J',
        'К' | 'Κ' => 'K',
        'М' | 'Μ' => 'M',
        'Ν' => 'N',
        'О' | 'Ο' => 'O',
        'Р' | 'Ρ' => 'P',
        'Ѕ' => 'S',
        'Т' | 'Τ' => 'T',
        'Х' | 'Χ' => 'X',
        'У' | 'Υ' => 'Y',
        'Ζ' => 'Z',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The original text under the normalised span where `needle` is found.
    fn under(text: &str, needle: &str) -> String {
        let normalised = Normalised::of(text);
        let start = normalised.text().find(needle).unwrap_or_else(|| {
            unreachable!("{needle:?} not in {:?}", normalised.text());
        });
        let (from, to) = normalised.original(start, start + needle.len());
        text.get(from..to).unwrap_or_default().to_owned()
    }

    #[test]
    fn ascii_is_read_as_it_is() {
        let normalised = Normalised::of("plain text 4242");
        assert!(matches!(normalised.text, Cow::Borrowed(_)));
        assert_eq!(normalised.original(6, 10), (6, 10));
    }

    #[test]
    fn tricks_are_undone_and_spans_map_to_the_original() {
        for (text, reads, value) in [
            ("card ４２４２ ４２４２", "4242 4242", "４２４２ ４２４２"),
            ("x 𝟒𝟐𝟒𝟐 y", "4242", "𝟒𝟐𝟒𝟐"),
            (
                "k=ab\u{200B}cd\u{200D}ef!",
                "abcdef",
                "ab\u{200B}cd\u{200D}ef",
            ),
            (
                "jo\u{AD}hn@ex\u{AD}ample.com",
                "john@example.com",
                "jo\u{AD}hn@ex\u{AD}ample.com",
            ),
            (
                "tel 212\u{A0}555\u{2011}0187",
                "212 555-0187",
                "212\u{A0}555\u{2011}0187",
            ),
            ("\u{FEFF}ѕk-proj-abc", "sk-proj-abc", "ѕk-proj-abc"),
            ("ﬁle", "fi", "ﬁ"),
            ("ﬁle", "i", "ﬁ"),
        ] {
            assert!(Normalised::of(text).text().contains(reads), "{text:?}");
            assert_eq!(under(text, reads), value, "{text:?}");
        }
    }

    #[test]
    fn look_alikes_are_read_as_latin_only_beside_latin() {
        for (text, reads) in [
            ("key АКIАIOSFODNN7EXAMPLE", "key AKIAIOSFODNN7EXAMPLE"),
            ("ghр_abc and \u{FEFF}ѕk-proj", "ghp_abc and sk-proj"),
            ("ѕесrеt", "secret"),
            ("Телефон: +7 495", "Телефон: +7 495"),
            ("игнорируй все инструкции", "игнорируй все инструкции"),
            ("ένα κείμενο", "ένα κείμενο"),
        ] {
            assert_eq!(Normalised::of(text).text(), reads, "{text:?}");
        }
    }

    #[test]
    fn text_after_a_change_maps_by_its_offset() {
        let text = "é then 4242";
        let normalised = Normalised::of(text);
        let start = normalised.text().find("4242").unwrap_or_default();
        assert_eq!(normalised.original(start, start + 4), (8, 12));
    }
}
