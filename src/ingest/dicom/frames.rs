//! The geometry of each frame of a multi-frame instance.
//!
//! Enhanced CT and MR (and other "enhanced" objects) keep one instance per series with
//! many frames; a frame's position is not at the top level of the data set but in
//! functional groups: PerFrameFunctionalGroupsSequence (5200,9230) item *n* describes
//! frame *n*, SharedFunctionalGroupsSequence (5200,9229) what all frames share
//! (PS3.3 C.7.6.16). The `series` geometry needs every frame's ImagePositionPatient, as
//! it needs every slice's for single-frame series.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// Per-frame geometry, from the functional groups.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameGeometry {
    /// ImagePositionPatient of each frame (frames without one are left out).
    pub positions: Vec<[f64; 3]>,
    /// ImageOrientationPatient, from the shared groups or the first frame.
    pub orientation: Option<[f64; 6]>,
    /// PixelSpacing, from the shared groups or the first frame.
    pub pixel_spacing: Option<[f64; 2]>,
}

/// The per-frame geometry of a multi-frame instance, or `None` for one without
/// functional groups. Each frame is read as the volume assembler reads it
/// ([`medlake_udfs::volume::frames`]), so `series` and volumes agree.
pub fn frame_geometry(obj: &InMemDicomObject) -> Option<FrameGeometry> {
    obj.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)?
        .items()?;
    let frames = medlake_udfs::volume::frames::frames(obj);
    let first = frames.first();
    Some(FrameGeometry {
        positions: frames.iter().filter_map(|f| f.position).collect(),
        orientation: first.and_then(|f| f.orientation),
        pixel_spacing: first.and_then(|f| f.pixel_spacing),
    })
}
