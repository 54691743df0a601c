//! The config as the admin port shows it: everything, but secrets. A URL's
//! password (Redis, an OTLP collector) and the header values that rate
//! limit overrides name (someone's API key) are replaced, so `/config` can
//! be read by whoever may scrape the sidecar.

use super::{Config, Located};

/// What a secret is shown as.
const HIDDEN: &str = "<redacted>";

impl Config {
    /// A copy with every secret replaced by `<redacted>`.
    pub fn redacted(&self) -> Config {
        let mut config = self.clone();
        for limit in &mut config.rate_limits {
            if let Some(global) = &mut limit.global {
                global.redis = Located::at(redact_url(&global.redis), global.redis.position());
            }
            for over in &mut limit.overrides {
                if over.value.is_some() {
                    over.value = Some(HIDDEN.to_owned());
                }
            }
        }
        if let Some(otlp) = &mut config.tracing.otlp {
            otlp.endpoint = Located::at(redact_url(&otlp.endpoint), otlp.endpoint.position());
        }
        config
    }
}

/// `scheme://user:password@host/...` with the password hidden (or the
/// whole user part, when it has no `:`: a token alone).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:{HIDDEN}"),
        None => HIDDEN.to_owned(),
    };
    format!("{scheme}://{userinfo}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_hidden() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://:s3cret@redis:6379/0",
                "redis://:<redacted>@redis:6379/0",
            ),
            (
                "rediss://app:s3cret@redis:6380",
                "rediss://app:<redacted>@redis:6380",
            ),
            (
                "http://token@collector:4318/v1?x=a@b",
                "http://<redacted>@collector:4318/v1?x=a@b",
            ),
            (
                "http://collector:4318/v1/traces?user=a@b",
                "http://collector:4318/v1/traces?user=a@b",
            ),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
