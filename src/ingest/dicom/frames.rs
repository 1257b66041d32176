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

fn items(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<&[InMemDicomObject]> {
    obj.get(tag)?.items()
}

/// `group_seq[0].tag` as numbers, from one functional-groups item.
fn group_value(
    item: &InMemDicomObject,
    group_seq: dicom_core::Tag,
    tag: dicom_core::Tag,
) -> Option<Vec<f64>> {
    let inner = items(item, group_seq)?.first()?;
    let e = inner.get(tag)?;
    e.to_multi_float64().ok().filter(|v| !v.is_empty())
}

fn fixed<const N: usize>(v: Option<Vec<f64>>) -> Option<[f64; N]> {
    v.and_then(|v| <[f64; N]>::try_from(v).ok())
        .filter(|a| a.iter().all(|x| x.is_finite()))
}

/// The per-frame geometry of a multi-frame instance, or `None` for one without
/// functional groups.
pub fn frame_geometry(obj: &InMemDicomObject) -> Option<FrameGeometry> {
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)?;
    let shared = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|s| s.first());
    // A per-frame value wins over a shared one (PS3.3 C.7.6.16: a group is in one or the
    // other, but writers are not always careful).
    let lookup = |frame: Option<&InMemDicomObject>, seq, tag| {
        frame
            .and_then(|f| group_value(f, seq, tag))
            .or_else(|| shared.and_then(|s| group_value(s, seq, tag)))
    };
    let positions = per_frame
        .iter()
        .filter_map(|f| {
            fixed::<3>(lookup(
                Some(f),
                tags::PLANE_POSITION_SEQUENCE,
                tags::IMAGE_POSITION_PATIENT,
            ))
        })
        .collect();
    let first = per_frame.first();
    Some(FrameGeometry {
        positions,
        orientation: fixed::<6>(lookup(
            first,
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
        )),
        pixel_spacing: fixed::<2>(lookup(
            first,
            tags::PIXEL_MEASURES_SEQUENCE,
            tags::PIXEL_SPACING,
        )),
    })
}
