//! VCF/BCF records to Arrow: the `variants`, `genotypes` and `variant_effects` rows of a
//! chunk of records, with the typed INFO struct and FORMAT columns that the file's header
//! declares, and a problem for every value that disagrees with the header.
//!
//! Works on noodles' `variant::Record` trait, so VCF text and BCF go through one path.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float32Builder, Int32Builder, Int64Builder,
    Int8Builder, ListBuilder, RecordBatch, StringBuilder, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use noodles::vcf;
use noodles::vcf::header::record::value::map::{format, info};
use noodles::vcf::variant::record::info::field::Value as InfoValue;
use noodles::vcf::variant::record::samples::series::Value as SampleValue;
use noodles::vcf::variant::record::{AlternateBases, Filters, Ids, Info, ReferenceBases, Samples};
use noodles::vcf::variant::Record;

use super::effects::{Effect, EffectLayout};
use super::sample_text::{read_sample, ColValues, GtValues, Slot};
use crate::genomics::normalize_chrom;

/// The annotation INFO fields that become `variant_effects` rows rather than `info` values.
pub const EFFECT_KEYS: [&str; 3] = ["ANN", "EFF", "CSQ"];

/// How a row id is made: the file's number in the high bits, the row's ordinal in the file
/// below. Unique in the lake, fixed once assigned, and a file's rows form one id range.
pub const ROW_BITS: u32 = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Flag,
    Str,
}

impl Kind {
    fn arrow(self) -> DataType {
        match self {
            Kind::Int => DataType::Int32,
            Kind::Float => DataType::Float32,
            Kind::Flag => DataType::Boolean,
            Kind::Str => DataType::Utf8,
        }
    }
}

/// One typed INFO or FORMAT field.
#[derive(Debug, Clone)]
pub struct Col {
    pub key: String,
    /// The column name (FORMAT keys that clash with a fixed column get a `FORMAT_` prefix).
    pub name: String,
    pub kind: Kind,
    pub list: bool,
    /// Number=A / Number=R: one value per ALT allele, or per allele.
    pub per_alt: Option<bool>,
}

impl Col {
    pub fn data_type(&self) -> DataType {
        if self.list {
            list_of(self.kind.arrow())
        } else {
            self.kind.arrow()
        }
    }
}

/// What a file's header says its records hold, and how they map to columns.
#[derive(Debug, Clone)]
pub struct Layout {
    pub info: Vec<Col>,
    info_index: HashMap<String, usize>,
    pub formats: Vec<Col>,
    format_index: HashMap<String, usize>,
    pub samples: Vec<String>,
    pub effects: Vec<(EffectLayout, String)>,
    pub split: bool,
    pub source_uri: String,
    pub file_number: i64,
}

const GENOTYPE_FIXED: [&str; 7] = [
    "variant_id",
    "sample_id",
    "chrom",
    "pos",
    "alleles",
    "phased",
    "alt_count",
];

impl Layout {
    pub fn from_header(
        header: &vcf::Header,
        split: bool,
        source_uri: &str,
        file_number: i64,
    ) -> Layout {
        let mut info_cols = Vec::new();
        let mut effects = Vec::new();
        for (key, def) in header.infos() {
            if EFFECT_KEYS.contains(&key.as_str()) {
                if let Some(l) = EffectLayout::from_header(key, def.description()) {
                    effects.push((l, def.description().to_string()));
                    continue;
                }
            }
            let kind = match def.ty() {
                info::Type::Integer => Kind::Int,
                info::Type::Float => Kind::Float,
                info::Type::Flag => Kind::Flag,
                info::Type::Character | info::Type::String => Kind::Str,
            };
            let (list, per_alt) = match def.number() {
                _ if kind == Kind::Flag => (false, None),
                info::Number::Count(1) => (false, None),
                info::Number::Count(0) => (false, None),
                info::Number::AlternateBases => (true, Some(true)),
                info::Number::ReferenceAlternateBases => (true, Some(false)),
                _ => (true, None),
            };
            info_cols.push(Col {
                key: key.clone(),
                name: key.clone(),
                kind,
                list,
                per_alt,
            });
        }
        let mut format_cols = Vec::new();
        for (key, def) in header.formats() {
            if key == "GT" {
                continue;
            }
            let kind = match def.ty() {
                format::Type::Integer => Kind::Int,
                format::Type::Float => Kind::Float,
                format::Type::Character | format::Type::String => Kind::Str,
            };
            let list = !matches!(def.number(), format::Number::Count(1));
            let per_alt = match def.number() {
                format::Number::AlternateBases => Some(true),
                format::Number::ReferenceAlternateBases => Some(false),
                _ => None,
            };
            let name = if GENOTYPE_FIXED.contains(&key.as_str()) {
                format!("FORMAT_{key}")
            } else {
                key.clone()
            };
            format_cols.push(Col {
                key: key.clone(),
                name,
                kind,
                list,
                per_alt,
            });
        }
        let info_index = info_cols
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key.clone(), i))
            .collect();
        let format_index = format_cols
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key.clone(), i))
            .collect();
        Layout {
            info: info_cols,
            info_index,
            formats: format_cols,
            format_index,
            samples: header.sample_names().iter().cloned().collect(),
            effects,
            split,
            source_uri: source_uri.to_string(),
            file_number,
        }
    }

    pub fn info_fields(&self) -> Fields {
        self.info
            .iter()
            .map(|c| Field::new(&c.name, c.data_type(), true))
            .collect()
    }

    pub fn variants_schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("variant_id", DataType::Int64, false),
            Field::new("chrom", DataType::Utf8, false),
            Field::new("pos", DataType::Int64, false),
            Field::new("end", DataType::Int64, true),
            Field::new("id", DataType::Utf8, true),
            Field::new("ref", DataType::Utf8, true),
            Field::new("alt", list_of(DataType::Utf8), true),
            Field::new("alt_index", DataType::Int32, true),
            Field::new("qual", DataType::Float32, true),
            Field::new("filter", list_of(DataType::Utf8), true),
        ];
        if !self.info.is_empty() {
            fields.push(Field::new(
                "info",
                DataType::Struct(self.info_fields()),
                true,
            ));
        }
        fields.push(Field::new("source_uri", DataType::Utf8, true));
        Arc::new(Schema::new(fields))
    }

    pub fn genotypes_schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("variant_id", DataType::Int64, false),
            Field::new("sample_id", DataType::Utf8, false),
            Field::new("chrom", DataType::Utf8, false),
            Field::new("pos", DataType::Int64, false),
            Field::new("alleles", list_of(DataType::Int32), true),
            Field::new("phased", DataType::Boolean, true),
            Field::new("alt_count", DataType::Int8, true),
        ];
        for c in &self.formats {
            fields.push(Field::new(&c.name, c.data_type(), true));
        }
        Arc::new(Schema::new(fields))
    }
}

pub fn effects_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("variant_id", DataType::Int64, false),
        Field::new("chrom", DataType::Utf8, false),
        Field::new("pos", DataType::Int64, false),
        s("allele"),
        Field::new("alt_index", DataType::Int32, true),
        s("gene"),
        s("gene_id"),
        s("feature"),
        s("biotype"),
        s("effect"),
        s("impact"),
        s("hgvs_c"),
        s("hgvs_p"),
        Field::new("annotation", DataType::Utf8, false),
    ]))
}

/// Lists name their items `element`, as Delta does, so batches match the tables' schemas.
fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("element", t, true)))
}

fn list_builder<T: ArrayBuilder>(values: T, t: DataType) -> ListBuilder<T> {
    list_builder_with_capacity(values, t, 0)
}

fn list_builder_with_capacity<T: ArrayBuilder>(
    values: T,
    t: DataType,
    rows: usize,
) -> ListBuilder<T> {
    ListBuilder::with_capacity(values, rows).with_field(Arc::new(Field::new("element", t, true)))
}

/// A value that disagrees with the header, or a record that could not be read.
#[derive(Debug, Clone)]
pub struct Problem {
    /// 0-based ordinal of the record in the file.
    pub record: u64,
    pub kind: &'static str,
    pub message: String,
    /// Problems of this kind about this key are reported once per file.
    pub once_key: Option<String>,
}

/// The rows of one chunk of records.
pub struct ChunkRows {
    pub variants: RecordBatch,
    pub genotypes: Option<RecordBatch>,
    pub effects: Option<RecordBatch>,
    pub problems: Vec<Problem>,
    pub variant_rows: u64,
    pub genotype_rows: u64,
}

/// A value in one shape for both INFO and FORMAT.
#[derive(Debug, Clone)]
enum V {
    I(i32),
    F(f32),
    Flag,
    S(String),
    Is(Vec<Option<i32>>),
    Fs(Vec<Option<f32>>),
    Ss(Vec<Option<String>>),
}

fn from_info(v: InfoValue<'_>) -> std::io::Result<V> {
    use noodles::vcf::variant::record::info::field::value::Array;
    Ok(match v {
        InfoValue::Integer(n) => V::I(n),
        InfoValue::Float(n) => V::F(n),
        InfoValue::Flag => V::Flag,
        InfoValue::Character(c) => V::S(c.to_string()),
        InfoValue::String(s) => V::S(s.into_owned()),
        InfoValue::Array(Array::Integer(a)) => V::Is(a.iter().collect::<std::io::Result<_>>()?),
        InfoValue::Array(Array::Float(a)) => V::Fs(a.iter().collect::<std::io::Result<_>>()?),
        InfoValue::Array(Array::Character(a)) => V::Ss(
            a.iter()
                .map(|r| r.map(|o| o.map(|c| c.to_string())))
                .collect::<std::io::Result<_>>()?,
        ),
        InfoValue::Array(Array::String(a)) => V::Ss(
            a.iter()
                .map(|r| r.map(|o| o.map(Cow::into_owned)))
                .collect::<std::io::Result<_>>()?,
        ),
    })
}

fn from_sample(v: SampleValue<'_>) -> std::io::Result<V> {
    use noodles::vcf::variant::record::samples::series::value::Array;
    Ok(match v {
        SampleValue::Integer(n) => V::I(n),
        SampleValue::Float(n) => V::F(n),
        SampleValue::Character(c) => V::S(c.to_string()),
        SampleValue::String(s) => V::S(s.into_owned()),
        SampleValue::Genotype(_) => V::S(String::new()),
        SampleValue::Array(Array::Integer(a)) => V::Is(a.iter().collect::<std::io::Result<_>>()?),
        SampleValue::Array(Array::Float(a)) => V::Fs(a.iter().collect::<std::io::Result<_>>()?),
        SampleValue::Array(Array::Character(a)) => V::Ss(
            a.iter()
                .map(|r| r.map(|o| o.map(|c| c.to_string())))
                .collect::<std::io::Result<_>>()?,
        ),
        SampleValue::Array(Array::String(a)) => V::Ss(
            a.iter()
                .map(|r| r.map(|o| o.map(Cow::into_owned)))
                .collect::<std::io::Result<_>>()?,
        ),
    })
}

/// Keep the values of a Number=A (or R) list that belong to ALT allele `alt` (1-based).
fn split_value(v: &V, per_alt: bool, alt: usize) -> V {
    fn pick<T: Clone>(xs: &[Option<T>], per_alt: bool, alt: usize) -> Vec<Option<T>> {
        if per_alt {
            vec![xs.get(alt - 1).cloned().flatten()]
        } else {
            vec![
                xs.first().cloned().flatten(),
                xs.get(alt).cloned().flatten(),
            ]
        }
    }
    match v {
        V::Is(xs) => V::Is(pick(xs, per_alt, alt)),
        V::Fs(xs) => V::Fs(pick(xs, per_alt, alt)),
        V::Ss(xs) => V::Ss(pick(xs, per_alt, alt)),
        other => other.clone(),
    }
}

enum Builder {
    Int(Int32Builder),
    Float(Float32Builder),
    Flag(BooleanBuilder),
    Str(StringBuilder),
    IntList(ListBuilder<Int32Builder>),
    FloatList(ListBuilder<Float32Builder>),
    StrList(ListBuilder<StringBuilder>),
}

impl Builder {
    fn new(c: &Col) -> Builder {
        Builder::with_capacity(c, 0)
    }

    /// A builder sized for `rows` values, so that a chunk's genotype columns (hundreds of
    /// thousands of rows) are not grown by doubling, one copy per doubling.
    fn with_capacity(c: &Col, rows: usize) -> Builder {
        // Lists of Number=R/G hold two or three items for a biallelic site.
        let items = rows * 3;
        match (c.kind, c.list) {
            (Kind::Int, false) => Builder::Int(Int32Builder::with_capacity(rows)),
            (Kind::Float, false) => Builder::Float(Float32Builder::with_capacity(rows)),
            (Kind::Flag, _) => Builder::Flag(BooleanBuilder::with_capacity(rows)),
            (Kind::Str, false) => Builder::Str(StringBuilder::with_capacity(rows, rows * 4)),
            (Kind::Int, true) => Builder::IntList(list_builder_with_capacity(
                Int32Builder::with_capacity(items),
                DataType::Int32,
                rows,
            )),
            (Kind::Float, true) => Builder::FloatList(list_builder_with_capacity(
                Float32Builder::with_capacity(items),
                DataType::Float32,
                rows,
            )),
            (Kind::Str, true) => Builder::StrList(list_builder_with_capacity(
                StringBuilder::with_capacity(items, items * 4),
                DataType::Utf8,
                rows,
            )),
        }
    }

    /// Append a value; `Err` (with a null, or `false` for a flag, appended) when its shape
    /// disagrees with the column's.
    fn append(&mut self, v: Option<&V>) -> Result<(), &'static str> {
        let mismatch = "the value does not match the type the header declares";
        match (self, v) {
            (Builder::Flag(b), v) => {
                b.append_value(matches!(v, Some(V::Flag)) || matches!(v, Some(V::I(1))));
                return match v {
                    None | Some(V::Flag) => Ok(()),
                    _ => Err(mismatch),
                };
            }
            (b, None) => b.append_null(),
            (Builder::Int(b), Some(V::I(n))) => b.append_value(*n),
            (Builder::Int(b), Some(V::Is(xs))) if xs.len() == 1 => b.append_option(xs[0]),
            (Builder::Float(b), Some(V::F(n))) => b.append_value(*n),
            (Builder::Float(b), Some(V::I(n))) => b.append_value(*n as f32),
            (Builder::Float(b), Some(V::Fs(xs))) if xs.len() == 1 => b.append_option(xs[0]),
            (Builder::Str(b), Some(V::S(s))) => b.append_value(s),
            (Builder::Str(b), Some(V::Ss(xs))) => {
                let parts: Vec<&str> = xs.iter().map(|x| x.as_deref().unwrap_or(".")).collect();
                b.append_value(parts.join(","))
            }
            (Builder::IntList(b), Some(V::Is(xs))) => b.append_value(xs.iter().copied()),
            (Builder::IntList(b), Some(V::I(n))) => b.append_value([Some(*n)]),
            (Builder::FloatList(b), Some(V::Fs(xs))) => b.append_value(xs.iter().copied()),
            (Builder::FloatList(b), Some(V::F(n))) => b.append_value([Some(*n)]),
            (Builder::FloatList(b), Some(V::Is(xs))) => {
                b.append_value(xs.iter().map(|x| x.map(|n| n as f32)))
            }
            (Builder::StrList(b), Some(V::Ss(xs))) => b.append_value(xs.iter().cloned()),
            (Builder::StrList(b), Some(V::S(s))) => b.append_value([Some(s.clone())]),
            (b, Some(_)) => {
                b.append_null();
                return Err(mismatch);
            }
        }
        Ok(())
    }

    /// Append a sample's value as `sample_text` read it from `src`. The column's builder
    /// and the reader's slot come from the same declaration, so the shapes agree.
    fn append_text(&mut self, v: &ColValues, src: &str) {
        if !v.present {
            return self.append_null();
        }
        let text = |r: &Option<(usize, usize)>| r.map(|(a, b)| &src[a..b]);
        match self {
            Builder::Int(b) => b.append_option(v.ints.first().copied().filter(|_| v.missing == 0)),
            Builder::Float(b) => {
                b.append_option(v.floats.first().copied().filter(|_| v.missing == 0))
            }
            Builder::Str(b) => b.append_option(v.strs.first().and_then(text)),
            // Lists go in as slices: item-by-item `extend` of AD and GL was 2-3% of an ingest.
            Builder::IntList(b) => {
                append_items(b.values(), &v.ints, &v.valid, v.missing);
                b.append(true);
            }
            Builder::FloatList(b) => {
                append_items(b.values(), &v.floats, &v.valid, v.missing);
                b.append(true);
            }
            Builder::StrList(b) => b.append_value(v.strs.iter().map(text)),
            Builder::Flag(b) => b.append_value(false),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Int(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Flag(b) => b.append_value(false),
            Builder::Str(b) => b.append_null(),
            Builder::IntList(b) => b.append_null(),
            Builder::FloatList(b) => b.append_null(),
            Builder::StrList(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Flag(b) => Arc::new(b.finish()),
            Builder::Str(b) => Arc::new(b.finish()),
            Builder::IntList(b) => Arc::new(b.finish()),
            Builder::FloatList(b) => Arc::new(b.finish()),
            Builder::StrList(b) => Arc::new(b.finish()),
        }
    }
}

/// A list's items, `valid[i]` false where item `i` is missing.
fn append_items<T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
    b: &mut datafusion::arrow::array::PrimitiveBuilder<T>,
    items: &[T::Native],
    valid: &[bool],
    missing: usize,
) {
    if missing == 0 {
        b.append_slice(items);
    } else if missing == items.len() {
        b.append_nulls(missing);
    } else {
        b.append_values(items, valid);
    }
}

/// The `genotypes` columns being built.
struct GenotypeBuilders {
    id: Int64Builder,
    sample: StringBuilder,
    chrom: StringBuilder,
    pos: Int64Builder,
    alleles: ListBuilder<Int32Builder>,
    phased: BooleanBuilder,
    alt_count: Int8Builder,
    formats: Vec<Builder>,
}

impl GenotypeBuilders {
    /// Builders for about `rows` genotype rows.
    fn new(layout: &Layout, rows: usize) -> Self {
        let sample_len = layout.samples.iter().map(String::len).max().unwrap_or(0);
        GenotypeBuilders {
            id: Int64Builder::with_capacity(rows),
            sample: StringBuilder::with_capacity(rows, rows * sample_len),
            chrom: StringBuilder::with_capacity(rows, rows * 5),
            pos: Int64Builder::with_capacity(rows),
            alleles: list_builder_with_capacity(
                Int32Builder::with_capacity(rows * 2),
                DataType::Int32,
                rows,
            ),
            phased: BooleanBuilder::with_capacity(rows),
            alt_count: Int8Builder::with_capacity(rows),
            formats: layout
                .formats
                .iter()
                .map(|c| Builder::with_capacity(c, rows))
                .collect(),
        }
    }

    fn push_keys(&mut self, variant_id: i64, sample: &str, chrom: &str, pos: i64) {
        self.id.append_value(variant_id);
        self.sample.append_value(sample);
        self.chrom.append_value(chrom);
        self.pos.append_value(pos);
    }

    /// The allele columns of a row; `alt` as for [`alt_count`].
    fn push_genotype(&mut self, gt: Option<(&[Option<i32>], bool)>, alt: Option<usize>) {
        match gt {
            Some((alleles, phased)) => {
                self.alleles.append_value(alleles.iter().copied());
                self.phased.append_value(phased);
                self.alt_count.append_option(alt_count(alleles, alt));
            }
            None => {
                self.alleles.append_null();
                self.phased.append_null();
                self.alt_count.append_null();
            }
        }
    }

    fn finish(&mut self, layout: &Layout) -> RecordBatch {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.sample.finish()),
            Arc::new(self.chrom.finish()),
            Arc::new(self.pos.finish()),
            Arc::new(self.alleles.finish()),
            Arc::new(self.phased.finish()),
            Arc::new(self.alt_count.finish()),
        ];
        cols.extend(self.formats.iter_mut().map(Builder::finish));
        RecordBatch::try_new(layout.genotypes_schema(), cols)
            .expect("columns built to the genotypes schema")
    }
}

/// How a FORMAT column is read from sample text: by type, except where noodles' reading
/// differs from a plain parse (Character values, Number=0 fields).
fn slot_for(col: &Col, c: usize, header: &vcf::Header) -> Slot {
    let special = header.formats().get(&col.key).is_some_and(|def| {
        def.ty() == format::Type::Character || def.number() == format::Number::Count(0)
    });
    match (special, col.kind) {
        (true, _) | (_, Kind::Flag) => Slot::Noodles { col: c },
        (_, Kind::Int) => Slot::Int {
            col: c,
            list: col.list,
        },
        (_, Kind::Float) => Slot::Float {
            col: c,
            list: col.list,
        },
        (_, Kind::Str) => Slot::Str {
            col: c,
            list: col.list,
        },
    }
}

/// One sample's genotype and FORMAT values (by column), read through noodles.
fn noodles_sample(
    sample: &dyn vcf::variant::record::samples::Sample,
    header: &vcf::Header,
    slots: &[Slot],
    layout: &Layout,
    s: usize,
    report: &mut dyn FnMut(&'static str, String),
) -> (Option<Gt>, Vec<Option<V>>) {
    let mut gt = None;
    let mut values = vec![None; layout.formats.len()];
    for (i, item) in sample.iter(header).enumerate() {
        let slot = slots.get(i).copied().unwrap_or(Slot::Skip);
        let (key, v) = match item {
            Ok(kv) => kv,
            Err(e) => {
                report(
                    "bad_format_value",
                    format!("FORMAT of sample {}: {e}", layout.samples[s]),
                );
                continue;
            }
        };
        if slot == Slot::Gt {
            match v.map(genotype).transpose() {
                Ok(g) => gt = g.flatten(),
                Err(e) => report(
                    "bad_format_value",
                    format!("FORMAT/GT of sample {}: {e}", layout.samples[s]),
                ),
            }
        } else if let Some(c) = slot.col() {
            match v.map(from_sample).transpose() {
                Ok(v) => values[c] = v,
                Err(e) => report(
                    "bad_format_value",
                    format!("FORMAT/{key} of sample {}: {e}", layout.samples[s]),
                ),
            }
        }
    }
    (gt, values)
}

/// A record's samples as text, where they are text: VCF records read them from it
/// directly (`sample_text`); BCF's are binary and go through noodles.
pub trait SampleText {
    /// `f` called with every sample's text, in order; `None` (without calling it) where
    /// the samples are not text. One split of the record's sample columns serves both the
    /// count check and the rows: noodles' `Samples::len` splits them all just to count.
    fn with_sample_texts<T>(&self, f: impl FnOnce(&[&str]) -> T) -> Option<T>;
}

impl SampleText for vcf::Record {
    fn with_sample_texts<T>(&self, f: impl FnOnce(&[&str]) -> T) -> Option<T> {
        let samples = self.samples();
        let all: Vec<_> = samples.iter().collect();
        let texts: Vec<&str> = all.iter().map(AsRef::as_ref).collect();
        Some(f(&texts))
    }
}

impl SampleText for noodles::bcf::Record {
    fn with_sample_texts<T>(&self, _: impl FnOnce(&[&str]) -> T) -> Option<T> {
        None
    }
}

/// (variant_id, chrom, pos, ALT index, effect, annotation key)
type EffectRow = (i64, String, i64, Option<usize>, Effect, &'static str);

/// One record's genotype: allele indices (None = missing) and whether it is phased.
type Gt = (Vec<Option<i32>>, bool);

fn genotype(v: SampleValue<'_>) -> std::io::Result<Option<Gt>> {
    use noodles::vcf::variant::record::samples::series::value::genotype::Phasing;
    match v {
        SampleValue::Genotype(g) => {
            let mut alleles = Vec::new();
            let mut phased = true;
            for (i, a) in g.iter().enumerate() {
                let (pos, phasing) = a?;
                alleles.push(pos.map(|p| p as i32));
                if i > 0 && phasing != Phasing::Phased {
                    phased = false;
                }
            }
            if alleles.len() < 2 {
                phased = false;
            }
            Ok(Some((alleles, phased)))
        }
        _ => Ok(None),
    }
}

/// Copies of ALT allele `alt` (or of any ALT allele when `None`) in a genotype; null when
/// an allele is missing.
fn alt_count(alleles: &[Option<i32>], alt: Option<usize>) -> Option<i8> {
    let mut n = 0i8;
    for a in alleles {
        let a = (*a)?;
        let counts = match alt {
            Some(k) => a as usize == k,
            None => a > 0,
        };
        if counts {
            n = n.saturating_add(1);
        }
    }
    Some(n)
}

/// The allele an effect names, as an index into ALT: exact, or as VEP writes alleles (the
/// base shared by all alleles dropped, `-` for an empty allele).
fn effect_alt_index(allele: &str, reference: &str, alts: &[String]) -> Option<usize> {
    if let Some(i) = alts.iter().position(|a| a == allele) {
        return Some(i + 1);
    }
    let first = reference.as_bytes().first()?;
    if alts.iter().all(|a| a.as_bytes().first() == Some(first)) {
        let trimmed = |a: &str| -> String {
            let t = &a[1..];
            if t.is_empty() {
                "-".to_string()
            } else {
                t.to_string()
            }
        };
        if let Some(i) = alts.iter().position(|a| trimmed(a) == allele) {
            return Some(i + 1);
        }
    }
    None
}

/// How each of a record's FORMAT keys is read; undeclared and unreadable keys are skipped,
/// with a problem row.
fn slots_for(
    samples: &dyn noodles::vcf::variant::record::Samples,
    header: &vcf::Header,
    layout: &Layout,
    ordinal: u64,
    problems: &mut Vec<Problem>,
) -> Vec<Slot> {
    let mut slots = Vec::new();
    for key in samples.column_names(header) {
        let key = match key {
            Ok(k) => k,
            Err(e) => {
                problems.push(Problem {
                    record: ordinal,
                    kind: "bad_format_value",
                    message: format!("FORMAT: {e}"),
                    once_key: None,
                });
                slots.push(Slot::Skip);
                continue;
            }
        };
        slots.push(if key == "GT" {
            Slot::Gt
        } else if let Some(&c) = layout.format_index.get(key) {
            slot_for(&layout.formats[c], c, header)
        } else {
            problems.push(Problem {
                record: ordinal,
                kind: "undeclared_format",
                message: format!(
                    "FORMAT/{key} is not declared in the header; its values are not kept"
                ),
                once_key: Some(format!("format:{key}")),
            });
            Slot::Skip
        });
    }
    slots
}

/// Convert a chunk of records. `first_record` is the file ordinal of `records[0]`;
/// `first_row` the ordinal of its first `variants` row (rows differ from records when
/// multi-allelic records are split).
pub fn convert<R: Record + SampleText>(
    records: &[R],
    header: &vcf::Header,
    layout: &Layout,
    first_record: u64,
    first_row: u64,
) -> ChunkRows {
    let n_samples = layout.samples.len();
    let mut problems = Vec::new();
    let mut v_id = Int64Builder::new();
    let mut v_chrom = StringBuilder::new();
    let mut v_pos = Int64Builder::new();
    let mut v_end = Int64Builder::new();
    let mut v_ids = StringBuilder::new();
    let mut v_ref = StringBuilder::new();
    let mut v_alt = list_builder(StringBuilder::new(), DataType::Utf8);
    let mut v_alt_index = Int32Builder::new();
    let mut v_qual = Float32Builder::new();
    let mut v_filter = list_builder(StringBuilder::new(), DataType::Utf8);
    let mut v_info: Vec<Builder> = layout.info.iter().map(Builder::new).collect();
    let mut v_source = StringBuilder::new();

    let mut g = GenotypeBuilders::new(layout, records.len() * n_samples);
    let mut scratch = vec![ColValues::default(); layout.formats.len()];
    let mut scratch_gt = GtValues::default();

    let mut effect_rows: Vec<EffectRow> = Vec::new();

    let mut row = first_row;
    for (i, record) in records.iter().enumerate() {
        let ordinal = first_record + i as u64;
        let problem = |kind: &'static str, message: String| Problem {
            record: ordinal,
            kind,
            message,
            once_key: None,
        };
        // The fixed columns: a record without them cannot be placed, so it is skipped.
        let fixed = (|| -> std::io::Result<_> {
            let chrom = record.reference_sequence_name(header)?.to_string();
            let pos = record
                .variant_start()
                .ok_or_else(|| std::io::Error::other("missing POS"))??;
            let pos = usize::from(pos) as i64;
            let reference: Vec<u8> = record
                .reference_bases()
                .iter()
                .collect::<std::io::Result<_>>()?;
            let reference = String::from_utf8_lossy(&reference).into_owned();
            let alts: Vec<String> = record
                .alternate_bases()
                .iter()
                .map(|a| a.map(str::to_string))
                .collect::<std::io::Result<_>>()?;
            let id_list = record.ids();
            let ids: Vec<&str> = id_list.iter().collect();
            let ids = (!ids.is_empty()).then(|| ids.join(";"));
            let qual = record.quality_score().transpose()?;
            let filters: Vec<String> = record
                .filters()
                .iter(header)
                .map(|f| f.map(str::to_string))
                .collect::<std::io::Result<_>>()?;
            let end = match record.variant_end(header) {
                Ok(e) => usize::from(e) as i64,
                Err(_) => pos + reference.len().max(1) as i64 - 1,
            };
            Ok((chrom, pos, reference, alts, ids, qual, filters, end))
        })();
        let (chrom, pos, reference, alts, ids, qual, filters, end) = match fixed {
            Ok(f) => f,
            Err(e) => {
                problems.push(problem("malformed_record", e.to_string()));
                continue;
            }
        };
        let chrom = normalize_chrom(&chrom).into_owned();

        // INFO: typed values for declared keys, effects for annotation keys.
        let mut info_values: Vec<Option<V>> = vec![None; layout.info.len()];
        let mut effects: Vec<(Effect, &'static str)> = Vec::new();
        let info = record.info();
        for field in info.iter(header) {
            match field {
                Ok((key, value)) => {
                    if let Some(&c) = layout.info_index.get(key) {
                        match value.map(from_info).transpose() {
                            Ok(v) => info_values[c] = v,
                            Err(e) => {
                                problems.push(problem("bad_info_value", format!("INFO/{key}: {e}")))
                            }
                        }
                    } else if let Some((l, desc)) =
                        layout.effects.iter().find(|(l, _)| l.key == key)
                    {
                        let entries: Vec<String> = match value.map(from_info).transpose() {
                            Ok(Some(V::Ss(xs))) => xs.into_iter().flatten().collect(),
                            Ok(Some(V::S(s))) => s.split(',').map(str::to_string).collect(),
                            _ => Vec::new(),
                        };
                        let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
                        for e in l.parse(&refs, &alts, desc) {
                            effects.push((e, l.key));
                        }
                    } else {
                        problems.push(Problem {
                            record: ordinal,
                            kind: "undeclared_info",
                            message: format!(
                                "INFO/{key} is not declared in the header; its values are not kept"
                            ),
                            once_key: Some(format!("info:{key}")),
                        });
                    }
                }
                Err(e) => problems.push(problem("bad_info_value", format!("INFO: {e}"))),
            }
        }

        // Samples: each sample's FORMAT values, with the record's keys resolved once.
        let mut gts: Vec<Option<Gt>> = Vec::new();
        let mut format_values: Vec<Vec<Option<V>>> = Vec::new();
        if n_samples > 0 {
            let samples = match record.samples() {
                Ok(s) => s,
                Err(e) => {
                    problems.push(problem("malformed_record", format!("samples: {e}")));
                    continue;
                }
            };
            let sample_count = |count: usize| {
                problem(
                    "sample_count",
                    format!("{count} sample columns where the header names {n_samples}"),
                )
            };
            let mut slots = Vec::new();
            // Without splitting, a record is one row: its genotype rows go straight from
            // the sample text into the builders. VCF text only; BCF's samples are binary.
            let direct = !layout.split && !samples.is_empty() && {
                let variant_id = (layout.file_number << ROW_BITS) | row as i64;
                let alts_len = alts.len();
                let outcome = record.with_sample_texts(|texts| {
                    if texts.len() != n_samples {
                        return Err(texts.len());
                    }
                    slots = slots_for(&*samples, header, layout, ordinal, &mut problems);
                    // The sample read last, when it was read here: a sample with the same
                    // text reads the same, so its values are reused. Neighbouring samples
                    // are often identical (missing, or hom-ref with the same depths):
                    // half of those in the 1000 Genomes-tiled benchmark corpus.
                    let mut last: Option<&str> = None;
                    for (s, &src) in texts.iter().enumerate() {
                        let fast = last == Some(src)
                            || read_sample(src, &slots, &mut scratch, &mut scratch_gt);
                        last = fast.then_some(src);
                        let (gt, values) = if fast {
                            (None, None)
                        } else {
                            let all = record.samples().ok();
                            let sample = all.as_ref().and_then(|all| all.iter().nth(s));
                            let (gt, values) = match sample {
                                Some(sample) => noodles_sample(
                                    sample.as_ref(),
                                    header,
                                    &slots,
                                    layout,
                                    s,
                                    &mut |kind, m| problems.push(problem(kind, m)),
                                ),
                                None => (None, vec![None; layout.formats.len()]),
                            };
                            (gt, Some(values))
                        };
                        let alleles: Option<(&[Option<i32>], bool)> = match (&gt, fast) {
                            (Some(g), _) => Some((&g.0, g.1)),
                            (None, true) if scratch_gt.present => {
                                Some((&scratch_gt.alleles, scratch_gt.phased))
                            }
                            _ => None,
                        };
                        if let Some((a, _)) = alleles {
                            if a.iter().flatten().any(|&a| a as usize > alts_len) {
                                problems.push(problem(
                                    "bad_genotype",
                                    format!(
                                    "sample {}: an allele index past the {alts_len} ALT allele(s)",
                                    layout.samples[s]
                                ),
                                ));
                            }
                        }
                        g.push_keys(variant_id, &layout.samples[s], &chrom, pos);
                        g.push_genotype(alleles, None);
                        for (c, b) in g.formats.iter_mut().enumerate() {
                            let appended = match &values {
                                None => {
                                    b.append_text(&scratch[c], src);
                                    Ok(())
                                }
                                Some(values) => b.append(values[c].as_ref()),
                            };
                            if let Err(why) = appended {
                                problems.push(problem(
                                    "bad_format_value",
                                    format!(
                                        "FORMAT/{} of sample {}: {why}",
                                        layout.formats[c].key, layout.samples[s]
                                    ),
                                ));
                            }
                        }
                    }
                    Ok(())
                });
                match outcome {
                    Some(Ok(())) => true,
                    Some(Err(count)) => {
                        problems.push(sample_count(count));
                        continue;
                    }
                    None => false,
                }
            };
            if !direct {
                if !samples.is_empty() && samples.len() != n_samples {
                    problems.push(sample_count(samples.len()));
                    continue;
                }
                slots = slots_for(&*samples, header, layout, ordinal, &mut problems);
                gts = vec![None; n_samples];
                format_values = vec![vec![None; n_samples]; layout.formats.len()];
                for (s, sample) in samples.iter().enumerate().take(n_samples) {
                    let (gt, values) = noodles_sample(
                        sample.as_ref(),
                        header,
                        &slots,
                        layout,
                        s,
                        &mut |kind, m| problems.push(problem(kind, m)),
                    );
                    gts[s] = gt;
                    for (c, v) in values.into_iter().enumerate() {
                        format_values[c][s] = v;
                    }
                }
                // An allele index past the ALT list is a genotype the header cannot
                // describe.
                for (s, g) in gts.iter().enumerate() {
                    if let Some((alleles, _)) = g {
                        if alleles.iter().flatten().any(|&a| a as usize > alts.len()) {
                            problems.push(problem(
                                "bad_genotype",
                                format!(
                                    "sample {}: an allele index past the {} ALT allele(s)",
                                    layout.samples[s],
                                    alts.len()
                                ),
                            ));
                        }
                    }
                }
            }
        }

        // One row per record, or per ALT allele when splitting.
        let splits: Vec<Option<usize>> = if layout.split && alts.len() > 1 {
            (1..=alts.len()).map(Some).collect()
        } else if layout.split && alts.len() == 1 {
            vec![Some(1)]
        } else {
            vec![None]
        };
        for split in splits {
            let variant_id = (layout.file_number << ROW_BITS) | row as i64;
            row += 1;
            v_id.append_value(variant_id);
            v_chrom.append_value(&chrom);
            v_pos.append_value(pos);
            v_end.append_value(end);
            v_ids.append_option(ids.as_deref());
            v_ref.append_value(&reference);
            match split {
                Some(k) => v_alt.append_value([Some(alts[k - 1].as_str())]),
                None => v_alt.append_value(alts.iter().map(|a| Some(a.as_str()))),
            }
            v_alt_index.append_option(split.map(|k| k as i32));
            v_qual.append_option(qual);
            if filters.is_empty() {
                v_filter.append_null();
            } else {
                v_filter.append_value(filters.iter().map(|f| Some(f.as_str())));
            }
            for (c, b) in v_info.iter_mut().enumerate() {
                let v = match (split, &info_values[c], layout.info[c].per_alt) {
                    (Some(k), Some(v), Some(per_alt)) => Some(split_value(v, per_alt, k)),
                    (_, v, _) => v.clone(),
                };
                if let Err(why) = b.append(v.as_ref()) {
                    problems.push(problem(
                        "bad_info_value",
                        format!("INFO/{}: {why}", layout.info[c].key),
                    ));
                }
            }
            v_source.append_value(&layout.source_uri);
            for (s, gt) in gts.iter().enumerate() {
                g.push_keys(variant_id, &layout.samples[s], &chrom, pos);
                g.push_genotype(gt.as_ref().map(|(a, p)| (a.as_slice(), *p)), split);
                for (c, b) in g.formats.iter_mut().enumerate() {
                    let v = match (split, &format_values[c][s], layout.formats[c].per_alt) {
                        (Some(k), Some(v), Some(per_alt)) => Some(split_value(v, per_alt, k)),
                        (_, v, _) => v.clone(),
                    };
                    if let Err(why) = b.append(v.as_ref()) {
                        problems.push(problem(
                            "bad_format_value",
                            format!(
                                "FORMAT/{} of sample {}: {why}",
                                layout.formats[c].key, layout.samples[s]
                            ),
                        ));
                    }
                }
            }
            for (e, source) in &effects {
                let idx = e
                    .allele
                    .as_deref()
                    .and_then(|a| effect_alt_index(a, &reference, &alts));
                if let Some(k) = split {
                    if idx.is_some_and(|i| i != k) {
                        continue;
                    }
                }
                effect_rows.push((variant_id, chrom.clone(), pos, idx, e.clone(), source));
            }
        }
    }

    let variant_rows = v_id.len() as u64;
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(v_id.finish()),
        Arc::new(v_chrom.finish()),
        Arc::new(v_pos.finish()),
        Arc::new(v_end.finish()),
        Arc::new(v_ids.finish()),
        Arc::new(v_ref.finish()),
        Arc::new(v_alt.finish()),
        Arc::new(v_alt_index.finish()),
        Arc::new(v_qual.finish()),
        Arc::new(v_filter.finish()),
    ];
    if !layout.info.is_empty() {
        let children: Vec<ArrayRef> = v_info.iter_mut().map(Builder::finish).collect();
        cols.push(Arc::new(StructArray::new(
            layout.info_fields(),
            children,
            None,
        )));
    }
    cols.push(Arc::new(v_source.finish()));
    let variants = RecordBatch::try_new(layout.variants_schema(), cols)
        .expect("columns built to the variants schema");

    let genotype_rows = g.id.len() as u64;
    let genotypes = (n_samples > 0).then(|| g.finish(layout));

    let effects = (!layout.effects.is_empty()).then(|| {
        let mut id = Int64Builder::new();
        let mut chrom = StringBuilder::new();
        let mut pos = Int64Builder::new();
        let mut allele = StringBuilder::new();
        let mut alt_index = Int32Builder::new();
        let mut text: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
        let mut source = StringBuilder::new();
        for (v, c, p, idx, e, s) in &effect_rows {
            id.append_value(*v);
            chrom.append_value(c);
            pos.append_value(*p);
            allele.append_option(e.allele.as_deref());
            alt_index.append_option(idx.map(|i| i as i32));
            for (b, val) in text.iter_mut().zip([
                &e.gene, &e.gene_id, &e.feature, &e.biotype, &e.effect, &e.impact, &e.hgvs_c,
                &e.hgvs_p,
            ]) {
                b.append_option(val.as_deref());
            }
            source.append_value(s);
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(chrom.finish()),
            Arc::new(pos.finish()),
            Arc::new(allele.finish()),
            Arc::new(alt_index.finish()),
        ];
        cols.extend(text.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        cols.push(Arc::new(source.finish()));
        RecordBatch::try_new(effects_schema(), cols).expect("columns built to the effects schema")
    });

    ChunkRows {
        variants,
        genotypes,
        effects,
        problems,
        variant_rows,
        genotype_rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alt_counts_are_dosages_and_null_when_an_allele_is_missing() {
        assert_eq!(alt_count(&[Some(0), Some(1)], None), Some(1));
        assert_eq!(alt_count(&[Some(2), Some(1)], None), Some(2));
        assert_eq!(alt_count(&[Some(2), Some(1)], Some(2)), Some(1));
        assert_eq!(alt_count(&[None, Some(1)], None), None);
        assert_eq!(alt_count(&[Some(1)], None), Some(1));
    }

    #[test]
    fn vep_alleles_are_matched_after_trimming_the_shared_base() {
        let alts = vec!["AT".to_string(), "A".to_string()];
        assert_eq!(effect_alt_index("T", "A", &alts), Some(1));
        assert_eq!(effect_alt_index("-", "A", &alts), Some(2));
        assert_eq!(effect_alt_index("AT", "A", &alts), Some(1));
        assert_eq!(effect_alt_index("G", "A", &alts), None);
    }
}
