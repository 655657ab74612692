//! Request handling of the fixture API server: discovery documents, lists and gets with label
//! and field selectors, and `watch=true` event streams (resumed from a resource version, `410`
//! once compacted, bookmarks, dropped on demand).

use super::*;

fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap(),
        status_body(code, reason, message),
    )
}

fn query_map(q: Option<&str>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for pair in q.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(percent_decode(k), percent_decode(v));
    }
    m
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(hex, 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) async fn handle(st: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    st.requests.lock().unwrap().push(format!(
        "{} {}{}",
        req.method(),
        path,
        query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    ));
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| st.tokens.lock().unwrap().contains(t));
    if !authorized {
        return error(401, "Unauthorized", "Unauthorized");
    }
    if req.method() != hyper::Method::GET {
        return error(
            405,
            "MethodNotAllowed",
            "the fixture is read-only over HTTP",
        );
    }
    let q = query_map(query.as_deref());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => full(
            StatusCode::OK,
            json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0",
                "gitCommit": "fixture", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0",
                "compiler": "gc", "platform": "linux/amd64"
            }),
        ),
        ["api"] => full(
            StatusCode::OK,
            json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]
            }),
        ),
        ["apis"] => {
            let groups: Vec<Value> = ["discovery.k8s.io", "networking.k8s.io"]
                .iter()
                .map(|g| {
                    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            full(
                StatusCode::OK,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["api", "v1"] => resource_list("v1"),
        ["apis", g, "v1"] => resource_list(&format!("{g}/v1")),
        _ => {
            let (gv, rest) = match segs.as_slice() {
                ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
                ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
                _ => {
                    return error(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                }
            };
            let (ns, plural, name) = match rest {
                [p] => (None, *p, None),
                [p, n] => (None, *p, Some(*n)),
                ["namespaces", ns, p] => (Some(*ns), *p, None),
                ["namespaces", ns, p, n] => (Some(*ns), *p, Some(*n)),
                _ => {
                    return error(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                }
            };
            let Some(rt) = RESOURCES
                .iter()
                .find(|r| r.plural == plural && r.api_version == gv)
            else {
                return error(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            };
            if ns.is_some() && !rt.namespaced {
                return error(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
            if let Some(name) = name {
                return get_one(&st, rt, ns, name);
            }
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                watch_stream(st, rt, ns.map(str::to_owned), &q)
            } else {
                list(&st, rt, ns, &q)
            }
        }
    }
}

fn resource_list(gv: &str) -> Response<Body> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.api_version == gv)
        .map(|r| {
            json!({
                "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "list", "watch"], "shortNames": r.short,
            })
        })
        .collect();
    full(
        StatusCode::OK,
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn get_one(st: &State, rt: &'static ResourceType, ns: Option<&str>, name: &str) -> Response<Body> {
    let store = st.store.lock().unwrap();
    let key = (rt.plural, ns.unwrap_or("").to_owned(), name.to_owned());
    match store.objects.get(&key) {
        Some(o) => full(StatusCode::OK, (**o).clone()),
        None => error(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", rt.plural),
        ),
    }
}

/// Parsed `labelSelector` and `fieldSelector` of a request.
struct Filters {
    labels: Vec<LabelReq>,
    fields: Vec<(String, bool, String)>,
}

enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_set(s: &str) -> Vec<String> {
    s.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|v| v.trim().to_owned())
        .collect()
}

impl Filters {
    fn parse(q: &BTreeMap<String, String>) -> Result<Filters, String> {
        let mut labels = Vec::new();
        for r in split_top(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
            let req = if let Some(k) = r.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_owned())
            } else if let Some((k, v)) = r.split_once(" notin ") {
                LabelReq::NotIn(k.trim().to_owned(), parse_set(v))
            } else if let Some((k, v)) = r.split_once(" in ") {
                LabelReq::In(k.trim().to_owned(), parse_set(v))
            } else if let Some((k, v)) = r.split_once("!=") {
                LabelReq::Ne(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = r.split_once("==") {
                LabelReq::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = r.split_once('=') {
                LabelReq::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                LabelReq::Exists(r.clone())
            } else {
                return Err(format!("unable to parse requirement: {r:?}"));
            };
            labels.push(req);
        }
        let mut fields = Vec::new();
        for r in split_top(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
            let (k, eq, v) = if let Some((k, v)) = r.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = r.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = r.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid selector: {r:?}"));
            };
            fields.push((k.trim().to_owned(), eq, v.trim().to_owned()));
        }
        Ok(Filters { labels, fields })
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(path, eq, v)| {
                let mut cur = obj;
                for p in path.split('.') {
                    cur = &cur[p];
                }
                let actual = match cur {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (actual == *v) == *eq
            })
    }
}

fn list(
    st: &State,
    rt: &'static ResourceType,
    ns: Option<&str>,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let filters = match Filters::parse(q) {
        Ok(f) => f,
        Err(e) => return error(400, "BadRequest", &e),
    };
    let store = st.store.lock().unwrap();
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|((p, o_ns, _), _)| *p == rt.plural && ns.is_none_or(|n| n == o_ns))
        .filter(|(_, o)| filters.matches(o))
        .map(|(_, o)| (**o).clone())
        .collect();
    full(
        StatusCode::OK,
        json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": store.rv.to_string()},
            "items": items,
        }),
    )
}

fn event_line(typ: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": typ, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch_stream(
    st: Arc<State>,
    rt: &'static ResourceType,
    ns: Option<String>,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let filters = match Filters::parse(q) {
        Ok(f) => f,
        Err(e) => return error(400, "BadRequest", &e),
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let from = q.get("resourceVersion").cloned().unwrap_or_default();
    let relevant = move |ev: &Event| {
        ev.plural == rt.plural
            && ns
                .as_deref()
                .is_none_or(|n| ev.object["metadata"]["namespace"].as_str() == Some(n))
    };

    // Subscribe before reading the store so no event falls between the two.
    let mut live = st.events.subscribe();
    let (backlog, start_rv, gone) = {
        let store = st.store.lock().unwrap();
        if from.is_empty() || from == "0" {
            let evs: Vec<Event> = store
                .objects
                .iter()
                .filter(|((p, _, _), _)| *p == rt.plural)
                .map(|(_, o)| Event {
                    rv: store.rv,
                    typ: "ADDED",
                    plural: rt.plural,
                    object: Arc::clone(o),
                })
                .filter(|e| relevant(e))
                .collect();
            (evs, store.rv, false)
        } else {
            match from.parse::<u64>() {
                Ok(rv) if rv < store.compacted => (Vec::new(), store.rv, true),
                Ok(rv) => (
                    store
                        .log
                        .iter()
                        .filter(|e| e.rv > rv && relevant(e))
                        .cloned()
                        .collect(),
                    store.rv,
                    false,
                ),
                Err(_) => (Vec::new(), store.rv, true),
            }
        }
    };

    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1024);
    let mut drops = st.drop_gen.subscribe();
    drops.borrow_and_update();
    let mut ends = st.end_gen.subscribe();
    ends.borrow_and_update();
    let kind = rt.kind;
    let api_version = rt.api_version;
    let state = Arc::clone(&st);
    tokio::spawn(async move {
        state.active_watches.fetch_add(1, Ordering::SeqCst);
        let _guard = WatchGuard(Arc::clone(&state));
        if gone {
            let status = status_body(
                410,
                "Expired",
                &format!("too old resource version: {from} ({start_rv})"),
            );
            let _ = tx.send(Ok(Frame::data(event_line("ERROR", &status)))).await;
            return;
        }
        for ev in backlog {
            if filters.matches(&ev.object)
                && tx
                    .send(Ok(Frame::data(event_line(ev.typ, &ev.object))))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let mut seen_rv = start_rv;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(state.bookmark_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = ends.changed() => return,
                _ = drops.changed() => {
                    let _ = tx.send(Err(std::io::Error::other("fixture dropped the watch"))).await;
                    return;
                }
                _ = tick.tick(), if bookmarks => {
                    let bm = json!({"kind": kind, "apiVersion": api_version,
                                    "metadata": {"resourceVersion": seen_rv.to_string()}});
                    if tx.send(Ok(Frame::data(event_line("BOOKMARK", &bm)))).await.is_err() {
                        return;
                    }
                }
                ev = live.recv() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx.send(Err(std::io::Error::other("watcher too slow"))).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if ev.rv <= start_rv {
                        continue;
                    }
                    seen_rv = ev.rv;
                    if relevant(&ev) && filters.matches(&ev.object)
                        && tx.send(Ok(Frame::data(event_line(ev.typ, &ev.object)))).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

struct WatchGuard(Arc<State>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.active_watches.fetch_sub(1, Ordering::SeqCst);
    }
}
