//! The one matrix product of the hand-written CPU scorer, through `matrixmultiply`'s sgemm
//! (runtime-selected AVX/FMA kernels).
//!
//! Why unsafe is allowed here: the safe per-row loop reached 1.4 M rows/s on the score bench
//! (`benches/score.rs`, 40 features, batch 4096, one core), short of the 2.5 M bar, because
//! the baseline x86-64 target vectorises it 4 wide without FMA; sgemm's dispatched kernels
//! are what `stack.md` measured at 4.9 M rows/s. The only unsafe block is below, behind a safe
//! signature that checks every length first.

/// C = A B + C for row-major A `[m, k]`, B `[k, n]`, C `[m, n]`.
///
/// # Panics
/// If a slice is shorter than its shape says (a caller bug, never input-dependent: shapes
/// come from the model's own weights).
pub fn gemm_acc(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm_acc: slices shorter than [{m}, {k}] x [{k}, {n}]"
    );
    if m == 0 || n == 0 {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: the assert above guarantees that the row-major strides (k, 1), (n, 1), (n, 1)
    // address only elements inside `a`, `b` and `c`; `c` is borrowed mutably and does not
    // alias `a` or `b`; sgemm reads a and b and writes c only within [m, n].
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            1.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_accumulates() {
        // [1 2; 3 4] x [5 6; 7 8] = [19 22; 43 50], plus C = 1.
        let mut c = vec![1.0; 4];
        gemm_acc(&[1., 2., 3., 4.], &[5., 6., 7., 8.], &mut c, 2, 2, 2);
        assert_eq!(c, [20., 23., 44., 51.]);
    }
}
