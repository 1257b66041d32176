//! Stored pixel values of a DICOM image, decoded by dicom-pixeldata and read as the
//! numbers the data set declares: BitsAllocated-wide samples, the bits above BitsStored
//! cleared (unsigned) or filled with the sign (signed), as pydicom's `pixel_array` gives.
//!
//! dicom-pixeldata hands decoded samples over as little-endian bytes whatever the
//! transfer syntax; this module only reinterprets them.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{DecodedPixelData, PixelDecoder, PixelRepresentation, PlanarConfiguration};

use crate::error::{Error, Result};

/// How one frame's samples are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelLayout {
    pub rows: usize,
    pub columns: usize,
    pub samples_per_pixel: usize,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
}

impl PixelLayout {
    pub fn frame_samples(&self) -> usize {
        self.rows * self.columns * self.samples_per_pixel
    }
}

/// A decoded image: every frame's stored values, frame after frame, each row-major with
/// a pixel's samples together.
pub struct DecodedImage<'a> {
    pub layout: PixelLayout,
    pub frames: u32,
    /// The photometric interpretation of the decoded samples (dicom-pixeldata turns
    /// decoded YBR JPEG data into RGB).
    pub photometric: String,
    data: DecodedPixelData<'a>,
}

/// The transfer syntax of a file, for error messages.
pub fn transfer_syntax(obj: &DefaultDicomObject) -> String {
    obj.meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string()
}

/// Decode every frame of `obj` (`file` names it in errors).
pub fn decode<'a>(obj: &'a DefaultDicomObject, file: &str) -> Result<DecodedImage<'a>> {
    let fail = |reason: String| Error::Decode {
        file: file.to_string(),
        transfer_syntax: transfer_syntax(obj),
        reason,
    };
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(fail("no PixelData".into()));
    }
    let data = obj.decode_pixel_data().map_err(|e| fail(e.to_string()))?;
    let layout = PixelLayout {
        rows: data.rows() as usize,
        columns: data.columns() as usize,
        samples_per_pixel: data.samples_per_pixel() as usize,
        bits_allocated: data.bits_allocated(),
        bits_stored: data.bits_stored(),
        signed: data.pixel_representation() == PixelRepresentation::Signed,
    };
    if !matches!(layout.bits_allocated, 1 | 8 | 16 | 32) {
        return Err(fail(format!(
            "BitsAllocated {} (1, 8, 16 and 32 are read)",
            layout.bits_allocated
        )));
    }
    if layout.bits_stored == 0 || layout.bits_stored > layout.bits_allocated {
        return Err(fail(format!(
            "BitsStored {} with BitsAllocated {}",
            layout.bits_stored, layout.bits_allocated
        )));
    }
    let frames = data.number_of_frames();
    let need =
        layout.frame_samples() * usize::from(layout.bits_allocated.div_ceil(8)) * frames as usize;
    if data.data().len() < need {
        return Err(fail(format!(
            "{} bytes of pixel data where {frames} frame(s) of {}x{}x{} need {need}",
            data.data().len(),
            layout.rows,
            layout.columns,
            layout.samples_per_pixel
        )));
    }
    Ok(DecodedImage {
        layout,
        frames,
        photometric: data.photometric_interpretation().to_string(),
        data,
    })
}

impl DecodedImage<'_> {
    /// Frame `frame`'s stored values, appended to `out` (samples interleaved).
    pub fn frame_values(&self, frame: u32, out: &mut Vec<i64>) -> Result<()> {
        let bytes = self.data.frame_data(frame).map_err(|e| Error::Decode {
            file: String::new(),
            transfer_syntax: String::new(),
            reason: e.to_string(),
        })?;
        let l = self.layout;
        let start = out.len();
        let unused = u32::from(l.bits_allocated - l.bits_stored);
        match l.bits_allocated {
            // dicom-pixeldata unpacks 1-bit data (segmentations) to one byte of 0 or 255.
            1 => out.extend(bytes.iter().map(|&b| i64::from(b != 0))),
            8 => out.extend(
                bytes
                    .iter()
                    .map(|&b| fix(u64::from(b), 8, unused, l.signed)),
            ),
            16 => out.extend(bytes.chunks_exact(2).map(|c| {
                fix(
                    u64::from(u16::from_le_bytes([c[0], c[1]])),
                    16,
                    unused,
                    l.signed,
                )
            })),
            _ => out.extend(bytes.chunks_exact(4).map(|c| {
                fix(
                    u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    32,
                    unused,
                    l.signed,
                )
            })),
        }
        // Native colour data may be stored plane by plane; hand it back pixel by pixel.
        if l.samples_per_pixel > 1
            && self.data.planar_configuration() == PlanarConfiguration::PixelFirst
        {
            let planar = out[start..].to_vec();
            let n = l.rows * l.columns;
            for p in 0..n {
                for s in 0..l.samples_per_pixel {
                    out[start + p * l.samples_per_pixel + s] = planar[s * n + p];
                }
            }
        }
        Ok(())
    }
}

/// A `width`-bit sample with `unused` high bits: those bits cleared, or for signed data
/// replaced by the sign bit of the stored ones.
fn fix(raw: u64, width: u32, unused: u32, signed: bool) -> i64 {
    let stored = width - unused;
    let v = raw & ((1u64 << stored) - 1);
    if signed && stored < 64 && v >> (stored - 1) & 1 == 1 {
        v as i64 - (1i64 << stored)
    } else {
        v as i64
    }
}

#[cfg(test)]
mod tests {
    use super::fix;

    #[test]
    fn unused_high_bits_are_cleared_or_sign_filled() {
        // 12 bits stored in 16: 0xF800 has garbage above bit 11.
        assert_eq!(fix(0xF800, 16, 4, false), 0x800);
        assert_eq!(fix(0x0800, 16, 4, true), -2048);
        assert_eq!(fix(0x07FF, 16, 4, true), 2047);
        assert_eq!(fix(0xFFFF, 16, 0, true), -1);
        assert_eq!(fix(0xFFFF, 16, 0, false), 65535);
        assert_eq!(fix(0x80, 8, 0, true), -128);
    }
}
