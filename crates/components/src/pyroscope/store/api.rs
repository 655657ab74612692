//! rill's own JSON API of `pyroscope.store` (for its UI; documented in
//! `docs/components/pyroscope.store.md`): `GET v1/series`, `v1/profile` (timeline, flame tree
//! and top functions of one selection in one call), `v1/diff` (two ranges as one tree) and
//! `v1/pprof` (the merged selection as a `.pb.gz` download). Times are milliseconds since the
//! epoch, or `now` / `now-15m` (a Go duration back from now). Errors: `{"error": message}` with
//! 400 (bad query) or 503 (store unavailable).

use std::collections::BTreeMap;
use std::time::SystemTime;

use flow_runtime::{HttpRequest, HttpResponse};
use serde_json::{json, Value as Json};

use super::connect::{DEFAULT_MAX_NODES, MAX_MAX_NODES};
use super::db::{unix_ms, StoreError};
use super::query::{check_step, Aggregation, ProfileType, Reader, SeriesInfo, TimeRange};
use super::selector::Selector;
use super::tree::diff_json;

/// Default number of timeline points when `step` is not given.
const DEFAULT_POINTS: i64 = 300;
/// Default rows of the top-functions table.
const DEFAULT_TOP: usize = 50;

fn bad(msg: impl Into<String>) -> HttpResponse {
    HttpResponse::json(400, &json!({ "error": msg.into() }))
}

fn store_err(e: StoreError) -> HttpResponse {
    match e {
        StoreError::Query(m) => bad(m),
        other => HttpResponse::json(500, &json!({ "error": other.to_string() })),
    }
}

/// Serves a request below the component's base path.
pub fn serve(req: &HttpRequest, reader: Result<&mut Reader, String>) -> HttpResponse {
    let known = [
        "/v1/series",
        "/v1/profile",
        "/v1/diff",
        "/v1/pprof",
        "/",
        "/v1",
    ];
    if !known.contains(&req.path.as_str()) {
        return HttpResponse::json(
            404,
            &json!({ "error": format!("no such endpoint {:?}", req.path) }),
        );
    }
    if req.method != "GET" && req.method != "HEAD" {
        return HttpResponse::json(405, &json!({ "error": "use GET" })).with_header("allow", "GET");
    }
    if req.path == "/" || req.path == "/v1" {
        return HttpResponse::json(200, &index());
    }
    let reader = match reader {
        Ok(r) => r,
        Err(cause) => return HttpResponse::json(503, &json!({ "error": cause })),
    };
    let q = req.query_map();
    let now = unix_ms(SystemTime::now());
    let result = match req.path.as_str() {
        "/v1/series" => series(&q, now, reader),
        "/v1/profile" => profile(&q, now, reader),
        "/v1/diff" => diff(&q, now, reader),
        _ => return pprof(&q, now, reader),
    };
    match result {
        Ok(v) => HttpResponse::json(200, &v),
        Err(r) => r,
    }
}

fn index() -> Json {
    json!({
        "connect": "POST querier.v1.QuerierService/{ProfileTypes,LabelNames,LabelValues,Series,SelectMergeStacktraces,SelectMergeProfile,SelectSeries,GetProfileStats}",
        "json": ["GET v1/series", "GET v1/profile", "GET v1/diff", "GET v1/pprof"],
    })
}

/// A time: ms since the epoch, `now`, or `now-DURATION`.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    if t == "now" {
        return Ok(now_ms);
    }
    if let Some(back) = t.strip_prefix("now-") {
        let d = river_parser::decode::parse_go_duration(back)
            .map_err(|e| format!("invalid time {text:?}: {e}"))?;
        return Ok(now_ms - d.as_millis() as i64);
    }
    t.parse::<i64>().map_err(|_| {
        format!("invalid time {text:?}: use milliseconds since the epoch, now or now-1h")
    })
}

fn time_param(
    q: &BTreeMap<String, String>,
    key: &str,
    default: i64,
    now: i64,
) -> Result<i64, HttpResponse> {
    q.get(key)
        .map_or(Ok(default), |v| parse_time(v, now))
        .map_err(|e| bad(format!("{key}: {e}")))
}

fn range_param(
    q: &BTreeMap<String, String>,
    from: &str,
    until: &str,
    now: i64,
) -> Result<TimeRange, HttpResponse> {
    let start = time_param(q, from, now - 3_600_000, now)?;
    let end = time_param(q, until, now, now)?;
    TimeRange::new(start, end).map_err(store_err)
}

fn selector_param(q: &BTreeMap<String, String>) -> Result<Selector, HttpResponse> {
    Selector::parse(q.get("selector").map_or("", String::as_str))
        .map_err(|e| bad(format!("selector: {}", e.0)))
}

fn usize_param(
    q: &BTreeMap<String, String>,
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, HttpResponse> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map(|n| n.min(max))
            .map_err(|_| bad(format!("{key} must be a non-negative integer, got {v:?}"))),
    }
}

fn type_json(t: &ProfileType) -> Json {
    json!({
        "id": t.id, "name": t.name, "sampleType": t.sample_type, "sampleUnit": t.sample_unit,
        "periodType": t.period_type, "periodUnit": t.period_unit,
    })
}

fn series(
    q: &BTreeMap<String, String>,
    now: i64,
    reader: &mut Reader,
) -> Result<Json, HttpResponse> {
    let sel = selector_param(q)?;
    let range = match (q.get("from"), q.get("until")) {
        (None, None) => None,
        _ => Some(range_param(q, "from", "until", now)?),
    };
    let all = reader
        .select(q.get("profile_type").map(String::as_str), &[sel], range)
        .map_err(store_err)?;
    let types: std::collections::BTreeSet<ProfileType> =
        all.iter().map(|s| s.profile_type.clone()).collect();
    let list: Vec<Json> = all
        .iter()
        .map(|s| {
            json!({
                "id": s.id, "profileType": s.profile_type.id, "labels": s.labels,
                "firstMs": s.first_ms, "lastMs": s.last_ms, "period": s.period,
            })
        })
        .collect();
    Ok(json!({
        "series": list,
        "profileTypes": types.iter().map(type_json).collect::<Vec<_>>(),
    }))
}

/// The selected series and their profile type: `profile_type` if given, else the only type
/// among the selected series.
fn selection(
    q: &BTreeMap<String, String>,
    range: Option<TimeRange>,
    reader: &mut Reader,
) -> Result<(ProfileType, Vec<SeriesInfo>), HttpResponse> {
    let sel = selector_param(q)?;
    match q.get("profile_type") {
        Some(t) => {
            let pt = ProfileType::parse(t).map_err(store_err)?;
            let s = reader.select(Some(t), &[sel], range).map_err(store_err)?;
            Ok((pt, s))
        }
        None => {
            let s = reader.select(None, &[sel], range).map_err(store_err)?;
            let types: std::collections::BTreeSet<&str> =
                s.iter().map(|x| x.profile_type.id.as_str()).collect();
            match types.len() {
                0 => Err(bad(
                    "profile_type is required (no series match the selector)",
                )),
                1 => Ok((s[0].profile_type.clone(), s)),
                _ => Err(bad(format!(
                    "profile_type is required: the selection holds {}",
                    types.into_iter().collect::<Vec<_>>().join(", ")
                ))),
            }
        }
    }
}

fn profile(
    q: &BTreeMap<String, String>,
    now: i64,
    reader: &mut Reader,
) -> Result<Json, HttpResponse> {
    let range = range_param(q, "from", "until", now)?;
    let span = range.end_ms - range.start_ms;
    let step = match q.get("step") {
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| bad(format!("step must be milliseconds, got {v:?}")))?,
        None => ((span + DEFAULT_POINTS - 1) / DEFAULT_POINTS + 999) / 1000 * 1000,
    };
    check_step(range, step).map_err(store_err)?;
    let max_nodes = usize_param(q, "max_nodes", DEFAULT_MAX_NODES, MAX_MAX_NODES as usize)?;
    let top_n = usize_param(q, "top", DEFAULT_TOP, 10_000)?;
    let (pt, series) = selection(q, Some(range), reader)?;
    let tree = reader.merge(&series, range).map_err(store_err)?;
    let points = (span + step - 1) / step;
    let mut values = vec![0f64; points as usize];
    for line in reader
        .timeline(&series, range, step, &[], Aggregation::Sum)
        .map_err(store_err)?
    {
        for (t, v) in line.points {
            if let Some(slot) = values.get_mut(((t - range.start_ms) / step) as usize) {
                *slot += v;
            }
        }
    }
    let (profiles, _) = reader.count(&series, range).map_err(store_err)?;
    let top: Vec<Json> = tree
        .top_functions()
        .into_iter()
        .take(top_n)
        .map(|(n, s, t)| json!({"name": &*n, "self": s, "total": t}))
        .collect();
    Ok(json!({
        "profileType": type_json(&pt),
        "unit": pt.sample_unit,
        "period": series.iter().map(|s| s.period).max().unwrap_or(0),
        "from": range.start_ms,
        "until": range.end_ms,
        "series": series.len(),
        "profiles": profiles,
        "total": tree.total(),
        "timeline": { "startMs": range.start_ms, "stepMs": step, "values": values },
        "tree": tree.to_json(max_nodes),
        "top": top,
    }))
}

fn diff(q: &BTreeMap<String, String>, now: i64, reader: &mut Reader) -> Result<Json, HttpResponse> {
    let left = range_param(q, "left_from", "left_until", now)?;
    let right = range_param(q, "right_from", "right_until", now)?;
    let max_nodes = usize_param(q, "max_nodes", DEFAULT_MAX_NODES, MAX_MAX_NODES as usize)?;
    let both = TimeRange {
        start_ms: left.start_ms.min(right.start_ms),
        end_ms: left.end_ms.max(right.end_ms),
    };
    let (pt, series) = selection(q, Some(both), reader)?;
    let l = reader.merge(&series, left).map_err(store_err)?;
    let r = reader.merge(&series, right).map_err(store_err)?;
    Ok(json!({
        "profileType": type_json(&pt),
        "unit": pt.sample_unit,
        "left": { "from": left.start_ms, "until": left.end_ms, "total": l.total() },
        "right": { "from": right.start_ms, "until": right.end_ms, "total": r.total() },
        "tree": diff_json(&l, &r, max_nodes),
    }))
}

fn pprof(q: &BTreeMap<String, String>, now: i64, reader: &mut Reader) -> HttpResponse {
    let mut go = || -> Result<HttpResponse, HttpResponse> {
        let range = range_param(q, "from", "until", now)?;
        let (pt, series) = selection(q, Some(range), reader)?;
        let tree = reader.merge(&series, range).map_err(store_err)?;
        let period = series.iter().map(|s| s.period).max().unwrap_or(0);
        let profile = tree.to_pprof(&pt, period, range.start_ms * 1_000_000);
        let body = ebpf_probe::pprof::encode_gzip(&profile);
        let service = series
            .first()
            .and_then(|s| s.labels.get("service_name"))
            .map_or("profile", String::as_str);
        let safe: String = service
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(
            HttpResponse::new(200, "application/octet-stream", body).with_header(
                "content-disposition",
                &format!(
                    "attachment; filename=\"{safe}-{}-{}.pb.gz\"",
                    range.start_ms, range.end_ms
                ),
            ),
        )
    };
    go().unwrap_or_else(|e| e)
}
