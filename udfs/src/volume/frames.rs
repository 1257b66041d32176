//! What each frame of a DICOM image says about where it sits and how its values scale.
//!
//! A single-frame image keeps ImagePositionPatient, ImageOrientationPatient, PixelSpacing
//! and RescaleSlope/Intercept at the top level of its data set. Enhanced (multi-frame)
//! objects keep them in functional groups: PerFrameFunctionalGroupsSequence (5200,9230)
//! item *n* describes frame *n*, SharedFunctionalGroupsSequence (5200,9229) what all frames
//! share (PS3.3 C.7.6.16). A per-frame value wins over a shared one, which wins over the
//! top level: writers are not always careful to put a group in only one place.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// One frame's geometry and modality LUT.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameInfo {
    /// ImagePositionPatient: the centre of the first transmitted voxel, LPS mm.
    pub position: Option<[f64; 3]>,
    /// ImageOrientationPatient: row cosines, then column cosines.
    pub orientation: Option<[f64; 6]>,
    /// PixelSpacing: (row spacing, column spacing) mm.
    pub pixel_spacing: Option<[f64; 2]>,
    /// SpacingBetweenSlices, else SliceThickness (only used for a single slice's depth).
    pub slice_depth: Option<f64>,
    /// (RescaleSlope, RescaleIntercept); (1, 0) when absent.
    pub rescale: (f64, f64),
}

fn items(obj: &InMemDicomObject, tag: Tag) -> Option<&[InMemDicomObject]> {
    obj.get(tag)?.items()
}

fn numbers(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let e = obj.get(tag)?;
    let v = if e.vr() == dicom_core::VR::UN {
        // Explicit VR files may carry standard elements as UN: their bytes are the text of
        // the dictionary VR (DS or IS here), which `to_multi_float64` would read as bytes.
        let bytes = e.to_bytes().ok()?;
        std::str::from_utf8(&bytes)
            .ok()?
            .trim_end_matches(['\0', ' '])
            .split('\\')
            .map(|x| x.trim().parse::<f64>().ok())
            .collect::<Option<Vec<f64>>>()?
    } else {
        e.to_multi_float64().ok()?
    };
    Some(v).filter(|v| !v.is_empty() && v.iter().all(|x| x.is_finite()))
}

fn fixed<const N: usize>(v: Option<Vec<f64>>) -> Option<[f64; N]> {
    v.and_then(|v| <[f64; N]>::try_from(v).ok())
}

/// The functional groups that apply to one frame, most specific first, then the data
/// set itself.
struct Sources<'a> {
    frame: Option<&'a InMemDicomObject>,
    shared: Option<&'a InMemDicomObject>,
    top: &'a InMemDicomObject,
}

impl Sources<'_> {
    /// `tag`, from `group_seq`'s first item in the frame's or the shared groups, else
    /// from the top level.
    fn value(&self, group_seq: Tag, tag: Tag) -> Option<Vec<f64>> {
        let in_group = |g: Option<&InMemDicomObject>| {
            g.and_then(|g| items(g, group_seq)?.first())
                .and_then(|inner| numbers(inner, tag))
        };
        in_group(self.frame)
            .or_else(|| in_group(self.shared))
            .or_else(|| numbers(self.top, tag))
    }
}

/// Number of frames: NumberOfFrames, 1 when absent.
pub fn frame_count(obj: &InMemDicomObject) -> u32 {
    obj.get(tags::NUMBER_OF_FRAMES)
        .and_then(|e| e.to_int::<i64>().ok())
        .filter(|n| *n > 0)
        .map(|n| n.min(u32::MAX as i64) as u32)
        .unwrap_or(1)
}

/// Every frame's information, in frame order.
pub fn frames(obj: &InMemDicomObject) -> Vec<FrameInfo> {
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).unwrap_or(&[]);
    let shared = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|s| s.first());
    // NumberOfFrames counts the frames of pixel data; without it, the functional groups do.
    let count = if obj.get(tags::NUMBER_OF_FRAMES).is_some() || per_frame.is_empty() {
        frame_count(obj) as usize
    } else {
        per_frame.len()
    };
    (0..count)
        .map(|f| {
            let s = Sources {
                frame: per_frame.get(f),
                shared,
                top: obj,
            };
            let slope = s.value(
                tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                tags::RESCALE_SLOPE,
            );
            let intercept = s.value(
                tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                tags::RESCALE_INTERCEPT,
            );
            FrameInfo {
                position: fixed(
                    s.value(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT),
                ),
                orientation: fixed(s.value(
                    tags::PLANE_ORIENTATION_SEQUENCE,
                    tags::IMAGE_ORIENTATION_PATIENT,
                )),
                pixel_spacing: fixed(s.value(tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING)),
                slice_depth: s
                    .value(tags::PIXEL_MEASURES_SEQUENCE, tags::SPACING_BETWEEN_SLICES)
                    .or_else(|| s.value(tags::PIXEL_MEASURES_SEQUENCE, tags::SLICE_THICKNESS))
                    .and_then(|v| v.first().copied())
                    .filter(|d| *d > 0.0),
                rescale: (
                    slope.and_then(|v| v.first().copied()).unwrap_or(1.0),
                    intercept.and_then(|v| v.first().copied()).unwrap_or(0.0),
                ),
            }
        })
        .collect()
}
