//! Link the `medlake` binary as a fixed-address (non-PIE) executable on Linux.
//!
//! Why: the binary carries about 367,000 relative relocations (vtables and static strings
//! of DataFusion, deltalake, wgpu and the rest). As a position-independent executable the
//! dynamic loader applies every one at start, copying some 1,500 pages, and that took
//! 4.7 ms of the 6.8 ms `medlake --version` cost (2.1 ms without). Every CLI statement
//! pays it, so a short query run as a process is a third slower for nothing. A non-PIE
//! executable has those addresses resolved at link time, as Go binaries do by default.
//! The cost is that the executable's own image is not address-randomized (its libraries,
//! heap and stacks still are). Only the binary is linked so; the library, tests and
//! examples keep the platform default.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if linux && gnu {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
