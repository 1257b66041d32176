//! The findings against the phantoms' ground truth: the targets of issue 5, guarded.
//!
//! Twenty phantoms with fixed seeds (their spacings span 0.6–0.9 mm in-plane and
//! 0.625–2.5 mm between slices). Targets, over all of them:
//! - nodules of 4 mm and more: sensitivity ≥ 95%;
//! - false positives: at most 1 per scan on average;
//! - median diameter error of the nodules found: ≤ 1 mm;
//! - each lung's volume within 2%;
//! - %LAA-950 within 0.5 percentage points.
//!
//! And, per phantom: the body's volume within 1%; every calcification found (within
//! 2 mm) and nothing else; the Agatston score of those of 3 mm and more within 30% of the
//! sphere's analytic score.

use medlake_udfs::findings::{self, Finding};
use medlake_udfs::phantom::{self, Truth};
use medlake_udfs::runtime::Backend;

const SEEDS: std::ops::Range<u64> = 1..21;

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|d| (a[d] - b[d]).powi(2)).sum::<f64>().sqrt()
}

struct Score {
    /// (true diameter, found diameter or None) per true nodule.
    nodules: Vec<(f64, Option<f64>, bool, bool)>,
    false_positives: usize,
    lung_error_pct: [f64; 2],
    laa_error_pp: f64,
}

fn score(truth: &Truth, found: &[Finding]) -> Score {
    let found_nodules: Vec<&Finding> = found.iter().filter(|f| f.kind == "nodule").collect();
    let mut matched = vec![false; found_nodules.len()];
    let mut nodules = Vec::new();
    for t in &truth.nodules {
        let reach = (t.diameter_mm / 2.0).max(2.0);
        let hit = found_nodules
            .iter()
            .enumerate()
            .filter(|(_, f)| dist(f.center_lps_mm.unwrap(), t.center_lps_mm) <= reach)
            .min_by(|a, b| {
                let d = |f: &Finding| dist(f.center_lps_mm.unwrap(), t.center_lps_mm);
                d(a.1).total_cmp(&d(b.1))
            });
        let solid_ok = hit.is_some_and(|(_, f)| (f.nodule_type == Some("solid")) == t.solid);
        if let Some((i, _)) = hit {
            matched[i] = true;
        }
        nodules.push((
            t.diameter_mm,
            hit.map(|(_, f)| f.diameter_mm.unwrap()),
            t.solid,
            solid_ok,
        ));
    }
    let lung = |side: &str| {
        found
            .iter()
            .find(|f| f.kind == "lung" && f.side == Some(side))
            .and_then(|f| f.volume_ml)
            .unwrap_or(0.0)
    };
    let laa = found
        .iter()
        .find(|f| f.kind == "emphysema" && f.side == Some("both"))
        .and_then(|f| f.laa950_pct)
        .unwrap_or(f64::NAN);
    Score {
        nodules,
        false_positives: matched.iter().filter(|m| !**m).count(),
        lung_error_pct: [
            100.0 * (lung("right") / truth.right_lung_volume_ml - 1.0),
            100.0 * (lung("left") / truth.left_lung_volume_ml - 1.0),
        ],
        laa_error_pp: laa - truth.emphysema_pct,
    }
}

/// Agatston's sum for a sphere, from geometry alone: each slice's disc (at least 1 mm²)
/// times the weight of the sphere's density, scaled by slice spacing / 3 mm. The disc is
/// the one a scanner shows at 130 HU: partial volume blooms a dense sphere, the voxel
/// that is a fraction f0 = 90 / (HU − 40) calcium already reaching 130 HU over soft
/// tissue, so the edge moves out by about (½ − f0) of a voxel (in plane and in z).
fn analytic_agatston(c: &medlake_udfs::phantom::TrueCalcification, p: &phantom::Phantom) -> f64 {
    let f0 = 90.0 / (c.hu - 40.0);
    let r_plane = c.diameter_mm / 2.0 + (0.5 - f0) * p.spec.pixel_spacing_mm;
    let r_z = c.diameter_mm / 2.0 + (0.5 - f0) * p.spec.slice_spacing_mm;
    let w = match c.hu {
        h if h >= 400.0 => 4.0,
        h if h >= 300.0 => 3.0,
        h if h >= 200.0 => 2.0,
        _ => 1.0,
    };
    (0..p.dims[0])
        .map(|k| {
            let dz = p.lps(k, 0, 0)[2] - c.center_lps_mm[2];
            std::f64::consts::PI * r_plane * r_plane * (1.0 - (dz / r_z).powi(2)).max(0.0)
        })
        .filter(|a| *a >= 1.0)
        .map(|a| a * w)
        .sum::<f64>()
        * p.spec.slice_spacing_mm
        / 3.0
}

#[test]
fn phantom_targets_are_met() {
    let backend = Backend::Cpu;
    let mut all = Vec::new();
    for seed in SEEDS {
        let p = phantom::generate(seed);
        let t0 = std::time::Instant::now();
        let report = findings::compute(&p.to_volume(), &backend).unwrap();
        let s = score(&p.truth, &report.findings);
        eprintln!(
            "seed {seed:2}: {:?} {:.2}/{:.3} mm, {:.1}s; nodules {:?}; FP {}; lungs {:+.2}% {:+.2}%; \
             LAA {:.2} (err {:+.2}); notes {:?}",
            p.dims,
            p.spec.pixel_spacing_mm,
            p.spec.slice_spacing_mm,
            t0.elapsed().as_secs_f64(),
            s.nodules
                .iter()
                .map(|(t, f, solid, ok)| format!(
                    "{t:.1}{}→{}{}",
                    if *solid { "s" } else { "g" },
                    f.map_or("miss".into(), |d| format!("{d:.1}")),
                    if *ok { "" } else { "!" }
                ))
                .collect::<Vec<_>>(),
            s.false_positives,
            s.lung_error_pct[0],
            s.lung_error_pct[1],
            p.truth.emphysema_pct,
            s.laa_error_pp,
            report.notes,
        );
        for f in report.findings.iter().filter(|f| f.kind == "nodule") {
            let near = p.truth.nodules.iter().any(|t| {
                dist(f.center_lps_mm.unwrap(), t.center_lps_mm) <= (t.diameter_mm / 2.0).max(2.0)
            });
            if !near {
                eprintln!(
                    "    FP at {:.1?}: {:.1} mm, mean {:.0} HU, confidence {:.2}",
                    f.center_lps_mm.unwrap(),
                    f.diameter_mm.unwrap(),
                    f.mean_hu.unwrap(),
                    f.confidence.unwrap()
                );
            }
        }
        let calcifications = report
            .findings
            .iter()
            .filter(|f| f.kind == "calcification")
            .count();
        assert_eq!(
            calcifications,
            p.truth.calcifications.len(),
            "seed {seed}: calcifications"
        );
        let body = report.findings[0].volume_ml.unwrap();
        assert!(
            (body / p.truth.body_volume_ml - 1.0).abs() <= 0.01,
            "seed {seed}: body {body} ml, placed {} ml",
            p.truth.body_volume_ml
        );
        for c in &p.truth.calcifications {
            let found = report
                .findings
                .iter()
                .filter(|f| f.kind == "calcification")
                .find(|f| dist(f.center_lps_mm.unwrap(), c.center_lps_mm) <= 2.0);
            eprintln!(
                "    calcification {:.1} mm {:.0} HU: analytic {:.1}, found {:?} ratio {:.2}",
                c.diameter_mm,
                c.hu,
                analytic_agatston(c, &p),
                found.map(|f| (f.agatston_score.unwrap(), f.diameter_mm.unwrap())),
                found.map_or(0.0, |f| f.agatston_score.unwrap()
                    / analytic_agatston(c, &p))
            );
            let found = found.unwrap_or_else(|| panic!("seed {seed}: calcification {c:?} missed"));
            // Below 3 mm a lesion spans a few voxels and its per-slice peaks (hence
            // weights) are at the noise's mercy; larger ones are held to the model.
            let ratio = found.agatston_score.unwrap() / analytic_agatston(c, &p);
            if c.diameter_mm >= 3.0 {
                assert!(
                    (0.7..=1.3).contains(&ratio),
                    "seed {seed}: {c:?}: score ratio {ratio}"
                );
            }
        }
        all.push(s);
    }
    let eligible: Vec<_> = all
        .iter()
        .flat_map(|s| &s.nodules)
        .filter(|n| n.0 >= 4.0)
        .collect();
    let found = eligible.iter().filter(|n| n.1.is_some()).count();
    let sensitivity = found as f64 / eligible.len() as f64;
    let fp_per_scan =
        all.iter().map(|s| s.false_positives).sum::<usize>() as f64 / all.len() as f64;
    let mut errors: Vec<f64> = all
        .iter()
        .flat_map(|s| &s.nodules)
        .filter_map(|n| n.1.map(|d| (d - n.0).abs()))
        .collect();
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    let worst_lung = all
        .iter()
        .flat_map(|s| s.lung_error_pct)
        .fold(0.0, |a: f64, e| a.max(e.abs()));
    let worst_laa = all.iter().map(|s| s.laa_error_pp.abs()).fold(0.0, f64::max);
    let typed = all
        .iter()
        .flat_map(|s| &s.nodules)
        .filter(|n| n.1.is_some());
    let mistyped = typed.filter(|n| !n.3).count();
    eprintln!(
        "sensitivity (>= 4 mm) {found}/{} = {:.1}%; FP/scan {fp_per_scan:.2}; median diameter \
         error {median:.2} mm; worst lung volume error {worst_lung:.2}%; worst %LAA-950 error \
         {worst_laa:.2} pp; solid/ground-glass wrong on {mistyped}",
        eligible.len(),
        100.0 * sensitivity
    );
    assert!(
        eligible.len() >= 40,
        "too few nodules of 4 mm and more to measure"
    );
    assert!(sensitivity >= 0.95, "sensitivity {sensitivity}");
    assert!(fp_per_scan <= 1.0, "false positives per scan {fp_per_scan}");
    assert!(median <= 1.0, "median diameter error {median} mm");
    assert!(worst_lung <= 2.0, "lung volume error {worst_lung}%");
    assert!(worst_laa <= 0.5, "%LAA-950 error {worst_laa} pp");
    assert_eq!(mistyped, 0, "nodules called solid / ground-glass wrongly");
}
