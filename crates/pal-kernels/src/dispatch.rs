//! Which implementation runs an attention op: the fused kernel reading the pages directly, or
//! gather-then-dense (copy each sequence's pages into contiguous K/V, then the same kernel over
//! the copy). [`Dispatch::Auto`] follows the crossovers measured in BENCHMARKS.md;
//! [`Dispatch::Force`] lets the caller pick (to compare, to debug, or where their own
//! measurements disagree).
//!
//! CPU entry points live here ([`paged_decode`], [`paged_prefill`]); the CUDA decode step takes a
//! [`Dispatch`] when it is planned (`cuda::CudaDecodeStep`), because its gather path needs a
//! contiguous workspace allocated ahead of the step.

use crate::{cpu, gather, DecodeArgs, DecodePlan, PrefillArgs, PrefillPlan};
use pal_core::{Element, PalError, Result};
use std::str::FromStr;

/// An implementation of an attention op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionPath {
    /// The fused kernel over the paged pool.
    Fused,
    /// Gather the pages into contiguous K/V, then dense attention over the copy.
    Gather,
}

/// The ops a dispatch decides for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Decode,
    Prefill,
}

/// The backends a dispatch decides for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
}

/// How the path of an op is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// From the measured crossovers (see [`Dispatch::path`]).
    #[default]
    Auto,
    /// Always this path.
    Force(AttentionPath),
}

impl Dispatch {
    /// The path `op` takes on `backend`.
    ///
    /// The crossovers behind `Auto`, all from BENCHMARKS.md: no measured shape has the gather
    /// path ahead, so `Auto` is the fused kernel everywhere. CPU decode: fused 1.86-2.41x gather
    /// (B 1-8, 4k-32k tokens). CPU prefill: tie within noise (1.00-1.01x; fused saves the copy's
    /// memory). CUDA decode (H100, B 1-32, 1k-32k, three head shapes): fused 1.39-3.15x gather.
    /// CUDA prefill (H100 and H200): fused 0.99-1.35x gather, the cells under 1.0 within 1%,
    /// i.e. noise, and the copy's memory saved. Gather reads every K/V byte once more and writes it
    /// once, so it can only win where the fused kernel's scattered reads cost more than a copy;
    /// where a future measurement shows that, the rule goes here.
    pub fn path(self, _backend: Backend, _op: Op) -> AttentionPath {
        match self {
            Dispatch::Force(p) => p,
            Dispatch::Auto => AttentionPath::Fused,
        }
    }
}

impl FromStr for Dispatch {
    type Err = PalError;
    /// `auto`, `fused` or `gather`.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Dispatch::Auto),
            "fused" => Ok(Dispatch::Force(AttentionPath::Fused)),
            "gather" => Ok(Dispatch::Force(AttentionPath::Gather)),
            _ => Err(PalError::invalid("dispatch", format!("expected auto, fused or gather, got {s:?}"))),
        }
    }
}

/// Decode on the CPU through the path `dispatch` picks; returns the path taken. `plan` is used by
/// the fused path (the gather path plans its dense pass itself).
pub fn paged_decode<Q: Element, KV: Element>(
    a: &DecodeArgs<'_, Q, KV>,
    plan: &DecodePlan,
    dispatch: Dispatch,
    out: &mut [Q],
) -> Result<AttentionPath> {
    let path = dispatch.path(Backend::Cpu, Op::Decode);
    match path {
        AttentionPath::Fused => cpu::paged_decode(a, plan, out)?,
        AttentionPath::Gather => gather::paged_decode(a, out)?,
    }
    Ok(path)
}

/// Prefill on the CPU through the path `dispatch` picks; returns the path taken.
pub fn paged_prefill<Q: Element, KV: Element>(
    a: &PrefillArgs<'_, Q, KV>,
    plan: &PrefillPlan,
    dispatch: Dispatch,
    out: &mut [Q],
) -> Result<AttentionPath> {
    let path = dispatch.path(Backend::Cpu, Op::Prefill);
    match path {
        AttentionPath::Fused => cpu::paged_prefill(a, plan, out)?,
        AttentionPath::Gather => gather::paged_prefill(a, out)?,
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_fused_and_force_wins() {
        for b in [Backend::Cpu, Backend::Cuda] {
            for op in [Op::Decode, Op::Prefill] {
                assert_eq!(Dispatch::Auto.path(b, op), AttentionPath::Fused);
                assert_eq!(Dispatch::Force(AttentionPath::Gather).path(b, op), AttentionPath::Gather);
            }
        }
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!("Gather".parse::<Dispatch>().unwrap(), Dispatch::Force(AttentionPath::Gather));
        assert_eq!("auto".parse::<Dispatch>().unwrap(), Dispatch::Auto);
        let e = "fast".parse::<Dispatch>().unwrap_err().to_string();
        assert!(e.contains("dispatch") && e.contains("fast"), "{e}");
    }
}
