//! Names of the lake's tables. They are part of medlake's contract with its users.

pub const INSTANCES: &str = "instances";
pub const SERIES: &str = "series";
pub const STUDIES: &str = "studies";
pub const PATIENTS: &str = "patients";
pub const INGEST_ERRORS: &str = "ingest_errors";
pub const REPORTS: &str = "reports";
/// Which study each report belongs to, and how that was decided.
pub const REPORT_LINKS: &str = "report_links";

/// One row per VCF/BCF record (or per ALT allele with `--split-multiallelic`).
pub const VARIANTS: &str = "variants";
/// One row per (variant, sample).
pub const GENOTYPES: &str = "genotypes";
/// One row per (variant, allele, transcript) from snpEff ANN/EFF and VEP CSQ.
pub const VARIANT_EFFECTS: &str = "variant_effects";
/// One row per (sample, file).
pub const SAMPLES: &str = "samples";
/// sample_id → PatientID, from `medlake link samples`.
pub const SAMPLE_LINKS: &str = "sample_links";
/// The VCF/BCF files ingested, by content hash: a `started` and a `complete` row each.
pub const VCF_FILES: &str = "vcf_files";

/// One row per CT finding (body, lung, emphysema, nodule, calcification) per series, from
/// `medlake compute findings`.
pub const FINDINGS: &str = "findings";
/// Series whose findings could not be computed, and why.
pub const COMPUTE_ERRORS: &str = "compute_errors";

/// Registered models: name, sha256, preprocessing and output, from `medlake model add`
/// (and the built-in model, once used).
pub const MODELS: &str = "models";
/// One vector per (series, model), from `medlake compute embeddings`.
pub const EMBEDDINGS: &str = "embeddings";

/// Every statement a server ran: who, what, when, how many rows, and whether it failed
/// (two rows per statement: `start` and `end`).
pub const AUDIT_LOG: &str = "audit_log";

/// Every table medlake knows, for lakes whose folders cannot be listed cheaply.
pub const ALL: &[&str] = &[
    INSTANCES,
    SERIES,
    STUDIES,
    PATIENTS,
    INGEST_ERRORS,
    REPORTS,
    REPORT_LINKS,
    VARIANTS,
    GENOTYPES,
    VARIANT_EFFECTS,
    SAMPLES,
    SAMPLE_LINKS,
    VCF_FILES,
    FINDINGS,
    COMPUTE_ERRORS,
    MODELS,
    EMBEDDINGS,
    AUDIT_LOG,
    crate::lake::LAKE_LOG,
];
