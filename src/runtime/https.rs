//! Every HTTP(S) agent the program makes: ureq over rustls with a small *ring* provider,
//! trusting the roots of one PEM file read at run time.
//!
//! The roots are a parameter, so each caller names the file it trusts: the CA bundle the
//! image ships for the bot's own HTTPS (`--ca-bundle`, `SSL_CERT_FILE`) for the token
//! endpoint and the Swarming server, a cluster's own `ca.crt` for its API server. Reading
//! them at run time instead of compiling Mozilla's set in keeps 53 KB of DER out of the
//! binary and lets the image's bundle be updated without a new build.
//!
//! The provider offers only what current servers need: TLS 1.3 with AES-128-GCM (every
//! TLS 1.3 server must accept it), TLS 1.2 with ECDHE and AES-128-GCM for servers not yet
//! on 1.3, X25519 and P-256 for the key exchange, and the ECDSA and RSA signatures of the
//! Web PKI. Leaving out ChaCha20, AES-256 and the rest of *ring*'s defaults keeps their
//! code out of the binary (BENCHMARKS.md has the bytes).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::crypto::{CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use ureq::config::ConfigBuilder;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::typestate::AgentScope;
use webpki::ring as alg;

/// The CA bundle's default place (Debian's, and the image's).
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An agent from `builder` that verifies servers against `roots` with [`provider`].
/// Like every agent of ours, it names the program to servers, and leaves statuses to the
/// caller, who names the request and what the status means for it.
pub fn agent(builder: ConfigBuilder<AgentScope>, roots: RootCerts) -> ureq::Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(roots)
        .unversioned_rustls_crypto_provider(provider())
        .build();
    builder
        .http_status_as_error(false)
        .user_agent(concat!("test_machine_monitor/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .into()
}

/// An agent for plain-HTTP URLs only (the monitor's own status port): it trusts no
/// certificate, so an `https` redirect fails its handshake instead of going anywhere.
pub fn plain_agent(builder: ConfigBuilder<AgentScope>) -> ureq::Agent {
    agent(builder, RootCerts::new_with_certs(&[]))
}

/// The certificates of the PEM file at `path`. The error is one line naming the file and
/// what is wrong with it.
pub fn read_roots(path: &Path) -> Result<RootCerts, String> {
    let pem = std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            _ => e.to_string(),
        };
        format!(
            "CA bundle {}: {why} (set SSL_CERT_FILE or --ca-bundle to a PEM file of trusted roots)",
            path.display()
        )
    })?;
    parse_roots(&pem).map_err(|why| format!("CA bundle {}: {why}", path.display()))
}

/// The certificates of a PEM text; an error if it holds none or a section is malformed.
pub fn parse_roots(pem: &[u8]) -> Result<RootCerts, String> {
    let mut certs: Vec<Certificate<'static>> = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            // A private key has no business in a bundle of roots, but it does no harm.
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "not a PEM file of certificates after {} of them ({e})",
                    certs.len()
                ))
            }
        }
    }
    if certs.is_empty() {
        return Err(
            "no PEM certificate in it (expected -----BEGIN CERTIFICATE----- sections)".into(),
        );
    }
    Ok(RootCerts::from(certs))
}

/// The crypto provider of every agent (see the module's doc).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        signature_verification_algorithms: SIGNATURES,
        secure_random: &Ring,
        key_provider: &Ring,
    })
}

/// The signatures servers' chains use: ECDSA on P-256 and P-384 (Let's Encrypt's and
/// Google's ECDSA roots and intermediates are P-384), RSA PKCS#1 in certificates and
/// RSA-PSS, which TLS 1.3 requires of RSA server keys.
static SIGNATURES: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        alg::ECDSA_P256_SHA256,
        alg::ECDSA_P256_SHA384,
        alg::ECDSA_P384_SHA256,
        alg::ECDSA_P384_SHA384,
        alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        alg::RSA_PKCS1_2048_8192_SHA256,
        alg::RSA_PKCS1_2048_8192_SHA384,
        alg::RSA_PKCS1_2048_8192_SHA512,
    ],
    mapping: &[
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
        ),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[alg::RSA_PKCS1_2048_8192_SHA512],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &[alg::RSA_PKCS1_2048_8192_SHA384],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[alg::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

/// Randomness from *ring* (the kernel's `getrandom`); no private keys.
#[derive(Debug)]
struct Ring;

impl SecureRandom for Ring {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf)
            .map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for Ring {
    /// Only a client certificate would need a private key, and no caller sets one: not
    /// linking *ring*'s signing code saves its bytes.
    fn load_private_key(
        &self,
        _key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "client certificates are not supported: this program loads no private keys".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";

    fn count(roots: &RootCerts) -> usize {
        match roots {
            RootCerts::Specific(certs) => certs.len(),
            _ => panic!("expected specific roots"),
        }
    }

    #[test]
    fn every_certificate_of_a_bundle_is_a_root() {
        let pem = format!("# a comment line, as in Debian's bundle\n{CERT}{CERT}");
        assert_eq!(count(&parse_roots(pem.as_bytes()).unwrap()), 2);
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let e = parse_roots(b"").err().unwrap();
        assert!(e.starts_with("no PEM certificate in it"), "{e}");
        let e = parse_roots(b"not pem at all\n").err().unwrap();
        assert!(e.starts_with("no PEM certificate in it"), "{e}");
    }

    #[test]
    fn a_malformed_section_is_refused() {
        let pem = format!("{CERT}-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n");
        let e = parse_roots(pem.as_bytes()).err().unwrap();
        assert!(
            e.starts_with("not a PEM file of certificates after 1 of them"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_bundle_is_one_line_naming_it() {
        let e = read_roots(Path::new("/nonexistent/ca.pem")).err().unwrap();
        assert_eq!(
            e,
            "CA bundle /nonexistent/ca.pem: no such file (set SSL_CERT_FILE or --ca-bundle to a PEM file of trusted roots)"
        );
    }

    #[test]
    fn the_provider_builds_a_client_config() {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()));
        assert!(config.is_ok());
    }
}
