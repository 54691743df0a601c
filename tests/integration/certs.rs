//! `pilotfish certs`: a development CA and SPIFFE workload certificates.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::support::*;

fn sans(path: &std::path::Path) -> (Vec<String>, Vec<String>, i64) {
    let der = CertificateDer::from_pem_file(path).expect("certificate");
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("x509");
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    (uris, dns, lifetime)
}

#[test]
fn issued_certificates_carry_the_spiffe_id_and_dns_names() {
    let certs = Certs::new();
    let leaf = certs.issue_with(
        "users",
        &[
            "--namespace",
            "shop",
            "--trust-domain",
            "example.org",
            "--ttl",
            "2h",
        ],
    );
    let (uris, dns, lifetime) = sans(&leaf.cert);
    assert_eq!(uris, ["spiffe://example.org/ns/shop/sa/users"]);
    assert_eq!(dns, ["users", "users.shop", "users.shop.svc.cluster.local"]);
    // 2h plus the minute it is backdated for clock skew.
    assert_eq!(lifetime, 2 * 3600 + 60);

    let (uris, _, lifetime) = sans(&certs.issue("orders").cert);
    assert_eq!(uris, ["spiffe://cluster.local/ns/default/sa/orders"]);
    assert_eq!(lifetime, 24 * 3600 + 60, "default lifetime is 24h");
}

#[test]
fn keys_are_private_and_nothing_is_overwritten_without_force() {
    let certs = Certs::new();
    let dir = certs.dir.path();
    let leaf = certs.issue("users");
    for key in [dir.join("ca-key.pem"), leaf.key.clone()] {
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }

    let before = std::fs::read(&leaf.cert).expect("cert");
    let dir_str = path_str(dir);
    let again = Command::new(bin())
        .args([
            "certs",
            "issue",
            "--ca",
            dir_str,
            "--service",
            "users",
            "--out",
            dir_str,
        ])
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists; pass --force"), "{err}");
    assert_eq!(
        std::fs::read(&leaf.cert).expect("cert"),
        before,
        "overwritten"
    );

    let ca_again = Command::new(bin())
        .args(["certs", "ca", "--out", dir_str])
        .output()
        .expect("run");
    assert_eq!(ca_again.status.code(), Some(1));

    certs.issue("users"); // with --force (the helper passes it)
    assert_ne!(
        std::fs::read(&leaf.cert).expect("cert"),
        before,
        "--force did not replace"
    );
}

#[test]
fn bad_names_are_refused() {
    let certs = Certs::new();
    let dir = path_str(certs.dir.path());
    for (flag, value) in [
        ("--service", "Users"),
        ("--namespace", "a_b"),
        ("--trust-domain", "A.B"),
    ] {
        let mut args = vec!["certs", "issue", "--ca", dir, "--out", dir];
        if flag != "--service" {
            args.extend(["--service", "users"]);
        }
        args.extend([flag, value]);
        let output = Command::new(bin()).args(&args).output().expect("run");
        assert_eq!(output.status.code(), Some(1), "{flag} {value}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains(value), "{flag}: {err}");
    }
}

/// `certs mesh`: the CA and a certificate per service in one step; run
/// again (a container's one-shot set-up on `up`), the CA stays and the
/// certificates are made anew. A bad name writes nothing.
#[test]
fn certs_mesh_keeps_its_ca_and_renews_the_workloads() {
    let dir = tempfile::tempdir().expect("dir");
    let out = path_str(dir.path());
    let mesh = [
        "certs",
        "mesh",
        "--out",
        out,
        "--service",
        "users",
        "--service",
        "orders",
    ];
    pilotfish(&mesh);
    let read = |name: &str| std::fs::read(dir.path().join(name)).expect(name);
    let (ca, users) = (read("ca.pem"), read("users.pem"));
    let (uris, _, _) = sans(&dir.path().join("orders.pem"));
    assert_eq!(uris, ["spiffe://cluster.local/ns/default/sa/orders"]);
    let again = pilotfish(&mesh);
    assert!(String::from_utf8_lossy(&again.stdout).contains("kept the CA"));
    assert_eq!(read("ca.pem"), ca, "the CA was replaced");
    assert_ne!(
        read("users.pem"),
        users,
        "users' certificate was not renewed"
    );

    let fresh = tempfile::tempdir().expect("dir");
    let bad = Command::new(bin())
        .args(["certs", "mesh", "--out", path_str(fresh.path())])
        .args(["--service", "users", "--service", "Bad_Name"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Bad_Name"));
    assert_eq!(
        std::fs::read_dir(fresh.path()).expect("dir").count(),
        0,
        "wrote files"
    );
}
