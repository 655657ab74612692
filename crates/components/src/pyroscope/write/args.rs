//! Arguments of `pyroscope.write`, decoded from River with serde, with Alloy's names and
//! defaults, and their validation (the endpoint's own rules plus the shared HTTP client rules of
//! `crate::http_client`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::http_client::HttpClientConfig;
pub use crate::http_client::{Authorization, BasicAuth, TlsConfig};
use river_parser::decode::Invalid;
pub use river_parser::decode::Secret;
use river_parser::Validate;
use serde::{Deserialize, Deserializer};

/// The component's block body.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arguments {
    /// Labels added to every profile sent (they override the profile's own).
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Repeatable `endpoint` blocks.
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<EndpointOptions>,
}

/// One `endpoint` block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointOptions {
    /// Optional name, used in metrics and the UI (the URL otherwise).
    #[serde(default)]
    pub name: String,
    /// Base URL of the Pyroscope server.
    pub url: String,
    #[serde(default = "default_remote_timeout", deserialize_with = "de_duration")]
    pub remote_timeout: Duration,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_min_backoff", deserialize_with = "de_duration")]
    pub min_backoff_period: Duration,
    #[serde(default = "default_max_backoff", deserialize_with = "de_duration")]
    pub max_backoff_period: Duration,
    /// Retries before a request is dropped; 0 retries forever.
    #[serde(default = "default_max_retries")]
    pub max_backoff_retries: u32,
    #[serde(default = "default_true")]
    pub retry_on_http_429: bool,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    #[serde(default)]
    pub authorization: Option<Authorization>,
    #[serde(default)]
    pub tls_config: Option<TlsConfig>,
    #[serde(default)]
    pub proxy_url: Option<String>,
    /// Comma-separated hosts, domains, IPs or CIDRs that bypass `proxy_url`.
    #[serde(default)]
    pub no_proxy: Option<String>,
    /// Use the proxy named by `HTTPS_PROXY`/`HTTP_PROXY` (and `NO_PROXY`) instead.
    #[serde(default)]
    pub proxy_from_environment: bool,
    /// Headers sent to the proxy.
    #[serde(default)]
    pub proxy_connect_header: BTreeMap<String, Vec<Secret>>,
    /// Whether redirects are followed (as in Alloy's HTTP client settings).
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    /// Whether HTTP/2 may be negotiated (over TLS).
    #[serde(default = "default_true")]
    pub enable_http2: bool,
}

impl EndpointOptions {
    /// Options with Alloy's defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        EndpointOptions {
            name: String::new(),
            url: url.into(),
            remote_timeout: default_remote_timeout(),
            headers: BTreeMap::new(),
            min_backoff_period: default_min_backoff(),
            max_backoff_period: default_max_backoff(),
            max_backoff_retries: default_max_retries(),
            retry_on_http_429: true,
            basic_auth: None,
            bearer_token: None,
            bearer_token_file: None,
            authorization: None,
            tls_config: None,
            proxy_url: None,
            no_proxy: None,
            proxy_from_environment: false,
            proxy_connect_header: BTreeMap::new(),
            follow_redirects: true,
            enable_http2: true,
        }
    }

    /// The name shown in metrics (`endpoint` label), logs and the UI.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.url
        } else {
            &self.name
        }
    }
}

impl EndpointOptions {
    /// The endpoint's HTTP client settings (the shared block of `crate::http_client`).
    pub fn http_client(&self) -> HttpClientConfig {
        HttpClientConfig {
            basic_auth: self.basic_auth.clone(),
            authorization: self.authorization.clone(),
            bearer_token: self.bearer_token.clone(),
            bearer_token_file: self.bearer_token_file.clone(),
            tls_config: self.tls_config.clone(),
            proxy_url: self.proxy_url.clone(),
            no_proxy: self.no_proxy.clone(),
            proxy_from_environment: self.proxy_from_environment,
            proxy_connect_header: self.proxy_connect_header.clone(),
            follow_redirects: self.follow_redirects,
            enable_http2: self.enable_http2,
            headers: self.headers.clone(),
        }
    }

    /// The endpoint's own rules (paths relative to the `endpoint` block).
    fn check(&self) -> Result<(), Invalid> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| Invalid::attr("url", format!("url: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(Invalid::attr(
                "url",
                format!("url: scheme must be http or https, got {:?}", url.scheme()),
            ));
        }
        self.http_client().validate()?;
        if self.min_backoff_period.is_zero() {
            return Err(Invalid::attr(
                "min_backoff_period",
                "min_backoff_period must be positive",
            ));
        }
        if self.max_backoff_period < self.min_backoff_period {
            return Err(Invalid::attr(
                "max_backoff_period",
                "max_backoff_period must not be shorter than min_backoff_period",
            ));
        }
        if self.remote_timeout.is_zero() {
            return Err(Invalid::attr(
                "remote_timeout",
                "remote_timeout must be positive",
            ));
        }
        Ok(())
    }
}

/// Every rule that can be checked without touching files or the network; an error points at
/// the attribute (inside its `endpoint` block).
impl Validate for Arguments {
    fn validate(&self) -> Result<(), Invalid> {
        for name in self.external_labels.keys() {
            if !super::valid_label_name(name) {
                return Err(Invalid::attr(
                    "external_labels",
                    format!("external_labels: invalid label name {name:?}"),
                ));
            }
        }
        for (i, ep) in self.endpoints.iter().enumerate() {
            ep.check().map_err(|e| e.in_block("endpoint", i))?;
        }
        Ok(())
    }
}

fn default_remote_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_min_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_max_retries() -> u32 {
    10
}
fn default_true() -> bool {
    true
}

/// A Go-style duration string (`"10s"`, `"1m30s"`, `"500ms"`), decoded by River's rules.
fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    river_parser::decode::Duration::deserialize(d).map(|d| d.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use river_parser::decode::PathSegment;

    fn args(e: EndpointOptions) -> Arguments {
        Arguments {
            external_labels: BTreeMap::new(),
            endpoints: vec![EndpointOptions::new("http://localhost:4040"), e],
        }
    }

    fn ep() -> EndpointOptions {
        EndpointOptions::new("http://localhost:4040")
    }

    #[test]
    fn at_most_one_auth() {
        let mut e = ep();
        e.bearer_token = Some(Secret::new("t"));
        assert!(args(e.clone()).validate().is_ok());
        e.basic_auth = Some(BasicAuth {
            username: "u".into(),
            password: Some(Secret::new("p")),
            password_file: None,
        });
        let err = args(e.clone()).validate().unwrap_err();
        assert!(err.message.contains("at most one of"), "{err}");
        assert_eq!(
            err.path,
            vec![
                PathSegment::Block {
                    name: "endpoint".into(),
                    index: 1
                },
                PathSegment::Attr("bearer_token".into())
            ]
        );
        e.bearer_token = None;
        e.bearer_token_file = Some("/x".into());
        assert!(args(e)
            .validate()
            .unwrap_err()
            .message
            .contains("at most one of"));
    }

    #[test]
    fn invalid_settings() {
        let mut e = ep();
        e.url = "localhost:4040".into();
        assert!(args(e).validate().is_err());
        let mut e = ep();
        e.tls_config = Some(TlsConfig {
            cert_file: Some("/c".into()),
            ..Default::default()
        });
        assert!(args(e).validate().is_err());
        let mut e = ep();
        e.max_backoff_period = Duration::from_millis(1);
        assert_eq!(
            args(e).validate().unwrap_err().path[1],
            PathSegment::Attr("max_backoff_period".into())
        );
        let mut e = ep();
        e.no_proxy = Some("localhost".into());
        assert!(args(e.clone()).validate().is_err());
        e.proxy_url = Some("http://proxy:3128".into());
        assert!(args(e.clone()).validate().is_ok());
        e.proxy_from_environment = true;
        assert!(args(e).validate().is_err());
        let bad_label = Arguments {
            external_labels: [("1x".to_string(), "v".to_string())].into(),
            endpoints: vec![],
        };
        assert_eq!(
            bad_label.validate().unwrap_err().path,
            vec![PathSegment::Attr("external_labels".into())]
        );
    }
}
