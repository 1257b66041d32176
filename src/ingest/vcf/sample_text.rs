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

/// One column's values for the current sample. Numbers are kept flat with a validity
/// flag per item (`.` items are missing), so a list goes into its Arrow builder in one
/// slice; strings are byte ranges into the sample's text. Nothing is allocated per value
/// once the buffers have grown.
#[derive(Debug, Default, Clone)]
pub struct ColValues {
    /// The sample has a value (not `.`) for this column.
    pub present: bool,
    /// The items of an Integer column (0 where missing).
    pub ints: Vec<i32>,
    /// The items of a Float column (0 where missing).
    pub floats: Vec<f32>,
    /// Per number item: not missing.
    pub valid: Vec<bool>,
    /// How many number items are missing.
    pub missing: usize,
    pub strs: Vec<Option<(usize, usize)>>,
}

impl ColValues {
    fn start(&mut self) {
        self.present = true;
        self.ints.clear();
        self.floats.clear();
        self.valid.clear();
        self.missing = 0;
        self.strs.clear();
    }
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
///
/// Each value is read in one pass over its bytes: the readers below find the value's end
/// (`:` or the end of the sample) and its items' ends (`,`) while they parse, so a
/// sample's text is scanned once, not split and then parsed.
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
    let b = src.as_bytes();
    let mut at = 0;
    for slot in slots.iter().copied() {
        if at == b.len() {
            // An empty last value (a trailing `:`).
            return false;
        }
        let end = match slot {
            Slot::Gt => read_genotype(b, at, gt),
            Slot::Int { col, list } => read_numbers::<i32>(b, at, list, &mut cols[col]),
            Slot::Float { col, list } => read_numbers::<f32>(b, at, list, &mut cols[col]),
            Slot::Str { col, list } => read_strings(b, at, list, &mut cols[col]),
            Slot::Skip | Slot::Noodles { .. } => Some(value_end(b, at)),
        };
        let Some(end) = end else { return false };
        if end == at {
            return false;
        }
        if end == at + 1 && b[at] == b'.' {
            // A lone `.` is a missing value, whatever the column.
            match slot {
                Slot::Gt => gt.present = false,
                Slot::Int { col, .. } | Slot::Float { col, .. } | Slot::Str { col, .. } => {
                    cols[col].present = false
                }
                Slot::Skip | Slot::Noodles { .. } => {}
            }
        } else if let Slot::Noodles { .. } = slot {
            return false;
        }
        if end == b.len() {
            return true;
        }
        at = end + 1;
    }
    // More values than keys.
    false
}

/// Where the run of bytes starting at `at` ends: the first byte that `stops` it, or the
/// end of the sample.
fn end_of(b: &[u8], at: usize, stops: impl Fn(u8) -> bool) -> usize {
    b[at..]
        .iter()
        .position(|&c| stops(c))
        .map_or(b.len(), |i| at + i)
}

/// Where the value starting at `at` ends: its `:`, or the end of the sample.
fn value_end(b: &[u8], at: usize) -> usize {
    end_of(b, at, |c| c == b':')
}

/// Where the item starting at `at` ends: its `,` or `:`, or the end of the sample.
fn item_end(b: &[u8], at: usize) -> usize {
    end_of(b, at, |c| c == b',' || c == b':')
}

/// The numbers of the value at `at`: one, or a `,`-separated list whose `.` items are
/// missing. Returns the value's end, or `None` when an item is not a number `str::parse`
/// reads (or a single value is a list).
fn read_numbers<T: Number>(b: &[u8], at: usize, list: bool, c: &mut ColValues) -> Option<usize> {
    c.start();
    let mut i = at;
    loop {
        let (item, end) = if b[i] == b'.' && b.get(i + 1).is_none_or(|&x| x == b',' || x == b':') {
            (None, i + 1)
        } else {
            let (n, end) = T::read_item(b, i)?;
            (Some(n), end)
        };
        T::push(c, item);
        match b.get(end) {
            Some(b',') if list => i = end + 1,
            Some(b',') => return None,
            _ => return Some(end),
        }
        if i == b.len() {
            // A trailing `,`: an empty item.
            return None;
        }
    }
}

/// The strings of the value at `at`, as byte ranges: `None` for a `.` list item. A value
/// with a `%` (percent-encoded in VCF 4.3+) is left to noodles, which decodes it.
fn read_strings(b: &[u8], at: usize, list: bool, c: &mut ColValues) -> Option<usize> {
    c.start();
    let mut item = at;
    let mut i = at;
    loop {
        let x = b.get(i).copied();
        match x {
            Some(b'%') => return None,
            Some(b',') if list => {
                c.strs.push((&b[item..i] != b".").then_some((item, i)));
                item = i + 1;
            }
            None | Some(b':') => {
                if list {
                    c.strs.push((&b[item..i] != b".").then_some((item, i)));
                } else {
                    c.strs.push(Some((at, i)));
                }
                return Some(i);
            }
            _ => {}
        }
        i += 1;
    }
}

/// A FORMAT number read from its text, giving exactly what `str::parse` gives.
trait Number: Sized + Copy + Default {
    /// The number at `at` and where it ends (the next `,`, `:` or the end), or `None`
    /// when `str::parse` would not read that text.
    fn read_item(b: &[u8], at: usize) -> Option<(Self, usize)>;
    /// The column's buffer for this type.
    fn items(c: &mut ColValues) -> &mut Vec<Self>;

    /// An item, 0 where missing.
    fn push(c: &mut ColValues, v: Option<Self>) {
        Self::items(c).push(v.unwrap_or_default());
        c.valid.push(v.is_some());
        c.missing += usize::from(v.is_none());
    }
}

impl Number for i32 {
    /// `str::parse::<i32>`'s grammar: an optional sign, then one or more digits, in range.
    fn read_item(b: &[u8], at: usize) -> Option<(Self, usize)> {
        let (negative, mut i) = match b.get(at)? {
            b'-' => (true, at + 1),
            b'+' => (false, at + 1),
            _ => (false, at),
        };
        let first = i;
        let mut m: i64 = 0;
        while let Some(&c) = b.get(i) {
            match c {
                b'0'..=b'9' => {
                    m = m * 10 + i64::from(c - b'0');
                    if m > 1 << 31 {
                        return None;
                    }
                }
                b',' | b':' => break,
                _ => return None,
            }
            i += 1;
        }
        if i == first {
            return None;
        }
        let n = if negative { -m } else { m };
        Some((i32::try_from(n).ok()?, i))
    }

    fn items(c: &mut ColValues) -> &mut Vec<Self> {
        &mut c.ints
    }
}

impl Number for f32 {
    /// A short plain decimal (`-0.61`, `37.45`: a sign, at most one point, at most nine
    /// digits, no exponent) is read as `m / 10^e` while its end is found. With `m < 2^24`
    /// and `e <= 9`, both are exact in `f32` and IEEE division rounds their quotient
    /// correctly, so the result is the correctly rounded value of the text, as `str::parse`
    /// gives; it is a fifth of the cost. Likelihoods and qualities (GL, GQ) are most of a
    /// large VCF's floats. Anything else goes to `str::parse`.
    fn read_item(b: &[u8], at: usize) -> Option<(Self, usize)> {
        let (negative, mut i) = match b.get(at) {
            Some(b'-') => (true, at + 1),
            Some(b'+') => (false, at + 1),
            _ => (false, at),
        };
        let mut m: u32 = 0;
        let mut digits = 0usize;
        let mut point: Option<usize> = None;
        let mut plain = true;
        while let Some(&c) = b.get(i) {
            match c {
                b'0'..=b'9' if digits < 9 => {
                    m = m * 10 + u32::from(c - b'0');
                    digits += 1;
                }
                b'.' if point.is_none() => point = Some(digits),
                b',' | b':' => break,
                _ => {
                    plain = false;
                    break;
                }
            }
            i += 1;
        }
        if plain && digits > 0 && m < 1 << 24 {
            let v = m as f32 / POW10_F32[digits - point.unwrap_or(digits)];
            return Some((if negative { -v } else { v }, i));
        }
        let end = item_end(b, at);
        // The separators are ASCII, so the item is whole UTF-8 (`b` is a `&str`'s bytes).
        let s = std::str::from_utf8(&b[at..end]).ok()?;
        Some((s.parse().ok()?, end))
    }

    fn items(c: &mut ColValues) -> &mut Vec<Self> {
        &mut c.floats
    }
}

/// A whole text read as an `f32` item (what `str::parse` gives), for tests.
#[cfg(test)]
fn read_f32(s: &str) -> Option<f32> {
    match <f32 as Number>::read_item(s.as_bytes(), 0) {
        Some((v, end)) if end == s.len() => Some(v),
        _ => None,
    }
}

/// Powers of ten that are exact in `f32` (5^9 < 2^24).
const POW10_F32: [f32; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// The genotype at `at` (up to its `:` or the end of the sample); its end, or `None` for
/// what noodles reads differently or rejects (an empty allele, an index that is not a
/// number).
fn read_genotype(b: &[u8], at: usize, gt: &mut GtValues) -> Option<usize> {
    gt.alleles.clear();
    // A leading phasing indicator (VCF 4.4) belongs to the first allele, whose phasing
    // does not count: a genotype is phased when every separator between alleles is `|`.
    let mut i = match b[at] {
        b'|' | b'/' => at + 1,
        _ => at,
    };
    if b.get(i).is_none_or(|&c| c == b':') {
        return None;
    }
    let mut phased = true;
    loop {
        let (allele, end) = read_allele(b, i)?;
        gt.alleles.push(allele);
        match b.get(end) {
            Some(b'/') => phased = false,
            Some(b'|') => {}
            _ => {
                gt.phased = phased && gt.alleles.len() >= 2;
                gt.present = true;
                return Some(end);
            }
        }
        i = end + 1;
    }
}

/// One allele index (`.` = missing) and where it ends, read as `str::parse::<usize>`
/// reads it (an optional `+`, then digits).
fn read_allele(b: &[u8], at: usize) -> Option<(Option<i32>, usize)> {
    let ends = |c: u8| matches!(c, b'|' | b'/' | b':');
    let first_byte = *b.get(at)?;
    if first_byte == b'.' && b.get(at + 1).is_none_or(|&c| ends(c)) {
        return Some((None, at + 1));
    }
    let mut i = at + usize::from(first_byte == b'+');
    let first = i;
    let mut n: u32 = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' if i - first < 9 => n = n * 10 + u32::from(c - b'0'),
            c if ends(c) => break,
            _ => {
                // Long or not a number: what `str::parse` makes of the whole allele.
                let end = end_of(b, at, ends);
                let text = std::str::from_utf8(&b[at..end]).ok()?;
                let n = text.parse::<usize>().ok()?;
                return Some((Some(n as i32), end));
            }
        }
        i += 1;
    }
    if i == first {
        return None;
    }
    Some((Some(n as i32), i))
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
            let got = read_f32(s).map(f32::to_bits);
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
                    Slot::Int { .. } => c
                        .ints
                        .iter()
                        .zip(&c.valid)
                        .map(|(x, v)| format!("{:?}", v.then_some(x)))
                        .collect(),
                    Slot::Float { .. } => c
                        .floats
                        .iter()
                        .zip(&c.valid)
                        .map(|(x, v)| format!("{:?}", v.then_some(x)))
                        .collect(),
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
            ".:.",
            "+1/+2:+5:-0,+3:+.5,-.5,1.:x",
            "0/1:-2147483648:2147483647,0000000000012:0.000000001,123456789,16777217",
            "1234567890/1:1:1:1e-3,.,5E2",
            "0/1:1:.,.,.:.,.,.",
            "0|1:1:1:-0,-0.0,0.30000001:é:é,ü",
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
            "0/1:",
            "0/",
            "/",
            "0/1:1:2,",
            "0/1:1:,2",
            "0/1:2147483648",
            "0/1:1,2",
            "99999999999999999999/1",
            "0/1:1:1:1.2.3",
            "0/1:1:1:-",
            "0/1:1:1:1:a%3Ab,c",
        ] {
            assert_eq!(this_reading(case), None, "{case:?}");
        }
    }
}
