//! Arguments of `pyroscope.write`, decoded from River with serde, with Alloy's names and
//! defaults, and their validation (one auth method at most, consistent TLS settings).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

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
    /// Whether redirects are followed (as in Alloy's HTTP client settings).
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
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
            follow_redirects: true,
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

/// A string that is never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
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

/// Accepts a Go-style duration string (`"10s"`, `"1m30s"`, `"500ms"`) or a number of seconds.
fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"10s\" or \"500ms\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("duration must not be negative"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// Parses a Go `time.ParseDuration` string without sign (`"300ms"`, `"1h2m3.5s"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("1h1m1.5s").unwrap(),
            Duration::from_millis(3_661_500)
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3d").is_err());
    }

    fn ep() -> EndpointOptions {
        EndpointOptions::new("http://localhost:4040")
    }

    #[test]
    fn at_most_one_auth() {
        let mut e = ep();
        e.bearer_token = Some("t".into());
        assert!(e.validate().is_ok());
        e.basic_auth = Some(BasicAuth {
            username: "u".into(),
            password: Some("p".into()),
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
    }

    #[test]
    fn secret_is_not_printed() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "(secret)");
    }
}
