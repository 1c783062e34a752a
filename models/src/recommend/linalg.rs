//! The small dense algebra the factorisation needs: `k x k` Gram matrices and symmetric positive-definite
//! solves (Cholesky), in `f64` because the systems sum thousands of outer products.

use crate::recommend::RecommendSpec;
use crate::ModelError;

/// `F^T F` for the rows of `factors` (row-major, `k` wide), as a `k x k` row-major matrix.
pub(crate) fn gram(factors: &[f32], k: usize) -> Vec<f64> {
    let mut g = vec![0.0f64; k * k];
    for row in factors.chunks_exact(k) {
        add_outer(&mut g, row, 1.0, k);
    }
    g
}

/// `m += w * v v^T` (upper and lower halves both).
pub(crate) fn add_outer<T: Copy + Into<f64>>(m: &mut [f64], v: &[T], w: f64, k: usize) {
    for (a, &va) in v.iter().enumerate().take(k) {
        let wa = w * va.into();
        let row = &mut m[a * k..a * k + k];
        for (r, &vb) in row.iter_mut().zip(v) {
            *r += wa * vb.into();
        }
    }
}

/// Solves `A x = b` for symmetric positive-definite `A` (`k x k`, row-major) in place of `b`; `A` is
/// overwritten by its Cholesky factor. An error when `A` is not positive definite (non-finite input).
pub(crate) fn cholesky_solve(a: &mut [f64], b: &mut [f64], k: usize) -> Result<(), ModelError> {
    for j in 0..k {
        let mut d = a[j * k + j];
        for p in 0..j {
            d -= a[j * k + p] * a[j * k + p];
        }
        if !(d.is_finite() && d > 0.0) {
            return Err(ModelError::InvalidParams("a customer's system is not positive definite".into()));
        }
        let d = d.sqrt();
        a[j * k + j] = d;
        for i in j + 1..k {
            let mut s = a[i * k + j];
            for p in 0..j {
                s -= a[i * k + p] * a[j * k + p];
            }
            a[i * k + j] = s / d;
        }
    }
    // L y = b, then L^T x = y.
    for i in 0..k {
        let mut s = b[i];
        for p in 0..i {
            s -= a[i * k + p] * b[p];
        }
        b[i] = s / a[i * k + i];
    }
    for i in (0..k).rev() {
        let mut s = b[i];
        for p in i + 1..k {
            s -= a[p * k + i] * b[p];
        }
        b[i] = s / a[i * k + i];
    }
    Ok(())
}

/// The customer factor minimising `sum_i c_i (p_i - x . y_i)^2 + user_l2 |x|^2` over all items, given the
/// items' Gram matrix `gram` and the customer's purchases `history` (item index, invoices).
pub(crate) fn solve_user(
    factors: &[f32],
    gram: &[f64],
    k: usize,
    history: &[(u32, f32)],
    spec: &RecommendSpec,
) -> Result<Vec<f32>, ModelError> {
    let mut a = gram.to_vec();
    let mut b = vec![0.0f64; k];
    for d in a.iter_mut().step_by(k + 1) {
        *d += f64::from(spec.user_l2);
    }
    for &(i, r) in history {
        let y = row(factors, i, k)?;
        let c = 1.0 + f64::from(spec.alpha) * f64::from(r);
        add_outer(&mut a, y, c - 1.0, k);
        for (bj, &yj) in b.iter_mut().zip(y) {
            *bj += c * f64::from(yj);
        }
    }
    cholesky_solve(&mut a, &mut b, k)?;
    Ok(b.into_iter().map(|v| v as f32).collect())
}

/// Row `i` of a `k`-wide matrix, or an error if `i` is out of range.
pub(crate) fn row(factors: &[f32], i: u32, k: usize) -> Result<&[f32], ModelError> {
    let start = i as usize * k;
    factors
        .get(start..start + k)
        .ok_or_else(|| ModelError::InvalidInput(format!("item index {i} is out of range")))
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        // A = [[4, 2], [2, 3]], b = [2, 1] -> x = [0.5, 0].
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let mut b = vec![2.0, 1.0];
        cholesky_solve(&mut a, &mut b, 2).unwrap();
        assert!((b[0] - 0.5).abs() < 1e-12 && b[1].abs() < 1e-12, "{b:?}");
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert!(cholesky_solve(&mut a, &mut [1.0, 1.0], 2).is_err());
        let mut a = vec![f64::NAN, 0.0, 0.0, 1.0];
        assert!(cholesky_solve(&mut a, &mut [1.0, 1.0], 2).is_err());
    }

    #[test]
    fn gram_is_symmetric() {
        let f = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let g = gram(&f, 2);
        assert_eq!(g, vec![35.0, 44.0, 44.0, 56.0]);
        assert!(row(&f, 3, 2).is_err());
    }
}
