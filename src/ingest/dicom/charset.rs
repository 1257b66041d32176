//! Text in data sets that switch character sets with ISO 2022 escape sequences.
//!
//! Japanese and Korean archives write names such as `Yamada^Tarou=山田^太郎=やまだ^たろう`
//! with SpecificCharacterSet `\ISO 2022 IR 87` or `\ISO 2022 IR 149`: several character
//! sets in one value, switched by escape sequences (PS3.5 §6.1.2.5). dicom-rs 0.10 decodes
//! a data set with the first character set only and leaves the escapes in the text, so
//! medlake decodes such values itself, from their raw bytes, with the decoders of
//! `encoding_rs`:
//!
//! - G0 (bytes below 0x80): ASCII, JIS X 0201 Romaji, JIS X 0208 and JIS X 0212 (two bytes);
//! - G1 (bytes from 0x80): JIS X 0201 Katakana, KS X 1001, GB 2312, and the ISO 8859 parts.
//!
//! The state returns to the initial character sets at every delimiter of a value: `^` and
//! `=` in person names, and control characters in text; each of several values (`\`)
//! starts afresh.

use dicom_core::header::Header as _;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, VR};
use dicom_object::InMemDicomObject;
use encoding_rs::Encoding;

/// The values of SpecificCharacterSet (0008,0005), as written.
pub fn declared(obj: &InMemDicomObject) -> Vec<String> {
    obj.get(dicom_dictionary_std::tags::SPECIFIC_CHARACTER_SET)
        .and_then(|e| e.to_multi_str().ok().map(|v| v.to_vec()))
        .map(|v| v.iter().map(|s| s.trim().to_string()).collect())
        .unwrap_or_default()
}

/// Whether the data set uses code extensions, which dicom-rs does not decode.
pub fn uses_code_extensions(values: &[String]) -> bool {
    values.len() > 1 || values.iter().any(|v| v.starts_with("ISO 2022"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G0 {
    Ascii,
    JisRoman,
    Jis0208,
    Jis0212,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G1 {
    None,
    Katakana,
    Ksx1001,
    Gb2312,
    Single(&'static Encoding),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    g0: G0,
    g1: G1,
}

/// The G1 set a defined term of SpecificCharacterSet designates.
fn g1_of(term: &str) -> G1 {
    use encoding_rs::*;
    let number = term.rsplit(' ').next().unwrap_or("");
    match number {
        "13" => G1::Katakana,
        "149" => G1::Ksx1001,
        "58" => G1::Gb2312,
        "100" => G1::Single(WINDOWS_1252),
        "101" => G1::Single(ISO_8859_2),
        "109" => G1::Single(ISO_8859_3),
        "110" => G1::Single(ISO_8859_4),
        "144" => G1::Single(ISO_8859_5),
        "127" => G1::Single(ISO_8859_6),
        "126" => G1::Single(ISO_8859_7),
        "138" => G1::Single(ISO_8859_8),
        "148" => G1::Single(WINDOWS_1254),
        "166" => G1::Single(WINDOWS_874),
        _ => G1::None,
    }
}

/// The state at the start of a value: what the first value of SpecificCharacterSet says.
fn initial(values: &[String]) -> State {
    let first = values.first().map(String::as_str).unwrap_or("");
    State {
        g0: if first.ends_with(" 13") {
            G0::JisRoman
        } else {
            G0::Ascii
        },
        g1: g1_of(first),
    }
}

fn decode_with(enc: &'static Encoding, bytes: &[u8], out: &mut String) {
    let (text, _) = enc.decode_without_bom_handling(bytes);
    out.push_str(&text);
}

/// Decode one value's raw bytes.
pub fn decode(bytes: &[u8], values: &[String], person_name: bool) -> String {
    let start = initial(values);
    let mut state = start;
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0x1B {
            let rest = &bytes[i + 1..];
            let (len, change): (usize, Option<State>) = match rest {
                [b'(', b'B', ..] => (
                    3,
                    Some(State {
                        g0: G0::Ascii,
                        ..state
                    }),
                ),
                [b'(', b'J', ..] => (
                    3,
                    Some(State {
                        g0: G0::JisRoman,
                        ..state
                    }),
                ),
                [b')', b'I', ..] => (
                    3,
                    Some(State {
                        g1: G1::Katakana,
                        ..state
                    }),
                ),
                [b'$', b'B', ..] | [b'$', b'@', ..] => (
                    3,
                    Some(State {
                        g0: G0::Jis0208,
                        ..state
                    }),
                ),
                [b'$', b'(', b'D', ..] => (
                    4,
                    Some(State {
                        g0: G0::Jis0212,
                        ..state
                    }),
                ),
                [b'$', b')', b'C', ..] => (
                    4,
                    Some(State {
                        g1: G1::Ksx1001,
                        ..state
                    }),
                ),
                [b'$', b')', b'A', ..] => (
                    4,
                    Some(State {
                        g1: G1::Gb2312,
                        ..state
                    }),
                ),
                [b'-', f, ..] => {
                    let term = match f {
                        b'A' => "100",
                        b'B' => "101",
                        b'C' => "109",
                        b'D' => "110",
                        b'L' => "144",
                        b'G' => "127",
                        b'F' => "126",
                        b'H' => "138",
                        b'M' => "148",
                        b'T' => "166",
                        _ => "",
                    };
                    (
                        3,
                        Some(State {
                            g1: g1_of(term),
                            ..state
                        })
                        .filter(|s| s.g1 != G1::None),
                    )
                }
                _ => (1, None),
            };
            match change {
                Some(s) => state = s,
                // An escape medlake does not know: keep it visible rather than guess.
                None => out.push('\u{1B}'),
            }
            i += len;
            continue;
        }
        if b < 0x80 {
            match state.g0 {
                G0::Ascii | G0::JisRoman => {
                    let delimiter = if person_name {
                        matches!(b, b'^' | b'=')
                    } else {
                        matches!(b, b'\r' | b'\n' | b'\t' | 0x0C)
                    };
                    if delimiter {
                        state = start;
                    }
                    out.push(b as char);
                    i += 1;
                }
                G0::Jis0208 | G0::Jis0212 => {
                    let Some(&b2) = bytes.get(i + 1) else {
                        out.push('\u{FFFD}');
                        break;
                    };
                    let mut euc = Vec::with_capacity(3);
                    if state.g0 == G0::Jis0212 {
                        euc.push(0x8F);
                    }
                    euc.extend([b | 0x80, b2 | 0x80]);
                    decode_with(encoding_rs::EUC_JP, &euc, &mut out);
                    i += 2;
                }
            }
            continue;
        }
        match state.g1 {
            G1::Katakana if (0xA1..=0xDF).contains(&b) => {
                out.push(char::from_u32(0xFF61 + u32::from(b - 0xA1)).unwrap_or('\u{FFFD}'));
                i += 1;
            }
            G1::Ksx1001 | G1::Gb2312 => {
                let enc = if state.g1 == G1::Ksx1001 {
                    encoding_rs::EUC_KR
                } else {
                    encoding_rs::GBK
                };
                let end = (i + 2).min(bytes.len());
                decode_with(enc, &bytes[i..end], &mut out);
                i = end;
            }
            G1::Single(enc) => {
                decode_with(enc, &bytes[i..i + 1], &mut out);
                i += 1;
            }
            _ => {
                out.push('\u{FFFD}');
                i += 1;
            }
        }
    }
    out
}

fn is_text(vr: VR) -> bool {
    matches!(
        vr,
        VR::SH | VR::LO | VR::ST | VR::LT | VR::PN | VR::UC | VR::UT
    )
}

/// The bytes behind a string that dicom-rs decoded as ISO 8859-1 (one char per byte), or
/// `None` if it was decoded otherwise.
fn latin1_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// One value that dicom-rs decoded as ISO 8859-1, decoded again with the code extensions.
fn redecode(s: &str, values: &[String], vr: VR) -> String {
    match latin1_bytes(s) {
        Some(b) => decode(&b, values, vr == VR::PN),
        None => s.to_string(),
    }
}

/// Decode every text value of a data set that dicom-rs read with the default character
/// set (ISO 8859-1, so no byte was lost), at every depth.
pub fn decode_object(obj: InMemDicomObject, values: &[String]) -> InMemDicomObject {
    let elements: Vec<_> = obj.into_iter().collect();
    let mut out = InMemDicomObject::new_empty();
    for elem in elements {
        let tag = elem.tag();
        let vr = elem.vr();
        let value = match elem.into_value() {
            Value::Sequence(seq) => {
                let length = seq.length();
                let items = seq
                    .into_items()
                    .into_iter()
                    .map(|item| decode_object(item, values))
                    .collect::<Vec<_>>();
                Value::Sequence(DataSetSequence::new(items, length))
            }
            Value::Primitive(PrimitiveValue::Strs(strs)) if is_text(vr) => {
                let decoded = strs.iter().map(|s| redecode(s, values, vr)).collect();
                Value::Primitive(PrimitiveValue::Strs(decoded))
            }
            Value::Primitive(PrimitiveValue::Str(s)) if is_text(vr) => {
                Value::Primitive(PrimitiveValue::Str(redecode(&s, values, vr)))
            }
            other => other,
        };
        out.put(DataElement::new(tag, vr, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    // The examples of PS3.5 Annex H (Japanese) and Annex I (Korean).
    #[test]
    fn japanese_person_name() {
        let raw =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(
            decode(raw, &v(&["", "ISO 2022 IR 87"]), true),
            "Yamada^Tarou=山田^太郎=やまだ^たろう"
        );
    }

    #[test]
    fn korean_person_name() {
        let raw = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        assert_eq!(
            decode(raw, &v(&["", "ISO 2022 IR 149"]), true),
            "Hong^Gildong=洪^吉洞=홍^길동"
        );
    }

    #[test]
    fn katakana_by_default_then_kanji() {
        let raw = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J";
        assert_eq!(
            decode(raw, &v(&["ISO 2022 IR 13", "ISO 2022 IR 87"]), true),
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎"
        );
    }

    #[test]
    fn unknown_escape_stays_visible() {
        assert_eq!(
            decode(b"a\x1bZb", &v(&["", "ISO 2022 IR 87"]), false),
            "a\u{1b}Zb"
        );
    }
}
