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
//!
//! It also gives the linker `scripts/startup_symbols.txt`, the functions a short query
//! runs, to place first and together: those 7 MB of code are otherwise spread over about
//! 5,000 pages of a 150 MB text section, each mapped by a page fault in every process
//! (scripts/startup_symbols.py says how the list is made and when to remake it).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if linux && gnu {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=scripts/startup_symbols.txt");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if linux && gnu && default_linker_is_lld() {
        // The linker reads a copy in OUT_DIR: a target directory shared by several checkouts
        // (CI clones) may skip this script in one of them, and an absolute path into
        // another checkout would then name a file that is gone.
        let source = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
            .join("scripts/startup_symbols.txt");
        let order =
            std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("startup_symbols.txt");
        if std::fs::copy(&source, &order).is_err() {
            // Without the list the binary is only slower to start, so build it anyway.
            println!(
                "cargo:warning=no {}: link order left to the linker",
                source.display()
            );
            return;
        }
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// rustc links x86_64 Linux binaries with its bundled lld since 1.90, and only lld (or mold)
/// reads a symbol ordering file; GNU ld would reject the option. So the option is given
/// only for that rustc and target, and where nobody chose another linker.
fn default_linker_is_lld() -> bool {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "x86_64");
    let custom_linker = std::env::var_os("RUSTC_LINKER").is_some();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let linker_flags = flags.split('\x1f').any(|f| {
        f.contains("linker") || f.contains("link-self-contained") || f.contains("fuse-ld")
    });
    arch && !custom_linker && !linker_flags && rustc_version().is_some_and(|v| v >= (1, 90))
}

/// (major, minor) of the rustc that cargo runs, from `rustc --version`.
fn rustc_version() -> Option<(u32, u32)> {
    let rustc = std::env::var_os("RUSTC")?;
    let out = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut parts = text.split_whitespace().nth(1)?.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
