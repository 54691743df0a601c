//! `tls::credentials::leaf_info`: the SPIFFE id, validity and serial of a
//! peer's certificate (DER), which the inbound side reads for every
//! caller (`tls::peer_identity`).
//!
//! Input: DER bytes.

use http::header::HeaderValue;
use pilotfish::identity::SpiffeId;
use pilotfish::tls::leaf_info;
use rustls_pki_types::CertificateDer;

/// Checks one input.
pub fn run(data: &[u8]) {
    let der = CertificateDer::from(data);
    let Ok(info) = leaf_info(&der) else {
        return;
    };
    if let Some(id) = &info.identity {
        assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(id));
        // It becomes the app's `pilotfish-client-id`.
        assert!(
            HeaderValue::from_str(id.as_str()).is_ok(),
            "certificate identity {:?} is no header value",
            id.as_str()
        );
    }
    assert!(!info.serial.contains(':'));
    assert!(
        info.serial.bytes().all(|b| b.is_ascii_hexdigit()),
        "{:?}",
        info.serial
    );
}
