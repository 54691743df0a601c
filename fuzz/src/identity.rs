//! `identity`: SPIFFE ids (from peer certificates and the config), service
//! names, namespaces and trust domains.
//!
//! Input: lines; each is tried as all four.

use http::header::HeaderValue;
use pilotfish::identity::{ServiceName, SpiffeId, check_namespace, check_trust_domain};

use super::input::{lines, text};

/// Checks one input.
pub fn run(data: &[u8]) {
    for line in lines(data) {
        if let Some(line) = text(line) {
            check_spiffe_id(line);
            check_names(line);
        }
    }
}

fn check_spiffe_id(text: &str) {
    let Ok(id) = SpiffeId::parse(text) else {
        return;
    };
    assert_eq!(id.as_str(), text);
    assert_eq!(id.to_string(), text);
    let rest = &text["spiffe://".len()..];
    let (td, path) = rest.split_once('/').expect("a path");
    assert_eq!(id.trust_domain(), td);
    assert!(check_trust_domain(td).is_ok(), "{td:?}");
    assert!(
        !path.is_empty()
            && !path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
    );
    // The inbound side hands the id to the app in `pilotfish-client-id`,
    // counting on a parsed id to be a valid header value.
    assert!(
        HeaderValue::from_str(id.as_str()).is_ok(),
        "{text:?} parses as a SPIFFE id but is no header value"
    );
    if let Some((ns, sa)) = id.namespace_and_service() {
        assert!(!ns.is_empty() && !sa.is_empty());
        assert_eq!(SpiffeId::for_service(td, ns, sa), id);
    }
    assert_eq!(SpiffeId::parse(id.as_str()), Ok(id.clone()));
}

fn check_names(text: &str) {
    let service = ServiceName::new(text);
    // Service names and namespaces are both DNS labels.
    assert_eq!(service.is_ok(), check_namespace(text).is_ok(), "{text:?}");
    if let Ok(name) = service {
        assert_eq!(name.as_str(), text);
        assert!(text.len() <= 63 && !text.ends_with('-'));
        let id = SpiffeId::for_service("cluster.local", text, text);
        assert_eq!(SpiffeId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(id.namespace_and_service(), Some((text, text)));
    }
    if check_trust_domain(text).is_ok() {
        let id = format!("spiffe://{text}/ns/default/sa/fuzz");
        let parsed = SpiffeId::parse(&id).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.trust_domain(), text);
    }
}
