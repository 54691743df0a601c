//! `pilotfish check` and start-up report every config problem as
//! `FILE:LINE:COLUMN: what is wrong`.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// A valid config for `orders` with certificates from `certs`.
fn valid(certs: &Certs) -> String {
    let leaf = certs.issue("orders");
    format!(
        "service: orders
tls:
  ca: {}
  cert: {}
  key: {}
outbound:
  listen: 127.0.0.1:0
  services:
    users:
      endpoints: [127.0.0.1:15106]
      timeout: 2s
admin:
  listen: 127.0.0.1:0
",
        path_str(&certs.ca()),
        path_str(&leaf.cert),
        path_str(&leaf.key)
    )
}

/// Runs `pilotfish check` on `yaml`; returns (exit code, stdout, file path).
fn check(dir: &Path, name: &str, yaml: &str) -> (i32, String, String) {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write config");
    let output = Command::new(bin())
        .args(["check", path_str(&path)])
        .output()
        .expect("run check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        path_str(&path).to_owned(),
    )
}

/// Replaces the first occurrence of `from` in the valid config.
fn broken(certs: &Certs, from: &str, to: &str) -> String {
    let yaml = valid(certs);
    assert!(yaml.contains(from), "{from:?} not in the config");
    yaml.replacen(from, to, 1)
}

#[test]
fn a_valid_config_passes() {
    let certs = Certs::new();
    let (code, out, file) = check(certs.dir.path(), "ok.yaml", &valid(&certs));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), format!("{file}: ok"));
}

#[test]
fn errors_name_the_file_line_and_column() {
    let certs = Certs::new();
    let cases: &[(&str, &str, &str, &str)] = &[
        // (what, replace, with, expected "LINE:COLUMN: message" fragment)
        (
            "misspelt key",
            "      timeout: 2s",
            "      timout: 2s",
            ":11:7: unknown field `timout`",
        ),
        (
            "wrong type",
            "  listen: 127.0.0.1:0\n  services",
            "  listen: [1, 2]\n  services",
            ":7:11: ",
        ),
        (
            "bad duration",
            "timeout: 2s",
            "timeout: 2 parsecs",
            ":11:16: bad duration",
        ),
        (
            "duration without unit",
            "timeout: 2s",
            "timeout: 2",
            ":11:16: duration \"2\" has no unit",
        ),
        (
            "bad address",
            "[127.0.0.1:15106]",
            "[localhost]",
            ":10:19: ",
        ),
        (
            "bad service name",
            "service: orders",
            "service: Orders",
            ":1:10: service name \"Orders\"",
        ),
    ];
    for (what, from, to, expected) in cases {
        let (code, out, file) = check(certs.dir.path(), "bad.yaml", &broken(&certs, from, to));
        assert_eq!(code, 1, "{what}: {out}");
        let expected = format!("{file}{expected}");
        assert!(
            out.starts_with(&expected),
            "{what}: expected {expected:?}, got:\n{out}"
        );
    }
}

#[test]
fn semantic_errors_point_at_the_offending_value() {
    let certs = Certs::new();
    let leaf = certs.issue("orders");
    let yaml = format!(
        "service: orders
tls:
  ca: {}
  cert: /nonexistent/orders.pem
  key: {}
admin:
  listen: 127.0.0.1:15001
outbound:
  listen: 127.0.0.1:15001
  services:
    users:
      endpoints: [127.0.0.1:15106]
  routes:
    - host: api.example
      service: payments
",
        path_str(&certs.ca()),
        path_str(&leaf.key)
    );
    let (code, out, file) = check(certs.dir.path(), "semantic.yaml", &yaml);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let expect = [
        format!("{file}:9:11: duplicate listener address 127.0.0.1:15001"),
        format!("{file}:15:16: route to undefined service \"payments\" (defined: users)"),
        format!("{file}:4:9: cannot read /nonexistent/orders.pem"),
    ];
    for expected in &expect {
        assert!(
            lines.iter().any(|l| l.starts_with(expected.as_str())),
            "expected a line starting {expected:?} in:\n{out}"
        );
    }
}

#[test]
fn a_certificate_for_another_service_is_an_error() {
    let certs = Certs::new();
    let other = certs.issue("users");
    let yaml = valid(&certs)
        .replace(
            path_str(&certs.dir.path().join("orders.pem")),
            path_str(&other.cert),
        )
        .replace(
            path_str(&certs.dir.path().join("orders-key.pem")),
            path_str(&other.key),
        );
    let (code, out, file) = check(certs.dir.path(), "wrong-cert.yaml", &yaml);
    assert_eq!(code, 1);
    assert!(out.starts_with(&format!("{file}:4:")), "{out}");
    assert!(
        out.contains("the certificate is for spiffe://cluster.local/ns/default/sa/users"),
        "{out}"
    );
}

#[test]
fn several_files_are_checked_together() {
    let certs = Certs::new();
    let good = certs.dir.path().join("good.yaml");
    std::fs::write(&good, valid(&certs)).expect("write");
    let bad = certs.dir.path().join("bad.yaml");
    std::fs::write(&bad, "service: orders\nbogus: 1\n").expect("write");
    let output = Command::new(bin())
        .args(["check", path_str(&good), path_str(&bad)])
        .output()
        .expect("run check");
    assert_eq!(output.status.code(), Some(1));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.starts_with(&format!("{}:2:1: unknown field `bogus`", path_str(&bad))),
        "{out}"
    );
    assert!(!out.contains("good.yaml:"), "{out}");
}

#[test]
fn run_refuses_a_bad_config_with_the_same_message() {
    let certs = Certs::new();
    let path = certs.dir.path().join("bad.yaml");
    std::fs::write(&path, broken(&certs, "timeout: 2s", "timeout: soon")).expect("write");
    let output = Command::new(bin())
        .args(["run", "--config", path_str(&path)])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains(&format!("{}:11:16: bad duration", path_str(&path))),
        "{err}"
    );

    // The environment variable names the config too.
    let output = Command::new(bin())
        .arg("run")
        .env("PILOTFISH_CONFIG", &path)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(":11:16: bad duration"));
}

#[test]
fn the_reference_and_example_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The examples name certificates in ../certs/dev: make them in a copy.
    let work = tempfile::tempdir().expect("temp dir");
    let config_dir = work.path().join("config");
    std::fs::create_dir(&config_dir).expect("mkdir");
    let certs_dir = work.path().join("certs/dev");
    let certs = path_str(&certs_dir);
    pilotfish(&["certs", "ca", "--out", certs]);
    // gateway.yaml's token key, where `pilotfish certs jwt` puts it.
    pilotfish(&["certs", "jwt", "--out", certs]);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("config")).expect("config dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let service = text
            .lines()
            .find_map(|l| l.strip_prefix("service: "))
            .expect("a service: line");
        pilotfish(&[
            "certs",
            "issue",
            "--ca",
            certs,
            "--service",
            service,
            "--out",
            certs,
            "--force",
        ]);
        let copy = config_dir.join(path.file_name().expect("name"));
        std::fs::write(&copy, text).expect("copy");
        files.push(path_str(&copy).to_owned());
    }
    assert!(
        files.len() >= 3,
        "expected the reference and examples: {files:?}"
    );
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let output = pilotfish(&args);
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        out.lines().filter(|l| l.ends_with(": ok")).count(),
        files.len(),
        "{out}"
    );
}

#[test]
fn tls_is_required_only_for_mesh_traffic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plain = "service: edge
outbound:
  listen: 127.0.0.1:0
  services:
    legacy:
      endpoints: [127.0.0.1:8080]
      transport: plaintext
";
    let (code, out, _) = check(dir.path(), "plain.yaml", plain);
    assert_eq!(
        code, 0,
        "a proxy to plaintext services needs no certificates: {out}"
    );

    let mesh = "service: users\ninbound:\n  app: 127.0.0.1:8080\n";
    let (code, out, file) = check(dir.path(), "mesh.yaml", mesh);
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&format!("{file}: `tls:` is missing")),
        "{out}"
    );
}

#[test]
fn bad_telemetry_settings_point_at_the_value() {
    let certs = Certs::new();
    let yaml = format!(
        "{}tracing:
  propagation: [w3c, b3, w3c]
  sample_ratio: 1.5
  otlp:
    endpoint: https://collector:4317
    max_batch: 0
request_ids:
  correlation_header: x-request-id
access_log:
  format: loud
",
        valid(&certs)
    );
    let (code, out, file) = check(certs.dir.path(), "telemetry.yaml", &yaml);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "{file}:23:11: unknown variant `loud`, expected one of off, json, text"
        )),
        "{out}"
    );
    let yaml = yaml.replace("  format: loud\n", "  format: json\n");
    let (code, out, _) = check(certs.dir.path(), "telemetry.yaml", &yaml);
    assert_eq!(code, 1, "{out}");
    for expected in [
        format!("{file}:15:16: tracing.propagation lists w3c twice"),
        format!("{file}:16:17: tracing.sample_ratio 1.5 must be from 0"),
        format!(
            "{file}:18:15: tracing.otlp.endpoint \"https://collector:4317\": TLS to the collector is not supported"
        ),
        format!("{file}:19:16: tracing.otlp.max_batch must be at least 1"),
        format!(
            "{file}:21:23: request_ids.correlation_header: the correlation header cannot be x-request-id"
        ),
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(expected.as_str())),
            "expected a line starting {expected:?} in:\n{out}"
        );
    }
    let no_port = yaml.replace("https://collector:4317", "http://collector");
    let (_, out, _) = check(certs.dir.path(), "telemetry.yaml", &no_port);
    assert!(
        out.contains("has no port; collectors listen on 4317 (gRPC) or 4318 (HTTP)"),
        "{out}"
    );
}

#[test]
fn bad_rate_limits_point_at_the_value() {
    let certs = Certs::new();
    let yaml = format!(
        "{}rate_limits:
  - name: a
    direction: outbound
    service: payments
    key: caller
    rate: 0
  - name: a
    direction: inbound
    rate: 5
    overrides:
      - {{ value: x, rate: 5 }}
    global: {{ redis: \"http://localhost\" }}
",
        valid(&certs)
    );
    let (code, out, file) = check(certs.dir.path(), "limits.yaml", &yaml);
    assert_eq!(code, 1, "{out}");
    for expected in [
        format!("{file}:17:14: rate limit for undefined service \"payments\""),
        format!("{file}:18:10: key: caller applies to inbound limits"),
        format!("{file}:19:11: rate limit \"a\": rate 0 must be from 1.65e-6 (one a week)"),
        format!("{file}:20:11: rate limit \"a\" is defined twice (first at line 15)"),
        format!("{file}:21:16: an inbound rate limit needs `inbound:`"),
        format!(
            "{file}:24:27: a `value` override needs key: {{ header: NAME }}, {{ claim: NAME }} or client-address"
        ),
        format!("{file}:25:22: redis \"http://localhost\" is not a Redis URL"),
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(expected.as_str())),
            "expected a line starting {expected:?} in:\n{out}"
        );
    }
}

#[test]
fn redis_over_tls_is_refused_at_check_not_at_run_time() {
    let certs = Certs::new();
    let yaml = format!(
        "{}rate_limits:
  - name: shared
    direction: outbound
    service: users
    rate: 5
    global: {{ redis: \"rediss://:secret@redis:6380\" }}
",
        valid(&certs)
    );
    let (code, out, file) = check(certs.dir.path(), "rediss.yaml", &yaml);
    assert_eq!(code, 1, "{out}");
    let expected = format!("{file}:19:22: rediss:// (Redis over TLS) is not supported");
    assert!(
        out.lines().any(|l| l.starts_with(&expected)),
        "expected {expected:?} in:\n{out}"
    );
    let plain = yaml.replace("rediss://", "redis://");
    let (code, out, _) = check(certs.dir.path(), "redis.yaml", &plain);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn bad_gateways_point_at_the_value() {
    let certs = Certs::new();
    // An HMAC secret must be 32 bytes at least.
    let short = certs.dir.path().join("short.key");
    std::fs::write(&short, "too short\n").expect("write secret");
    let yaml = format!(
        "{}gateway:
  tls: {{ listen: 127.0.0.1:0, cert: /nonexistent/api.pem, key: /nonexistent/api-key.pem }}
  jwt:
    keys: [{{ jwks_url: \"ftp://keys\" }}, {{ pem: /nonexistent/k.pem }}, {{ secret_file: {} }}]
    claim_headers: {{ sub: x-user-id }}
  routes:
    - {{ path_prefix: /a, service: nowhere }}
    - {{ path_prefix: /b, service: users, cors: {{ allow_origins: [\"*\"], allow_credentials: true }} }}
    - {{ path_prefix: /c, service: users, auth: {{ roles: [] }} }}
",
        valid(&certs),
        path_str(&short)
    );
    let (code, out, file) = check(certs.dir.path(), "gateway.yaml", &yaml);
    assert_eq!(code, 1, "{out}");
    for expected in [
        format!("{file}:20:35: route to undefined service \"nowhere\""),
        format!("{file}:21:48: route \"*/b\": cors: \"*\" may not be used with allow_credentials"),
        format!("{file}:22:48: route \"*/c\": name at least one role or scope"),
        format!("{file}:17:12: jwks_url \"ftp://keys\": give an http:// or https:// URL"),
        format!("{file}: gateway.jwt.claim_headers: \"sub\" -> \"x-user-id\""),
        format!("{file}:15:37: gateway.tls: cannot read /nonexistent/api.pem"),
        format!("{file}:17:40: gateway.jwt.keys: /nonexistent/k.pem: No such file"),
        format!(
            "{file}:17:69: gateway.jwt.keys: {}: an HMAC secret of 9 bytes; at least 32",
            path_str(&short)
        ),
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(expected.as_str())),
            "expected a line starting {expected:?} in:\n{out}"
        );
    }

    // A gateway that checks no tokens runs, with a warning.
    let open = format!(
        "{}gateway:\n  listen: 127.0.0.1:0\n  routes:\n    - {{ path_prefix: /b, service: users }}\n",
        valid(&certs)
    );
    let (code, out, file) = check(certs.dir.path(), "open.yaml", &open);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "{file}: warning: gateway has no `jwt`: every route is public"
        )),
        "{out}"
    );
}
