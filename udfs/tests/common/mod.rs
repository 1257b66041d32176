//! What the parity tests share: the CI rule, the GPU backend on any adapter, and
//! (`oracle`) the python oracles' plumbing.

pub mod oracle;

use medlake_udfs::runtime::Backend;

/// Whether this is CI (`CI=true`), where a missing adapter or oracle fails a test instead
/// of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|c| c == "true")
}

/// The GPU backend on any adapter (lavapipe in CI), its bindings limited to
/// `limit_binding` bytes if given (to force slabs), or `None` to skip; in CI a missing
/// adapter fails the test.
pub fn gpu(limit_binding: Option<u64>) -> Option<Backend> {
    use medlake_udfs::runtime::gpu::{AdapterChoice, Gpu};
    match Gpu::open(AdapterChoice::AnyIncludingSoftware) {
        Ok(mut g) => {
            if let Some(bytes) = limit_binding {
                g.limit_binding(bytes);
            }
            eprintln!("GPU backend on {}", g.describe());
            Some(Backend::Gpu(std::sync::Arc::new(g)))
        }
        Err(e) if in_ci() => {
            panic!("{e} (CI needs an adapter: apt-get install mesa-vulkan-drivers)")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}
