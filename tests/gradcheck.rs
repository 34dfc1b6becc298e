//! Property tests: on random small models, inputs and losses, the derived
//! backward agrees with central finite differences of the loss, for every
//! parameter element and every input element.
//!
//! The runtime is f32, so the check uses a step of 1e-3 and a tolerance of
//! 2e-3 absolute plus 2% relative; models whose ReLU pre-activations lie
//! within reach of the step are rejected (the loss has a kink there).

use nncore::prelude::*;
use nncore::{BCEWithLogitsLoss, CrossEntropyLoss, Generator, MSELoss};
use proptest::prelude::*;

#[derive(Module)]
struct Mlp {
    a: Linear,
    r: ReLU,
    b: Linear,
}

#[derive(Module)]
struct Deep {
    mlp: Mlp,
    r: ReLU,
    head: Linear,
}

const EPS: f32 = 1e-3;

fn loss(kind: u8, out: &Tensor, target: &Tensor, labels: &[usize]) -> (f32, Tensor) {
    let o = match kind {
        0 => MSELoss::new().forward(out, target),
        1 => CrossEntropyLoss::new().forward(out, labels),
        _ => BCEWithLogitsLoss::new().forward(out, &target.map(|t| (t + 1.0) / 2.0)),
    }
    .unwrap();
    (o.item(), o.grad)
}

/// Pre-activations of both ReLUs, to keep away from kinks.
fn min_preactivation(m: &Deep, x: &Tensor) -> f32 {
    let p1 = m.mlp.a.forward(x).unwrap();
    let h1 = m.mlp.r.forward(&p1).unwrap();
    let p2 = m.mlp.b.forward(&h1).unwrap();
    p1.iter()
        .chain(p2.iter())
        .fold(f32::INFINITY, |a, v| a.min(v.abs()))
}

fn close(analytic: f32, numeric: f32) -> bool {
    (analytic - numeric).abs() <= 2e-3 + 0.02 * numeric.abs()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn backward_matches_finite_differences(
        seed in any::<u64>(),
        batch in 1usize..4,
        input in 1usize..5,
        hidden in 1usize..5,
        classes in 2usize..4,
        kind in 0u8..3,
    ) {
        let mut g = Generator::new(seed);
        let mut model = Deep {
            mlp: Mlp {
                a: Linear::with_generator(input, hidden, true, &mut g),
                r: ReLU::new(),
                b: Linear::with_generator(hidden, hidden, true, &mut g),
            },
            r: ReLU::new(),
            head: Linear::with_generator(hidden, classes, seed % 2 == 0, &mut g),
        };
        let x = g.uniform_tensor(batch, input, -1.0, 1.0);
        let target = g.uniform_tensor(batch, classes, -1.0, 1.0);
        let labels: Vec<usize> = (0..batch).map(|i| (g.next_u32() as usize + i) % classes).collect();
        prop_assume!(min_preactivation(&model, &x) > 0.02);

        model.zero_grad();
        let out = model.forward_train(&x).unwrap();
        let (_, grad) = loss(kind, out, &target, &labels);
        let dx = model.backward(&grad).unwrap().clone();

        // Parameters.
        let analytic: Vec<Tensor> = model.parameters().iter().map(|p| p.grad().unwrap().clone()).collect();
        for (pi, grad_p) in analytic.iter().enumerate() {
            for (e, &a) in grad_p.iter().enumerate() {
                let mut eval = |delta: f32| {
                    let mut k = 0;
                    model.visit_parameters_mut(&mut |_, p| {
                        if k == pi { p.value_mut()[e] += delta; }
                        k += 1;
                    });
                    let l = loss(kind, &model.forward(&x).unwrap(), &target, &labels).0;
                    let mut k = 0;
                    model.visit_parameters_mut(&mut |_, p| {
                        if k == pi { p.value_mut()[e] -= delta; }
                        k += 1;
                    });
                    l
                };
                let numeric = (eval(EPS) - eval(-EPS)) / (2.0 * EPS);
                prop_assert!(close(a, numeric),
                    "param {pi} element {e}: backward {a} vs finite difference {numeric}");
            }
        }

        // Input.
        for e in 0..x.len() {
            let mut xp = x.clone();
            xp[e] += EPS;
            let mut xm = x.clone();
            xm[e] -= EPS;
            let lp = loss(kind, &model.forward(&xp).unwrap(), &target, &labels).0;
            let lm = loss(kind, &model.forward(&xm).unwrap(), &target, &labels).0;
            let numeric = (lp - lm) / (2.0 * EPS);
            prop_assert!(close(dx[e], numeric), "input element {e}: backward {} vs finite difference {numeric}", dx[e]);
        }
    }
}
