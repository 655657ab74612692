//! The HTTP client settings shared by `discovery.docker`, `discovery.kubernetes` and
//! `pyroscope.write` (Alloy's HTTP client block): the blocks' types, their one validation
//! ([`HttpClientConfig::validate`], Alloy's rules) and the one `Authorization` header builder.
//!
//! Each component keeps the attributes where Alloy documents them (top level for the
//! discoveries, inside `endpoint` for `pyroscope.write`) and hands a [`HttpClientConfig`] view
//! of them to this module. [`tls`] builds a rustls client configuration from a `tls_config`.

pub mod tls;

use std::collections::BTreeMap;

use base64::Engine;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use river_parser::decode::{Invalid, PathSegment, Secret};
use serde::Deserialize;

/// `basic_auth` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<Secret>,
    pub password_file: Option<String>,
}

/// `authorization` block: an `Authorization: <type> <credentials>` header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Authorization {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub credentials: Option<Secret>,
    pub credentials_file: Option<String>,
}

/// `tls_config` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<String>,
    pub ca_pem: Option<String>,
    pub cert_file: Option<String>,
    pub cert_pem: Option<String>,
    pub key_file: Option<String>,
    pub key_pem: Option<Secret>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    /// `TLS10` … `TLS13`.
    pub min_version: Option<String>,
}

/// The TLS versions `min_version` accepts.
pub const TLS_VERSIONS: &[&str] = &["TLS10", "TLS11", "TLS12", "TLS13"];

/// The HTTP client settings of one component (or one `pyroscope.write` endpoint). Components
/// whose surface lacks an attribute leave it at its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpClientConfig {
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<String>,
    pub tls_config: Option<TlsConfig>,
    pub proxy_url: Option<String>,
    /// Comma-separated hosts, domains, IPs or CIDRs that bypass `proxy_url`.
    pub no_proxy: Option<String>,
    /// Use the proxy named by `HTTPS_PROXY`/`HTTP_PROXY` (and `NO_PROXY`) instead.
    pub proxy_from_environment: bool,
    /// Headers sent to the proxy.
    pub proxy_connect_header: BTreeMap<String, Vec<Secret>>,
    pub follow_redirects: bool,
    pub enable_http2: bool,
    /// Headers sent with every request.
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            basic_auth: None,
            authorization: None,
            bearer_token: None,
            bearer_token_file: None,
            tls_config: None,
            proxy_url: None,
            no_proxy: None,
            proxy_from_environment: false,
            proxy_connect_header: BTreeMap::new(),
            follow_redirects: true,
            enable_http2: true,
            headers: BTreeMap::new(),
        }
    }
}

/// Errors turning valid settings into requests (files that cannot be read, bad header values).
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("reading {path:?}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Header(String),
}

/// An error about block `name` itself (its first occurrence) of the body being validated.
fn block_error(name: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        path: vec![PathSegment::Block {
            name: name.to_owned(),
            index: 0,
        }],
        message: message.into(),
    }
}

/// At most one of two attributes of a block.
fn exclusive(block: &str, a: (&str, bool), b: (&str, bool)) -> Result<(), Invalid> {
    if a.1 && b.1 {
        return Err(Invalid::attr(
            b.0,
            format!(
                "{block}: at most one of {} and {} must be configured",
                a.0, b.0
            ),
        )
        .in_block(block, 0));
    }
    Ok(())
}

impl HttpClientConfig {
    /// Checks Alloy's rules for the HTTP client block. Paths are relative to the body that holds
    /// the attributes (callers add `.in_block(..)` when that body is nested).
    pub fn validate(&self) -> Result<(), Invalid> {
        // (name, configured, is a block): the second one configured is the one reported.
        let auths = [
            ("basic_auth", self.basic_auth.is_some(), true),
            ("authorization", self.authorization.is_some(), true),
            ("bearer_token", self.bearer_token.is_some(), false),
            ("bearer_token_file", self.bearer_token_file.is_some(), false),
        ];
        if let Some((name, _, is_block)) = auths.iter().filter(|a| a.1).nth(1) {
            let msg = "at most one of basic_auth, authorization, bearer_token and bearer_token_file must be configured";
            return Err(if *is_block {
                block_error(name, msg)
            } else {
                Invalid::attr(*name, msg)
            });
        }
        if let Some(b) = &self.basic_auth {
            exclusive(
                "basic_auth",
                ("password", b.password.is_some()),
                ("password_file", b.password_file.is_some()),
            )?;
        }
        if let Some(a) = &self.authorization {
            exclusive(
                "authorization",
                ("credentials", a.credentials.is_some()),
                ("credentials_file", a.credentials_file.is_some()),
            )?;
            if a.kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("basic"))
            {
                return Err(Invalid::attr(
                    "type",
                    "authorization: type \"Basic\" is not allowed, use basic_auth instead",
                )
                .in_block("authorization", 0));
            }
        }
        if let Some(t) = &self.tls_config {
            validate_tls(t).map_err(|e| e.in_block("tls_config", 0))?;
        }
        self.validate_proxy()?;
        for name in self.headers.keys() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(Invalid::attr(
                    "headers",
                    format!("headers: invalid header name {name:?}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_proxy(&self) -> Result<(), Invalid> {
        if let Some(p) = &self.proxy_url {
            let url = reqwest::Url::parse(p)
                .map_err(|e| Invalid::attr("proxy_url", format!("proxy_url: {e}")))?;
            if !url.has_host() {
                return Err(Invalid::attr("proxy_url", "proxy_url: missing host"));
            }
        }
        if self.no_proxy.is_some() && self.proxy_url.is_none() {
            return Err(Invalid::attr(
                "no_proxy",
                "if no_proxy is configured, proxy_url must also be configured",
            ));
        }
        if self.proxy_from_environment && (self.proxy_url.is_some() || self.no_proxy.is_some()) {
            let at = if self.proxy_url.is_some() {
                "proxy_url"
            } else {
                "no_proxy"
            };
            return Err(Invalid::attr(
                at,
                "if proxy_from_environment is configured, proxy_url and no_proxy must not be configured",
            ));
        }
        if !self.proxy_connect_header.is_empty()
            && self.proxy_url.is_none()
            && !self.proxy_from_environment
        {
            return Err(Invalid::attr(
                "proxy_connect_header",
                "if proxy_connect_header is configured, proxy_url or proxy_from_environment must also be configured",
            ));
        }
        for name in self.proxy_connect_header.keys() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(Invalid::attr(
                    "proxy_connect_header",
                    format!("proxy_connect_header: invalid header name {name:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Whether any credential, TLS or proxy setting is configured.
    pub fn is_customized(&self) -> bool {
        self.bearer_token.is_some()
            || self.bearer_token_file.is_some()
            || self.basic_auth.is_some()
            || self.authorization.is_some()
            || self.tls_config.is_some()
            || self.proxy_url.is_some()
    }

    /// The `Authorization` header the credentials ask for (`None` without credentials).
    /// Credential files are read now, so calling this per request picks up rotated secrets.
    pub fn authorization_header(&self) -> Result<Option<HeaderValue>, HttpClientError> {
        let text = if let Some(b) = &self.basic_auth {
            let password = secret_or_file(b.password.as_ref(), b.password_file.as_deref())?;
            let raw = format!("{}:{}", b.username, password.unwrap_or_default());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        } else if let Some(a) = &self.authorization {
            let creds = secret_or_file(a.credentials.as_ref(), a.credentials_file.as_deref())?;
            format!("{} {}", authorization_type(a), creds.unwrap_or_default())
        } else if let Some(t) = &self.bearer_token {
            format!("Bearer {}", t.expose())
        } else if let Some(f) = &self.bearer_token_file {
            format!("Bearer {}", read_trimmed(f)?)
        } else {
            return Ok(None);
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|e| HttpClientError::Header(format!("authorization header: {e}")))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// The `headers` attribute as a header map.
    pub fn default_headers(&self) -> Result<HeaderMap, HttpClientError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                HttpClientError::Header(format!("headers: invalid header name {k:?}: {e}"))
            })?;
            let value = HeaderValue::from_str(v).map_err(|e| {
                HttpClientError::Header(format!("headers: invalid value for {k:?}: {e}"))
            })?;
            headers.insert(name, value);
        }
        Ok(headers)
    }

    /// Applies redirects, HTTP/2, TLS, the proxy and `headers` to a reqwest client builder for
    /// requests to `target_url` (whose scheme picks the proxy environment variable).
    pub fn apply_to_reqwest(
        &self,
        builder: reqwest::ClientBuilder,
        target_url: &str,
    ) -> Result<reqwest::ClientBuilder, HttpClientError> {
        let mut builder = builder
            .default_headers(self.default_headers()?)
            .no_proxy()
            .redirect(if self.follow_redirects {
                reqwest::redirect::Policy::limited(10)
            } else {
                reqwest::redirect::Policy::none()
            });
        if let Some(proxy) = self.reqwest_proxy(target_url)? {
            builder = builder.proxy(proxy);
        }
        if !self.enable_http2 {
            builder = builder.http1_only();
        }
        if let Some(t) = &self.tls_config {
            let config =
                tls::client_config(t, self.enable_http2).map_err(HttpClientError::Header)?;
            builder = builder.tls_backend_preconfigured(config);
        }
        Ok(builder)
    }

    /// The proxy from `proxy_url` (or the environment with `proxy_from_environment`).
    fn reqwest_proxy(&self, target_url: &str) -> Result<Option<reqwest::Proxy>, HttpClientError> {
        let (url, no_proxy) = if self.proxy_from_environment {
            let names: &[&str] = if target_url.starts_with("https:") {
                &["HTTPS_PROXY", "https_proxy"]
            } else {
                &["HTTP_PROXY", "http_proxy"]
            };
            match names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
            {
                Some(url) => (url, reqwest::NoProxy::from_env()),
                None => return Ok(None),
            }
        } else {
            match &self.proxy_url {
                Some(url) => (
                    url.clone(),
                    self.no_proxy
                        .as_deref()
                        .and_then(reqwest::NoProxy::from_string),
                ),
                None => return Ok(None),
            }
        };
        let mut proxy = reqwest::Proxy::all(url.as_str())
            .map_err(|e| HttpClientError::Header(format!("proxy: {e}")))?
            .no_proxy(no_proxy);
        if !self.proxy_connect_header.is_empty() {
            let mut headers = HeaderMap::new();
            for (k, values) in &self.proxy_connect_header {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                    HttpClientError::Header(format!(
                        "proxy_connect_header: invalid name {k:?}: {e}"
                    ))
                })?;
                for v in values {
                    let mut value = HeaderValue::from_str(v.expose()).map_err(|e| {
                        HttpClientError::Header(format!(
                            "proxy_connect_header: invalid value for {k:?}: {e}"
                        ))
                    })?;
                    value.set_sensitive(true);
                    headers.append(name.clone(), value);
                }
            }
            proxy = proxy.headers(headers);
        }
        Ok(Some(proxy))
    }
}

/// The `type` of an `authorization` block (`Bearer` when unset or empty).
pub fn authorization_type(a: &Authorization) -> &str {
    a.kind
        .as_deref()
        .filter(|k| !k.is_empty())
        .unwrap_or("Bearer")
}

/// The rules of a `tls_config` block (paths relative to the block).
fn validate_tls(t: &TlsConfig) -> Result<(), Invalid> {
    for (a, b) in [
        (
            ("ca_file", t.ca_file.is_some()),
            ("ca_pem", t.ca_pem.is_some()),
        ),
        (
            ("cert_file", t.cert_file.is_some()),
            ("cert_pem", t.cert_pem.is_some()),
        ),
        (
            ("key_file", t.key_file.is_some()),
            ("key_pem", t.key_pem.is_some()),
        ),
    ] {
        if a.1 && b.1 {
            return Err(Invalid::attr(
                b.0,
                format!(
                    "tls_config: at most one of {} and {} must be configured",
                    a.0, b.0
                ),
            ));
        }
    }
    let has_cert = t.cert_file.is_some() || t.cert_pem.is_some();
    let has_key = t.key_file.is_some() || t.key_pem.is_some();
    if has_cert != has_key {
        let at = if has_cert {
            if t.cert_file.is_some() {
                "cert_file"
            } else {
                "cert_pem"
            }
        } else if t.key_file.is_some() {
            "key_file"
        } else {
            "key_pem"
        };
        return Err(Invalid::attr(
            at,
            "tls_config: a client certificate and its key must be configured together",
        ));
    }
    if let Some(v) = &t.min_version {
        if !TLS_VERSIONS.contains(&v.as_str()) {
            return Err(Invalid::attr(
                "min_version",
                format!(
                    "tls_config: invalid min_version {v:?}, expected one of {}",
                    TLS_VERSIONS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A secret given inline or in a file (read and trimmed now).
fn secret_or_file(
    inline: Option<&Secret>,
    file: Option<&str>,
) -> Result<Option<String>, HttpClientError> {
    match (inline, file) {
        (Some(s), _) => Ok(Some(s.expose().to_owned())),
        (None, Some(f)) => read_trimmed(f).map(Some),
        (None, None) => Ok(None),
    }
}

/// A credential file's contents without surrounding white space.
pub fn read_trimmed(path: &str) -> Result<String, HttpClientError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| HttpClientError::ReadFile {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_segment(e: &Invalid) -> &PathSegment {
        &e.path[0]
    }

    #[test]
    fn at_most_one_auth_points_at_the_second() {
        let c = HttpClientConfig {
            bearer_token: Some(Secret::new("t")),
            basic_auth: Some(BasicAuth::default()),
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.message.contains("at most one of"), "{e}");
        assert_eq!(*first_segment(&e), PathSegment::Attr("bearer_token".into()));
        let c = HttpClientConfig {
            bearer_token_file: Some("/x".into()),
            ..c
        };
        let e = c.validate().unwrap_err();
        assert_eq!(*first_segment(&e), PathSegment::Attr("bearer_token".into()));
    }

    #[test]
    fn block_rules_point_inside_the_block() {
        let c = HttpClientConfig {
            basic_auth: Some(BasicAuth {
                username: "u".into(),
                password: Some(Secret::new("p")),
                password_file: Some("/p".into()),
            }),
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.path,
            vec![
                PathSegment::Block {
                    name: "basic_auth".into(),
                    index: 0
                },
                PathSegment::Attr("password_file".into())
            ]
        );
        let c = HttpClientConfig {
            tls_config: Some(TlsConfig {
                cert_pem: Some("C".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.path[1], PathSegment::Attr("cert_pem".into()));
        let c = HttpClientConfig {
            tls_config: Some(TlsConfig {
                min_version: Some("TLS9".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn proxy_rules() {
        let mut c = HttpClientConfig {
            no_proxy: Some("localhost".into()),
            ..Default::default()
        };
        assert!(c.validate().is_err());
        c.proxy_url = Some("http://proxy:3128".into());
        assert!(c.validate().is_ok());
        c.proxy_from_environment = true;
        assert!(c.validate().is_err());
        let c = HttpClientConfig {
            proxy_connect_header: [("X".to_string(), vec![Secret::new("v")])].into(),
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().path,
            vec![PathSegment::Attr("proxy_connect_header".into())]
        );
    }

    #[test]
    fn authorization_header_values() {
        let c = HttpClientConfig {
            basic_auth: Some(BasicAuth {
                username: "user".into(),
                password: Some(Secret::new("pass")),
                password_file: None,
            }),
            ..Default::default()
        };
        let v = c.authorization_header().unwrap().unwrap();
        // base64("user:pass")
        assert_eq!(v.to_str().unwrap(), "Basic dXNlcjpwYXNz");
        assert!(v.is_sensitive());
        let c = HttpClientConfig {
            authorization: Some(Authorization {
                kind: Some(String::new()),
                credentials: Some(Secret::new("c")),
                credentials_file: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            c.authorization_header().unwrap().unwrap().to_str().unwrap(),
            "Bearer c"
        );
        let c = HttpClientConfig {
            bearer_token_file: Some("/nonexistent/rill-token".into()),
            ..Default::default()
        };
        assert!(matches!(
            c.authorization_header(),
            Err(HttpClientError::ReadFile { .. })
        ));
        assert!(HttpClientConfig::default()
            .authorization_header()
            .unwrap()
            .is_none());
    }
}
