//! The one error type of the `medlake` crate.
//!
//! Errors carry the context a user needs to act: which table, which file, which setting.
//! Per-file problems during ingest never become an `Error`: they become rows in
//! `ingest_errors` (see [`crate::ingest`]).

use datafusion::error::DataFusionError;
use deltalake::DeltaTableError;

/// Everything that can stop a medlake operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lake location {location:?}: {reason}")]
    LakeLocation { location: String, reason: String },
    // The two large foreign errors are boxed, so that `Result` stays small on the happy path.
    #[error("table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error(transparent)]
    DataFusion(Box<DataFusionError>),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--as-of {0:?}: expected a lake version (a whole number) or an RFC 3339 timestamp")]
    BadAsOf(String),
    #[error("lake version {requested} does not exist (the newest is {newest})")]
    NoSuchLakeVersion { requested: i64, newest: i64 },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn delta(table: &str, source: DeltaTableError) -> Self {
        Error::Delta {
            table: table.to_string(),
            source: Box::new(source),
        }
    }

    /// For the SQL boundary, where errors must be DataFusion's.
    pub fn into_df(self) -> DataFusionError {
        self.into()
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::DataFusion(Box::new(e))
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => *e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
