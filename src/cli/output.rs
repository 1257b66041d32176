//! Writing query results as a table, CSV (with a header row), JSON or Parquet.
//!
//! CSV, JSON and Parquet are streamed batch by batch, so a large result never sits in
//! memory; the table format must see every row to size its columns, so it collects.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

enum Current {
    None,
    Table(SchemaRef, Vec<RecordBatch>),
    Csv(datafusion::arrow::csv::Writer<Box<dyn Write + Send>>),
    Json(datafusion::arrow::json::ArrayWriter<Box<dyn Write + Send>>),
    Parquet(ArrowWriter<Box<dyn Write + Send>>),
}

/// Where results go: standard output or a file, in one format.
pub struct Sink {
    format: Format,
    out: Option<Box<dyn Write + Send>>,
    current: Current,
    results: usize,
}

impl Sink {
    pub fn open(format: Format, path: Option<&Path>) -> Result<Self> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(BufWriter::new(
                File::create(p).map_err(|e| Error::io(p.display(), e))?,
            )),
            None => Box::new(BufWriter::new(std::io::stdout())),
        };
        Ok(Sink {
            format,
            out: Some(out),
            current: Current::None,
            results: 0,
        })
    }

    fn take_out(&mut self) -> Result<Box<dyn Write + Send>> {
        self.out
            .take()
            .ok_or_else(|| Error::Invalid("the output was already closed".into()))
    }

    pub fn begin(&mut self, schema: SchemaRef) -> Result<()> {
        self.results += 1;
        if self.format == Format::Parquet && self.results > 1 {
            return Err(Error::Invalid(
                "--format parquet writes one result: the script has several queries".into(),
            ));
        }
        self.current = match self.format {
            Format::Table => Current::Table(schema, Vec::new()),
            Format::Csv => Current::Csv(
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(self.take_out()?),
            ),
            Format::Json => {
                Current::Json(datafusion::arrow::json::ArrayWriter::new(self.take_out()?))
            }
            Format::Parquet => Current::Parquet(
                ArrowWriter::try_new(self.take_out()?, schema, None)
                    .map_err(|e| Error::Invalid(format!("parquet output: {e}")))?,
            ),
        };
        Ok(())
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.current {
            Current::None => {}
            Current::Table(_, b) => b.push(batch.clone()),
            Current::Csv(w) => w.write(batch)?,
            Current::Json(w) => w.write(batch)?,
            Current::Parquet(w) => w
                .write(batch)
                .map_err(|e| Error::Invalid(format!("parquet output: {e}")))?,
        }
        Ok(())
    }

    pub fn end(&mut self) -> Result<()> {
        let io = |e| Error::io("output", e);
        match std::mem::replace(&mut self.current, Current::None) {
            Current::None => {}
            Current::Table(schema, batches) => {
                let out = self.out.as_mut().expect("table output keeps its writer");
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                let text = if batches.is_empty() {
                    datafusion::arrow::util::pretty::pretty_format_batches(&[
                        RecordBatch::new_empty(schema),
                    ])?
                } else {
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
                };
                writeln!(out, "{text}").map_err(io)?;
                writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" }).map_err(io)?;
            }
            Current::Csv(w) => self.out = Some(w.into_inner()),
            Current::Json(mut w) => {
                w.finish()?;
                let mut out = w.into_inner();
                writeln!(out).map_err(io)?;
                self.out = Some(out);
            }
            Current::Parquet(w) => {
                w.close()
                    .map_err(|e| Error::Invalid(format!("parquet output: {e}")))?;
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(|e| Error::io("output", e))?;
        }
        Ok(())
    }
}
