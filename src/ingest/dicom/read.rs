//! Reading one DICOM header: bytes in, a parsed data set (or a reason it is not one) out.
//!
//! Only the header is parsed: parsing stops at PixelData, and a file is first read only as
//! far as [`PREFIX_BYTES`], which holds almost every header; the rest of the file is read
//! only when the header is longer than that.

use std::io::{Cursor, Read};
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// How much of a file is read before parsing is first tried.
pub const PREFIX_BYTES: usize = 64 * 1024;

/// Implicit VR Little Endian: what a data set without a file meta group is taken to be.
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// A parsed header.
pub struct Header {
    pub obj: InMemDicomObject,
    pub transfer_syntax_uid: Option<String>,
    pub sop_instance_uid: String,
}

/// Why a file did not yield a header: a short kind for grouping, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// Read the first `limit` bytes of a file (all of it if shorter), and its size.
pub fn read_prefix(path: &Path, limit: usize) -> std::io::Result<(Vec<u8>, u64)> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let want = (size as usize).min(limit);
    let mut buf = Vec::with_capacity(want);
    file.take(want as u64).read_to_end(&mut buf)?;
    Ok((buf, size))
}

/// The full chain of an error's messages: dicom-rs puts the offset and tag in inner ones.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        src = s.source();
    }
    msg
}

/// Parse a header from the bytes of a file (or its first bytes).
///
/// `complete` says whether `bytes` is the whole file; when it is not, a failure may only
/// mean the header runs past the prefix, and the caller retries with the whole file.
pub fn parse_header(bytes: &[u8]) -> Result<Header, Failure> {
    let has_preamble = bytes.len() >= 132 && &bytes[128..132] == b"DICM";
    let bare_meta = bytes.len() >= 4 && &bytes[0..4] == b"DICM";
    let (obj, ts) = if has_preamble || bare_meta {
        let preamble = if has_preamble {
            ReadPreamble::Always
        } else {
            ReadPreamble::Never
        };
        let file = OpenFileOptions::new()
            .read_preamble(preamble)
            .read_until(tags::PIXEL_DATA)
            .from_reader(Cursor::new(bytes))
            .map_err(|e| Failure::new("malformed", chain(&e)))?;
        let ts = file.meta().transfer_syntax().to_string();
        let ts = super::columns::clean(&ts).to_string();
        let media_uid =
            super::columns::clean(file.meta().media_storage_sop_instance_uid()).to_string();
        let obj = file.into_inner();
        return finish(obj, Some(ts), Some(media_uid));
    } else {
        // No file meta group: a bare data set, as older archives and some modalities
        // write. PS3.10 says to read it as implicit VR little endian.
        if !plausible_bare_dataset(bytes) {
            return Err(Failure::new(
                "not_dicom",
                "no DICM marker at byte 128 or 0, and the first bytes are not a DICOM data \
                 element",
            ));
        }
        let ts = TransferSyntaxRegistry
            .get(IMPLICIT_VR_LE)
            .expect("implicit VR little endian is always registered");
        let obj = InMemDicomObject::read_dataset_with_ts(Cursor::new(bytes), ts)
            .map_err(|e| Failure::new("malformed", chain(&e)))?;
        (obj, None)
    };
    finish(obj, ts, None)
}

fn finish(
    obj: InMemDicomObject,
    transfer_syntax_uid: Option<String>,
    media_uid: Option<String>,
) -> Result<Header, Failure> {
    let own = obj
        .element_opt(tags::SOP_INSTANCE_UID)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| super::columns::clean(&s).to_string())
        .filter(|s| !s.is_empty());
    let Some(uid) = own.or(media_uid.filter(|s| !s.is_empty())) else {
        return Err(Failure::new(
            "missing_uid",
            "no SOPInstanceUID (0008,0018) in the data set or MediaStorageSOPInstanceUID \
             (0002,0003) in the file meta group",
        ));
    };
    Ok(Header {
        obj,
        transfer_syntax_uid,
        sop_instance_uid: uid,
    })
}

/// A bare data set starts with an element of group 0008 (or 0000..0008), whose length
/// fits in the file. Anything else is not worth parsing as DICOM.
fn plausible_bare_dataset(bytes: &[u8]) -> bool {
    if bytes.len() < 8 {
        return false;
    }
    let group = u16::from_le_bytes([bytes[0], bytes[1]]);
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let explicit_vr = bytes[4].is_ascii_uppercase() && bytes[5].is_ascii_uppercase();
    (group == 0x0008 || group == 0x0000)
        && (explicit_vr || (len as usize) <= bytes.len() - 8 || len == u32::MAX)
}
