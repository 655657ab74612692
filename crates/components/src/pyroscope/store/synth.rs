//! Synthetic CPU profiles shaped like a whole-host `pyroscope.ebpf` push, for the store's
//! tests and benchmarks: a pool of distinct stacks drawn as walks down a call tree (program
//! name as the root frame, shared prefixes, depths of 8 to 40 frames), and per interval a
//! subset of them with skewed sample counts, encoded as gzip'd pprof by the probe's own
//! `ProfileBuilder`. Deterministic for a given seed.

use std::sync::Arc;

use ebpf_probe::pprof::{encode_gzip, ProfileBuilder};
use ebpf_probe::symbolize::{Frame, MappingInfo};

/// A small, fast, deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A pool of distinct stacks (root first).
#[derive(Debug, Clone)]
pub struct StackPool {
    pub stacks: Vec<Vec<Arc<str>>>,
}

impl StackPool {
    /// `n` distinct stacks over `programs` programs and about `functions` function names.
    pub fn new(seed: u64, n: usize, programs: usize, functions: usize) -> StackPool {
        let mut rng = Rng::new(seed);
        let names: Vec<Arc<str>> = (0..functions)
            .map(|i| {
                Arc::from(format!(
                    "{}::module_{}::function_with_a_realistic_name_{i}",
                    ["std", "tokio", "app", "libc", "kernel"][i % 5],
                    i % 97
                ))
            })
            .collect();
        let roots: Vec<Arc<str>> = (0..programs.max(1))
            .map(|i| Arc::from(format!("program-{i}")))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut stacks = Vec::with_capacity(n);
        let mut attempts = 0;
        while stacks.len() < n && attempts < n * 20 {
            attempts += 1;
            let root = rng.below(roots.len() as u64) as usize;
            let depth = 8 + rng.below(33) as usize;
            let mut stack = vec![roots[root].clone()];
            // A walk down a tree: the frame at each depth depends on the program, the depth
            // and a small branching choice, so stacks share long prefixes.
            let mut state = root as u64 * 7919;
            for d in 0..depth {
                let branch = if d < 4 { rng.below(2) } else { rng.below(4) };
                state = state.wrapping_mul(31).wrapping_add(branch + d as u64 * 131);
                stack.push(names[(state % names.len() as u64) as usize].clone());
            }
            if seen.insert(stack.clone()) {
                stacks.push(stack);
            }
        }
        StackPool { stacks }
    }

    /// One interval: `distinct` stacks from the pool (skewed towards the pool's start) with
    /// counts of 1 to a few dozen; returns `(index, count)` pairs.
    pub fn interval(&self, rng: &mut Rng, distinct: usize) -> Vec<(usize, u64)> {
        let mut picked = std::collections::HashMap::new();
        let n = self.stacks.len().max(1) as u64;
        let mut tries = 0;
        while picked.len() < distinct.min(self.stacks.len()) && tries < distinct * 10 {
            tries += 1;
            // Two draws, the smaller kept: lower indexes are hotter.
            let i = rng.below(n).min(rng.below(n)) as usize;
            let count = 1 + (rng.below(100) * rng.below(100)) / 400;
            *picked.entry(i).or_insert(0) += count;
        }
        let mut v: Vec<(usize, u64)> = picked.into_iter().collect();
        v.sort_unstable();
        v
    }

    /// The gzip'd pprof of an interval at `rate` Hz.
    pub fn pprof(
        &self,
        picks: &[(usize, u64)],
        rate: u32,
        time_nanos: i64,
        duration_nanos: i64,
    ) -> Vec<u8> {
        let mapping = Arc::new(MappingInfo {
            start: 0x40_0000,
            limit: 0x80_0000,
            offset: 0,
            file: "/usr/bin/app".into(),
            build_id: None,
        });
        let mut b = ProfileBuilder::new(rate, time_nanos, duration_nanos);
        let mut frames = Vec::new();
        // One address per function name (the builder keys locations by address).
        let mut addrs: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for &(i, count) in picks {
            frames.clear();
            // Leaf first for the builder.
            for name in self.stacks[i].iter().rev() {
                let next = 0x40_0000 + addrs.len() as u64 * 16;
                let address = *addrs.entry(name).or_insert(next);
                frames.push(Frame {
                    address,
                    name: Some(name.to_string()),
                    mapping: Some(mapping.clone()),
                    source: None,
                });
            }
            b.add_stack(&frames, count);
        }
        encode_gzip(&b.build())
    }
}

/// A gzip'd CPU pprof with the given stacks (root first) and counts, at `rate` Hz.
pub fn cpu_profile(stacks: &[(&[&str], u64)], rate: u32, time_nanos: i64) -> Vec<u8> {
    let pool = StackPool {
        stacks: stacks
            .iter()
            .map(|(s, _)| s.iter().map(|f| Arc::from(*f)).collect())
            .collect(),
    };
    let picks: Vec<(usize, u64)> = stacks.iter().enumerate().map(|(i, s)| (i, s.1)).collect();
    pool.pprof(&picks, rate, time_nanos, 15_000_000_000)
}
