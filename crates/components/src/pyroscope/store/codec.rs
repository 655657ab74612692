//! The compact binary forms `pyroscope.store` keeps in its database: an interval's samples (one
//! `profiles.data` blob: chunk-local stack IDs with their values) and a chunk's stack nodes (one
//! `stack_blocks.data` blob: each new node's parent and frame). Both are LEB128 varints: sorted
//! stack IDs are stored as gaps and values divided by their common divisor (the sampling
//! period, for CPU profiles), so a typical sample takes two or three bytes and decoding is a
//! tight loop with no allocation per sample.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-rotate hasher for the store's own integer keys (node and frame IDs): SipHash's
/// protection against chosen keys buys nothing there and costs a third of each lookup.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A 128-bit key for a stack (frame IDs, root first): two independently mixed 64-bit lanes,
/// so that distinct stacks of one chunk (at most a few million) do not collide in practice.
pub fn stack_key(frames: &[u32]) -> u128 {
    let mut a = 0x243f_6a88_85a3_08d3u64;
    let mut b = 0x1319_8a2e_0370_7344u64 ^ frames.len() as u64;
    for &f in frames {
        let f = u64::from(f);
        a = (a.rotate_left(5) ^ f).wrapping_mul(0x517c_c1b7_2722_0a95);
        b = (b ^ f).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(23);
    }
    (u128::from(a) << 64) | u128::from(b)
}

/// Format tag of a samples blob (first byte).
const SAMPLES_V1: u8 = 1;
/// Format tag of a stack-node block (first byte).
const NODES_V1: u8 = 1;

/// Why a stored blob could not be decoded (a damaged database).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("stored data is truncated")]
    Truncated,
    #[error("stored data has unknown format {0}")]
    Format(u8),
    #[error("stored data is inconsistent: {0}")]
    Invalid(&'static str),
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A reader over varint-encoded bytes.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn uvarint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = *self.buf.get(self.pos).ok_or(CodecError::Truncated)?;
            self.pos += 1;
            if shift >= 64 {
                return Err(CodecError::Invalid("varint too long"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Encodes `(stack ID, value)` pairs (any order, IDs unique) as a samples blob.
pub fn encode_samples(samples: &mut [(u32, i64)]) -> Vec<u8> {
    samples.sort_unstable_by_key(|s| s.0);
    let scale = samples
        .iter()
        .fold(0u64, |g, s| gcd(g, s.1.unsigned_abs()))
        .max(1);
    let mut out = Vec::with_capacity(2 + samples.len() * 3);
    out.push(SAMPLES_V1);
    put_uvarint(&mut out, samples.len() as u64);
    put_uvarint(&mut out, scale);
    let mut prev = 0u32;
    for &(id, v) in samples.iter() {
        put_uvarint(&mut out, u64::from(id - prev));
        prev = id;
        // The scale divides every value exactly.
        put_uvarint(&mut out, zigzag(v / scale as i64));
    }
    out
}

/// Calls `f(stack ID, value)` for every sample of a blob, in ID order.
pub fn decode_samples(blob: &[u8], mut f: impl FnMut(u32, i64)) -> Result<(), CodecError> {
    let mut c = Cursor::new(blob);
    match c.byte()? {
        SAMPLES_V1 => {}
        other => return Err(CodecError::Format(other)),
    }
    let n = c.uvarint()?;
    let scale = i64::try_from(c.uvarint()?).map_err(|_| CodecError::Invalid("scale"))?;
    let mut id = 0u64;
    for _ in 0..n {
        id += c.uvarint()?;
        let id32 = u32::try_from(id).map_err(|_| CodecError::Invalid("stack id"))?;
        f(id32, unzigzag(c.uvarint()?).wrapping_mul(scale));
    }
    Ok(())
}

/// Encodes the nodes `first_id..` of a chunk's stack tree, each `(parent, frame)`; parents are
/// stored as the distance back from the node (a parent always has a smaller ID).
pub fn encode_nodes(first_id: u32, nodes: &[(u32, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + nodes.len() * 3);
    out.push(NODES_V1);
    put_uvarint(&mut out, nodes.len() as u64);
    for (i, &(parent, frame)) in nodes.iter().enumerate() {
        let id = first_id + i as u32;
        put_uvarint(&mut out, u64::from(id - parent));
        put_uvarint(&mut out, u64::from(frame));
    }
    out
}

/// Decodes a node block starting at `first_id`, appending `(parent, frame)` to `out`.
pub fn decode_nodes(
    first_id: u32,
    blob: &[u8],
    out: &mut Vec<(u32, u32)>,
) -> Result<(), CodecError> {
    let mut c = Cursor::new(blob);
    match c.byte()? {
        NODES_V1 => {}
        other => return Err(CodecError::Format(other)),
    }
    let n = c.uvarint()?;
    for i in 0..n {
        let id = u64::from(first_id) + i;
        let back = c.uvarint()?;
        if back == 0 || back > id {
            return Err(CodecError::Invalid("stack node parent"));
        }
        let frame = u32::try_from(c.uvarint()?).map_err(|_| CodecError::Invalid("frame id"))?;
        out.push(((id - back) as u32, frame));
    }
    if !c.done() {
        return Err(CodecError::Invalid("trailing bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_round_trip_with_their_common_divisor() {
        let period = 10_309_278i64;
        let mut s = vec![
            (900, 3 * period),
            (7, period),
            (8, 120 * period),
            (100_000, 0),
        ];
        let blob = encode_samples(&mut s);
        // tag, n, scale (4 bytes), then gaps and counts of 1-2 bytes each
        assert!(blob.len() <= 3 + 4 + 4 * 4, "{} bytes", blob.len());
        let mut got = Vec::new();
        decode_samples(&blob, |id, v| got.push((id, v))).unwrap();
        assert_eq!(
            got,
            vec![
                (7, period),
                (8, 120 * period),
                (900, 3 * period),
                (100_000, 0)
            ]
        );
        let mut neg = vec![(1, -5), (2, 7)];
        let blob = encode_samples(&mut neg);
        let mut got = Vec::new();
        decode_samples(&blob, |id, v| got.push((id, v))).unwrap();
        assert_eq!(got, vec![(1, -5), (2, 7)]);
    }

    #[test]
    fn damaged_blobs_are_errors() {
        let blob = encode_samples(&mut [(1, 5), (2, 7)]);
        assert_eq!(
            decode_samples(&blob[..blob.len() - 1], |_, _| {}),
            Err(CodecError::Truncated)
        );
        assert_eq!(decode_samples(&[9], |_, _| {}), Err(CodecError::Format(9)));
        let nodes = encode_nodes(5, &[(0, 3), (5, 4), (6, 1)]);
        let mut out = Vec::new();
        decode_nodes(5, &nodes, &mut out).unwrap();
        assert_eq!(out, vec![(0, 3), (5, 4), (6, 1)]);
        // Decoded at a lower first ID the parents would point forward.
        assert!(decode_nodes(0, &nodes, &mut Vec::new()).is_err());
    }
}
