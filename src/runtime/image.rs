//! The managed user image: its build context is compiled into the binary (images/managed-user),
//! its tag carries a hash of that context, and Sluice builds it through the Docker engine.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// The files of images/managed-user, as built.
const CONTEXT: &[(&str, &[u8], u32)] = &[
    (
        "Dockerfile",
        include_bytes!("../../images/managed-user/Dockerfile"),
        0o644,
    ),
    (
        "sshd_config",
        include_bytes!("../../images/managed-user/sshd_config"),
        0o644,
    ),
    (
        "entrypoint.sh",
        include_bytes!("../../images/managed-user/entrypoint.sh"),
        0o755,
    ),
];

/// Repository of the managed image.
pub const REPOSITORY: &str = "sluice/managed-user";
/// The image the Dockerfile builds from, made locally by scripts/base-image.sh when no
/// registry is reachable.
pub const BASE_IMAGE: &str = "debian:bookworm-slim";

/// `sluice/managed-user:<first 12 hex of the context's SHA-256>`.
pub fn tag() -> String {
    let mut h = Sha256::new();
    for (name, data, mode) in CONTEXT {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(mode.to_be_bytes());
        h.update((data.len() as u64).to_be_bytes());
        h.update(data);
    }
    let digest = hex::encode(h.finalize());
    format!("{REPOSITORY}:{}", &digest[..12])
}

/// The build context as a tar archive.
fn context_tar() -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in CONTEXT {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        b.append_data(&mut header, name, *data)?;
    }
    b.into_inner()
}

/// What a build reports as it goes.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// `Step n/total: instruction`.
    Step {
        n: u32,
        total: u32,
        instruction: String,
    },
    /// A line of output of the current step.
    Output(String),
}

/// Why the image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "the base image {BASE_IMAGE} is missing and could not be pulled: make it with scripts/base-image.sh (debootstrap + docker import)"
    )]
    BaseMissing,
    #[error("image build failed: {0}")]
    Build(String),
    #[error("Docker engine error: {0}")]
    Docker(#[from] bollard::errors::Error),
}

/// Whether an image exists in the engine.
pub async fn exists(docker: &Docker, name: &str) -> Result<bool, bollard::errors::Error> {
    match docker.inspect_image(name).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Builds the managed image under [`tag`], reporting steps and output to `on_event`.
pub async fn build(
    docker: &Docker,
    mut on_event: impl FnMut(BuildEvent),
) -> Result<String, ImageError> {
    // The classic builder pulls a missing base image where a registry is reachable; where none
    // is, the error says how to make it locally.
    let base_present = exists(docker, BASE_IMAGE).await?;
    let tag = tag();
    let tar = context_tar().map_err(|e| ImageError::Build(e.to_string()))?;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .labels(&HashMap::from([(
            "sluice.image".to_string(),
            "managed-user".to_string(),
        )]))
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    let mut last_lines: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| match e {
            _ if !base_present => ImageError::BaseMissing,
            bollard::errors::Error::DockerStreamError { error } => ImageError::Build(error),
            other => ImageError::Docker(other),
        })?;
        if let Some(detail) = info.error_detail {
            if !base_present {
                return Err(ImageError::BaseMissing);
            }
            let msg = detail.message.unwrap_or_else(|| "unknown error".into());
            let context = last_lines.join("\n");
            return Err(ImageError::Build(format!("{msg}\n{context}")));
        }
        let Some(text) = info.stream else { continue };
        for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            if let Some(step) = parse_step(line) {
                on_event(step);
            } else {
                on_event(BuildEvent::Output(line.to_string()));
            }
            last_lines.push(line.to_string());
            if last_lines.len() > 20 {
                last_lines.remove(0);
            }
        }
    }
    if !exists(docker, &tag).await? {
        return Err(ImageError::Build(format!(
            "the build ended without producing {tag}"
        )));
    }
    Ok(tag)
}

/// Reads `Step 3/7 : RUN ...` lines of the classic builder.
fn parse_step(line: &str) -> Option<BuildEvent> {
    let rest = line.strip_prefix("Step ")?;
    let (counts, instruction) = rest.split_once(" : ")?;
    let (n, total) = counts.split_once('/')?;
    Some(BuildEvent::Step {
        n: n.trim().parse().ok()?,
        total: total.trim().parse().ok()?,
        instruction: instruction.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_follows_the_context() {
        let t = tag();
        assert!(t.starts_with("sluice/managed-user:"));
        assert_eq!(t.len(), "sluice/managed-user:".len() + 12);
        assert_eq!(t, tag(), "stable");
        let tar = context_tar().unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile", "sshd_config", "entrypoint.sh"]);
    }

    #[test]
    fn steps_are_recognised() {
        match parse_step("Step 3/7 : RUN apt-get update") {
            Some(BuildEvent::Step {
                n: 3,
                total: 7,
                instruction,
            }) => assert_eq!(instruction, "RUN apt-get update"),
            other => panic!("{other:?}"),
        }
        assert!(parse_step(" ---> Running in 1234").is_none());
    }
}
