//! `medlake demo`: build a small deterministic lake from synthetic CT series, then run the
//! example cohorts that ship in `sql/cohorts/` and print their results.

use std::io::Write;
use std::path::Path;

use crate::cli::Format;
use crate::error::{Error, Result};
use crate::ingest::dicom::{ingest_dicom, DicomIngestOptions};
use crate::lake::Lake;

/// The example cohorts, embedded so the binary runs them from any folder.
pub const COHORTS: &[(&str, &str)] = &[
    (
        "thin_slice_chest_ct_women_over_50",
        include_str!("../sql/cohorts/thin_slice_chest_ct_women_over_50.sql"),
    ),
    (
        "series_with_gaps_or_irregular_spacing",
        include_str!("../sql/cohorts/series_with_gaps_or_irregular_spacing.sql"),
    ),
    (
        "patients_with_follow_up_ct",
        include_str!("../sql/cohorts/patients_with_follow_up_ct.sql"),
    ),
    (
        "patient_weight_from_header",
        include_str!("../sql/cohorts/patient_weight_from_header.sql"),
    ),
    (
        "reports_with_affirmed_nodule_and_ct_series",
        include_str!("../sql/cohorts/reports_with_affirmed_nodule_and_ct_series.sql"),
    ),
    (
        "patients_with_alt_allele_in_region_and_their_ct",
        include_str!("../sql/cohorts/patients_with_alt_allele_in_region_and_their_ct.sql"),
    ),
    (
        "egfr_high_impact_carriers_with_ct",
        include_str!("../sql/cohorts/egfr_high_impact_carriers_with_ct.sql"),
    ),
    (
        "large_nodule_not_in_report",
        include_str!("../sql/cohorts/large_nodule_not_in_report.sql"),
    ),
    (
        "series_most_similar_to_a_nodule_series",
        include_str!("../sql/cohorts/series_most_similar_to_a_nodule_series.sql"),
    ),
];

/// A file that marks a folder as a demo lake, so the demo may rebuild it.
const MARKER: &str = ".medlake-demo";

/// Build the demo lake at `dir` (replacing an earlier demo lake there) and run the cohorts.
pub async fn run(dir: &Path, out: &mut dyn Write) -> Result<()> {
    let io = |e| Error::io(dir.display(), e);
    if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
        if !dir.join(MARKER).exists() {
            return Err(Error::Invalid(format!(
                "{} exists and is not a demo lake; choose another --lake",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join(MARKER), "built by `medlake demo`\n").map_err(io)?;
    let sources = dir.join("sources").join("dicom");
    let mut files = crate::synth::write_demo_corpus(&sources)?;
    // Two 512 x 512 chest phantoms with placed nodules, for the findings.
    for p in crate::phantoms::DEMO_PHANTOMS {
        let (slices, _truth) = crate::phantoms::write_phantom_series(
            &sources,
            &dir.join("sources").join("phantom-truth"),
            p,
        )?;
        files.extend(slices);
    }
    let lake = Lake::open(&dir.to_string_lossy())?;
    let opts = DicomIngestOptions {
        collection: "demo".into(),
        progress: false,
        ..Default::default()
    };
    let summary = ingest_dicom(&lake, &[sources.to_string_lossy().into_owned()], &opts).await?;
    let w = |e| Error::io("stdout", e);
    writeln!(
        out,
        "demo lake at {}: {} synthetic CT files, {} ingested, {} errors, lake version {}",
        dir.display(),
        files.len(),
        summary.ingested,
        summary.errors,
        summary.lake_version
    )
    .map_err(w)?;
    let reports_csv = dir.join("sources").join("reports.csv");
    crate::synth::write_demo_reports(&reports_csv)?;
    let phantom_reports_csv = dir.join("sources").join("phantom_reports.csv");
    crate::synth::write_reports(
        &phantom_reports_csv,
        crate::phantoms::PHANTOM_PATIENTS,
        crate::phantoms::PHANTOM_REPORTS,
    )?;
    let ropts = crate::ingest::reports::ReportIngestOptions {
        collection: "demo".into(),
        progress: false,
        ..Default::default()
    };
    let rs = crate::ingest::reports::ingest_reports(
        &lake,
        &[
            reports_csv.to_string_lossy().into_owned(),
            phantom_reports_csv.to_string_lossy().into_owned(),
        ],
        &ropts,
    )
    .await?;
    writeln!(
        out,
        "{} synthetic reports ingested and indexed, lake version {}",
        rs.ingested, rs.lake_version
    )
    .map_err(w)?;
    let (vcfs, links) = crate::synth::write_demo_genomics(&dir.join("sources").join("genomics"))?;
    let vopts = crate::ingest::vcf::VcfIngestOptions {
        collection: "demo".into(),
        progress: false,
        ..Default::default()
    };
    let vcf_inputs: Vec<String> = vcfs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let vs = crate::ingest::vcf::ingest_vcf(&lake, &vcf_inputs, &vopts).await?;
    let ls = crate::ingest::sample_links::link_samples(&lake, &links, "demo").await?;
    writeln!(
        out,
        "{} variants and {} genotypes (1000 Genomes chr22 excerpt, synthetic tumor panel), \
         {} samples linked to patients, lake version {}",
        vs.variants, vs.genotypes, ls.linked, ls.lake_version
    )
    .map_err(w)?;
    let copts = crate::compute::ComputeOptions::default();
    let cs = crate::compute::compute_findings(&lake, &copts).await?;
    writeln!(
        out,
        "CT findings: {} series computed ({} findings, {} errors) on {} in {:.1} s, lake \
         version {}",
        cs.computed, cs.findings, cs.errors, cs.backend, cs.seconds, cs.lake_version
    )
    .map_err(w)?;
    let eopts =
        crate::compute::embeddings::EmbedOptions::new(medlake_udfs::embedding::builtin::NAME);
    let es = crate::compute::embeddings::compute_embeddings(&lake, &eopts).await?;
    writeln!(
        out,
        "Embeddings ({}, {} values each): {} series computed ({} errors) on {} in {:.1} s, \
         lake version {}",
        es.model,
        es.dim.unwrap_or(0),
        es.computed,
        es.errors,
        es.backend,
        es.seconds,
        es.lake_version
    )
    .map_err(w)?;
    let session = crate::session::open_session(&lake, None).await?;
    for (name, sql) in COHORTS {
        let description: Vec<&str> = sql
            .lines()
            .take_while(|l| l.starts_with("--"))
            .map(|l| l.trim_start_matches('-').trim())
            .collect();
        writeln!(out, "\n== {name}\n   {}", description.join("\n   ")).map_err(w)?;
        out.flush().map_err(w)?;
        let mut sink = crate::cli::output_sink(Format::Table)?;
        crate::cli::statements::run_all(&session.ctx, sql, &mut sink).await?;
        sink.finish()?;
    }
    Ok(())
}
