//! int8 matrix multiply for the quantized mode: `y = x @ W + bias` with
//! - weights symmetric int8 **per output channel** (`W[:, j] ~ w_scale[j] * Wq[:, j]`), after
//!   SmoothQuant: input channel `c` of `W` is multiplied by `s[c]` and of `x` divided by it, moving
//!   activation outliers into the weights (`s` from calibration, see `super::calibrate`);
//! - activations asymmetric uint8 **per token** (row `i`: `x[i, :] ~ a_scale[i] * (q[i, :] - zp[i])`),
//!   quantized right before each product, so the scales follow every message.
//!
//! Then `x @ W = a_scale[i] * w_scale[j] * (sum_c q[i,c] Wq[c,j] - zp[i] * sum_c Wq[c,j])`: an exact
//! integer dot product (u8 x i8 -> i32, AVX-512 VNNI `vpdpbusd` where present) and a per-column
//! correction with the weights' column sums, precomputed at load.
//!
//! Without VNNI but with AVX2 (AMD Zen 1-3, older Intel), the same packed bytes are sign-extended
//! to 16 bits as they are loaded and multiplied with `vpmaddwd` against the activations widened
//! to 16 bits: exact (no `vpmaddubsw` saturation), so every path gives the same integer sums.
//!
//! Packing: panels of [`NR`] = 32 columns; within a panel, groups of 4 consecutive input channels,
//! each group 32 columns x 4 bytes, exactly what two `vpdpbusd` registers read.

use super::kernels::{gelu, Epilogue, OutMat};

pub const NR: usize = 32;
const MR: usize = 8;
const MC: usize = 64;

pub struct PackedI8 {
    pub k: usize,
    /// `k` rounded up to a multiple of 4 (zero weights in the padding).
    pub kp: usize,
    pub n: usize,
    data: Vec<i8>,
    /// Per output column: dequantization scale, and the sum of its int8 weights.
    w_scale: Vec<f32>,
    col_sum: Vec<i32>,
    /// Per input channel: `1 / s`, applied to activations before they are quantized.
    inv_smooth: Vec<f32>,
}

impl PackedI8 {
    /// Quantizes a PyTorch-layout weight `[n, k]` with SmoothQuant factors `smooth` (`[k]`, all 1
    /// for none).
    pub fn from_out_in(w: &[f32], n: usize, k: usize, smooth: &[f32]) -> Self {
        assert_eq!(w.len(), n * k);
        assert_eq!(smooth.len(), k);
        let kp = k.div_ceil(4) * 4;
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * kp * NR];
        let mut w_scale = vec![0f32; panels * NR];
        let mut col_sum = vec![0i32; panels * NR];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let amax = row
                .iter()
                .zip(smooth)
                .fold(0f32, |m, (v, s)| m.max((v * s).abs()));
            let scale = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            w_scale[j] = scale;
            let (p, c) = (j / NR, j % NR);
            for (kk, (v, s)) in row.iter().zip(smooth).enumerate() {
                let q = (v * s / scale).round().clamp(-127.0, 127.0) as i8;
                col_sum[j] += i32::from(q);
                data[p * kp * NR + (kk / 4) * NR * 4 + c * 4 + kk % 4] = q;
            }
        }
        Self {
            k,
            kp,
            n,
            data,
            w_scale,
            col_sum,
            inv_smooth: smooth.iter().map(|s| 1.0 / s).collect(),
        }
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    pub fn bytes(&self) -> usize {
        self.data.len() + self.w_scale.len() * 8 + self.inv_smooth.len() * 4
    }
}

/// Activations quantized per token: `m` rows of `kp` bytes, with each row's scale and zero point.
#[derive(Default)]
pub struct QuantRows {
    pub q: Vec<u8>,
    pub scale: Vec<f32>,
    pub zp: Vec<i32>,
    /// Scratch: one row divided by the smoothing factors.
    tmp: Vec<f32>,
}

/// Quantizes `m` rows of `x` (stride `lda`, `w.k` used columns) for `w`: divides by the
/// smoothing factors, then maps each row's range (widened to include 0) onto 0..=255.
pub fn quantize_rows(x: &[f32], lda: usize, m: usize, w: &PackedI8, into: &mut QuantRows) {
    assert!(m == 0 || x.len() >= (m - 1) * lda + w.k, "x is too short");
    #[cfg(target_arch = "x86_64")]
    if super::kernels::avx512() {
        // SAFETY: the CPU has AVX-512 F/BW/VL/DQ (checked); `x` holds the rows (asserted).
        return unsafe { quantize_rows_avx512(x, lda, m, w, into) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::kernels::avx2() {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn v3(x: &[f32], lda: usize, m: usize, w: &PackedI8, into: &mut QuantRows) {
            quantize_rows_impl(x, lda, m, w, into)
        }
        // SAFETY: the CPU has AVX2 and FMA (checked).
        return unsafe { v3(x, lda, m, w, into) };
    }
    quantize_rows_impl(x, lda, m, w, into)
}

/// Branch-free and lane-parallel (16 independent minima / maxima), so it vectorises.
#[inline(always)]
fn quantize_rows_impl(x: &[f32], lda: usize, m: usize, w: &PackedI8, into: &mut QuantRows) {
    into.q.clear();
    // Rows past `m` (up to a whole AMX row block) are zeros: the AMX kernel loads whole tiles.
    into.q.resize(m.next_multiple_of(AMX_ROWS) * w.kp, 0);
    into.scale.clear();
    into.zp.clear();
    let tmp = &mut into.tmp;
    tmp.clear();
    tmp.resize(w.k, 0.0);
    for i in 0..m {
        let row = &x[i * lda..i * lda + w.k];
        for ((t, v), s) in tmp.iter_mut().zip(row).zip(&w.inv_smooth) {
            *t = v * s;
        }
        let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
        let chunks = tmp.chunks_exact(16);
        for &v in chunks.remainder() {
            lo[0] = lo[0].min(v);
            hi[0] = hi[0].max(v);
        }
        for c in chunks {
            for l in 0..16 {
                lo[l] = lo[l].min(c[l]);
                hi[l] = hi[l].max(c[l]);
            }
        }
        let lo = lo.iter().fold(0f32, |a, &b| a.min(b));
        let hi = hi.iter().fold(0f32, |a, &b| a.max(b));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zp = (-lo / scale).round().clamp(0.0, 255.0);
        let inv = 1.0 / scale;
        let dst = &mut into.q[i * w.kp..i * w.kp + w.k];
        for (d, &v) in dst.iter_mut().zip(tmp.iter()) {
            // Round half up (the values are >= 0 here), as the AVX-512 path does.
            *d = ((v * inv + zp).clamp(0.0, 255.0) + 0.5) as i32 as u8;
        }
        // Padded channels hold the zero point, so they contribute 0 after the correction.
        for d in &mut into.q[i * w.kp + w.k..(i + 1) * w.kp] {
            *d = zp as u8;
        }
        into.scale.push(scale);
        into.zp.push(zp as i32);
    }
}

/// [`quantize_rows_impl`] in AVX-512 registers (the compiler leaves that one mostly scalar):
/// the same arithmetic in the same order, so the same bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
unsafe fn quantize_rows_avx512(x: &[f32], lda: usize, m: usize, w: &PackedI8, into: &mut QuantRows) {
    use std::arch::x86_64::*;
    let (k, kp) = (w.k, w.kp);
    into.q.clear();
    into.q.resize(m.next_multiple_of(AMX_ROWS) * kp, 0);
    into.scale.clear();
    into.zp.clear();
    into.tmp.clear();
    into.tmp.resize(k, 0.0);
    let tmp = into.tmp.as_mut_ptr();
    let s = w.inv_smooth.as_ptr();
    let tail = k % 16;
    let mask: __mmask16 = ((1u32 << tail) - 1) as u16;
    let body = k - tail;
    for i in 0..m {
        let row = x.as_ptr().add(i * lda);
        let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for c in (0..body).step_by(16) {
            let v = _mm512_mul_ps(_mm512_loadu_ps(row.add(c)), _mm512_loadu_ps(s.add(c)));
            _mm512_storeu_ps(tmp.add(c), v);
            lo = _mm512_min_ps(lo, v);
            hi = _mm512_max_ps(hi, v);
        }
        if tail > 0 {
            // Masked-off lanes are 0, inside the range anyway (it always includes 0).
            let v = _mm512_mul_ps(
                _mm512_maskz_loadu_ps(mask, row.add(body)),
                _mm512_maskz_loadu_ps(mask, s.add(body)),
            );
            _mm512_mask_storeu_ps(tmp.add(body), mask, v);
            lo = _mm512_min_ps(lo, v);
            hi = _mm512_max_ps(hi, v);
        }
        let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zp = (-lo / scale).round().clamp(0.0, 255.0);
        let inv = 1.0 / scale;
        let (vinv, vzp) = (_mm512_set1_ps(inv), _mm512_set1_ps(zp));
        let (zero, top, half) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0), _mm512_set1_ps(0.5));
        let dst = into.q.as_mut_ptr().add(i * kp);
        macro_rules! code {
            ($v:expr) => {{
                let r = _mm512_add_ps(_mm512_mul_ps($v, vinv), vzp);
                let r = _mm512_min_ps(_mm512_max_ps(r, zero), top);
                _mm512_cvttps_epi32(_mm512_add_ps(r, half))
            }};
        }
        for c in (0..body).step_by(16) {
            _mm_storeu_si128(
                dst.add(c).cast(),
                _mm512_cvtepi32_epi8(code!(_mm512_loadu_ps(tmp.add(c)))),
            );
        }
        if tail > 0 {
            _mm512_mask_cvtepi32_storeu_epi8(
                dst.add(body).cast(),
                mask,
                code!(_mm512_maskz_loadu_ps(mask, tmp.add(body))),
            );
        }
        // Padded channels hold the zero point, so they contribute 0 after the correction.
        std::ptr::write_bytes(dst.add(k), zp as u8, kp - k);
        into.scale.push(scale);
        into.zp.push(zp as i32);
    }
}

/// Whether the VNNI kernel is used.
pub fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            super::kernels::avx512()
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[:, panel columns] = epilogue(dequant(q @ Wq) + bias)` for panels `panels`.
pub fn matmul_panels(
    a: &QuantRows,
    m: usize,
    w: &PackedI8,
    bias: &[f32],
    epilogue: Epilogue,
    panels: std::ops::Range<usize>,
    out: OutMat,
) {
    assert!(a.q.len() >= m * w.kp && a.scale.len() >= m && a.zp.len() >= m);
    assert!(bias.is_empty() || bias.len() >= w.n);
    assert!(panels.end <= w.panels());
    #[cfg(target_arch = "x86_64")]
    if amx() && w.kp % AMX_K == 0 && a.q.len() >= m.next_multiple_of(AMX_ROWS) * w.kp {
        // SAFETY: AMX (tile data permission granted), AVX-512 BW/VNNI are present (checked);
        // whole row blocks of `a.q` exist (checked), `k` is whole tiles (checked); panels are in
        // bounds (asserted above).
        unsafe { matmul_amx(a, m, w, bias, epilogue, panels, out) };
        return;
    }
    for r0 in (0..m).step_by(MC) {
        let r1 = (r0 + MC).min(m);
        for p in panels.clone() {
            for i in (r0..r1).step_by(MR) {
                let rows = MR.min(r1 - i);
                #[cfg(target_arch = "x86_64")]
                if vnni() {
                    // SAFETY: the CPU has AVX-512 VNNI (checked); rows and panel are in bounds.
                    unsafe { tile_vnni(a, w, bias, epilogue, out, i, rows, p) };
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                if super::kernels::avx2() {
                    // SAFETY: the CPU has AVX2 and FMA (checked); rows and panel are in bounds.
                    unsafe { tile_avx2(a, w, bias, epilogue, out, i, rows, p) };
                    continue;
                }
                tile_portable(a, w, bias, epilogue, out, i, rows, p);
            }
        }
    }
}

/// The int8 path in use: `amx`, `avx512-vnni`, `avx2` or `portable`.
pub fn isa() -> &'static str {
    if amx() {
        "amx"
    } else if vnni() {
        "avx512-vnni"
    } else if super::kernels::avx2() {
        "avx2"
    } else {
        "portable"
    }
}

/// Rows per AMX row block (two 16-row tiles of activations).
const AMX_ROWS: usize = 32;
/// Input channels per AMX tile (64 bytes per tile row).
const AMX_K: usize = 64;

/// Whether the AMX kernel is used: the CPU has AMX-TILE and AMX-INT8 (CPUID leaf 7), Linux granted
/// this process the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, asked
/// once), the VNNI path is available (the same epilogue) and `TRIAGE_EMBED_ISA` allows `amx`.
pub fn amx() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            vnni() && super::kernels::isa_cap() >= super::kernels::Isa::Amx && amx_permitted()
        })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amx_permitted() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    // AMX-BF16 (22), AMX-TILE (24), AMX-INT8 (25); we need the last two.
    if edx & (1 << 24) == 0 || edx & (1 << 25) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; it only changes this process's
    // permitted extended state.
    let ret = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
    if ret != 0 {
        tracing::info!("AMX present but Linux refused the tile data permission: int8 runs on VNNI");
    }
    ret == 0
}

/// The tile configuration: palette 1, all eight tiles 16 rows x 64 bytes. `tmm0..3` accumulate
/// a 32 x 32 block of i32 (2 x 2 tiles of 16 x 16), `tmm4/5` hold two 16-row blocks of
/// activations (64 input channels each), `tmm6/7` two 16-column halves of the panel's weights.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const TILE_CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (u16, little endian)
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

/// AMX int8 matmul (`tdpbusd`: u8 x s8 -> i32, 16 x 16 x 64 per instruction) over the same packed
/// weights as the VNNI kernel: in a panel, group `g` of 4 input channels is 32 columns x 4 bytes,
/// so 16 groups of one 16-column half are a weight tile read with a stride of 128 bytes. The
/// activations are tiles of 16 rows x 64 channels read with a stride of `kp`. Each 32-row block
/// x panel is accumulated in four tiles, stored to a small buffer and finished (zero point, scales,
/// bias, GELU) with AVX-512 as in the VNNI kernel. Exactly the same integer sums as the other
/// paths, so the same results.
///
/// SAFETY: the CPU has AMX-TILE/INT8 with the permission granted and AVX-512 F/BW/VL/DQ;
/// `a.q` holds `m` rounded up to [`AMX_ROWS`] rows of `w.kp` bytes; `w.kp` is a multiple of
/// [`AMX_K`]; `panels` are `w`'s; `out` has room for `m` rows of `w.n` columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_amx(
    a: &QuantRows,
    m: usize,
    w: &PackedI8,
    bias: &[f32],
    epilogue: Epilogue,
    panels: std::ops::Range<usize>,
    out: OutMat,
) {
    use std::arch::asm;
    use std::arch::x86_64::*;
    #[repr(C, align(64))]
    struct Block([i32; AMX_ROWS * NR]);
    let mut c = Block([0; AMX_ROWS * NR]);
    let cp = c.0.as_mut_ptr();
    let kp = w.kp;
    asm!("ldtilecfg [{}]", in(reg) TILE_CONFIG.0.as_ptr(), options(nostack, readonly));
    for r0 in (0..m).step_by(MC) {
        let r1 = (r0 + MC).min(m);
        for p in panels.clone() {
            let panel = w.data.as_ptr().add(p * kp * NR);
            let col0 = p * NR;
            let cols = NR.min(w.n - col0);
            for i in (r0..r1).step_by(AMX_ROWS) {
                let rows = AMX_ROWS.min(r1 - i);
                let two = rows > 16;
                let q = a.q.as_ptr().add(i * kp);
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for g in 0..kp / AMX_K {
                    let a0 = q.add(g * AMX_K);
                    let b0 = panel.add(g * (AMX_K / 4) * NR * 4);
                    asm!(
                        "tileloadd tmm4, [{a}+{lda}*1]",
                        "tileloadd tmm6, [{b}+{ldb}*1]",
                        "tileloadd tmm7, [{b}+{ldb}*1+64]",
                        "tdpbusd tmm0, tmm4, tmm6",
                        "tdpbusd tmm1, tmm4, tmm7",
                        a = in(reg) a0,
                        b = in(reg) b0,
                        lda = in(reg) kp,
                        ldb = in(reg) NR * 4,
                        options(nostack, readonly)
                    );
                    if two {
                        asm!(
                            "tileloadd tmm5, [{a}+{lda}*1]",
                            "tdpbusd tmm2, tmm5, tmm6",
                            "tdpbusd tmm3, tmm5, tmm7",
                            a = in(reg) a0.add(16 * kp),
                            lda = in(reg) kp,
                            options(nostack, readonly)
                        );
                    }
                }
                // The 32 x 32 block, row-major, 128 bytes per row.
                asm!(
                    "tilestored [{c}+{ld}*1], tmm0",
                    "tilestored [{c}+{ld}*1+64], tmm1",
                    c = in(reg) cp,
                    ld = in(reg) NR * 4,
                    options(nostack)
                );
                if two {
                    asm!(
                        "tilestored [{c}+{ld}*1], tmm2",
                        "tilestored [{c}+{ld}*1+64], tmm3",
                        c = in(reg) cp.add(16 * NR),
                        ld = in(reg) NR * 4,
                        options(nostack)
                    );
                }
                if cols == NR {
                    let k = PanelConsts::load(w, bias, col0);
                    for ii in 0..rows {
                        let acc0 = _mm512_loadu_si512(cp.add(ii * NR).cast());
                        let acc1 = _mm512_loadu_si512(cp.add(ii * NR + 16).cast());
                        let r = i + ii;
                        k.finish_row(acc0, acc1, a, r, epilogue, out.ptr.add(r * out.ld + col0));
                    }
                } else {
                    for ii in 0..rows {
                        let r = i + ii;
                        for cc in 0..cols {
                            *out.ptr.add(r * out.ld + col0 + cc) =
                                store(*cp.add(ii * NR + cc), a, w, bias, epilogue, r, col0 + cc);
                        }
                    }
                }
            }
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// Rows per AVX2 int8 micro-tile; each row holds 16 columns in 4 accumulators.
const MR2: usize = 3;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2(
    a: &QuantRows,
    w: &PackedI8,
    bias: &[f32],
    epilogue: Epilogue,
    out: OutMat,
    row0: usize,
    rows: usize,
    p: usize,
) {
    let cols = NR.min(w.n - p * NR);
    for half in 0..2 {
        if half * 16 >= cols {
            break;
        }
        let hcols = 16.min(cols - half * 16);
        for i in (row0..row0 + rows).step_by(MR2) {
            macro_rules! go {
                ($($m:literal)*) => {
                    match MR2.min(row0 + rows - i) {
                        $($m => tile_avx2_m::<$m>(a, w, bias, epilogue, out, i, p, half, hcols),)*
                        _ => unreachable!(),
                    }
                };
            }
            go!(1 2 3);
        }
    }
}

/// `M` rows x 16 columns (half `half` of panel `p`): per group of 4 input channels, 4 loads of
/// 4 columns x 4 bytes, each sign-extended to 16 x i16, times the row's 4 activations as i16
/// (`vpmaddwd`: each 32-bit lane sums 2 channels, so a column's sum is spread over 2 lanes and
/// folded at the end with `vphaddd`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2_m<const M: usize>(
    a: &QuantRows,
    w: &PackedI8,
    bias: &[f32],
    epilogue: Epilogue,
    out: OutMat,
    row0: usize,
    p: usize,
    half: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let b = w.data.as_ptr().add(p * w.kp * NR + half * 16 * 4);
    let q = a.q.as_ptr().add(row0 * w.kp);
    let mut acc = [[_mm256_setzero_si256(); 4]; M];
    for g in 0..w.kp / 4 {
        let mut av = [_mm256_setzero_si256(); M];
        for (i, av) in av.iter_mut().enumerate() {
            let four = q.add(i * w.kp + g * 4).cast::<i32>().read_unaligned();
            *av = _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(four)));
        }
        let bg = b.add(g * NR * 4);
        for j in 0..4 {
            let bj = _mm256_cvtepi8_epi16(_mm_loadu_si128(bg.add(j * 16).cast()));
            for i in 0..M {
                acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(av[i], bj));
            }
        }
    }
    let col0 = p * NR + half * 16;
    for (i, acc) in acc.iter().enumerate() {
        let r = row0 + i;
        // [c0 c1 c4 c5 | c2 c3 c6 c7] -> c0..c7, and the same for c8..c15.
        let s0 = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[0], acc[1]), 0b11_01_10_00);
        let s1 = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[2], acc[3]), 0b11_01_10_00);
        if cols == 16 {
            let zp = _mm256_set1_epi32(a.zp[r]);
            let sc = _mm256_set1_ps(a.scale[r]);
            let mut v = [_mm256_setzero_ps(); 2];
            for (h, s) in [s0, s1].into_iter().enumerate() {
                let c = col0 + h * 8;
                let cs = _mm256_loadu_si256(w.col_sum.as_ptr().add(c).cast());
                let ws = _mm256_loadu_ps(w.w_scale.as_ptr().add(c));
                let bb = if bias.len() >= c + 8 {
                    _mm256_loadu_ps(bias.as_ptr().add(c))
                } else {
                    _mm256_setzero_ps()
                };
                let x = _mm256_cvtepi32_ps(_mm256_sub_epi32(s, _mm256_mullo_epi32(zp, cs)));
                v[h] = _mm256_fmadd_ps(x, _mm256_mul_ps(sc, ws), bb);
            }
            let dst = out.ptr.add(r * out.ld + col0);
            _mm256_storeu_ps(dst, v[0]);
            _mm256_storeu_ps(dst.add(8), v[1]);
            if epilogue == Epilogue::BiasGelu {
                for c in 0..16 {
                    *dst.add(c) = gelu(*dst.add(c));
                }
            }
            continue;
        }
        let mut tmp = [0i32; 16];
        _mm256_storeu_si256(tmp.as_mut_ptr().cast(), s0);
        _mm256_storeu_si256(tmp.as_mut_ptr().add(8).cast(), s1);
        for (c, &t) in tmp.iter().enumerate().take(cols) {
            *out.ptr.add(r * out.ld + col0 + c) = store(t, a, w, bias, epilogue, r, col0 + c);
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn store(
    acc: i32,
    a: &QuantRows,
    w: &PackedI8,
    bias: &[f32],
    epilogue: Epilogue,
    row: usize,
    col: usize,
) -> f32 {
    let v = (acc - a.zp[row] * w.col_sum[col]) as f32 * (a.scale[row] * w.w_scale[col])
        + bias.get(col).copied().unwrap_or(0.0);
    match epilogue {
        Epilogue::Bias => v,
        Epilogue::BiasGelu => gelu(v),
    }
}

#[allow(clippy::too_many_arguments)]
fn tile_portable(
    a: &QuantRows,
    w: &PackedI8,
    bias: &[f32],
    epilogue: Epilogue,
    out: OutMat,
    row0: usize,
    rows: usize,
    p: usize,
) {
    let panel = &w.data[p * w.kp * NR..(p + 1) * w.kp * NR];
    let cols = NR.min(w.n - p * NR);
    for i in row0..row0 + rows {
        let q = &a.q[i * w.kp..(i + 1) * w.kp];
        let mut acc = [0i32; NR];
        for g in 0..w.kp / 4 {
            let grp = &panel[g * NR * 4..(g + 1) * NR * 4];
            for (c, acc) in acc.iter_mut().enumerate() {
                for r in 0..4 {
                    *acc += i32::from(q[g * 4 + r]) * i32::from(grp[c * 4 + r]);
                }
            }
        }
        for (c, &acc) in acc.iter().enumerate().take(cols) {
            let col = p * NR + c;
            // SAFETY: the caller's `out` has room for row `i`, column `col`.
            unsafe { *out.ptr.add(i * out.ld + col) = store(acc, a, w, bias, epilogue, i, col) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_vnni(
    a: &QuantRows,
    w: &PackedI8,
    bias: &[f32],
    epilogue: Epilogue,
    out: OutMat,
    row0: usize,
    rows: usize,
    p: usize,
) {
    macro_rules! go {
        ($($m:literal)*) => {
            match rows {
                $($m => tile_vnni_m::<$m>(a, w, bias, epilogue, out, row0, p),)*
                _ => unreachable!(),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")]
#[inline]
unsafe fn tile_vnni_m<const M: usize>(
    a: &QuantRows,
    w: &PackedI8,
    bias: &[f32],
    epilogue: Epilogue,
    out: OutMat,
    row0: usize,
    p: usize,
) {
    use std::arch::x86_64::*;
    let b = w.data.as_ptr().add(p * w.kp * NR);
    let q = a.q.as_ptr().add(row0 * w.kp);
    let mut acc0 = [_mm512_setzero_si512(); M];
    let mut acc1 = [_mm512_setzero_si512(); M];
    for g in 0..w.kp / 4 {
        let b0 = _mm512_loadu_si512(b.add(g * NR * 4).cast());
        let b1 = _mm512_loadu_si512(b.add(g * NR * 4 + 64).cast());
        for i in 0..M {
            let av = _mm512_set1_epi32(q.add(i * w.kp + g * 4).cast::<i32>().read_unaligned());
            acc0[i] = _mm512_dpbusd_epi32(acc0[i], av, b0);
            acc1[i] = _mm512_dpbusd_epi32(acc1[i], av, b1);
        }
    }
    let col0 = p * NR;
    let cols = NR.min(w.n - col0);
    if cols == NR {
        let k = PanelConsts::load(w, bias, col0);
        for i in 0..M {
            k.finish_row(
                acc0[i],
                acc1[i],
                a,
                row0 + i,
                epilogue,
                out.ptr.add((row0 + i) * out.ld + col0),
            );
        }
        return;
    }
    let mut tmp = [0i32; NR];
    for i in 0..M {
        _mm512_storeu_si512(tmp.as_mut_ptr().cast(), acc0[i]);
        _mm512_storeu_si512(tmp.as_mut_ptr().add(16).cast(), acc1[i]);
        for (c, &t) in tmp.iter().enumerate().take(cols) {
            *out.ptr.add((row0 + i) * out.ld + col0 + c) = store(t, a, w, bias, epilogue, row0 + i, col0 + c);
        }
    }
}

/// A full panel's per-column epilogue constants in AVX-512 registers (VNNI and AMX kernels).
#[cfg(target_arch = "x86_64")]
struct PanelConsts {
    ws: [std::arch::x86_64::__m512; 2],
    cs: [std::arch::x86_64::__m512i; 2],
    bias: [std::arch::x86_64::__m512; 2],
}

#[cfg(target_arch = "x86_64")]
impl PanelConsts {
    /// SAFETY: AVX-512 F present; columns `col0..col0 + NR` exist in `w` (a full panel).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
    #[inline]
    unsafe fn load(w: &PackedI8, bias: &[f32], col0: usize) -> Self {
        use std::arch::x86_64::*;
        let half = |h: usize| col0 + 16 * h;
        let bias = if bias.len() >= col0 + NR {
            [
                _mm512_loadu_ps(bias.as_ptr().add(half(0))),
                _mm512_loadu_ps(bias.as_ptr().add(half(1))),
            ]
        } else {
            [_mm512_setzero_ps(); 2]
        };
        Self {
            ws: [
                _mm512_loadu_ps(w.w_scale.as_ptr().add(half(0))),
                _mm512_loadu_ps(w.w_scale.as_ptr().add(half(1))),
            ],
            cs: [
                _mm512_loadu_si512(w.col_sum.as_ptr().add(half(0)).cast()),
                _mm512_loadu_si512(w.col_sum.as_ptr().add(half(1)).cast()),
            ],
            bias,
        }
    }

    /// Row `r`'s 32 sums (two registers) -> `dst[..32] = epilogue(dequantized + bias)`.
    /// SAFETY: AVX-512 F present; `dst` has room for 32 floats; row `r` of `a` exists.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
    #[inline]
    unsafe fn finish_row(
        &self,
        acc0: std::arch::x86_64::__m512i,
        acc1: std::arch::x86_64::__m512i,
        a: &QuantRows,
        r: usize,
        epilogue: Epilogue,
        dst: *mut f32,
    ) {
        use std::arch::x86_64::*;
        let zp = _mm512_set1_epi32(a.zp[r]);
        let sc = _mm512_set1_ps(a.scale[r]);
        for (h, acc) in [acc0, acc1].into_iter().enumerate() {
            let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_mullo_epi32(zp, self.cs[h])));
            _mm512_storeu_ps(
                dst.add(16 * h),
                _mm512_fmadd_ps(v, _mm512_mul_ps(sc, self.ws[h]), self.bias[h]),
            );
        }
        if epilogue == Epilogue::BiasGelu {
            for c in 0..NR {
                *dst.add(c) = gelu(*dst.add(c));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels::{naive, pseudo_random};
    use super::*;

    /// The int8 product against the exact f32 one: within the quantization error bound, and the
    /// dispatched (AMX or VNNI), AVX2 and portable kernels equal to each other (same integer sums).
    #[test]
    fn int8_kernels_match_the_naive_product_within_quantization_error() {
        eprintln!("int8 kernels: {}", isa());
        for &(m, k, n) in &[
            (1, 8, 32),
            (9, 384, 64),
            (20, 384, 1152),
            (70, 30, 40),
            (3, 1536, 96),
            // Several AMX row blocks, a partial one, a partial last panel, and a block boundary.
            (70, 384, 40),
            (130, 128, 64),
        ] {
            let x = pseudo_random(m * k, 11);
            let w = pseudo_random(n * k, 12);
            let bias = pseudo_random(n, 13);
            let smooth: Vec<f32> = (0..k).map(|c| 0.5 + (c % 7) as f32 * 0.25).collect();
            let packed = PackedI8::from_out_in(&w, n, k, &smooth);
            let mut qa = QuantRows::default();
            quantize_rows(&x, k, m, &packed, &mut qa);
            for epilogue in [Epilogue::Bias, Epilogue::BiasGelu] {
                let want = naive(&x, m, k, &w, n, &bias, epilogue == Epilogue::BiasGelu);
                let mut fast = vec![f32::NAN; m * n];
                let mut slow = vec![f32::NAN; m * n];
                let half = packed.panels() / 2;
                for range in [0..half, half..packed.panels()] {
                    matmul_panels(
                        &qa,
                        m,
                        &packed,
                        &bias,
                        epilogue,
                        range.clone(),
                        OutMat {
                            ptr: fast.as_mut_ptr(),
                            ld: n,
                        },
                    );
                    #[cfg(target_arch = "x86_64")]
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        let mut avx2 = vec![f32::NAN; m * n];
                        for p in range.clone() {
                            // SAFETY: AVX2 and FMA are present (checked).
                            unsafe {
                                tile_avx2(
                                    &qa,
                                    &packed,
                                    &bias,
                                    epilogue,
                                    OutMat {
                                        ptr: avx2.as_mut_ptr(),
                                        ld: n,
                                    },
                                    0,
                                    m,
                                    p,
                                )
                            };
                        }
                        for i in 0..m {
                            for j in range.clone().flat_map(|p| p * NR..(p * NR + NR).min(n)) {
                                let (x, y) = (avx2[i * n + j], fast[i * n + j]);
                                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "avx2 {x} vs {y}");
                            }
                        }
                    }
                    for i in 0..m {
                        for p in range.clone() {
                            tile_portable(
                                &qa,
                                &packed,
                                &bias,
                                epilogue,
                                OutMat {
                                    ptr: slow.as_mut_ptr(),
                                    ld: n,
                                },
                                i,
                                1,
                                p,
                            );
                        }
                    }
                }
                // Error bound: |x| <= 1 and |w| <= 1, so each of k terms is off by at most
                // (x step + w step) / 2 ~ (2/255 + 2/127) / 2; random signs make it ~sqrt(k) of that.
                let tol = 0.02 * (k as f32).sqrt() * 1.6;
                for i in 0..m * n {
                    assert!(
                        (fast[i] - want[i]).abs() < tol,
                        "[{m}x{k}x{n}] {i}: {} vs {}",
                        fast[i],
                        want[i]
                    );
                    assert!(
                        (fast[i] - slow[i]).abs() <= 1e-5 * (1.0 + slow[i].abs()),
                        "{} vs {}",
                        fast[i],
                        slow[i]
                    );
                }
                // And far better than the bound on average.
                let mean_err: f32 =
                    fast.iter().zip(&want).map(|(a, b)| (a - b).abs()).sum::<f32>() / (m * n) as f32;
                assert!(mean_err < tol / 4.0, "mean error {mean_err}");
            }
        }
    }

    #[test]
    fn avx512_quantization_gives_the_same_bytes_as_the_portable_one() {
        #[cfg(target_arch = "x86_64")]
        if super::super::kernels::avx512() {
            for &(m, k) in &[(1, 8), (5, 30), (33, 384), (3, 1536), (2, 17)] {
                let x: Vec<f32> = pseudo_random(m * k, 21).iter().map(|v| v * 3.0 + 0.4).collect();
                let smooth: Vec<f32> = (0..k).map(|c| 0.5 + (c % 5) as f32 * 0.3).collect();
                let w = PackedI8::from_out_in(&vec![0.1; k], 1, k, &smooth);
                let (mut fast, mut slow) = (QuantRows::default(), QuantRows::default());
                // SAFETY: AVX-512 is present (checked); x holds m rows of k.
                unsafe { quantize_rows_avx512(&x, k, m, &w, &mut fast) };
                quantize_rows_impl(&x, k, m, &w, &mut slow);
                assert_eq!(fast.q, slow.q, "{m}x{k}");
                assert_eq!(fast.scale, slow.scale);
                assert_eq!(fast.zp, slow.zp);
            }
        }
    }

    #[test]
    fn constant_rows_and_zero_weights_do_not_divide_by_zero() {
        let (m, k, n) = (2, 8, 32);
        let x = vec![0f32; m * k];
        let w = vec![0f32; n * k];
        let packed = PackedI8::from_out_in(&w, n, k, &vec![1.0; k]);
        let mut qa = QuantRows::default();
        quantize_rows(&x, k, m, &packed, &mut qa);
        let mut y = vec![f32::NAN; m * n];
        matmul_panels(
            &qa,
            m,
            &packed,
            &[],
            Epilogue::Bias,
            0..1,
            OutMat {
                ptr: y.as_mut_ptr(),
                ld: n,
            },
        );
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
