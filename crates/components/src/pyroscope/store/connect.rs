//! Pyroscope's `querier.v1.QuerierService` over the Connect protocol (unary calls): `POST
//! /querier.v1.QuerierService/METHOD` with an `application/proto` or `application/json` body
//! (optionally `Content-Encoding: gzip`), answered in the same codec (gzip'd when the client
//! accepts it and the answer is large). Errors are Connect's JSON `{"code", "message"}` with the
//! code's HTTP status (`invalid_argument` 400, `unavailable` 503, ...).
//!
//! Served: `ProfileTypes`, `LabelNames`, `LabelValues`, `Series`, `SelectMergeStacktraces`,
//! `SelectMergeProfile`, `SelectSeries` and `GetProfileStats` — what Grafana's Pyroscope data
//! source and `profilecli` call. The others (`Diff`, `SelectHeatmap`, `SelectMergeSpanProfile`,
//! `AnalyzeQuery`) answer `unimplemented`.

use std::io::{Read, Write};

use flow_runtime::{HttpRequest, HttpResponse};
use prost::Message;
use serde_json::{json, Value as Json};

use super::db::StoreError;
use super::proto::{self, JsonMsg};
use super::query::{Aggregation, ProfileType, Reader, SeriesInfo, TimeRange};
use super::selector::Selector;
use super::tree::Tree;

/// The path prefix of the service.
pub const SERVICE_PREFIX: &str = "/querier.v1.QuerierService/";
/// Flame graph nodes returned when the request does not say (Pyroscope's default too).
pub const DEFAULT_MAX_NODES: usize = 8192;
/// Most flame graph nodes a request may ask for.
pub const MAX_MAX_NODES: i64 = 1 << 20;
/// Largest request body once decompressed.
const MAX_REQUEST: u64 = 4 << 20;
/// Answers larger than this are gzip'd for clients accepting it.
const GZIP_OVER: usize = 1024;

/// A Connect error: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub code: &'static str,
    pub message: String,
}

impl ConnectError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ConnectError {
            code: "invalid_argument",
            message: message.into(),
        }
    }

    fn status(&self) -> u16 {
        match self.code {
            "invalid_argument" | "failed_precondition" | "out_of_range" => 400,
            "not_found" => 404,
            "unimplemented" => 501,
            "unavailable" => 503,
            "resource_exhausted" => 429,
            _ => 500,
        }
    }

    /// The error as an HTTP response.
    pub fn response(&self) -> HttpResponse {
        HttpResponse::json(
            self.status(),
            &json!({ "code": self.code, "message": self.message }),
        )
    }
}

impl From<StoreError> for ConnectError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Query(m) => ConnectError::invalid(m),
            other => ConnectError {
                code: "internal",
                message: other.to_string(),
            },
        }
    }
}

impl From<proto::JsonError> for ConnectError {
    fn from(e: proto::JsonError) -> Self {
        ConnectError::invalid(format!("bad JSON request: {}", e.0))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    Proto,
    Json,
}

/// A decoded request body.
struct Body {
    codec: Codec,
    bytes: Vec<u8>,
    json: Json,
}

impl Body {
    fn proto<M: Message + Default>(&self) -> Result<M, ConnectError> {
        M::decode(self.bytes.as_slice())
            .map_err(|e| ConnectError::invalid(format!("bad protobuf request: {e}")))
    }

    fn msg(&self) -> Result<JsonMsg<'_>, ConnectError> {
        Ok(JsonMsg::new(&self.json)?)
    }
}

/// Serves one call (`method` is the path after [`SERVICE_PREFIX`]); `reader` is the store's
/// reader, or why there is none (answered `unavailable`).
pub fn serve(method: &str, req: &HttpRequest, reader: Result<&mut Reader, String>) -> HttpResponse {
    if req.method != "POST" {
        return ConnectError::invalid(format!(
            "{} is not supported: Connect unary calls are POST requests",
            req.method
        ))
        .response()
        .with_header("allow", "POST");
    }
    let body = match decode_body(req) {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let known = [
        "ProfileTypes",
        "LabelNames",
        "LabelValues",
        "Series",
        "SelectMergeStacktraces",
        "SelectMergeProfile",
        "SelectSeries",
        "GetProfileStats",
    ];
    if !known.contains(&method) {
        let code = match method {
            "Diff" | "SelectHeatmap" | "SelectMergeSpanProfile" | "AnalyzeQuery" => "unimplemented",
            _ => "not_found",
        };
        return ConnectError {
            code,
            message: format!("querier.v1.QuerierService/{method} is not served by pyroscope.store"),
        }
        .response();
    }
    let reader = match reader {
        Ok(r) => r,
        Err(cause) => {
            return ConnectError {
                code: "unavailable",
                message: cause,
            }
            .response()
        }
    };
    let answer = match method {
        "ProfileTypes" => profile_types(&body, reader),
        "LabelNames" => label_names(&body, reader),
        "LabelValues" => label_values(&body, reader),
        "Series" => series(&body, reader),
        "SelectMergeStacktraces" => merge_stacktraces(&body, reader),
        "SelectMergeProfile" => merge_profile(&body, reader),
        "SelectSeries" => select_series(&body, reader),
        _ => profile_stats(reader),
    };
    match answer {
        Ok((bytes, json)) => encode_answer(req, body.codec, bytes, json),
        Err(e) => e.response(),
    }
}

fn decode_body(req: &HttpRequest) -> Result<Body, ConnectError> {
    let ct = req.header("content-type").unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let codec = match mime.as_str() {
        "application/proto" | "application/protobuf" | "application/x-protobuf" => Codec::Proto,
        "application/json" => Codec::Json,
        _ => {
            return Err(ConnectError {
                code: "invalid_argument",
                message: format!(
                    "unsupported content type {ct:?}: use application/proto or application/json \
                     (Connect unary)"
                ),
            })
        }
    };
    let bytes = match req.header("content-encoding").map(str::trim) {
        None | Some("") | Some("identity") => req.body.clone(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(req.body.as_slice())
                .take(MAX_REQUEST + 1)
                .read_to_end(&mut out)
                .map_err(|e| ConnectError::invalid(format!("bad gzip request body: {e}")))?;
            if out.len() as u64 > MAX_REQUEST {
                return Err(ConnectError::invalid("request body too large"));
            }
            out
        }
        Some(other) => {
            return Err(ConnectError {
                code: "unimplemented",
                message: format!("unsupported content encoding {other:?} (gzip is)"),
            })
        }
    };
    let json = if codec == Codec::Json {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| ConnectError::invalid(format!("bad JSON request: {e}")))?
        }
    } else {
        Json::Null
    };
    Ok(Body { codec, bytes, json })
}

fn encode_answer(req: &HttpRequest, codec: Codec, bytes: Vec<u8>, json: Json) -> HttpResponse {
    let (ct, body) = match codec {
        Codec::Proto => ("application/proto", bytes),
        Codec::Json => ("application/json", json.to_string().into_bytes()),
    };
    let gzip_ok = req
        .header("accept-encoding")
        .is_some_and(|a| a.split(',').any(|e| e.trim().starts_with("gzip")));
    if gzip_ok && body.len() > GZIP_OVER {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if enc.write_all(&body).is_ok() {
            if let Ok(z) = enc.finish() {
                return HttpResponse::new(200, ct, z).with_header("content-encoding", "gzip");
            }
        }
    }
    HttpResponse::new(200, ct, body)
}

type Answer = Result<(Vec<u8>, Json), ConnectError>;

fn selectors(matchers: &[String]) -> Result<Vec<Selector>, ConnectError> {
    Selector::parse_any(matchers).map_err(|e| ConnectError::invalid(e.0))
}

fn profile_types(body: &Body, reader: &mut Reader) -> Answer {
    let req: proto::ProfileTypesRequest = match body.codec {
        Codec::Proto => body.proto()?,
        Codec::Json => {
            let m = body.msg()?;
            proto::ProfileTypesRequest {
                start: m.i64("start", "start")?,
                end: m.i64("end", "end")?,
            }
        }
    };
    let range = TimeRange::optional(req.start, req.end)?;
    let resp = proto::ProfileTypesResponse {
        profile_types: reader
            .profile_types(range)?
            .into_iter()
            .map(|t| proto::ProfileType {
                id: t.id,
                name: t.name,
                sample_type: t.sample_type,
                sample_unit: t.sample_unit,
                period_type: t.period_type,
                period_unit: t.period_unit,
            })
            .collect(),
    };
    Ok((proto::encode(&resp), resp.to_json()))
}

fn label_names(body: &Body, reader: &mut Reader) -> Answer {
    let req: proto::LabelNamesRequest = match body.codec {
        Codec::Proto => body.proto()?,
        Codec::Json => {
            let m = body.msg()?;
            proto::LabelNamesRequest {
                matchers: m.strings("matchers", "matchers")?,
                start: m.i64("start", "start")?,
                end: m.i64("end", "end")?,
            }
        }
    };
    let range = TimeRange::optional(req.start, req.end)?;
    let resp = proto::NamesResponse {
        names: reader.label_names(&selectors(&req.matchers)?, range)?,
    };
    Ok((proto::encode(&resp), resp.to_json()))
}

fn label_values(body: &Body, reader: &mut Reader) -> Answer {
    let req: proto::LabelValuesRequest = match body.codec {
        Codec::Proto => body.proto()?,
        Codec::Json => {
            let m = body.msg()?;
            proto::LabelValuesRequest {
                name: m.string("name", "name")?,
                matchers: m.strings("matchers", "matchers")?,
                start: m.i64("start", "start")?,
                end: m.i64("end", "end")?,
            }
        }
    };
    if req.name.is_empty() {
        return Err(ConnectError::invalid("name (the label name) is required"));
    }
    let range = TimeRange::optional(req.start, req.end)?;
    let resp = proto::NamesResponse {
        names: reader.label_values(&req.name, &selectors(&req.matchers)?, range)?,
    };
    Ok((proto::encode(&resp), resp.to_json()))
}

fn pairs(labels: impl IntoIterator<Item = (String, String)>) -> Vec<proto::LabelPair> {
    labels
        .into_iter()
        .map(|(name, value)| proto::LabelPair { name, value })
        .collect()
}

fn series(body: &Body, reader: &mut Reader) -> Answer {
    let req: proto::SeriesRequest = match body.codec {
        Codec::Proto => body.proto()?,
        Codec::Json => {
            let m = body.msg()?;
            proto::SeriesRequest {
                matchers: m.strings("matchers", "matchers")?,
                label_names: m.strings("labelNames", "label_names")?,
                start: m.i64("start", "start")?,
                end: m.i64("end", "end")?,
            }
        }
    };
    let range = TimeRange::optional(req.start, req.end)?;
    let mut sets = std::collections::BTreeSet::new();
    for s in reader.select(None, &selectors(&req.matchers)?, range)? {
        let mut view = s.view();
        if !req.label_names.is_empty() {
            view.retain(|k, _| req.label_names.contains(k));
        }
        sets.insert(view);
    }
    let resp = proto::SeriesResponse {
        labels_set: sets
            .into_iter()
            .map(|l| proto::Labels { labels: pairs(l) })
            .collect(),
    };
    Ok((proto::encode(&resp), resp.to_json()))
}

/// The common part of the select calls.
struct Select {
    profile_type: ProfileType,
    series: Vec<SeriesInfo>,
    range: TimeRange,
    call_site: Vec<String>,
}

fn select(
    reader: &mut Reader,
    profile_type_id: &str,
    label_selector: &str,
    start: i64,
    end: i64,
    stack_trace_selector: Option<proto::StackTraceSelector>,
    profile_ids: &[String],
) -> Result<Select, ConnectError> {
    if profile_type_id.is_empty() {
        return Err(ConnectError::invalid(
            "profile_typeID is required (for example process_cpu:cpu:nanoseconds:cpu:nanoseconds)",
        ));
    }
    let profile_type = ProfileType::parse(profile_type_id)?;
    let selector = Selector::parse(label_selector).map_err(|e| ConnectError::invalid(e.0))?;
    let range = TimeRange::new(start, end)?;
    if !profile_ids.is_empty() {
        return Err(ConnectError::invalid(
            "profile_id_selector is not supported: pyroscope.store keeps no profile IDs",
        ));
    }
    let call_site = match stack_trace_selector {
        None => Vec::new(),
        Some(s) if s.go_pgo.is_some() => {
            return Err(ConnectError::invalid(
                "stack_trace_selector.go_pgo is not supported by pyroscope.store",
            ))
        }
        Some(s) => s.call_site.into_iter().map(|l| l.name).collect(),
    };
    let series = reader.select(Some(profile_type_id), &[selector], Some(range))?;
    Ok(Select {
        profile_type,
        series,
        range,
        call_site,
    })
}

fn max_nodes(v: Option<i64>) -> Result<usize, ConnectError> {
    match v {
        None | Some(0) => Ok(DEFAULT_MAX_NODES),
        Some(n) if n < 0 => Err(ConnectError::invalid(format!(
            "max_nodes must not be negative, got {n}"
        ))),
        Some(n) => Ok(n.min(MAX_MAX_NODES) as usize),
    }
}

fn merged(reader: &mut Reader, s: &Select) -> Result<Tree, ConnectError> {
    let tree = reader.merge(&s.series, s.range)?;
    Ok(tree.focus(&s.call_site))
}

fn merge_stacktraces(body: &Body, reader: &mut Reader) -> Answer {
    let req: proto::SelectMergeStacktracesRequest = match body.codec {
        Codec::Proto => body.proto()?,
        Codec::Json => {
            let m = body.msg()?;
            proto::SelectMergeStacktracesRequest {
                profile_type_id: m.string("profileTypeID", "profile_typeID")?,
                label_selector: m.string("labelSelector", "label_selector")?,
                start: m.i64("start", "start")?,
                end: m.i64("end", "end")?,
                max_nodes: m.opt_i64("maxNodes", "max_nodes")?,
                format: m
                    .opt_enum("format", "format", proto::PROFILE_FORMATS)?
                    .unwrap_or(0),
                stack_trace_selector: m
                    .stack_trace_selector("stackTraceSelector", "stack_trace_selector")?,
                profile_id_selector: m.strings("profileIdSelector", "profile_id_selector")?,
            }
        }
    };
    if req.format == 2 {
        return Err(ConnectError::invalid(
            "format PROFILE_FORMAT_TREE is not supported by pyroscope.store: use \
             PROFILE_FORMAT_FLAMEGRAPH",
        ));
    }
    let limit = max_nodes(req.max_nodes)?;
    let s = select(
        reader,
        &req.profile_type_id,
        &req.label_selector,
        req.start,
        req.end,
        req.stack_trace_selector,
        &req.profile_id_selector,
    )?;
    let fg = merged(reader, &s)?.flamegraph(limit);
    let resp = proto::SelectMergeStacktracesResponse {
        flamegraph: Some(proto::FlameGraph {
            names: fg.names,
            levels: fg
                .levels
                .into_iter()
                .map(|values| proto::Level { values })
                .collect(),
            total: fg.total,
            max_self: fg.max_self,
        }),
        tree: Vec::new(),
    };
    Ok((proto::encode(&resp), resp.to_json()))
}

fn merge_profile(body: &Body, reader: &mut Reader) -> Answer {
    let req: proto::SelectMergeProfileRequest = match body.codec {
        Codec::Proto => body.proto()?,
        Codec::Json => {
            let m = body.msg()?;
            proto::SelectMergeProfileRequest {
                profile_type_id: m.string("profileTypeID", "profile_typeID")?,
                label_selector: m.string("labelSelector", "label_selector")?,
                start: m.i64("start", "start")?,
                end: m.i64("end", "end")?,
                max_nodes: m.opt_i64("maxNodes", "max_nodes")?,
                stack_trace_selector: m
                    .stack_trace_selector("stackTraceSelector", "stack_trace_selector")?,
                profile_id_selector: m.strings("profileIdSelector", "profile_id_selector")?,
            }
        }
    };
    // No limit unless asked: a pprof download is the whole merge.
    let limit = match req.max_nodes {
        None | Some(0) => 0,
        other => max_nodes(other)?,
    };
    let s = select(
        reader,
        &req.profile_type_id,
        &req.label_selector,
        req.start,
        req.end,
        req.stack_trace_selector,
        &req.profile_id_selector,
    )?;
    let tree = merged(reader, &s)?.truncated(limit);
    let period = s.series.iter().map(|x| x.period).max().unwrap_or(0);
    let profile = tree.to_pprof(&s.profile_type, period, s.range.start_ms * 1_000_000);
    Ok((profile.encode_to_vec(), proto::profile_json(&profile)))
}

fn select_series(body: &Body, reader: &mut Reader) -> Answer {
    let req: proto::SelectSeriesRequest = match body.codec {
        Codec::Proto => body.proto()?,
        Codec::Json => {
            let m = body.msg()?;
            proto::SelectSeriesRequest {
                profile_type_id: m.string("profileTypeID", "profile_typeID")?,
                label_selector: m.string("labelSelector", "label_selector")?,
                start: m.i64("start", "start")?,
                end: m.i64("end", "end")?,
                group_by: m.strings("groupBy", "group_by")?,
                step: m.f64("step", "step")?,
                aggregation: m.opt_enum("aggregation", "aggregation", proto::AGGREGATIONS)?,
                stack_trace_selector: m
                    .stack_trace_selector("stackTraceSelector", "stack_trace_selector")?,
                limit: m.opt_i64("limit", "limit")?,
                exemplar_type: m
                    .opt_enum("exemplarType", "exemplar_type", proto::EXEMPLAR_TYPES)?
                    .unwrap_or(0),
            }
        }
    };
    if !(req.step.is_finite() && req.step > 0.0) {
        return Err(ConnectError::invalid(format!(
            "step must be a positive number of seconds, got {}",
            req.step
        )));
    }
    if req.exemplar_type > 1 {
        return Err(ConnectError::invalid(
            "exemplars are not supported by pyroscope.store",
        ));
    }
    let aggregation = match req.aggregation.unwrap_or(0) {
        0 => Aggregation::Sum,
        1 => Aggregation::Average,
        n => return Err(ConnectError::invalid(format!("unknown aggregation {n}"))),
    };
    let s = select(
        reader,
        &req.profile_type_id,
        &req.label_selector,
        req.start,
        req.end,
        None,
        &[],
    )?;
    if req
        .stack_trace_selector
        .as_ref()
        .is_some_and(|t| !t.call_site.is_empty() || t.go_pgo.is_some())
    {
        return Err(ConnectError::invalid(
            "stack_trace_selector is not supported by SelectSeries in pyroscope.store",
        ));
    }
    let step_ms = ((req.step * 1000.0).round() as i64).max(1);
    let mut lines = reader.timeline(&s.series, s.range, step_ms, &req.group_by, aggregation)?;
    if let Some(limit) = req.limit.filter(|&l| l > 0) {
        let sum = |t: &super::query::Timeline| t.points.iter().map(|p| p.1).sum::<f64>();
        lines.sort_by(|a, b| sum(b).total_cmp(&sum(a)));
        lines.truncate(limit as usize);
    }
    let resp = proto::SelectSeriesResponse {
        series: lines
            .into_iter()
            .map(|t| proto::Series {
                labels: pairs(t.labels),
                points: t
                    .points
                    .into_iter()
                    .map(|(timestamp, value)| proto::Point { value, timestamp })
                    .collect(),
            })
            .collect(),
    };
    Ok((proto::encode(&resp), resp.to_json()))
}

fn profile_stats(reader: &mut Reader) -> Answer {
    let st = reader.stats()?;
    let resp = proto::GetProfileStatsResponse {
        data_ingested: st.profiles > 0,
        oldest_profile_time: st.oldest_ms.unwrap_or(0),
        newest_profile_time: st.newest_ms.unwrap_or(0),
    };
    Ok((proto::encode(&resp), resp.to_json()))
}
