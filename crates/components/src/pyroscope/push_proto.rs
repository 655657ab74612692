//! Pyroscope's push protocol messages, written by hand as prost messages from the published
//! field numbers of `push.v1.PushRequest` and `types.v1.LabelPair`, plus the Connect unary
//! path and content type they travel with. Used for encoding by `pyroscope.write` and for
//! decoding by tests that play the server.

use prost::Message;

/// Path of the Connect unary push call, appended to an endpoint's base URL.
pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";
/// Content type of a Connect unary call whose body is a binary protobuf message.
pub const CONTENT_TYPE: &str = "application/proto";

/// `push.v1.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    /// Series to push, each a label set with its raw profiles.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.RawProfileSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `push.v1.RawSample`.
#[derive(Clone, PartialEq, Message)]
pub struct RawSample {
    /// A gzipped pprof profile.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// Unique identifier of the profile (`ID` in the .proto file).
    #[prost(string, tag = "2")]
    pub id: String,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

impl PushRequest {
    /// Encodes the request into a fresh buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes a request body (what a Pyroscope server does on receipt).
    pub fn from_bytes(buf: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_layout_matches_field_numbers() {
        let req = PushRequest {
            series: vec![RawProfileSeries {
                labels: vec![LabelPair {
                    name: "a".into(),
                    value: "b".into(),
                }],
                samples: vec![RawSample {
                    raw_profile: vec![0xff],
                    id: "x".into(),
                }],
            }],
        };
        let bytes = req.to_bytes();
        // series(1, len) { labels(1, len) { name(1)="a", value(2)="b" }, samples(2, len) { raw(1)=ff, id(2)="x" } }
        let want: Vec<u8> = vec![
            0x0a, 16, // field 1, length-delimited
            0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b', // labels
            0x12, 6, 0x0a, 1, 0xff, 0x12, 1, b'x', // samples
        ];
        assert_eq!(bytes, want);
        assert_eq!(PushRequest::from_bytes(&bytes).unwrap(), req);
    }
}
