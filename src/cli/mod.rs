//! The `medlake` command line: argument parsing and dispatch. Each command is a thin layer
//! over the library; nothing here is needed to use medlake as a library.

mod output;
mod repl;
pub mod statements;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::ingest::dicom::{ingest_dicom, DicomIngestOptions};
use crate::lake::{AsOf, Lake};
use crate::Error;

pub use output::Format;

/// A multimodal data-lake query engine for medicine: DICOM, reports and genomics in SQL.
#[derive(Debug, Parser)]
#[command(name = "medlake", version, about)]
pub struct Cli {
    /// The lake: a folder, or a file://, s3://, gs:// or az:// URL.
    #[arg(long, global = true, env = "MEDLAKE_LAKE")]
    pub lake: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring data into the lake.
    #[command(subcommand)]
    Ingest(IngestCommand),
    /// Run SQL: an interactive shell, or the statements of -c / -f.
    Sql(SqlArgs),
    /// Link genomic samples to patients.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Maintain the lake's search indexes.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Compute derived tables from the images.
    #[command(subcommand)]
    Compute(ComputeCommand),
    /// Register ONNX models in the lake (listed in the `models` table).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Build a small deterministic demo lake from generated CT series and run the example
    /// cohorts in sql/cohorts/ on it.
    Demo,
    /// Serve the lake over the PostgreSQL wire protocol (psql, DBeaver, psycopg, BI tools),
    /// with SCRAM-SHA-256 logins, per-role grants and row policies, and an audit log.
    Serve(ServeArgs),
    /// Manage the server's users file (it holds SCRAM-SHA-256 verifiers, never passwords).
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides `[server] listen`; default 127.0.0.1:5433).
    #[arg(long)]
    pub listen: Option<String>,
    /// The server config: roles, grants, row policies, TLS, users file (see
    /// ARCHITECTURE.md). Without one, only the `admin` role exists.
    #[arg(long, default_value = "medlake.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add (or replace) a user: the password is read from standard input (one line) and
    /// stored as a SCRAM-SHA-256 verifier.
    Add {
        /// The users file (created when missing, mode 0600).
        #[arg(long, default_value = "users.toml")]
        users: PathBuf,
        /// The user's role, defined in the server config (or `admin`).
        #[arg(long)]
        role: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ComputeCommand {
    /// CT findings (body, lungs, %LAA-950 emphysema, nodule candidates, calcifications)
    /// into the `findings` table; series that cannot be computed go to `compute_errors`.
    /// Only series without current findings are computed.
    Findings {
        /// A SQL predicate on `series` columns: which CT series to consider, e.g.
        /// --where "collection = 'lidc' AND slice_spacing_mm <= 2.5".
        #[arg(long = "where", value_name = "PREDICATE")]
        predicate: Option<String>,
        /// Where the filters run: cpu, gpu or auto. Default: MEDLAKE_DEVICE, else auto,
        /// which is the CPU for findings (their GPU path was measured slower than the
        /// CPU on an H100; see BENCHMARKS.md).
        #[arg(long, value_parser = ["cpu", "gpu", "auto"])]
        device: Option<String>,
        /// Retry series already recorded in `compute_errors` by this method version.
        #[arg(long)]
        retry_errors: bool,
        /// Series per commit.
        #[arg(long, default_value_t = 16)]
        commit_every: usize,
    },
    /// Embeddings (the image feature library) into the `embeddings` table: one vector
    /// per CT or MR series for the model. Only series without a current vector are
    /// computed; those the model cannot take go to `compute_errors`.
    Embeddings {
        /// A model from `models` (see `medlake model add`), or the built-in
        /// training-free filter bank.
        #[arg(long, default_value = medlake_udfs::embedding::builtin::NAME)]
        model: String,
        /// A SQL predicate on `series` columns: which series to consider.
        #[arg(long = "where", value_name = "PREDICATE")]
        predicate: Option<String>,
        /// Where the model runs: cpu, gpu or auto. Default: MEDLAKE_DEVICE, else auto: a
        /// hardware GPU for registered models, the CPU for the built-in filter bank.
        #[arg(long, value_parser = ["cpu", "gpu", "auto"])]
        device: Option<String>,
        /// Retry series already recorded in `compute_errors` for this model.
        #[arg(long)]
        retry_errors: bool,
        /// Series per commit.
        #[arg(long, default_value_t = 16)]
        commit_every: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Check an ONNX model (every op supported), store it in the lake and record it, with
    /// how series are prepared for it, in `models`. Adding a name again replaces it.
    Add {
        /// The name SQL uses: embed(uid, 'name'), predict(uid, 'name').
        name: String,
        /// The ONNX file (opsets 7-22; ops listed in ARCHITECTURE.md).
        file: String,
        /// Resample to this spacing first: one value (isotropic) or z,y,x in mm.
        #[arg(long, value_name = "MM")]
        spacing: Option<String>,
        /// Clip to lo,hi (HU for CT) and scale that range to 0..1.
        #[arg(
            long,
            value_name = "LO,HI",
            conflicts_with = "normalize",
            allow_hyphen_values = true
        )]
        window: Option<String>,
        /// Intensity normalization: none, zscore (per volume), or MEAN,STD.
        #[arg(long, value_name = "none|zscore|MEAN,STD", allow_hyphen_values = true)]
        normalize: Option<String>,
        /// The input grid D,H,W after cropping or padding (fixes the output length, which
        /// embed() needs).
        #[arg(long, value_name = "D,H,W")]
        size: Option<String>,
        /// Where to crop or pad to --size: around the volume's center, or around the body.
        #[arg(long, value_parser = ["center", "mask"], default_value = "center")]
        crop: String,
        /// The graph output to read (default: the first).
        #[arg(long, value_name = "NODE")]
        output: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Ingest DICOM headers from files, folders (recursively) and object-store prefixes.
    Dicom {
        /// Files, folders, or URLs: file://, s3://, gs://, az:// (one object, or every object
        /// under a prefix). Cloud credentials come from the usual environment variables.
        #[arg(required = true)]
        inputs: Vec<String>,
        /// Stored in the `collection` column of every row.
        #[arg(long, default_value = "default")]
        collection: String,
        /// Exit with a failure status if any file could not be ingested.
        #[arg(long)]
        strict: bool,
        /// Files per commit.
        #[arg(long, default_value_t = 5000)]
        batch_size: usize,
        #[command(flatten)]
        deid: DeidArgs,
    },
    /// Ingest radiology reports (CSV, JSONL, Parquet, Open-i/IU XML, DICOM SR; `.gz` is
    /// read directly) into the `reports` table and its search index.
    Reports {
        /// Files, folders (recursively) or object-store URLs.
        #[arg(required = true)]
        inputs: Vec<String>,
        /// The format of every input (default: from each file's name).
        #[arg(long, value_enum)]
        format: Option<crate::ingest::reports::Format>,
        /// The language of reports whose source does not say: en, es or zh.
        #[arg(long, default_value = "en")]
        language: String,
        /// Fill a report column from a source field: --map report_id=ImageID --map text=Report.
        /// Columns without a mapping come from the field of the same name.
        #[arg(long = "map", value_name = "COLUMN=FIELD")]
        map: Vec<String>,
        /// Stored in the `collection` column of every row.
        #[arg(long, default_value = "default")]
        collection: String,
        /// Days either side of report_date for linking by PatientID and date.
        #[arg(long, default_value_t = 3)]
        link_window_days: i32,
        /// Exit with a failure status if any record could not be ingested.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        deid: DeidArgs,
    },
    /// Ingest VCF (plain, gzip, bgzip) and BCF files into `variants`, `genotypes`,
    /// `variant_effects` (snpEff ANN/EFF, VEP CSQ) and `samples`.
    Vcf {
        /// Files, folders (recursively; .tbi/.csi index files are passed over) or URLs.
        #[arg(required = true)]
        inputs: Vec<String>,
        /// One `variants` row per ALT allele instead of one per site with lists.
        #[arg(long)]
        split_multiallelic: bool,
        /// Stored in `ingest_errors.collection` for this run's problems.
        #[arg(long, default_value = "default")]
        collection: String,
        /// Exit with a failure status if any file failed or any record had a problem.
        #[arg(long)]
        strict: bool,
    },
}

/// De-identification at ingest (DICOM PS3.15 Annex E); see README.md.
#[derive(Debug, Clone, clap::Args)]
pub struct DeidArgs {
    /// Apply a de-identification profile: `basic` (PS3.15 Annex E Basic Application Level
    /// Confidentiality Profile). Identifiers become keyed pseudonyms (the lake's secret is
    /// `_secrets/deidentify.key`, or MEDLAKE_DEID_SECRET), UIDs are remapped, private
    /// attributes removed, report text scrubbed.
    #[arg(long, value_name = "PROFILE", value_parser = crate::ingest::deidentify::PROFILES)]
    deidentify: Option<String>,
    /// Retain Longitudinal Temporal Information with Modified Dates: move dates by a
    /// per-patient offset instead of removing them.
    #[arg(long, requires = "deidentify")]
    retain_dates: bool,
    /// Retain Patient Characteristics: keep sex, age, size, weight, ethnic group,
    /// smoking and pregnancy status.
    #[arg(long, requires = "deidentify")]
    retain_patient_characteristics: bool,
}

impl DeidArgs {
    fn options(&self) -> Option<crate::ingest::deidentify::ProfileOptions> {
        self.deidentify
            .as_ref()
            .map(|_| crate::ingest::deidentify::ProfileOptions {
                retain_dates: self.retain_dates,
                retain_patient_characteristics: self.retain_patient_characteristics,
            })
    }
}

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Map sample_id to PatientID from a CSV with a header row (columns `sample_id` and
    /// `PatientID`) into `sample_links`. Idempotent; conflicting mappings are reported in
    /// `ingest_errors` and not applied.
    Samples {
        csv: PathBuf,
        /// The collection the samples were ingested into (`ingest vcf --collection`): links
        /// are per collection, and stored in its `collection` column.
        #[arg(long, default_value = "default")]
        collection: String,
        /// Give each PatientID the pseudonym `ingest dicom --deidentify basic` gives it.
        #[arg(long, value_name = "PROFILE", value_parser = crate::ingest::deidentify::PROFILES)]
        deidentify: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Rebuild an index from its table (the only index today: `reports`).
    Rebuild {
        #[arg(value_parser = ["reports"])]
        index: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// SQL to run (several statements separated by `;`). May be repeated.
    #[arg(short = 'c', long = "command")]
    pub commands: Vec<String>,
    /// A file of SQL statements to run.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write results to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Read the lake as of a lake version (a number) or a timestamp (RFC 3339, or a date).
    #[arg(long)]
    pub as_of: Option<String>,
}

/// Default lake location when neither --lake nor MEDLAKE_LAKE is given.
pub const DEFAULT_LAKE: &str = "./lake";
/// Default demo lake, so that `medlake demo` never writes into a real lake by accident.
pub const DEFAULT_DEMO_LAKE: &str = "./demo-lake";

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medlake: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("medlake: {e}");
            ExitCode::FAILURE
        }
    };
    // Every command has awaited its own work (commits included) by now. Not joining the
    // workers spares their thread-exit heap teardown (45 ms after a PadChest ingest);
    // the process ends here anyway.
    rt.shutdown_background();
    code
}

/// A command's summary on stdout: a sentence at a terminal (and, where rows went to a
/// table, the query that shows them), one JSON object for scripts. Exit status 2 when
/// `failed`.
fn print_summary<S: serde::Serialize>(
    summary: &S,
    line: String,
    see: Option<&str>,
    failed: bool,
) -> ExitCode {
    if std::io::stdout().is_terminal() {
        println!("{line}");
        if let Some(query) = see {
            println!("see: medlake sql -c \"{query}\"");
        }
    } else {
        println!(
            "{}",
            serde_json::to_string(summary).expect("the summary serializes")
        );
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

async fn run(cli: Cli) -> crate::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let lake = Lake::open(cli.lake.as_deref().unwrap_or(DEFAULT_LAKE))?;
            let mut config = if args.config.exists() {
                crate::server::config::Config::load(&args.config)?
            } else if args.config == std::path::Path::new("medlake.toml") {
                crate::server::config::Config {
                    server: crate::server::config::ServerSection {
                        users: Some("users.toml".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                }
            } else {
                return Err(Error::Invalid(format!(
                    "--config {}: no such file",
                    args.config.display()
                )));
            };
            if let Some(listen) = args.listen {
                config.server.listen = listen;
                config.check()?;
            }
            crate::server::serve(lake, config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::User(UserCommand::Add { users, role, name }) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| Error::io("standard input", e))?;
            let password = password.trim_end_matches(['\r', '\n']);
            crate::server::scram::add_user(&users, &name, &role, password)?;
            println!("{}: user {name:?} (role {role:?}) saved", users.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest(IngestCommand::Dicom {
            inputs,
            collection,
            strict,
            batch_size,
            deid,
        }) => {
            let lake = Lake::open(cli.lake.as_deref().unwrap_or(DEFAULT_LAKE))?;
            let opts = DicomIngestOptions {
                collection,
                batch_size,
                deidentify: deid.options(),
                ..Default::default()
            };
            let summary = ingest_dicom(&lake, &inputs, &opts).await?;
            let line = format!(
                "{} files: {} ingested, {} duplicates, {} errors in {:.2} s ({:.0} files/s); lake version {}",
                summary.files_seen,
                summary.ingested,
                summary.duplicates,
                summary.errors,
                summary.seconds,
                summary.files_seen as f64 / summary.seconds.max(1e-9),
                summary.lake_version
            );
            let see = (summary.errors > 0).then_some("SELECT * FROM ingest_errors");
            Ok(print_summary(
                &summary,
                line,
                see,
                strict && summary.errors > 0,
            ))
        }
        Command::Ingest(IngestCommand::Reports {
            inputs,
            format,
            language,
            map,
            collection,
            link_window_days,
            strict,
            deid,
        }) => {
            let lake = Lake::open(cli.lake.as_deref().unwrap_or(DEFAULT_LAKE))?;
            let mapping =
                crate::ingest::reports::Mapping::parse(&map).map_err(crate::Error::Invalid)?;
            let opts = crate::ingest::reports::ReportIngestOptions {
                collection,
                format,
                language,
                mapping,
                link_window_days,
                deidentify: deid.options(),
                ..Default::default()
            };
            let s = crate::ingest::reports::ingest_reports(&lake, &inputs, &opts).await?;
            let line = format!(
                "{} records from {} files: {} ingested ({} replaced), {} duplicates, {} errors, \
                 {} with warnings, in {:.2} s ({:.0} reports/s); lake version {}",
                s.records_seen,
                s.files_seen,
                s.ingested,
                s.replaced,
                s.duplicates,
                s.errors,
                s.warnings,
                s.seconds,
                s.records_seen as f64 / s.seconds.max(1e-9),
                s.lake_version
            );
            let see = (s.errors + s.warnings > 0)
                .then_some("SELECT * FROM ingest_errors WHERE source = 'reports'");
            Ok(print_summary(&s, line, see, strict && s.errors > 0))
        }
        Command::Ingest(IngestCommand::Vcf {
            inputs,
            split_multiallelic,
            collection,
            strict,
        }) => {
            let lake = Lake::open(cli.lake.as_deref().unwrap_or(DEFAULT_LAKE))?;
            let opts = crate::ingest::vcf::VcfIngestOptions {
                collection,
                split_multiallelic,
                progress: std::io::stderr().is_terminal(),
                ..Default::default()
            };
            let s = crate::ingest::vcf::ingest_vcf(&lake, &inputs, &opts).await?;
            let line = format!(
                "{} files: {} ingested, {} duplicates, {} failed; {} records, {} variants, \
                 {} genotypes, {} effects, {} problems, in {:.2} s ({:.0} records/s); lake version {}",
                s.files_seen,
                s.ingested,
                s.duplicates,
                s.failed,
                s.records,
                s.variants,
                s.genotypes,
                s.effects,
                s.problems,
                s.seconds,
                s.records as f64 / s.seconds.max(1e-9),
                s.lake_version
            );
            let see =
                (s.problems > 0).then_some("SELECT * FROM ingest_errors WHERE source = 'vcf'");
            let failed = s.failed > 0 || s.problems > 0;
            Ok(print_summary(&s, line, see, strict && failed))
        }
        Command::Link(LinkCommand::Samples {
            csv,
            collection,
            deidentify,
        }) => {
            let lake = Lake::open(cli.lake.as_deref().unwrap_or(DEFAULT_LAKE))?;
            let deid = match deidentify {
                Some(_) => Some(
                    crate::ingest::deidentify::Deidentifier::open(&lake, Default::default())
                        .await?,
                ),
                None => None,
            };
            let s = crate::ingest::sample_links::link_samples_with(
                &lake,
                &csv,
                &collection,
                deid.as_deref(),
            )
            .await?;
            let line = format!(
                "{} rows: {} linked, {} already linked, {} conflicts, {} invalid; lake version {}",
                s.rows_seen, s.linked, s.already_linked, s.conflicts, s.invalid, s.lake_version
            );
            Ok(print_summary(&s, line, None, s.conflicts + s.invalid > 0))
        }
        Command::Index(IndexCommand::Rebuild { index: _ }) => {
            let lake = Lake::open(cli.lake.as_deref().unwrap_or(DEFAULT_LAKE))?;
            let started = std::time::Instant::now();
            if lake.table(crate::tables::REPORTS).await?.is_none() {
                return Err(crate::Error::Invalid(
                    "the lake has no reports table to index".into(),
                ));
            }
            let index = crate::search::ReportIndex::rebuild_lake(&lake).await?;
            println!(
                "reports index rebuilt at table version {} in {:.2} s",
                index.version().unwrap_or(0),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql(args) => {
            let lake = Lake::open(cli.lake.as_deref().unwrap_or(DEFAULT_LAKE))?;
            let as_of = args.as_of.as_deref().map(str::parse::<AsOf>).transpose()?;
            let mut sql = args.commands.join(";\n");
            if let Some(f) = &args.file {
                let text =
                    std::fs::read_to_string(f).map_err(|e| crate::Error::io(f.display(), e))?;
                sql.push_str(";\n");
                sql.push_str(&text);
            }
            if sql.trim().trim_matches(';').trim().is_empty() {
                let session = crate::session::open_session(&lake, as_of.as_ref()).await?;
                repl::run(&session, &lake).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let session =
                crate::session::open_session_for_script(&lake, as_of.as_ref(), &sql).await?;
            let mut sink = output::Sink::open(args.format, args.output.as_deref())?;
            statements::run_all(&session.ctx, &sql, &mut sink).await?;
            sink.finish()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Compute(ComputeCommand::Findings {
            predicate,
            device,
            retry_errors,
            commit_every,
        }) => {
            let lake = Lake::open(cli.lake.as_deref().unwrap_or(DEFAULT_LAKE))?;
            let opts = crate::compute::ComputeOptions {
                predicate,
                device,
                retry_errors,
                progress: std::io::stderr().is_terminal(),
                commit_every,
            };
            let s = crate::compute::compute_findings(&lake, &opts).await?;
            println!(
                "{} CT series selected: {} computed ({} findings), {} already current, {} errors \
                 (see compute_errors); backend {}, {} in {:.2} s; lake version {}",
                s.series_selected,
                s.computed,
                s.findings,
                s.already_current,
                s.errors,
                s.backend,
                s.method_version,
                s.seconds,
                s.lake_version
            );
            if s.computed > 0 {
                let stages: Vec<String> = s
                    .stages
                    .iter()
                    .map(|(n, t)| format!("{n} {t:.2} s"))
                    .collect();
                println!("stages: {}", stages.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Compute(ComputeCommand::Embeddings {
            model,
            predicate,
            device,
            retry_errors,
            commit_every,
        }) => {
            let lake = Lake::open(cli.lake.as_deref().unwrap_or(DEFAULT_LAKE))?;
            let opts = crate::compute::embeddings::EmbedOptions {
                model,
                run: crate::compute::ComputeOptions {
                    predicate,
                    device,
                    retry_errors,
                    progress: std::io::stderr().is_terminal(),
                    commit_every,
                },
            };
            let s = crate::compute::embeddings::compute_embeddings(&lake, &opts).await?;
            println!(
                "{} CT/MR series selected: {} computed, {} already current, {} errors (see \
                 compute_errors); model {} (sha256 {}), backend {}, {:.2} s; lake version {}",
                s.series_selected,
                s.computed,
                s.already_current,
                s.errors,
                s.model,
                &s.model_sha256[..12],
                s.backend,
                s.seconds,
                s.lake_version
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Model(ModelCommand::Add {
            name,
            file,
            spacing,
            window,
            normalize,
            size,
            crop,
            output,
        }) => {
            let lake = Lake::open(cli.lake.as_deref().unwrap_or(DEFAULT_LAKE))?;
            let preprocess = preprocess_args(
                spacing.as_deref(),
                window.as_deref(),
                normalize.as_deref(),
                size.as_deref(),
                &crop,
            )?;
            let add = crate::models::AddModel {
                name,
                path: file,
                preprocess,
                output,
            };
            let (entry, wrote) = crate::models::add_model(&lake, &add).await?;
            println!(
                "model {} (sha256 {}) {}; input: {}; output: {} ({})",
                entry.name,
                entry.sha256,
                if wrote {
                    "recorded"
                } else {
                    "already recorded, unchanged"
                },
                entry.preprocess.describe(),
                entry.output.as_deref().unwrap_or("the first graph output"),
                entry
                    .output_dim
                    .map_or("length per series".to_string(), |d| format!("{d} values")),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            let lake_dir = cli.lake.unwrap_or_else(|| DEFAULT_DEMO_LAKE.to_string());
            crate::demo::run(std::path::Path::new(&lake_dir), &mut std::io::stdout()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `model add`'s preprocessing options.
fn preprocess_args(
    spacing: Option<&str>,
    window: Option<&str>,
    normalize: Option<&str>,
    size: Option<&str>,
    crop: &str,
) -> crate::Result<medlake_udfs::embedding::Preprocess> {
    use medlake_udfs::embedding::{Crop, Normalize, Preprocess};
    fn numbers<T: std::str::FromStr>(flag: &str, v: &str) -> crate::Result<Vec<T>> {
        v.split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .map_err(|_| Error::Invalid(format!("{flag} {v:?}: {x:?} is not a number")))
            })
            .collect()
    }
    let spacing_mm = match spacing {
        None => None,
        Some(v) => {
            let s: Vec<f64> = numbers("--spacing", v)?;
            if s.iter().any(|x| !(*x > 0.0 && x.is_finite())) {
                return Err(Error::Invalid(format!("--spacing {v:?}: must be positive")));
            }
            match s.as_slice() {
                [x] => Some([*x; 3]),
                [z, y, x] => Some([*z, *y, *x]),
                _ => {
                    return Err(Error::Invalid(format!(
                        "--spacing {v:?}: one value or z,y,x"
                    )))
                }
            }
        }
    };
    let (window, mut normalize_spec) = match window {
        None => (None, Normalize::None),
        Some(v) => match numbers::<f32>("--window", v)?.as_slice() {
            [lo, hi] if lo < hi => (Some([*lo, *hi]), Normalize::Scale { lo: *lo, hi: *hi }),
            _ => {
                return Err(Error::Invalid(format!(
                    "--window {v:?}: expected LO,HI with LO < HI"
                )))
            }
        },
    };
    if let Some(v) = normalize {
        normalize_spec = match v {
            "none" => Normalize::None,
            "zscore" => Normalize::ZScore,
            other => match numbers::<f32>("--normalize", other)?.as_slice() {
                [mean, std] if *std > 0.0 => Normalize::MeanStd {
                    mean: *mean,
                    std: *std,
                },
                _ => {
                    return Err(Error::Invalid(format!(
                        "--normalize {v:?}: none, zscore or MEAN,STD (STD > 0)"
                    )))
                }
            },
        };
    }
    let size = match size {
        None => None,
        Some(v) => match numbers::<usize>("--size", v)?.as_slice() {
            [d, h, w] if *d > 0 && *h > 0 && *w > 0 => Some([*d, *h, *w]),
            _ => return Err(Error::Invalid(format!("--size {v:?}: expected D,H,W"))),
        },
    };
    Ok(Preprocess {
        spacing_mm,
        window,
        normalize: normalize_spec,
        size,
        crop: if crop == "mask" {
            Crop::Mask
        } else {
            Crop::Center
        },
    })
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.to_possible_value().expect("no skipped variants");
        f.write_str(s.get_name())
    }
}

/// A sink on standard output, for callers outside the CLI (the demo).
pub fn output_sink(format: Format) -> crate::Result<output::Sink> {
    output::Sink::open(format, None)
}
