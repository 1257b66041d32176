//! What the oracle tests share: the python that runs `tests/oracle/*.py` (and the CI rule
//! for a missing package), scratch directories, .npy files and error measures.

use std::path::{Path, PathBuf};

use super::in_ci;

pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether python3 imports `modules` (`"numpy, scipy"`); where it does not, `false` (skip,
/// with a message), but in CI (`CI=true`) the test fails.
pub fn python_has(modules: &str) -> bool {
    let has = std::process::Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        if in_ci() {
            panic!("{modules} needed: pip install -r tests/oracle/requirements.txt");
        }
        eprintln!("skipping: python3 cannot import {modules} (pip install -r tests/oracle/requirements.txt)");
    }
    has
}

/// A .npy array (little-endian f4 or f8, C order) as f64, with its shape.
pub struct Npy {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

pub fn read_npy(path: &Path) -> Npy {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    let field = |key: &str| -> &str {
        let at = header.find(&format!("'{key}':")).unwrap() + key.len() + 3;
        header[at..].trim_start()
    };
    let descr = field("descr");
    let descr = &descr[1..descr[1..].find('\'').unwrap() + 1];
    assert!(field("fortran_order").starts_with("False"), "{header}");
    let shape_text = field("shape");
    let shape: Vec<usize> = shape_text[1..shape_text.find(')').unwrap()]
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = &bytes[start + header_len..];
    let values: Vec<f64> = match descr {
        "<f4" => data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        "<f8" => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        other => panic!("{}: dtype {other} not read here", path.display()),
    };
    assert_eq!(values.len(), shape.iter().product::<usize>());
    Npy { shape, values }
}

/// The largest difference between `ours` and `theirs`, and the tolerance of `frac` of
/// `theirs`' value range.
pub fn worst(ours: &[f32], theirs: &[f64], frac: f64) -> (f64, f64) {
    assert_eq!(ours.len(), theirs.len());
    let (lo, hi) = theirs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    (worst, frac * (hi - lo).max(1e-12))
}
