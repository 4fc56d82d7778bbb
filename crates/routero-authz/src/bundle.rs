//! The policy bundle's version: a hash of every policy file's name and contents.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::AuthzError;

fn policy_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), AuthzError> {
    let entries = std::fs::read_dir(dir).map_err(|source| AuthzError::Bundle {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| AuthzError::Bundle {
                path: dir.display().to_string(),
                source,
            })?
            .path();
        if path.is_dir() {
            // Policy tests do not change decisions.
            if path.file_name().is_some_and(|name| name != "tests") {
                policy_files(&path, out)?;
            }
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// `sha256:<16 hex>` over the sorted relative paths and contents of the policy files under
/// `dir` (test files excluded). Any edit to a policy gives a new version.
pub fn bundle_version(dir: &Path) -> Result<String, AuthzError> {
    let mut files = Vec::new();
    policy_files(dir, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let contents = std::fs::read(&file).map_err(|source| AuthzError::Bundle {
            path: file.display().to_string(),
            source,
        })?;
        let name = file.strip_prefix(dir).unwrap_or(&file).to_string_lossy();
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((contents.len() as u64).to_be_bytes());
        hasher.update(&contents);
    }
    let digest = hasher.finalize();
    Ok(format!(
        "sha256:{}",
        hex::encode(digest.get(..8).unwrap_or_default())
    ))
}
