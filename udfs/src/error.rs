//! The one error type of `medlake-udfs`.

/// What can go wrong between DICOM objects and computed results. Every variant names the
/// input it is about, so a row in `compute_errors` says which file and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The inputs do not form one volume (mixed orientations, irregular spacing, ...).
    #[error("not one regular volume: {0}")]
    NotAVolume(String),
    /// A required attribute is missing or unreadable.
    #[error("{file}: {attribute}: {reason}")]
    Attribute {
        file: String,
        attribute: &'static str,
        reason: String,
    },
    /// No usable compute device, or the device failed.
    #[error("compute device: {0}")]
    Device(String),
    /// The pixel data could not be decoded (unsupported transfer syntax, corrupt stream).
    #[error("{file}: pixel data ({transfer_syntax}): {reason}")]
    Decode {
        file: String,
        transfer_syntax: String,
        reason: String,
    },
    /// An ONNX model could not be loaded or run: which node (name and op), attribute or
    /// input, and why.
    #[error("model: {0}")]
    Model(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
