//! JWT verification, for the gateway (issue 15; not wired to a listener
//! yet). Keys come from a PEM public key, an HMAC secret or a JWKS
//! document; each key allows only the algorithms of its own type, so what
//! a token's header says cannot pick a weaker check (`alg: none`, or an
//! HS256 token "signed" with an RSA public key as the secret). Then
//! `exp` (required) and `nbf` with a leeway, `iss` and `aud`.
//!
//! Verification is `jsonwebtoken`'s (aws-lc-rs underneath, as rustls);
//! this module decides which key and which algorithms, and names each
//! refusal, for the 401's `error_description`.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// What a token must also say.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// `iss` must be this, when set.
    pub issuer: Option<String>,
    /// `aud` must name one of these, when any.
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// One verification key and the algorithms it may check.
#[derive(Clone)]
struct Key {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("Key")
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// Why a token was refused; each is a 401 `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not three base64url parts of JSON.
    #[error("the token is malformed")]
    Malformed,
    /// Its header names an algorithm its key does not allow (or `none`).
    #[error("the token's algorithm is not allowed for its key")]
    Algorithm,
    /// Its `kid` names no key, or it names none where several exist.
    #[error("the token's key is unknown")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still ahead.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the one expected.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// `aud` names none of the audiences expected.
    #[error("the token's audience is not accepted")]
    Audience,
    /// A claim that must be there is not (`exp`).
    #[error("the token has no {0} claim")]
    MissingClaim(String),
}

impl Rejection {
    /// The reason as the 401's `error_description`: `expired`,
    /// `bad-signature`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm-not-allowed",
            Self::UnknownKey => "unknown-key",
            Self::Signature => "bad-signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::Issuer => "wrong-issuer",
            Self::Audience => "wrong-audience",
            Self::MissingClaim(_) => "missing-claim",
        }
    }
}

/// The keys tokens are verified with.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// By `kid`.
    by_id: HashMap<String, Key>,
    /// Keys without a `kid` (a PEM file, a secret): tried for every
    /// token, with or without a `kid`, as Envoy does.
    unnamed: Vec<Key>,
    expect: Expect,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Every claim.
    pub claims: serde_json::Value,
}

impl Verified {
    /// `sub`, if a string.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(|s| s.as_str())
    }

    /// The strings of claim `name`: a list of strings, or one string of
    /// space-separated values (as OAuth's `scope`).
    pub fn strings(&self, name: &str) -> Vec<String> {
        match self.claims.get(name) {
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Verifier {
    /// No keys yet.
    pub fn new(expect: Expect) -> Self {
        Self {
            by_id: HashMap::new(),
            unnamed: Vec::new(),
            expect,
        }
    }

    /// Adds a PEM public key (RSA, EC P-256/P-384 or Ed25519), under
    /// `kid` when given.
    pub fn add_pem(&mut self, pem: &[u8], kid: Option<&str>) -> Result<(), KeyError> {
        let text = String::from_utf8_lossy(pem);
        let attempts: [(ParsePem, &[Algorithm]); 3] = [
            (DecodingKey::from_rsa_pem, &RSA),
            (DecodingKey::from_ec_pem, &EC),
            (DecodingKey::from_ed_pem, &ED),
        ];
        if !text.contains("PUBLIC KEY") {
            return Err(KeyError(
                "not a PEM public key (-----BEGIN PUBLIC KEY-----)".into(),
            ));
        }
        for (parse, algorithms) in attempts {
            if let Ok(decoding) = parse(pem) {
                self.add(
                    Key {
                        decoding,
                        algorithms: algorithms.to_vec(),
                    },
                    kid,
                );
                return Ok(());
            }
        }
        Err(KeyError(
            "a PEM public key, but not RSA, EC (P-256, P-384) or Ed25519".into(),
        ))
    }

    /// Adds an HMAC secret (HS256, HS384, HS512), under `kid` when given.
    pub fn add_secret(&mut self, secret: &[u8], kid: Option<&str>) -> Result<(), KeyError> {
        if secret.len() < 32 {
            return Err(KeyError(format!(
                "an HMAC secret of {} bytes; at least 32 (RFC 7518 3.2)",
                secret.len()
            )));
        }
        self.add(
            Key {
                decoding: DecodingKey::from_secret(secret),
                algorithms: HMAC.to_vec(),
            },
            kid,
        );
        Ok(())
    }

    /// Adds every key of a JWKS document (RFC 7517). A key's `alg`, when
    /// given, narrows it to that algorithm; symmetric (`oct`) keys are
    /// refused: a JWKS is published, a secret is not.
    pub fn add_jwks(&mut self, json: &str) -> Result<usize, KeyError> {
        let set: JwkSet = serde_json::from_str(json)
            .map_err(|e| KeyError(format!("not a JWKS document: {e}")))?;
        let mut added = 0;
        for jwk in &set.keys {
            let family: &[Algorithm] = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => &RSA,
                AlgorithmParameters::EllipticCurve(_) => &EC,
                AlgorithmParameters::OctetKeyPair(_) => &ED,
                AlgorithmParameters::OctetKey(_) => {
                    return Err(KeyError(
                        "a JWKS with a symmetric (oct) key: publish only public keys".into(),
                    ));
                }
            };
            let algorithms = match jwk.common.key_algorithm {
                Some(alg) => {
                    let alg = alg
                        .to_string()
                        .parse::<Algorithm>()
                        .ok()
                        .filter(|a| family.contains(a))
                        .ok_or_else(|| {
                            KeyError(format!(
                                "key {:?}: alg {alg} does not fit its key type",
                                jwk.common.key_id
                            ))
                        })?;
                    vec![alg]
                }
                None => family.to_vec(),
            };
            let decoding = DecodingKey::from_jwk(jwk)
                .map_err(|e| KeyError(format!("key {:?}: {e}", jwk.common.key_id)))?;
            self.add(
                Key {
                    decoding,
                    algorithms,
                },
                jwk.common.key_id.as_deref(),
            );
            added += 1;
        }
        Ok(added)
    }

    fn add(&mut self, key: Key, kid: Option<&str>) {
        match kid {
            Some(kid) => {
                self.by_id.insert(kid.to_owned(), key);
            }
            None => self.unnamed.push(key),
        }
    }

    /// Whether no key was added.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty() && self.unnamed.is_empty()
    }

    /// How many keys were added.
    pub fn len(&self) -> usize {
        self.by_id.len() + self.unnamed.len()
    }

    /// Verifies `token` (the part after `Bearer `). The keys tried: the
    /// one its `kid` names, then each key without a `kid`; a token without
    /// a `kid` is tried with every key when none is unnamed (one JWKS
    /// whose tokens carry no `kid`). Only a bad signature moves on to the
    /// next key; a token no key fits is `UnknownKey`.
    pub fn verify(&self, token: &str) -> Result<Verified, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName => Rejection::Algorithm,
            _ => Rejection::Malformed,
        })?;
        let named = header.kid.as_ref().and_then(|kid| self.by_id.get(kid));
        let every_named = header.kid.is_none() && self.unnamed.is_empty();
        let candidates: Vec<&Key> = named
            .into_iter()
            .chain(&self.unnamed)
            .chain(self.by_id.values().filter(|_| every_named))
            .collect();
        if candidates.is_empty() {
            return Err(Rejection::UnknownKey);
        }
        let mut fitting = candidates
            .into_iter()
            .filter(|key| key.algorithms.contains(&header.alg))
            .peekable();
        let unknown_kid = header.kid.is_some() && named.is_none();
        if fitting.peek().is_none() {
            // A `kid` that names no key is that, whatever the algorithm.
            return Err(if unknown_kid {
                Rejection::UnknownKey
            } else {
                Rejection::Algorithm
            });
        }
        for key in fitting {
            match self.verify_with(token, header.alg, key) {
                Err(Rejection::Signature) => continue,
                other => return other,
            }
        }
        // A `kid` that names no key, and no unnamed key verified it.
        if unknown_kid {
            Err(Rejection::UnknownKey)
        } else {
            Err(Rejection::Signature)
        }
    }

    fn verify_with(&self, token: &str, alg: Algorithm, key: &Key) -> Result<Verified, Rejection> {
        let mut validation = Validation::new(alg);
        validation.algorithms = key.algorithms.clone();
        validation.leeway = self.expect.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &self.expect.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        if self.expect.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.expect.audience);
        }
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => Rejection::Signature,
                ErrorKind::ExpiredSignature => Rejection::Expired,
                ErrorKind::ImmatureSignature => Rejection::NotYetValid,
                ErrorKind::InvalidIssuer => Rejection::Issuer,
                ErrorKind::InvalidAudience => Rejection::Audience,
                ErrorKind::MissingRequiredClaim(claim) => Rejection::MissingClaim(claim.clone()),
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Rejection::Algorithm,
                _ => Rejection::Malformed,
            })?;
        Ok(Verified {
            claims: data.claims,
        })
    }

    /// Adds every key of `other` (its expectations are not taken).
    pub fn extend(&mut self, other: &Verifier) {
        for (kid, key) in &other.by_id {
            self.by_id.insert(kid.clone(), key.clone());
        }
        self.unnamed.extend(other.unnamed.iter().cloned());
    }
}

/// A PEM parser of one key type.
type ParsePem = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: [Algorithm; 2] = [Algorithm::ES256, Algorithm::ES384];
const ED: [Algorithm; 1] = [Algorithm::EdDSA];
const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn claims() -> serde_json::Value {
        json!({ "sub": "alice", "roles": ["admin", "reader"], "iss": "demo", "aud": "api", "exp": now() + 600 })
    }

    fn expect() -> Expect {
        Expect {
            issuer: Some("demo".into()),
            audience: vec!["api".into()],
            leeway: Duration::from_secs(60),
        }
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
        encode(&Header::new(alg), claims, key).expect("sign")
    }

    struct Pair {
        private: EncodingKey,
        public_pem: String,
    }

    fn pair(alg: &'static rcgen::SignatureAlgorithm) -> Pair {
        let key = KeyPair::generate_for(alg).expect("key");
        let pem = key.serialize_pem();
        let private = if alg == &PKCS_RSA_SHA256 {
            EncodingKey::from_rsa_pem(pem.as_bytes())
        } else if alg == &PKCS_ED25519 {
            EncodingKey::from_ed_pem(pem.as_bytes())
        } else {
            EncodingKey::from_ec_pem(pem.as_bytes())
        }
        .expect("encoding key");
        Pair {
            private,
            public_pem: key.public_key_pem(),
        }
    }

    fn verifier_for(public_pem: &str) -> Verifier {
        let mut v = Verifier::new(expect());
        v.add_pem(public_pem.as_bytes(), None).expect("key");
        v
    }

    #[test]
    fn rs256_es256_eddsa_and_hs256_tokens_verify_and_give_their_claims() {
        for (alg, key_alg) in [
            (Algorithm::RS256, &PKCS_RSA_SHA256),
            (Algorithm::ES256, &PKCS_ECDSA_P256_SHA256),
            (Algorithm::EdDSA, &PKCS_ED25519),
        ] {
            let pair = pair(key_alg);
            let verified = verifier_for(&pair.public_pem)
                .verify(&sign(alg, &pair.private, &claims()))
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(verified.subject(), Some("alice"));
            assert_eq!(verified.strings("roles"), ["admin", "reader"]);
        }
        let secret = [7u8; 32];
        let mut v = Verifier::new(expect());
        v.add_secret(&secret, None).expect("secret");
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&secret),
            &claims(),
        );
        assert_eq!(v.verify(&token).expect("hs256").subject(), Some("alice"));
    }

    #[test]
    fn each_bad_token_is_refused_for_its_own_reason() {
        let keys = pair(&PKCS_ECDSA_P256_SHA256);
        let v = verifier_for(&keys.public_pem);
        let with = |change: serde_json::Value| {
            v.verify(&sign(
                Algorithm::ES256,
                &keys.private,
                &changed(claims(), &change),
            ))
        };
        assert_eq!(with(json!({"exp": now() - 120})), Err(Rejection::Expired));
        // Within the leeway still good.
        assert!(with(json!({"exp": now() - 30})).is_ok());
        assert_eq!(
            with(json!({"nbf": now() + 600})),
            Err(Rejection::NotYetValid)
        );
        assert_eq!(with(json!({"iss": "evil"})), Err(Rejection::Issuer));
        assert_eq!(with(json!({"aud": "other"})), Err(Rejection::Audience));
        assert_eq!(
            with(json!({"exp": null})),
            Err(Rejection::MissingClaim("exp".into()))
        );
        // Another key's signature.
        let other = pair(&PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            v.verify(&sign(Algorithm::ES256, &other.private, &claims())),
            Err(Rejection::Signature)
        );
        assert_eq!(v.verify("not.a.token"), Err(Rejection::Malformed));
        assert_eq!(v.verify("garbage"), Err(Rejection::Malformed));
    }

    #[test]
    fn the_key_decides_the_algorithm_not_the_token() {
        // alg: none, unsigned.
        let pair = pair(&PKCS_RSA_SHA256);
        let v = verifier_for(&pair.public_pem);
        // {"alg":"none","typ":"JWT"}, then a real token's claims, no
        // signature.
        let signed = sign(Algorithm::RS256, &pair.private, &claims());
        let payload = signed.split('.').nth(1).expect("payload");
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(
            matches!(
                v.verify(&none),
                Err(Rejection::Algorithm | Rejection::Malformed)
            ),
            "{:?}",
            v.verify(&none)
        );
        // Algorithm confusion: HS256 "signed" with the RSA public key as
        // the secret.
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(pair.public_pem.as_bytes()),
            &claims(),
        );
        assert_eq!(v.verify(&confused), Err(Rejection::Algorithm));
    }

    #[test]
    fn jwks_keys_are_found_by_kid_and_an_unknown_kid_is_refused() {
        let pair = pair(&PKCS_ECDSA_P256_SHA256);
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&pair.private, Algorithm::ES256)
            .expect("jwk");
        let mut jwk = serde_json::to_value(jwk).expect("json");
        jwk["kid"] = json!("key-1");
        let jwks = json!({ "keys": [jwk] }).to_string();
        let mut v = Verifier::new(expect());
        assert_eq!(v.add_jwks(&jwks).expect("jwks"), 1);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("key-1".into());
        let token = encode(&header, &claims(), &pair.private).expect("sign");
        assert_eq!(v.verify(&token).expect("verified").subject(), Some("alice"));
        header.kid = Some("key-2".into());
        let token = encode(&header, &claims(), &pair.private).expect("sign");
        assert_eq!(v.verify(&token), Err(Rejection::UnknownKey));
        // An alg that does not fit the key's type is refused.
        let mut mismatched = serde_json::from_str::<serde_json::Value>(&jwks).expect("json");
        mismatched["keys"][0]["alg"] = json!("RS256");
        let refused = Verifier::new(expect()).add_jwks(&mismatched.to_string());
        assert!(refused.is_err_and(|e| e.to_string().contains("RS256")));
        // A symmetric key in a JWKS is refused.
        let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}).to_string();
        assert!(Verifier::new(expect()).add_jwks(&oct).is_err());
    }

    #[test]
    fn keys_without_kid_are_each_tried_and_keyed_ones_only_by_kid() {
        // Two PEM keys (a rotation): each one's tokens verify.
        let (old, new) = (pair(&PKCS_ED25519), pair(&PKCS_ED25519));
        let mut v = verifier_for(&old.public_pem);
        v.add_pem(new.public_pem.as_bytes(), None).expect("key");
        assert!(
            v.verify(&sign(Algorithm::EdDSA, &old.private, &claims()))
                .is_ok()
        );
        assert!(
            v.verify(&sign(Algorithm::EdDSA, &new.private, &claims()))
                .is_ok()
        );
        let stranger = pair(&PKCS_ED25519);
        assert_eq!(
            v.verify(&sign(Algorithm::EdDSA, &stranger.private, &claims())),
            Err(Rejection::Signature)
        );
        // A token with a kid no key has, signed by neither: unknown key.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("nobody".into());
        let token = encode(&header, &claims(), &stranger.private).expect("sign");
        assert_eq!(v.verify(&token), Err(Rejection::UnknownKey));
        assert_eq!(Rejection::Expired.as_str(), "expired");
    }

    #[test]
    fn short_secrets_and_non_keys_are_refused_at_load() {
        let mut v = Verifier::new(expect());
        assert!(v.add_secret(b"short", None).is_err());
        assert!(v.add_pem(b"-----BEGIN CERTIFICATE-----\n", None).is_err());
        assert!(
            v.add_pem(
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                None
            )
            .is_err()
        );
    }

    /// `base` with the fields of `change` set, and those it sets to
    /// `null` removed.
    pub(crate) fn changed(
        mut base: serde_json::Value,
        change: &serde_json::Value,
    ) -> serde_json::Value {
        for (k, v) in change.as_object().expect("object") {
            match v {
                serde_json::Value::Null => {
                    base.as_object_mut().expect("object").remove(k);
                }
                _ => base[k] = v.clone(),
            }
        }
        base
    }
}
