//! From a user's query string to a tantivy query.
//!
//! The syntax is tantivy's query language: terms, `"quoted phrases"`, `AND` / `OR` / `NOT`
//! (and `+` / `-`), parentheses, `field:term` for `title`, `indication`, `comparison`,
//! `findings`, `impression`, `text` (and `affirmed`, `negated`, `uncertain`), and `^boost`.
//! medlake adds, on top:
//! - words are joined by AND unless an operator says otherwise, as clinicians expect;
//! - `term~1` / `term~2` is a fuzzy term (edit distance 1 or 2), for misspelt reports;
//! - `a AND NOT b` means `a -b` (tantivy alone reads it as a clause with nothing positive);
//! - a phrase, or a whole query of plain words, that the synonym file knows is searched
//!   with all its variants ("cardiomegaly" also finds "enlarged heart").
//!
//! With an assertion option, unprefixed terms search the words in that status only.

use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, QueryParser,
};
use tantivy::query_grammar::{Delimiter, UserInputAst, UserInputLeaf, UserInputLiteral};
use tantivy::schema::Field;
use tantivy::Term;

use super::assertion::Synonyms;
use super::{LangIndex, SearchRequest};
use crate::error::{Error, Result};

/// The query to run, and the same query over `text` for snippets.
pub struct Built {
    pub query: Box<dyn Query>,
    pub snippet_query: Box<dyn Query>,
}

pub fn build(li: &LangIndex, req: &SearchRequest) -> Result<Built> {
    let f = &li.fields;
    let default = match (&req.default_field, req.assertion) {
        (_, Some(a)) => f.assertion(a),
        (Some(name), None) => li
            .index
            .schema()
            .get_field(name)
            .map_err(|_| Error::Invalid(format!("report search: no field {name:?}")))?,
        (None, None) => f.text,
    };
    let synonyms = Synonyms::builtin(&li.language);
    let text = whole_query_phrase(&req.query, synonyms);
    let ast = tantivy::query_grammar::parse_query(&text).map_err(|_| {
        Error::Invalid(format!(
            "report search: cannot parse {:?} (terms, \"phrases\", AND/OR/NOT, field:term, term~1)",
            req.query
        ))
    })?;
    let b = Builder { li, synonyms };
    let query = b.convert(ast.clone(), default)?;
    let snippet_query = b.convert(ast, f.text)?;
    Ok(Built {
        query,
        snippet_query,
    })
}

/// A query of plain words only that names a synonym group is that group's phrase.
fn whole_query_phrase(q: &str, synonyms: Option<&Synonyms>) -> String {
    let plain = q.split_whitespace().all(|w| {
        w.chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '\'')
    }) && !q
        .split_whitespace()
        .any(|w| matches!(w, "AND" | "OR" | "NOT"));
    if plain && q.split_whitespace().count() > 1 {
        if let Some(s) = synonyms {
            if s.variants(q).len() > 1 {
                return format!("\"{}\"", q.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
    }
    q.to_string()
}

struct Builder<'a> {
    li: &'a LangIndex,
    synonyms: Option<&'a Synonyms>,
}

impl Builder<'_> {
    fn parser(&self, default: Field) -> QueryParser {
        let mut p = QueryParser::for_index(&self.li.index, vec![default]);
        p.set_conjunction_by_default();
        p
    }

    fn leaf(&self, leaf: UserInputLeaf, default: Field) -> Result<Box<dyn Query>> {
        self.parser(default)
            .build_query_from_user_input_ast(UserInputAst::Leaf(Box::new(leaf)))
            .map_err(|e| Error::Invalid(format!("report search: {e}")))
    }

    fn convert(&self, ast: UserInputAst, default: Field) -> Result<Box<dyn Query>> {
        match ast {
            UserInputAst::Clause(items) => {
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for (occur, sub) in items {
                    let occur = match occur {
                        Some(tantivy::query_grammar::Occur::Should) => Occur::Should,
                        Some(tantivy::query_grammar::Occur::MustNot) => Occur::MustNot,
                        Some(tantivy::query_grammar::Occur::Must) | None => Occur::Must,
                    };
                    // `a AND NOT b` arrives as a sub-clause holding only `-b`: lift it.
                    if let UserInputAst::Clause(inner) = &sub {
                        if !inner.is_empty()
                            && inner
                                .iter()
                                .all(|(o, _)| *o == Some(tantivy::query_grammar::Occur::MustNot))
                        {
                            for (_, n) in inner.clone() {
                                clauses.push((Occur::MustNot, self.convert(n, default)?));
                            }
                            continue;
                        }
                    }
                    clauses.push((occur, self.convert(sub, default)?));
                }
                if clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Ok(Box::new(BooleanQuery::new(clauses)))
            }
            UserInputAst::Boost(inner, boost) => Ok(Box::new(BoostQuery::new(
                self.convert(*inner, default)?,
                boost.into_inner() as f32,
            ))),
            UserInputAst::Leaf(leaf) => match *leaf {
                UserInputLeaf::Literal(lit) => self.literal(lit, default),
                other => self.leaf(other, default),
            },
        }
    }

    fn field_of(&self, lit: &UserInputLiteral, default: Field) -> Result<Field> {
        match &lit.field_name {
            None => Ok(default),
            Some(name) => self.li.index.schema().get_field(name).map_err(|_| {
                Error::Invalid(format!(
                    "report search: no field {name:?}; fields are title, indication, \
                     comparison, findings, impression, text, affirmed, negated, uncertain"
                ))
            }),
        }
    }

    fn literal(&self, lit: UserInputLiteral, default: Field) -> Result<Box<dyn Query>> {
        let field = self.field_of(&lit, default)?;
        // tantivy's grammar reads `word~1` as one word; the `~n` makes it fuzzy here.
        if lit.delimiter == Delimiter::None && !lit.phrase.contains(char::is_whitespace) {
            if let Some((word, d)) = lit.phrase.rsplit_once('~') {
                if let (false, Ok(d @ 1..=2)) = (word.is_empty(), d.parse::<u32>()) {
                    return self.fuzzy(field, word, d);
                }
            }
        }
        if let Some(s) = self.synonyms {
            let variants = s.variants(&lit.phrase);
            if variants.len() > 1 {
                let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for v in variants {
                    let mut l = lit.clone();
                    l.delimiter = if v.contains(' ') {
                        Delimiter::DoubleQuotes
                    } else {
                        Delimiter::None
                    };
                    l.phrase = v;
                    any.push((
                        Occur::Should,
                        self.leaf(UserInputLeaf::Literal(l), default)?,
                    ));
                }
                return Ok(Box::new(BooleanQuery::new(any)));
            }
        }
        self.leaf(UserInputLeaf::Literal(lit), default)
    }

    fn fuzzy(&self, field: Field, word: &str, distance: u32) -> Result<Box<dyn Query>> {
        let mut analyzer = self
            .li
            .index
            .tokenizer_for_field(field)
            .map_err(|e| Error::Invalid(format!("report search: {e}")))?;
        let mut stream = analyzer.token_stream(word);
        let mut terms = Vec::new();
        while let Some(t) = stream.next() {
            terms.push(t.text.clone());
        }
        let d = distance.min(2) as u8;
        let mut all: Vec<(Occur, Box<dyn Query>)> = terms
            .into_iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(FuzzyTermQuery::new(
                    Term::from_field_text(field, &t),
                    d,
                    true,
                ));
                (Occur::Must, q)
            })
            .collect();
        Ok(match all.len() {
            0 => Box::new(BooleanQuery::new(Vec::new())),
            1 => all.pop().expect("one").1,
            _ => Box::new(BooleanQuery::new(all)),
        })
    }
}
