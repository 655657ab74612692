//! The watches of `discovery.kubernetes`: one `kube` watcher per object kind (and namespace)
//! mirrors the objects into a shared [`Snapshot`]; once every watch has listed, the targets are
//! rebuilt on each change and published. A watch that fails re-lists with backoff (right away
//! after `410 Gone`) and its error shows in the health until it recovers.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};

use flow_runtime::util::{error_chain, lock};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::Instrument;

use super::client::{client_config, namespaces_to_watch};
use super::labels::{self, build_targets_cached, Role, Snapshot, TargetCache};
use super::{
    watched_roles, Arguments, KubernetesDiscovery, KubernetesError, MAX_BACKOFF, MIN_BACKOFF,
};

/// Spawns a watch into `tasks`, inside the component's span.
fn spawn_in_span(
    tasks: &mut tokio::task::JoinSet<()>,
    fut: impl Future<Output = ()> + Send + 'static,
) {
    tasks.spawn(fut.in_current_span());
}

/// The HTTP status code behind a watcher error, if the API server answered with one.
fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

/// Per-watch state, shared between a watch task and the target builder.
#[derive(Clone, Debug, Default)]
struct WatchState {
    name: String,
    synced: bool,
    error: Option<String>,
}

struct Shared {
    snapshot: Mutex<Snapshot>,
    watches: Mutex<Vec<WatchState>>,
    notify: Notify,
}

/// Watches one kind of object (in one namespace, or all) and mirrors it into the snapshot.
async fn watch_kind<K>(
    api: Api<K>,
    aux: bool,
    namespace: Option<String>,
    cfg: watcher::Config,
    shared: Arc<Shared>,
    pick: fn(&mut Snapshot) -> &mut BTreeMap<String, K>,
) where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let name = match &namespace {
        Some(ns) => format!("{} in {ns}", K::plural(&())),
        None => K::plural(&()).into_owned(),
    };
    let idx = {
        let mut w = lock(&shared.watches);
        w.push(WatchState {
            name: name.clone(),
            ..Default::default()
        });
        w.len() - 1
    };
    let prefix = namespace.as_ref().map(|ns| format!("{ns}/"));
    let set_state = |f: &dyn Fn(&mut WatchState)| {
        let mut w = lock(&shared.watches);
        f(&mut w[idx]);
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut stream = watcher(api.clone(), cfg.clone()).boxed();
        let mut initial: Vec<K> = Vec::new();
        let failure = loop {
            let Some(ev) = stream.next().await else {
                break None;
            };
            match ev {
                Ok(watcher::Event::Init) => initial.clear(),
                Ok(watcher::Event::InitApply(o)) => initial.push(o),
                Ok(watcher::Event::InitDone) => {
                    {
                        let mut snap = lock(&shared.snapshot);
                        let map = pick(&mut snap);
                        match &prefix {
                            Some(p) => map.retain(|k, _| !k.starts_with(p.as_str())),
                            None => map.clear(),
                        }
                        for o in initial.drain(..) {
                            map.insert(labels::object_key(o.meta()), o);
                        }
                        if aux {
                            snap.aux_gen += 1;
                        }
                    }
                    set_state(&|w| {
                        w.synced = true;
                        w.error = None;
                    });
                    backoff = MIN_BACKOFF;
                    tracing::debug!(watch = %name, "listed");
                    shared.notify.notify_one();
                }
                Ok(watcher::Event::Apply(o)) => {
                    {
                        let mut snap = lock(&shared.snapshot);
                        pick(&mut snap).insert(labels::object_key(o.meta()), o);
                        if aux {
                            snap.aux_gen += 1;
                        }
                    }
                    shared.notify.notify_one();
                }
                Ok(watcher::Event::Delete(o)) => {
                    {
                        let mut snap = lock(&shared.snapshot);
                        pick(&mut snap).remove(&labels::object_key(o.meta()));
                        if aux {
                            snap.aux_gen += 1;
                        }
                    }
                    shared.notify.notify_one();
                }
                Err(e) => break Some(e),
            }
        };
        drop(stream);
        match failure {
            Some(e) if status_code(&e) == Some(410) => {
                // The resource version expired: list again right away (not a health problem).
                tracing::debug!(watch = %name, error = %e, "resource version expired, re-listing");
                continue;
            }
            Some(e) => {
                let msg = error_chain(&e);
                tracing::debug!(watch = %name, error = %msg, "watch failed");
                set_state(&|w| w.error = Some(msg.clone()));
                shared.notify.notify_one();
            }
            None => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects (retrying with backoff) and runs the watches for one set of arguments.
pub(super) async fn run_with(disc: Arc<KubernetesDiscovery>, args: Arguments) {
    let role = match args.role() {
        Ok(role) => role,
        Err(e) => {
            // Validated before; without a role there is nothing to watch until an update.
            disc.output().set_status(false, e.to_string());
            return std::future::pending().await;
        }
    };
    let mut backoff = MIN_BACKOFF;
    let (client, namespaces) = loop {
        let attempt = async {
            let cfg = client_config(&args).await?;
            let client =
                Client::try_from(cfg).map_err(|e| KubernetesError::Client(error_chain(&e)))?;
            Ok::<_, KubernetesError>((client, namespaces_to_watch(&args)?))
        };
        match attempt.await {
            Ok(v) => break v,
            Err(e) => {
                disc.output().set_status(false, e.to_string());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    let attach = args.attach();
    let shared = Arc::new(Shared {
        snapshot: Mutex::new(Snapshot::default()),
        watches: Mutex::new(Vec::new()),
        notify: Notify::new(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for kind in watched_roles(role, attach) {
        let sel = args.selector_for(kind).cloned().unwrap_or_default();
        let cfg = {
            let mut c = watcher::Config::default();
            if !sel.label.is_empty() {
                c = c.labels(&sel.label);
            }
            if !sel.field.is_empty() {
                c = c.fields(&sel.field);
            }
            c
        };
        let scopes: Vec<Option<String>> = match (&namespaces, kind) {
            (_, Role::Node) | (None, _) => vec![None],
            (Some(ns), _) => ns.iter().cloned().map(Some).collect(),
        };
        for scope in scopes {
            let c = client.clone();
            let sh = Arc::clone(&shared);
            let cfg = cfg.clone();
            let aux = kind != role;
            fn api<K>(c: Client, scope: &Option<String>) -> Api<K>
            where
                K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
            {
                match scope {
                    Some(ns) => Api::namespaced(c, ns),
                    None => Api::all(c),
                }
            }
            match kind {
                Role::Pod => spawn_in_span(
                    &mut tasks,
                    watch_kind(api::<Pod>(c, &scope), aux, scope, cfg, sh, |s| &mut s.pods),
                ),
                Role::Node => spawn_in_span(
                    &mut tasks,
                    watch_kind(Api::<Node>::all(c), aux, None, cfg, sh, |s| &mut s.nodes),
                ),
                Role::Service => spawn_in_span(
                    &mut tasks,
                    watch_kind(api::<Service>(c, &scope), aux, scope, cfg, sh, |s| {
                        &mut s.services
                    }),
                ),
                Role::Endpoints => spawn_in_span(
                    &mut tasks,
                    watch_kind(api::<Endpoints>(c, &scope), aux, scope, cfg, sh, |s| {
                        &mut s.endpoints
                    }),
                ),
                Role::EndpointSlice => spawn_in_span(
                    &mut tasks,
                    watch_kind(api::<EndpointSlice>(c, &scope), aux, scope, cfg, sh, |s| {
                        &mut s.endpointslices
                    }),
                ),
                Role::Ingress => spawn_in_span(
                    &mut tasks,
                    watch_kind(api::<Ingress>(c, &scope), aux, scope, cfg, sh, |s| {
                        &mut s.ingresses
                    }),
                ),
            };
        }
    }
    if attach.namespace && role != Role::Node {
        let sh = Arc::clone(&shared);
        spawn_in_span(
            &mut tasks,
            watch_kind::<Namespace>(
                Api::all(client.clone()),
                true,
                None,
                watcher::Config::default(),
                sh,
                |s| &mut s.namespaces,
            ),
        );
    }

    // Build the targets whenever a watch reports a change. Each watch registers its state
    // when its task first runs, so "every watch synced" also needs every task registered;
    // otherwise the first kind to list (say endpoints) would publish targets before the
    // kinds they join with (services, pods) were listed.
    let expected_watches = tasks.len();
    let mut cache = TargetCache::default();
    loop {
        shared.notify.notified().await;
        let states = lock(&shared.watches).clone();
        let errors: Vec<String> = states
            .iter()
            .filter_map(|w| w.error.as_ref().map(|e| format!("{}: {e}", w.name)))
            .collect();
        let all_synced = states.len() == expected_watches && states.iter().all(|w| w.synced);
        if all_synced {
            let targets = {
                let snap = lock(&shared.snapshot);
                build_targets_cached(role, &snap, attach, &mut cache)
            };
            let n = targets.len();
            // Health first, so that whoever sees the new targets sees the new health too.
            if errors.is_empty() {
                disc.output().set_status(true, format!("{n} targets"));
            }
            disc.output().publish(targets);
        }
        if !errors.is_empty() {
            disc.output().set_status(false, errors.join("; "));
        }
    }
}
