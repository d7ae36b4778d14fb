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
}

/// Quantizes `m` rows of `x` (stride `lda`, `w.k` used columns) for `w`: divides by the
/// smoothing factors, then maps each row's range (widened to include 0) onto 0..=255.
pub fn quantize_rows(x: &[f32], lda: usize, m: usize, w: &PackedI8, into: &mut QuantRows) {
    into.q.clear();
    into.q.resize(m * w.kp, 0);
    into.scale.clear();
    into.zp.clear();
    let mut tmp = vec![0f32; w.k];
    for i in 0..m {
        let row = &x[i * lda..i * lda + w.k];
        for ((t, v), s) in tmp.iter_mut().zip(row).zip(&w.inv_smooth) {
            *t = v * s;
        }
        let (lo, hi) = tmp
            .iter()
            .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zp = (-lo / scale).round().clamp(0.0, 255.0);
        let inv = 1.0 / scale;
        let dst = &mut into.q[i * w.kp..i * w.kp + w.k];
        for (d, &v) in dst.iter_mut().zip(&tmp) {
            *d = (v * inv + zp).round().clamp(0.0, 255.0) as u8;
        }
        // Padded channels hold the zero point, so they contribute 0 after the correction.
        for d in &mut into.q[i * w.kp + w.k..(i + 1) * w.kp] {
            *d = zp as u8;
        }
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
                tile_portable(a, w, bias, epilogue, out, i, rows, p);
            }
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
        let ws0 = _mm512_loadu_ps(w.w_scale.as_ptr().add(col0));
        let ws1 = _mm512_loadu_ps(w.w_scale.as_ptr().add(col0 + 16));
        let cs0 = _mm512_loadu_si512(w.col_sum.as_ptr().add(col0).cast());
        let cs1 = _mm512_loadu_si512(w.col_sum.as_ptr().add(col0 + 16).cast());
        let (bb0, bb1) = if bias.len() >= col0 + NR {
            (
                _mm512_loadu_ps(bias.as_ptr().add(col0)),
                _mm512_loadu_ps(bias.as_ptr().add(col0 + 16)),
            )
        } else {
            (_mm512_setzero_ps(), _mm512_setzero_ps())
        };
        for i in 0..M {
            let r = row0 + i;
            let zp = _mm512_set1_epi32(a.zp[r]);
            let sc = _mm512_set1_ps(a.scale[r]);
            let v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc0[i], _mm512_mullo_epi32(zp, cs0)));
            let v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc1[i], _mm512_mullo_epi32(zp, cs1)));
            let v0 = _mm512_fmadd_ps(v0, _mm512_mul_ps(sc, ws0), bb0);
            let v1 = _mm512_fmadd_ps(v1, _mm512_mul_ps(sc, ws1), bb1);
            let dst = out.ptr.add(r * out.ld + col0);
            _mm512_storeu_ps(dst, v0);
            _mm512_storeu_ps(dst.add(16), v1);
            if epilogue == Epilogue::BiasGelu {
                for c in 0..NR {
                    *dst.add(c) = gelu(*dst.add(c));
                }
            }
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

#[cfg(test)]
mod tests {
    use super::super::kernels::{naive, pseudo_random};
    use super::*;

    /// The int8 product against the exact f32 one: within the quantization error bound, and the
    /// VNNI and portable kernels bit-identical to each other (same integer sums).
    #[test]
    fn int8_kernels_match_the_naive_product_within_quantization_error() {
        for &(m, k, n) in &[
            (1, 8, 32),
            (9, 384, 64),
            (20, 384, 1152),
            (70, 30, 40),
            (3, 1536, 96),
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
