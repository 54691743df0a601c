//! The route forms shared by `outbound.routes` and `gateway.routes`, in
//! the vocabulary of the Kubernetes Gateway API's HTTPRoute: `matches`
//! (path, method, headers, query parameters), `backends` with weights,
//! and filters (`request_header_modifier`, `response_header_modifier`,
//! `url_rewrite`, `request_redirect`), plus Envoy's `direct_response`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ByteSize, FallbackConfig, HumanDuration, Located, RetryConfig};

/// A route: which requests (host, path, method, headers, query) go where
/// (one service, weighted backends, a redirect or a fixed answer), and
/// what is changed on the way.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name in metrics, access logs and spans (default
    /// `HOST` + `PATH_PREFIX`, like `api.example.com/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Located<String>>,
    /// Host name to match, case-insensitive (default `*`, any host).
    /// Without a port it matches any port; with one (`api:8080`) only
    /// that port.
    #[serde(default = "super::defaults::any_host")]
    pub host: Located<String>,
    /// Path prefix, matched by whole segments: `/users` matches `/users`
    /// and `/users/7`, not `/usersx`. Default `/`. The short form of one
    /// `matches` entry with `path: { prefix: ... }`.
    #[serde(default = "super::defaults::path_prefix")]
    pub path_prefix: String,
    /// Conditions, any one of which selects the route (HTTPRoute
    /// `matches`); each holds when all its parts do. Give these or
    /// `path_prefix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Located<MatchConfig>>,
    /// The destination service (a key of `outbound.services`). Give this,
    /// `backends`, `request_redirect` or `direct_response`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Located<String>>,
    /// Several services by weight (HTTPRoute `backendRefs`): a canary
    /// (`weight: 90` and `weight: 10`) or a migration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Located<BackendConfig>>,
    /// Keeps a client on one of `backends`: by a request header's value,
    /// or by a cookie the proxy sets on the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Located<StickyConfig>>,
    /// Fields set, added or removed on the request before it goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// Fields set, added or removed on the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// Path (and host) as the upstream gets them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<Located<UrlRewrite>>,
    /// Answers with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<Located<Redirect>>,
    /// Answers with a fixed status and body instead of forwarding (a
    /// maintenance page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<Located<DirectResponse>>,
    /// Largest request body (default: none); a larger one gets 413,
    /// before it is sent on when `Content-Length` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body: Option<Located<ByteSize>>,
    /// Gateway routes: who may call (default: `required` when
    /// `gateway.jwt` is set, else `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Located<RouteAuth>>,
    /// Gateway routes: cross-origin requests from browsers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Located<CorsConfig>>,
    /// Overrides the destination's `timeout` for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Overrides the destination's `per_try_timeout` for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<HumanDuration>,
    /// Overrides the destination's `retries` for this route (the budget
    /// stays the destination's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryConfig>,
    /// Overrides the destination's `fallback` for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackConfig>,
}

impl RouteConfig {
    /// A route from `host` and `path_prefix` to `service`, nothing else set.
    pub fn to_service(host: &str, path_prefix: &str, service: &str) -> Self {
        Self {
            name: None,
            host: Located::new(host.to_owned()),
            path_prefix: path_prefix.to_owned(),
            matches: Vec::new(),
            service: Some(Located::new(service.to_owned())),
            backends: Vec::new(),
            sticky: None,
            request_header_modifier: None,
            response_header_modifier: None,
            url_rewrite: None,
            request_redirect: None,
            direct_response: None,
            max_request_body: None,
            auth: None,
            cors: None,
            timeout: None,
            per_try_timeout: None,
            retries: None,
            fallback: None,
        }
    }

    /// The route's name: its `name`, or where it matches.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.get().clone(),
            None if self.path_prefix == "/" => self.host.get().clone(),
            None => format!("{}{}", self.host.get(), self.path_prefix),
        }
    }

    /// Every service the route may send to: `service` and `backends`.
    pub fn services(&self) -> impl Iterator<Item = &Located<String>> {
        self.service
            .iter()
            .chain(self.backends.iter().map(|b| &b.get().service))
    }
}

/// One condition of a route (HTTPRoute `HTTPRouteMatch`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// The path: `{ exact: /login }`, `{ prefix: /api }` (whole
    /// segments) or `{ pattern: /users/*/orders }` (`*` is one segment,
    /// a final `**` any rest). Default: any path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// The method, in any case (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request fields that must have these values (names in any case,
    /// values exact).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters that must have these values (exact).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, String>,
}

/// How a path is matched (HTTPRoute `PathPrefix`, `Exact`, and a
/// restricted, linear-time form in place of `RegularExpression`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    /// The whole path, exactly.
    Exact(String),
    /// A prefix of whole segments.
    Prefix(String),
    /// Segments, each literal or `*` (any one segment); a final `**`
    /// matches any rest, none included.
    Pattern(String),
}

impl PathMatch {
    /// The path as written.
    pub fn text(&self) -> &str {
        match self {
            Self::Exact(p) | Self::Prefix(p) | Self::Pattern(p) => p,
        }
    }

    /// Checks the form: a path starting with `/`; a pattern's segments
    /// non-empty, each literal or `*`, with `**` only last.
    pub fn check(&self) -> Result<(), String> {
        let text = self.text();
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("path {text:?} must start with '/'"));
        };
        let Self::Pattern(_) = self else {
            return Ok(());
        };
        if body.is_empty() {
            return Ok(());
        }
        let segments: Vec<&str> = body.split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            let ok = match *segment {
                "" => false,
                "*" => true,
                "**" => i + 1 == segments.len(),
                literal => !literal.contains('*'),
            };
            if !ok {
                return Err(format!(
                    "pattern {text:?}: segment {segment:?}: each segment is a literal \
                     (no '*' inside), '*' (one segment) or, last, '**' (any rest); \
                     no empty segments"
                ));
            }
        }
        Ok(())
    }

    /// Whether it matches by prefix (what `replace_prefix_match` replaces).
    pub fn is_prefix(&self) -> bool {
        matches!(self, Self::Prefix(_))
    }
}

/// One of several services a route sends to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The service (a key of `outbound.services`).
    pub service: Located<String>,
    /// Its share: requests go to each backend in proportion to its
    /// weight (default 1; 0 sends it nothing).
    #[serde(default = "super::defaults::weight")]
    pub weight: Located<u32>,
}

/// What keeps a client on one backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StickyConfig {
    /// A request field's value (a user or session id): the same value goes
    /// to the same backend while the weights stay.
    Header(String),
    /// A cookie of this name naming the backend; set on the answer to a
    /// request without it (`Path=/; HttpOnly; SameSite=Lax`).
    Cookie(String),
}

/// Header fields set, added or removed (HTTPRoute
/// `RequestHeaderModifier` / `ResponseHeaderModifier`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifier {
    /// Fields replaced (or added) with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Fields added beside any of the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Fields removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// HTTPRoute `URLRewrite`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UrlRewrite {
    /// The `Host` the upstream gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The path the upstream gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
}

/// A new path: the matched prefix replaced, or the whole path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathRewrite {
    /// The prefix the route matched (`path_prefix`, or a `prefix` match)
    /// replaced by this: `/` strips it.
    ReplacePrefixMatch(String),
    /// The whole path replaced by this.
    ReplaceFullPath(String),
}

/// HTTPRoute `RequestRedirect`: the parts given replace the request's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The host to send the client to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The port (default: the scheme's, left out of the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The path, as in `url_rewrite` (default: the request's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// 301, 302 (default, as HTTPRoute), 303, 307 or 308.
    #[serde(default = "super::defaults::redirect_status")]
    pub status_code: u16,
}

/// A fixed answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// The status (200-599).
    pub status: u16,
    /// The body (default: none).
    #[serde(default)]
    pub body: String,
    /// Its `Content-Type` (default `text/plain; charset=utf-8`).
    #[serde(default = "super::defaults::text_plain")]
    pub content_type: String,
}

/// Who may call a gateway route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RouteAuth {
    /// Anyone; a token is not looked at (identity fields are still
    /// removed).
    Public,
    /// A valid token.
    Required,
    /// A valid token with every one of these roles.
    Roles(Vec<String>),
    /// A valid token with every one of these scopes.
    Scopes(Vec<String>),
}

/// Cross-origin resource sharing (HTTPRoute `CORS` filter).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed (`https://app.example.com`), or `*` for any
    /// (not with `allow_credentials`).
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for (default `GET`, `HEAD`, `POST`).
    #[serde(default = "super::defaults::cors_methods")]
    pub allow_methods: Vec<String>,
    /// Request fields a preflight may ask for (default: none beyond the
    /// CORS-safelisted ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response fields the browser shows the page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Whether cookies and `Authorization` may be sent.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer (default 5s,
    /// as the Fetch standard).
    #[serde(default = "super::defaults::cors_max_age")]
    pub max_age: HumanDuration,
}
