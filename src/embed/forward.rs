//! The encoder forward pass on plain buffers (no tensors on the hot path), over **ragged**
//! batches: the sequences' tokens are concatenated (no padding anywhere) and attention runs per
//! sequence and head. A pass is handed to the thread team once ([`super::team`]); inside, the
//! members split each projection by column panels (and attention by heads), meeting at a spin
//! barrier between the steps of a layer. No dot product is ever split, so results do not depend
//! on the number of threads.
//!
//! Per layer (`x` is `[tokens, hidden]`):
//! 1. `qkv = x @ Wqkv + b` for the member's heads (each head's Q, K and V are one 32-column panel
//!    each), then attention for those heads, sequence by sequence, into `ctx`;
//! 2. `tmp = ctx @ Wo`; 3. `h1 = layer_norm(tmp + bo + x)` (rows split);
//! 4. `inter = gelu(h1 @ Wi + bi)`; 5. `x = inter @ W2`; 6. `x = layer_norm(x + b2 + h1)`.

use std::cell::RefCell;

use super::kernels::{self, Epilogue, OutMat, PackedF32};
use super::qkernels::{self, PackedI8, QuantRows};
use super::team::Member;

/// A projection's weights, in one of the two precisions.
pub enum Lin {
    F32(PackedF32),
    I8(PackedI8),
}

impl Lin {
    pub fn n(&self) -> usize {
        match self {
            Lin::F32(w) => w.n,
            Lin::I8(w) => w.n,
        }
    }

    pub fn panels(&self) -> usize {
        match self {
            Lin::F32(w) => w.panels(),
            Lin::I8(w) => w.panels(),
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Lin::F32(w) => w.bytes(),
            Lin::I8(w) => w.bytes(),
        }
    }

    /// `out[:, panels] = epilogue(x @ W + bias)` over `m` rows of `x` (stride `k`).
    fn apply(&self, x: &[f32], m: usize, bias: &[f32], ep: Epilogue, panels: &[usize], out: OutMat) {
        match self {
            Lin::F32(w) => {
                for &p in panels {
                    kernels::matmul_panels(x, w.k, m, w, bias, ep, p..p + 1, out);
                }
            }
            Lin::I8(w) => QUANT.with(|q| {
                let q = &mut *q.borrow_mut();
                qkernels::quantize_rows(x, w.k, m, w, q);
                for &p in panels {
                    qkernels::matmul_panels(q, m, w, bias, ep, p..p + 1, out);
                }
            }),
        }
    }

    /// As [`Lin::apply`] over a contiguous range of panels.
    fn apply_range(
        &self,
        x: &[f32],
        m: usize,
        bias: &[f32],
        ep: Epilogue,
        panels: std::ops::Range<usize>,
        out: OutMat,
    ) {
        if panels.is_empty() {
            return;
        }
        match self {
            Lin::F32(w) => kernels::matmul_panels(x, w.k, m, w, bias, ep, panels, out),
            Lin::I8(w) => QUANT.with(|q| {
                let q = &mut *q.borrow_mut();
                qkernels::quantize_rows(x, w.k, m, w, q);
                qkernels::matmul_panels(q, m, w, bias, ep, panels, out);
            }),
        }
    }
}

thread_local! {
    /// Per-thread buffer for quantized activations (reused across calls).
    static QUANT: RefCell<QuantRows> = RefCell::new(QuantRows::default());
    /// Per-thread attention scratch: scores for one head of one sequence, and K transposed.
    static ATTN: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Layer norm parameters with the bias of the projection before it: `[bias; gamma; beta]`.
pub struct AddNorm {
    pub bias: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

/// One encoder layer in inference layout. Q's weights and bias carry the `1/sqrt(head_dim)` scale.
pub struct Layer {
    pub qkv: Lin,
    pub qkv_bias: Vec<f32>,
    pub attn_out: Lin,
    pub attn_norm: AddNorm,
    pub inter: Lin,
    pub inter_bias: Vec<f32>,
    pub out: Lin,
    pub out_norm: AddNorm,
}

/// Where a layer's linear inputs can be observed (for int8 calibration): `(layer, which, rows)`,
/// `which` 0..4 = qkv, attention output, intermediate, output projections' inputs.
pub type Observer<'a> = dyn Fn(usize, usize, &[f32]) + Sync + 'a;

/// Largest head size the attention kernel takes (checked at load).
pub const MAX_HEAD: usize = 128;

/// Shared, member-written activation buffers of one pass.
struct Bufs {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
}

#[derive(Clone, Copy)]
struct Raw(*mut f32, usize);
// SAFETY: members write disjoint parts (columns or rows) between barriers; see `run_layers`.
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

impl Raw {
    fn of(v: &mut [f32]) -> Raw {
        Raw(v.as_mut_ptr(), v.len())
    }
    /// SAFETY: no member writes this buffer until the next barrier, except into elements the
    /// caller does not read (other members' columns).
    unsafe fn read(&self) -> &[f32] {
        std::slice::from_raw_parts(self.0, self.1)
    }
    /// Rows `rows` (of `width` floats) for writing. SAFETY: no other member touches these rows
    /// until the next barrier.
    #[allow(clippy::mut_from_ref)]
    unsafe fn rows_mut(&self, rows: &std::ops::Range<usize>, width: usize) -> &mut [f32] {
        assert!(rows.end * width <= self.1);
        std::slice::from_raw_parts_mut(self.0.add(rows.start * width), rows.len() * width)
    }
    fn out(&self, ld: usize) -> OutMat {
        OutMat { ptr: self.0, ld }
    }
}

/// Pins a closure to the team's higher-ranked signature.
fn as_job<F: Fn(&Member<'_>) + Sync>(f: F) -> F {
    f
}

/// Runs `layers` over `x` (`[tokens, hidden]`, sequences of `lens` concatenated), in place.
pub fn run_layers(
    layers: &[Layer],
    first_index: usize,
    x: &mut [f32],
    lens: &[usize],
    heads: usize,
    parallel: bool,
    observe: Option<&Observer<'_>>,
) {
    let Some(l0) = layers.first() else { return };
    let h = l0.attn_out.n();
    let t: usize = lens.iter().sum();
    assert_eq!(x.len(), t * h);
    let inter_n = l0.inter.n();
    let mut bufs = Bufs {
        qkv: uninit(t * 3 * h),
        ctx: uninit(t * h),
        tmp: uninit(t * h),
        inter: uninit(t * inter_n),
    };
    let (rx, rqkv, rctx, rtmp, rinter) = (
        Raw::of(x),
        Raw::of(&mut bufs.qkv),
        Raw::of(&mut bufs.ctx),
        Raw::of(&mut bufs.tmp),
        Raw::of(&mut bufs.inter),
    );
    let starts: Vec<usize> = lens
        .iter()
        .scan(0, |s, &n| {
            let v = *s;
            *s += n;
            Some(v)
        })
        .collect();
    let hd = h / heads;
    let pass = as_job(|m: &Member<'_>| {
        // SAFETY (all `read` / `rows_mut` calls below): each step writes only this member's
        // columns (its heads / panels) or rows, reads what earlier steps wrote, and steps are
        // separated by barriers.
        let rows = m.share(t);
        for (li, layer) in layers.iter().enumerate() {
            let x = unsafe { rx.read() };
            if let (Some(f), 0) = (observe, m.id) {
                f(first_index + li, 0, x);
            }
            // 1. Q, K, V panels of this member's heads, then their attention.
            let my_heads = m.share(heads);
            let per = hd / kernels::NR;
            let panels: Vec<usize> = [0, h, 2 * h]
                .iter()
                .flat_map(|&off| {
                    my_heads.clone().flat_map(move |hh| {
                        let p = (off + hh * hd) / kernels::NR;
                        p..p + per
                    })
                })
                .collect();
            layer
                .qkv
                .apply(x, t, &layer.qkv_bias, Epilogue::Bias, &panels, rqkv.out(3 * h));
            let qkv = unsafe { rqkv.read() };
            for (&s, &n) in starts.iter().zip(lens) {
                for hh in my_heads.clone() {
                    let ctx = OutMat {
                        ptr: unsafe { rctx.0.add(s * h) },
                        ld: h,
                    };
                    attention(&qkv[s * 3 * h..(s + n) * 3 * h], ctx, n, h, hd, hh);
                }
            }
            m.sync();
            let ctx = unsafe { rctx.read() };
            if let (Some(f), 0) = (observe, m.id) {
                f(first_index + li, 1, ctx);
            }
            // 2-3. Attention output projection, then add & norm by rows.
            layer.attn_out.apply_range(
                ctx,
                t,
                &[],
                Epilogue::Bias,
                m.share(layer.attn_out.panels()),
                rtmp.out(h),
            );
            m.sync();
            let x = unsafe { rx.read() };
            add_norm(
                unsafe { rtmp.rows_mut(&rows, h) },
                &x[rows.start * h..rows.end * h],
                &layer.attn_norm,
            );
            m.sync();
            let h1 = unsafe { rtmp.read() };
            if let (Some(f), 0) = (observe, m.id) {
                f(first_index + li, 2, h1);
            }
            // 4. Intermediate projection with bias and GELU fused.
            layer.inter.apply_range(
                h1,
                t,
                &layer.inter_bias,
                Epilogue::BiasGelu,
                m.share(layer.inter.panels()),
                rinter.out(inter_n),
            );
            m.sync();
            let inter = unsafe { rinter.read() };
            if let (Some(f), 0) = (observe, m.id) {
                f(first_index + li, 3, inter);
            }
            // 5-6. Output projection into x (the layer input is no longer needed), add & norm.
            layer.out.apply_range(
                inter,
                t,
                &[],
                Epilogue::Bias,
                m.share(layer.out.panels()),
                rx.out(h),
            );
            m.sync();
            let h1 = unsafe { rtmp.read() };
            add_norm(
                unsafe { rx.rows_mut(&rows, h) },
                &h1[rows.start * h..rows.end * h],
                &layer.out_norm,
            );
            m.sync();
        }
    });
    super::team::Team::global().run(parallel, &pass);
}

/// A buffer every element of which is written before it is read (by the pass's steps).
fn uninit(n: usize) -> Vec<f32> {
    // Zero-filled rather than uninitialised: safe, and calloc'd pages cost nothing until touched.
    vec![0f32; n]
}

/// Attention of head `hh` for one sequence of `n` tokens: `qkv` holds its `[n, 3h]` rows, the
/// result goes to columns `hh*hd..` of its `[n, h]` rows in `ctx`. Q is pre-scaled.
fn attention(qkv: &[f32], ctx: OutMat, n: usize, h: usize, hd: usize, hh: usize) {
    ATTN.with(|a| {
        let (scores, kt) = &mut *a.borrow_mut();
        let np = n.next_multiple_of(LANES);
        scores.resize(n * np, 0.0);
        kt.resize(hd * np, 0.0);
        attention_rows(qkv, ctx, n, h, hd, hh, scores, kt);
    });
}

macro_rules! multiversion {
    (fn $name:ident($($arg:ident : $ty:ty),*) => $kernel:ident) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if kernels::avx512() {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) { $kernel($($arg),*) }
                // SAFETY: the CPU has the features `v4` is compiled for.
                return unsafe { v4($($arg),*) };
            }
            #[cfg(target_arch = "x86_64")]
            if kernels::avx2() {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) { $kernel($($arg),*) }
                // SAFETY: the CPU has the features `v3` is compiled for.
                return unsafe { v3($($arg),*) };
            }
            $kernel($($arg),*)
        }
    };
}

/// Attention rows for one head, with the head size fixed at compile time (32, 64, 96 or 128,
/// checked at load) so the per-key updates are whole registers.
#[allow(clippy::too_many_arguments)]
fn attention_rows(
    qkv: &[f32],
    ctx: OutMat,
    n: usize,
    h: usize,
    hd: usize,
    hh: usize,
    scores: &mut [f32],
    kt: &mut [f32],
) {
    macro_rules! dispatch {
        ($($hd:literal)*) => {
            match hd {
                $($hd => {
                    #[cfg(target_arch = "x86_64")]
                    if kernels::avx512() {
                        #[target_feature(enable = "avx512f,avx512vl,avx512dq,fma")]
                        unsafe fn v4(qkv: &[f32], ctx: OutMat, n: usize, h: usize, hh: usize, scores: &mut [f32], kt: &mut [f32]) {
                            attention_avx512::<$hd>(qkv, ctx, n, h, hh, scores, kt)
                        }
                        // SAFETY: the CPU has the features `v4` is compiled for.
                        return unsafe { v4(qkv, ctx, n, h, hh, scores, kt) };
                    }
                    #[cfg(target_arch = "x86_64")]
                    if kernels::avx2() {
                        #[target_feature(enable = "avx2,fma")]
                        unsafe fn v3(qkv: &[f32], ctx: OutMat, n: usize, h: usize, hh: usize, scores: &mut [f32], kt: &mut [f32]) {
                            attention_kernel::<$hd>(qkv, ctx, n, h, hh, scores, kt)
                        }
                        // SAFETY: the CPU has the features `v3` is compiled for.
                        return unsafe { v3(qkv, ctx, n, h, hh, scores, kt) };
                    }
                    attention_kernel::<$hd>(qkv, ctx, n, h, hh, scores, kt)
                })*
                _ => unreachable!("head size {hd} (checked at load)"),
            }
        };
    }
    dispatch!(32 64 96 128)
}

multiversion!(fn add_norm(x: &mut [f32], residual: &[f32], p: &AddNorm) => add_norm_kernel);

/// Keys per vector step of the attention kernel (one `zmm` of f32).
const LANES: usize = 16;

#[inline(always)]
fn attention_kernel<const HD: usize>(
    qkv: &[f32],
    ctx: OutMat,
    n: usize,
    h: usize,
    hh: usize,
    scores: &mut [f32],
    kt: &mut [f32],
) {
    let hd = HD;
    let (qo, ko, vo) = (hh * hd, h + hh * hd, 2 * h + hh * hd);
    let w = 3 * h;
    // K transposed ([hd, np], zero-padded to whole vectors of keys) so each score row is a sum of
    // hd scaled rows in whole 16-key steps: no scalar remainder for short messages.
    let np = n.next_multiple_of(LANES);
    transpose_keys(qkv, n, w, ko, hd, kt);
    for i in 0..n {
        let row = &mut scores[i * np..(i + 1) * np];
        let q: &[f32; HD] = qkv[i * w + qo..i * w + qo + HD]
            .try_into()
            .expect("a head's columns");
        // 16 keys at a time, summed over the head's dimensions in a register (not through memory).
        for (c, s) in row.chunks_exact_mut(LANES).enumerate() {
            let mut acc = [0f32; LANES];
            for (d, &qd) in q.iter().enumerate() {
                let k = &kt[d * np + c * LANES..d * np + (c + 1) * LANES];
                for l in 0..LANES {
                    acc[l] = qd.mul_add(k[l], acc[l]);
                }
            }
            s.copy_from_slice(&acc);
        }
        let inv = softmax_row(row, n);
        let mut out = [0f32; HD];
        for (j, &p) in row[..n].iter().enumerate() {
            let v: &[f32; HD] = qkv[j * w + vo..j * w + vo + HD]
                .try_into()
                .expect("a head's columns");
            for (o, &vv) in out.iter_mut().zip(v) {
                *o = p.mul_add(vv, *o);
            }
        }
        for (d, o) in out.iter().enumerate() {
            // SAFETY: row i of this sequence's `[n, h]` block, this head's columns: only this
            // member writes them (it owns head hh).
            unsafe { *ctx.ptr.add(i * ctx.ld + qo + d) = o * inv };
        }
    }
}

/// Query rows per block of the AVX-512 attention kernel: one row at a time, each score and each
/// output was a single chain of dependent FMAs (latency-bound: 39% of an int8 profile, 12% of an
/// f32 one); a block of rows gives that many independent chains.
const QROWS: usize = 8;

/// [`attention_kernel`] with explicit AVX-512, [`QROWS`] query rows at a time (then 4, 2, 1).
/// Every score and output element is summed in the same order as there (over the head's
/// dimensions, over the keys), with the same fused multiply-adds: the same results bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,fma")]
unsafe fn attention_avx512<const HD: usize>(
    qkv: &[f32],
    ctx: OutMat,
    n: usize,
    h: usize,
    hh: usize,
    scores: &mut [f32],
    kt: &mut [f32],
) {
    let ko = h + hh * HD;
    let w = 3 * h;
    let np = n.next_multiple_of(LANES);
    assert!(qkv.len() >= n * w && scores.len() >= n * np && kt.len() >= HD * np);
    transpose_keys(qkv, n, w, ko, HD, kt);
    let mut i = 0;
    while i < n {
        let left = n - i;
        i += if left >= QROWS {
            attention_block::<HD, QROWS>(qkv, ctx, n, h, hh, i, scores, kt)
        } else if left >= 4 {
            attention_block::<HD, 4>(qkv, ctx, n, h, hh, i, scores, kt)
        } else if left >= 2 {
            attention_block::<HD, 2>(qkv, ctx, n, h, hh, i, scores, kt)
        } else {
            attention_block::<HD, 1>(qkv, ctx, n, h, hh, i, scores, kt)
        };
    }
}

/// Query rows `i0..i0 + R` of [`attention_avx512`]: scores, softmax, then the weighted sum of V
/// (32 output columns at a time). Returns `R`. SAFETY: AVX-512F; the caller checked the bounds
/// (`i0 + R <= n`, `scores` of `n` rows of `np`, `kt` of `HD` rows of `np`, `qkv` of `n` rows).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_block<const HD: usize, const R: usize>(
    qkv: &[f32],
    ctx: OutMat,
    n: usize,
    h: usize,
    hh: usize,
    i0: usize,
    scores: &mut [f32],
    kt: &[f32],
) -> usize {
    use std::arch::x86_64::*;
    let (qo, vo) = (hh * HD, 2 * h + hh * HD);
    let w = 3 * h;
    let np = n.next_multiple_of(LANES);
    let (qp, ktp, sp) = (qkv.as_ptr(), kt.as_ptr(), scores.as_mut_ptr());
    // Scores, 16 keys at a time, summed over the head's dimensions in registers.
    for c in 0..np / LANES {
        let mut acc = [_mm512_setzero_ps(); R];
        for d in 0..HD {
            let k = _mm512_loadu_ps(ktp.add(d * np + c * LANES));
            for (r, a) in acc.iter_mut().enumerate() {
                let q = _mm512_set1_ps(*qp.add((i0 + r) * w + qo + d));
                *a = _mm512_fmadd_ps(q, k, *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(sp.add((i0 + r) * np + c * LANES), *a);
        }
    }
    let mut inv = [0f32; R];
    for (r, inv) in inv.iter_mut().enumerate() {
        *inv = softmax_row(&mut scores[(i0 + r) * np..(i0 + r + 1) * np], n);
    }
    let sp = scores.as_ptr();
    for d0 in (0..HD).step_by(32) {
        let mut o0 = [_mm512_setzero_ps(); R];
        let mut o1 = [_mm512_setzero_ps(); R];
        for j in 0..n {
            let v0 = _mm512_loadu_ps(qp.add(j * w + vo + d0));
            let v1 = _mm512_loadu_ps(qp.add(j * w + vo + d0 + 16));
            for r in 0..R {
                let p = _mm512_set1_ps(*sp.add((i0 + r) * np + j));
                o0[r] = _mm512_fmadd_ps(p, v0, o0[r]);
                o1[r] = _mm512_fmadd_ps(p, v1, o1[r]);
            }
        }
        for r in 0..R {
            let s = _mm512_set1_ps(inv[r]);
            // Row i0 + r of this sequence's `[n, h]` block, this head's columns: only this member
            // writes them (it owns head hh).
            let dst = ctx.ptr.add((i0 + r) * ctx.ld + qo + d0);
            _mm512_storeu_ps(dst, _mm512_mul_ps(o0[r], s));
            _mm512_storeu_ps(dst.add(16), _mm512_mul_ps(o1[r], s));
        }
    }
    R
}

/// K of one head (`hd` columns from `ko` in `n` rows of stride `w`) transposed into `kt`
/// (`[hd, np]`, `np` = `n` rounded up to [`LANES`], padding keys 0).
#[inline(always)]
fn transpose_keys(qkv: &[f32], n: usize, w: usize, ko: usize, hd: usize, kt: &mut [f32]) {
    let np = n.next_multiple_of(LANES);
    for d in 0..hd {
        for j in 0..n {
            kt[d * np + j] = qkv[j * w + ko + d];
        }
        kt[d * np + n..(d + 1) * np].fill(0.0);
    }
}

/// Softmax numerators of one score row in place (`row` is `np` long, keys past `n` padding, set
/// to exactly 0); returns 1 / their sum.
#[inline(always)]
fn softmax_row(row: &mut [f32], n: usize) -> f32 {
    row[n..].fill(f32::NEG_INFINITY);
    let mut maxes = [f32::NEG_INFINITY; LANES];
    for c in row.chunks_exact(LANES) {
        for l in 0..LANES {
            maxes[l] = maxes[l].max(c[l]);
        }
    }
    let max = maxes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sums = [0f32; LANES];
    for c in row.chunks_exact_mut(LANES) {
        for l in 0..LANES {
            c[l] = super::ops::exp(c[l] - max);
        }
    }
    // Padded keys: exactly 0 (the clamped exp would leave ~1e-38).
    row[n..].fill(0.0);
    for c in row.chunks_exact(LANES) {
        for l in 0..LANES {
            sums[l] += c[l];
        }
    }
    1.0 / sums.iter().sum::<f32>()
}

/// `x = layer_norm(x + bias + residual) * gamma + beta`, row by row.
#[inline(always)]
fn add_norm_kernel(x: &mut [f32], residual: &[f32], p: &AddNorm) {
    let n = p.gamma.len();
    for (row, res) in x.chunks_exact_mut(n).zip(residual.chunks_exact(n)) {
        for ((v, r), b) in row.iter_mut().zip(res).zip(&p.bias) {
            *v += r + b;
        }
        let mean = sum16(row, |v| v) / n as f32;
        let var = sum16(row, |v| (v - mean) * (v - mean)) / n as f32;
        let inv = 1.0 / (var + p.eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&p.gamma).zip(&p.beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// Layer norm of each row of `x` in place (no residual, no bias): the embeddings' norm.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = gamma.len();
    for row in x.chunks_exact_mut(n) {
        let mean = sum16(row, |v| v) / n as f32;
        let var = sum16(row, |v| (v - mean) * (v - mean)) / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// Sum with 16 independent accumulators, so it vectorises.
#[inline(always)]
fn sum16(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|&v| f(v)).sum::<f32>()
}

/// Mean over each sequence's rows, L2-normalised (sentence-transformers' pooling).
pub fn pool(x: &[f32], lens: &[usize], h: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut start = 0;
    for &n in lens {
        let mut mean = vec![0f64; h];
        for row in x[start * h..(start + n) * h].chunks_exact(h) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        let norm = mean
            .iter()
            .map(|m| (m / n as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        out.push(mean.iter().map(|m| (m / n as f64 / norm) as f32).collect());
        start += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::kernels::pseudo_random;
    use super::*;

    const H: usize = 64;
    const HEADS: usize = 2;
    const M: usize = 96;

    /// A random layer, with its raw `[out, in]` weights for the reference.
    fn layer(seed: u64) -> (Layer, Vec<Vec<f32>>) {
        let w = |n: usize, k: usize, s: u64| -> Vec<f32> {
            pseudo_random(n * k, seed * 10 + s)
                .iter()
                .map(|v| v * 0.3)
                .collect()
        };
        let raw = vec![
            w(3 * H, H, 1),
            w(H, H, 2),
            w(M, H, 3),
            w(H, M, 4),
            w(1, 3 * H, 5),
            w(1, M, 6),
            w(1, H, 7),
        ];
        let norm = |s: u64| AddNorm {
            bias: w(1, H, 7),
            gamma: pseudo_random(H, seed * 10 + s)
                .iter()
                .map(|v| 1.0 + 0.1 * v)
                .collect(),
            beta: w(1, H, s + 1),
            eps: 1e-12,
        };
        let l = Layer {
            qkv: Lin::F32(PackedF32::from_out_in(&raw[0], 3 * H, H)),
            qkv_bias: raw[4].clone(),
            attn_out: Lin::F32(PackedF32::from_out_in(&raw[1], H, H)),
            attn_norm: norm(8),
            inter: Lin::F32(PackedF32::from_out_in(&raw[2], M, H)),
            inter_bias: raw[5].clone(),
            out: Lin::F32(PackedF32::from_out_in(&raw[3], H, M)),
            out_norm: norm(9),
        };
        (l, raw)
    }

    fn linear(x: &[f32], w: &[f32], b: &[f32], n: usize, k: usize) -> Vec<f32> {
        x.chunks_exact(k)
            .flat_map(|row| {
                (0..n).map(move |j| {
                    row.iter()
                        .zip(&w[j * k..(j + 1) * k])
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                        + b.get(j).copied().unwrap_or(0.0)
                })
            })
            .collect()
    }

    fn norm_ref(x: &mut [f32], res: &[f32], p: &AddNorm) {
        for (row, r) in x.chunks_exact_mut(H).zip(res.chunks_exact(H)) {
            for ((v, r), b) in row.iter_mut().zip(r).zip(&p.bias) {
                *v += r + b;
            }
            let mean = row.iter().sum::<f32>() / H as f32;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / H as f32;
            for ((v, g), b) in row.iter_mut().zip(&p.gamma).zip(&p.beta) {
                *v = (*v - mean) / (var + p.eps).sqrt() * g + b;
            }
        }
    }

    /// The textbook layer on one sequence (no packing, no fusion, no threads).
    fn reference(l: &Layer, raw: &[Vec<f32>], x: &[f32], n: usize) -> Vec<f32> {
        let qkv = linear(x, &raw[0], &raw[4], 3 * H, H);
        let hd = H / HEADS;
        let mut ctx = vec![0f32; n * H];
        for hh in 0..HEADS {
            for i in 0..n {
                let s: Vec<f32> = (0..n)
                    .map(|j| {
                        (0..hd)
                            .map(|d| qkv[i * 3 * H + hh * hd + d] * qkv[j * 3 * H + H + hh * hd + d])
                            .sum()
                    })
                    .collect();
                let max = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = s.iter().map(|v| (v - max).exp()).collect();
                let z: f32 = e.iter().sum();
                for d in 0..hd {
                    ctx[i * H + hh * hd + d] = (0..n)
                        .map(|j| e[j] / z * qkv[j * 3 * H + 2 * H + hh * hd + d])
                        .sum();
                }
            }
        }
        let mut h1 = linear(&ctx, &raw[1], &[], H, H);
        norm_ref(&mut h1, x, &l.attn_norm);
        let inter: Vec<f32> = linear(&h1, &raw[2], &raw[5], M, H)
            .into_iter()
            .map(kernels::gelu)
            .collect();
        let mut out = linear(&inter, &raw[3], &[], H, M);
        norm_ref(&mut out, &h1, &l.out_norm);
        out
    }

    #[test]
    fn ragged_layers_match_the_textbook_layer_per_sequence_on_any_thread_count() {
        let (mut layers, mut raws) = (Vec::new(), Vec::new());
        for seed in 1..=2 {
            let (l, r) = layer(seed);
            layers.push(l);
            raws.push(r);
        }
        let lens = [5usize, 1, 17, 9];
        let t: usize = lens.iter().sum();
        let x0 = pseudo_random(t * H, 42);
        let mut together = x0.clone();
        run_layers(&layers, 0, &mut together, &lens, HEADS, true, None);
        let mut alone = x0.clone();
        run_layers(&layers, 0, &mut alone, &lens, HEADS, false, None);
        assert_eq!(together, alone, "thread count changed the result");
        let mut start = 0;
        for &n in &lens {
            let mut want = x0[start * H..(start + n) * H].to_vec();
            for (l, r) in layers.iter().zip(&raws) {
                want = reference(l, r, &want, n);
            }
            for (a, b) in together[start * H..(start + n) * H].iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
            start += n;
        }
    }

    #[test]
    fn pooling_is_the_normalised_mean_of_each_sequence() {
        let x = vec![1.0, 0.0, 3.0, 0.0, 0.0, 2.0];
        let p = pool(&x, &[2, 1], 2);
        assert_eq!(p, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    }
}
