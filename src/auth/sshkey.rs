//! SSH public keys of users: parsing the OpenSSH `authorized_keys` form, fingerprints, and
//! generating ed25519 key pairs whose private half is handed out once.

use russh::keys::ssh_key::{
    Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, public::KeyData,
};

/// A parsed, accepted public key.
#[derive(Debug, Clone)]
pub struct ParsedKey {
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, ...
    pub key_type: String,
    /// The key in `authorized_keys` form, with its comment.
    pub public_key: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The comment of the key line, if any.
    pub comment: String,
}

/// Parses one OpenSSH public key line. Accepts ed25519, ecdsa and rsa of 2048 bits or more.
pub fn parse(line: &str) -> Result<ParsedKey, String> {
    let line = line.trim();
    if line.is_empty() {
        return Err(
            "is required: an OpenSSH public key line such as `ssh-ed25519 AAAA... me@laptop`"
                .into(),
        );
    }
    if line.contains('\n') {
        return Err("must be a single key line".into());
    }
    let key = PublicKey::from_openssh(line).map_err(|_| {
        "is not an OpenSSH public key (expected `TYPE BASE64 [comment]`)".to_string()
    })?;
    match key.key_data() {
        KeyData::Ed25519(_) | KeyData::Ecdsa(_) => {}
        KeyData::Rsa(rsa) => {
            if rsa.key_size() < 2048 {
                return Err(format!(
                    "RSA keys must have at least 2048 bits; this one has {}",
                    rsa.key_size()
                ));
            }
        }
        _ => {
            return Err(format!(
                "key type {} is not accepted: use ed25519, ecdsa or rsa (2048 bits or more)",
                key.algorithm().as_str()
            ));
        }
    }
    let public_key = key
        .to_openssh()
        .map_err(|_| "cannot be re-encoded".to_string())?;
    Ok(ParsedKey {
        key_type: key.algorithm().as_str().to_string(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        comment: key.comment().as_str_lossy().to_string(),
        public_key,
    })
}

/// A new ed25519 key pair: (private key in OpenSSH PEM form, parsed public key).
pub fn generate(comment: &str) -> Result<(String, ParsedKey), String> {
    let mut key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|e| format!("key generation failed: {e}"))?;
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| format!("key encoding failed: {e}"))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| format!("key encoding failed: {e}"))?;
    Ok((private.to_string(), parse(&public)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_with_their_fingerprint() {
        let (private, public) = generate("alice@sluice").unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert_eq!(public.key_type, "ssh-ed25519");
        assert!(public.fingerprint.starts_with("SHA256:"));
        assert!(public.public_key.ends_with(" alice@sluice"));
        let again = parse(&public.public_key).unwrap();
        assert_eq!(again.fingerprint, public.fingerprint);
    }

    #[test]
    fn garbage_and_weak_keys_are_refused() {
        assert!(parse("").is_err());
        assert!(parse("ssh-ed25519 notbase64!").is_err());
        assert!(parse("hello world").is_err());
        // A 1024-bit RSA key (public part only; e = 65537).
        let weak = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDUnrDmZjNRgK8TB5y008QDDKmOtYfpV7U6GofLH5ijZ3NJLkMjoScej1H18ZC02OllX9GU5vWBEFHky7waPF4ASRREIZwvuDGaEPh8l+t+0Wg+NLGoeOoCkoCTVPqqfvW5CMWxfykL/3UbfNMS/UYlwdMrFdxXEH2/l7inOt04+Q== weak";
        let err = parse(weak).unwrap_err();
        assert!(err.contains("2048"), "{err}");
    }
}
