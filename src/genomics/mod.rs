//! Genomic coordinates: chromosome names and regions, shared by VCF ingest and SQL.
//!
//! VCF files name chromosomes two ways ("7" from Ensembl/1000 Genomes, "chr7" from UCSC),
//! and the mitochondrion four ("MT", "M", "chrM", "chrMT"). The lake stores one spelling,
//! UCSC's (`chr7`, `chrX`, `chrM`), so that files of both styles land in one coordinate
//! space; other contigs (`GL000207.1`, `chrUn_gl000220`, `hs37d5`) keep their own names.

pub mod in_region;
pub mod vcf_scan;

use std::borrow::Cow;

/// The lake's spelling of a chromosome name.
pub fn normalize_chrom(name: &str) -> Cow<'_, str> {
    let bare = strip_chr(name);
    if bare.eq_ignore_ascii_case("M") || bare.eq_ignore_ascii_case("MT") {
        return Cow::Borrowed("chrM");
    }
    let numbered = !bare.is_empty() && bare.len() <= 2 && bare.bytes().all(|b| b.is_ascii_digit());
    if numbered && !bare.starts_with('0') {
        return if name.len() == bare.len() + 3 && name.starts_with("chr") {
            Cow::Borrowed(name)
        } else {
            Cow::Owned(format!("chr{bare}"))
        };
    }
    if bare.eq_ignore_ascii_case("X") || bare.eq_ignore_ascii_case("Y") {
        return Cow::Owned(format!("chr{}", bare.to_ascii_uppercase()));
    }
    Cow::Borrowed(name)
}

fn strip_chr(name: &str) -> &str {
    match name.get(..3) {
        Some(p) if p.eq_ignore_ascii_case("chr") => &name[3..],
        _ => name,
    }
}

/// Every spelling a file may use for a normalized name, for matching raw (not normalized)
/// chromosome columns such as `vcf_scan`'s.
pub fn chrom_spellings(normalized: &str) -> Vec<String> {
    if normalized == "chrM" {
        return ["chrM", "MT", "M", "chrMT"].map(String::from).to_vec();
    }
    match normalized.strip_prefix("chr") {
        Some(bare) if normalize_chrom(bare) == normalized => {
            vec![normalized.to_string(), bare.to_string()]
        }
        _ => vec![normalized.to_string()],
    }
}

/// A region: a chromosome (normalized) and an inclusive 1-based range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub chrom: String,
    pub start: i64,
    pub end: i64,
}

impl Region {
    /// Parse `chr7:55019017-55211628`, `7:55019017` (one position), `7:55,019,017-` (to the
    /// end) or `7` (the whole chromosome), as samtools and bcftools write regions.
    pub fn parse(s: &str) -> Result<Region, String> {
        let bad =
            |why: &str| format!("region {s:?}: {why} (expected e.g. 'chr7:55019017-55211628')");
        let s_trim = s.trim();
        let (chrom, range) = match s_trim.rsplit_once(':') {
            Some((c, r)) => (c, Some(r)),
            None => (s_trim, None),
        };
        if chrom.is_empty() {
            return Err(bad("no chromosome"));
        }
        let num = |t: &str| -> Result<i64, String> {
            let digits: String = t.chars().filter(|c| *c != ',').collect();
            digits
                .trim()
                .parse::<i64>()
                .map_err(|_| bad(&format!("{t:?} is not a position")))
        };
        let (start, end) = match range {
            None => (1, i64::MAX),
            Some(r) => match r.split_once('-') {
                None => {
                    let p = num(r)?;
                    (p, p)
                }
                Some((a, "")) => (num(a)?, i64::MAX),
                Some((a, b)) => (num(a)?, num(b)?),
            },
        };
        if start < 1 {
            return Err(bad("positions start at 1"));
        }
        if end < start {
            return Err(bad("the end is before the start"));
        }
        Ok(Region {
            chrom: normalize_chrom(chrom).into_owned(),
            start,
            end,
        })
    }

    /// Whether a record at `chrom`:`pos`..=`end` overlaps the region (with `end` = `pos`,
    /// whether its position lies in it).
    pub fn overlaps(&self, chrom: &str, pos: i64, end: i64) -> bool {
        pos <= self.end && end >= self.start && normalize_chrom(chrom) == self.chrom
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_naming_styles_normalize_to_ucsc() {
        for (raw, want) in [
            ("7", "chr7"),
            ("chr7", "chr7"),
            ("CHR7", "chr7"),
            ("x", "chrX"),
            ("chrY", "chrY"),
            ("MT", "chrM"),
            ("M", "chrM"),
            ("chrMT", "chrM"),
            ("chrM", "chrM"),
            ("22", "chr22"),
            ("GL000207.1", "GL000207.1"),
            ("chrUn_gl000220", "chrUn_gl000220"),
            ("hs37d5", "hs37d5"),
            ("07", "07"),
            ("123", "123"),
        ] {
            assert_eq!(normalize_chrom(raw), want, "{raw}");
        }
        assert_eq!(chrom_spellings("chr7"), ["chr7", "7"]);
        assert_eq!(chrom_spellings("chrM").len(), 4);
        assert_eq!(chrom_spellings("GL000207.1"), ["GL000207.1"]);
    }

    #[test]
    fn regions_parse_as_samtools_writes_them() {
        let r = Region::parse("7:55,019,017-55,211,628").unwrap();
        assert_eq!(
            (r.chrom.as_str(), r.start, r.end),
            ("chr7", 55019017, 55211628)
        );
        let r = Region::parse("chrX").unwrap();
        assert_eq!((r.start, r.end), (1, i64::MAX));
        let r = Region::parse("MT:100").unwrap();
        assert_eq!((r.chrom.as_str(), r.start, r.end), ("chrM", 100, 100));
        let r = Region::parse("1:100-").unwrap();
        assert_eq!(r.end, i64::MAX);
        assert!(Region::parse("1:200-100").is_err());
        assert!(Region::parse("1:abc").is_err());
        assert!(Region::parse(":1-2").is_err());
        assert!(r.overlaps("1", 150, 150));
        assert!(!r.overlaps("2", 150, 150));
        assert!(Region::parse("1:100-200")
            .unwrap()
            .overlaps("chr1", 90, 101));
    }
}
