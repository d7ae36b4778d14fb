//! f32 matrix multiply against weights packed once at load: `y = x @ W (+ bias) (then GELU)`.
//!
//! `W` (`[k, n]`, i.e. a PyTorch `[out, in]` weight transposed) is stored as column panels of
//! [`NR`] = 32 columns, each panel `k` rows of 32 contiguous floats, so the micro-kernel reads the
//! panel sequentially and never repacks per call. The micro-kernel holds an `MR x 32` (14 x 32) tile of the
//! output in 2 x `MR` AVX-512 registers and streams `x`'s rows (each element broadcast into an
//! FMA), then adds the bias (and applies GELU) while the tile is still hot. On CPUs with AVX2 and
//! FMA but no AVX-512 (AMD Zen 1-3, older Intel), a `6 x 16` AVX2 tile walks each panel as two
//! 16-column halves (12 accumulators, 2 weight registers and a broadcast: 15 of the 16 `ymm`
//! registers), same packing; a portable loop serves everything else (all chosen at run time). The caller chooses which panels to
//! compute, so threads split a projection by columns without splitting any dot product: results
//! do not depend on the thread count.

/// Columns per packed panel (two 16-float registers).
pub const NR: usize = 32;
/// Output rows per micro-tile: 14 x 2 accumulators, 2 weight registers and a broadcast use 31
/// of the 32 `zmm` registers; each weight row loaded serves 14 rows (12-15% faster than 8 rows on
/// an Intel Xeon family 6 model 207, single-thread micro-benchmark of the three projection shapes).
pub const MR: usize = 14;
/// Rows of `x` per outer block (kept in cache while every panel passes over them): 5 micro-tiles.
const MC: usize = 70;

/// A `[k, n]` weight in panel layout; `n` is padded to a multiple of [`NR`] with zero columns.
pub struct PackedF32 {
    pub k: usize,
    pub n: usize,
    data: Vec<f32>,
}

impl PackedF32 {
    /// Packs a PyTorch-layout weight `[n, k]` (row `j` holds output column `j`'s input weights).
    pub fn from_out_in(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight is not [{n}, {k}]");
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for j in 0..n {
            let (p, c) = (j / NR, j % NR);
            let base = p * k * NR + c;
            for (kk, &v) in w[j * k..(j + 1) * k].iter().enumerate() {
                data[base + kk * NR] = v;
            }
        }
        Self { k, n, data }
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..(p + 1) * self.k * NR]
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// What happens to each output element after the dot product.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Epilogue {
    /// `y = acc + bias` (`bias` may be empty: `y = acc`).
    Bias,
    /// `y = gelu(acc + bias)` (exact erf GELU).
    BiasGelu,
}

/// A row-major matrix of `m` rows with row stride `ld`, written through a raw pointer so that
/// threads can fill disjoint column ranges of the same rows.
#[derive(Clone, Copy)]
pub struct OutMat {
    pub ptr: *mut f32,
    pub ld: usize,
}
// SAFETY: callers only ever write disjoint elements from different threads (by construction of
// the panel ranges they pass), and the buffer outlives every thread that writes to it.
unsafe impl Send for OutMat {}
unsafe impl Sync for OutMat {}

/// `out[:, panel columns] = epilogue(x @ W[:, panel columns] + bias)` for panels `panels`.
/// `x` holds `m` rows of `w.k` floats with stride `lda`; `out` must have room for `m` rows of
/// `w.n` columns (stride `out.ld`). Columns past `w.n` (panel padding) are not written.
pub fn matmul_panels(
    x: &[f32],
    lda: usize,
    m: usize,
    w: &PackedF32,
    bias: &[f32],
    epilogue: Epilogue,
    panels: std::ops::Range<usize>,
    out: OutMat,
) {
    assert!(m == 0 || x.len() >= (m - 1) * lda + w.k, "x is too short");
    assert!(bias.is_empty() || bias.len() >= w.n, "bias is too short");
    assert!(panels.end <= w.panels());
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F (checked); bounds are checked above and in `run`.
        unsafe { run_avx512(x, lda, m, w, bias, epilogue, panels, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked); bounds are checked above and in `run_avx2`.
        unsafe { run_avx2(x, lda, m, w, bias, epilogue, panels, out) };
        return;
    }
    run(x, lda, m, w, bias, epilogue, panels, out, tile_portable);
}

/// Instruction-set levels of the embedder's kernels, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    Avx2,
    /// AVX-512 F/DQ/VL (f32) and, for int8, BW + VNNI.
    Avx512,
    /// AVX-512 plus AMX tiles for int8 (`tdpbusd`).
    Amx,
}

/// The highest level the kernels may use: `TRIAGE_EMBED_ISA` = `portable`, `avx2`, `avx512` or
/// `amx` (unset: the best the CPU has). For checking a lower path on a bigger CPU (tests, bench);
/// a level the CPU lacks falls back to the next one it has. `TRIAGE_EMBED_PORTABLE` (any value)
/// is the older spelling of `portable`.
pub fn isa_cap() -> Isa {
    use std::sync::OnceLock;
    static CAP: OnceLock<Isa> = OnceLock::new();
    *CAP.get_or_init(|| {
        if std::env::var_os("TRIAGE_EMBED_PORTABLE").is_some() {
            return Isa::Portable;
        }
        match std::env::var("TRIAGE_EMBED_ISA").ok().as_deref().map(str::trim) {
            None | Some("") => Isa::Amx,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "portable" | "scalar" => Isa::Portable,
                "avx2" => Isa::Avx2,
                "avx512" | "avx512-vnni" | "vnni" => Isa::Avx512,
                "amx" => Isa::Amx,
                other => {
                    tracing::warn!(
                        value = other,
                        "TRIAGE_EMBED_ISA is not portable, avx2, avx512 or amx: using the best the CPU has"
                    );
                    Isa::Amx
                }
            },
        }
    })
}

/// Whether the AVX2 + FMA kernels are used (CPUs without AVX-512; cached CPU feature check).
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            isa_cap() >= Isa::Avx2
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The instruction set the kernels run on here: `avx512`, `avx2` or `portable`.
pub fn isa() -> &'static str {
    if avx512() {
        "avx512"
    } else if avx2() {
        "avx2"
    } else {
        "portable"
    }
}

/// Rows per AVX2 micro-tile (`6 x 16`: 12 accumulators).
const MR2: usize = 6;
/// Columns per AVX2 micro-tile (half a panel).
const NR2: usize = 16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_avx2(
    x: &[f32],
    lda: usize,
    m: usize,
    w: &PackedF32,
    bias: &[f32],
    epilogue: Epilogue,
    panels: std::ops::Range<usize>,
    out: OutMat,
) {
    for r0 in (0..m).step_by(MC) {
        let r1 = (r0 + MC).min(m);
        for p in panels.clone() {
            let b = w.panel(p);
            let cols = NR.min(w.n - p * NR);
            for half in 0..NR / NR2 {
                if half * NR2 >= cols {
                    break;
                }
                let hcols = NR2.min(cols - half * NR2);
                for i in (r0..r1).step_by(MR2) {
                    let rows = MR2.min(r1 - i);
                    let a = x[i * lda..].as_ptr();
                    let bh = b[half * NR2..].as_ptr();
                    let col0 = p * NR + half * NR2;
                    // SAFETY: rows i..i+rows of x exist (asserted by the caller); the half panel
                    // is k rows of NR floats from `bh` (the panel is padded to NR columns); out
                    // has room for these rows and columns.
                    macro_rules! go {
                        ($($m:literal)*) => {
                            match rows {
                                $($m => tile2_m::<$m>(a, lda, w.k, bh, bias, epilogue, out, i, col0, hcols),)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    go!(1 2 3 4 5 6);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile2_m<const M: usize>(
    a: *const f32,
    lda: usize,
    k: usize,
    b: *const f32,
    bias: &[f32],
    epilogue: Epilogue,
    out: OutMat,
    row0: usize,
    col0: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc0 = [_mm256_setzero_ps(); M];
    let mut acc1 = [_mm256_setzero_ps(); M];
    for kk in 0..k {
        let b0 = _mm256_loadu_ps(b.add(kk * NR));
        let b1 = _mm256_loadu_ps(b.add(kk * NR + 8));
        for i in 0..M {
            let av = _mm256_broadcast_ss(&*a.add(i * lda + kk));
            acc0[i] = _mm256_fmadd_ps(av, b0, acc0[i]);
            acc1[i] = _mm256_fmadd_ps(av, b1, acc1[i]);
        }
    }
    if cols == NR2 && epilogue == Epilogue::Bias {
        let (bb0, bb1) = if bias.is_empty() {
            (_mm256_setzero_ps(), _mm256_setzero_ps())
        } else {
            (
                _mm256_loadu_ps(bias.as_ptr().add(col0)),
                _mm256_loadu_ps(bias.as_ptr().add(col0 + 8)),
            )
        };
        for i in 0..M {
            let dst = out.ptr.add((row0 + i) * out.ld + col0);
            _mm256_storeu_ps(dst, _mm256_add_ps(acc0[i], bb0));
            _mm256_storeu_ps(dst.add(8), _mm256_add_ps(acc1[i], bb1));
        }
        return;
    }
    let mut tmp = [0f32; NR2];
    for i in 0..M {
        _mm256_storeu_ps(tmp.as_mut_ptr(), acc0[i]);
        _mm256_storeu_ps(tmp.as_mut_ptr().add(8), acc1[i]);
        let dst = out.ptr.add((row0 + i) * out.ld + col0);
        if cols == NR2 && bias.len() >= col0 + NR2 {
            let bs = &bias[col0..col0 + NR2];
            for c in 0..NR2 {
                *dst.add(c) = gelu_or_bias(tmp[c] + bs[c], epilogue);
            }
        } else {
            for c in 0..cols {
                *dst.add(c) = finish(tmp[c], bias, col0 + c, epilogue);
            }
        }
    }
}

/// Whether the AVX-512 kernels are used (cached CPU feature check).
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            isa_cap() >= Isa::Avx512
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

type Tile = unsafe fn(&[f32], usize, usize, &[f32], &[f32], Epilogue, OutMat, usize, usize, usize);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_avx512(
    x: &[f32],
    lda: usize,
    m: usize,
    w: &PackedF32,
    bias: &[f32],
    epilogue: Epilogue,
    panels: std::ops::Range<usize>,
    out: OutMat,
) {
    run(x, lda, m, w, bias, epilogue, panels, out, tile_avx512);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run(
    x: &[f32],
    lda: usize,
    m: usize,
    w: &PackedF32,
    bias: &[f32],
    epilogue: Epilogue,
    panels: std::ops::Range<usize>,
    out: OutMat,
    tile: Tile,
) {
    for r0 in (0..m).step_by(MC) {
        let r1 = (r0 + MC).min(m);
        for p in panels.clone() {
            let b = w.panel(p);
            let cols = NR.min(w.n - p * NR);
            for i in (r0..r1).step_by(MR) {
                let rows = MR.min(r1 - i);
                // SAFETY: rows i..i+rows of x exist (asserted by the caller), the panel has k rows
                // of NR floats, and out has room for these rows and columns.
                unsafe {
                    tile(
                        &x[i * lda..],
                        lda,
                        w.k,
                        b,
                        bias,
                        epilogue,
                        out,
                        i,
                        p * NR,
                        rows.min(MR) | cols << 8,
                    )
                };
            }
        }
    }
}

/// Portable micro-tile: the same arithmetic, one row of the tile at a time.
unsafe fn tile_portable(
    x: &[f32],
    lda: usize,
    k: usize,
    b: &[f32],
    bias: &[f32],
    epilogue: Epilogue,
    out: OutMat,
    row0: usize,
    col0: usize,
    shape: usize,
) {
    let (rows, cols) = (shape & 0xff, shape >> 8);
    for i in 0..rows {
        let mut acc = [0f32; NR];
        let a = &x[i * lda..i * lda + k];
        for (kk, &av) in a.iter().enumerate() {
            let brow = &b[kk * NR..kk * NR + NR];
            for c in 0..NR {
                acc[c] = av.mul_add(brow[c], acc[c]);
            }
        }
        let dst = out.ptr.add((row0 + i) * out.ld + col0);
        for c in 0..cols {
            *dst.add(c) = finish(acc[c], bias, col0 + c, epilogue);
        }
    }
}

#[inline(always)]
fn finish(acc: f32, bias: &[f32], col: usize, epilogue: Epilogue) -> f32 {
    let v = acc + bias.get(col).copied().unwrap_or(0.0);
    match epilogue {
        Epilogue::Bias => v,
        Epilogue::BiasGelu => gelu(v),
    }
}

#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + super::ops::erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512(
    x: &[f32],
    lda: usize,
    k: usize,
    b: &[f32],
    bias: &[f32],
    epilogue: Epilogue,
    out: OutMat,
    row0: usize,
    col0: usize,
    shape: usize,
) {
    let rows = shape & 0xff;
    macro_rules! go {
        ($($m:literal)*) => {
            match rows {
                $($m => tile_m::<$m>(x.as_ptr(), lda, k, b.as_ptr(), bias, epilogue, out, row0, col0, shape >> 8),)*
                _ => unreachable!(),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8 9 10 11 12 13 14);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_m<const M: usize>(
    a: *const f32,
    lda: usize,
    k: usize,
    b: *const f32,
    bias: &[f32],
    epilogue: Epilogue,
    out: OutMat,
    row0: usize,
    col0: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc0 = [_mm512_setzero_ps(); M];
    let mut acc1 = [_mm512_setzero_ps(); M];
    for kk in 0..k {
        let b0 = _mm512_loadu_ps(b.add(kk * NR));
        let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
        for i in 0..M {
            let av = _mm512_set1_ps(*a.add(i * lda + kk));
            acc0[i] = _mm512_fmadd_ps(av, b0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(av, b1, acc1[i]);
        }
    }
    if cols == NR && epilogue == Epilogue::Bias {
        let (bb0, bb1) = if bias.is_empty() {
            (_mm512_setzero_ps(), _mm512_setzero_ps())
        } else {
            (
                _mm512_loadu_ps(bias.as_ptr().add(col0)),
                _mm512_loadu_ps(bias.as_ptr().add(col0 + 16)),
            )
        };
        for i in 0..M {
            let dst = out.ptr.add((row0 + i) * out.ld + col0);
            _mm512_storeu_ps(dst, _mm512_add_ps(acc0[i], bb0));
            _mm512_storeu_ps(dst.add(16), _mm512_add_ps(acc1[i], bb1));
        }
        return;
    }
    // GELU or a partial panel: through a small buffer, then the scalar epilogue (vectorised by
    // the compiler under this function's target features).
    let mut tmp = [0f32; NR];
    for i in 0..M {
        _mm512_storeu_ps(tmp.as_mut_ptr(), acc0[i]);
        _mm512_storeu_ps(tmp.as_mut_ptr().add(16), acc1[i]);
        let dst = out.ptr.add((row0 + i) * out.ld + col0);
        if cols == NR && bias.len() >= col0 + NR {
            let bs = &bias[col0..col0 + NR];
            for c in 0..NR {
                *dst.add(c) = gelu_or_bias(tmp[c] + bs[c], epilogue);
            }
        } else {
            for c in 0..cols {
                *dst.add(c) = finish(tmp[c], bias, col0 + c, epilogue);
            }
        }
    }
}

#[inline(always)]
fn gelu_or_bias(v: f32, epilogue: Epilogue) -> f32 {
    match epilogue {
        Epilogue::Bias => v,
        Epilogue::BiasGelu => gelu(v),
    }
}

/// The plain triple loop the kernels are tested against.
#[cfg(test)]
pub fn naive(
    x: &[f32],
    m: usize,
    k: usize,
    w_out_in: &[f32],
    n: usize,
    bias: &[f32],
    gelu_: bool,
) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for kk in 0..k {
                s += f64::from(x[i * k + kk]) * f64::from(w_out_in[j * k + kk]);
            }
            let v = s as f32 + bias.get(j).copied().unwrap_or(0.0);
            y[i * n + j] = if gelu_ { gelu(v) } else { v };
        }
    }
    y
}

/// Deterministic pseudo-random values (tests and `examples/kernel_speed.rs`).
#[doc(hidden)]
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, PartialEq)]
    enum Path {
        Dispatched,
        Portable,
        /// The AVX2 tile even on a CPU that has AVX-512 (skipped without AVX2 + FMA).
        Avx2,
    }

    fn check(m: usize, k: usize, n: usize, epilogue: Epilogue, path: Path) {
        #[cfg(target_arch = "x86_64")]
        if path == Path::Avx2
            && !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let x = pseudo_random(m * k, 1);
        let w = pseudo_random(n * k, 2);
        let bias = pseudo_random(n, 3);
        let want = naive(&x, m, k, &w, n, &bias, epilogue == Epilogue::BiasGelu);
        let packed = PackedF32::from_out_in(&w, n, k);
        let mut got = vec![f32::NAN; m * n];
        let out = OutMat {
            ptr: got.as_mut_ptr(),
            ld: n,
        };
        // Two halves of the panels, as two threads would split them.
        let half = packed.panels() / 2;
        for range in [0..half, half..packed.panels()] {
            match path {
                Path::Portable => run(&x, k, m, &packed, &bias, epilogue, range, out, tile_portable),
                Path::Dispatched => matmul_panels(&x, k, m, &packed, &bias, epilogue, range, out),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 and FMA are present (checked above).
                Path::Avx2 => unsafe { run_avx2(&x, k, m, &packed, &bias, epilogue, range, out) },
                #[cfg(not(target_arch = "x86_64"))]
                Path::Avx2 => return,
            }
        }
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "[{m}x{k}x{n}] at {i}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn kernels_match_the_naive_product_for_every_tile_shape() {
        for &(m, k, n) in &[
            (1, 3, 5),
            (7, 384, 64),
            (9, 17, 33),
            (20, 384, 1152),
            (70, 96, 100),
            (130, 64, 32),
        ] {
            for epilogue in [Epilogue::Bias, Epilogue::BiasGelu] {
                check(m, k, n, epilogue, Path::Dispatched);
                check(m, k, n, epilogue, Path::Portable);
                check(m, k, n, epilogue, Path::Avx2);
            }
        }
    }

    #[test]
    fn no_bias_means_plain_product() {
        let (m, k, n) = (5, 40, 64);
        let x = pseudo_random(m * k, 4);
        let w = pseudo_random(n * k, 5);
        let want = naive(&x, m, k, &w, n, &[], false);
        let packed = PackedF32::from_out_in(&w, n, k);
        let mut got = vec![0f32; m * n];
        let out = OutMat {
            ptr: got.as_mut_ptr(),
            ld: n,
        };
        matmul_panels(&x, k, m, &packed, &[], Epilogue::Bias, 0..packed.panels(), out);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}
