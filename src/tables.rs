//! Names of the lake's tables. They are part of medlake's contract with its users.

pub const INSTANCES: &str = "instances";
pub const SERIES: &str = "series";
pub const STUDIES: &str = "studies";
pub const PATIENTS: &str = "patients";
pub const INGEST_ERRORS: &str = "ingest_errors";
pub const REPORTS: &str = "reports";
/// Which study each report belongs to, and how that was decided.
pub const REPORT_LINKS: &str = "report_links";

/// Every table medlake knows, for lakes whose folders cannot be listed cheaply.
pub const ALL: &[&str] = &[
    INSTANCES,
    SERIES,
    STUDIES,
    PATIENTS,
    INGEST_ERRORS,
    REPORTS,
    REPORT_LINKS,
    crate::lake::LAKE_LOG,
];
