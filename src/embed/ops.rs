//! Scalar math the kernels inline (branch-free, so it vectorises inside AVX-512 functions), and
//! the per-thread switch that keeps a forward pass on its calling thread.

use std::cell::Cell;

thread_local! {
    static INTRA_OP: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` with forward passes kept on the calling thread. Used when
/// several batches run at once, one per thread: splitting each operation as well would only add
/// synchronisation.
pub fn single_threaded<R>(f: impl FnOnce() -> R) -> R {
    let before = INTRA_OP.with(|c| c.replace(false));
    let r = f();
    INTRA_OP.with(|c| c.set(before));
    r
}

pub(crate) fn intra_op() -> bool {
    INTRA_OP.with(Cell::get) && rayon::current_num_threads() > 1
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
