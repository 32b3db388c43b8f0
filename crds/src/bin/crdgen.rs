//! Writes the CRDs generated from the types into a directory (default: `crds/yaml`).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("yaml"));
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in causeway_crds::crdgen::crds() {
        let path = dir.join(file);
        std::fs::write(&path, causeway_crds::crdgen::to_yaml(&crd)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
