//! Text analysis per language: how report text and query terms become index terms.
//!
//! - `en`: words, lower-cased, Snowball English stemming ("effusions" → "effus").
//! - `es`: the same with ASCII folding ("neumotórax" = "neumotorax") and Snowball Spanish.
//!   PadChest's reports are already stemmed; stemming a stem again is stable, and queries go
//!   through the same analyzer, so both meet.
//! - `zh`: jieba word segmentation (tantivy-jieba), since Chinese has no spaces.
//!
//! Everything after word splitting (lower-casing, folding, stemming) goes through
//! [`MemoWords`]: report vocabularies are small and every word recurs thousands of times,
//! so each distinct word is normalized once per analyzer.

use foldhash::HashMap;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer,
    Stemmer, TextAnalyzer, Token, TokenFilter, TokenStream, Tokenizer, TokenizerManager,
};

/// Tokens longer than this are noise (base64, hashes) and are dropped.
const MAX_TOKEN_BYTES: usize = 40;

/// What one word becomes in a language (`None`: no per-word normalization past
/// lower-casing, which the caller applies itself).
fn word_filters(language: &str) -> Option<TextAnalyzer> {
    let word = TextAnalyzer::builder(RawTokenizer::default()).filter(LowerCaser);
    Some(match language {
        "en" => word.filter(Stemmer::new(Language::English)).build(),
        "es" => word
            .filter(AsciiFoldingFilter)
            .filter(Stemmer::new(Language::Spanish))
            .build(),
        _ => return None,
    })
}

/// The analyzer registered under a language code.
pub fn analyzer(language: &str) -> Option<TextAnalyzer> {
    Some(match language {
        "en" | "es" => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(MemoWords::new(word_filters(language)?))
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

/// Distinct words remembered per analyzer; past this, further new words are normalized
/// each time they occur (a bound on memory for unusual corpora, not on correctness).
const MEMO_WORDS: usize = 50_000;

/// A per-word analyzer (lower-casing, folding, Snowball stemming: tantivy's own filters
/// behind a whole-text tokenizer), applied to each token, remembering each word's result.
///
/// These filters were a third of the CPU time of indexing PadChest, mostly repeating
/// work on the same few thousand words. On a miss the word goes through the filters
/// themselves, so the terms are the ones the plain filter chain gives.
#[derive(Clone)]
pub struct MemoWords {
    word: TextAnalyzer,
}

impl MemoWords {
    pub fn new(word: TextAnalyzer) -> Self {
        Self { word }
    }
}

impl TokenFilter for MemoWords {
    type Tokenizer<T: Tokenizer> = MemoWordsFilter<T>;

    fn transform<T: Tokenizer>(self, inner: T) -> MemoWordsFilter<T> {
        MemoWordsFilter {
            inner,
            word: self.word,
            memo: HashMap::default(),
        }
    }
}

#[derive(Clone)]
pub struct MemoWordsFilter<T> {
    inner: T,
    word: TextAnalyzer,
    memo: HashMap<String, String>,
}

impl<T: Tokenizer> Tokenizer for MemoWordsFilter<T> {
    type TokenStream<'a> = MemoWordsStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        MemoWordsStream {
            tail: self.inner.token_stream(text),
            word: &mut self.word,
            memo: &mut self.memo,
        }
    }
}

pub struct MemoWordsStream<'a, S> {
    tail: S,
    word: &'a mut TextAnalyzer,
    memo: &'a mut HashMap<String, String>,
}

impl<S: TokenStream> TokenStream for MemoWordsStream<'_, S> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if let Some(term) = self.memo.get(token.text.as_str()) {
            token.text.clear();
            token.text.push_str(term);
            return true;
        }
        let term = {
            let mut one = self.word.token_stream(&token.text);
            // The raw tokenizer yields the whole word as one token, and none of the
            // filters drops a token.
            if one.advance() {
                one.token().text.clone()
            } else {
                token.text.clone()
            }
        };
        let word = std::mem::replace(&mut token.text, term);
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

    /// The memo must give exactly what tantivy's filter chain gives, on first sight of a
    /// word and on every later one, in both languages that normalize words.
    #[test]
    fn memo_words_give_the_plain_filter_chains_terms() {
        let plain = |language: &str| {
            let b = TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
                .filter(LowerCaser);
            match language {
                "en" => b.filter(Stemmer::new(Language::English)).build(),
                _ => b
                    .filter(AsciiFoldingFilter)
                    .filter(Stemmer::new(Language::Spanish))
                    .build(),
            }
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
                "en",
                "Small left Pleural EFFUSIONS. No pleural effusion; effusions resolved, nodules Nodule nodular running runs ran",
                "effus",
            ),
            (
                "es",
                "Derrame pleural derrames PLEURALES, cardiomegalia cardiomegalias nódulo NÓDULOS nodulos pulmonares pulmón",
                "nodul",
            ),
        ];
        for (language, text, a_term) in texts {
            let (mut p, mut m) = (plain(language), analyzer(language).unwrap());
            let expected = all(&mut p, text);
            assert!(expected.iter().any(|(w, ..)| w == a_term), "{expected:?}");
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
