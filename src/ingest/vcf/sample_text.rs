//! The FORMAT values of one VCF text sample, read into typed scratch columns with the
//! types resolved once per record.
//!
//! noodles' `Sample::iter` looks each value's key up in the header and boxes every list,
//! which with 100 samples × 7 keys per record was most of the ingest's time. This reads the
//! same text the same way (noodles' `parse_value` and genotype rules: `.` is missing, lists
//! split on `,`, alleles on `|` and `/`, an optional leading phasing indicator), but
//! declines anything it does not handle exactly like noodles (a number that does not
//! parse, an empty value, a percent-encoded string, a Character field, more values than
//! keys): the caller then reads that sample through noodles, which reports the problem.
//! `tests::agrees_with_noodles` holds the two to the same answers.

/// What a FORMAT position holds, resolved from the header once per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Gt,
    Int {
        col: usize,
        list: bool,
    },
    Float {
        col: usize,
        list: bool,
    },
    Str {
        col: usize,
        list: bool,
    },
    /// A column this reader leaves to noodles (a Character field, Number=0).
    Noodles {
        col: usize,
    },
    /// Not kept (undeclared, or unreadable key).
    Skip,
}

impl Slot {
    /// The FORMAT column this position fills, if any.
    pub fn col(self) -> Option<usize> {
        match self {
            Slot::Int { col, .. }
            | Slot::Float { col, .. }
            | Slot::Str { col, .. }
            | Slot::Noodles { col } => Some(col),
            Slot::Gt | Slot::Skip => None,
        }
    }
}

/// One column's values for the current sample. Strings are byte ranges into the sample's
/// text, so nothing is allocated per value once the buffers have grown.
#[derive(Debug, Default, Clone)]
pub struct ColValues {
    /// The sample has a value (not `.`) for this column.
    pub present: bool,
    pub ints: Vec<Option<i32>>,
    pub floats: Vec<Option<f32>>,
    pub strs: Vec<Option<(usize, usize)>>,
}

/// A sample's genotype: allele indices (None = missing) and whether it is phased.
#[derive(Debug, Default, Clone)]
pub struct GtValues {
    pub present: bool,
    pub alleles: Vec<Option<i32>>,
    pub phased: bool,
}

/// Read `src` (one sample's text) into `cols` and `gt`, cleared first. `false` when the
/// sample needs noodles.
pub fn read_sample(src: &str, slots: &[Slot], cols: &mut [ColValues], gt: &mut GtValues) -> bool {
    for c in cols.iter_mut() {
        c.present = false;
    }
    gt.present = false;
    if src.is_empty() {
        return false;
    }
    if src == "." {
        return true;
    }
    let mut start = 0;
    for (i, value) in split_ascii(src, b':').enumerate() {
        let offset = start;
        start += value.len() + 1;
        let Some(slot) = slots.get(i) else {
            return false;
        };
        if value.is_empty() {
            return false;
        }
        if value == "." {
            continue;
        }
        let ok = match *slot {
            Slot::Skip => true,
            Slot::Noodles { .. } => return false,
            Slot::Gt => read_genotype(value, gt),
            Slot::Int { col, list } => {
                let c = &mut cols[col];
                c.ints.clear();
                c.present = true;
                read_items(value, list, &mut c.ints)
            }
            Slot::Float { col, list } => {
                let c = &mut cols[col];
                c.floats.clear();
                c.present = true;
                read_items(value, list, &mut c.floats)
            }
            Slot::Str { col, list } => {
                if value.contains('%') {
                    return false;
                }
                let c = &mut cols[col];
                c.strs.clear();
                c.present = true;
                if list {
                    let mut at = offset;
                    for item in split_ascii(value, b',') {
                        c.strs.push((item != ".").then_some((at, at + item.len())));
                        at += item.len() + 1;
                    }
                } else {
                    c.strs.push(Some((offset, offset + value.len())));
                }
                true
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A single value, or a `,`-separated list whose `.` items are missing (a single `.`
/// never reaches here: the caller treats it as a missing value, as noodles does).
fn read_items<T: Number>(value: &str, list: bool, out: &mut Vec<Option<T>>) -> bool {
    if !list {
        return T::read(value).map(|n| out.push(Some(n))).is_some();
    }
    for s in split_ascii(value, b',') {
        if s == "." {
            out.push(None);
        } else if let Some(n) = T::read(s) {
            out.push(Some(n));
        } else {
            return false;
        }
    }
    true
}

/// A FORMAT number read from its text, giving exactly what `str::parse` gives.
trait Number: Sized {
    fn read(s: &str) -> Option<Self>;
}

impl Number for i32 {
    fn read(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl Number for f32 {
    fn read(s: &str) -> Option<Self> {
        plain_decimal_f32(s).or_else(|| s.parse().ok())
    }
}

/// Powers of ten that are exact in `f32` (5^10 < 2^24).
const POW10_F32: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// A short plain decimal (`-0.61`, `37.45`: a sign, at most one point, no exponent) read
/// as `m / 10^e`, or `None` for anything else. With `m < 2^24` and `e <= 10`, both are exact
/// in `f32` and IEEE division rounds their quotient correctly, so the result is the
/// correctly rounded value of the text, as `str::parse` gives; it is a fifth of the cost.
/// Likelihoods and qualities (GL, GQ) are most of a large VCF's floats.
fn plain_decimal_f32(s: &str) -> Option<f32> {
    let b = s.as_bytes();
    let (negative, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.len() > 9 {
        return None;
    }
    let mut m: u32 = 0;
    let mut seen_digit = false;
    let mut point: Option<usize> = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                m = m * 10 + u32::from(c - b'0');
                seen_digit = true;
            }
            b'.' if point.is_none() => point = Some(digits.len() - i - 1),
            _ => return None,
        }
    }
    if !seen_digit || m >= 1 << 24 {
        return None;
    }
    let v = m as f32 / POW10_F32[point.unwrap_or(0)];
    Some(if negative { -v } else { v })
}

/// `s` split at each `sep` byte. The separators are ASCII, so every piece is whole UTF-8;
/// a byte scan is several times faster than `str::split` (or memchr's) on values a few
/// bytes long.
fn split_ascii(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match s.as_bytes()[start..].iter().position(|&b| b == sep) {
            Some(i) => {
                let piece = &s[start..start + i];
                start += i + 1;
                Some(piece)
            }
            None => {
                done = true;
                Some(&s[start..])
            }
        }
    })
}

fn read_genotype(value: &str, gt: &mut GtValues) -> bool {
    gt.alleles.clear();
    // A leading phasing indicator (VCF 4.4) belongs to the first allele, whose phasing
    // does not count: a genotype is phased when every separator between alleles is `|`.
    let body = value.strip_prefix(['|', '/']).unwrap_or(value);
    if body.is_empty() {
        return false;
    }
    let mut phased = true;
    let mut rest = body;
    loop {
        let end = rest
            .bytes()
            .position(|b| b == b'|' || b == b'/')
            .unwrap_or(rest.len());
        let allele = &rest[..end];
        if allele == "." {
            gt.alleles.push(None);
        } else {
            match allele.parse::<usize>() {
                Ok(n) => gt.alleles.push(Some(n as i32)),
                Err(_) => return false,
            }
        }
        if end == rest.len() {
            break;
        }
        if rest.as_bytes()[end] == b'/' {
            phased = false;
        }
        rest = &rest[end + 1..];
    }
    gt.phased = phased && gt.alleles.len() >= 2;
    gt.present = true;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast float path against `str::parse` (dec2flt, correctly rounded): bit for bit,
    /// on hand-picked edges and on a million generated decimals of every shape it takes
    /// (and some it hands back).
    #[test]
    fn plain_decimals_read_as_str_parse_reads_them() {
        let check = |s: &str| {
            let want = s.parse::<f32>().ok().map(f32::to_bits);
            let got = <f32 as Number>::read(s).map(f32::to_bits);
            assert_eq!(got, want, "{s:?}");
        };
        for s in [
            "0",
            "-0",
            "-0.00",
            "+1.5",
            "1.",
            ".5",
            "-.5",
            ".",
            "-",
            "+",
            "",
            "1.2.3",
            "1e5",
            "16777215",
            "16777216",
            "16777217",
            "0.16777217",
            "1677721.7",
            "9999999.99",
            "-5.89",
            "37.45",
            "0.1",
            "0.3",
            "3.4028235",
            "1.0000001",
            "0.000000001",
            "123456789",
            "1234567890",
            "nan",
            "inf",
            "1_0",
            " 1",
            "1 ",
        ] {
            check(s);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = 1 + (x % 10) as usize;
            let mut s = String::new();
            if x & (1 << 20) != 0 {
                s.push('-');
            }
            let point = (x >> 24) as usize % (digits + 2);
            let mut y = x >> 32;
            for i in 0..digits {
                if i == point {
                    s.push('.');
                }
                s.push(char::from(b'0' + (y % 10) as u8));
                y /= 10;
            }
            check(&s);
        }
    }
    use noodles::vcf;
    use noodles::vcf::variant::record::samples::series::value::genotype::Phasing;
    use noodles::vcf::variant::record::samples::series::Value;

    const HEADER: &str = "##fileformat=VCFv4.4
##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description=\"Depth\">
##FORMAT=<ID=AD,Number=R,Type=Integer,Description=\"Allele depths\">
##FORMAT=<ID=GL,Number=G,Type=Float,Description=\"Likelihoods\">
##FORMAT=<ID=FT,Number=1,Type=String,Description=\"Filter\">
##FORMAT=<ID=XS,Number=.,Type=String,Description=\"Strings\">
##FORMAT=<ID=AF,Number=1,Type=Float,Description=\"Fraction\">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1
";

    /// A sample as read: the genotype (alleles, phased) and each column's value as text.
    type Reading = (Option<(Vec<Option<i32>>, bool)>, Vec<String>);

    const SLOTS: [Slot; 7] = [
        Slot::Gt,
        Slot::Int {
            col: 0,
            list: false,
        },
        Slot::Int { col: 1, list: true },
        Slot::Float { col: 2, list: true },
        Slot::Str {
            col: 3,
            list: false,
        },
        Slot::Str { col: 4, list: true },
        Slot::Float {
            col: 5,
            list: false,
        },
    ];

    /// What noodles reads from the same text, in this reader's terms (`None` when noodles
    /// reports an error for any value).
    fn noodles_reading(sample: &str) -> Option<Reading> {
        let mut reader = vcf::io::Reader::new(HEADER.as_bytes());
        let header = reader.read_header().unwrap();
        let line = format!("1\t1\t.\tA\tC,G\t.\t.\t.\tGT:DP:AD:GL:FT:XS:AF\t{sample}\n");
        let mut reader = vcf::io::Reader::new(line.as_bytes());
        let mut record = vcf::Record::default();
        reader.read_record(&mut record).ok()?;
        let samples = record.samples();
        let s = samples.iter().next()?;
        let mut gt = None;
        let mut cols = vec![String::from("-"); 6];
        for item in s.iter(&header) {
            let (key, v) = item.ok()?;
            let Some(v) = v else { continue };
            match (key, v) {
                ("GT", Value::Genotype(g)) => {
                    let mut alleles = Vec::new();
                    let mut phased = true;
                    for (i, a) in g.iter().enumerate() {
                        let (p, ph) = a.ok()?;
                        alleles.push(p.map(|p| p as i32));
                        if i > 0 && ph != Phasing::Phased {
                            phased = false;
                        }
                    }
                    let n = alleles.len();
                    gt = Some((alleles, phased && n >= 2));
                }
                (k, v) => {
                    let i = ["DP", "AD", "GL", "FT", "XS", "AF"]
                        .iter()
                        .position(|x| *x == k)?;
                    cols[i] = match v {
                        Value::Integer(n) => format!("{n}"),
                        Value::Float(n) => format!("{n:?}"),
                        Value::String(s) => s.to_string(),
                        Value::Array(a) => {
                            use noodles::vcf::variant::record::samples::series::value::Array;
                            let items: Vec<String> = match a {
                                Array::Integer(xs) => xs
                                    .iter()
                                    .map(|x| x.map(|x| format!("{x:?}")))
                                    .collect::<std::io::Result<_>>()
                                    .ok()?,
                                Array::Float(xs) => xs
                                    .iter()
                                    .map(|x| x.map(|x| format!("{x:?}")))
                                    .collect::<std::io::Result<_>>()
                                    .ok()?,
                                Array::String(xs) => xs
                                    .iter()
                                    .map(|x| x.map(|x| format!("{x:?}")))
                                    .collect::<std::io::Result<_>>()
                                    .ok()?,
                                Array::Character(_) => return None,
                            };
                            items.join(",")
                        }
                        _ => return None,
                    };
                }
            }
        }
        Some((gt, cols))
    }

    fn this_reading(sample: &str) -> Option<Reading> {
        let mut cols = vec![ColValues::default(); 6];
        let mut gt = GtValues::default();
        if !read_sample(sample, &SLOTS, &mut cols, &mut gt) {
            return None;
        }
        let shown = cols
            .iter()
            .zip(SLOTS[1..].iter())
            .map(|(c, slot)| {
                if !c.present {
                    return "-".to_string();
                }
                let list = matches!(
                    slot,
                    Slot::Int { list: true, .. }
                        | Slot::Float { list: true, .. }
                        | Slot::Str { list: true, .. }
                );
                let items: Vec<String> = match slot {
                    Slot::Int { .. } => c.ints.iter().map(|x| format!("{x:?}")).collect(),
                    Slot::Float { .. } => c.floats.iter().map(|x| format!("{x:?}")).collect(),
                    _ => c
                        .strs
                        .iter()
                        .map(|x| format!("{:?}", x.map(|(a, b)| &sample[a..b])))
                        .collect(),
                };
                if list {
                    items.join(",")
                } else {
                    // A single value shows bare, as noodles' scalar does.
                    items[0]
                        .trim_start_matches("Some(")
                        .trim_end_matches(')')
                        .trim_matches('"')
                        .to_string()
                }
            })
            .collect();
        Some((gt.present.then(|| (gt.alleles.clone(), gt.phased)), shown))
    }

    #[test]
    fn agrees_with_noodles() {
        let cases = [
            "0|1:12:5,7,0:-0.1,-1.5,-9:PASS:a,.,b:0.25",
            "./.:.:.:.:.:.:.",
            ".",
            "1/2:3",
            "0",
            ".|1:0:0,0,0",
            "|0|1:5",
            "/1|1:5",
            "0/1/2:7:1,2,3:nan,inf,-inf:q10:x:1e-3",
            "1|.:9:.,4,.:.:.:.,.:.",
            "10/11:1",
            "0|1:1:2:3:4:5:6",
        ];
        for case in cases {
            let theirs = noodles_reading(case).expect(case);
            assert_eq!(this_reading(case), Some(theirs), "{case}");
        }
    }

    #[test]
    fn declines_what_it_does_not_read_as_noodles_would() {
        // Each of these is either an error in noodles or a value noodles decodes (percent
        // encoding), so the caller must hand it to noodles.
        for case in [
            "",
            "0/1:x",
            "0/1::3",
            "0//1",
            "0/1:1.5",
            "0/1:1:2,z",
            "0/1:1:1:1:a%3Ab",
            "0|1:1:2:3:4:5:6:7",
            "a/b",
        ] {
            assert_eq!(this_reading(case), None, "{case:?}");
        }
    }
}
