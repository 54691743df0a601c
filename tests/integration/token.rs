//! `pilotfish certs jwt` and `pilotfish token`: a demo signing key, and
//! tokens the gateway's verifier accepts.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use pilotfish::jwt::{Expect, Verifier};

use crate::support::*;

fn expect() -> Expect {
    Expect {
        issuer: Some("https://pilotfish.demo".into()),
        audience: vec!["demo".into()],
        leeway: Duration::from_secs(5),
    }
}

fn token(args: &[&str]) -> String {
    let output = pilotfish(&[&["token"], args].concat());
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

#[test]
fn certs_jwt_then_token_gives_a_token_that_verifies_with_the_expected_claims() {
    let dir = tempfile::tempdir().expect("dir");
    let out = path_str(dir.path());
    pilotfish(&["certs", "jwt", "--out", out]);
    let key = dir.path().join("jwt.key");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let token = token(&[
        "--key",
        path_str(&key),
        "--sub",
        "alice",
        "--roles",
        "admin,user",
        "--scope",
        "orders:read orders:write",
        "--ttl",
        "10m",
    ]);
    let public = std::fs::read(dir.path().join("jwt.pub")).expect("jwt.pub");
    let mut verifier = Verifier::new(expect());
    verifier.add_pem(&public, None).expect("public key");
    let verified = verifier.verify(&token).expect("verifies");
    assert_eq!(verified.subject(), Some("alice"));
    assert_eq!(verified.strings("roles"), ["admin", "user"]);
    assert_eq!(verified.strings("scope"), ["orders:read", "orders:write"]);
    let exp = verified.claims["exp"].as_u64().expect("exp");
    let iat = verified.claims["iat"].as_u64().expect("iat");
    assert_eq!(exp - iat, 600);
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid, None);

    // The JWKS has the same key, under kid `demo`.
    let jwks = std::fs::read_to_string(dir.path().join("jwks.json")).expect("jwks.json");
    let mut by_kid = Verifier::new(expect());
    assert_eq!(by_kid.add_jwks(&jwks).expect("jwks"), 1);
    let with_kid = self::token(&["--key", path_str(&key), "--sub", "bob", "--kid", "demo"]);
    assert_eq!(
        by_kid.verify(&with_kid).expect("verifies").subject(),
        Some("bob")
    );
    // A wrong audience is refused.
    let other = self::token(&[
        "--key",
        path_str(&key),
        "--sub",
        "eve",
        "--audience",
        "other",
    ]);
    assert_eq!(
        verifier.verify(&other),
        Err(pilotfish::jwt::Rejection::Audience)
    );

    // Again: the key is kept, so the token still verifies.
    pilotfish(&["certs", "jwt", "--out", out]);
    let mut again = Verifier::new(expect());
    again
        .add_pem(
            &std::fs::read(dir.path().join("jwt.pub")).expect("jwt.pub"),
            None,
        )
        .expect("public key");
    assert!(again.verify(&token).is_ok());
}

#[test]
fn a_secret_file_signs_hs256() {
    let dir = tempfile::tempdir().expect("dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{}\n", "k".repeat(32))).expect("write");
    let token = token(&["--secret-file", path_str(&secret), "--sub", "carol"]);
    let mut verifier = Verifier::new(expect());
    verifier.add_secret(&[b'k'; 32], None).expect("secret");
    assert_eq!(
        verifier.verify(&token).expect("verifies").subject(),
        Some("carol")
    );
    // Neither key nor secret: a usage error.
    let status = std::process::Command::new(bin())
        .args(["token", "--sub", "x"])
        .output()
        .expect("run")
        .status;
    assert!(!status.success());
}
