//! Single-thread speed of the f32 matmul kernel on the encoder's four projection shapes
//! (all-MiniLM-L6-v2: hidden 384, intermediate 1536), `m` rows at a time, as GFLOP/s, and
//! the core's FMA peak (`peak`: 24 independent register chains), to tell how far from it the kernel is.
//! `cargo run --release --example kernel_speed [m] [repeats] [lib|peak]` (defaults 2048, 5, lib); medians.

use std::time::Instant;

use triage::embed::kernels::{self, Epilogue, OutMat, PackedF32};

fn main() {
    let mut a = std::env::args().skip(1);
    let m: usize = a.next().map_or(2048, |s| s.parse().expect("m"));
    let repeats: usize = a.next().map_or(5, |s| s.parse().expect("repeats"));
    let which: String = a.next().unwrap_or_else(|| "lib".into());
    #[cfg(target_arch = "x86_64")]
    if which == "peak" {
        assert!(kernels::avx512(), "the peak loop needs AVX-512");
        let t = Instant::now();
        let iters = 50_000_000u64;
        let v = unsafe { exp::peak(iters) };
        let s = t.elapsed().as_secs_f64();
        println!("peak: {:.1} GFLOP/s ({v})", (iters * 24 * 32) as f64 / s / 1e9);
        return;
    }
    let shapes = [
        ("qkv", 384, 1152, Epilogue::Bias),
        ("attn_out", 384, 384, Epilogue::Bias),
        ("inter+gelu", 384, 1536, Epilogue::BiasGelu),
        ("out", 1536, 384, Epilogue::Bias),
    ];
    for variant in which.split(',') {
        let mut total_flop = 0.0;
        let mut total_s = 0.0;
        for (name, k, n, ep) in shapes {
            let x = kernels::pseudo_random(m * k, 1);
            let w_oi = kernels::pseudo_random(n * k, 2);
            let w = PackedF32::from_out_in(&w_oi, n, k);
            let bias = kernels::pseudo_random(n, 3);
            let mut out = vec![0f32; m * n];
            let mut times = Vec::new();
            for _ in 0..repeats {
                let o = OutMat {
                    ptr: out.as_mut_ptr(),
                    ld: n,
                };
                let t = Instant::now();
                match variant {
                    "lib" => kernels::matmul_panels(&x, k, m, &w, &bias, ep, 0..w.panels(), o),
                    v => panic!("unknown variant {v}"),
                }
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let s = times[times.len() / 2];
            let flop = 2.0 * (m * k * n) as f64;
            total_flop += flop;
            total_s += s;
            println!(
                "{variant:>6} {name:>10} m={m} k={k} n={n}: {:.3} ms, {:.1} GFLOP/s",
                s * 1e3,
                flop / s / 1e9
            );
            std::hint::black_box(&out);
        }
        println!(
            "{{\"variant\":\"{variant}\",\"m\":{m},\"gflops_all\":{:.1},\"isa\":\"{}\"}}",
            total_flop / total_s / 1e9,
            kernels::isa()
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod exp {
    use std::arch::x86_64::*;

    /// 24 independent FMA chains in registers: the core's FMA peak.
    #[target_feature(enable = "avx512f,avx512dq,avx512vl,fma")]
    pub unsafe fn peak(iters: u64) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); 24];
        let a = _mm512_set1_ps(std::hint::black_box(0.999));
        let b = _mm512_set1_ps(std::hint::black_box(0.001));
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for v in acc {
            s = _mm512_add_ps(s, v);
        }
        _mm512_reduce_add_ps(s)
    }
}
