//! Property test: random compositions of a written forward's vocabulary
//! (children reused many times, skips, element-wise arithmetic with
//! broadcasting scalars, cat / narrow / chunk, sigmoid, tanh, gelu,
//! softmax, log_softmax) agree with central finite differences through
//! the public `nncore::gradcheck`.

use nncore::prelude::*;
use proptest::prelude::*;

#[derive(Module)]
struct Program {
    a: Linear,
    b: Linear,
    head: Linear,
    #[module(skip)]
    ops: Vec<u8>,
    tape: Tape,
}

#[nncore::forward]
impl Program {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.a(x)?;
        let mut skip = h;
        for k in 0..self.ops.len() {
            match self.ops[k] {
                0 => h = tanh(h),
                1 => h = sigmoid(h) * h,
                2 => h = h + skip,
                3 => h = h * 0.5 - skip / 3.0,
                4 => h = self.b(h)?,
                5 => h = cat(&[h.narrow(1, 2, 2), h.narrow(1, 0, 2)], 1),
                6 => {
                    let [p, q] = h.chunk(2, 1);
                    h = cat(&[p * q, p - q], 1);
                }
                7 => h = softmax(h, 1) + h,
                8 => h = gelu(h),
                9 => skip = h,
                10 => h = h / (1.0 + h * h),
                11 => h = log_softmax(h, 1) - 1.0 / (2.0 + sigmoid(skip)),
                _ => h = -h,
            }
        }
        self.head(h)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_compositions_match_finite_differences(
        seed in any::<u64>(),
        batch in 1usize..4,
        ops in proptest::collection::vec(0u8..13, 1..10),
    ) {
        let mut g = nncore::Generator::new(seed);
        let mut m = Program {
            a: Linear::with_generator(3, 4, true, &mut g),
            b: Linear::with_generator(4, 4, true, &mut g),
            head: Linear::with_generator(4, 2, true, &mut g),
            ops,
            tape: Tape::default(),
        };
        let x = g.uniform_tensor(batch, 3, -1.0, 1.0);
        let r = nncore::GradCheck::new().seed(seed).run(&mut m, &x);
        prop_assert!(r.is_ok(), "{:?}: {}", m.ops, r.unwrap_err());
    }
}
