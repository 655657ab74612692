//! Builds the rustls client configuration for a `tls_config` block: trusted CAs (from
//! `ca_pem`/`ca_file`, the system's otherwise), a client certificate, certificate checks against
//! `server_name` instead of the URL host, or no checks at all (`insecure_skip_verify`), and the
//! lowest protocol version (`min_version`; rustls speaks TLS 1.2 and 1.3 only).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::TlsConfig;

fn read_pem(
    inline: Option<&str>,
    file: Option<&str>,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(s) = inline {
        return Ok(Some(s.as_bytes().to_vec()));
    }
    match file {
        Some(path) => std::fs::read(path)
            .map(Some)
            .map_err(|e| format!("tls_config: reading {what} {path:?}: {e}")),
        None => Ok(None),
    }
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_config: parsing {what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("tls_config: no certificate found in {what}"));
    }
    Ok(certs)
}

/// The rustls client configuration for `tls`.
pub fn client_config(tls: &TlsConfig, http2: bool) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

    let mut roots = RootCertStore::empty();
    match read_pem(tls.ca_pem.as_deref(), tls.ca_file.as_deref(), "CA")? {
        Some(pem) => {
            for cert in parse_certs(&pem, "CA")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_config: CA certificate: {e}"))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A broken system certificate should not make the endpoint unusable.
                let _ = roots.add(cert);
            }
        }
    }

    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(AcceptAnyCert {
            provider: Arc::clone(&provider),
            reject: false,
        })
    } else if roots.is_empty() {
        // No CA given and none installed: every server certificate is unknown. Fail at the
        // handshake (a clear, counted push error) rather than refusing the configuration.
        Arc::new(AcceptAnyCert {
            provider: Arc::clone(&provider),
            reject: true,
        })
    } else {
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| format!("tls_config: {e}"))?;
        match &tls.server_name {
            Some(name) if !name.is_empty() => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| format!("tls_config: server_name {name:?}: {e}"))?;
                Arc::new(FixedServerName {
                    inner: webpki,
                    name,
                })
            }
            _ => webpki,
        }
    };

    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version.as_deref() {
        Some("TLS13") => &[&rustls::version::TLS13],
        _ => rustls::DEFAULT_VERSIONS,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);

    let cert = read_pem(
        tls.cert_pem.as_deref(),
        tls.cert_file.as_deref(),
        "client certificate",
    )?;
    let key = read_pem(
        tls.key_pem.as_ref().map(|s| s.expose()),
        tls.key_file.as_deref(),
        "client key",
    )?;
    let mut config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let certs = parse_certs(&cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| format!("tls_config: parsing client key: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("tls_config: client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// Verifies the server's certificate for a configured name rather than the URL's host.
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: any certificate is accepted (handshake signatures are still checked);
/// with `reject`, every certificate is refused as coming from an unknown issuer.
#[derive(Debug)]
struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
    reject: bool,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.reject {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
