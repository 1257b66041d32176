//! medlake's SQL functions.
//!
//! - `dicom_tag(dicom_json, path)`: any element of an instance's header (see [`dicom_tag`]).
//! - `report_search(query [, options])` and `text_match(column, query)`: report search
//!   (see [`report_search`]).
//! - `in_region(chrom, pos [, end], region)`: genomic regions, pruned on `variants` and
//!   `genotypes` (see [`crate::genomics::in_region`]).
//! - `vcf_scan(file [, region])`: a raw VCF/BCF file, through its index when it has one.
//! - `lake_version()`: the lake version and table versions this session reads.
//! - `as_of(table, version_or_timestamp)`: a table as it was at an earlier lake version.
//! - `ct_findings(SeriesInstanceUID)`: a CT series' findings, from `findings` or computed
//!   (see [`ct_findings`]); `SET medlake.device` chooses where.
//! - `embed(uid [, model])`, `predict(uid, model)`, `cosine_similarity(a, b)` and
//!   `similar_series(uid_or_vector, k [, model])`: the feature library (see [`embed`]).

pub mod ct_findings;
pub mod dicom_tag;
pub mod embed;
pub mod guard;
pub mod report_search;
pub mod time_travel;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::prelude::SessionContext;

use crate::lake::Lake;

/// The text of a string literal argument (Utf8, LargeUtf8, Utf8View, or one of those
/// dictionary- or run-end-encoded), or `None` for any other expression: for the functions
/// whose query, region or path must be known at planning (report_search, vcf_scan,
/// in_region).
pub fn literal_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(v, _) => v.try_as_str().flatten().map(str::to_string),
        _ => None,
    }
}

/// Register the functions that need no lake.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(dicom_tag::DicomTag::new()));
    ctx.register_udf(ScalarUDF::from(report_search::TextMatch::new()));
    ctx.register_udf(ScalarUDF::from(crate::genomics::in_region::InRegion::new()));
    ctx.register_udf(ScalarUDF::from(embed::CosineSimilarity::new()));
    ctx.register_udtf(
        "vcf_scan",
        std::sync::Arc::new(crate::genomics::vcf_scan::VcfScanFunc),
    );
}

/// Register the functions that read the lake itself.
pub fn register_lake(
    ctx: &SessionContext,
    lake: &Lake,
    lake_version: Option<i64>,
    table_versions: &BTreeMap<String, i64>,
    reports_index: Option<Arc<crate::search::ReportIndex>>,
    models: embed::Models,
    visibility: Option<Arc<dyn guard::SeriesVisibility>>,
) {
    // Under row policies the series functions see only the series the session may see.
    let guarded = |f: Arc<dyn datafusion::logical_expr::async_udf::AsyncScalarUDFImpl>| {
        let f: Arc<dyn datafusion::logical_expr::async_udf::AsyncScalarUDFImpl> = match &visibility
        {
            Some(v) => Arc::new(guard::SeriesGuarded::new(f, v.clone())),
            None => f,
        };
        datafusion::logical_expr::async_udf::AsyncScalarUDF::new(f).into_scalar_udf()
    };
    ctx.register_udtf(
        "report_search",
        Arc::new(report_search::ReportSearchFunc {
            index: reports_index,
        }),
    );
    ctx.register_udtf(
        "lake_version",
        Arc::new(time_travel::LakeVersionFunc {
            lake_version,
            table_versions: table_versions.clone(),
        }),
    );
    ctx.register_udtf(
        "as_of",
        Arc::new(time_travel::AsOfFunc { lake: lake.clone() }),
    );
    let versions = ct_findings::Versions {
        instances: table_versions.get(crate::tables::INSTANCES).copied(),
        findings: table_versions.get(crate::tables::FINDINGS).copied(),
    };
    let metrics = Arc::new(ct_findings::ComputeMetrics::default());
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(metrics.clone());
    ctx.register_udf(guarded(Arc::new(ct_findings::CtFindings::new(
        lake.clone(),
        versions.clone(),
        metrics.clone(),
    ))));
    let embeddings = table_versions.get(crate::tables::EMBEDDINGS).copied();
    for predict in [false, true] {
        ctx.register_udf(guarded(Arc::new(embed::EmbedFunc::new(
            predict,
            lake.clone(),
            models.clone(),
            versions.instances,
            embeddings,
            metrics.clone(),
        ))));
    }
    ctx.register_udtf(
        "similar_series",
        Arc::new(embed::SimilarSeriesFunc {
            lake: lake.clone(),
            models,
            embeddings_version: embeddings,
            visibility,
        }),
    );
}
