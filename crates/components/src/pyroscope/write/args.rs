//! Arguments of `pyroscope.write`, decoded from River with serde, with Alloy's names and
//! defaults, and their validation (one auth method at most, consistent TLS settings).

use std::collections::BTreeMap;
use std::time::Duration;

pub use river_parser::decode::Secret;
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

/// `basic_auth` block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<String>,
}

/// `authorization` block: an `Authorization: <type> <credentials>` header.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub credentials: Option<Secret>,
    #[serde(default)]
    pub credentials_file: Option<String>,
}

/// `tls_config` block.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub ca_pem: Option<String>,
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub cert_pem: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub key_pem: Option<Secret>,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// An invalid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("endpoint {endpoint:?}: at most one of basic_auth, authorization, bearer_token and bearer_token_file must be configured")]
    MultipleAuth { endpoint: String },
    #[error("endpoint {endpoint:?}: {message}")]
    Invalid { endpoint: String, message: String },
    #[error("external_labels: invalid label name {0:?}")]
    ExternalLabelName(String),
}

impl Arguments {
    /// Checks everything that can be checked without touching files or the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in self.external_labels.keys() {
            if !super::valid_label_name(name) {
                return Err(ConfigError::ExternalLabelName(name.clone()));
            }
        }
        for ep in &self.endpoints {
            ep.validate()?;
        }
        Ok(())
    }
}

impl EndpointOptions {
    /// Checks one endpoint's settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            endpoint: self.display_name().to_string(),
            message,
        };
        let url = reqwest::Url::parse(&self.url).map_err(|e| invalid(format!("url: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(invalid(format!(
                "url: scheme must be http or https, got {:?}",
                url.scheme()
            )));
        }
        let auths = [
            self.basic_auth.is_some(),
            self.authorization.is_some(),
            self.bearer_token.is_some(),
            self.bearer_token_file.is_some(),
        ];
        if auths.iter().filter(|b| **b).count() > 1 {
            return Err(ConfigError::MultipleAuth {
                endpoint: self.display_name().to_string(),
            });
        }
        if let Some(b) = &self.basic_auth {
            if b.password.is_some() && b.password_file.is_some() {
                return Err(invalid(
                    "basic_auth: at most one of password and password_file must be configured"
                        .into(),
                ));
            }
        }
        if let Some(a) = &self.authorization {
            if a.credentials.is_some() && a.credentials_file.is_some() {
                return Err(invalid(
                    "authorization: at most one of credentials and credentials_file must be configured"
                        .into(),
                ));
            }
            if a.kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("basic"))
            {
                return Err(invalid(
                    "authorization: type \"Basic\" is not allowed, use basic_auth instead".into(),
                ));
            }
        }
        if let Some(t) = &self.tls_config {
            if t.ca_file.is_some() && t.ca_pem.is_some() {
                return Err(invalid(
                    "tls_config: at most one of ca_file and ca_pem must be configured".into(),
                ));
            }
            if t.cert_file.is_some() && t.cert_pem.is_some() {
                return Err(invalid(
                    "tls_config: at most one of cert_file and cert_pem must be configured".into(),
                ));
            }
            if t.key_file.is_some() && t.key_pem.is_some() {
                return Err(invalid(
                    "tls_config: at most one of key_file and key_pem must be configured".into(),
                ));
            }
            let has_cert = t.cert_file.is_some() || t.cert_pem.is_some();
            let has_key = t.key_file.is_some() || t.key_pem.is_some();
            if has_cert != has_key {
                return Err(invalid(
                    "tls_config: a client certificate and its key must be configured together"
                        .into(),
                ));
            }
        }
        if let Some(p) = &self.proxy_url {
            reqwest::Url::parse(p).map_err(|e| invalid(format!("proxy_url: {e}")))?;
        }
        if self.no_proxy.is_some() && self.proxy_url.is_none() {
            return Err(invalid(
                "if no_proxy is configured, proxy_url must also be configured".into(),
            ));
        }
        if self.proxy_from_environment && (self.proxy_url.is_some() || self.no_proxy.is_some()) {
            return Err(invalid(
                "if proxy_from_environment is configured, proxy_url and no_proxy must not be configured"
                    .into(),
            ));
        }
        if !self.proxy_connect_header.is_empty()
            && self.proxy_url.is_none()
            && !self.proxy_from_environment
        {
            return Err(invalid(
                "if proxy_connect_header is configured, proxy_url or proxy_from_environment must also be configured"
                    .into(),
            ));
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(format!("headers: invalid header name {name:?}")));
            }
        }
        if self.min_backoff_period.is_zero() {
            return Err(invalid("min_backoff_period must be positive".into()));
        }
        if self.max_backoff_period < self.min_backoff_period {
            return Err(invalid(
                "max_backoff_period must not be shorter than min_backoff_period".into(),
            ));
        }
        if self.remote_timeout.is_zero() {
            return Err(invalid("remote_timeout must be positive".into()));
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

    fn ep() -> EndpointOptions {
        EndpointOptions::new("http://localhost:4040")
    }

    #[test]
    fn at_most_one_auth() {
        let mut e = ep();
        e.bearer_token = Some(Secret::new("t"));
        assert!(e.validate().is_ok());
        e.basic_auth = Some(BasicAuth {
            username: "u".into(),
            password: Some(Secret::new("p")),
            password_file: None,
        });
        assert!(matches!(
            e.validate(),
            Err(ConfigError::MultipleAuth { .. })
        ));
        e.bearer_token = None;
        e.bearer_token_file = Some("/x".into());
        assert!(matches!(
            e.validate(),
            Err(ConfigError::MultipleAuth { .. })
        ));
    }

    #[test]
    fn invalid_settings() {
        let mut e = ep();
        e.url = "localhost:4040".into();
        assert!(e.validate().is_err());
        let mut e = ep();
        e.tls_config = Some(TlsConfig {
            cert_file: Some("/c".into()),
            ..Default::default()
        });
        assert!(e.validate().is_err());
        let mut e = ep();
        e.max_backoff_period = Duration::from_millis(1);
        assert!(e.validate().is_err());
        let mut e = ep();
        e.no_proxy = Some("localhost".into());
        assert!(e.validate().is_err());
        e.proxy_url = Some("http://proxy:3128".into());
        assert!(e.validate().is_ok());
        e.proxy_from_environment = true;
        assert!(e.validate().is_err());
    }
}
