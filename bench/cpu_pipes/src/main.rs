//! Issue-port microbenchmarks for the packed Q4 matrix kernel and the bf16 decode loops on the
//! dev VM's Zen 3 (AVX2). Each case is a loop of independent register operations in `asm!`;
//! the time per iteration, against the 4-cycle time of 8 FMAs, says which operations share the
//! FMA pipes. Not part of the workspace: `cargo run --release --manifest-path
//! bench/cpu_pipes/Cargo.toml` (x86-64 with AVX2 only). Results: BENCHMARKS.md, "Ninth session".
#[cfg(target_arch = "x86_64")]
use std::arch::asm;
#[cfg(target_arch = "x86_64")]
use std::time::Instant;

/// Times `$body` (asm text that may use `{p}`, a 16 KiB buffer of ones) over `$iters` loop
/// iterations, best of 5, and prints ns per iteration divided by `$per`.
#[cfg(target_arch = "x86_64")]
macro_rules! bench {
    ($name:expr, $per:expr, $body:expr) => {{
        let iters = 5_000_000u64;
        let buf = vec![1u8; 16384];
        let p = buf.as_ptr();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            // SAFETY: the body reads at most 16 KiB from `p` and writes only vector registers.
            unsafe {
                asm!(
                    "vpxor ymm0, ymm0, ymm0", "vpxor ymm1, ymm1, ymm1", "vpxor ymm2, ymm2, ymm2", "vpxor ymm3, ymm3, ymm3",
                    "vpxor ymm4, ymm4, ymm4", "vpxor ymm5, ymm5, ymm5", "vpxor ymm6, ymm6, ymm6", "vpxor ymm7, ymm7, ymm7",
                    "vpxor ymm8, ymm8, ymm8", "vpxor ymm9, ymm9, ymm9", "vpxor ymm10, ymm10, ymm10", "vpxor ymm11, ymm11, ymm11",
                    "vpxor ymm12, ymm12, ymm12", "vpxor ymm13, ymm13, ymm13", "vpxor ymm14, ymm14, ymm14", "vpxor ymm15, ymm15, ymm15",
                    "2:", $body, "dec {n}", "jnz 2b", "/* {p} */",
                    n = inout(reg) iters => _,
                    p = in(reg) p,
                    out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _,
                    out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                    out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                );
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{:44} {:7.3} ns", $name, best / iters as f64 * 1e9 / $per as f64);
    }};
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("cpu_pipes: x86-64 only");
}

#[cfg(target_arch = "x86_64")]
fn main() {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        eprintln!("cpu_pipes: needs AVX2 and FMA");
        return;
    }
    println!("per loop iteration (8 independent operations of the first kind, plus the others):");
    bench!("8 fma", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vfmadd231ps ymm1, ymm8, ymm9
        vfmadd231ps ymm2, ymm8, ymm9
        vfmadd231ps ymm3, ymm8, ymm9
        vfmadd231ps ymm4, ymm8, ymm9
        vfmadd231ps ymm5, ymm8, ymm9
        vfmadd231ps ymm6, ymm8, ymm9
        vfmadd231ps ymm7, ymm8, ymm9
    ");
    bench!("8 vpmaddubsw", 1, "
        vpmaddubsw ymm0, ymm8, ymm9
        vpmaddubsw ymm1, ymm8, ymm9
        vpmaddubsw ymm2, ymm8, ymm9
        vpmaddubsw ymm3, ymm8, ymm9
        vpmaddubsw ymm4, ymm8, ymm9
        vpmaddubsw ymm5, ymm8, ymm9
        vpmaddubsw ymm6, ymm8, ymm9
        vpmaddubsw ymm7, ymm8, ymm9
    ");
    bench!("8 vpaddw", 1, "
        vpaddw ymm0, ymm0, ymm8
        vpaddw ymm1, ymm1, ymm8
        vpaddw ymm2, ymm2, ymm8
        vpaddw ymm3, ymm3, ymm8
        vpaddw ymm4, ymm4, ymm8
        vpaddw ymm5, ymm5, ymm8
        vpaddw ymm6, ymm6, ymm8
        vpaddw ymm7, ymm7, ymm8
    ");
    bench!("8 vpbroadcastd from memory", 1, "
        vpbroadcastd ymm0, [{p}+0*4]
        vpbroadcastd ymm1, [{p}+1*4]
        vpbroadcastd ymm2, [{p}+2*4]
        vpbroadcastd ymm3, [{p}+3*4]
        vpbroadcastd ymm4, [{p}+4*4]
        vpbroadcastd ymm5, [{p}+5*4]
        vpbroadcastd ymm6, [{p}+6*4]
        vpbroadcastd ymm7, [{p}+7*4]
    ");
    bench!("4 vpmaddubsw + 4 fma", 1, "
        vpmaddubsw ymm10, ymm8, ymm9
        vfmadd231ps ymm0, ymm8, ymm9
        vpmaddubsw ymm11, ymm8, ymm9
        vfmadd231ps ymm1, ymm8, ymm9
        vpmaddubsw ymm12, ymm8, ymm9
        vfmadd231ps ymm2, ymm8, ymm9
        vpmaddubsw ymm13, ymm8, ymm9
        vfmadd231ps ymm3, ymm8, ymm9
    ");
    bench!("8 fma + 8 vpunpcklwd", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vpunpcklwd ymm10, ymm8, ymm9
        vfmadd231ps ymm1, ymm8, ymm9
        vpunpcklwd ymm11, ymm8, ymm9
        vfmadd231ps ymm2, ymm8, ymm9
        vpunpcklwd ymm12, ymm8, ymm9
        vfmadd231ps ymm3, ymm8, ymm9
        vpunpcklwd ymm13, ymm8, ymm9
        vfmadd231ps ymm4, ymm8, ymm9
        vpunpcklwd ymm14, ymm8, ymm9
        vfmadd231ps ymm5, ymm8, ymm9
        vpunpcklwd ymm15, ymm8, ymm9
        vfmadd231ps ymm6, ymm8, ymm9
        vpunpcklwd ymm10, ymm8, ymm9
        vfmadd231ps ymm7, ymm8, ymm9
        vpunpcklwd ymm11, ymm8, ymm9
    ");
    bench!("8 fma + 8 vpunpcklwd from memory", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vpunpcklwd ymm10, ymm8, [{p}+0*32]
        vfmadd231ps ymm1, ymm8, ymm9
        vpunpcklwd ymm11, ymm8, [{p}+1*32]
        vfmadd231ps ymm2, ymm8, ymm9
        vpunpcklwd ymm12, ymm8, [{p}+2*32]
        vfmadd231ps ymm3, ymm8, ymm9
        vpunpcklwd ymm13, ymm8, [{p}+3*32]
        vfmadd231ps ymm4, ymm8, ymm9
        vpunpcklwd ymm14, ymm8, [{p}+4*32]
        vfmadd231ps ymm5, ymm8, ymm9
        vpunpcklwd ymm15, ymm8, [{p}+5*32]
        vfmadd231ps ymm6, ymm8, ymm9
        vpunpcklwd ymm10, ymm8, [{p}+6*32]
        vfmadd231ps ymm7, ymm8, ymm9
        vpunpcklwd ymm11, ymm8, [{p}+7*32]
    ");
    bench!("8 fma + 8 vpslld", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vpslld ymm10, ymm9, 16
        vfmadd231ps ymm1, ymm8, ymm9
        vpslld ymm11, ymm9, 16
        vfmadd231ps ymm2, ymm8, ymm9
        vpslld ymm12, ymm9, 16
        vfmadd231ps ymm3, ymm8, ymm9
        vpslld ymm13, ymm9, 16
        vfmadd231ps ymm4, ymm8, ymm9
        vpslld ymm14, ymm9, 16
        vfmadd231ps ymm5, ymm8, ymm9
        vpslld ymm15, ymm9, 16
        vfmadd231ps ymm6, ymm8, ymm9
        vpslld ymm10, ymm9, 16
        vfmadd231ps ymm7, ymm8, ymm9
        vpslld ymm11, ymm9, 16
    ");
    bench!("8 fma + 8 vpand", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vpand ymm10, ymm8, ymm9
        vfmadd231ps ymm1, ymm8, ymm9
        vpand ymm11, ymm8, ymm9
        vfmadd231ps ymm2, ymm8, ymm9
        vpand ymm12, ymm8, ymm9
        vfmadd231ps ymm3, ymm8, ymm9
        vpand ymm13, ymm8, ymm9
        vfmadd231ps ymm4, ymm8, ymm9
        vpand ymm14, ymm8, ymm9
        vfmadd231ps ymm5, ymm8, ymm9
        vpand ymm15, ymm8, ymm9
        vfmadd231ps ymm6, ymm8, ymm9
        vpand ymm10, ymm8, ymm9
        vfmadd231ps ymm7, ymm8, ymm9
        vpand ymm11, ymm8, ymm9
    ");
    bench!("8 fma + 8 vbroadcastss from memory", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vbroadcastss ymm10, [{p}+0*4]
        vfmadd231ps ymm1, ymm8, ymm9
        vbroadcastss ymm11, [{p}+1*4]
        vfmadd231ps ymm2, ymm8, ymm9
        vbroadcastss ymm12, [{p}+2*4]
        vfmadd231ps ymm3, ymm8, ymm9
        vbroadcastss ymm13, [{p}+3*4]
        vfmadd231ps ymm4, ymm8, ymm9
        vbroadcastss ymm14, [{p}+4*4]
        vfmadd231ps ymm5, ymm8, ymm9
        vbroadcastss ymm15, [{p}+5*4]
        vfmadd231ps ymm6, ymm8, ymm9
        vbroadcastss ymm10, [{p}+6*4]
        vfmadd231ps ymm7, ymm8, ymm9
        vbroadcastss ymm11, [{p}+7*4]
    ");
    bench!("8 fma + 8 vpmovzxwd from memory", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vpmovzxwd ymm10, [{p}+0*16]
        vfmadd231ps ymm1, ymm8, ymm9
        vpmovzxwd ymm11, [{p}+1*16]
        vfmadd231ps ymm2, ymm8, ymm9
        vpmovzxwd ymm12, [{p}+2*16]
        vfmadd231ps ymm3, ymm8, ymm9
        vpmovzxwd ymm13, [{p}+3*16]
        vfmadd231ps ymm4, ymm8, ymm9
        vpmovzxwd ymm14, [{p}+4*16]
        vfmadd231ps ymm5, ymm8, ymm9
        vpmovzxwd ymm15, [{p}+5*16]
        vfmadd231ps ymm6, ymm8, ymm9
        vpmovzxwd ymm10, [{p}+6*16]
        vfmadd231ps ymm7, ymm8, ymm9
        vpmovzxwd ymm11, [{p}+7*16]
    ");
    bench!("8 fma + 8 vpaddw", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vpaddw ymm10, ymm8, ymm9
        vfmadd231ps ymm1, ymm8, ymm9
        vpaddw ymm11, ymm8, ymm9
        vfmadd231ps ymm2, ymm8, ymm9
        vpaddw ymm12, ymm8, ymm9
        vfmadd231ps ymm3, ymm8, ymm9
        vpaddw ymm13, ymm8, ymm9
        vfmadd231ps ymm4, ymm8, ymm9
        vpaddw ymm14, ymm8, ymm9
        vfmadd231ps ymm5, ymm8, ymm9
        vpaddw ymm15, ymm8, ymm9
        vfmadd231ps ymm6, ymm8, ymm9
        vpaddw ymm10, ymm8, ymm9
        vfmadd231ps ymm7, ymm8, ymm9
        vpaddw ymm11, ymm8, ymm9
    ");
    bench!("8 fma + 8 vpbroadcastd from memory", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vpbroadcastd ymm10, [{p}+0*4]
        vfmadd231ps ymm1, ymm8, ymm9
        vpbroadcastd ymm11, [{p}+1*4]
        vfmadd231ps ymm2, ymm8, ymm9
        vpbroadcastd ymm12, [{p}+2*4]
        vfmadd231ps ymm3, ymm8, ymm9
        vpbroadcastd ymm13, [{p}+3*4]
        vfmadd231ps ymm4, ymm8, ymm9
        vpbroadcastd ymm14, [{p}+4*4]
        vfmadd231ps ymm5, ymm8, ymm9
        vpbroadcastd ymm15, [{p}+5*4]
        vfmadd231ps ymm6, ymm8, ymm9
        vpbroadcastd ymm10, [{p}+6*4]
        vfmadd231ps ymm7, ymm8, ymm9
        vpbroadcastd ymm11, [{p}+7*4]
    ");
    bench!("8 fma + 8 vpermd", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vpermd ymm10, ymm8, ymm9
        vfmadd231ps ymm1, ymm8, ymm9
        vpermd ymm11, ymm8, ymm9
        vfmadd231ps ymm2, ymm8, ymm9
        vpermd ymm12, ymm8, ymm9
        vfmadd231ps ymm3, ymm8, ymm9
        vpermd ymm13, ymm8, ymm9
        vfmadd231ps ymm4, ymm8, ymm9
        vpermd ymm14, ymm8, ymm9
        vfmadd231ps ymm5, ymm8, ymm9
        vpermd ymm15, ymm8, ymm9
        vfmadd231ps ymm6, ymm8, ymm9
        vpermd ymm10, ymm8, ymm9
        vfmadd231ps ymm7, ymm8, ymm9
        vpermd ymm11, ymm8, ymm9
    ");
    bench!("8 fma + 8 vpshufb", 1, "
        vfmadd231ps ymm0, ymm8, ymm9
        vpshufb ymm10, ymm8, ymm9
        vfmadd231ps ymm1, ymm8, ymm9
        vpshufb ymm11, ymm8, ymm9
        vfmadd231ps ymm2, ymm8, ymm9
        vpshufb ymm12, ymm8, ymm9
        vfmadd231ps ymm3, ymm8, ymm9
        vpshufb ymm13, ymm8, ymm9
        vfmadd231ps ymm4, ymm8, ymm9
        vpshufb ymm14, ymm8, ymm9
        vfmadd231ps ymm5, ymm8, ymm9
        vpshufb ymm15, ymm8, ymm9
        vfmadd231ps ymm6, ymm8, ymm9
        vpshufb ymm10, ymm8, ymm9
        vfmadd231ps ymm7, ymm8, ymm9
        vpshufb ymm11, ymm8, ymm9
    ");
    bench!("Q4_1 row x block (as packed.rs)", 4, "
        vpbroadcastd ymm12, [{p}+0]
        vpbroadcastd ymm13, [{p}+4]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpbroadcastd ymm12, [{p}+8]
        vpbroadcastd ymm13, [{p}+12]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpbroadcastd ymm12, [{p}+16]
        vpbroadcastd ymm13, [{p}+20]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpbroadcastd ymm12, [{p}+24]
        vpbroadcastd ymm13, [{p}+28]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpmaddwd ymm12, ymm4, ymm10
        vcvtdq2ps ymm12, ymm12
        vbroadcastss ymm13, [{p}+4096]
        vmulps ymm13, ymm13, ymm11
        vfmadd231ps ymm0, ymm12, ymm13
        vbroadcastss ymm13, [{p}+4100]
        vfmadd231ps ymm0, ymm13, ymm14
        vpxor ymm4, ymm4, ymm4
        vpbroadcastd ymm12, [{p}+64]
        vpbroadcastd ymm13, [{p}+68]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpbroadcastd ymm12, [{p}+72]
        vpbroadcastd ymm13, [{p}+76]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpbroadcastd ymm12, [{p}+80]
        vpbroadcastd ymm13, [{p}+84]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpbroadcastd ymm12, [{p}+88]
        vpbroadcastd ymm13, [{p}+92]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpmaddwd ymm12, ymm5, ymm10
        vcvtdq2ps ymm12, ymm12
        vbroadcastss ymm13, [{p}+4104]
        vmulps ymm13, ymm13, ymm11
        vfmadd231ps ymm1, ymm12, ymm13
        vbroadcastss ymm13, [{p}+4108]
        vfmadd231ps ymm1, ymm13, ymm14
        vpxor ymm5, ymm5, ymm5
        vpbroadcastd ymm12, [{p}+128]
        vpbroadcastd ymm13, [{p}+132]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpbroadcastd ymm12, [{p}+136]
        vpbroadcastd ymm13, [{p}+140]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpbroadcastd ymm12, [{p}+144]
        vpbroadcastd ymm13, [{p}+148]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpbroadcastd ymm12, [{p}+152]
        vpbroadcastd ymm13, [{p}+156]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpmaddwd ymm12, ymm6, ymm10
        vcvtdq2ps ymm12, ymm12
        vbroadcastss ymm13, [{p}+4112]
        vmulps ymm13, ymm13, ymm11
        vfmadd231ps ymm2, ymm12, ymm13
        vbroadcastss ymm13, [{p}+4116]
        vfmadd231ps ymm2, ymm13, ymm14
        vpxor ymm6, ymm6, ymm6
        vpbroadcastd ymm12, [{p}+192]
        vpbroadcastd ymm13, [{p}+196]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpbroadcastd ymm12, [{p}+200]
        vpbroadcastd ymm13, [{p}+204]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpbroadcastd ymm12, [{p}+208]
        vpbroadcastd ymm13, [{p}+212]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpbroadcastd ymm12, [{p}+216]
        vpbroadcastd ymm13, [{p}+220]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpmaddwd ymm12, ymm7, ymm10
        vcvtdq2ps ymm12, ymm12
        vbroadcastss ymm13, [{p}+4120]
        vmulps ymm13, ymm13, ymm11
        vfmadd231ps ymm3, ymm12, ymm13
        vbroadcastss ymm13, [{p}+4124]
        vfmadd231ps ymm3, ymm13, ymm14
        vpxor ymm7, ymm7, ymm7
    ");
    bench!("  without the 8 activation broadcasts", 4, "
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpmaddwd ymm12, ymm4, ymm10
        vcvtdq2ps ymm12, ymm12
        vbroadcastss ymm13, [{p}+4096]
        vmulps ymm13, ymm13, ymm11
        vfmadd231ps ymm0, ymm12, ymm13
        vbroadcastss ymm13, [{p}+4100]
        vfmadd231ps ymm0, ymm13, ymm14
        vpxor ymm4, ymm4, ymm4
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpmaddwd ymm12, ymm5, ymm10
        vcvtdq2ps ymm12, ymm12
        vbroadcastss ymm13, [{p}+4104]
        vmulps ymm13, ymm13, ymm11
        vfmadd231ps ymm1, ymm12, ymm13
        vbroadcastss ymm13, [{p}+4108]
        vfmadd231ps ymm1, ymm13, ymm14
        vpxor ymm5, ymm5, ymm5
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpmaddwd ymm12, ymm6, ymm10
        vcvtdq2ps ymm12, ymm12
        vbroadcastss ymm13, [{p}+4112]
        vmulps ymm13, ymm13, ymm11
        vfmadd231ps ymm2, ymm12, ymm13
        vbroadcastss ymm13, [{p}+4116]
        vfmadd231ps ymm2, ymm13, ymm14
        vpxor ymm6, ymm6, ymm6
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpmaddubsw ymm12, ymm8, ymm15
        vpmaddubsw ymm13, ymm9, ymm15
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpmaddwd ymm12, ymm7, ymm10
        vcvtdq2ps ymm12, ymm12
        vbroadcastss ymm13, [{p}+4120]
        vmulps ymm13, ymm13, ymm11
        vfmadd231ps ymm3, ymm12, ymm13
        vbroadcastss ymm13, [{p}+4124]
        vfmadd231ps ymm3, ymm13, ymm14
        vpxor ymm7, ymm7, ymm7
    ");
    bench!("  without the scaling", 4, "
        vpbroadcastd ymm12, [{p}+0]
        vpbroadcastd ymm13, [{p}+4]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpbroadcastd ymm12, [{p}+8]
        vpbroadcastd ymm13, [{p}+12]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpbroadcastd ymm12, [{p}+16]
        vpbroadcastd ymm13, [{p}+20]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpbroadcastd ymm12, [{p}+24]
        vpbroadcastd ymm13, [{p}+28]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpxor ymm4, ymm4, ymm4
        vpbroadcastd ymm12, [{p}+64]
        vpbroadcastd ymm13, [{p}+68]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpbroadcastd ymm12, [{p}+72]
        vpbroadcastd ymm13, [{p}+76]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpbroadcastd ymm12, [{p}+80]
        vpbroadcastd ymm13, [{p}+84]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpbroadcastd ymm12, [{p}+88]
        vpbroadcastd ymm13, [{p}+92]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpxor ymm5, ymm5, ymm5
        vpbroadcastd ymm12, [{p}+128]
        vpbroadcastd ymm13, [{p}+132]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpbroadcastd ymm12, [{p}+136]
        vpbroadcastd ymm13, [{p}+140]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpbroadcastd ymm12, [{p}+144]
        vpbroadcastd ymm13, [{p}+148]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpbroadcastd ymm12, [{p}+152]
        vpbroadcastd ymm13, [{p}+156]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpxor ymm6, ymm6, ymm6
        vpbroadcastd ymm12, [{p}+192]
        vpbroadcastd ymm13, [{p}+196]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpbroadcastd ymm12, [{p}+200]
        vpbroadcastd ymm13, [{p}+204]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpbroadcastd ymm12, [{p}+208]
        vpbroadcastd ymm13, [{p}+212]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpbroadcastd ymm12, [{p}+216]
        vpbroadcastd ymm13, [{p}+220]
        vpmaddubsw ymm12, ymm8, ymm12
        vpmaddubsw ymm13, ymm9, ymm13
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpxor ymm7, ymm7, ymm7
    ");
    bench!("  activations pre-broadcast in memory", 4, "
        vpmaddubsw ymm12, ymm8, [{p}+0]
        vpmaddubsw ymm13, ymm9, [{p}+32]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+64]
        vpmaddubsw ymm13, ymm9, [{p}+96]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+128]
        vpmaddubsw ymm13, ymm9, [{p}+160]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+192]
        vpmaddubsw ymm13, ymm9, [{p}+224]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm4, ymm4, ymm12
        vpmaddwd ymm12, ymm4, ymm10
        vcvtdq2ps ymm12, ymm12
        vmulps ymm13, ymm11, [{p}+256]
        vfmadd231ps ymm0, ymm12, ymm13
        vfmadd231ps ymm0, ymm14, [{p}+288]
        vpxor ymm4, ymm4, ymm4
        vpmaddubsw ymm12, ymm8, [{p}+320]
        vpmaddubsw ymm13, ymm9, [{p}+352]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+384]
        vpmaddubsw ymm13, ymm9, [{p}+416]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+448]
        vpmaddubsw ymm13, ymm9, [{p}+480]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+512]
        vpmaddubsw ymm13, ymm9, [{p}+544]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm5, ymm5, ymm12
        vpmaddwd ymm12, ymm5, ymm10
        vcvtdq2ps ymm12, ymm12
        vmulps ymm13, ymm11, [{p}+576]
        vfmadd231ps ymm1, ymm12, ymm13
        vfmadd231ps ymm1, ymm14, [{p}+608]
        vpxor ymm5, ymm5, ymm5
        vpmaddubsw ymm12, ymm8, [{p}+640]
        vpmaddubsw ymm13, ymm9, [{p}+672]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+704]
        vpmaddubsw ymm13, ymm9, [{p}+736]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+768]
        vpmaddubsw ymm13, ymm9, [{p}+800]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+832]
        vpmaddubsw ymm13, ymm9, [{p}+864]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm6, ymm6, ymm12
        vpmaddwd ymm12, ymm6, ymm10
        vcvtdq2ps ymm12, ymm12
        vmulps ymm13, ymm11, [{p}+896]
        vfmadd231ps ymm2, ymm12, ymm13
        vfmadd231ps ymm2, ymm14, [{p}+928]
        vpxor ymm6, ymm6, ymm6
        vpmaddubsw ymm12, ymm8, [{p}+960]
        vpmaddubsw ymm13, ymm9, [{p}+992]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+1024]
        vpmaddubsw ymm13, ymm9, [{p}+1056]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+1088]
        vpmaddubsw ymm13, ymm9, [{p}+1120]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpmaddubsw ymm12, ymm8, [{p}+1152]
        vpmaddubsw ymm13, ymm9, [{p}+1184]
        vpaddw ymm12, ymm12, ymm13
        vpaddw ymm7, ymm7, ymm12
        vpmaddwd ymm12, ymm7, ymm10
        vcvtdq2ps ymm12, ymm12
        vmulps ymm13, ymm11, [{p}+1216]
        vfmadd231ps ymm3, ymm12, ymm13
        vfmadd231ps ymm3, ymm14, [{p}+1248]
        vpxor ymm7, ymm7, ymm7
    ");
    bench!("empty loop", 1, "nop");
}
