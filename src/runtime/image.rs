//! The managed images: their build contexts are compiled into the binary (images/managed-user,
//! images/managed-desktop), each tag carries a hash of its context, and Sluice builds them
//! through the Docker engine. The desktop image is built FROM the user image (its tag is part
//! of the desktop's hash), so both rest on the same local base.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// A file of a build context: name, content, mode.
type ContextFile = (&'static str, &'static [u8], u32);

/// The files of images/managed-user, as built.
const USER_CONTEXT: &[ContextFile] = &[
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

/// The files of images/managed-desktop, as built.
const DESKTOP_CONTEXT: &[ContextFile] = &[
    (
        "Dockerfile",
        include_bytes!("../../images/managed-desktop/Dockerfile"),
        0o644,
    ),
    (
        "start-desktop.sh",
        include_bytes!("../../images/managed-desktop/start-desktop.sh"),
        0o755,
    ),
    (
        "desktop-session.sh",
        include_bytes!("../../images/managed-desktop/desktop-session.sh"),
        0o755,
    ),
    (
        "autostart",
        include_bytes!("../../images/managed-desktop/autostart"),
        0o644,
    ),
    (
        "tint2rc",
        include_bytes!("../../images/managed-desktop/tint2rc"),
        0o644,
    ),
    (
        "firefox-policies.json",
        include_bytes!("../../images/managed-desktop/firefox-policies.json"),
        0o644,
    ),
    (
        "firefox-prefs.js",
        include_bytes!("../../images/managed-desktop/firefox-prefs.js"),
        0o644,
    ),
];

/// The image the user image builds from, made locally by scripts/base-image.sh when no
/// registry is reachable.
pub const BASE_IMAGE: &str = "debian:bookworm-slim";

/// Which managed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A shell host: sshd and the owner's account.
    User,
    /// The user image plus a desktop (TigerVNC, openbox, xterm, Firefox ESR).
    Desktop,
}

impl Kind {
    pub fn of(desktop: bool) -> Kind {
        if desktop { Kind::Desktop } else { Kind::User }
    }

    /// The image's repository.
    pub fn repository(self) -> &'static str {
        match self {
            Kind::User => "sluice/managed-user",
            Kind::Desktop => "sluice/managed-desktop",
        }
    }

    fn context(self) -> &'static [ContextFile] {
        match self {
            Kind::User => USER_CONTEXT,
            Kind::Desktop => DESKTOP_CONTEXT,
        }
    }

    /// The image this one is built from: the base, or the user image.
    pub fn parent(self) -> String {
        match self {
            Kind::User => BASE_IMAGE.to_string(),
            Kind::Desktop => tag(Kind::User),
        }
    }

    /// The label value Sluice puts on the image.
    pub fn label(self) -> &'static str {
        match self {
            Kind::User => "managed-user",
            Kind::Desktop => "managed-desktop",
        }
    }
}

/// `<repository>:<first 12 hex of the SHA-256 of the context (and the parent's tag)>`.
pub fn tag(kind: Kind) -> String {
    let mut h = Sha256::new();
    if kind == Kind::Desktop {
        h.update(kind.parent().as_bytes());
        h.update([0]);
    }
    for (name, data, mode) in kind.context() {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(mode.to_be_bytes());
        h.update((data.len() as u64).to_be_bytes());
        h.update(data);
    }
    let digest = hex::encode(h.finalize());
    format!("{}:{}", kind.repository(), &digest[..12])
}

/// The build context as a tar archive.
fn context_tar(kind: Kind) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in kind.context() {
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

/// The size of an image in the engine, in bytes; `None` when it is absent.
pub async fn size(docker: &Docker, name: &str) -> Result<Option<i64>, bollard::errors::Error> {
    match docker.inspect_image(name).await {
        Ok(i) => Ok(i.size),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Builds one managed image under its [`tag`], reporting steps and output to `on_event`. Its
/// parent must be present (the caller builds the user image before the desktop image).
pub async fn build(
    docker: &Docker,
    kind: Kind,
    mut on_event: impl FnMut(BuildEvent),
) -> Result<String, ImageError> {
    // The classic builder pulls a missing base image where a registry is reachable; where none
    // is, the error says how to make it locally.
    let base_present = exists(docker, &kind.parent()).await?;
    let tag = tag(kind);
    let tar = context_tar(kind).map_err(|e| ImageError::Build(e.to_string()))?;
    let build_args = HashMap::from([("USER_IMAGE".to_string(), tag_of_parent(kind))]);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&build_args)
        .labels(&HashMap::from([(
            "sluice.image".to_string(),
            kind.label().to_string(),
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

/// The `USER_IMAGE` build argument: the user image's tag (unused by the user image itself).
fn tag_of_parent(kind: Kind) -> String {
    match kind {
        Kind::User => String::new(),
        Kind::Desktop => kind.parent(),
    }
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
        let t = tag(Kind::User);
        assert!(t.starts_with("sluice/managed-user:"));
        assert_eq!(t.len(), "sluice/managed-user:".len() + 12);
        assert_eq!(t, tag(Kind::User), "stable");
        let d = tag(Kind::Desktop);
        assert!(d.starts_with("sluice/managed-desktop:"), "{d}");
        assert_eq!(
            Kind::Desktop.parent(),
            t,
            "the desktop builds on the user image"
        );
        let tar = context_tar(Kind::User).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile", "sshd_config", "entrypoint.sh"]);
        let tar = context_tar(Kind::Desktop).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let dockerfile = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_str() == Some("Dockerfile"))
            .map(|mut e| {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                s
            })
            .unwrap();
        assert!(dockerfile.contains("FROM ${USER_IMAGE}"), "{dockerfile}");
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
