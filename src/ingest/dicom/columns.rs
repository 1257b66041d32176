//! The typed columns of `instances`, and how each is read from a DICOM header.
//!
//! Column names are DICOM keywords. The selection follows what cohort queries use and what
//! IDC's series index and BigQuery's DICOM export carry; every other element stays reachable
//! through `dicom_json` and `dicom_tag()`.
//!
//! Delta has no time-of-day type, so TM attributes are stored as Int64 microseconds since
//! midnight and shown to SQL as `Time64(Microsecond)` (see [`TIME_COLUMNS`]).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// How a column's value is read from its element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, trailing padding removed; multiple values joined by `\`.
    Text,
    /// Each value of a multi-valued text attribute.
    TextList,
    Int,
    Float,
    FloatList,
    /// DA, as Date32.
    Date,
    /// TM, as microseconds since midnight (Int64 in Delta, Time64 in SQL).
    Time,
}

pub struct Column {
    pub name: &'static str,
    pub tag: Tag,
    pub kind: Kind,
}

/// Columns read from the header, in table order.
pub static COLUMNS: &[Column] = &[
    Column {
        name: "SOPInstanceUID",
        tag: tags::SOP_INSTANCE_UID,
        kind: Kind::Text,
    },
    Column {
        name: "SOPClassUID",
        tag: tags::SOP_CLASS_UID,
        kind: Kind::Text,
    },
    Column {
        name: "Modality",
        tag: tags::MODALITY,
        kind: Kind::Text,
    },
    Column {
        name: "PatientID",
        tag: tags::PATIENT_ID,
        kind: Kind::Text,
    },
    Column {
        name: "PatientName",
        tag: tags::PATIENT_NAME,
        kind: Kind::Text,
    },
    Column {
        name: "PatientBirthDate",
        tag: tags::PATIENT_BIRTH_DATE,
        kind: Kind::Date,
    },
    Column {
        name: "PatientSex",
        tag: tags::PATIENT_SEX,
        kind: Kind::Text,
    },
    Column {
        name: "PatientAge",
        tag: tags::PATIENT_AGE,
        kind: Kind::Text,
    },
    Column {
        name: "PatientWeight",
        tag: tags::PATIENT_WEIGHT,
        kind: Kind::Float,
    },
    Column {
        name: "PatientSize",
        tag: tags::PATIENT_SIZE,
        kind: Kind::Float,
    },
    Column {
        name: "StudyInstanceUID",
        tag: tags::STUDY_INSTANCE_UID,
        kind: Kind::Text,
    },
    Column {
        name: "StudyDate",
        tag: tags::STUDY_DATE,
        kind: Kind::Date,
    },
    Column {
        name: "StudyTime",
        tag: tags::STUDY_TIME,
        kind: Kind::Time,
    },
    Column {
        name: "StudyID",
        tag: tags::STUDY_ID,
        kind: Kind::Text,
    },
    Column {
        name: "AccessionNumber",
        tag: tags::ACCESSION_NUMBER,
        kind: Kind::Text,
    },
    Column {
        name: "StudyDescription",
        tag: tags::STUDY_DESCRIPTION,
        kind: Kind::Text,
    },
    Column {
        name: "ReferringPhysicianName",
        tag: tags::REFERRING_PHYSICIAN_NAME,
        kind: Kind::Text,
    },
    Column {
        name: "InstitutionName",
        tag: tags::INSTITUTION_NAME,
        kind: Kind::Text,
    },
    Column {
        name: "SeriesInstanceUID",
        tag: tags::SERIES_INSTANCE_UID,
        kind: Kind::Text,
    },
    Column {
        name: "SeriesNumber",
        tag: tags::SERIES_NUMBER,
        kind: Kind::Int,
    },
    Column {
        name: "SeriesDescription",
        tag: tags::SERIES_DESCRIPTION,
        kind: Kind::Text,
    },
    Column {
        name: "SeriesDate",
        tag: tags::SERIES_DATE,
        kind: Kind::Date,
    },
    Column {
        name: "SeriesTime",
        tag: tags::SERIES_TIME,
        kind: Kind::Time,
    },
    Column {
        name: "BodyPartExamined",
        tag: tags::BODY_PART_EXAMINED,
        kind: Kind::Text,
    },
    Column {
        name: "ProtocolName",
        tag: tags::PROTOCOL_NAME,
        kind: Kind::Text,
    },
    Column {
        name: "Laterality",
        tag: tags::LATERALITY,
        kind: Kind::Text,
    },
    Column {
        name: "PatientPosition",
        tag: tags::PATIENT_POSITION,
        kind: Kind::Text,
    },
    Column {
        name: "FrameOfReferenceUID",
        tag: tags::FRAME_OF_REFERENCE_UID,
        kind: Kind::Text,
    },
    Column {
        name: "Manufacturer",
        tag: tags::MANUFACTURER,
        kind: Kind::Text,
    },
    Column {
        name: "ManufacturerModelName",
        tag: tags::MANUFACTURER_MODEL_NAME,
        kind: Kind::Text,
    },
    Column {
        name: "StationName",
        tag: tags::STATION_NAME,
        kind: Kind::Text,
    },
    Column {
        name: "DeviceSerialNumber",
        tag: tags::DEVICE_SERIAL_NUMBER,
        kind: Kind::Text,
    },
    Column {
        name: "SoftwareVersions",
        tag: tags::SOFTWARE_VERSIONS,
        kind: Kind::TextList,
    },
    Column {
        name: "InstanceNumber",
        tag: tags::INSTANCE_NUMBER,
        kind: Kind::Int,
    },
    Column {
        name: "AcquisitionNumber",
        tag: tags::ACQUISITION_NUMBER,
        kind: Kind::Int,
    },
    Column {
        name: "AcquisitionDate",
        tag: tags::ACQUISITION_DATE,
        kind: Kind::Date,
    },
    Column {
        name: "AcquisitionTime",
        tag: tags::ACQUISITION_TIME,
        kind: Kind::Time,
    },
    Column {
        name: "ContentDate",
        tag: tags::CONTENT_DATE,
        kind: Kind::Date,
    },
    Column {
        name: "ContentTime",
        tag: tags::CONTENT_TIME,
        kind: Kind::Time,
    },
    Column {
        name: "ImageType",
        tag: tags::IMAGE_TYPE,
        kind: Kind::TextList,
    },
    Column {
        name: "ImagePositionPatient",
        tag: tags::IMAGE_POSITION_PATIENT,
        kind: Kind::FloatList,
    },
    Column {
        name: "ImageOrientationPatient",
        tag: tags::IMAGE_ORIENTATION_PATIENT,
        kind: Kind::FloatList,
    },
    Column {
        name: "PixelSpacing",
        tag: tags::PIXEL_SPACING,
        kind: Kind::FloatList,
    },
    Column {
        name: "SliceThickness",
        tag: tags::SLICE_THICKNESS,
        kind: Kind::Float,
    },
    Column {
        name: "SpacingBetweenSlices",
        tag: tags::SPACING_BETWEEN_SLICES,
        kind: Kind::Float,
    },
    Column {
        name: "SliceLocation",
        tag: tags::SLICE_LOCATION,
        kind: Kind::Float,
    },
    Column {
        name: "Rows",
        tag: tags::ROWS,
        kind: Kind::Int,
    },
    Column {
        name: "Columns",
        tag: tags::COLUMNS,
        kind: Kind::Int,
    },
    Column {
        name: "NumberOfFrames",
        tag: tags::NUMBER_OF_FRAMES,
        kind: Kind::Int,
    },
    Column {
        name: "SamplesPerPixel",
        tag: tags::SAMPLES_PER_PIXEL,
        kind: Kind::Int,
    },
    Column {
        name: "PhotometricInterpretation",
        tag: tags::PHOTOMETRIC_INTERPRETATION,
        kind: Kind::Text,
    },
    Column {
        name: "BitsAllocated",
        tag: tags::BITS_ALLOCATED,
        kind: Kind::Int,
    },
    Column {
        name: "BitsStored",
        tag: tags::BITS_STORED,
        kind: Kind::Int,
    },
    Column {
        name: "HighBit",
        tag: tags::HIGH_BIT,
        kind: Kind::Int,
    },
    Column {
        name: "PixelRepresentation",
        tag: tags::PIXEL_REPRESENTATION,
        kind: Kind::Int,
    },
    Column {
        name: "RescaleIntercept",
        tag: tags::RESCALE_INTERCEPT,
        kind: Kind::Float,
    },
    Column {
        name: "RescaleSlope",
        tag: tags::RESCALE_SLOPE,
        kind: Kind::Float,
    },
    Column {
        name: "RescaleType",
        tag: tags::RESCALE_TYPE,
        kind: Kind::Text,
    },
    Column {
        name: "WindowCenter",
        tag: tags::WINDOW_CENTER,
        kind: Kind::FloatList,
    },
    Column {
        name: "WindowWidth",
        tag: tags::WINDOW_WIDTH,
        kind: Kind::FloatList,
    },
    Column {
        name: "KVP",
        tag: tags::KVP,
        kind: Kind::Float,
    },
    Column {
        name: "ConvolutionKernel",
        tag: tags::CONVOLUTION_KERNEL,
        kind: Kind::TextList,
    },
    Column {
        name: "ContrastBolusAgent",
        tag: tags::CONTRAST_BOLUS_AGENT,
        kind: Kind::Text,
    },
    Column {
        name: "MagneticFieldStrength",
        tag: tags::MAGNETIC_FIELD_STRENGTH,
        kind: Kind::Float,
    },
    Column {
        name: "SpecificCharacterSet",
        tag: tags::SPECIFIC_CHARACTER_SET,
        kind: Kind::TextList,
    },
];

/// Names of TM columns, stored as Int64 microseconds and shown to SQL as Time64.
pub fn time_columns() -> impl Iterator<Item = &'static str> {
    COLUMNS
        .iter()
        .filter(|c| c.kind == Kind::Time)
        .map(|c| c.name)
}

impl Kind {
    pub fn data_type(self) -> DataType {
        match self {
            Kind::Text => DataType::Utf8,
            Kind::TextList => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            Kind::Int => DataType::Int32,
            Kind::Float => DataType::Float64,
            Kind::FloatList => {
                DataType::List(Arc::new(Field::new("item", DataType::Float64, true)))
            }
            Kind::Date => DataType::Date32,
            Kind::Time => DataType::Int64,
        }
    }
}

pub fn fields() -> Vec<Field> {
    COLUMNS
        .iter()
        .map(|c| Field::new(c.name, c.kind.data_type(), true))
        .collect()
}

/// Trailing spaces and NULs are DICOM padding, not content.
pub fn clean(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

/// Parse a DA value (`YYYYMMDD`; the retired `YYYY.MM.DD` too) into days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i32> {
    let digits: String = clean(s).chars().filter(|c| *c != '.').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d = chrono::NaiveDate::parse_from_str(&digits, "%Y%m%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((d - epoch).num_days()).ok()
}

/// Parse a TM value (`HH[MM[SS[.FFFFFF]]]`; the retired `HH:MM:SS` too) into microseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let t: String = clean(s).chars().filter(|c| *c != ':').collect();
    let (whole, frac) = match t.split_once('.') {
        Some((w, f)) => (w, f),
        None => (t.as_str(), ""),
    };
    if whole.is_empty() || whole.len() % 2 != 0 || whole.len() > 6 {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let part = |i: usize| -> i64 { whole.get(i..i + 2).map_or(0, |p| p.parse().unwrap_or(0)) };
    let (h, m, sec) = (part(0), part(2), part(4));
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let mut micros = 0i64;
    if !frac.is_empty() {
        let f = &frac[..frac.len().min(6)];
        micros = f.parse::<i64>().ok()? * 10i64.pow(6 - f.len() as u32);
    }
    Some(((h * 60 + m) * 60 + sec.min(59)) * 1_000_000 + micros)
}

enum Builder {
    Text(StringBuilder),
    TextList(ListBuilder<StringBuilder>),
    Int(Int32Builder),
    Float(Float64Builder),
    FloatList(ListBuilder<Float64Builder>),
    Date(Date32Builder),
    Time(Int64Builder),
}

/// Builds the typed header columns for a batch of instances.
pub struct HeaderColumns {
    builders: Vec<Builder>,
}

impl Default for HeaderColumns {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderColumns {
    pub fn new() -> Self {
        let builders = COLUMNS
            .iter()
            .map(|c| match c.kind {
                Kind::Text => Builder::Text(StringBuilder::new()),
                Kind::TextList => Builder::TextList(ListBuilder::new(StringBuilder::new())),
                Kind::Int => Builder::Int(Int32Builder::new()),
                Kind::Float => Builder::Float(Float64Builder::new()),
                Kind::FloatList => Builder::FloatList(ListBuilder::new(Float64Builder::new())),
                Kind::Date => Builder::Date(Date32Builder::new()),
                Kind::Time => Builder::Time(Int64Builder::new()),
            })
            .collect();
        HeaderColumns { builders }
    }

    /// Append one instance. `sop_instance_uid` overrides the dataset's own (which may be
    /// missing when only the file meta group carries it).
    pub fn push(&mut self, obj: &InMemDicomObject, sop_instance_uid: &str) {
        for (col, b) in COLUMNS.iter().zip(self.builders.iter_mut()) {
            if col.tag == tags::SOP_INSTANCE_UID {
                if let Builder::Text(b) = b {
                    b.append_value(sop_instance_uid);
                }
                continue;
            }
            let elem = obj.get(col.tag);
            let value = elem.map(|e| e.value());
            match b {
                Builder::Text(b) => {
                    let s = value.and_then(|v| v.to_str().ok());
                    let is_pn = elem.is_some_and(|e| e.vr() == dicom_core::VR::PN);
                    // PS3.5 §6.2.1.1: trailing empty component groups of a person name
                    // are insignificant; `Wang^XiaoDong=王^小東=` is `Wang^XiaoDong=王^小東`.
                    let trim = |s: &str| -> String {
                        let s = clean(s);
                        if is_pn {
                            s.trim_end_matches('=').to_string()
                        } else {
                            s.to_string()
                        }
                    };
                    match s.as_deref().map(trim).filter(|s| !s.is_empty()) {
                        Some(s) => b.append_value(s),
                        None => b.append_null(),
                    }
                }
                Builder::TextList(b) => match value.and_then(|v| v.to_multi_str().ok()) {
                    Some(vals) if !vals.is_empty() => {
                        for v in vals.iter() {
                            b.values().append_value(clean(v));
                        }
                        b.append(true);
                    }
                    _ => b.append(false),
                },
                Builder::Int(b) => b.append_option(value.and_then(|v| v.to_int::<i32>().ok())),
                Builder::Float(b) => {
                    b.append_option(value.and_then(|v| v.to_finite_float64().ok()))
                }
                Builder::FloatList(b) => {
                    match value.and_then(|v| v.to_multi_finite_float64().ok()) {
                        Some(vals) if !vals.is_empty() => {
                            b.values().append_slice(&vals);
                            b.append(true);
                        }
                        _ => b.append(false),
                    }
                }
                Builder::Date(b) => b.append_option(
                    value
                        .and_then(|v| v.to_str().ok())
                        .and_then(|s| parse_date(&s)),
                ),
                Builder::Time(b) => b.append_option(
                    value
                        .and_then(|v| v.to_str().ok())
                        .and_then(|s| parse_time(&s)),
                ),
            }
        }
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Text(b) => Arc::new(b.finish()),
                    Builder::TextList(b) => Arc::new(b.finish()),
                    Builder::Int(b) => Arc::new(b.finish()),
                    Builder::Float(b) => Arc::new(b.finish()),
                    Builder::FloatList(b) => Arc::new(b.finish()),
                    Builder::Date(b) => Arc::new(b.finish()),
                    Builder::Time(b) => Arc::new(b.finish()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("19700102"), Some(1));
        assert_eq!(parse_date("1970.01.02 "), Some(1));
        assert_eq!(parse_date("20261301"), None);
        assert_eq!(parse_date(""), None);
        assert_eq!(parse_date("2026"), None);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("000001"), Some(1_000_000));
        assert_eq!(parse_time("0102"), Some(3_720_000_000));
        assert_eq!(parse_time("10:00:00.5"), Some(36_000_500_000));
        assert_eq!(parse_time("235959.123456"), Some(86_399_123_456));
        assert_eq!(parse_time("25"), None);
        assert_eq!(parse_time("12a0"), None);
    }
}
