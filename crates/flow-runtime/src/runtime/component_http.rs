//! HTTP served by components ([`crate::Component::serve_http`]): finding the component a path
//! under `/api/v0/component/` names (IDs inside modules hold `/`, so the longest known ID that
//! prefixes the path wins) and the components claiming a root path prefix.

use super::Runtime;
use crate::component::{HttpRequest, HttpResponse};

/// Where a request under `/api/v0/component/` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRoute {
    /// The component's global ID.
    pub id: String,
    /// The rest of the path, starting with `/`.
    pub path: String,
}

impl Runtime {
    /// The component that `rest` (the path after `/api/v0/component/`, percent-decoded) names:
    /// the longest component ID equal to `rest` or followed by `/` in it.
    pub async fn component_route(&self, rest: &str) -> Option<ComponentRoute> {
        let st = self.inner.state.lock().await;
        st.nodes
            .iter()
            .filter(|n| n.instance.is_some())
            .filter(|n| {
                rest == n.id
                    || rest
                        .strip_prefix(n.id.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
            .max_by_key(|n| n.id.len())
            .map(|n| {
                let tail = &rest[n.id.len()..];
                ComponentRoute {
                    id: n.id.clone(),
                    path: if tail.is_empty() {
                        "/".to_string()
                    } else {
                        tail.to_string()
                    },
                }
            })
    }

    /// IDs of the running components whose [`crate::Component::http_root_prefixes`] hold a
    /// prefix of `path`, in source order.
    pub async fn root_http_owners(&self, path: &str) -> Vec<String> {
        let st = self.inner.state.lock().await;
        st.nodes
            .iter()
            .filter(|n| {
                n.instance
                    .as_ref()
                    .is_some_and(|i| i.http_root_prefixes().iter().any(|p| path.starts_with(p)))
            })
            .map(|n| n.id.clone())
            .collect()
    }

    /// Hands `req` to component `id`'s [`crate::Component::serve_http`] on a blocking thread,
    /// without holding the runtime's lock. `None` when the component does not exist, was never
    /// built or serves no HTTP.
    pub async fn component_http(&self, id: &str, req: HttpRequest) -> Option<HttpResponse> {
        let (instance, span) = {
            let st = self.inner.state.lock().await;
            let node = st.index.get(id).map(|&i| &st.nodes[i])?;
            (node.instance.clone()?, node.span.clone())
        };
        tokio::task::spawn_blocking(move || span.in_scope(|| instance.serve_http(&req)))
            .await
            .ok()
            .flatten()
    }
}
