//! PS3.15 Table E.1-1 as data: `annex_e.tsv`, parsed once, and what each action means for
//! one element under the options chosen.

use std::collections::HashMap;
use std::sync::OnceLock;

use dicom_core::Tag;

use crate::error::{Error, Result};

/// The table, compiled into the binary.
const ANNEX_E: &str = include_str!("annex_e.tsv");

/// An action code of Table E.1-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    D,
    Z,
    X,
    K,
    C,
    U,
    ZD,
    XZ,
    XD,
    XZD,
    /// `X/Z/U*`: a sequence kept with the UIDs in it replaced.
    XZU,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "D" => Action::D,
            "Z" => Action::Z,
            "X" => Action::X,
            "K" => Action::K,
            "C" => Action::C,
            "U" => Action::U,
            "Z/D" => Action::ZD,
            "X/Z" => Action::XZ,
            "X/D" => Action::XD,
            "X/Z/D" => Action::XZD,
            "X/Z/U*" => Action::XZU,
            _ => return None,
        })
    }
}

/// What happens to one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Keep,
    Remove,
    /// Zero length (an empty sequence for SQ).
    Empty,
    /// A dummy value of the VR (a sequence: kept, its items cleaned).
    Dummy,
    /// Every UID replaced by its keyed remapping (a sequence: kept, its items cleaned).
    Uid,
    /// Dates (DA, DT) moved by the patient's offset; times kept.
    ShiftDates,
    /// Clean: a coded sequence is kept and its items cleaned; free text is removed, since
    /// medlake cannot tell identifying words in a header's free text from the rest.
    Clean,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub keyword: String,
    pub basic: Action,
    pub longitudinal: Option<Action>,
    pub patient_characteristics: Option<Action>,
}

/// The parsed table.
#[derive(Debug)]
pub struct Profile {
    rows: Vec<Row>,
    exact: HashMap<u32, usize>,
    /// Repeating groups: (value, mask of fixed bits, row).
    masked: Vec<(u32, u32, usize)>,
}

/// Which options of the profile apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileOptions {
    /// Retain Longitudinal Temporal Information with Modified Dates.
    pub retain_dates: bool,
    /// Retain Patient Characteristics.
    pub retain_patient_characteristics: bool,
}

impl Profile {
    /// The table of this build (parsed on first use).
    pub fn get() -> Result<&'static Profile> {
        static PROFILE: OnceLock<std::result::Result<Profile, String>> = OnceLock::new();
        PROFILE
            .get_or_init(|| Profile::parse(ANNEX_E))
            .as_ref()
            .map_err(|e| Error::Invalid(format!("annex_e.tsv: {e}")))
    }

    pub fn parse(text: &str) -> std::result::Result<Profile, String> {
        let mut p = Profile {
            rows: Vec::new(),
            exact: HashMap::new(),
            masked: Vec::new(),
        };
        let mut header_seen = false;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if !header_seen {
                header_seen = true;
                if !line.starts_with("tag\t") {
                    return Err(format!("line {n}: expected the header row"));
                }
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 7 {
                return Err(format!("line {n}: {} fields, expected 7", f.len()));
            }
            let (value, mask) = parse_tag(f[0]).ok_or_else(|| format!("line {n}: tag {}", f[0]))?;
            let action = |s: &str| -> std::result::Result<Option<Action>, String> {
                if s.is_empty() {
                    return Ok(None);
                }
                Action::parse(s)
                    .map(Some)
                    .ok_or_else(|| format!("line {n}: action {s:?}"))
            };
            let row = Row {
                name: f[1].to_string(),
                keyword: f[2].to_string(),
                basic: action(f[4])?.ok_or_else(|| format!("line {n}: no basic action"))?,
                longitudinal: action(f[5])?,
                patient_characteristics: action(f[6])?,
            };
            let at = p.rows.len();
            p.rows.push(row);
            if mask == u32::MAX {
                if p.exact.insert(value, at).is_some() {
                    return Err(format!("line {n}: tag {} twice", f[0]));
                }
            } else {
                p.masked.push((value, mask, at));
            }
        }
        Ok(p)
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    pub fn row(&self, tag: Tag) -> Option<&Row> {
        let t = (u32::from(tag.group()) << 16) | u32::from(tag.element());
        if let Some(&i) = self.exact.get(&t) {
            return Some(&self.rows[i]);
        }
        self.masked
            .iter()
            .find(|(v, m, _)| t & m == *v)
            .map(|&(_, _, i)| &self.rows[i])
    }

    /// The operation for an element listed in the table, under the options.
    pub fn op(row: &Row, opts: ProfileOptions) -> Op {
        let mut action = row.basic;
        if opts.retain_dates {
            if let Some(a) = row.longitudinal {
                action = a;
                if a == Action::C {
                    return Op::ShiftDates;
                }
            }
        }
        if opts.retain_patient_characteristics {
            if let Some(a) = row.patient_characteristics {
                action = a;
            }
        }
        // The compound codes depend on the attribute's Type in each IOD. The lake keeps no
        // file that must conform to an IOD, so the least informative value that keeps the
        // element present is chosen: Z wherever it is allowed, D only where it is not.
        match action {
            Action::K => Op::Keep,
            Action::X => Op::Remove,
            Action::Z | Action::XZ | Action::ZD | Action::XZD => Op::Empty,
            Action::D | Action::XD => Op::Dummy,
            Action::U | Action::XZU => Op::Uid,
            Action::C => Op::Clean,
        }
    }
}

/// `(0010,0010)` or `(60xx,3000)`: the tag's bits, and a mask of the fixed ones.
fn parse_tag(s: &str) -> Option<(u32, u32)> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    let (g, e) = inner.split_once(',')?;
    if g.len() != 4 || e.len() != 4 {
        return None;
    }
    let mut value = 0u32;
    let mut mask = 0u32;
    for c in g.chars().chain(e.chars()) {
        value <<= 4;
        mask <<= 4;
        if c == 'x' || c == 'X' {
            continue;
        }
        value |= c.to_digit(16)?;
        mask |= 0xF;
    }
    Some((value, mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;

    #[test]
    fn the_table_parses_with_its_known_rows() {
        let p = Profile::get().unwrap();
        // 513 rows of Table E.1-1 (2024b) are transcribed.
        assert_eq!(p.rows().len(), 513);
        let basic = |t: Tag| p.row(t).map(|r| r.basic);
        assert_eq!(basic(tags::PATIENT_NAME), Some(Action::Z));
        assert_eq!(basic(tags::PATIENT_ID), Some(Action::Z));
        assert_eq!(basic(tags::PATIENT_BIRTH_DATE), Some(Action::Z));
        assert_eq!(basic(tags::ACCESSION_NUMBER), Some(Action::Z));
        assert_eq!(basic(tags::STUDY_INSTANCE_UID), Some(Action::U));
        assert_eq!(basic(tags::SOP_INSTANCE_UID), Some(Action::U));
        assert_eq!(basic(tags::INSTITUTION_NAME), Some(Action::XZD));
        assert_eq!(basic(tags::REFERENCED_IMAGE_SEQUENCE), Some(Action::XZU));
        assert_eq!(basic(tags::CONTENT_DATE), Some(Action::ZD));
        assert_eq!(basic(Tag(0x0010, 0x1000)), Some(Action::X));
        assert_eq!(basic(tags::CONTENT_SEQUENCE), Some(Action::X));
        // Kept attributes are not listed.
        assert_eq!(basic(tags::MODALITY), None);
        assert_eq!(basic(tags::SOP_CLASS_UID), None);
        // Repeating groups.
        assert_eq!(basic(Tag(0x6002, 0x3000)), Some(Action::X));
        assert_eq!(basic(Tag(0x6000, 0x4000)), Some(Action::X));
        assert_eq!(basic(Tag(0x5004, 0x0010)), Some(Action::X));
        assert_eq!(basic(Tag(0x6000, 0x0010)), None);
        // Options.
        let study_date = p.row(tags::STUDY_DATE).unwrap();
        assert_eq!(study_date.longitudinal, Some(Action::C));
        let none = ProfileOptions::default();
        let dates = ProfileOptions {
            retain_dates: true,
            ..none
        };
        let chars = ProfileOptions {
            retain_patient_characteristics: true,
            ..none
        };
        assert_eq!(Profile::op(study_date, none), Op::Empty);
        assert_eq!(Profile::op(study_date, dates), Op::ShiftDates);
        let sex = p.row(tags::PATIENT_SEX).unwrap();
        assert_eq!(Profile::op(sex, none), Op::Empty);
        assert_eq!(Profile::op(sex, chars), Op::Keep);
        assert_eq!(
            Profile::op(p.row(tags::PATIENT_AGE).unwrap(), chars),
            Op::Keep
        );
        assert_eq!(
            Profile::op(p.row(tags::PATIENT_AGE).unwrap(), none),
            Op::Remove
        );
        // The birth date is not a longitudinal date: it stays removed.
        let birth = p.row(tags::PATIENT_BIRTH_DATE).unwrap();
        assert_eq!(Profile::op(birth, dates), Op::Empty);
        for r in p.rows() {
            assert!(!r.keyword.is_empty() && !r.name.is_empty(), "{r:?}");
        }
    }

    #[test]
    fn malformed_tables_are_errors() {
        assert!(Profile::parse("tag\tname\n(0010,0010)\tx").is_err());
        let h = "tag\tname\tkeyword\tretired\tbasic\tl\tp\n";
        assert!(Profile::parse(&format!("{h}(0010,001G)\tA\tA\tN\tX\t\t\n")).is_err());
        assert!(Profile::parse(&format!("{h}(0010,0010)\tA\tA\tN\tQ\t\t\n")).is_err());
        assert!(Profile::parse(&format!("{h}(0010,0010)\tA\tA\tN\t\t\t\n")).is_err());
        assert!(Profile::parse(&format!(
            "{h}(0010,0010)\tA\tA\tN\tX\t\t\n(0010,0010)\tA\tA\tN\tX\t\t\n"
        ))
        .is_err());
        assert_eq!(
            Profile::parse(&format!("{h}(0010,0010)\tA\tA\tN\tX\tC\tK\n"))
                .unwrap()
                .rows()
                .len(),
            1
        );
    }
}
