//! `instances.burned_in_annotation_risk`: whether an instance's pixels may show text that
//! identifies the patient. The lake stores headers only, but `file_uri` leads to the pixels
//! (compute, export), and no header rule removes a name drawn into an image.
//!
//! - `YES`: BurnedInAnnotation (0028,0301) says YES.
//! - `LIKELY`: the SOP class is one where burned-in text is common whatever the flag says
//!   (PS3.15 E.1.1 asks for those to be checked): secondary captures (screenshots, scanned
//!   documents), ultrasound and X-ray angiography / fluoroscopy (the scanner writes the
//!   patient's name into the image), visible-light photography, endoscopy and microscopy,
//!   ophthalmic photography, encapsulated PDF and CDA documents.
//! - `NO`: the flag says NO and the class is not one of those.
//! - `UNKNOWN`: no flag, and the class is not one of those.
//!
//! Computed for every instance, de-identified or not, from the header as read.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::ingest::dicom::columns::clean;

/// SOP classes where burned-in annotation is likely.
const LIKELY: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.7",        // Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.1",      // Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",      // Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",      // Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",      // Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.6",        // Ultrasound Image (retired)
    "1.2.840.10008.5.1.4.1.1.6.1",      // Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.6.2",      // Enhanced US Volume
    "1.2.840.10008.5.1.4.1.1.3",        // Ultrasound Multi-frame Image (retired)
    "1.2.840.10008.5.1.4.1.1.3.1",      // Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.12.1",     // X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.12.1.1",   // Enhanced XA Image
    "1.2.840.10008.5.1.4.1.1.12.2",     // X-Ray Radiofluoroscopic Image
    "1.2.840.10008.5.1.4.1.1.12.2.1",   // Enhanced XRF Image
    "1.2.840.10008.5.1.4.1.1.12.3",     // X-Ray Angiographic Bi-Plane Image (retired)
    "1.2.840.10008.5.1.4.1.1.77.1.1",   // VL Endoscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.1.1", // Video Endoscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.2",   // VL Microscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.2.1", // Video Microscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.3",   // VL Slide-Coordinates Microscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.4",   // VL Photographic Image
    "1.2.840.10008.5.1.4.1.1.77.1.4.1", // Video Photographic Image
    "1.2.840.10008.5.1.4.1.1.77.1.5.1", // Ophthalmic Photography 8 Bit Image
    "1.2.840.10008.5.1.4.1.1.77.1.5.2", // Ophthalmic Photography 16 Bit Image
    "1.2.840.10008.5.1.4.1.1.77.1.7",   // Dermoscopic Photography Image
    "1.2.840.10008.5.1.4.1.1.104.1",    // Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.104.2",    // Encapsulated CDA
];

/// The risk of one instance (see the module documentation).
pub fn risk(obj: &InMemDicomObject) -> &'static str {
    let text = |tag| {
        obj.get(tag)
            .and_then(|e| e.value().to_str().ok())
            .map(|s| clean(&s).to_ascii_uppercase())
    };
    let flag = text(tags::BURNED_IN_ANNOTATION);
    if flag.as_deref() == Some("YES") {
        return "YES";
    }
    if let Some(class) = text(tags::SOP_CLASS_UID) {
        if LIKELY.contains(&class.as_str()) {
            return "LIKELY";
        }
    }
    if flag.as_deref() == Some("NO") {
        return "NO";
    }
    "UNKNOWN"
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn obj(class: &str, flag: Option<&str>) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        o.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(class),
        ));
        if let Some(f) = flag {
            o.put(DataElement::new(
                tags::BURNED_IN_ANNOTATION,
                VR::CS,
                PrimitiveValue::from(f),
            ));
        }
        o
    }

    #[test]
    fn flag_then_class() {
        let ct = "1.2.840.10008.5.1.4.1.1.2";
        let us = "1.2.840.10008.5.1.4.1.1.6.1";
        assert_eq!(risk(&obj(ct, Some("YES "))), "YES");
        assert_eq!(risk(&obj(ct, Some("NO"))), "NO");
        assert_eq!(risk(&obj(ct, None)), "UNKNOWN");
        assert_eq!(risk(&obj(us, None)), "LIKELY");
        assert_eq!(risk(&obj(us, Some("NO"))), "LIKELY");
        assert_eq!(risk(&obj(&format!("{us}\0"), Some("YES"))), "YES");
        assert_eq!(risk(&InMemDicomObject::new_empty()), "UNKNOWN");
    }
}
