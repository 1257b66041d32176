//! Assertion status (affirmed / negated / uncertain) of the text of radiology reports.
//!
//! A search index must tell "pleural effusion" apart from "no pleural effusion" and
//! "possible pleural effusion". This module splits a report into stretches of text, each
//! with one status, so the indexer can file a term under the status it was written with.
//!
//! Algorithm (NegEx / pyConText style, rules are data in `rules/<lang>.rules`):
//! 1. One Aho-Corasick automaton per rule set finds every trigger, pseudo-trigger and
//!    termination term (ASCII case-insensitively, on word boundaries unless the language
//!    says otherwise); overlapping hits are resolved leftmost-longest, so a pseudo-trigger
//!    such as "no change" hides the "no" inside it.
//! 2. The text is cut into clauses at boundary characters (". ; : ? !" newline ...) and
//!    termination terms ("but", "however", ...).
//! 3. A pre-trigger marks from its start to the end of its clause (or `@max_scope` words),
//!    a post-trigger from the start of its clause to its end, a section trigger up to the
//!    next blank line. Where scopes overlap, uncertain beats negated beats affirmed
//!    ("no definite X", "cannot exclude X" are uncertain).
//! 4. Each clause is emitted as maximal runs of equal status, trimmed to words.

use std::collections::HashMap;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// The status with which a stretch of text is asserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Assertion {
    Affirmed,
    Negated,
    Uncertain,
}

impl Assertion {
    pub fn name(self) -> &'static str {
        match self {
            Assertion::Affirmed => "affirmed",
            Assertion::Negated => "negated",
            Assertion::Uncertain => "uncertain",
        }
    }

    // Higher rank wins where scopes overlap.
    fn rank(self) -> u8 {
        match self {
            Assertion::Affirmed => 0,
            Assertion::Negated => 1,
            Assertion::Uncertain => 2,
        }
    }

    fn from_rank(rank: u8) -> Assertion {
        match rank {
            0 => Assertion::Affirmed,
            1 => Assertion::Negated,
            _ => Assertion::Uncertain,
        }
    }
}

/// A stretch of the text, byte offsets `[start, end)` into the annotated `&str` (on char
/// boundaries), with one status. Spans never cross a sentence/clause boundary; together they
/// cover every word of the text (whitespace/punctuation between spans may be left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub assertion: Assertion,
}

/// Errors from parsing a rule or synonym file.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{origin}:{line}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}: cannot build matcher: {message}")]
    Automaton { origin: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Scope runs forward from the trigger to the end of its clause.
    Pre(Assertion),
    /// Scope runs backward from the trigger to the start of its clause.
    Post(Assertion),
    /// Both directions (e.g. "?" in "? pneumonia" and "pneumonia?").
    Both(Assertion),
    /// Scope runs forward to the next blank line, across clauses (e.g. "indication:").
    Section(Assertion),
    /// Matches only to hide shorter triggers inside it ("no change", "gram negative").
    Pseudo,
    /// Ends every scope, like a clause boundary ("but", "however").
    Terminate,
}

#[derive(Debug, Clone, Copy)]
struct Pattern {
    kind: Kind,
    /// Phrase ended with `*`: matches a word prefix (stems, "observ*" for "observa(n)").
    prefix: bool,
}

/// A parsed rule set for one language. Cheap to share: `Send + Sync`, no interior state.
pub struct Rules {
    matcher: Option<AhoCorasick>,
    patterns: Vec<Pattern>,
    word_boundaries: bool,
    ascii_boundaries: [bool; 128],
    other_boundaries: Vec<char>,
    max_scope: usize,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("patterns", &self.patterns.len())
            .field("word_boundaries", &self.word_boundaries)
            .field("max_scope", &self.max_scope)
            .finish()
    }
}

fn syntax(origin: &str, line: usize, message: impl Into<String>) -> RuleError {
    RuleError::Syntax {
        origin: origin.to_string(),
        line,
        message: message.into(),
    }
}

fn normalise(phrase: &str) -> String {
    let mut out = String::with_capacity(phrase.len());
    for word in phrase.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

fn parse_boundary_token(token: &str) -> Option<char> {
    match token {
        "\\n" => Some('\n'),
        "\\r" => Some('\r'),
        "\\t" => Some('\t'),
        _ => {
            let mut chars = token.chars();
            let c = chars.next()?;
            chars.next().is_none().then_some(c)
        }
    }
}

fn parse_kind(word: &str) -> Option<Kind> {
    use Assertion::{Negated, Uncertain};
    Some(match word {
        "neg-pre" => Kind::Pre(Negated),
        "neg-post" => Kind::Post(Negated),
        "neg-both" => Kind::Both(Negated),
        "neg-section" => Kind::Section(Negated),
        "unc-pre" => Kind::Pre(Uncertain),
        "unc-post" => Kind::Post(Uncertain),
        "unc-both" => Kind::Both(Uncertain),
        "unc-section" => Kind::Section(Uncertain),
        "pseudo" => Kind::Pseudo,
        "term" => Kind::Terminate,
        _ => return None,
    })
}

#[derive(Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    kind: Kind,
}

#[derive(Clone, Copy)]
struct Scope {
    start: usize,
    end: usize,
    rank: u8,
}

/// Per-thread buffers so that `annotate_into` does not allocate once warm.
#[derive(Default)]
struct Scratch {
    hits: Vec<Hit>,
    selected: Vec<Hit>,
    cuts: Vec<(usize, usize)>,
    scopes: Vec<Scope>,
    points: Vec<usize>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

fn char_before(text: &str, at: usize) -> Option<char> {
    text[..at].chars().next_back()
}

fn char_after(text: &str, at: usize) -> Option<char> {
    text[at..].chars().next()
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

impl Rules {
    /// Parse a rule file; errors name the origin and the line number.
    ///
    /// The format is documented at the top of `rules/en.rules`.
    pub fn parse(text: &str, origin: &str) -> Result<Rules, RuleError> {
        let mut word_boundaries = true;
        let mut ascii_boundaries = [false; 128];
        let mut other_boundaries = Vec::new();
        let mut boundaries_set = false;
        let mut max_scope = 0usize;
        let mut phrases: Vec<String> = Vec::new();
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut seen: HashMap<String, (usize, usize)> = HashMap::new();

        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (head, rest) = match line.split_once(char::is_whitespace) {
                Some((h, r)) => (h, r.trim()),
                None => (line, ""),
            };
            if let Some(directive) = head.strip_prefix('@') {
                match directive {
                    "word_boundaries" => {
                        word_boundaries = match rest {
                            "true" => true,
                            "false" => false,
                            _ => return Err(syntax(origin, line_no, "expected true or false")),
                        }
                    }
                    "max_scope" => {
                        max_scope = rest.parse().map_err(|_| {
                            syntax(origin, line_no, "expected a word count (0 = clause end)")
                        })?
                    }
                    "boundaries" => {
                        boundaries_set = true;
                        for token in rest.split_whitespace() {
                            let c = parse_boundary_token(token).ok_or_else(|| {
                                syntax(origin, line_no, format!("not one character: {token:?}"))
                            })?;
                            if c.is_ascii() {
                                ascii_boundaries[c as usize] = true;
                            } else if !other_boundaries.contains(&c) {
                                other_boundaries.push(c);
                            }
                        }
                    }
                    "language" => {}
                    _ => {
                        return Err(syntax(
                            origin,
                            line_no,
                            format!("unknown directive @{directive}"),
                        ))
                    }
                }
                continue;
            }
            let kind = parse_kind(head).ok_or_else(|| {
                syntax(
                    origin,
                    line_no,
                    format!(
                        "unknown rule kind {head:?} (expected neg-pre, neg-post, neg-both, \
                         neg-section, unc-pre, unc-post, unc-both, unc-section, pseudo, term)"
                    ),
                )
            })?;
            let mut phrase = normalise(rest);
            let prefix = phrase.ends_with('*');
            if prefix {
                phrase.pop();
                phrase.truncate(phrase.trim_end().len());
            }
            if phrase.is_empty() {
                return Err(syntax(origin, line_no, "rule has no phrase"));
            }
            // A phrase listed twice is almost always a copy-paste slip that silently
            // changes its direction; make the author pick one (or use *-both).
            if let Some(&(_, first_line)) = seen.get(&phrase) {
                return Err(syntax(
                    origin,
                    line_no,
                    format!("{phrase:?} is already a rule on line {first_line}"),
                ));
            }
            seen.insert(phrase.clone(), (phrases.len(), line_no));
            phrases.push(phrase);
            patterns.push(Pattern { kind, prefix });
        }
        if !boundaries_set {
            for c in ['.', ';', '?', '!', '\n'] {
                ascii_boundaries[c as usize] = true;
            }
        }
        let matcher = if phrases.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&phrases)
                    .map_err(|e| RuleError::Automaton {
                        origin: origin.to_string(),
                        message: e.to_string(),
                    })?,
            )
        };
        Ok(Rules {
            matcher,
            patterns,
            word_boundaries,
            ascii_boundaries,
            other_boundaries,
            max_scope,
        })
    }

    /// The built-in rules for "en" | "es" | "zh"; `None` for other languages.
    pub fn builtin(language: &str) -> Option<&'static Rules> {
        static EN: OnceLock<Rules> = OnceLock::new();
        static ES: OnceLock<Rules> = OnceLock::new();
        static ZH: OnceLock<Rules> = OnceLock::new();
        let (cell, text, origin) = match language {
            "en" => (&EN, include_str!("rules/en.rules"), "rules/en.rules"),
            "es" => (&ES, include_str!("rules/es.rules"), "rules/es.rules"),
            "zh" => (&ZH, include_str!("rules/zh.rules"), "rules/zh.rules"),
            _ => return None,
        };
        Some(cell.get_or_init(|| {
            // The files are compiled in and covered by tests, so failure is a build bug.
            Rules::parse(text, origin).unwrap_or_else(|e| panic!("built-in rules: {e}"))
        }))
    }

    /// Annotate: spans in text order.
    pub fn annotate(&self, text: &str) -> Vec<Span> {
        let mut out = Vec::new();
        self.annotate_into(text, &mut out);
        out
    }

    /// Same as [`Rules::annotate`], appending into a reused Vec.
    pub fn annotate_into(&self, text: &str, out: &mut Vec<Span>) {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.annotate_with(text, out, &mut scratch),
            // Only reachable through re-entrancy; correctness over speed there.
            Err(_) => self.annotate_with(text, out, &mut Scratch::default()),
        });
    }

    fn is_boundary_at(&self, text: &str, at: usize) -> Option<usize> {
        let bytes = text.as_bytes();
        let b = bytes[at];
        if b < 128 {
            if !self.ascii_boundaries[b as usize] {
                return None;
            }
            // Decimal points ("2.5 cm") and abbreviations inside words ("e.g") do not end
            // a sentence.
            if b == b'.'
                && at > 0
                && at + 1 < bytes.len()
                && bytes[at - 1].is_ascii_alphanumeric()
                && bytes[at + 1].is_ascii_alphanumeric()
            {
                return None;
            }
            return Some(1);
        }
        if self.other_boundaries.is_empty() || !text.is_char_boundary(at) {
            return None;
        }
        let c = char_after(text, at)?;
        self.other_boundaries.contains(&c).then(|| c.len_utf8())
    }

    fn annotate_with(&self, text: &str, out: &mut Vec<Span>, s: &mut Scratch) {
        s.hits.clear();
        s.selected.clear();
        s.cuts.clear();
        if text.is_empty() {
            return;
        }

        // 1. Trigger hits, filtered to word boundaries.
        if let Some(matcher) = &self.matcher {
            for m in matcher.find_overlapping_iter(text) {
                let (start, end) = (m.start(), m.end());
                // ASCII-insensitive matching of non-ASCII patterns can still only match
                // whole UTF-8 sequences, but guard anyway: offsets must be char boundaries.
                if !text.is_char_boundary(start) || !text.is_char_boundary(end) {
                    continue;
                }
                let pattern = self.patterns[m.pattern().as_usize()];
                if self.word_boundaries {
                    let first = char_after(text, start).is_some_and(is_word_char);
                    let last = char_before(text, end).is_some_and(is_word_char);
                    if first && char_before(text, start).is_some_and(is_word_char) {
                        continue;
                    }
                    if last && !pattern.prefix && char_after(text, end).is_some_and(is_word_char) {
                        continue;
                    }
                }
                let end = if pattern.prefix {
                    // Extend a stem to the end of its word so the trigger span is whole.
                    end + text[end..]
                        .char_indices()
                        .find(|&(_, c)| !is_word_char(c))
                        .map_or(text.len() - end, |(i, _)| i)
                } else {
                    end
                };
                s.hits.push(Hit {
                    start,
                    end,
                    kind: pattern.kind,
                });
            }
        }
        // Leftmost-longest, non-overlapping.
        s.hits
            .sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut last_end = 0;
        for hit in &s.hits {
            if hit.start >= last_end {
                s.selected.push(*hit);
                last_end = hit.end;
            }
        }

        // 2. Clause cuts: boundary characters (with width) and termination terms (zero
        // width at their start, so the term itself opens the next clause).
        let bytes = text.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            if let Some(width) = self.is_boundary_at(text, at) {
                s.cuts.push((at, at + width));
                at += width;
            } else {
                at += 1;
            }
        }
        let before = s.cuts.len();
        for hit in &s.selected {
            if hit.kind == Kind::Terminate {
                s.cuts.push((hit.start, hit.start));
            }
        }
        if s.cuts.len() > before {
            s.cuts.sort_unstable();
        }
        s.cuts.push((text.len(), text.len()));

        // 3. Walk the clauses, collecting the scopes that touch each.
        let mut clause_start = 0;
        let mut hit_index = 0;
        let mut section: Option<(usize, u8)> = None;
        let mut pending_pre: Option<u8> = None;
        for cut_index in 0..s.cuts.len() {
            let (cut_start, cut_end) = s.cuts[cut_index];
            if cut_start < clause_start {
                continue;
            }
            let (a, b) = (clause_start, cut_start);
            s.scopes.clear();
            if let Some(rank) = pending_pre.take() {
                s.scopes.push(Scope {
                    start: a,
                    end: b,
                    rank,
                });
            }
            if let Some((section_end, rank)) = section {
                if a < section_end {
                    s.scopes.push(Scope {
                        start: a,
                        end: b.min(section_end),
                        rank,
                    });
                } else {
                    section = None;
                }
            }
            while hit_index < s.selected.len() && s.selected[hit_index].start < b {
                let hit = s.selected[hit_index];
                hit_index += 1;
                if hit.start < a {
                    continue;
                }
                let end = hit.end.min(b);
                match hit.kind {
                    Kind::Pre(x) => s.scopes.push(Scope {
                        start: hit.start,
                        end: self.scope_end(text, end, b),
                        rank: x.rank(),
                    }),
                    Kind::Post(x) => s.scopes.push(Scope {
                        start: a,
                        end,
                        rank: x.rank(),
                    }),
                    Kind::Both(x) => s.scopes.push(Scope {
                        start: a,
                        end: b,
                        rank: x.rank(),
                    }),
                    Kind::Section(x) => {
                        let section_end = paragraph_end(text, hit.end);
                        section = Some((section_end, x.rank()));
                        s.scopes.push(Scope {
                            start: hit.start,
                            end: b.min(section_end),
                            rank: x.rank(),
                        });
                    }
                    Kind::Pseudo | Kind::Terminate => {}
                }
            }
            // A trigger that is itself a boundary character ("?") reaches the clauses on
            // either side of it.
            while hit_index < s.selected.len() && s.selected[hit_index].start < cut_end {
                let hit = s.selected[hit_index];
                hit_index += 1;
                match hit.kind {
                    Kind::Post(x) => s.scopes.push(Scope {
                        start: a,
                        end: b,
                        rank: x.rank(),
                    }),
                    Kind::Pre(x) => pending_pre = Some(x.rank()),
                    // "pneumonia?" looks back, "? pneumonia" looks forward; a "?" that
                    // ends a question must not reach into the next sentence.
                    Kind::Both(x) => {
                        if text[a..b].contains(is_word_char) {
                            s.scopes.push(Scope {
                                start: a,
                                end: b,
                                rank: x.rank(),
                            });
                        } else {
                            pending_pre = Some(x.rank());
                        }
                    }
                    _ => {}
                }
            }
            emit_clause(text, a, b, &s.scopes, &mut s.points, out);
            clause_start = cut_end;
        }
    }

    fn scope_end(&self, text: &str, from: usize, clause_end: usize) -> usize {
        if self.max_scope == 0 {
            return clause_end;
        }
        let mut words = 0;
        let mut in_word = false;
        for (i, c) in text[from..clause_end].char_indices() {
            let word = !c.is_whitespace();
            if word && !in_word {
                if words == self.max_scope {
                    return from + i;
                }
                words += 1;
            }
            in_word = word;
        }
        clause_end
    }
}

/// End of the paragraph containing `from`: the first blank line, or the end of the text.
fn paragraph_end(text: &str, from: usize) -> usize {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let mut j = i + 1;
            while j < bytes.len() && matches!(bytes[j], b' ' | b'\t' | b'\r') {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'\n' {
                return i;
            }
        }
        i += 1;
    }
    bytes.len()
}

/// Emit clause `[a, b)` as maximal runs of equal status, trimmed to word characters.
fn emit_clause(
    text: &str,
    a: usize,
    b: usize,
    scopes: &[Scope],
    points: &mut Vec<usize>,
    out: &mut Vec<Span>,
) {
    if a >= b {
        return;
    }
    let first_of_clause = out.len();
    points.clear();
    points.push(a);
    points.push(b);
    for sc in scopes {
        if sc.start > a && sc.start < b {
            points.push(sc.start);
        }
        if sc.end > a && sc.end < b {
            points.push(sc.end);
        }
    }
    points.sort_unstable();
    points.dedup();
    for w in points.windows(2) {
        let (p, q) = (w[0], w[1]);
        let rank = scopes
            .iter()
            .filter(|sc| sc.start <= p && sc.end >= q && sc.start < sc.end)
            .map(|sc| sc.rank)
            .max()
            .unwrap_or(0);
        let piece = &text[p..q];
        let Some(lead) = piece.find(is_word_char) else {
            continue;
        };
        let trail = piece
            .char_indices()
            .rev()
            .find(|&(_, c)| is_word_char(c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let (start, end) = (p + lead, p + trail);
        let assertion = Assertion::from_rank(rank);
        if out.len() > first_of_clause {
            if let Some(last) = out.last_mut() {
                if last.assertion == assertion {
                    last.end = end;
                    continue;
                }
            }
        }
        out.push(Span {
            start,
            end,
            assertion,
        });
    }
}

/// Synonym groups: every way of saying a finding, so a search for one finds the others.
///
/// File format: one group per line, phrases separated by `|`; `#` starts a comment line.
#[derive(Debug, Default)]
pub struct Synonyms {
    groups: Vec<Vec<String>>,
    index: HashMap<String, Vec<usize>>,
}

impl Synonyms {
    pub fn parse(text: &str, origin: &str) -> Result<Synonyms, RuleError> {
        let mut synonyms = Synonyms::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut group: Vec<String> = Vec::new();
            for phrase in line.split('|') {
                let phrase = normalise(phrase);
                if phrase.is_empty() {
                    return Err(syntax(origin, index + 1, "empty phrase in synonym group"));
                }
                if !group.contains(&phrase) {
                    group.push(phrase);
                }
            }
            if group.len() < 2 {
                return Err(syntax(
                    origin,
                    index + 1,
                    "a synonym group needs 2+ phrases",
                ));
            }
            let id = synonyms.groups.len();
            for phrase in &group {
                let ids = synonyms.index.entry(phrase.clone()).or_default();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            synonyms.groups.push(group);
        }
        Ok(synonyms)
    }

    pub fn builtin(language: &str) -> Option<&'static Synonyms> {
        static EN: OnceLock<Synonyms> = OnceLock::new();
        match language {
            "en" => Some(EN.get_or_init(|| {
                Synonyms::parse(
                    include_str!("rules/synonyms.en.txt"),
                    "rules/synonyms.en.txt",
                )
                .unwrap_or_else(|e| panic!("built-in synonyms: {e}"))
            })),
            _ => None,
        }
    }

    /// Every way of saying `phrase` (lower-cased, whitespace-normalised), the phrase itself
    /// first. A phrase that is in no synonym group gives just itself.
    pub fn variants(&self, phrase: &str) -> Vec<String> {
        let phrase = normalise(phrase);
        let mut out = vec![phrase.clone()];
        if let Some(ids) = self.index.get(&phrase) {
            for &id in ids {
                for p in &self.groups[id] {
                    if !out.contains(p) {
                        out.push(p.clone());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Assertion::{Affirmed, Negated, Uncertain};

    /// Status of the `nth` occurrence of `word` in `text`; None if no span covers it whole.
    fn status_nth(rules: &Rules, text: &str, word: &str, nth: usize) -> Option<Assertion> {
        let (start, _) = text.match_indices(word).nth(nth).expect("word not in text");
        let end = start + word.len();
        rules
            .annotate(text)
            .into_iter()
            .find(|s| s.start <= start && end <= s.end)
            .map(|s| s.assertion)
    }

    fn status(rules: &Rules, text: &str, word: &str) -> Option<Assertion> {
        status_nth(rules, text, word, 0)
    }

    fn check(lang: &str, text: &str, expected: &[(&str, Assertion)]) {
        let rules = Rules::builtin(lang).unwrap();
        for &(word, want) in expected {
            assert_eq!(
                status(rules, text, word),
                Some(want),
                "{lang}: {word:?} in {text:?}: {:?}",
                rules.annotate(text)
            );
        }
    }

    #[test]
    fn english_negation_and_lists() {
        check(
            "en",
            "No pleural effusion or pneumothorax.",
            &[("effusion", Negated), ("pneumothorax", Negated)],
        );
        check(
            "en",
            "No pneumothorax. Small left pleural effusion.",
            &[("pneumothorax", Negated), ("effusion", Affirmed)],
        );
        check(
            "en",
            "Heart size normal; no effusion but there is a small nodule",
            &[
                ("Heart", Affirmed),
                ("effusion", Negated),
                ("nodule", Affirmed),
            ],
        );
        check(
            "en",
            "The lungs are clear without focal consolidation.",
            &[("lungs", Affirmed), ("consolidation", Negated)],
        );
        check(
            "en",
            "NEGATIVE FOR PNEUMOTHORAX. There is no evidence of edema.",
            &[("PNEUMOTHORAX", Negated), ("edema", Negated)],
        );
        check(
            "en",
            "The costophrenic angles are free of fluid.",
            &[("fluid", Negated)],
        );
    }

    #[test]
    fn english_post_triggers_and_history() {
        check(
            "en",
            "A pneumothorax is not seen.",
            &[("pneumothorax", Negated)],
        );
        check(
            "en",
            "Effusions are absent. Heart is enlarged.",
            &[("Effusions", Negated), ("enlarged", Affirmed)],
        );
        check(
            "en",
            "The left effusion has resolved.",
            &[("effusion", Negated)],
        );
        check(
            "en",
            "Interval resolution of the right pneumothorax.",
            &[("pneumothorax", Negated)],
        );
        check(
            "en",
            "The nodule is no longer seen.",
            &[("nodule", Negated)],
        );
        check(
            "en",
            "Pneumonia is not excluded.",
            &[("Pneumonia", Uncertain)],
        );
    }

    #[test]
    fn english_uncertainty_and_precedence() {
        check(
            "en",
            "Possible small pleural effusion.",
            &[("effusion", Uncertain)],
        );
        check(
            "en",
            "Cannot exclude early pneumonia.",
            &[("pneumonia", Uncertain)],
        );
        check(
            "en",
            "Pneumonia cannot be excluded.",
            &[("Pneumonia", Uncertain)],
        );
        check(
            "en",
            "No definite consolidation.",
            &[("consolidation", Uncertain)],
        );
        check(
            "en",
            "Opacity may represent atelectasis.",
            &[("Opacity", Affirmed), ("atelectasis", Uncertain)],
        );
        check(
            "en",
            "Atelectasis versus infiltrate.",
            &[("Atelectasis", Uncertain), ("infiltrate", Uncertain)],
        );
        check(
            "en",
            "Findings suspicious for malignancy.",
            &[("malignancy", Uncertain)],
        );
        check(
            "en",
            "Evaluate for pneumothorax",
            &[("pneumothorax", Uncertain)],
        );
        check("en", "? pneumonia", &[("pneumonia", Uncertain)]);
        check(
            "en",
            "Pneumonia? Heart normal.",
            &[("Pneumonia", Uncertain), ("Heart", Affirmed)],
        );
        check(
            "en",
            "INDICATION: cough, r/o effusion\n\nFINDINGS: Small effusion.",
            &[("cough", Uncertain)],
        );
        let en = Rules::builtin("en").unwrap();
        let text = "INDICATION: pleural effusion\n\nFINDINGS: Small pleural effusion.";
        assert_eq!(status_nth(en, text, "effusion", 0), Some(Uncertain));
        assert_eq!(status_nth(en, text, "effusion", 1), Some(Affirmed));
    }

    #[test]
    fn english_pseudo_triggers_and_word_boundaries() {
        check(
            "en",
            "No change in the small left effusion.",
            &[("effusion", Affirmed)],
        );
        check(
            "en",
            "No significant change in cardiomegaly.",
            &[("cardiomegaly", Affirmed)],
        );
        check(
            "en",
            "Gram negative bacteria on culture.",
            &[("bacteria", Affirmed)],
        );
        check(
            "en",
            "Not only effusion but also edema.",
            &[("effusion", Affirmed)],
        );
        // "no" inside "nodule" / "not" inside "notable" must not trigger.
        check(
            "en",
            "Notable nodule in the right apex.",
            &[("nodule", Affirmed), ("apex", Affirmed)],
        );
        check(
            "en",
            "Nodular opacity. Cannot exclude mass.",
            &[("Nodular", Affirmed), ("mass", Uncertain)],
        );
        // A decimal point does not end the clause.
        check("en", "No 2.5 cm nodule.", &[("nodule", Negated)]);
    }

    #[test]
    fn spanish_stemmed_and_plain() {
        check(
            "es",
            "sin hallazg patolog .",
            &[("hallazg", Negated), ("patolog", Negated)],
        );
        check(
            "es",
            " no se observ derram pleural . cardiomegali .",
            &[("derram", Negated), ("cardiomegali", Affirmed)],
        );
        check(
            "es",
            "No se observa derrame pleural. Cardiomegalia.",
            &[("derrame", Negated), ("Cardiomegalia", Affirmed)],
        );
        check(
            "es",
            "posibl neumoni basal derech .",
            &[("neumoni", Uncertain)],
        );
        check(
            "es",
            "no se puede descartar neumonía.",
            &[("neumonía", Uncertain)],
        );
        check(
            "es",
            "derram pleural derech sin cambi respect estudi previ .",
            &[("derram", Affirmed)],
        );
        check(
            "es",
            "Ausencia de derrame pleural. Nódulo pulmonar.",
            &[("derrame", Negated), ("Nódulo", Affirmed)],
        );
        check(
            "es",
            "se descart neumotorax . sen costofren libr .",
            &[("neumotorax", Negated), ("costofren", Negated)],
        );
        check(
            "es",
            "nodul pulmonar sugest de metastasis .",
            &[("nodul", Affirmed), ("metastasis", Uncertain)],
        );
    }

    #[test]
    fn chinese_substrings_and_clauses() {
        check(
            "zh",
            "双肺未见明显实变，心影增大。",
            &[("实变", Negated), ("心影增大", Affirmed)],
        );
        check("zh", "无胸腔积液。", &[("胸腔积液", Negated)]);
        check(
            "zh",
            "右肺结节，考虑炎性病变。",
            &[("结节", Affirmed), ("炎性", Uncertain)],
        );
        check(
            "zh",
            "不除外肺炎。肺水肿。",
            &[("肺炎", Uncertain), ("肺水肿", Affirmed)],
        );
        check("zh", "肺炎不除外", &[("肺炎", Uncertain)]);
        check("zh", "胸腔积液较前无明显变化。", &[("胸腔积液", Affirmed)]);
        check(
            "zh",
            "没有气胸，但有少量积液",
            &[("气胸", Negated), ("积液", Affirmed)],
        );
    }

    /// Spans are ordered, disjoint, on char boundaries, inside one clause, and every
    /// word character of the text lies in some span.
    fn assert_well_formed(rules: &Rules, text: &str) {
        let spans = rules.annotate(text);
        let mut last_end = 0;
        for s in &spans {
            assert!(s.start < s.end && s.end <= text.len(), "{s:?} in {text:?}");
            assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
            assert!(s.start >= last_end, "overlap {spans:?} in {text:?}");
            assert!(
                !text[s.start..s.end].contains(['\n', ';', '!']),
                "{s:?} crosses a boundary in {text:?}"
            );
            last_end = s.end;
        }
        let mut next = 0;
        for (i, c) in text.char_indices() {
            if c.is_alphanumeric() {
                while next < spans.len() && spans[next].end <= i {
                    next += 1;
                }
                assert!(
                    next < spans.len() && spans[next].start <= i,
                    "{c:?} at {i} uncovered in {text:?}"
                );
            }
        }
        let mut reused = vec![Span {
            start: 0,
            end: 0,
            assertion: Affirmed,
        }];
        rules.annotate_into(text, &mut reused);
        assert_eq!(&reused[1..], &spans[..], "annotate_into must append");
    }

    #[test]
    fn never_panics_and_spans_are_well_formed() {
        let mut samples: Vec<String> = [
            "",
            " ",
            "...;;;!!??",
            "\n\n\n",
            "no",
            "No.",
            "?",
            "¿neumonía?",
            "ÑO ñandú — no émoji 🫁 effusion 🫁.",
            "无",
            "。，；",
            "INDICATION:",
            "indication: no",
            "a.b.c 1.2.3 no.no",
            "no\u{0301}dule no\u{00a0}effusion",
            "but however which no but",
            "sin cambi",
            "no se observ",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Pseudo-random strings from a pool of tricky characters (deterministic LCG).
        let pool: Vec<char> = "no t.;:?!\n ,éñ无未见可能，。？😀abcXYZ0123-/"
            .chars()
            .collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..300 {
            let mut s = String::new();
            for _ in 0..(seed % 40) {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                s.push(pool[(seed >> 33) as usize % pool.len()]);
            }
            samples.push(s);
        }
        samples.push("No pleural effusion. Possible nodule; ".repeat(20_000));
        for lang in ["en", "es", "zh"] {
            let rules = Rules::builtin(lang).unwrap();
            for s in &samples {
                assert_well_formed(rules, s);
            }
        }
        assert!(Rules::builtin("en").unwrap().annotate("").is_empty());
        assert!(Rules::builtin("en").unwrap().annotate(" ... ; ").is_empty());
        assert!(Rules::builtin("fr").is_none());
    }

    #[test]
    fn spans_stop_at_clause_boundaries() {
        let rules = Rules::builtin("en").unwrap();
        let text = "No effusion. No pneumothorax.";
        let spans = rules.annotate(text);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert_eq!(&text[spans[0].start..spans[0].end], "No effusion");
        assert_eq!(&text[spans[1].start..spans[1].end], "No pneumothorax");
        assert!(spans.iter().all(|s| s.assertion == Negated));
        assert_eq!(Negated.name(), "negated");
        assert_eq!(Affirmed.name(), "affirmed");
        assert_eq!(Uncertain.name(), "uncertain");
    }

    #[test]
    fn custom_rules_and_errors() {
        let rules = Rules::parse(
            "# test\n@word_boundaries true\n@boundaries . \\n\n@max_scope 2\nneg-pre nix\nunc-post maybe\nterm yet\nneg-pre stem*\n",
            "test.rules",
        )
        .unwrap();
        let text = "nix one two three. four maybe. nix a yet bee";
        assert_eq!(status(&rules, text, "two"), Some(Negated));
        assert_eq!(status(&rules, text, "three"), Some(Affirmed));
        assert_eq!(status(&rules, text, "four"), Some(Uncertain));
        assert_eq!(status(&rules, text, "bee"), Some(Affirmed));
        assert_eq!(status(&rules, "stemming x", "x"), Some(Negated));

        let err = Rules::parse("neg-pre no\n\nbogus thing\n", "x.rules").unwrap_err();
        assert!(err.to_string().starts_with("x.rules:3:"), "{err}");
        let err = Rules::parse("neg-pre no\nunc-pre No\n", "y.rules").unwrap_err();
        assert!(err.to_string().starts_with("y.rules:2:"), "{err}");
        let err = Rules::parse("@max_scope lots\n", "z.rules").unwrap_err();
        assert!(err.to_string().starts_with("z.rules:1:"), "{err}");
        assert!(Rules::parse("@nonsense 1\n", "w.rules").is_err());
        assert!(Rules::parse("neg-pre\n", "v.rules").is_err());
        // A rule set with no rules still annotates (everything affirmed).
        let empty = Rules::parse("# nothing\n", "empty").unwrap();
        assert_eq!(status(&empty, "no effusion", "effusion"), Some(Affirmed));
    }

    #[test]
    fn synonyms() {
        let syn = Synonyms::builtin("en").unwrap();
        let v = syn.variants("  Cardiomegaly ");
        assert_eq!(v[0], "cardiomegaly");
        assert!(v.contains(&"enlarged heart".to_string()));
        assert!(v.contains(&"cardiac enlargement".to_string()));
        let v = syn.variants("Pleural   Effusion");
        assert_eq!(v[0], "pleural effusion");
        assert!(v.contains(&"pleural fluid".to_string()));
        assert_eq!(
            syn.variants("Situs Inversus"),
            vec!["situs inversus".to_string()]
        );
        let custom = Synonyms::parse("# c\na | b\nb | c\n", "s.txt").unwrap();
        assert_eq!(custom.variants("b"), vec!["b", "a", "c"]);
        assert_eq!(custom.variants("a"), vec!["a", "b"]);
        let err = Synonyms::parse("a | b\nlonely\n", "s.txt").unwrap_err();
        assert!(err.to_string().starts_with("s.txt:2:"), "{err}");
        assert!(Synonyms::builtin("xx").is_none());
    }

    #[test]
    fn rules_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Rules>();
        assert_send_sync::<Synonyms>();
    }
}
