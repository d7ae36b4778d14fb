//! Fused, vectorised element-wise kernels for the encoder, as candle custom ops.
//!
//! Why: candle's generic `gelu_erf` calls a scalar erf per element on one thread, and bias adds,
//! residual adds and layer norm are separate passes that each allocate. Here each is one in-place
//! pass over the activations, split over rows on the rayon pool for large tensors, and compiled
//! for AVX-512 / AVX2 at run time when the CPU has them (the same code, inlined into functions
//! with those target features, so LLVM vectorises it).

use std::cell::Cell;

use candle_core::{CpuStorage, CustomOp2, InplaceOp2, InplaceOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Below this many elements the work stays on the calling thread (waking workers costs more).
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// Below this many multiply-adds a matmul stays on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 21;

thread_local! {
    static INTRA_OP: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` with the kernels of this module (and [`matmul`]) kept on the calling thread. Used when
/// several batches run at once, one per thread: splitting each operation as well would only add
/// synchronisation.
pub fn single_threaded<R>(f: impl FnOnce() -> R) -> R {
    let before = INTRA_OP.with(|c| c.replace(false));
    let r = f();
    INTRA_OP.with(|c| c.set(before));
    r
}

fn intra_op() -> bool {
    INTRA_OP.with(Cell::get) && rayon::current_num_threads() > 1
}

/// `x @ w` for contiguous `x: [m, k]` and `w: [k, n]`, through the `gemm` crate's kernels like
/// candle's own matmul, but with the output left uninitialised (gemm writes every element; candle
/// zero-fills it first) and with threading chosen per call ([`single_threaded`]).
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    struct Op;
    impl CustomOp2 for Op {
        fn name(&self) -> &'static str {
            "matmul-nn"
        }
        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let a = slice_f32(s1, l1, "matmul lhs")?;
            let b = slice_f32(s2, l2, "matmul rhs")?;
            let (m, k) = l1.shape().dims2()?;
            let (k2, n) = l2.shape().dims2()?;
            if k != k2 {
                candle_core::bail!("matmul: [{m}, {k}] @ [{k2}, {n}]");
            }
            let parallelism = if intra_op() && m * n * k >= PARALLEL_MIN_MACS {
                gemm::Parallelism::Rayon(rayon::current_num_threads())
            } else {
                gemm::Parallelism::None
            };
            let mut out: Vec<f32> = Vec::with_capacity(m * n);
            // SAFETY: `a` is m x k and `b` k x n, both contiguous row-major (checked above and by
            // `slice_f32`); `out` has capacity m x n and gemm with alpha = 0 (dst not read) writes
            // every element before `set_len`.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
                out.set_len(m * n);
            }
            Ok((CpuStorage::F32(out), Shape::from((m, n))))
        }
    }
    x.apply_op2_no_bwd(w, &Op)
}

fn slice_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: expected f32 storage")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

fn slice_f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: expected f32 storage")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut v[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

/// Runs `f` over row-aligned chunks of `data`, in parallel when the tensor is large.
fn for_rows(data: &mut [f32], row: usize, f: impl Fn(&mut [f32]) + Sync) {
    if data.len() < PARALLEL_MIN_ELEMS || !intra_op() {
        f(data);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let rows = data.len() / row;
    let per = rows.div_ceil(threads * 4).max(1) * row;
    data.par_chunks_mut(per).for_each(|d| f(d));
}

/// Same as [`for_rows`] with a second, row-aligned input of the same shape.
fn for_rows2(data: &mut [f32], other: &[f32], row: usize, f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if data.len() < PARALLEL_MIN_ELEMS || !intra_op() {
        f(data, other);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let rows = data.len() / row;
    let per = rows.div_ceil(threads * 4).max(1) * row;
    data.par_chunks_mut(per)
        .zip(other.par_chunks(per))
        .for_each(|(d, o)| f(d, o));
}

/// Defines `$name`, which runs `$kernel` compiled for the widest instruction set the CPU has: the
/// kernel is `#[inline(always)]`, so it is inlined into each `#[target_feature]` wrapper.
macro_rules! multiversion {
    (fn $name:ident($($arg:ident : $ty:ty),*) => $kernel:ident) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,fma")]
                unsafe fn v4($($arg: $ty),*) { $kernel($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { $kernel($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512dq") {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above, for `v3`.
                    return unsafe { v3($($arg),*) };
                }
            }
            $kernel($($arg),*)
        }
    };
}

multiversion!(fn bias_gelu_rows(data: &mut [f32], bias: &[f32]) => bias_gelu_kernel);
multiversion!(fn masked_softmax_rows(rows: &mut [f32], width: usize, valid: usize) => masked_softmax_kernel);
multiversion!(fn bias_rows(data: &mut [f32], bias: &[f32]) => bias_kernel);
multiversion!(fn add_norm_rows(data: &mut [f32], residual: &[f32], p: &AddNormParams<'_>) => add_norm_kernel);

/// erf for f32, branch-free so it vectorises: Eigen's rational approximation on [-4, 4] (outside,
/// erf is ±1 in f32), a few ulp from the exact value.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906e-4);
    p = p.mul_add(x2, -2.954_6e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    p *= x;
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    p / q
}

/// exp for f32, branch-free so it vectorises (Cephes' expf: range reduction by ln 2 in two parts and
/// a degree-6 polynomial), within ~2 ulp for inputs above -87; smaller inputs give 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.336_54, 88.376_26);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = r.mul_add(1.987_569_1e-4, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r * r, r) + 1.0;
    // 2^n through the exponent bits; n is within [-126, 127] after the clamp.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Softmax of each row over its first `valid` entries; the rest (padded keys) become exactly 0.
#[inline(always)]
fn masked_softmax_kernel(rows: &mut [f32], width: usize, valid: usize) {
    for row in rows.chunks_exact_mut(width) {
        let (live, pad) = row.split_at_mut(valid);
        let max = live.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for v in live.iter_mut() {
            *v = exp(*v - max);
        }
        let inv = 1.0 / sum16(live, |x| x);
        for v in live.iter_mut() {
            *v *= inv;
        }
        pad.fill(0.0);
    }
}

#[inline(always)]
fn bias_gelu_kernel(data: &mut [f32], bias: &[f32]) {
    for row in data.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            let x = *v + b;
            *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

#[inline(always)]
fn bias_kernel(data: &mut [f32], bias: &[f32]) {
    for row in data.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// Sum with 16 independent accumulators (a plain fold would not vectorise: float addition is
/// not associative, so the compiler may not reorder it).
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
    acc.iter().sum::<f32>() + tail.iter().map(|&x| f(x)).sum::<f32>()
}

/// `x = layer_norm(x + bias + residual) * gamma + beta`, row by row.
#[inline(always)]
fn add_norm_kernel(data: &mut [f32], residual: &[f32], p: &AddNormParams<'_>) {
    let n = p.gamma.len();
    for (row, res) in data.chunks_exact_mut(n).zip(residual.chunks_exact(n)) {
        for ((v, r), b) in row.iter_mut().zip(res).zip(p.bias) {
            *v += r + b;
        }
        let mean = sum16(row, |x| x) / n as f32;
        let var = sum16(row, |x| (x - mean) * (x - mean)) / n as f32;
        let inv = 1.0 / (var + p.eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(p.gamma).zip(p.beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

struct AddNormParams<'a> {
    bias: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
}

/// In place: `x = gelu(x + bias)` (exact erf GELU), `x` is `[rows, bias.len()]`.
pub fn bias_gelu_(x: &Tensor, bias: &Tensor) -> Result<()> {
    struct Op;
    impl InplaceOp2 for Op {
        fn name(&self) -> &'static str {
            "bias-gelu"
        }
        fn cpu_fwd(&self, dst: &mut CpuStorage, dl: &Layout, b: &CpuStorage, bl: &Layout) -> Result<()> {
            let bias = slice_f32(b, bl, "bias-gelu bias")?;
            let data = slice_f32_mut(dst, dl, "bias-gelu")?;
            check_rows(data.len(), bias.len(), "bias-gelu")?;
            for_rows(data, bias.len(), |d| bias_gelu_rows(d, bias));
            Ok(())
        }
    }
    x.inplace_op2(bias, &Op)
}

/// In place: `x += bias` broadcast over rows.
pub fn bias_add_(x: &Tensor, bias: &Tensor) -> Result<()> {
    struct Op;
    impl InplaceOp2 for Op {
        fn name(&self) -> &'static str {
            "bias-add"
        }
        fn cpu_fwd(&self, dst: &mut CpuStorage, dl: &Layout, b: &CpuStorage, bl: &Layout) -> Result<()> {
            let bias = slice_f32(b, bl, "bias-add bias")?;
            let data = slice_f32_mut(dst, dl, "bias-add")?;
            check_rows(data.len(), bias.len(), "bias-add")?;
            for_rows(data, bias.len(), |d| bias_rows(d, bias));
            Ok(())
        }
    }
    x.inplace_op2(bias, &Op)
}

/// In place: softmax over the last dimension of attention scores `[batch, heads, queries, keys]`,
/// counting only the first `lengths[b]` keys of sequence `b` (the rest are padding and get 0).
/// Replaces an additive mask tensor, its broadcast add and a scalar-exp softmax.
pub fn masked_softmax_(scores: &Tensor, lengths: &[usize]) -> Result<()> {
    struct Op<'a> {
        lengths: &'a [usize],
    }
    impl candle_core::InplaceOp1 for Op<'_> {
        fn name(&self) -> &'static str {
            "masked-softmax"
        }
        fn cpu_fwd(&self, dst: &mut CpuStorage, dl: &Layout) -> Result<()> {
            let dims = dl.dims();
            let [b, h, q, k] = dims else {
                candle_core::bail!("masked-softmax: expected 4 dims, got {dims:?}")
            };
            let (b, per_seq, k) = (*b, h * q * k, *k);
            if self.lengths.len() != b || self.lengths.iter().any(|&n| n == 0 || n > k) {
                candle_core::bail!("masked-softmax: lengths {:?} do not fit {dims:?}", self.lengths);
            }
            let data = slice_f32_mut(dst, dl, "masked-softmax")?;
            let lengths = self.lengths;
            let run = |(i, seq): (usize, &mut [f32])| masked_softmax_rows(seq, k, lengths[i]);
            if data.len() < PARALLEL_MIN_ELEMS || !intra_op() {
                data.chunks_mut(per_seq).enumerate().for_each(run);
            } else {
                data.par_chunks_mut(per_seq).enumerate().for_each(run);
            }
            Ok(())
        }
    }
    scores.inplace_op1(&Op { lengths })
}

/// Packs a projection's bias with the layer norm that follows it, `[bias; gamma; beta]`, the
/// parameter layout [`bias_residual_layer_norm_`] reads.
pub fn add_norm_params(bias: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    Tensor::stack(&[bias, gamma, beta], 0)?.contiguous()
}

/// In place: `x = layer_norm(x + bias + residual) * gamma + beta` (BERT's "add & norm" after a
/// projection whose bias was not yet added); `params` is [`add_norm_params`]'s `[3, hidden]`.
pub fn bias_residual_layer_norm_(x: &Tensor, residual: &Tensor, params: &Tensor, eps: f32) -> Result<()> {
    struct Op {
        eps: f32,
    }
    impl InplaceOp3 for Op {
        fn name(&self) -> &'static str {
            "bias-residual-layer-norm"
        }
        fn cpu_fwd(
            &self,
            dst: &mut CpuStorage,
            dl: &Layout,
            r: &CpuStorage,
            rl: &Layout,
            pr: &CpuStorage,
            pl: &Layout,
        ) -> Result<()> {
            let params = slice_f32(pr, pl, "add-norm params")?;
            let n = params.len() / 3;
            let p = AddNormParams {
                bias: &params[..n],
                gamma: &params[n..2 * n],
                beta: &params[2 * n..],
                eps: self.eps,
            };
            let residual = slice_f32(r, rl, "add-norm residual")?;
            let data = slice_f32_mut(dst, dl, "add-norm")?;
            check_rows(data.len(), n, "add-norm")?;
            if residual.len() != data.len() || params.len() != 3 * n {
                candle_core::bail!("add-norm: shapes do not match");
            }
            for_rows2(data, residual, n, |d, r| add_norm_rows(d, r, &p));
            Ok(())
        }
    }
    x.inplace_op3(residual, params, &Op { eps })
}

fn check_rows(len: usize, row: usize, what: &str) -> Result<()> {
    if row == 0 || len % row != 0 {
        candle_core::bail!("{what}: {len} elements are not rows of {row}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn erf_is_within_a_few_ulp_of_the_exact_value() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let exact = candle_core::cpu::erf::erf_f64(x as f64);
            worst = worst.max((erf(x) as f64 - exact).abs());
        }
        assert!(worst < 5e-7, "max abs error {worst}");
    }

    #[test]
    fn matmul_matches_candle_on_both_threading_paths() {
        let dev = Device::Cpu;
        for (m, k, n) in [(3, 5, 7), (300, 384, 200)] {
            let a = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, (k, n), &dev).unwrap();
            let want = a.matmul(&b).unwrap();
            for got in [
                matmul(&a, &b).unwrap(),
                single_threaded(|| matmul(&a, &b).unwrap()),
            ] {
                let d = (&want - got).unwrap().abs().unwrap().max_all().unwrap();
                assert!(d.to_scalar::<f32>().unwrap() < 1e-4);
            }
        }
        assert!(matmul(
            &Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap(),
            &Tensor::zeros((4, 2), candle_core::DType::F32, &dev).unwrap()
        )
        .is_err());
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f32;
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - exact) / exact).abs() as f32);
        }
        assert!(worst < 1e-6, "max relative error {worst}");
        assert_eq!(exp(-1000.0), exp(-87.336_54));
        assert!(exp(-1000.0) < 1e-37);
    }

    #[test]
    fn masked_softmax_matches_softmax_over_the_real_keys() {
        let dev = Device::Cpu;
        let scores = Tensor::randn(0f32, 3.0, (2, 3, 4, 5), &dev).unwrap();
        let got = scores.copy().unwrap();
        masked_softmax_(&got, &[5, 2]).unwrap();
        let full = candle_nn::ops::softmax_last_dim(&scores.get(0).unwrap()).unwrap();
        let d = (full - got.get(0).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        let short = candle_nn::ops::softmax_last_dim(
            &scores
                .get(1)
                .unwrap()
                .narrow(2, 0, 2)
                .unwrap()
                .contiguous()
                .unwrap(),
        )
        .unwrap();
        let got1 = got.get(1).unwrap();
        let d = (short - got1.narrow(2, 0, 2).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        let pad = got1.narrow(2, 2, 3).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(pad.to_scalar::<f32>().unwrap(), 0.0);
        assert!(masked_softmax_(&scores.copy().unwrap(), &[6, 1]).is_err());
    }

    #[test]
    fn fused_ops_match_candle_reference_ops() {
        let dev = Device::Cpu;
        // Large enough to take the parallel path too.
        for rows in [3usize, 200] {
            let x = Tensor::randn(0f32, 2.0, (rows, 384), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, 384, &dev).unwrap();
            let r = Tensor::randn(0f32, 1.0, (rows, 384), &dev).unwrap();
            let g = Tensor::randn(1f32, 0.1, 384, &dev).unwrap();
            let be = Tensor::randn(0f32, 0.1, 384, &dev).unwrap();

            let want = x.broadcast_add(&b).unwrap().gelu_erf().unwrap();
            let got = x.copy().unwrap();
            bias_gelu_(&got, &b).unwrap();
            let d = (want - &got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-5, "gelu diff {d}");

            let sum = (x.broadcast_add(&b).unwrap() + &r).unwrap();
            let want = candle_nn::ops::layer_norm_slow(&sum, &g, &be, 1e-12).unwrap();
            let got = x.copy().unwrap();
            bias_residual_layer_norm_(&got, &r, &add_norm_params(&b, &g, &be).unwrap(), 1e-12).unwrap();
            let d = (want - &got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-4, "layer norm diff {d}");

            let want = x.broadcast_add(&b).unwrap();
            let got = x.copy().unwrap();
            bias_add_(&got, &b).unwrap();
            let d = (want - &got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0);
        }
    }
}
