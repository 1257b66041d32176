//! Scrubbing free text (report text, titles, sections, error messages): the identifiers the
//! lake knows, then generic patterns.
//!
//! 1. Every identifier recorded during DICOM ingest (`_secrets/deidentify.identifiers`) and
//!    the report's own PatientID and AccessionNumber, matched as whole words, ASCII letters
//!    in any case: a PatientID or AccessionNumber becomes its pseudonym (so a report that
//!    names an accession still points at the right study), a name or a name component
//!    `[NAME]`, another ID `[ID]`, a birth date (`19540121`, `1954-01-21`, `01/21/1954`,
//!    `21.01.1954`...) `[DOB]`.
//! 2. Patterns: e-mail addresses `[EMAIL]`, telephone numbers `[PHONE]`, dates `[DATE]`
//!    (numeric, and with month names), the value after a label such as `MRN:`,
//!    `Accession #`, `Patient ID` `[ID]`, the name after `Dr.`, `Mr.`, `Mrs.`, `Ms.`,
//!    `Name:`, `Signed by` `[NAME]`, and any run of six or more digits `[ID]`.
//!
//! What this cannot do: recognize a name the lake has never seen that stands without a title
//! or label ("Smith called"). The scrub is for the identifiers a lake can know; reports
//! from elsewhere should be de-identified at their source as well.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;

use super::{IdKind, Identifier};

/// Known identifiers plus the patterns.
pub struct Scrubber {
    known: Option<AhoCorasick>,
    replacements: Vec<String>,
    patterns: &'static [(Regex, &'static str)],
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("known", &self.replacements.len())
            .finish()
    }
}

/// Whether a known value is long enough to scrub as a word without destroying text: names
/// and name components of 3 or more characters (2 for non-Latin script), IDs of 3 or more
/// characters with a letter or 4 or more digits.
fn scrubbable(kind: IdKind, v: &str) -> bool {
    let n = v.chars().count();
    match kind {
        IdKind::Name => n >= 3 || (n == 2 && !v.is_ascii()),
        IdKind::BirthDate => n == 8,
        IdKind::PatientId | IdKind::Accession | IdKind::OtherId => {
            n >= 4 || (n == 3 && v.chars().any(|c| !c.is_ascii_digit()))
        }
    }
}

/// The spellings of a DA value (`YYYYMMDD`) a text may use.
fn date_spellings(da: &str) -> Vec<String> {
    if da.len() != 8 || !da.bytes().all(|b| b.is_ascii_digit()) {
        return Vec::new();
    }
    let (y, m, d) = (&da[..4], &da[4..6], &da[6..8]);
    let (mu, du) = (m.trim_start_matches('0'), d.trim_start_matches('0'));
    vec![
        da.to_string(),
        format!("{y}-{m}-{d}"),
        format!("{y}/{m}/{d}"),
        format!("{y}.{m}.{d}"),
        format!("{m}/{d}/{y}"),
        format!("{d}/{m}/{y}"),
        format!("{d}.{m}.{y}"),
        format!("{d}-{m}-{y}"),
        format!("{mu}/{du}/{y}"),
        format!("{du}/{mu}/{y}"),
        format!("{du}.{mu}.{y}"),
    ]
}

fn replacement(id: &Identifier) -> String {
    match id.kind {
        IdKind::PatientId | IdKind::Accession if !id.pseudonym.is_empty() => id.pseudonym.clone(),
        IdKind::PatientId | IdKind::Accession | IdKind::OtherId => "[ID]".into(),
        IdKind::Name => "[NAME]".into(),
        IdKind::BirthDate => "[DOB]".into(),
    }
}

fn patterns() -> &'static [(Regex, &'static str)] {
    static P: std::sync::OnceLock<Vec<(Regex, &'static str)>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        const MONTH: &str =
            r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?";
        let specs: Vec<(String, &'static str)> = vec![
            (
                r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}".into(),
                "[EMAIL]",
            ),
            // A label, then its value: the label stays.
            (
                r"(?i)(\b(?:MRN|MR\s*#|medical\s+record(?:\s+(?:number|no\.?|#))?|patient\s+id|accession(?:\s+(?:number|no\.?|#))?|acc\s*#|ssn|social\s+security(?:\s+number)?)\s*[:#]?\s*)[A-Za-z0-9-]*\d[A-Za-z0-9-]*".into(),
                "${1}[ID]",
            ),
            (
                r"((?i:\b(?:patient(?:'s)?\s+name|name|signed\s+by|dictated\s+by|reported\s+by|read\s+by|attending|referring\s+physician)\s*:\s*))\p{Lu}[\p{L}'^-]*(?:[ ,^]+\p{Lu}[\p{L}'-]*){0,3}".into(),
                "${1}[NAME]",
            ),
            (
                r"\b(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?\s+\p{Lu}[\p{L}'-]+(?:\s+\p{Lu}[\p{L}'-]+)?".into(),
                "[NAME]",
            ),
            (
                r"\b(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])\b".into(),
                "[DATE]",
            ),
            (
                r"\b(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|[12]\d|3[01])[-/.](?:(?:19|20)\d{2}|\d{2})\b".into(),
                "[DATE]",
            ),
            (
                r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b".into(),
                "[DATE]",
            ),
            (
                format!(r"(?i)\b{MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}}\b"),
                "[DATE]",
            ),
            (
                format!(r"(?i)\b\d{{1,2}}(?:st|nd|rd|th)?\s+{MONTH},?\s+(?:19|20)\d{{2}}\b"),
                "[DATE]",
            ),
            (
                r"(?:\+?1[-. ]?)?\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b".into(),
                "[PHONE]",
            ),
            (r"\b\d{6,}\b".into(), "[ID]"),
        ];
        specs
            .into_iter()
            .filter_map(|(re, to)| Regex::new(&re).ok().map(|r| (r, to)))
            .collect()
    })
}

/// ASCII letters and digits join words; other characters (CJK included) do not need a
/// boundary.
fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// Whether `text[start..end]` stands as a word: no ASCII letter or digit touches an edge
/// that is itself one.
fn whole_word(text: &str, start: usize, end: usize) -> bool {
    let first = text[start..end].chars().next();
    let last = text[start..end].chars().next_back();
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    let left = !(first.is_some_and(is_word) && before.is_some_and(is_word));
    let right = !(last.is_some_and(is_word) && after.is_some_and(is_word));
    left && right
}

impl Scrubber {
    /// A scrubber for these known identifiers (values too short to scrub safely are left
    /// to the patterns).
    pub fn new(ids: &[Identifier]) -> Scrubber {
        let mut needles: Vec<String> = Vec::new();
        let mut replacements = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            if !scrubbable(id.kind, &id.value) {
                continue;
            }
            let spellings = if id.kind == IdKind::BirthDate {
                date_spellings(&id.value)
            } else {
                vec![id.value.clone()]
            };
            for s in spellings {
                if seen.insert(s.to_ascii_lowercase()) {
                    needles.push(s);
                    replacements.push(replacement(id));
                }
            }
        }
        let known = (!needles.is_empty())
            .then(|| {
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&needles)
                    .ok()
            })
            .flatten();
        Scrubber {
            known,
            replacements,
            patterns: patterns(),
        }
    }

    /// The text with known identifiers (and `own`, the record's own) and patterns replaced.
    pub fn scrub(&self, text: &str, own: &[Identifier]) -> String {
        let mut out: Cow<'_, str> = Cow::Borrowed(text);
        if let Some(ac) = &self.known {
            let mut s = String::with_capacity(text.len());
            let mut at = 0;
            for m in ac.find_iter(text) {
                if !whole_word(text, m.start(), m.end()) {
                    continue;
                }
                s.push_str(&text[at..m.start()]);
                s.push_str(&self.replacements[m.pattern().as_usize()]);
                at = m.end();
            }
            if at > 0 {
                s.push_str(&text[at..]);
                out = Cow::Owned(s);
            }
        }
        for id in own {
            if !scrubbable(id.kind, &id.value) {
                continue;
            }
            out = Cow::Owned(replace_words(&out, &id.value, &replacement(id)));
        }
        for (re, to) in self.patterns {
            if let Cow::Owned(s) = re.replace_all(&out, *to) {
                out = Cow::Owned(s);
            }
        }
        out.into_owned()
    }
}

/// Every whole-word occurrence of `needle` (ASCII case ignored) replaced.
fn replace_words(text: &str, needle: &str, to: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let n = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut from = 0;
    while let Some(i) = lower[from..].find(&n) {
        let start = from + i;
        let end = start + n.len();
        if whole_word(text, start, end) {
            out.push_str(&text[at..start]);
            out.push_str(to);
            at = end;
        }
        from = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: IdKind, v: &str, p: &str) -> Identifier {
        Identifier {
            kind,
            value: v.into(),
            pseudonym: p.into(),
        }
    }

    #[test]
    fn known_identifiers_as_whole_words() {
        let s = Scrubber::new(&[
            id(IdKind::PatientId, "98890234", "PAAAA"),
            id(IdKind::Name, "Doe^Peter", "PAAAA"),
            id(IdKind::Name, "Doe", "PAAAA"),
            id(IdKind::Name, "Peter", "PAAAA"),
            id(IdKind::Name, "山田", "PAAAA"),
            id(IdKind::Accession, "FUJI95706", "ABBBB"),
            id(IdKind::Accession, "7", "ACCCC"),
            id(IdKind::BirthDate, "19400305", ""),
        ]);
        let t = s.scrub(
            "Peter DOE (98890234), born 03/05/1940, acc FUJI95706; Doe^Peter; Doeskin; 7 mm; 山田太郎",
            &[],
        );
        assert_eq!(
            t,
            "[NAME] [NAME] (PAAAA), born [DOB], acc ABBBB; [NAME]; Doeskin; 7 mm; [NAME]太郎"
        );
    }

    #[test]
    fn patterns_and_own_identifiers() {
        let s = Scrubber::new(&[]);
        let t = s.scrub(
            "MRN: 12345 seen by Dr. Gregory House on 2019-03-04 (3/4/2019, March 4, 2019). \
             Call 555-123-4567 or a@b.org. Accession # X99. Ref 1234567. Name: Jane Roe. \
             Own id Q7 and QRS7.",
            &[id(IdKind::PatientId, "QRS7", "PZZZ")],
        );
        assert_eq!(
            t,
            "MRN: [ID] seen by [NAME] on [DATE] ([DATE], [DATE]). \
             Call [PHONE] or [EMAIL]. Accession # [ID]. Ref [ID]. Name: [NAME]. \
             Own id Q7 and PZZZ."
        );
        // Nothing to scrub: unchanged.
        assert_eq!(
            s.scrub("No pleural effusion. Heart size 12 cm.", &[]),
            "No pleural effusion. Heart size 12 cm."
        );
        assert_eq!(s.scrub("", &[]), "");
    }
}
