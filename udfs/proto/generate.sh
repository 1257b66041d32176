#!/usr/bin/env bash
# Regenerate udfs/src/model/onnx.rs, the prost messages for ONNX's onnx.proto (proto2,
# copied from the onnx Python package of the version pinned in
# tests/oracle/requirements.txt: site-packages/onnx/onnx.proto), with prost-build at the
# prost version in Cargo.lock. Needs protoc (Debian: protobuf-compiler). The output is
# committed, so that building medlake needs neither protoc nor a build script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prost_version="$(awk '/^name = "prost"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' "$here/../../Cargo.lock")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/out"
cat > "$work/Cargo.toml" <<TOML
[package]
name = "onnx-protogen"
version = "0.0.0"
edition = "2021"
publish = false
[workspace]
[dependencies]
prost-build = "=$prost_version"
TOML
cat > "$work/src/main.rs" <<'RS'
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let proto = std::path::Path::new(&args[1]);
    prost_build::Config::new()
        .out_dir(&args[2])
        .compile_protos(&[proto], &[proto.parent().unwrap()])
        .expect("prost-build");
}
RS
cargo run --quiet --release --manifest-path "$work/Cargo.toml" -- "$here/onnx.proto" "$work/out"
cp "$work/out/onnx.rs" "$here/../src/model/onnx.rs"
echo "wrote udfs/src/model/onnx.rs (prost-build $prost_version)"
