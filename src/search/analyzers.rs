//! Text analysis per language: how report text and query terms become index terms.
//!
//! - `en`: words, lower-cased, Snowball English stemming ("effusions" → "effus").
//! - `es`: the same with ASCII folding ("neumotórax" = "neumotorax") and Snowball Spanish.
//!   PadChest's reports are already stemmed; stemming a stem again is stable, and queries go
//!   through the same analyzer, so both meet.
//! - `zh`: jieba word segmentation (tantivy-jieba), since Chinese has no spaces.
//!
//! Stemming goes through [`MemoStemmer`]: report vocabularies are small and every word
//! recurs thousands of times, so each distinct word is stemmed once per analyzer.

use foldhash::HashMap;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer,
    Stemmer, TextAnalyzer, Token, TokenFilter, TokenStream, Tokenizer, TokenizerManager,
};

/// Tokens longer than this are noise (base64, hashes) and are dropped.
const MAX_TOKEN_BYTES: usize = 40;

/// The analyzer registered under a language code.
pub fn analyzer(language: &str) -> Option<TextAnalyzer> {
    Some(match language {
        "en" => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser)
            .filter(MemoStemmer::new(Language::English))
            .build(),
        "es" => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .filter(MemoStemmer::new(Language::Spanish))
            .build(),
        "zh" => TextAnalyzer::builder(tantivy_jieba::JiebaTokenizer::new())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser)
            .build(),
        _ => return None,
    })
}

/// The name under which an index's text fields find their analyzer.
pub fn tokenizer_name(language: &str) -> String {
    format!("medlake_{language}")
}

/// Register a language's analyzer with an index's tokenizers.
pub fn register(manager: &TokenizerManager, language: &str) -> bool {
    match analyzer(language) {
        Some(a) => {
            manager.register(&tokenizer_name(language), a);
            true
        }
        None => false,
    }
}

/// Distinct words remembered per analyzer; past this, further new words are stemmed each
/// time they occur (a bound on memory for unusual corpora, not a limit on correctness).
const MEMO_WORDS: usize = 50_000;

/// tantivy's Snowball [`Stemmer`], remembering each word's stem.
///
/// Stemming was a fifth of the CPU time of indexing PadChest. The stems come from
/// tantivy's own filter (on a miss), so they are the ones a plain `Stemmer` gives.
#[derive(Clone)]
pub struct MemoStemmer {
    language: Language,
}

impl MemoStemmer {
    pub fn new(language: Language) -> Self {
        Self { language }
    }
}

impl TokenFilter for MemoStemmer {
    type Tokenizer<T: Tokenizer> = MemoStemmerFilter<T>;

    fn transform<T: Tokenizer>(self, inner: T) -> MemoStemmerFilter<T> {
        MemoStemmerFilter {
            inner,
            stem_word: TextAnalyzer::builder(RawTokenizer::default())
                .filter(Stemmer::new(self.language))
                .build(),
            memo: HashMap::default(),
        }
    }
}

#[derive(Clone)]
pub struct MemoStemmerFilter<T> {
    inner: T,
    /// One word in, its stem out (tantivy's filter behind a whole-text tokenizer).
    stem_word: TextAnalyzer,
    memo: HashMap<String, String>,
}

impl<T: Tokenizer> Tokenizer for MemoStemmerFilter<T> {
    type TokenStream<'a> = MemoStemmerStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        MemoStemmerStream {
            tail: self.inner.token_stream(text),
            stem_word: &mut self.stem_word,
            memo: &mut self.memo,
        }
    }
}

pub struct MemoStemmerStream<'a, S> {
    tail: S,
    stem_word: &'a mut TextAnalyzer,
    memo: &'a mut HashMap<String, String>,
}

impl<S: TokenStream> TokenStream for MemoStemmerStream<'_, S> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if let Some(stem) = self.memo.get(token.text.as_str()) {
            token.text.clear();
            token.text.push_str(stem);
            return true;
        }
        let stem = {
            let mut one = self.stem_word.token_stream(&token.text);
            // The raw tokenizer yields the whole word as one token, empty words included.
            if one.advance() {
                one.token().text.clone()
            } else {
                token.text.clone()
            }
        };
        let word = std::mem::replace(&mut token.text, stem);
        if self.memo.len() < MEMO_WORDS {
            self.memo.insert(word, token.text.clone());
        }
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(language: &str, text: &str) -> Vec<String> {
        let mut a = analyzer(language).unwrap();
        let mut stream = a.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = stream.next() {
            out.push(t.text.clone());
        }
        out
    }

    #[test]
    fn english_stems_plurals_to_the_same_term() {
        assert_eq!(
            terms("en", "Pleural effusions"),
            terms("en", "pleural EFFUSION")
        );
    }

    /// The memo must give exactly what tantivy's own Stemmer gives, on first sight of a
    /// word and on every later one, in both stemmed languages.
    #[test]
    fn memo_stemmer_gives_tantivys_stems() {
        let plain = |language| {
            TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(LowerCaser)
                .filter(Stemmer::new(language))
                .build()
        };
        let memo = |language| {
            TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(LowerCaser)
                .filter(MemoStemmer::new(language))
                .build()
        };
        let all = |a: &mut TextAnalyzer, text: &str| {
            let mut s = a.token_stream(text);
            let mut out = Vec::new();
            while let Some(t) = s.next() {
                out.push((t.text.clone(), t.offset_from, t.offset_to, t.position));
            }
            out
        };
        let texts = [
            (
                Language::English,
                "Small left pleural effusions. No pleural effusion; effusions resolved, nodules nodule nodular running runs ran",
                "effus",
            ),
            (
                Language::Spanish,
                "derrame pleural derrames pleurales, cardiomegalia cardiomegalias nódulo nodulos pulmonares pulmón",
                "derram",
            ),
        ];
        for (language, text, a_stem) in texts {
            let (mut p, mut m) = (plain(language), memo(language));
            let expected = all(&mut p, text);
            assert!(expected.iter().any(|(w, ..)| w == a_stem), "{expected:?}");
            // Twice through one analyzer: the second pass is served from the memo.
            assert_eq!(all(&mut m, text), expected);
            assert_eq!(all(&mut m, text), expected);
        }
    }

    #[test]
    fn spanish_folds_accents() {
        assert_eq!(terms("es", "neumotórax"), terms("es", "neumotorax"));
    }

    #[test]
    fn chinese_is_segmented_into_words() {
        let t = terms("zh", "右肺结节");
        assert!(t.len() >= 2, "{t:?}");
        assert!(t.iter().any(|w| w == "结节"), "{t:?}");
    }
}
