//! `vcf_scan('file.vcf.gz' [, 'chr7:55019017-55211628'])`: the records of a raw VCF or
//! BCF file, without ingesting it, as `variants` rows (typed `info` from its header).
//!
//! With a region and a tabix (`.tbi`) or CSI (`.csi`) index beside a bgzipped VCF, only
//! the indexed blocks that can hold the region are read (noodles' indexed reader). Without
//! an index, or for BCF, the file is streamed and records outside the region are dropped.
//! A region keeps the records that overlap it, as `bcftools view -r` does. Records stream
//! out in chunks, so memory stays bounded whatever the file's size.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, Result};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use noodles::vcf;

use super::{chrom_spellings, Region};
use crate::functions::literal_text;
use crate::ingest::vcf::convert::{self, Layout};

const CHUNK: usize = 2048;

#[derive(Debug, Default)]
pub struct VcfScanFunc;

impl TableFunctionImpl for VcfScanFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let (Some(path), true) = (exprs.first().and_then(literal_text), exprs.len() <= 2) else {
            return plan_err!(
                "vcf_scan('file.vcf.gz' [, 'chr7:1-1000']): a file path and an optional region"
            );
        };
        let region = match exprs.get(1) {
            None => None,
            Some(e) => match literal_text(e) {
                Some(r) => Some(Region::parse(&r).map_err(|e| {
                    datafusion::error::DataFusionError::Plan(format!("vcf_scan: {e}"))
                })?),
                None => return plan_err!("vcf_scan: the region must be a text literal"),
            },
        };
        let header = read_header(&path).map_err(|e| {
            datafusion::error::DataFusionError::Plan(format!("vcf_scan: {path}: {e}"))
        })?;
        let layout = Layout::from_header(&header, false, &path, 0);
        Ok(Arc::new(VcfScanTable {
            schema: layout.variants_schema(),
            source: Arc::new(Source {
                path,
                region,
                header: Arc::new(header),
                layout,
            }),
        }))
    }
}

#[derive(Debug)]
struct Source {
    path: String,
    region: Option<Region>,
    header: Arc<vcf::Header>,
    layout: Layout,
}

/// The decompressed bytes of a file: gzip and bgzip (any number of members) or plain.
fn open_stream(path: &str) -> std::io::Result<Box<dyn std::io::BufRead + Send>> {
    crate::ingest::vcf::stream::decompressed(Box::new(std::fs::File::open(path)?))
}

fn is_bcf(path: &str) -> std::io::Result<bool> {
    Ok(open_stream(path)?.fill_buf()?.starts_with(b"BCF"))
}

fn read_header(path: &str) -> std::io::Result<vcf::Header> {
    if is_bcf(path)? {
        return noodles::bcf::io::Reader::from(open_stream(path)?).read_header();
    }
    vcf::io::Reader::new(open_stream(path)?).read_header()
}

#[derive(Debug)]
struct VcfScanTable {
    schema: SchemaRef,
    source: Arc<Source>,
}

#[async_trait]
impl TableProvider for VcfScanTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let part: Arc<dyn PartitionStream> = Arc::new(ScanPartition {
            schema: self.schema.clone(),
            source: self.source.clone(),
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            self.schema.clone(),
            vec![part],
            projection,
            vec![],
            false,
            limit,
        )?))
    }
}

#[derive(Debug)]
struct ScanPartition {
    schema: SchemaRef,
    source: Arc<Source>,
}

impl PartitionStream for ScanPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let source = self.source.clone();
        std::thread::spawn(move || {
            if let Err(e) = read(&source, &tx) {
                let _ = tx.blocking_send(Err(datafusion::error::DataFusionError::Execution(
                    format!("vcf_scan: {}: {e}", source.path),
                )));
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

type Tx = tokio::sync::mpsc::Sender<Result<datafusion::arrow::array::RecordBatch>>;

/// Whether a record overlaps the region (no region: every record).
fn keep<R: vcf::variant::Record>(rec: &R, header: &vcf::Header, region: Option<&Region>) -> bool {
    let Some(region) = region else {
        return true;
    };
    let (Ok(chrom), Some(Ok(pos))) = (rec.reference_sequence_name(header), rec.variant_start())
    else {
        return false;
    };
    let pos = usize::from(pos) as i64;
    let end = rec
        .variant_end(header)
        .map(|e| usize::from(e) as i64)
        .unwrap_or(pos);
    region.overlaps(chrom, pos, end)
}

/// Send chunks of converted records; `false` when the query has stopped reading.
fn flush<R: vcf::variant::Record + convert::SampleText>(
    batch: &mut Vec<R>,
    source: &Source,
    ordinal: &mut u64,
    tx: &Tx,
) -> bool {
    if batch.is_empty() {
        return true;
    }
    let rows = convert::convert(batch, &source.header, &source.layout, *ordinal, *ordinal);
    *ordinal += batch.len() as u64;
    batch.clear();
    tx.blocking_send(Ok(rows.variants)).is_ok()
}

/// Convert and send the records that overlap the region, a chunk at a time.
fn stream<R: vcf::variant::Record + convert::SampleText>(
    records: impl Iterator<Item = std::io::Result<R>>,
    source: &Source,
    region: Option<&Region>,
    tx: &Tx,
) -> std::io::Result<()> {
    let mut ordinal = 0u64;
    let mut batch = Vec::with_capacity(CHUNK);
    for rec in records {
        let rec = rec?;
        if keep(&rec, &source.header, region) {
            batch.push(rec);
        }
        if batch.len() == CHUNK && !flush(&mut batch, source, &mut ordinal, tx) {
            return Ok(());
        }
    }
    flush(&mut batch, source, &mut ordinal, tx);
    Ok(())
}

fn read(source: &Source, tx: &Tx) -> std::io::Result<()> {
    let header = &source.header;
    let region = source.region.as_ref();
    if is_bcf(&source.path)? {
        let mut r = noodles::bcf::io::Reader::from(open_stream(&source.path)?);
        r.read_header()?;
        return stream(r.records(), source, region, tx);
    }
    // An index and a region: read only the blocks the index names, for the spelling of
    // the chromosome that this file uses.
    if let Some(region) = region {
        if let Ok(mut r) = vcf::io::indexed_reader::Builder::default().build_from_path(&source.path)
        {
            r.read_header()?;
            let names: Vec<String> = r
                .index()
                .header()
                .map(|h| {
                    h.reference_sequence_names()
                        .iter()
                        .map(|n| n.to_string())
                        .collect()
                })
                .unwrap_or_default();
            let Some(name) = chrom_spellings(&region.chrom)
                .into_iter()
                .find(|s| names.is_empty() || names.contains(s))
            else {
                return Ok(());
            };
            // noodles reads `name:start` as "from start to the end", as samtools does.
            let text = if region.end == i64::MAX {
                format!("{name}:{}", region.start)
            } else {
                format!("{name}:{}-{}", region.start, region.end)
            };
            let q: noodles::core::Region = text.parse().map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{text}: {e}"))
            })?;
            let query = r.query(header, &q)?;
            return stream(query.records(), source, Some(region), tx);
        }
    }
    let mut r = vcf::io::Reader::new(open_stream(&source.path)?);
    r.read_header()?;
    stream(r.records(), source, region, tx)
}
