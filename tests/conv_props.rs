//! Property tests for the image layers: on random configurations (kernel,
//! stride, padding including "same" and every padding mode, dilation,
//! groups, bias, ceil mode)
//! and random inputs, every layer's backward agrees with central finite
//! differences of its forward, for every parameter element and every
//! input element (`GradCheck::run_nd`), and a chain of them agrees too.
//!
//! Max pooling is checked on inputs whose values are at least 0.01 apart
//! (a shuffled ramp), so that no step of the finite differences changes
//! which element of a window is the maximum.

use nncore::prelude::*;
use nncore::{Conv2dConfig, Generator, GradCheck, Padding, PaddingMode};
use proptest::prelude::*;

/// `n` samples of `c x h x w` uniform in [-1, 1].
fn uniform(g: &mut Generator, shape: [usize; 4]) -> NdTensor {
    let [n, c, h, w] = shape;
    let x = g.uniform_tensor(n, c * h * w, -1.0, 1.0);
    NdTensor::new(x, Dims::image(c, h, w)).unwrap()
}

/// A shuffled ramp: distinct values 0.01 apart, centred on 0.
fn ramp(g: &mut Generator, shape: [usize; 4]) -> NdTensor {
    let len: usize = shape.iter().product();
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        order.swap(i, g.next_u32() as usize % (i + 1));
    }
    let v: Vec<f32> = order
        .iter()
        .map(|&k| (k as f32 - len as f32 / 2.0) * 0.01)
        .collect();
    NdTensor::from_row_major(&shape, &v).unwrap()
}

fn check<M: Backward>(m: &mut M, x: &NdTensor) -> Result<(), TestCaseError> {
    match GradCheck::new().run_nd(m, x) {
        Ok(r) => {
            prop_assert!(r.checked > 0);
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!("{}: {e}", nncore::repr(m)))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn conv2d_backward_matches_finite_differences(
        seed in any::<u64>(),
        n in 1usize..3,
        groups in 1usize..3,
        cin in 1usize..3,
        cout in 1usize..3,
        k in (1usize..4, 1usize..4),
        stride in (1usize..3, 1usize..3),
        dilation in (1usize..3, 1usize..3),
        pad in 0usize..4,
        bias in any::<bool>(),
        extra in (0usize..4, 0usize..4),
        mode in 0usize..4,
    ) {
        let (cin, cout) = (cin * groups, cout * groups);
        let mode = [
            PaddingMode::Zeros,
            PaddingMode::Reflect,
            PaddingMode::Replicate,
            PaddingMode::Circular,
        ][mode];
        let padding = match pad {
            3 if stride == (1, 1) => Padding::Same,
            3 => Padding::Valid,
            p => Padding::from((p, p.min(1))),
        };
        let cfg = Conv2dConfig::new(cin, cout, k)
            .stride(stride)
            .dilation(dilation)
            .padding(padding)
            .groups(groups)
            .bias(bias)
            .padding_mode(mode);
        let mut g = Generator::new(seed);
        let mut conv = cfg.build_with(&mut g).unwrap();
        // Big enough for the dilated kernel whatever the padding.
        let h = dilation.0 * (k.0 - 1) + 1 + extra.0;
        let w = dilation.1 * (k.1 - 1) + 1 + extra.1;
        let x = uniform(&mut g, [n, cin, h, w]);
        // A reflection or wrap wider than the image is PyTorch's error.
        prop_assume!(conv.forward_nd(&x).is_ok());
        check(&mut conv, &x)?;
    }

    #[test]
    fn pooling_backward_matches_finite_differences(
        seed in any::<u64>(),
        n in 1usize..3,
        c in 1usize..3,
        k in (1usize..4, 1usize..4),
        stride in (1usize..3, 1usize..3),
        dilation in (1usize..3, 1usize..3),
        pad in (0usize..2, 0usize..2),
        ceil in any::<bool>(),
        extra in (0usize..4, 0usize..4),
        out in (1usize..4, 1usize..4),
    ) {
        let mut g = Generator::new(seed);
        let h = dilation.0 * (k.0 - 1) + 1 + extra.0;
        let w = dilation.1 * (k.1 - 1) + 1 + extra.1;
        // Padding at most half the (dilated) kernel, as PyTorch requires.
        let pad = (pad.0.min((dilation.0 * (k.0 - 1)).div_ceil(2)), pad.1.min((dilation.1 * (k.1 - 1)).div_ceil(2)));
        let mut max = MaxPool2d::with_options(k, stride, pad, dilation, ceil).unwrap();
        check(&mut max, &ramp(&mut g, [n, c, h, w]))?;
        let avg_pad = (pad.0.min(k.0 / 2), pad.1.min(k.1 / 2));
        let h = k.0 + extra.0;
        let w = k.1 + extra.1;
        let mut avg = AvgPool2d::with_options(k, stride, avg_pad)
            .unwrap()
            .with_ceil_mode(ceil)
            .with_count_include_pad(seed % 2 == 0);
        check(&mut avg, &uniform(&mut g, [n, c, h, w]))?;
        let mut adaptive = AdaptiveAvgPool2d::new(out);
        check(&mut adaptive, &uniform(&mut g, [n, c, h, w]))?;
    }

    #[test]
    fn batch_norm_2d_and_a_cnn_backward_match_finite_differences(
        seed in any::<u64>(),
        n in 2usize..4,
        c in 1usize..4,
        hw in (1usize..4, 1usize..4),
    ) {
        let mut g = Generator::new(seed);
        let mut bn = BatchNorm2d::new(c);
        bn.visit_parameters_mut(&mut |_, p| {
            let mut v = vec![0.0; p.numel()];
            g.fill_uniform(&mut v, 0.5, 1.5);
            p.copy_from_row_major(&v).unwrap();
        });
        let x = uniform(&mut g, [n, c, hw.0, hw.1]);
        // Training normalizes with the batch's statistics.
        GradCheck::new()
            .training(true)
            .run_nd(&mut bn, &x)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        bn.eval();
        check(&mut bn, &x)?;

        // Layers composed: the shape travels, the gradients chain.
        let mut net = Sequential::new()
            .with(Conv2dConfig::new(c, 2, 2).padding(1).build_with(&mut g).unwrap())
            .with(Tanh::new())
            .with(AvgPool2d::new(2))
            .with(Flatten::new())
            .with(Linear::with_generator(2 * hw.0.div_ceil(2) * hw.1.div_ceil(2), 3, true, &mut g));
        check(&mut net, &x)?;
    }
}
