//! Cross-origin resource sharing per route (the Fetch standard): the
//! gateway answers preflights itself and adds the `Access-Control-*`
//! fields to the answers of allowed origins.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderValue, ORIGIN, VARY,
};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::config::CorsConfig;
use crate::http::Body;

/// A route's CORS policy, ready to answer with.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    methods: Vec<Method>,
    /// Lowercase.
    headers: Vec<String>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

#[derive(Debug, Clone)]
enum Origins {
    Any,
    /// Exact origins, and `scheme://*.domain` wildcards (as suffixes).
    Listed {
        exact: Vec<String>,
        suffixes: Vec<(String, String)>,
    },
}

impl Cors {
    /// Compiles a route's `cors` (validated: methods and names parse).
    pub fn new(config: &CorsConfig) -> Self {
        let origins = if config.allow_origins.iter().any(|o| o == "*") {
            Origins::Any
        } else {
            let mut exact = Vec::new();
            let mut suffixes = Vec::new();
            for origin in &config.allow_origins {
                let origin = origin.trim_end_matches('/').to_ascii_lowercase();
                match origin.split_once("://*.") {
                    Some((scheme, domain)) => {
                        suffixes.push((format!("{scheme}://"), format!(".{domain}")));
                    }
                    None => exact.push(origin),
                }
            }
            Origins::Listed { exact, suffixes }
        };
        let methods: Vec<Method> = config
            .allow_methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .collect();
        let headers: Vec<String> = config
            .allow_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let list = |items: Vec<String>| {
            (!items.is_empty())
                .then(|| HeaderValue::from_str(&items.join(", ")).ok())
                .flatten()
        };
        Self {
            allow_methods: list(methods.iter().map(ToString::to_string).collect()),
            allow_headers: list(headers.clone()),
            expose_headers: list(config.expose_headers.clone()),
            origins,
            methods,
            headers,
            credentials: config.allow_credentials,
            max_age: HeaderValue::from(config.max_age.0.as_secs()),
        }
    }

    /// Whether a request is a preflight: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The method a preflight asks about, to route it as that request
    /// would be.
    pub fn requested_method(headers: &HeaderMap) -> Option<Method> {
        let value = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
        Method::from_bytes(value.as_bytes()).ok()
    }

    /// The answer to a preflight: 204 with what may be sent, or 403 when
    /// the origin, the method or a header is not allowed (the browser then
    /// does not send the request).
    pub fn preflight(&self, headers: &HeaderMap) -> Response<Body> {
        let refuse = |why: &'static str| {
            let mut response =
                Response::new(Body::full(format!("CORS preflight refused: {why}\n")));
            *response.status_mut() = StatusCode::FORBIDDEN;
            let fields = response.headers_mut();
            fields.insert(
                crate::http::error::ERROR_HEADER,
                HeaderValue::from_static("cors-refused"),
            );
            vary(fields);
            response
        };
        let Some(origin) = headers.get(ORIGIN).filter(|o| self.allows(o)) else {
            return refuse("the origin is not allowed");
        };
        let method_ok = Self::requested_method(headers).is_some_and(|m| self.methods.contains(&m));
        if !method_ok {
            return refuse("the method is not allowed");
        }
        let asked = headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty());
        for header in asked {
            if !self.headers.contains(&header) {
                return refuse("a header is not allowed");
            }
        }
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NO_CONTENT;
        let fields = response.headers_mut();
        self.allow_origin(origin, fields);
        if let Some(methods) = &self.allow_methods {
            fields.insert(ACCESS_CONTROL_ALLOW_METHODS, methods.clone());
        }
        if let Some(allowed) = &self.allow_headers {
            fields.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
        }
        fields.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        vary(fields);
        response
    }

    /// Adds the fields an allowed origin's answer carries; `origin` is the
    /// request's `Origin`, if it had one.
    pub fn respond(&self, origin: Option<&HeaderValue>, fields: &mut HeaderMap) {
        fields.append(VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|o| self.allows(o)) else {
            return;
        };
        // The app's own CORS fields would contradict the route's.
        fields.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
        fields.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
        self.allow_origin(origin, fields);
        if let Some(expose) = &self.expose_headers {
            fields.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    fn allow_origin(&self, origin: &HeaderValue, fields: &mut HeaderMap) {
        let value = match (&self.origins, self.credentials) {
            // `*` cannot carry credentials: the origin itself is named.
            (Origins::Any, false) => HeaderValue::from_static("*"),
            _ => origin.clone(),
        };
        fields.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if self.credentials {
            fields.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        match &self.origins {
            Origins::Any => true,
            Origins::Listed { exact, suffixes } => {
                let origin = origin.to_ascii_lowercase();
                exact.contains(&origin)
                    || suffixes.iter().any(|(scheme, domain)| {
                        origin.strip_prefix(scheme.as_str()).is_some_and(|host| {
                            host.len() > domain.len() && host_ends(host, domain)
                        })
                    })
            }
        }
    }
}

/// Whether `host[:port]` is under `.domain` (a port after it allowed).
fn host_ends(host: &str, domain: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    name.ends_with(domain) && !name[..name.len() - domain.len()].contains('/')
}

/// Preflight answers depend on the request's origin, method and headers.
fn vary(fields: &mut HeaderMap) {
    fields.insert(
        VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsConfig {
            allow_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            allow_methods: vec!["GET".into(), "post".into()],
            allow_headers: vec!["Authorization".into(), "Content-Type".into()],
            expose_headers: vec!["x-request-id".into()],
            allow_credentials: credentials,
            max_age: HumanDuration::from_secs(600),
        })
    }

    fn preflight(origin: &str, method: &str, headers: &str) -> HeaderMap {
        let mut fields = HeaderMap::new();
        fields.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        fields.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).unwrap(),
        );
        if !headers.is_empty() {
            fields.insert(
                ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(headers).unwrap(),
            );
        }
        fields
    }

    #[test]
    fn preflight_of_an_allowed_origin() {
        let policy = cors(&["https://app.example.com"], true);
        let asked = preflight(
            "https://app.example.com",
            "POST",
            "content-type, authorization",
        );
        assert!(Cors::is_preflight(&Method::OPTIONS, &asked));
        let response = policy.preflight(&asked);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let h = response.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(
            h[ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, content-type"
        );
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(h[VARY].to_str().unwrap().contains("Origin"));
    }

    #[test]
    fn preflights_refused() {
        let policy = cors(&["https://app.example.com"], false);
        for (origin, method, headers) in [
            ("https://evil.example", "GET", ""),
            ("https://app.example.com", "DELETE", ""),
            ("https://app.example.com", "GET", "x-secret"),
        ] {
            let response = policy.preflight(&preflight(origin, method, headers));
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{origin} {method}"
            );
            assert!(!response.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        }
    }

    #[test]
    fn actual_requests() {
        let policy = cors(&["https://*.example.com"], false);
        let mut fields = HeaderMap::new();
        fields.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        policy.respond(
            Some(&HeaderValue::from_static("https://shop.example.com")),
            &mut fields,
        );
        assert_eq!(
            fields[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://shop.example.com"
        );
        assert_eq!(fields[ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
        assert_eq!(fields[VARY], "Origin");
        let mut fields = HeaderMap::new();
        policy.respond(
            Some(&HeaderValue::from_static("https://example.com.evil.net")),
            &mut fields,
        );
        assert!(!fields.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        let any = cors(&["*"], false);
        let mut fields = HeaderMap::new();
        any.respond(Some(&HeaderValue::from_static("https://a.b")), &mut fields);
        assert_eq!(fields[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }
}
