//! Image references, normalised the way kubelet and docker spell them: `busybox` is
//! `docker.io/library/busybox:latest`, `name@sha256:…` and `name:tag@sha256:…` pin a
//! manifest. A bare `sha256:<hex>` (or `<hex>`) is an image id, not a pullable reference.

use oci_spec::distribution::Reference;

use crate::{Error, Result};

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub name: String,
    /// The registry host as written (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository within the registry (`library/busybox`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises `s`. A bare image id is refused: it names local content only.
    pub fn parse(s: &str) -> Result<ImageRef> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::InvalidArgument("image reference is empty".into()));
        }
        if parse_id(s).is_some() {
            return Err(Error::InvalidArgument(format!(
                "{s:?} is an image id, not a reference a registry can serve"
            )));
        }
        let reference = Reference::try_from(s)
            .map_err(|e| Error::InvalidArgument(format!("invalid image reference {s:?}: {e}")))?;
        if reference.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::InvalidArgument(format!("invalid image reference {s:?}: repository name must be lowercase")));
        }
        if let Some(digest) = reference.digest()
            && !digest.starts_with("sha256:")
        {
            return Err(Error::InvalidArgument(format!("image reference {s:?}: only sha256 digests are supported")));
        }
        // With a digest the tag is informational only: the digest decides what is pulled,
        // and the tag is not recorded (as containerd and kubelet do).
        let tag = if reference.digest().is_some() { None } else { reference.tag().map(str::to_string) };
        Ok(ImageRef {
            name: format!("{}/{}", reference.registry(), reference.repository()),
            registry: reference.registry().to_string(),
            repository: reference.repository().to_string(),
            tag,
            digest: reference.digest().map(str::to_string),
        })
    }

    /// `name:tag`, when the reference is a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name))
    }

    /// `name@digest` for a manifest digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name)
    }

    /// The canonical string: `name:tag` or `name@digest`.
    pub fn canonical(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => self.with_digest(d),
            (None, Some(t)) => format!("{}:{t}", self.name),
            (None, None) => format!("{}:latest", self.name),
        }
    }

    /// The reference oci-client talks to the registry with.
    pub fn to_client_reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Reference::with_digest(self.registry.clone(), self.repository.clone(), d.clone()),
            (None, tag) => Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

/// `sha256:<64 hex>` or `<64 hex>` → `sha256:<hex>`.
pub fn parse_id(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    is_sha256_hex(hex).then(|| format!("sha256:{hex}"))
}

/// The shortest id prefix accepted: crictl shows 13 characters; much shorter prefixes
/// would let a typo remove some other image.
const MIN_ID_PREFIX: usize = 12;

/// Whether `s` could be the start of an image id (`sha256:` optional, lowercase hex).
pub fn id_prefix(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (hex.len() >= MIN_ID_PREFIX && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then_some(hex)
}

pub fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The hex part of a `sha256:` digest, refusing anything else: digests become file names.
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if is_sha256_hex(hex) => Ok(hex),
        _ => Err(Error::InvalidArgument(format!("unsupported or malformed digest {digest:?} (only sha256 is supported)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    #[test]
    fn kubelet_style_normalisation() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.canonical(), "docker.io/library/busybox:latest");
        assert_eq!(r.tagged().unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(ImageRef::parse("user/app:1").unwrap().canonical(), "docker.io/user/app:1");
        assert_eq!(ImageRef::parse("index.docker.io/library/nginx").unwrap().name, "docker.io/library/nginx");
        let r = ImageRef::parse("127.0.0.1:5000/x/y:v2").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", "x/y", Some("v2")));
        assert_eq!(ImageRef::parse("localhost/x").unwrap().registry, "localhost");
        assert_eq!(ImageRef::parse("registry.k8s.io/pause:3.10").unwrap().name, "registry.k8s.io/pause");
    }

    #[test]
    fn digests_pin_and_drop_the_tag() {
        let r = ImageRef::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.canonical(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.tagged(), None);
        let r = ImageRef::parse(&format!("quay.io/a/b:1.0@{D}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.tag, None);
        assert_eq!(r.to_client_reference().digest(), Some(D));
    }

    #[test]
    fn bad_references_are_invalid_arguments() {
        for bad in ["", "UPPER/case", ":tag", "a@sha256:abc", "x@md5:ffffffffffffffffffffffffffffffff", &D[7..], D] {
            assert!(matches!(ImageRef::parse(bad), Err(Error::InvalidArgument(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_and_digests() {
        assert_eq!(parse_id(&D[7..]).as_deref(), Some(D));
        assert_eq!(parse_id(D).as_deref(), Some(D));
        assert_eq!(parse_id("busybox"), None);
        assert_eq!(id_prefix("sha256:ffffffffffff"), Some("ffffffffffff"));
        assert_eq!(id_prefix("ffff"), None, "too short to be unambiguous");
        assert_eq!(id_prefix("busybox"), None);
        assert!(digest_hex("sha256:../../etc").is_err());
        assert_eq!(digest_hex(D).unwrap().len(), 64);
    }
}
