//! Branch-free `f32` `exp`, `tanh`, `sigmoid` and GELU for the element-wise
//! layers.
//!
//! Each function is plain arithmetic, comparisons and selects (no calls,
//! no tables), `#[inline(always)]`: inside [`super::map_into`]'s loops
//! LLVM turns it into 16-, 8- or 4-wide vector code, where the `libm`
//! calls they replace ran one value at a time (a 64-wide `Tanh` went from
//! ~8 ns to well under 1 ns per value). Rust never contracts `a * b + c`
//! into an FMA, so every CPU variant gives the same bits.
//!
//! Accuracy, the worst over every 401st float against `f64` references
//! (the tests below; `-- --nocapture` prints them): `exp` 0.94 ulp,
//! `tanh` 1.24, `sigmoid` 2.18 (PyTorch's formula: its `exp` to 1 ulp,
//! as SLEEF's, then two roundings), `gelu_erf` 2.23 of `x * Phi(x)` over
//! its whole range (PyTorch's own erf-based GELU is off by up to 20% in
//! the negative tail: its `gelu(-5)` is -1.19e-6, the true value
//! -1.43e-6), `gelu_tanh` 1.64 above -0.25 (below, `1 + tanh` cancels
//! in `f32`, as in PyTorch).
//! Overflow, NaN, infinities and signed zeros follow PyTorch: `exp(89) =
//! inf`, `sigmoid(-89) = 0`, `tanh(NaN) = NaN`, `tanh(-0.0) = -0.0`.

/// 2^23 + 2^22: adding and subtracting it rounds an `f32` below 2^22 in
/// magnitude to the nearest integer (ties to even), in every vector width.
const ROUND: f32 = 12_582_912.0;

/// Above this `exp` overflows (`ln(f32::MAX)`).
const EXP_HI: f32 = 88.722_84;
/// Below this `exp` rounds to zero (`ln` of half the least subnormal).
const EXP_LO: f32 = -103.972_08;

/// `e^x` (Cephes' `expf`: `x = n ln 2 + r`, `|r| <= ln 2 / 2`, a degree-7
/// polynomial for `e^r`, `2^n` put in as two exponent halves so that
/// subnormal results round once).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = C1 + C2, C1 with 9 significant bits: n * C1 is exact.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // `clamp` keeps NaN: it passes through to the result.
    let xc = x.clamp(EXP_LO, EXP_HI);
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (xc - n * C1) - n * C2;
    // The polynomial in Estrin's order (pairs, then r^2 and r^4): about
    // half Horner's dependent steps, for the latency of short rows.
    let r2 = r * r;
    let p = (0.5 + 0.166_666_65 * r)
        + r2 * (4.166_579_6e-2 + 8.333_452e-3 * r)
        + (r2 * r2) * (1.398_199_9e-3 + 1.987_569_1e-4 * r);
    let y = p * r2 + r + 1.0;
    // n is in [-150, 128]: each half's 2^k is a normal float. The integer
    // n sits in the low bits of `shifted` (an `as` cast would be
    // saturating scalar code; NaN gives a NaN `y` whatever the scale).
    let ni = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let n1 = ni >> 1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - n1 + 127) as u32) << 23);
    let y = y * s1 * s2;
    if x > EXP_HI {
        f32::INFINITY
    } else if x < EXP_LO {
        0.0
    } else {
        y
    }
}

/// `tanh(x)`: an odd polynomial below 0.625 in magnitude (Cephes'
/// `tanhf`), `1 - 2 / (e^(2|x|) + 1)` with `x`'s sign above.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let z = x * x;
    let small = ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 0.133_314_42)
        * z
        - 0.333_332_8)
        * z
        * x
        + x;
    let a = x.abs();
    let large = (1.0 - 2.0 / (exp(2.0 * a) + 1.0)).copysign(x);
    // NaN: `a < 0.625` is false and `large` is NaN.
    // `small` has x's sign (the copy keeps -0.0's).
    if a < 0.625 { small.copysign(x) } else { large }
}

/// The logistic function as PyTorch computes it, `1 / (1 + e^-x)`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `e^x` in `f64` for `gelu_erf` and the cross-entropy's softmax, to
/// about 1e-10 relative for `x` in [-700, 0] (degree-9 Taylor on
/// `|r| <= ln 2 / 2`), and `e^-700` below (1e-304: zero once rounded to
/// `f32`). Only for `x <= 0` (or NaN, which it returns).
#[inline(always)]
pub(crate) fn exp_f64(x: f64) -> f64 {
    const ROUND64: f64 = 6_755_399_441_055_744.0; // 2^52 + 2^51
    let xc = if x < -700.0 { -700.0 } else { x };
    let shifted = xc * std::f64::consts::LOG2_E + ROUND64;
    let n = shifted - ROUND64;
    let r = xc - n * std::f64::consts::LN_2;
    // Taylor's 1/k! in Estrin's order (constant reciprocals: multiplies).
    const F: [f64; 10] = {
        let mut f = [1.0; 10];
        let mut k = 2;
        while k < 10 {
            f[k] = f[k - 1] / k as f64;
            k += 1;
        }
        f
    };
    let (r2, r4) = (r * r, (r * r) * (r * r));
    let p = ((1.0 + r) + r2 * (F[2] + F[3] * r))
        + r4 * ((F[4] + F[5] * r) + r2 * (F[6] + F[7] * r))
        + (r4 * r4) * (F[8] + F[9] * r);
    // n in [-1010, 1]: 2^n is a normal double, its exponent field n + 1023.
    let ni = shifted.to_bits().wrapping_sub(ROUND64.to_bits());
    p * f64::from_bits(ni.wrapping_add(1023) << 52)
}

/// `erfc(|x| / sqrt 2) / 2` in `f64` (so `Phi(x)` is this for negative
/// `x` and one minus it for positive), from Numerical Recipes' Chebyshev
/// fit `erfc(z) = t exp(-z^2 + P(t))`, `t = 1 / (1 + z/2)` (relative
/// error below 1.2e-7 for every `z >= 0`).
#[inline(always)]
fn half_erfc(x: f64) -> f64 {
    let z = x.abs() * std::f64::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    // Numerical Recipes' coefficients of t^0..t^9, in Estrin's order.
    let (t2, t4) = (t * t, (t * t) * (t * t));
    let p = ((-1.265_512_23 + 1.000_023_68 * t) + t2 * (0.374_091_96 + 0.096_784_18 * t))
        + t4 * ((-0.186_288_06 + 0.278_868_07 * t) + t2 * (-1.135_203_98 + 1.488_515_87 * t))
        + (t4 * t4) * (-0.822_152_23 + 0.170_872_77 * t);
    0.5 * t * exp_f64(p - z * z)
}

/// The exact GELU `x * Phi(x)`, in `f64` from [`half_erfc`]: `x * (1 -
/// erfc/2)` for positive `x` and `x * erfc/2` for negative, so that
/// neither tail cancels.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    let x = f64::from(x);
    let h = half_erfc(x);
    let y = if x > 0.0 { x * (1.0 - h) } else { x * h };
    y as f32
}

/// The exact GELU's derivative `Phi(x) + x phi(x)`, in `f64`
/// (`phi(x) = e^(-x^2/2) / sqrt(2 pi)`).
#[inline(always)]
pub(crate) fn gelu_erf_derivative(x: f32) -> f32 {
    const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    let x = f64::from(x);
    let h = half_erfc(x);
    let cdf = if x > 0.0 { 1.0 - h } else { h };
    let d = cdf + x * (INV_SQRT_2PI * exp_f64(-0.5 * (x * x)));
    d as f32
}

/// PyTorch's `approximate='tanh'` GELU in its own order of `f32`
/// operations: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const BETA: f32 = 0.797_884_6; // sqrt(2) * (2 / sqrt(pi)) * 0.5
    const KAPPA: f32 = 0.044_715;
    let inner = BETA * (x + KAPPA * (x * x * x));
    0.5 * x * (1.0 + tanh(inner))
}

/// The derivative of [`gelu_tanh`] in `f32`, as PyTorch's backward
/// computes it: `0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715
/// x^2)` with `t = tanh(sqrt(2/pi) (x + 0.044715 x^3))`.
#[inline(always)]
pub(crate) fn gelu_tanh_derivative(x: f32) -> f32 {
    const BETA: f32 = 0.797_884_6;
    const KAPPA: f32 = 0.044_715;
    let x2 = x * x;
    let t = tanh(BETA * (x + KAPPA * (x2 * x)));
    let left = 0.5 * (1.0 + t);
    let right = 0.5 * x * ((1.0 - t * t) * (BETA * (1.0 + 3.0 * KAPPA * x2)));
    left + right
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between `got` and the `f64`
    /// reference `want` rounded to `f32` (1 ulp of the least normal for
    /// subnormal references).
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        if got == w {
            return 0.0;
        }
        let ulp = if w.abs() < f32::MIN_POSITIVE {
            f64::from(f32::from_bits(1))
        } else {
            let b = w.abs().to_bits();
            f64::from(f32::from_bits(b + 1)) - f64::from(f32::from_bits(b))
        };
        (f64::from(got) - want).abs() / ulp
    }

    /// Every 401st float between -`hi` and `hi`, plus the edges.
    fn grid(hi: f32) -> impl Iterator<Item = f32> {
        let top = hi.to_bits();
        (0..top).step_by(401).chain([top]).flat_map(|b| {
            let v = f32::from_bits(b);
            [v, -v]
        })
    }

    fn worst(
        f: impl Fn(f32) -> f32,
        reference: impl Fn(f64) -> f64,
        xs: impl Iterator<Item = f32>,
    ) -> (f64, f32) {
        let mut w = (0.0, 0.0);
        for x in xs {
            let e = ulps(f(x), reference(f64::from(x)));
            if e > w.0 {
                w = (e, x);
            }
        }
        // `cargo test -p nncore --lib vmath -- --nocapture` shows them.
        println!("worst: {} ulp at {}", w.0, w.1);
        w
    }

    fn phi(x: f64) -> f64 {
        0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
    }

    /// The element-wise kernels' vector code (the best variant this CPU
    /// has, or the one `NNCORE_CPU` caps it at: CI runs all three) gives
    /// each function's scalar bits, at every position of a vector.
    #[test]
    fn vector_code_gives_the_scalar_bits() {
        let mut xs: Vec<f32> = (0..120.0f32.to_bits())
            .step_by(4099)
            .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
            .collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
        ]);
        // A fn item each, as the layers pass them (so the call inlines).
        macro_rules! check {
            ($($f:ident),*) => {$(
                let mut out = vec![0.0; xs.len()];
                super::super::map_into(&xs, &mut out, $f);
                for (x, y) in xs.iter().zip(&out) {
                    let want = std::hint::black_box($f as fn(f32) -> f32)(*x);
                    assert!(
                        y.to_bits() == want.to_bits() || (y.is_nan() && want.is_nan()),
                        "{}({x}): {y} in vector code, {want} alone",
                        stringify!($f)
                    );
                }
            )*};
        }
        check!(
            exp,
            tanh,
            sigmoid,
            gelu_erf,
            gelu_tanh,
            gelu_erf_derivative,
            gelu_tanh_derivative
        );
    }

    #[test]
    fn exp_is_within_1_ulp_over_its_whole_range() {
        let xs = grid(110.0);
        let (e, at) = worst(exp, f64::exp, xs);
        assert!(e <= 1.0, "exp: {e} ulp at {at}");
    }

    #[test]
    fn exp_overflows_underflows_and_propagates_nan_as_pytorch() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(88.8), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(-104.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(
            exp(-100.0) > 0.0 && exp(-100.0) < f32::MIN_POSITIVE,
            "subnormal"
        );
        assert_eq!(exp(f32::MAX.ln()), (f64::from(f32::MAX.ln())).exp() as f32);
    }

    #[test]
    fn tanh_is_within_1_5_ulp_and_keeps_signs() {
        let (e, at) = worst(tanh, f64::tanh, grid(12.0));
        assert!(e <= 1.5, "tanh: {e} ulp at {at}");
        assert_eq!(tanh(20.0), 1.0);
        assert_eq!(tanh(-1e30), -1.0);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh(1e-30), 1e-30);
    }

    #[test]
    fn sigmoid_is_within_2_5_ulp_and_saturates_as_pytorch() {
        // Below -88.72, e^-x overflows f32 and the result is 0, as in
        // PyTorch (whose exp overflows there too).
        let xs = grid(100.0).filter(|x| *x > -EXP_HI);
        let (e, at) = worst(sigmoid, |x| 1.0 / (1.0 + (-x).exp()), xs);
        assert!(e <= 2.5, "sigmoid: {e} ulp at {at}");
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(100.0), 1.0);
        assert_eq!(sigmoid(-89.0), 0.0);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
        assert!(sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_erf_is_within_2_5_ulp_of_x_phi_x() {
        let (e, at) = worst(gelu_erf, |x| x * phi(x), grid(20.0));
        assert!(e <= 2.5, "gelu: {e} ulp at {at}");
        assert_eq!(gelu_erf(0.0), 0.0);
        assert_eq!(gelu_erf(f32::INFINITY), f32::INFINITY);
        assert!(gelu_erf(f32::NAN).is_nan());
        assert_eq!(gelu_erf(-20.0), 0.0);
    }

    #[test]
    fn gelu_erf_derivative_is_phi_plus_x_pdf() {
        let exact = |x: f64| {
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            phi(x) + x * pdf
        };
        // For negative x the two terms cancel (to 0 at x = -0.75): there
        // the fit's error is absolute, against the terms' scale.
        let (mut worst, mut worst_abs) = (0.0f64, 0.0f64);
        for x in grid(20.0) {
            let (got, want) = (gelu_erf_derivative(x), exact(f64::from(x)));
            if !(-4.0..0.0).contains(&x) {
                let e = ulps(got, want);
                worst = worst.max(e);
                assert!(e <= 3.0, "gelu'({x}) = {got}, not {want}: {e} ulp");
            } else {
                let e = (f64::from(got) - want).abs();
                worst_abs = worst_abs.max(e);
                assert!(e <= 7e-8, "gelu'({x}) = {got}, not {want}");
            }
        }
        println!("worst: {worst} ulp; in [-4, 0) {worst_abs:e}");
        assert_eq!(gelu_erf_derivative(0.0), 0.5);
        assert_eq!(gelu_erf_derivative(30.0), 1.0);
        assert_eq!(gelu_erf_derivative(-30.0), 0.0);
        assert!(gelu_erf_derivative(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_tanh_derivative_is_its_formula() {
        let f = |x: f64| {
            let (b, k) = (0.797_884_560_802_865_4, 0.044_715);
            let t = (b * (x + k * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * b * (1.0 + 3.0 * k * x * x)
        };
        for x in grid(12.0) {
            let (got, want) = (f64::from(gelu_tanh_derivative(x)), f(f64::from(x)));
            // 1 + t and 1 - t^2 cancel in f32 as in PyTorch: a few ulp of 1,
            // times up to |x| times the slope's factor.
            let tol = 4.0 * f64::from(f32::EPSILON) * (1.0 + f64::from(x).abs().powi(3));
            assert!(
                (got - want).abs() <= tol,
                "gelu_tanh'({x}) = {got}, not {want}"
            );
        }
    }

    #[test]
    fn gelu_tanh_is_its_formula_up_to_the_cancellation_of_1_plus_tanh() {
        let f = |x: f64| {
            0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044_715 * x * x * x)).tanh())
        };
        let (e, at) = worst(gelu_tanh, f, grid(12.0).filter(|x| *x >= -0.25));
        assert!(e <= 2.0, "gelu_tanh: {e} ulp at {at}");
        // Below, `1 + tanh` cancels in f32 as it does in PyTorch: an error
        // of a few ulp of 1 in `tanh`, times `x / 2`.
        for x in grid(12.0).filter(|x| *x < -0.25) {
            let (got, want) = (f64::from(gelu_tanh(x)), f(f64::from(x)));
            let tol = 2.0 * f64::from(f32::EPSILON) * f64::from(x).abs();
            assert!(
                (got - want).abs() <= tol,
                "gelu_tanh({x}) = {got}, not {want}"
            );
        }
    }
}
