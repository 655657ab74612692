//! How `discovery.kubernetes` reaches the API server: a kubeconfig file, an explicit
//! `api_server` with the shared HTTP client settings (credentials, TLS, proxy), or the in-cluster
//! service account; and which namespaces it watches.

use std::path::{Path, PathBuf};

use flow_runtime::util::error_chain;

use super::{Arguments, KubernetesError, SERVICE_ACCOUNT_DIR, SERVICE_ACCOUNT_DIR_ENV};
use crate::http_client::authorization_type;

pub(super) fn parse_uri(s: &str) -> Result<http::Uri, String> {
    let u: http::Uri = s
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    match u.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("expected an http:// or https:// URL".into()),
    }
    if u.host().is_none_or(str::is_empty) {
        return Err("missing host".into());
    }
    Ok(u)
}

fn service_account_dir() -> PathBuf {
    std::env::var_os(SERVICE_ACCOUNT_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR))
}

fn read_file(path: &Path) -> Result<String, KubernetesError> {
    std::fs::read_to_string(path).map_err(|source| KubernetesError::ReadFile {
        path: path.display().to_string(),
        source,
    })
}

fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, KubernetesError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KubernetesError::Tls(format!("parsing CA certificates: {e}")))?;
    if certs.is_empty() {
        return Err(KubernetesError::Tls("no CA certificate found".into()));
    }
    Ok(certs)
}

/// The namespaces to watch: `None` means all of them.
pub fn namespaces_to_watch(args: &Arguments) -> Result<Option<Vec<String>>, KubernetesError> {
    let mut names: Vec<String> = Vec::new();
    let mut own = false;
    for n in &args.namespaces {
        names.extend(n.names.iter().cloned());
        own |= n.own_namespace;
    }
    if own {
        let path = service_account_dir().join("namespace");
        let ns = read_file(&path)?.trim().to_owned();
        if ns.is_empty() {
            return Err(KubernetesError::InCluster(format!(
                "{} is empty",
                path.display()
            )));
        }
        names.push(ns);
    }
    names.sort();
    names.dedup();
    Ok(if names.is_empty() { None } else { Some(names) })
}

/// The in-cluster configuration from `KUBERNETES_SERVICE_HOST`/`_PORT` and the service account
/// directory (token file, `ca.crt`).
pub fn in_cluster_config(
    env: impl Fn(&str) -> Option<String>,
    sa_dir: &Path,
) -> Result<kube::Config, KubernetesError> {
    let host = env("KUBERNETES_SERVICE_HOST")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            KubernetesError::InCluster(
                "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined".into(),
            )
        })?;
    let port = env("KUBERNETES_SERVICE_PORT")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            KubernetesError::InCluster(
                "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined".into(),
            )
        })?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{port}");
    let uri = parse_uri(&url).map_err(|e| KubernetesError::InCluster(format!("{url}: {e}")))?;
    let mut cfg = kube::Config::new(uri);
    let token = sa_dir.join("token");
    // Fail early (and clearly) when the token is missing; kube re-reads the file later on.
    read_file(&token)?;
    cfg.auth_info.token_file = Some(token.display().to_string());
    let ca = read_file(&sa_dir.join("ca.crt"))?;
    cfg.root_cert = Some(pem_certs(&ca)?);
    if let Ok(ns) = std::fs::read_to_string(sa_dir.join("namespace")) {
        if !ns.trim().is_empty() {
            cfg.default_namespace = ns.trim().to_owned();
        }
    }
    Ok(cfg)
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The client configuration the arguments ask for (reads files, no network I/O).
pub async fn client_config(args: &Arguments) -> Result<kube::Config, KubernetesError> {
    let mut cfg = if let Some(path) = &args.kubeconfig_file {
        let kc =
            kube::config::Kubeconfig::read_from(path).map_err(|e| KubernetesError::Kubeconfig {
                path: path.clone(),
                message: error_chain(&e),
            })?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| KubernetesError::Kubeconfig {
                path: path.clone(),
                message: error_chain(&e),
            })?
    } else if let Some(server) = &args.api_server {
        let uri =
            parse_uri(server).map_err(|e| KubernetesError::InvalidServer(server.clone(), e))?;
        let mut cfg = kube::Config::new(uri);
        apply_http_settings(&mut cfg, args)?;
        cfg
    } else {
        in_cluster_config(|k| std::env::var(k).ok(), &service_account_dir())?
    };
    // Watches are long-lived; kube's watcher has its own idle timeout.
    cfg.read_timeout = None;
    Ok(cfg)
}

fn apply_http_settings(cfg: &mut kube::Config, args: &Arguments) -> Result<(), KubernetesError> {
    let settings = args.http_client();
    // A bearer token in a file goes to kube, which re-reads it (rotated service account
    // tokens); every other credential is the shared `Authorization` header.
    let token_file = settings.bearer_token_file.clone().or_else(|| {
        settings
            .authorization
            .as_ref()
            .filter(|a| a.credentials.is_none() && authorization_type(a) == "Bearer")
            .and_then(|a| a.credentials_file.clone())
    });
    if let Some(f) = token_file {
        read_file(Path::new(&f))?;
        cfg.auth_info.token_file = Some(f);
    } else if let Some(value) = settings.authorization_header()? {
        cfg.headers.push((http::header::AUTHORIZATION, value));
    }
    if let Some(t) = &args.tls_config {
        let ca = match (&t.ca_file, &t.ca_pem) {
            (Some(f), _) => Some(read_file(Path::new(f))?),
            (None, Some(p)) => Some(p.clone()),
            (None, None) => None,
        };
        if let Some(ca) = ca {
            cfg.root_cert = Some(pem_certs(&ca)?);
        }
        let ai = &mut cfg.auth_info;
        ai.client_certificate = t.cert_file.clone();
        ai.client_key = t.key_file.clone();
        if let Some(p) = &t.cert_pem {
            ai.client_certificate_data = Some(b64(p.as_bytes()));
        }
        if let Some(p) = &t.key_pem {
            ai.client_key_data = Some(b64(p.expose().as_bytes()).into());
        }
        cfg.tls_server_name = t.server_name.clone();
        cfg.accept_invalid_certs = t.insecure_skip_verify;
    }
    if let Some(p) = &args.proxy_url {
        cfg.proxy_url =
            Some(parse_uri(p).map_err(|e| KubernetesError::InvalidProxy(p.clone(), e))?);
    }
    Ok(())
}
