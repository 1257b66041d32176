//! Text analysis per language: how report text and query terms become index terms.
//!
//! - `en`: words, lower-cased, Snowball English stemming ("effusions" → "effus").
//! - `es`: the same with ASCII folding ("neumotórax" = "neumotorax") and Snowball Spanish.
//!   PadChest's reports are already stemmed; stemming a stem again is stable, and queries go
//!   through the same analyzer, so both meet.
//! - `zh`: jieba word segmentation (tantivy-jieba), since Chinese has no spaces.

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer, TokenizerManager,
};

/// Tokens longer than this are noise (base64, hashes) and are dropped.
const MAX_TOKEN_BYTES: usize = 40;

/// The analyzer registered under a language code.
pub fn analyzer(language: &str) -> Option<TextAnalyzer> {
    Some(match language {
        "en" => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser)
            .filter(Stemmer::new(Language::English))
            .build(),
        "es" => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .filter(Stemmer::new(Language::Spanish))
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
