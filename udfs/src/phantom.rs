//! Synthetic chest CT phantoms whose contents are known: the ground truth that the
//! findings are measured against, and the demo's images.
//!
//! A phantom is a pure function of its seed. It holds, in Hounsfield units on a 512 × 512
//! matrix:
//!
//! - an elliptical body (soft tissue, 40 HU) with a layer of subcutaneous fat (−100 HU);
//! - a vertebral body (cancellous 300 HU, cortical shell 700 HU);
//! - two lungs (ellipsoids of parenchyma at −850 HU) and the airways: a trachea and two
//!   main bronchi (lumen −1000 HU, wall soft tissue) that open into the lungs, so a
//!   segmentation has to remove them;
//! - pulmonary vessels: a tree of tapering tubes (40 HU) in each lung;
//! - emphysema: spherical regions in which a known fraction of parenchyma voxels is
//!   destroyed (−1000 HU), the diffuse pattern %LAA-950 measures;
//! - nodules of known centre and diameter, 3 to 30 mm, solid (≈ 40 HU) or ground-glass
//!   (≈ −600 HU), clear of vessels, airways and the pleura;
//! - calcifications (200 to 900 HU) in the mediastinum;
//! - white noise of σ = 15 HU.
//!
//! Geometry varies by seed: in-plane spacing 0.6–0.9 mm, slice spacing 0.625–2.5 mm,
//! 150–200 mm of coverage. Large structures are sampled at voxel centres; nodules and
//! calcifications are supersampled (4³ per voxel at their surfaces), so their edges carry
//! the partial-volume mix a scanner's slice profile gives and their diameters are not
//! quantized to the slice spacing.
//!
//! Limits, stated so nobody mistakes the phantom for anatomy: no ribs, heart chambers,
//! contrast, streaks or beam hardening; nodules never touch a vessel or the pleura; lungs
//! never touch each other. The findings pass on it says what they do on these, not what
//! they do on patients.

use serde::Serialize;

/// Bumped whenever what a seed produces changes.
pub const PHANTOM_VERSION: &str = "phantom-1";
/// The matrix (rows and columns) of every phantom slice.
pub const MATRIX: usize = 512;
/// σ of the added white noise, HU.
pub const NOISE_HU: f64 = 15.0;

const AIR_HU: f32 = -1000.0;
const FAT_HU: f32 = -100.0;
const SOFT_HU: f32 = 40.0;
const PARENCHYMA_HU: f32 = -850.0;
const CANCELLOUS_HU: f32 = 300.0;
const CORTICAL_HU: f32 = 700.0;
const FAT_LAYER_MM: f64 = 12.0;

/// A tiny deterministic generator (SplitMix64): the phantom must not change when a
/// random-number crate changes its streams.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// What a phantom's seed fixes about its acquisition.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PhantomSpec {
    pub seed: u64,
    pub pixel_spacing_mm: f64,
    pub slice_spacing_mm: f64,
    pub slices: usize,
}

impl PhantomSpec {
    /// The acquisition for `seed`: spacing and coverage drawn from the ranges above.
    pub fn from_seed(seed: u64) -> PhantomSpec {
        const SLICE_SPACINGS: [f64; 6] = [0.625, 0.8, 1.0, 1.25, 2.0, 2.5];
        let mut rng = Rng::new(seed);
        let pixel_spacing_mm = (rng.range(0.6, 0.9) * 1000.0).round() / 1000.0;
        let slice_spacing_mm = SLICE_SPACINGS[(rng.next_u64() % 6) as usize];
        let coverage = rng.range(150.0, 200.0);
        PhantomSpec {
            seed,
            pixel_spacing_mm,
            slice_spacing_mm,
            slices: (coverage / slice_spacing_mm) as usize + 1,
        }
    }
}

/// A nodule as placed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TrueNodule {
    pub center_lps_mm: [f64; 3],
    pub diameter_mm: f64,
    pub solid: bool,
    pub hu: f64,
    /// "right" or "left" (the patient's).
    pub side: &'static str,
}

/// A calcification as placed (a sphere).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TrueCalcification {
    pub center_lps_mm: [f64; 3],
    pub diameter_mm: f64,
    pub hu: f64,
}

/// Everything the phantom holds that a finding can be held to.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    pub phantom_version: &'static str,
    pub spec: PhantomSpec,
    /// Voxels inside the body outline, in ml.
    pub body_volume_ml: f64,
    /// Voxels inside each lung's pleural outline (vessels, nodules and intrapulmonary
    /// airway included, as a lung volume is reported), in ml.
    pub right_lung_volume_ml: f64,
    pub left_lung_volume_ml: f64,
    /// Destroyed (emphysema) voxels as a percentage of lung voxels, per lung and overall:
    /// what %LAA-950 estimates.
    pub right_emphysema_pct: f64,
    pub left_emphysema_pct: f64,
    pub emphysema_pct: f64,
    pub nodules: Vec<TrueNodule>,
    pub calcifications: Vec<TrueCalcification>,
    pub vessel_segments: usize,
}

/// A phantom: HU on the grid the spec gives, slices ascending in z (inferior to superior),
/// with an identity orientation (rows along +x, columns along +y in LPS).
pub struct Phantom {
    pub spec: PhantomSpec,
    /// (slices, rows, columns).
    pub dims: [usize; 3],
    /// LPS position of the centre of voxel (column 0, row 0, slice 0).
    pub origin_lps_mm: [f64; 3],
    /// HU, rounded to integers as a scanner stores them.
    pub hu: Vec<i16>,
    pub truth: Truth,
}

impl Phantom {
    /// The LPS position of voxel (slice, row, column).
    pub fn lps(&self, k: usize, j: usize, i: usize) -> [f64; 3] {
        let p = self.spec.pixel_spacing_mm;
        [
            self.origin_lps_mm[0] + i as f64 * p,
            self.origin_lps_mm[1] + j as f64 * p,
            self.origin_lps_mm[2] + k as f64 * self.spec.slice_spacing_mm,
        ]
    }

    /// The voxel-to-LPS affine in the layout of [`crate::Volume::affine`].
    pub fn affine(&self) -> [[f64; 4]; 4] {
        let p = self.spec.pixel_spacing_mm;
        let o = self.origin_lps_mm;
        [
            [p, 0.0, 0.0, o[0]],
            [0.0, p, 0.0, o[1]],
            [0.0, 0.0, self.spec.slice_spacing_mm, o[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    /// The phantom as a [`crate::Volume`] of f32 HU (what assembling its DICOM series gives).
    pub fn to_volume(&self) -> crate::Volume {
        crate::Volume {
            dims: self.dims,
            affine: Some(self.affine()),
            values: self.hu.iter().map(|v| f32::from(*v)).collect(),
            order: (0..self.dims[0]).map(|k| (k, 0)).collect(),
            rescale: vec![(1.0, 0.0); self.dims[0]],
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ellipsoid {
    c: [f64; 3],
    a: [f64; 3],
}

impl Ellipsoid {
    /// Squared normalized radius: ≤ 1 inside.
    fn q(&self, p: [f64; 3]) -> f64 {
        (0..3)
            .map(|d| ((p[d] - self.c[d]) / self.a[d]).powi(2))
            .sum()
    }

    /// Whether a sphere of radius `r` around `p` lies inside, `margin` mm from the surface
    /// (checked on the ellipsoid shrunk by r + margin, which is conservative enough for
    /// these axis ratios).
    fn holds_sphere(&self, p: [f64; 3], r: f64) -> bool {
        let inner = Ellipsoid {
            c: self.c,
            a: self.a.map(|a| a - r),
        };
        inner.a.iter().all(|a| *a > 0.0) && inner.q(p) <= 1.0
    }
}

/// A tube between two points with a radius that tapers from `r0` to `r1`.
#[derive(Debug, Clone, Copy)]
struct Tube {
    a: [f64; 3],
    b: [f64; 3],
    r0: f64,
    r1: f64,
}

impl Tube {
    /// (distance from the axis, position along it in [0, 1] before clamping).
    fn locate(&self, p: [f64; 3]) -> (f64, f64) {
        let ab = sub(self.b, self.a);
        let ap = sub(p, self.a);
        let t = dot(ap, ab) / dot(ab, ab);
        let q = add(self.a, scale(ab, t.clamp(0.0, 1.0)));
        (norm(sub(p, q)), t)
    }

    fn radius_at(&self, t: f64) -> f64 {
        self.r0 + (self.r1 - self.r0) * t.clamp(0.0, 1.0)
    }

    /// Distance from `p` to the tube's surface (negative inside).
    fn surface_distance(&self, p: [f64; 3]) -> f64 {
        let (d, t) = self.locate(p);
        d - self.radius_at(t)
    }

    fn bounds(&self, pad: f64) -> ([f64; 3], [f64; 3]) {
        let r = self.r0.max(self.r1) + pad;
        let lo = [0, 1, 2].map(|d| self.a[d].min(self.b[d]) - r);
        let hi = [0, 1, 2].map(|d| self.a[d].max(self.b[d]) + r);
        (lo, hi)
    }
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn add(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn scale(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}
fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}
fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    norm(sub(a, b))
}

/// The layout of one phantom in LPS mm, before it is drawn.
struct Anatomy {
    body: [f64; 2],
    spine_c: [f64; 2],
    spine_r: f64,
    lungs: [Ellipsoid; 2],
    trachea: Tube,
    bronchi: [Tube; 2],
    vessels: Vec<Tube>,
    emphysema: Vec<(Ellipsoid, f64)>,
    nodules: Vec<TrueNodule>,
    calcifications: Vec<TrueCalcification>,
}

const SIDES: [&str; 2] = ["right", "left"];

fn plan(spec: &PhantomSpec, rng: &mut Rng, class: Option<PhantomClass>) -> Anatomy {
    let fov = MATRIX as f64 * spec.pixel_spacing_mm;
    let length = (spec.slices - 1) as f64 * spec.slice_spacing_mm;
    let rx = (0.45 * fov).min(165.0) * rng.range(0.9, 1.0);
    let ry = rx * rng.range(0.66, 0.74);
    let zc = length * rng.range(0.45, 0.55);
    // The patient's right is −x in LPS.
    let lungs = [-1.0, 1.0].map(|s| Ellipsoid {
        c: [s * 0.5 * rx, -0.05 * ry, zc],
        a: [0.3 * rx, 0.68 * ry, 0.62 * length],
    });
    let spine_r = 0.13 * rx;
    let spine_c = [0.0, 0.62 * ry];
    let trachea_r = 8.0;
    let carina = [0.0, -0.22 * ry, 0.74 * length];
    let trachea = Tube {
        a: carina,
        b: [0.0, -0.22 * ry, length + 10.0],
        r0: trachea_r,
        r1: trachea_r,
    };
    // Each main bronchus enters its lung 12 mm past the medial pleura and opens there.
    let bronchi = [0, 1].map(|s| {
        let l = &lungs[s];
        let sign = if s == 0 { -1.0 } else { 1.0 };
        let medial = l.c[0] - sign * l.a[0];
        Tube {
            a: carina,
            b: [medial + sign * 12.0, l.c[1] - 0.1 * ry, 0.62 * length],
            r0: 5.5,
            r1: 5.0,
        }
    });
    let mut vessels = Vec::new();
    for (s, l) in lungs.iter().enumerate() {
        let sign = if s == 0 { -1.0 } else { 1.0 };
        let hilum = [l.c[0] - sign * (l.a[0] - 8.0), l.c[1], l.c[2]];
        let trunks = 5 + (rng.next_u64() % 3) as usize;
        for _ in 0..trunks {
            grow_vessel(l, hilum, rng.range(2.5, 3.5), 3, rng, &mut vessels, sign);
        }
    }
    let avoid_bronchi = |p: [f64; 3], r: f64| {
        bronchi
            .iter()
            .all(|b| b.surface_distance(p) > r + 1.5 + 8.0)
    };
    let mut emphysema = Vec::new();
    // (regions, radius range, density range) of the emphysema drawn.
    let (regions, radii, densities) = match class {
        None => ((rng.next_u64() % 4) as usize, (12.0, 30.0), (0.3, 0.7)),
        // At most one small, sparse region: a few tenths of a percent LAA.
        Some(PhantomClass::Normal) => ((rng.next_u64() % 2) as usize, (10.0, 15.0), (0.1, 0.3)),
        // Diffuse: many large, dense regions in both lungs.
        Some(PhantomClass::Emphysematous) => (
            14 + (rng.next_u64() % 10) as usize,
            (18.0, 32.0),
            (0.45, 0.8),
        ),
        Some(PhantomClass::NoduleBearing) => (0, (12.0, 30.0), (0.3, 0.7)),
    };
    for _ in 0..regions {
        for _ in 0..50 {
            let s = (rng.next_u64() % 2) as usize;
            let r = rng.range(radii.0, radii.1);
            let p = point_in(&lungs[s], rng);
            if lungs[s].holds_sphere(p, r + 3.0) && avoid_bronchi(p, r + 15.0) {
                emphysema.push((
                    Ellipsoid { c: p, a: [r; 3] },
                    rng.range(densities.0, densities.1),
                ));
                break;
            }
        }
    }
    let mut nodules: Vec<TrueNodule> = Vec::new();
    // (count, smallest diameter, largest/smallest) of the nodules drawn.
    let (count, d_min, d_ratio): (usize, f64, f64) = match class {
        None => (3 + (rng.next_u64() % 4) as usize, 3.0, 10.0),
        Some(PhantomClass::NoduleBearing) => (3 + (rng.next_u64() % 3) as usize, 6.0, 5.0),
        Some(_) => (0, 3.0, 10.0),
    };
    for n in 0..count {
        // Log-uniform diameters (3–30 mm by default); a quarter ground-glass.
        let diameter = (d_min.ln() + rng.unit() * d_ratio.ln()).exp();
        let solid = n % 4 != 3;
        let r = diameter / 2.0;
        for _ in 0..200 {
            let s = (rng.next_u64() % 2) as usize;
            let p = point_in(&lungs[s], rng);
            let clear = lungs[s].holds_sphere(p, r + 6.0)
                && p[2] - r - 6.0 > 0.0
                && p[2] + r + 6.0 < length
                && avoid_bronchi(p, r)
                && vessels.iter().all(|v| v.surface_distance(p) > r + 3.0)
                && emphysema
                    .iter()
                    .all(|(e, _)| dist(e.c, p) > e.a[0] + r + 5.0)
                && nodules
                    .iter()
                    .all(|o| dist(o.center_lps_mm, p) > o.diameter_mm / 2.0 + r + 10.0);
            if clear {
                nodules.push(TrueNodule {
                    center_lps_mm: p,
                    diameter_mm: diameter,
                    solid,
                    hu: if solid {
                        rng.range(20.0, 60.0)
                    } else {
                        rng.range(-650.0, -550.0)
                    },
                    side: SIDES[s],
                });
                break;
            }
        }
    }
    // Calcifications in the mediastinum, between the lungs and in front of the spine.
    let mut calcifications: Vec<TrueCalcification> = Vec::new();
    let count = 1 + (rng.next_u64() % 4) as usize;
    for _ in 0..count {
        for _ in 0..100 {
            let d = rng.range(1.5, 5.0);
            let medial = lungs[1].c[0] - lungs[1].a[0];
            let p = [
                rng.range(-0.6, 0.6) * medial,
                rng.range(-0.55, 0.3) * ry,
                rng.range(0.15, 0.6) * length,
            ];
            let clear = lungs.iter().all(|l| l.q(p) > 1.3)
                && trachea.surface_distance(p) > 10.0
                && bronchi.iter().all(|b| b.surface_distance(p) > 10.0)
                && calcifications
                    .iter()
                    .all(|c| dist(c.center_lps_mm, p) > 12.0);
            if clear {
                calcifications.push(TrueCalcification {
                    center_lps_mm: p,
                    diameter_mm: d,
                    hu: rng.range(200.0, 900.0),
                });
                break;
            }
        }
    }
    Anatomy {
        body: [rx, ry],
        spine_c,
        spine_r,
        lungs,
        trachea,
        bronchi,
        vessels,
        emphysema,
        nodules,
        calcifications,
    }
}

/// A point drawn uniformly from the inner 80% of an ellipsoid.
fn point_in(e: &Ellipsoid, rng: &mut Rng) -> [f64; 3] {
    loop {
        let u = [0, 1, 2].map(|_| rng.range(-0.8, 0.8));
        if u.iter().map(|v| v * v).sum::<f64>() <= 0.64 {
            return [0, 1, 2].map(|d| e.c[d] + u[d] * e.a[d]);
        }
    }
}

/// A vessel from `start` heading outward into the lung, splitting in two `depth` times;
/// segments that would leave the lung (3 mm inside the pleura) are not drawn.
fn grow_vessel(
    lung: &Ellipsoid,
    start: [f64; 3],
    r: f64,
    depth: usize,
    rng: &mut Rng,
    out: &mut Vec<Tube>,
    sign: f64,
) {
    let dir = loop {
        let d = [
            sign * rng.range(0.1, 1.0),
            rng.range(-1.0, 1.0),
            rng.range(-1.0, 1.0),
        ];
        let n = norm(d);
        if n > 0.3 {
            break scale(d, 1.0 / n);
        }
    };
    let length = rng.range(25.0, 45.0) * (r / 3.0).sqrt();
    let end = add(start, scale(dir, length));
    let r_end = r * 0.75;
    if !lung.holds_sphere(end, r_end + 3.0) {
        return;
    }
    out.push(Tube {
        a: start,
        b: end,
        r0: r,
        r1: r_end,
    });
    if depth > 0 && r_end > 0.9 {
        for _ in 0..2 {
            grow_vessel(lung, end, r_end, depth - 1, rng, out, sign);
        }
    }
}

/// The HU of the anatomy drawn at voxel centres (everything but the supersampled lesions),
/// and which lung (1 right, 2 left) the voxel is in.
fn background(a: &Anatomy, p: [f64; 3]) -> (f32, u8) {
    let [rx, ry] = a.body;
    let (x, y) = (p[0], p[1]);
    if (x / rx).powi(2) + (y / ry).powi(2) > 1.0 {
        return (AIR_HU, 0);
    }
    if (x / (rx - FAT_LAYER_MM)).powi(2) + (y / (ry - FAT_LAYER_MM)).powi(2) > 1.0 {
        return (FAT_HU, 0);
    }
    let ds = ((x - a.spine_c[0]).powi(2) + (y - a.spine_c[1]).powi(2)).sqrt();
    if ds <= a.spine_r {
        return (
            if ds > a.spine_r - 2.0 {
                CORTICAL_HU
            } else {
                CANCELLOUS_HU
            },
            0,
        );
    }
    let lung = a
        .lungs
        .iter()
        .position(|l| l.q(p) <= 1.0)
        .map_or(0, |s| s as u8 + 1);
    let mut hu = if lung > 0 { PARENCHYMA_HU } else { SOFT_HU };
    // Airways: lumen, then a wall that is open at a bronchus's far end.
    for (t, wall) in std::iter::once((&a.trachea, 2.0)).chain(a.bronchi.iter().map(|b| (b, 1.5))) {
        let (d, s) = t.locate(p);
        let r = t.radius_at(s);
        if d <= r && (-0.2..=1.0).contains(&s) {
            return (AIR_HU, lung);
        }
        if d <= r + wall && (-0.2..1.0).contains(&s) {
            hu = SOFT_HU;
        }
    }
    (hu, lung)
}

/// Build the phantom for `seed`.
pub fn generate(seed: u64) -> Phantom {
    generate_spec(PhantomSpec::from_seed(seed))
}

/// Build a phantom with a chosen acquisition (benchmarks fix the slice count); the anatomy
/// still comes from the spec's seed.
pub fn generate_spec(spec: PhantomSpec) -> Phantom {
    draw(spec, None)
}

/// Which kind of chest a class phantom shows (for tests of embeddings and classifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhantomClass {
    /// No nodules; at most one small sparse emphysema region (well under 1% LAA).
    Normal,
    /// Strong diffuse emphysema (14–23 dense regions over both lungs: 9–18% of the lung
    /// voxels destroyed over seeds 1000–1059) and no nodules.
    Emphysematous,
    /// 3–5 nodules of 6–30 mm (log-uniform diameters; the fourth is ground-glass) and no
    /// emphysema. A nodule that finds no clear place in 200 tries is left out.
    NoduleBearing,
}

impl PhantomClass {
    pub const ALL: [PhantomClass; 3] = [
        PhantomClass::Normal,
        PhantomClass::Emphysematous,
        PhantomClass::NoduleBearing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PhantomClass::Normal => "normal",
            PhantomClass::Emphysematous => "emphysematous",
            PhantomClass::NoduleBearing => "nodule_bearing",
        }
    }
}

impl PhantomSpec {
    /// A thick-slice acquisition for `seed` (quicker to draw and to read): in-plane
    /// spacing 0.6–0.9 mm, slices of 1.25, 2 or 2.5 mm, 150–200 mm of coverage. Its own
    /// stream, so it is not [`PhantomSpec::from_seed`]'s acquisition for the same seed.
    pub fn thick(seed: u64) -> PhantomSpec {
        const SLICE_SPACINGS: [f64; 3] = [1.25, 2.0, 2.5];
        let mut rng = Rng::new(seed ^ 0x7468_6963_6b00_0000);
        let pixel_spacing_mm = (rng.range(0.6, 0.9) * 1000.0).round() / 1000.0;
        let slice_spacing_mm = SLICE_SPACINGS[(rng.next_u64() % 3) as usize];
        let coverage = rng.range(150.0, 200.0);
        PhantomSpec {
            seed,
            pixel_spacing_mm,
            slice_spacing_mm,
            slices: (coverage / slice_spacing_mm) as usize + 1,
        }
    }
}

/// Build a phantom of a class: the same body, lungs, airways, vessels, calcifications
/// and noise as [`generate_spec`] draws for the spec's seed (from its own stream, so not
/// the same anatomy as the unclassed phantom), with the class's emphysema and nodules.
pub fn generate_class(spec: PhantomSpec, class: PhantomClass) -> Phantom {
    draw(spec, Some(class))
}

fn draw(spec: PhantomSpec, class: Option<PhantomClass>) -> Phantom {
    use rayon::prelude::*;

    let seed = spec.seed;
    let stream = match class {
        None => 0,
        Some(c) => 0x636c_6173_7300_0000 + c as u64 + 1,
    };
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ stream);
    let anatomy = plan(&spec, &mut rng, class);
    let (nz, n) = (spec.slices, MATRIX);
    let p = spec.pixel_spacing_mm;
    let dz = spec.slice_spacing_mm;
    let half = (n as f64 - 1.0) / 2.0 * p;
    let origin = [-half, -half, 0.0];
    let at = |k: usize, j: usize, i: usize| {
        [
            origin[0] + i as f64 * p,
            origin[1] + j as f64 * p,
            origin[2] + k as f64 * dz,
        ]
    };
    let plane = n * n;
    let mut hu = vec![0f32; nz * plane];
    let mut lung = vec![0u8; nz * plane];
    hu.par_chunks_mut(plane)
        .zip(lung.par_chunks_mut(plane))
        .enumerate()
        .for_each(|(k, (h, l))| {
            for j in 0..n {
                for i in 0..n {
                    let (v, s) = background(&anatomy, at(k, j, i));
                    h[j * n + i] = v;
                    l[j * n + i] = s;
                }
            }
        });
    let index = |q: [f64; 3]| {
        [
            ((q[2] - origin[2]) / dz).round() as i64,
            ((q[1] - origin[1]) / p).round() as i64,
            ((q[0] - origin[0]) / p).round() as i64,
        ]
    };
    let dims = [nz, n, n];
    // Visit the voxels of a box (LPS mm), clipped to the volume.
    let for_box = |lo: [f64; 3], hi: [f64; 3], f: &mut dyn FnMut(usize, [f64; 3])| {
        let (a, b) = (index(lo), index(hi));
        for k in a[0].max(0)..=b[0].min(nz as i64 - 1) {
            for j in a[1].max(0)..=b[1].min(n as i64 - 1) {
                for i in a[2].max(0)..=b[2].min(n as i64 - 1) {
                    let (k, j, i) = (k as usize, j as usize, i as usize);
                    f((k * n + j) * n + i, at(k, j, i));
                }
            }
        }
    };
    // Supersampled coverage of a shape around voxel centre `q`: 1 or 0 away from its
    // surface, the fraction of 4³ subsamples inside near it.
    let diagonal = 0.5 * (2.0 * p * p + dz * dz).sqrt();
    let coverage = |q: [f64; 3], surface: &dyn Fn([f64; 3]) -> f64| {
        let d = surface(q);
        if d <= -diagonal {
            1.0
        } else if d >= diagonal {
            0.0
        } else {
            let mut inside = 0;
            for s in 0..64 {
                let o = [
                    ((s % 4) as f64 - 1.5) / 4.0 * p,
                    ((s / 4 % 4) as f64 - 1.5) / 4.0 * p,
                    ((s / 16) as f64 - 1.5) / 4.0 * dz,
                ];
                inside += usize::from(surface(add(q, o)) <= 0.0);
            }
            inside as f64 / 64.0
        }
    };
    // Vessels: inside the lungs only, over parenchyma (airway walls stay walls), with
    // partial volume, so a thin vessel stays continuous across thick slices as a
    // scanner's slice profile keeps it. Where segments meet, the larger coverage counts.
    let mut vessel_cover: std::collections::HashMap<usize, f64> = Default::default();
    for v in &anatomy.vessels {
        let (lo, hi) = v.bounds(diagonal);
        for_box(lo, hi, &mut |idx, q| {
            if lung[idx] != 0 && hu[idx] == PARENCHYMA_HU {
                let f = coverage(q, &|x| v.surface_distance(x));
                if f > 0.0 {
                    let e = vessel_cover.entry(idx).or_insert(0.0);
                    *e = e.max(f);
                }
            }
        });
    }
    for (idx, f) in vessel_cover {
        hu[idx] = (f64::from(PARENCHYMA_HU) * (1.0 - f) + f64::from(SOFT_HU) * f) as f32;
    }
    // Emphysema: parenchyma voxels destroyed at random with the region's density.
    let mut destroyed = [0u64; 2];
    for (e, density) in &anatomy.emphysema {
        let r = e.a[0];
        for_box(sub(e.c, [r; 3]), add(e.c, [r; 3]), &mut |idx, q| {
            if lung[idx] != 0 && hu[idx] == PARENCHYMA_HU && dist(q, e.c) <= r {
                let mut voxel_rng = Rng::new(seed ^ (idx as u64).wrapping_mul(0x9e37_79b9));
                if voxel_rng.unit() < *density {
                    hu[idx] = AIR_HU;
                    destroyed[lung[idx] as usize - 1] += 1;
                }
            }
        });
    }
    // Nodules and calcifications: spheres blended by their covered fraction of each voxel.
    let spheres = anatomy
        .nodules
        .iter()
        .map(|s| (s.center_lps_mm, s.diameter_mm / 2.0, s.hu))
        .chain(
            anatomy
                .calcifications
                .iter()
                .map(|c| (c.center_lps_mm, c.diameter_mm / 2.0, c.hu)),
        );
    for (c, r, value) in spheres {
        for_box(sub(c, [r + 1.0; 3]), add(c, [r + 1.0; 3]), &mut |idx, q| {
            let covered = coverage(q, &|x| dist(x, c) - r);
            if covered > 0.0 {
                hu[idx] = (f64::from(hu[idx]) * (1.0 - covered) + value * covered) as f32;
            }
        });
    }
    let voxel_ml = p * p * dz / 1000.0;
    let mut lung_voxels = [0u64; 2];
    for l in &lung {
        if *l != 0 {
            lung_voxels[*l as usize - 1] += 1;
        }
    }
    let [rx, ry] = anatomy.body;
    let body_voxels: u64 = (0..n * n)
        .filter(|&idx| {
            let q = at(0, idx / n, idx % n);
            (q[0] / rx).powi(2) + (q[1] / ry).powi(2) <= 1.0
        })
        .count() as u64
        * nz as u64;
    // Noise last, per slice from its own stream so slices can be drawn in parallel.
    let values: Vec<i16> = hu
        .par_chunks(plane)
        .enumerate()
        .flat_map_iter(|(k, h)| {
            let mut rng = Rng::new(seed.rotate_left(17) ^ (k as u64).wrapping_mul(0x5851_f42d));
            h.iter()
                .map(|v| {
                    (f64::from(*v) + NOISE_HU * rng.normal())
                        .round()
                        .clamp(-1024.0, 3071.0) as i16
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
    let truth = Truth {
        phantom_version: PHANTOM_VERSION,
        spec,
        body_volume_ml: body_voxels as f64 * voxel_ml,
        right_lung_volume_ml: lung_voxels[0] as f64 * voxel_ml,
        left_lung_volume_ml: lung_voxels[1] as f64 * voxel_ml,
        right_emphysema_pct: pct(destroyed[0], lung_voxels[0]),
        left_emphysema_pct: pct(destroyed[1], lung_voxels[1]),
        emphysema_pct: pct(destroyed[0] + destroyed[1], lung_voxels[0] + lung_voxels[1]),
        nodules: anatomy.nodules,
        calcifications: anatomy.calcifications,
        vessel_segments: anatomy.vessels.len(),
    };
    Phantom {
        spec,
        dims,
        origin_lps_mm: origin,
        hu: values,
        truth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_give_the_documented_ranges() {
        for seed in 0..200 {
            let s = PhantomSpec::from_seed(seed);
            assert!((0.6..=0.9).contains(&s.pixel_spacing_mm), "{s:?}");
            assert!((0.625..=2.5).contains(&s.slice_spacing_mm), "{s:?}");
            let coverage = (s.slices - 1) as f64 * s.slice_spacing_mm;
            assert!((148.0..=200.0).contains(&coverage), "{s:?}");
        }
    }

    #[test]
    fn noise_is_standard_normal() {
        let mut rng = Rng::new(7);
        let xs: Vec<f64> = (0..200_000).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.01, "{var}");
    }
}
