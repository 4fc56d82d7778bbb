//! Compiles `proto/routero/v1/*.proto` into Rust.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let snapshot = root.join("routero/v1/snapshot.proto");
    println!("cargo:rerun-if-changed={}", snapshot.display());
    tonic_prost_build::configure()
        .btree_map(".")
        .compile_protos(&[snapshot], &[root])?;
    Ok(())
}
