//! Mutual TLS 1.3 between lunards, each side pinning the other's self-signed certificate.
//!
//! Both verifiers accept exactly the certificates whose SHA-256 [`Fingerprint`] is
//! configured (the server: any configured peer, and it then knows which peer connected;
//! the client: the one peer it dialled) and check the handshake signature with that
//! certificate's key, so a peer must hold the private key, not merely a copy of the
//! certificate. Names and validity dates are not checked: the pin is the trust, and an
//! expired-date failure years later would be an outage with no security gain (rotation is
//! by replacing the identity; docs/replication.md). Only TLS 1.3 is offered.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::identity::{Fingerprint, Identity};

/// The server name the client asks for (informative: verification is by fingerprint).
pub const SERVER_NAME: &str = "lunar-replication";

/// The trusted peers: fingerprint → peer name.
#[derive(Clone, Debug, Default)]
pub struct PeerSet {
    by_fingerprint: BTreeMap<Fingerprint, String>,
}

impl PeerSet {
    /// The set of `(name, fingerprint)` pairs.
    pub fn new(peers: impl IntoIterator<Item = (String, Fingerprint)>) -> PeerSet {
        PeerSet {
            by_fingerprint: peers.into_iter().map(|(n, f)| (f, n)).collect(),
        }
    }

    /// The peer presenting `cert`, if it is one.
    pub fn name_of(&self, cert: &[u8]) -> Option<&str> {
        self.by_fingerprint
            .get(&Fingerprint::of(cert))
            .map(String::as_str)
    }
}

/// The ring provider. rustls 0.23.48 deprecates it for lacking post-quantum key exchange
/// (X25519MLKEM768, offered by aws-lc-rs); aws-lc-rs needs cmake and a C toolchain at build
/// time that the appliance build does not have. Decision 0019 records the trade and the
/// one-line switch.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies by fingerprint against a [`PeerSet`]; used on both sides.
#[derive(Debug)]
struct Pinned {
    peers: PeerSet,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.peers.name_of(end_entity).is_some() {
            Ok(())
        } else {
            tracing::warn!(
                fingerprint = %Fingerprint::of(end_entity),
                "replication peer refused: its certificate is not pinned in replication.peers"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn tls12(
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

    fn tls13(
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

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

/// The listener's TLS configuration: our identity, client certificates required and
/// pinned to `peers`.
pub fn server_config(
    id: &Identity,
    peers: PeerSet,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(Pinned {
        peers,
        provider: provider.clone(),
    });
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![id.cert.clone()], id.key.clone_key())?;
    let mut cfg = cfg;
    // No session resumption: each connection is one request, and unsolicited tickets
    // would be data the client never reads (a close with unread data resets the
    // connection under the stream's last bytes).
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// A client TLS configuration dialling the peer whose certificate has `peer`.
pub fn client_config(
    id: &Identity,
    peer_name: &str,
    peer: Fingerprint,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(Pinned {
        peers: PeerSet::new([(peer_name.to_string(), peer)]),
        provider: provider.clone(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key())?;
    Ok(Arc::new(cfg))
}

/// The server name a client presents.
pub fn server_name() -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    ServerName::try_from(SERVER_NAME)
}

/// Why a handshake failed, as a metric label and a sentence for the operator.
pub fn classify(e: &std::io::Error) -> (&'static str, String) {
    let text = e.to_string();
    let reason = if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        match inner {
            rustls::Error::InvalidCertificate(_) => "unknown_peer",
            rustls::Error::NoCertificatesPresented => "no_certificate",
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                "not_tls"
            }
            rustls::Error::AlertReceived(_) => "refused_by_peer",
            rustls::Error::PeerIncompatible(_) => "incompatible",
            _ => "tls",
        }
    } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "closed"
    } else {
        "io"
    };
    let hint = match reason {
        "unknown_peer" => " (its certificate's fingerprint is not in replication.peers: compare with `lunarctl replica identity show` on the peer)",
        "no_certificate" => " (the peer presented no certificate: is it a lunard with a replication identity?)",
        "not_tls" => " (the peer does not speak TLS: plaintext is refused)",
        "refused_by_peer" => " (the peer refused us: does it pin this lunard's fingerprint?)",
        _ => "",
    };
    (reason, format!("{text}{hint}"))
}
