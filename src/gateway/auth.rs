//! The gateway's token check: finds the request's bearer token (RFC 6750:
//! `Authorization: Bearer`, or a configured query parameter; never two),
//! verifies it with the [`Keys`] in force, checks the route's roles or
//! scopes, and tells the app who called in identity header fields that
//! only the gateway sets ([`strip_identity`] removes what clients send).
//!
//! A token is a credential: it is never in an error, a log line or a
//! `Debug` output; errors name the reason only.

use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use http::request::Parts;
use tracing::warn;

use super::keys::Keys;
use super::token_cache::TokenCache;
use crate::config::{JwtConfig, RouteAuth};
use crate::http::ProxyError;
use crate::http::error::MISSING_TOKEN;
use crate::jwt::{Rejection, Verified};

/// The token's subject (`sub`).
pub const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// The token's roles, comma-separated.
pub const X_USER_ROLES: HeaderName = HeaderName::from_static("x-user-roles");
/// The identity fields of a gateway without `jwt`: still removed from
/// every client request.
pub static DEFAULT_IDENTITY_HEADERS: &[HeaderName] = &DEFAULTS;
static DEFAULTS: [HeaderName; 2] = [X_USER_ID, X_USER_ROLES];

/// The query parameter OAuth clients put a token in (RFC 6750 2.3).
const ACCESS_TOKEN: &str = "access_token";
/// Scopes also come from this claim (Azure AD, Okta), beside the
/// configured one.
const SCP: &str = "scp";

/// Why a request's token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, on a route that needs one: 401 without `error`.
    #[error("no token")]
    Missing,
    /// A token in the query, where none is configured.
    #[error("a token in the query string is not accepted here")]
    TokenInQuery,
    /// A token in more than one place (RFC 6750 2: one method only).
    #[error("more than one token")]
    TwoTokens,
    /// The `Authorization: Bearer` value is not a token.
    #[error("the bearer token is malformed")]
    Malformed,
    /// The token does not verify.
    #[error("{0}")]
    Invalid(Rejection),
    /// A role or scope the route needs is not in the token: 403.
    #[error("the token lacks {0}")]
    Insufficient(String),
}

impl AuthError {
    /// The 401's `error_description`, or `missing-token`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => MISSING_TOKEN,
            Self::TokenInQuery => "token-in-query",
            Self::TwoTokens => "two-tokens",
            Self::Malformed => "malformed",
            Self::Invalid(rejection) => rejection.as_str(),
            Self::Insufficient(_) => "insufficient-scope",
        }
    }
}

impl From<AuthError> for ProxyError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Insufficient(missing) => ProxyError::InsufficientScope { missing },
            other => ProxyError::Unauthenticated {
                reason: other.reason(),
            },
        }
    }
}

/// The token check of one `jwt` config.
#[derive(Debug)]
pub struct Auth {
    keys: Keys,
    /// Tokens verified recently (a client sends the same one many times).
    cache: TokenCache,
    /// The clock skew allowed, for how long a cached token holds.
    leeway: std::time::Duration,
    roles_claim: String,
    scopes_claim: String,
    /// Claim to header name, from `claim_headers`.
    claim_headers: Vec<(String, HeaderName)>,
    query_param: Option<String>,
    /// `x-user-id`, `x-user-roles`, then each `claim_headers` name.
    identity: Vec<HeaderName>,
}

/// Where a token was found.
#[derive(Default)]
struct Found<'a> {
    header: Option<&'a str>,
    header_count: usize,
    /// The configured parameter's value, percent-decoded.
    query: Option<String>,
    query_count: usize,
    /// `access_token` in the query where another name (or none) is
    /// configured.
    unaccepted_query: usize,
    /// An `Authorization: Bearer` whose value is not text.
    malformed: bool,
}

impl Auth {
    /// The check `config` asks for, with `keys` (built from it).
    pub fn new(config: &JwtConfig, keys: Keys) -> Self {
        let claim_headers: Vec<(String, HeaderName)> = config
            .claim_headers
            .iter()
            .filter_map(
                |(claim, header)| match HeaderName::from_bytes(header.as_bytes()) {
                    Ok(name) => Some((claim.clone(), name)),
                    Err(_) => {
                        // Validation refuses these; a config built in code might not.
                        warn!(
                            claim,
                            header, "jwt.claim_headers: not a header name; claim not sent"
                        );
                        None
                    }
                },
            )
            .collect();
        let mut identity = DEFAULT_IDENTITY_HEADERS.to_vec();
        for (_, name) in &claim_headers {
            if !identity.contains(name) {
                identity.push(name.clone());
            }
        }
        Self {
            keys,
            cache: TokenCache::default(),
            leeway: config.leeway.0,
            roles_claim: config.roles_claim.clone(),
            scopes_claim: config.scopes_claim.clone(),
            claim_headers,
            query_param: config.query_param.clone(),
            identity,
        }
    }

    /// The keys, for a reload to carry over (a JWKS URL's fetch).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The names of the identity header fields the gateway owns
    /// (`x-user-id`, `x-user-roles`, each `claim_headers` value).
    pub fn identity_headers(&self) -> &[HeaderName] {
        &self.identity
    }

    /// Checks a request against a route's requirement. `Ok(None)` for a
    /// public route (the token is not looked at); `Ok(Some(verified))`
    /// with the token verified and the requirement met.
    pub fn check(
        &self,
        required: &RouteAuth,
        parts: &Parts,
    ) -> Result<Option<Verified>, AuthError> {
        if *required == RouteAuth::Public {
            return Ok(None);
        }
        let token = self.token(parts)?;
        let keys = self.keys.verifier();
        let now = std::time::SystemTime::now();
        let verified = match self.cache.get(&token, &keys, now) {
            Some(verified) => verified,
            None => {
                let verified = keys.verify(token.as_ref()).map_err(AuthError::Invalid)?;
                self.cache.put(&token, &verified, &keys, self.leeway, now);
                verified
            }
        };
        match required {
            RouteAuth::Public | RouteAuth::Required => {}
            RouteAuth::Roles(roles) => {
                let held = claim_strings(&verified.claims, &self.roles_claim);
                if let Some(missing) = roles.iter().find(|r| !held.contains(r)) {
                    return Err(AuthError::Insufficient(format!("role {missing}")));
                }
            }
            RouteAuth::Scopes(scopes) => {
                let mut held = claim_strings(&verified.claims, &self.scopes_claim);
                if self.scopes_claim != SCP {
                    held.extend(claim_strings(&verified.claims, SCP));
                }
                if let Some(missing) = scopes.iter().find(|s| !held.contains(s)) {
                    return Err(AuthError::Insufficient(format!("scope {missing}")));
                }
            }
        }
        Ok(Some(verified))
    }

    /// The request's one token.
    fn token<'a>(&self, parts: &'a Parts) -> Result<std::borrow::Cow<'a, str>, AuthError> {
        let found = self.find(parts);
        if found.header_count + found.query_count + found.unaccepted_query > 1 {
            return Err(AuthError::TwoTokens);
        }
        if found.malformed {
            return Err(AuthError::Malformed);
        }
        if let Some(token) = found.header {
            return Ok(token.into());
        }
        if let Some(token) = found.query {
            return Ok(token.into());
        }
        if found.unaccepted_query > 0 {
            return Err(AuthError::TokenInQuery);
        }
        Err(AuthError::Missing)
    }

    fn find<'a>(&self, parts: &'a Parts) -> Found<'a> {
        let mut found = Found::default();
        for value in parts.headers.get_all(AUTHORIZATION) {
            let bytes = value.as_bytes();
            let is_bearer = bytes.len() >= 6 && bytes[..6].eq_ignore_ascii_case(b"bearer");
            if !is_bearer || bytes.get(6).is_some_and(|b| *b != b' ' && *b != b'\t') {
                // Another scheme (Basic, ...): not ours.
                continue;
            }
            found.header_count += 1;
            match value.to_str().map(|v| v[6..].trim()) {
                Ok(token) if !token.is_empty() && !token.contains(char::is_whitespace) => {
                    found.header = Some(token);
                }
                _ => found.malformed = true,
            }
        }
        let Some(query) = parts.uri.query() else {
            return found;
        };
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name);
            let accepted = self.query_param.as_deref() == Some(name.as_str());
            if accepted {
                found.query_count += 1;
                let value = percent_decode(value);
                if value.is_empty() {
                    found.malformed = true;
                } else {
                    found.query = Some(value);
                }
            } else if name == ACCESS_TOKEN {
                found.unaccepted_query += 1;
            }
        }
        found
    }

    /// `uri` without its token parameters (the configured one and
    /// `access_token`), for what goes upstream and into logs; `None` when
    /// it has none.
    pub fn without_query_token(&self, uri: &http::Uri) -> Option<http::Uri> {
        let query = uri.query()?;
        let is_token = |pair: &&str| {
            let name = percent_decode(pair.split_once('=').map_or(*pair, |(n, _)| n));
            name == ACCESS_TOKEN || self.query_param.as_deref() == Some(name.as_str())
        };
        if !query.split('&').any(|pair| is_token(&pair)) {
            return None;
        }
        let kept: Vec<&str> = query.split('&').filter(|pair| !is_token(pair)).collect();
        let path_and_query = if kept.is_empty() {
            uri.path().to_owned()
        } else {
            format!("{}?{}", uri.path(), kept.join("&"))
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = path_and_query.parse().ok();
        http::Uri::from_parts(parts).ok()
    }

    /// Sets `x-user-id` (`sub`), `x-user-roles` (the roles claim's values
    /// joined with `,`) and each `claim_headers` field, on the request
    /// going upstream. A claim that is absent, or not a string, number,
    /// boolean or list of strings, sets nothing.
    pub fn set_identity(&self, verified: &Verified, headers: &mut http::HeaderMap) {
        if let Some(value) = verified.subject().and_then(header_value) {
            headers.insert(X_USER_ID, value);
        }
        let roles = claim_strings(&verified.claims, &self.roles_claim);
        if let Some(value) = header_value(&roles.join(",")).filter(|_| !roles.is_empty()) {
            headers.insert(X_USER_ROLES, value);
        }
        for (claim, name) in &self.claim_headers {
            let text = match claim_value(&verified.claims, claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    v.to_string()
                }
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                _ => continue,
            };
            if let Some(value) = header_value(&text) {
                headers.insert(name.clone(), value);
            }
        }
    }
}

/// Removes every identity header field: each of `names`, and any spelling
/// of one with `_` for `-` (`x_user_id`: servers that map `_` to `-`, as
/// CGI does, would take it for the real one). Always, before anything
/// else reads the request.
pub fn strip_identity(headers: &mut http::HeaderMap, names: &[HeaderName]) {
    for name in names {
        headers.remove(name);
    }
    let spelled: Vec<HeaderName> = headers
        .keys()
        .filter(|key| {
            let key = key.as_str().as_bytes();
            key.contains(&b'_')
                && names.iter().any(|name| {
                    let name = name.as_str().as_bytes();
                    name.len() == key.len()
                        && name.iter().zip(key).all(|(n, k)| {
                            n == k || (*n == b'-' && *k == b'_') || (*n == b'_' && *k == b'-')
                        })
                })
        })
        .cloned()
        .collect();
    for name in spelled {
        headers.remove(name);
    }
}

/// A claim by name; else, for a dotted name, by path
/// (`realm_access.roles`, as Keycloak puts roles). A name with dots that
/// is a claim itself (`https://example.com/roles`) is found first.
fn claim_value<'a>(claims: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    claims.get(name).or_else(|| {
        if !name.contains('.') {
            return None;
        }
        name.split('.')
            .try_fold(claims, |value, part| value.get(part))
    })
}

/// The strings of a claim: a list of strings, or one space-separated
/// string.
fn claim_strings(claims: &serde_json::Value, name: &str) -> Vec<String> {
    match claim_value(claims, name) {
        Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// A header value from claim text; `None` if it cannot be one (control
/// characters).
fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

/// `%XX` decoded, `+` as space (form encoding); a bad escape stays as it
/// is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JwtKeySource;
    use crate::gateway::keys::tests::{Signer, config, now};
    use crate::http::{Direction, ErrorFormat};
    use http::StatusCode;
    use serde_json::json;

    struct Fixture {
        signer: Signer,
        auth: Auth,
        _dir: tempfile::TempDir,
    }

    fn fixture(change: impl FnOnce(&mut JwtConfig)) -> Fixture {
        let signer = Signer::es256();
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwt.pub");
        std::fs::write(&path, &signer.public_pem).expect("write");
        let mut config = config(vec![JwtKeySource::Pem(path)]);
        config
            .claim_headers
            .insert("email".into(), "x-user-email".into());
        change(&mut config);
        let keys = Keys::load(&config, None).expect("keys");
        Fixture {
            signer,
            auth: Auth::new(&config, keys),
            _dir: dir,
        }
    }

    fn claims() -> serde_json::Value {
        json!({"sub": "alice", "iss": "https://pilotfish.demo", "aud": "demo",
               "exp": now() + 600, "roles": ["admin", "user"],
               "scope": "orders:read orders:write", "email": "alice@example.com"})
    }

    fn with(change: serde_json::Value) -> serde_json::Value {
        crate::jwt::tests::changed(claims(), &change)
    }

    fn parts(uri: &str, authorization: &[&str]) -> Parts {
        let mut req = http::Request::get(uri);
        for value in authorization {
            req = req.header(AUTHORIZATION, *value);
        }
        req.body(()).expect("request").into_parts().0
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_valid_token_passes_and_public_routes_look_at_nothing() {
        let f = fixture(|_| {});
        let token = f.signer.sign(None, &claims());
        let verified = f
            .auth
            .check(&RouteAuth::Required, &parts("/", &[&bearer(&token)]))
            .expect("ok")
            .expect("verified");
        assert_eq!(verified.subject(), Some("alice"));
        // Scheme case-insensitive.
        let lower = format!("bearer {token}");
        assert!(
            f.auth
                .check(&RouteAuth::Required, &parts("/", &[&lower]))
                .is_ok()
        );
        assert_eq!(
            f.auth
                .check(&RouteAuth::Public, &parts("/", &["Bearer junk"])),
            Ok(None)
        );
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let f = fixture(|_| {});
        let refused = |claims: serde_json::Value| {
            let token = f.signer.sign(None, &claims);
            f.auth
                .check(&RouteAuth::Required, &parts("/", &[&bearer(&token)]))
                .expect_err("refused")
                .reason()
        };
        assert_eq!(refused(with(json!({"exp": now() - 3600}))), "expired");
        assert_eq!(refused(with(json!({"nbf": now() + 3600}))), "not-yet-valid");
        assert_eq!(refused(with(json!({"iss": "evil"}))), "wrong-issuer");
        assert_eq!(refused(with(json!({"aud": "other"}))), "wrong-audience");
        assert_eq!(refused(with(json!({"exp": null}))), "missing-claim");
        let check = |authorization: &[&str], uri: &str| {
            f.auth
                .check(&RouteAuth::Required, &parts(uri, authorization))
                .expect_err("refused")
                .reason()
        };
        let other = Signer::es256().sign(None, &claims());
        assert_eq!(check(&[&bearer(&other)], "/"), "bad-signature");
        // An Ed25519 token for an EC key.
        let ed = Signer::ed25519().sign(None, &claims());
        assert_eq!(check(&[&bearer(&ed)], "/"), "algorithm-not-allowed");
        assert_eq!(check(&["Bearer not.a.token"], "/"), "malformed");
        assert_eq!(check(&["Bearer "], "/"), "malformed");
        assert_eq!(check(&[], "/"), "missing-token");
        assert_eq!(check(&["Basic YTpi"], "/"), "missing-token");
        let good = f.signer.sign(None, &claims());
        assert_eq!(
            check(&[], &format!("/?access_token={good}")),
            "token-in-query"
        );
        assert_eq!(
            check(&[&bearer(&good)], &format!("/?access_token={good}")),
            "two-tokens"
        );
        assert_eq!(check(&[&bearer(&good), &bearer(&good)], "/"), "two-tokens");
        // A JWKS key named by kid: unknown-key for another kid.
        let jwks = Signer::es256();
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks.jwks("k1")).expect("write");
        let jwks_config = config(vec![JwtKeySource::JwksFile(path)]);
        let auth = Auth::new(&jwks_config, Keys::load(&jwks_config, None).expect("keys"));
        let unknown = jwks.sign(Some("k2"), &claims());
        assert_eq!(
            auth.check(&RouteAuth::Required, &parts("/", &[&bearer(&unknown)]))
                .expect_err("unknown")
                .reason(),
            "unknown-key"
        );
    }

    #[test]
    fn a_configured_query_parameter_carries_a_token() {
        let f = fixture(|c| c.query_param = Some("token".into()));
        let token = f.signer.sign(None, &claims());
        let ok = f.auth.check(
            &RouteAuth::Required,
            &parts(&format!("/ws?a=1&token={token}"), &[]),
        );
        assert!(matches!(ok, Ok(Some(_))), "{ok:?}");
        let check = |uri: String, authorization: &[&str]| {
            f.auth
                .check(&RouteAuth::Required, &parts(&uri, authorization))
                .expect_err("refused")
                .reason()
        };
        assert_eq!(
            check(format!("/?token={token}"), &[&bearer(&token)]),
            "two-tokens"
        );
        assert_eq!(
            check(format!("/?token={token}&token={token}"), &[]),
            "two-tokens"
        );
        // The usual name, where another is configured.
        assert_eq!(
            check(format!("/?access_token={token}"), &[]),
            "token-in-query"
        );
    }

    #[test]
    fn roles_and_scopes_are_checked() {
        let f = fixture(|_| {});
        let check = |required: RouteAuth, claims: serde_json::Value| {
            let token = f.signer.sign(None, &claims);
            f.auth.check(&required, &parts("/", &[&bearer(&token)]))
        };
        let roles = |r: &[&str]| RouteAuth::Roles(r.iter().map(|s| s.to_string()).collect());
        let scopes = |s: &[&str]| RouteAuth::Scopes(s.iter().map(|s| s.to_string()).collect());
        assert!(check(roles(&["admin", "user"]), claims()).is_ok());
        assert_eq!(
            check(roles(&["admin", "root"]), claims()),
            Err(AuthError::Insufficient("role root".into()))
        );
        // A space-separated string of roles.
        assert!(check(roles(&["user"]), with(json!({"roles": "admin user"}))).is_ok());
        assert!(check(scopes(&["orders:write"]), claims()).is_ok());
        assert_eq!(
            check(scopes(&["orders:delete"]), claims()),
            Err(AuthError::Insufficient("scope orders:delete".into()))
        );
        // `scp`, as a list.
        let scp = with(json!({"scope": null, "scp": ["orders:delete"]}));
        assert!(check(scopes(&["orders:delete"]), scp).is_ok());
        // Nested, as Keycloak's.
        let f = fixture(|c| c.roles_claim = "realm_access.roles".into());
        let token = f
            .signer
            .sign(None, &with(json!({"realm_access": {"roles": ["ops"]}})));
        let required = RouteAuth::Roles(vec!["ops".into()]);
        assert!(
            f.auth
                .check(&required, &parts("/", &[&bearer(&token)]))
                .is_ok()
        );
    }

    #[test]
    fn identity_fields_are_set_from_the_token_and_stripped_from_clients() {
        let f = fixture(|_| {});
        assert_eq!(
            f.auth.identity_headers(),
            &[
                X_USER_ID,
                X_USER_ROLES,
                HeaderName::from_static("x-user-email")
            ]
        );
        let mut headers = http::HeaderMap::new();
        for name in [
            "x-user-id",
            "x_user_id",
            "x-user_roles",
            "x_user_email",
            "x-user-email",
        ] {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_static("mallory"),
            );
        }
        headers.insert("x-user-idx", HeaderValue::from_static("kept"));
        headers.insert("x_other", HeaderValue::from_static("kept"));
        strip_identity(&mut headers, f.auth.identity_headers());
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.contains(&"x-user-idx") && left.contains(&"x_other"));

        let token = f.signer.sign(None, &claims());
        let verified = f
            .auth
            .check(&RouteAuth::Required, &parts("/", &[&bearer(&token)]))
            .expect("ok")
            .expect("verified");
        f.auth.set_identity(&verified, &mut headers);
        assert_eq!(headers["x-user-id"], "alice");
        assert_eq!(headers["x-user-roles"], "admin,user");
        assert_eq!(headers["x-user-email"], "alice@example.com");
        // Without jwt: the two defaults.
        let mut headers = http::HeaderMap::new();
        headers.insert("x_user_roles", HeaderValue::from_static("admin"));
        strip_identity(&mut headers, DEFAULT_IDENTITY_HEADERS);
        assert!(headers.is_empty());
    }

    #[test]
    fn refusals_answer_with_www_authenticate_in_every_format() {
        let cases = [
            (
                AuthError::Missing,
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"pilotfish\"",
                "missing-token",
            ),
            (
                AuthError::Invalid(Rejection::Expired),
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"pilotfish\", error=\"invalid_token\", error_description=\"expired\"",
                "invalid-token",
            ),
            (
                AuthError::TokenInQuery,
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"pilotfish\", error=\"invalid_token\", error_description=\"token-in-query\"",
                "invalid-token",
            ),
            (
                AuthError::Insufficient("role admin".into()),
                StatusCode::FORBIDDEN,
                "Bearer realm=\"pilotfish\", error=\"insufficient_scope\", error_description=\"missing role admin\"",
                "insufficient-scope",
            ),
        ];
        for (err, status, challenge, reason) in cases {
            let proxy = ProxyError::from(err);
            for format in [ErrorFormat::Text, ErrorFormat::Json, ErrorFormat::Grpc] {
                let response = proxy.to_response(Direction::Gateway, format);
                assert_eq!(response.status(), status, "{proxy:?} {format:?}");
                assert_eq!(
                    response.headers()[http::header::WWW_AUTHENTICATE],
                    challenge
                );
                assert_eq!(response.headers()[crate::http::ERROR_HEADER], reason);
            }
        }
    }

    #[test]
    fn the_token_is_never_in_debug_or_errors() {
        let f = fixture(|_| {});
        let token = f.signer.sign(None, &with(json!({"exp": now() - 3600})));
        let err = f
            .auth
            .check(&RouteAuth::Required, &parts("/", &[&bearer(&token)]))
            .expect_err("expired");
        let signature = token.rsplit('.').next().expect("signature");
        let proxy = ProxyError::from(err.clone());
        for text in [
            format!("{err:?}"),
            err.to_string(),
            format!("{proxy:?}"),
            proxy.to_string(),
            format!("{:?}", f.auth),
        ] {
            assert!(
                !text.contains(signature) && !text.contains(&token),
                "{text}"
            );
        }
    }

    #[test]
    fn query_tokens_can_be_removed_from_the_uri() {
        let f = fixture(|c| c.query_param = Some("token".into()));
        let uri: http::Uri = "/ws?a=1&token=T&access_token=U&b=2".parse().expect("uri");
        let cleaned = f.auth.without_query_token(&uri).expect("changed");
        assert_eq!(cleaned, "/ws?a=1&b=2");
        let uri: http::Uri = "http://h/x?token=T".parse().expect("uri");
        assert_eq!(
            f.auth.without_query_token(&uri).expect("changed"),
            "http://h/x"
        );
        let uri: http::Uri = "/x?a=1".parse().expect("uri");
        assert_eq!(f.auth.without_query_token(&uri), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Eb+c%zz%4"), "a.b c%zz%4");
        assert_eq!(percent_decode("%41"), "A");
    }
}
