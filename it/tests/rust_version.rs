//! The Rust version the project claims must build its lock file: the Dockerfile's `rust:` image and
//! the workspace's `rust-version` are each at least the highest `rust-version` any locked package
//! declares (`cargo metadata --locked`). A `cargo update` that pulls in a crate needing a newer
//! compiler fails here, not in a user's `docker build`. Needs no docker.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// `1.89`, `1.88.0` → `(1, 89, 0)`, `(1, 88, 0)`.
fn parse_version(text: &str) -> anyhow::Result<(u64, u64, u64)> {
    let mut parts = text.trim().split('.').map(str::parse::<u64>);
    let major = parts.next().context("no major")??;
    let minor = parts.next().transpose()?.unwrap_or(0);
    let patch = parts.next().transpose()?.unwrap_or(0);
    if parts.next().is_some() {
        bail!("not a Rust version: {text:?}");
    }
    Ok((major, minor, patch))
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The highest `rust-version` of any package in the lock file, with the packages that declare it.
fn highest_locked() -> anyhow::Result<((u64, u64, u64), Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(root().join("Cargo.toml"))
        .output()
        .context("run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata --locked failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut best = ((0, 0, 0), Vec::new());
    for p in meta["packages"].as_array().context("packages")? {
        let Some(rv) = p["rust_version"].as_str() else {
            continue;
        };
        let v = parse_version(rv).with_context(|| format!("rust_version of {}", p["name"]))?;
        let who = format!(
            "{} {} ({rv})",
            p["name"].as_str().unwrap_or("?"),
            p["version"]
        );
        if v > best.0 {
            best = (v, vec![who]);
        } else if v == best.0 {
            best.1.push(who);
        }
    }
    Ok(best)
}

/// The versions of every `FROM rust:<version>...` line of the Dockerfile.
fn dockerfile_rust_versions(dockerfile: &str) -> anyhow::Result<Vec<(u64, u64, u64)>> {
    let mut found = Vec::new();
    for line in dockerfile.lines() {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let Some(image) = words.find(|w| !w.starts_with("--")) else {
            continue;
        };
        if let Some(tag) = image.strip_prefix("rust:") {
            let version = tag.split('-').next().unwrap_or(tag);
            found.push(parse_version(version).with_context(|| format!("in {line:?}"))?);
        }
    }
    Ok(found)
}

#[test]
fn versions_parse_with_or_without_a_patch_level() -> anyhow::Result<()> {
    assert_eq!(parse_version("1.89")?, (1, 89, 0));
    assert_eq!(parse_version("1.88.1")?, (1, 88, 1));
    assert!(parse_version("1.x").is_err());
    assert_eq!(
        dockerfile_rust_versions("FROM --platform=x rust:1.90-bookworm AS build\nFROM debian")?,
        vec![(1, 90, 0)]
    );
    Ok(())
}

#[test]
fn the_dockerfile_rust_image_builds_every_locked_package() -> anyhow::Result<()> {
    let (needed, by) = highest_locked()?;
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile"))?;
    let versions = dockerfile_rust_versions(&dockerfile)?;
    assert!(
        !versions.is_empty(),
        "the Dockerfile has no FROM rust:<version> stage"
    );
    for v in versions {
        assert!(
            v >= needed,
            "the Dockerfile builds with Rust {v:?}, but the lock file needs {needed:?}: {by:?}"
        );
    }
    Ok(())
}

#[test]
fn the_workspace_rust_version_is_what_the_lock_file_needs() -> anyhow::Result<()> {
    let (needed, by) = highest_locked()?;
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml"))?)?;
    let declared = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .context("workspace.package.rust-version")?;
    let declared = parse_version(declared)?;
    assert!(
        declared >= needed,
        "Cargo.toml says rust-version {declared:?}, but the lock file needs {needed:?}: {by:?}"
    );
    Ok(())
}
