//! The messages of Pyroscope's query API that `pyroscope.store` serves, written by hand as
//! prost messages from the field numbers of the published `querier/v1/querier.proto` and
//! `types/v1/types.proto`, with their JSON forms (proto3 JSON mapping: lowerCamelCase names,
//! the original names accepted too, 64-bit integers written as strings and read from strings
//! or numbers, enums by name or number).

use prost::Message;
use serde_json::{json, Map, Value as Json};

pub use crate::pyroscope::push_proto::LabelPair;

/// `types.v1.ProfileType`.
#[derive(Clone, PartialEq, Message)]
pub struct ProfileType {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub sample_type: String,
    #[prost(string, tag = "5")]
    pub sample_unit: String,
    #[prost(string, tag = "6")]
    pub period_type: String,
    #[prost(string, tag = "7")]
    pub period_unit: String,
}

/// `types.v1.Labels`.
#[derive(Clone, PartialEq, Message)]
pub struct Labels {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
}

/// `types.v1.Series`.
#[derive(Clone, PartialEq, Message)]
pub struct Series {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub points: Vec<Point>,
}

/// `types.v1.Point`.
#[derive(Clone, PartialEq, Message)]
pub struct Point {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `types.v1.LabelValuesRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelValuesRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, repeated, tag = "2")]
    pub matchers: Vec<String>,
    #[prost(int64, tag = "3")]
    pub start: i64,
    #[prost(int64, tag = "4")]
    pub end: i64,
}

/// `types.v1.LabelValuesResponse` and `types.v1.LabelNamesResponse` (same layout).
#[derive(Clone, PartialEq, Message)]
pub struct NamesResponse {
    #[prost(string, repeated, tag = "1")]
    pub names: Vec<String>,
}

/// `types.v1.LabelNamesRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelNamesRequest {
    #[prost(string, repeated, tag = "1")]
    pub matchers: Vec<String>,
    #[prost(int64, tag = "2")]
    pub start: i64,
    #[prost(int64, tag = "3")]
    pub end: i64,
}

/// `types.v1.Location`.
#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `types.v1.GoPGO`.
#[derive(Clone, PartialEq, Message)]
pub struct GoPgo {
    #[prost(uint32, tag = "1")]
    pub keep_locations: u32,
    #[prost(bool, tag = "2")]
    pub aggregate_callees: bool,
}

/// `types.v1.StackTraceSelector`.
#[derive(Clone, PartialEq, Message)]
pub struct StackTraceSelector {
    /// Root first: only stacks starting with these frames are kept.
    #[prost(message, repeated, tag = "1")]
    pub call_site: Vec<Location>,
    #[prost(message, optional, tag = "2")]
    pub go_pgo: Option<GoPgo>,
}

/// `types.v1.GetProfileStatsResponse` (its request has no fields).
#[derive(Clone, PartialEq, Message)]
pub struct GetProfileStatsResponse {
    #[prost(bool, tag = "1")]
    pub data_ingested: bool,
    #[prost(int64, tag = "2")]
    pub oldest_profile_time: i64,
    #[prost(int64, tag = "3")]
    pub newest_profile_time: i64,
}

/// `querier.v1.ProfileTypesRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ProfileTypesRequest {
    #[prost(int64, tag = "1")]
    pub start: i64,
    #[prost(int64, tag = "2")]
    pub end: i64,
}

/// `querier.v1.ProfileTypesResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct ProfileTypesResponse {
    #[prost(message, repeated, tag = "1")]
    pub profile_types: Vec<ProfileType>,
}

/// `querier.v1.SeriesRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct SeriesRequest {
    #[prost(string, repeated, tag = "1")]
    pub matchers: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub label_names: Vec<String>,
    #[prost(int64, tag = "3")]
    pub start: i64,
    #[prost(int64, tag = "4")]
    pub end: i64,
}

/// `querier.v1.SeriesResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct SeriesResponse {
    #[prost(message, repeated, tag = "2")]
    pub labels_set: Vec<Labels>,
}

/// `querier.v1.SelectMergeStacktracesRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct SelectMergeStacktracesRequest {
    #[prost(string, tag = "1")]
    pub profile_type_id: String,
    #[prost(string, tag = "2")]
    pub label_selector: String,
    #[prost(int64, tag = "3")]
    pub start: i64,
    #[prost(int64, tag = "4")]
    pub end: i64,
    #[prost(int64, optional, tag = "5")]
    pub max_nodes: Option<i64>,
    /// `querier.v1.ProfileFormat`: 0 unspecified, 1 flame graph, 2 tree.
    #[prost(int32, tag = "6")]
    pub format: i32,
    #[prost(message, optional, tag = "7")]
    pub stack_trace_selector: Option<StackTraceSelector>,
    #[prost(string, repeated, tag = "8")]
    pub profile_id_selector: Vec<String>,
}

/// `querier.v1.SelectMergeStacktracesResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct SelectMergeStacktracesResponse {
    #[prost(message, optional, tag = "1")]
    pub flamegraph: Option<FlameGraph>,
    #[prost(bytes = "vec", tag = "2")]
    pub tree: Vec<u8>,
}

/// `querier.v1.FlameGraph`.
#[derive(Clone, PartialEq, Message)]
pub struct FlameGraph {
    #[prost(string, repeated, tag = "1")]
    pub names: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub levels: Vec<Level>,
    #[prost(int64, tag = "3")]
    pub total: i64,
    #[prost(int64, tag = "4")]
    pub max_self: i64,
}

/// `querier.v1.Level`.
#[derive(Clone, PartialEq, Message)]
pub struct Level {
    #[prost(int64, repeated, tag = "1")]
    pub values: Vec<i64>,
}

/// `querier.v1.SelectMergeProfileRequest` (answered with a `google.v1.Profile`, pprof).
#[derive(Clone, PartialEq, Message)]
pub struct SelectMergeProfileRequest {
    #[prost(string, tag = "1")]
    pub profile_type_id: String,
    #[prost(string, tag = "2")]
    pub label_selector: String,
    #[prost(int64, tag = "3")]
    pub start: i64,
    #[prost(int64, tag = "4")]
    pub end: i64,
    #[prost(int64, optional, tag = "5")]
    pub max_nodes: Option<i64>,
    #[prost(message, optional, tag = "6")]
    pub stack_trace_selector: Option<StackTraceSelector>,
    #[prost(string, repeated, tag = "7")]
    pub profile_id_selector: Vec<String>,
}

/// `querier.v1.SelectSeriesRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct SelectSeriesRequest {
    #[prost(string, tag = "1")]
    pub profile_type_id: String,
    #[prost(string, tag = "2")]
    pub label_selector: String,
    #[prost(int64, tag = "3")]
    pub start: i64,
    #[prost(int64, tag = "4")]
    pub end: i64,
    #[prost(string, repeated, tag = "5")]
    pub group_by: Vec<String>,
    /// Seconds.
    #[prost(double, tag = "6")]
    pub step: f64,
    /// `types.v1.TimeSeriesAggregationType`: 0 sum, 1 average.
    #[prost(int32, optional, tag = "7")]
    pub aggregation: Option<i32>,
    #[prost(message, optional, tag = "8")]
    pub stack_trace_selector: Option<StackTraceSelector>,
    #[prost(int64, optional, tag = "9")]
    pub limit: Option<i64>,
    /// `types.v1.ExemplarType` (not served: only 0, none, is accepted).
    #[prost(int32, tag = "10")]
    pub exemplar_type: i32,
}

/// `querier.v1.SelectSeriesResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct SelectSeriesResponse {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<Series>,
}

/// A JSON request body that does not fit its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(pub String);

/// Field access on a JSON object by its JSON name or its proto name.
pub struct JsonMsg<'a>(&'a Map<String, Json>);

impl<'a> JsonMsg<'a> {
    pub fn new(v: &'a Json) -> Result<Self, JsonError> {
        v.as_object()
            .map(JsonMsg)
            .ok_or_else(|| JsonError("the request body must be a JSON object".into()))
    }

    fn get(&self, json_name: &str, proto_name: &str) -> Option<&'a Json> {
        self.0
            .get(json_name)
            .or_else(|| self.0.get(proto_name))
            .filter(|v| !v.is_null())
    }

    pub fn string(&self, json_name: &str, proto_name: &str) -> Result<String, JsonError> {
        match self.get(json_name, proto_name) {
            None => Ok(String::new()),
            Some(Json::String(s)) => Ok(s.clone()),
            Some(_) => Err(JsonError(format!("{json_name} must be a string"))),
        }
    }

    pub fn strings(&self, json_name: &str, proto_name: &str) -> Result<Vec<String>, JsonError> {
        match self.get(json_name, proto_name) {
            None => Ok(Vec::new()),
            Some(Json::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| JsonError(format!("{json_name} must hold strings")))
                })
                .collect(),
            Some(_) => Err(JsonError(format!(
                "{json_name} must be an array of strings"
            ))),
        }
    }

    pub fn opt_i64(&self, json_name: &str, proto_name: &str) -> Result<Option<i64>, JsonError> {
        let bad = || JsonError(format!("{json_name} must be an integer"));
        match self.get(json_name, proto_name) {
            None => Ok(None),
            Some(Json::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Some)
                .ok_or_else(bad),
            Some(Json::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    pub fn i64(&self, json_name: &str, proto_name: &str) -> Result<i64, JsonError> {
        Ok(self.opt_i64(json_name, proto_name)?.unwrap_or(0))
    }

    pub fn f64(&self, json_name: &str, proto_name: &str) -> Result<f64, JsonError> {
        let bad = || JsonError(format!("{json_name} must be a number"));
        match self.get(json_name, proto_name) {
            None => Ok(0.0),
            Some(Json::Number(n)) => n.as_f64().ok_or_else(bad),
            Some(Json::String(s)) => s.trim().parse().map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// An enum by name (from `names`, index = number) or number.
    pub fn opt_enum(
        &self,
        json_name: &str,
        proto_name: &str,
        names: &[&str],
    ) -> Result<Option<i32>, JsonError> {
        match self.get(json_name, proto_name) {
            None => Ok(None),
            Some(Json::String(s)) => names
                .iter()
                .position(|n| n == s)
                .map(|i| Some(i as i32))
                .ok_or_else(|| JsonError(format!("{json_name}: unknown value {s:?}"))),
            Some(Json::Number(n)) => n
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| JsonError(format!("{json_name} must be an enum value"))),
            Some(_) => Err(JsonError(format!("{json_name} must be an enum name"))),
        }
    }

    pub fn stack_trace_selector(
        &self,
        json_name: &str,
        proto_name: &str,
    ) -> Result<Option<StackTraceSelector>, JsonError> {
        let Some(v) = self.get(json_name, proto_name) else {
            return Ok(None);
        };
        let m = JsonMsg::new(v)?;
        let call_site = match m.get("callSite", "call_site") {
            None => Vec::new(),
            Some(Json::Array(a)) => a
                .iter()
                .map(|l| {
                    Ok(Location {
                        name: JsonMsg::new(l)?.string("name", "name")?,
                    })
                })
                .collect::<Result<_, JsonError>>()?,
            Some(_) => return Err(JsonError("callSite must be an array".into())),
        };
        let go_pgo = match m.get("goPgo", "go_pgo") {
            None => None,
            Some(g) => {
                let g = JsonMsg::new(g)?;
                Some(GoPgo {
                    keep_locations: g.i64("keepLocations", "keep_locations")? as u32,
                    aggregate_callees: matches!(
                        g.get("aggregateCallees", "aggregate_callees"),
                        Some(Json::Bool(true))
                    ),
                })
            }
        };
        Ok(Some(StackTraceSelector { call_site, go_pgo }))
    }
}

/// Names of `querier.v1.ProfileFormat`.
pub const PROFILE_FORMATS: &[&str] = &[
    "PROFILE_FORMAT_UNSPECIFIED",
    "PROFILE_FORMAT_FLAMEGRAPH",
    "PROFILE_FORMAT_TREE",
];
/// Names of `types.v1.TimeSeriesAggregationType`.
pub const AGGREGATIONS: &[&str] = &[
    "TIME_SERIES_AGGREGATION_TYPE_SUM",
    "TIME_SERIES_AGGREGATION_TYPE_AVERAGE",
];
/// Names of `types.v1.ExemplarType`.
pub const EXEMPLAR_TYPES: &[&str] = &[
    "EXEMPLAR_TYPE_UNSPECIFIED",
    "EXEMPLAR_TYPE_NONE",
    "EXEMPLAR_TYPE_INDIVIDUAL",
    "EXEMPLAR_TYPE_SPAN",
];

fn pairs_json(labels: &[LabelPair]) -> Json {
    Json::Array(
        labels
            .iter()
            .map(|l| json!({"name": l.name, "value": l.value}))
            .collect(),
    )
}

impl ProfileTypesResponse {
    pub fn to_json(&self) -> Json {
        let types: Vec<Json> = self
            .profile_types
            .iter()
            .map(|t| {
                json!({
                    "ID": t.id, "name": t.name, "sampleType": t.sample_type,
                    "sampleUnit": t.sample_unit, "periodType": t.period_type,
                    "periodUnit": t.period_unit,
                })
            })
            .collect();
        json!({ "profileTypes": types })
    }
}

impl NamesResponse {
    pub fn to_json(&self) -> Json {
        json!({ "names": self.names })
    }
}

impl SeriesResponse {
    pub fn to_json(&self) -> Json {
        let sets: Vec<Json> = self
            .labels_set
            .iter()
            .map(|l| json!({ "labels": pairs_json(&l.labels) }))
            .collect();
        json!({ "labelsSet": sets })
    }
}

impl FlameGraph {
    pub fn to_json(&self) -> Json {
        let levels: Vec<Json> = self
            .levels
            .iter()
            .map(
                |l| json!({ "values": l.values.iter().map(|v| v.to_string()).collect::<Vec<_>>() }),
            )
            .collect();
        json!({
            "names": self.names, "levels": levels,
            "total": self.total.to_string(), "maxSelf": self.max_self.to_string(),
        })
    }
}

impl SelectMergeStacktracesResponse {
    pub fn to_json(&self) -> Json {
        match &self.flamegraph {
            Some(f) => json!({ "flamegraph": f.to_json() }),
            None => json!({}),
        }
    }
}

impl SelectSeriesResponse {
    pub fn to_json(&self) -> Json {
        let series: Vec<Json> = self
            .series
            .iter()
            .map(|s| {
                let points: Vec<Json> = s
                    .points
                    .iter()
                    .map(|p| json!({"value": p.value, "timestamp": p.timestamp.to_string()}))
                    .collect();
                json!({ "labels": pairs_json(&s.labels), "points": points })
            })
            .collect();
        json!({ "series": series })
    }
}

impl GetProfileStatsResponse {
    pub fn to_json(&self) -> Json {
        json!({
            "dataIngested": self.data_ingested,
            "oldestProfileTime": self.oldest_profile_time.to_string(),
            "newestProfileTime": self.newest_profile_time.to_string(),
        })
    }
}

/// The JSON form of a pprof profile (`google.v1.Profile`), for SelectMergeProfile asked in
/// JSON.
pub fn profile_json(p: &ebpf_probe::pprof::Profile) -> Json {
    let vt = |t: &ebpf_probe::pprof::ValueType| json!({"type": t.r#type.to_string(), "unit": t.unit.to_string()});
    json!({
        "sampleType": p.sample_type.iter().map(vt).collect::<Vec<_>>(),
        "sample": p.sample.iter().map(|s| json!({
            "locationId": s.location_id.iter().map(u64::to_string).collect::<Vec<_>>(),
            "value": s.value.iter().map(i64::to_string).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "location": p.location.iter().map(|l| json!({
            "id": l.id.to_string(),
            "line": l.line.iter().map(|ln| json!({
                "functionId": ln.function_id.to_string(), "line": ln.line.to_string(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "function": p.function.iter().map(|f| json!({
            "id": f.id.to_string(), "name": f.name.to_string(),
        })).collect::<Vec<_>>(),
        "stringTable": p.string_table,
        "timeNanos": p.time_nanos.to_string(),
        "periodType": p.period_type.as_ref().map(vt),
        "period": p.period.to_string(),
    })
}

/// Encodes a message into a fresh buffer.
pub fn encode<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}
