//! The five workloads of `benches/workloads.rs` in candle and Burn (Flex
//! backend), timed the same way as `scripts/bench_pytorch.py` (median of
//! at least 2 s of runs after a warm-up), one thread. Prints one line per
//! workload and framework.
//!
//!     cd benches/peers && RAYON_NUM_THREADS=1 cargo run --release
//!     cd benches/peers && RAYON_NUM_THREADS=1 cargo run --release -- latency
//!
//! `latency` also runs the other small chains of `benches/latency.rs`
//! (`CHAINS`: sizes off the multiples of 16, no bias, Sigmoid, GELU, Tanh).

use std::time::Instant;

fn median_time(mut f: impl FnMut()) -> f64 {
    for _ in 0..10 {
        f();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 2.0 || samples.len() < 20 {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

fn report(framework: &str, workload: &str, t: f64) {
    let shown = if t < 1e-3 { format!("{:.2} µs", t * 1e6) } else { format!("{:.2} ms", t * 1e3) };
    println!("{framework:<8} {workload:<18} {shown:>12}");
}

mod candle_runs {
    use super::{median_time, report};
    use candle_core::{DType, Device, Module, Tensor};
    use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap, SGD};

    struct Net {
        layers: Vec<Linear>,
    }

    impl Net {
        fn new(sizes: &[usize], vb: VarBuilder) -> Self {
            let layers = sizes
                .windows(2)
                .enumerate()
                .map(|(i, w)| linear(w[0], w[1], vb.pp(format!("fc{i}"))).unwrap())
                .collect();
            Self { layers }
        }

        fn forward(&self, x: &Tensor) -> Tensor {
            let mut h = x.clone();
            for (i, l) in self.layers.iter().enumerate() {
                h = l.forward(&h).unwrap();
                if i + 1 < self.layers.len() {
                    h = h.relu().unwrap();
                }
            }
            h
        }
    }

    struct Chain {
        steps: Vec<Step>,
    }

    enum Step {
        Linear(Linear),
        Act(super::Layer),
    }

    impl Chain {
        fn new(layers: &[super::Layer], vb: VarBuilder) -> Self {
            use super::Layer as L;
            let steps = layers
                .iter()
                .enumerate()
                .map(|(i, l)| match *l {
                    L::Linear(k, n, true) => Step::Linear(linear(k, n, vb.pp(format!("l{i}"))).unwrap()),
                    L::Linear(k, n, false) => {
                        Step::Linear(candle_nn::linear_no_bias(k, n, vb.pp(format!("l{i}"))).unwrap())
                    }
                    act => Step::Act(act),
                })
                .collect();
            Self { steps }
        }

        fn forward(&self, x: &Tensor) -> Tensor {
            use super::Layer as L;
            let mut h = x.clone();
            for s in &self.steps {
                h = match s {
                    Step::Linear(l) => l.forward(&h).unwrap(),
                    Step::Act(L::Relu) => h.relu().unwrap(),
                    Step::Act(L::Sigmoid) => candle_nn::ops::sigmoid(&h).unwrap(),
                    Step::Act(L::Gelu) => h.gelu_erf().unwrap(),
                    Step::Act(L::Tanh) => h.tanh().unwrap(),
                    Step::Act(L::Linear(..)) => unreachable!(),
                };
            }
            h
        }
    }

    pub fn run_chains() {
        let dev = Device::Cpu;
        for (name, layers) in super::CHAINS {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let net = Chain::new(layers, vb);
            let super::Layer::Linear(k, ..) = layers[0] else { unreachable!() };
            let x = Tensor::rand(-1f32, 1f32, (1, k), &dev).unwrap();
            let t = median_time(|| {
                std::hint::black_box(net.forward(&x));
            });
            report("candle", &format!("chain_{name}_b1_fwd"), t);
        }
    }

    pub fn run() {
        let dev = Device::Cpu;
        for (name, sizes, batch, train) in super::workloads() {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let net = Net::new(sizes, vb);
            let x = Tensor::rand(-1f32, 1f32, (batch, sizes[0]), &dev).unwrap();
            let t = if train {
                let target = Tensor::rand(-1f32, 1f32, (batch, *sizes.last().unwrap()), &dev).unwrap();
                let mut opt = SGD::new(varmap.all_vars(), 0.01).unwrap();
                median_time(|| {
                    let y = net.forward(&x);
                    let loss = candle_nn::loss::mse(&y, &target).unwrap();
                    opt.backward_step(&loss).unwrap();
                })
            } else {
                median_time(|| {
                    std::hint::black_box(net.forward(&x));
                })
            };
            report("candle", &name, t);
        }
    }
}

mod burn_runs {
    use super::{median_time, report};
    use burn::module::Module;
    use burn::nn::loss::{MseLoss, Reduction};
    use burn::nn::{Linear, LinearConfig, Relu};
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::tensor::{Device, Distribution, Tensor};

    #[derive(Module, Debug)]
    struct Net {
        layers: Vec<Linear>,
        act: Relu,
    }

    impl Net {
        fn new(sizes: &[usize], device: &Device) -> Self {
            Self {
                layers: sizes.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect(),
                act: Relu::new(),
            }
        }

        fn forward(&self, x: Tensor<2>) -> Tensor<2> {
            let mut h = x;
            let n = self.layers.len();
            for (i, l) in self.layers.iter().enumerate() {
                h = l.forward(h);
                if i + 1 < n {
                    h = self.act.forward(h);
                }
            }
            h
        }
    }

    #[derive(Module, Debug)]
    struct Chain {
        linears: Vec<Linear>,
    }

    impl Chain {
        fn new(layers: &[super::Layer], device: &Device) -> Self {
            let linears = layers
                .iter()
                .filter_map(|l| match *l {
                    super::Layer::Linear(k, n, bias) => Some(LinearConfig::new(k, n).with_bias(bias).init(device)),
                    _ => None,
                })
                .collect();
            Self { linears }
        }

        fn forward(&self, layers: &[super::Layer], x: Tensor<2>) -> Tensor<2> {
            use super::Layer as L;
            use burn::tensor::activation as a;
            let mut h = x;
            let mut next = self.linears.iter();
            for l in layers {
                h = match l {
                    L::Linear(..) => next.next().unwrap().forward(h),
                    L::Relu => a::relu(h),
                    L::Sigmoid => a::sigmoid(h),
                    L::Gelu => a::gelu(h),
                    L::Tanh => a::tanh(h),
                };
            }
            h
        }
    }

    pub fn run_chains() {
        let device = Device::flex();
        for (name, layers) in super::CHAINS {
            let net = Chain::new(layers, &device);
            let super::Layer::Linear(k, ..) = layers[0] else { unreachable!() };
            let x = Tensor::<2>::random([1, k], Distribution::Uniform(-1.0, 1.0), &device);
            let t = median_time(|| {
                let y = net.forward(layers, x.clone());
                std::hint::black_box(y.into_data());
            });
            report("burn", &format!("chain_{name}_b1_fwd"), t);
        }
    }

    pub fn run() {
        for (name, sizes, batch, train) in super::workloads() {
            let t = if train {
                let device = Device::flex().autodiff();
                let mut net = Net::new(sizes, &device);
                let x = Tensor::<2>::random([batch, sizes[0]], Distribution::Uniform(-1.0, 1.0), &device);
                let target =
                    Tensor::<2>::random([batch, *sizes.last().unwrap()], Distribution::Uniform(-1.0, 1.0), &device);
                let mut opt = SgdConfig::new().init();
                let mut slot = Some(net);
                let t = median_time(|| {
                    let model = slot.take().unwrap();
                    let y = model.forward(x.clone());
                    let loss = MseLoss::new().forward(y, target.clone(), Reduction::Mean);
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    slot = Some(opt.step(0.01, model, grads));
                });
                net = slot.take().unwrap();
                drop(net);
                t
            } else {
                let device = Device::flex();
                let net = Net::new(sizes, &device);
                let x = Tensor::<2>::random([batch, sizes[0]], Distribution::Uniform(-1.0, 1.0), &device);
                median_time(|| {
                    let y = net.forward(x.clone());
                    std::hint::black_box(y.into_data());
                })
            };
            report("burn", &name, t);
        }
    }
}

const SIMPLE: &[usize] = &[100, 50, 10];

/// A step of the small chains: `Linear(in, out, bias)` or an activation.
#[derive(Clone, Copy, Debug)]
enum Layer {
    Linear(usize, usize, bool),
    Relu,
    Sigmoid,
    Gelu,
    Tanh,
}

/// The other small chains of `benches/latency.rs` (`chains`), at batch 1.
const CHAINS: &[(&str, &[Layer])] = {
    use Layer::*;
    &[
        ("10_50_1_sigmoid", &[Linear(10, 50, true), Relu, Linear(50, 1, true), Sigmoid]),
        ("17_33_5_nobias_gelu", &[Linear(17, 33, false), Gelu, Linear(33, 5, false)]),
        ("64x3_tanh", &[Linear(64, 64, true), Tanh, Linear(64, 64, true), Tanh, Linear(64, 64, true)]),
        ("784_128_10", &[Linear(784, 128, true), Relu, Linear(128, 10, true)]),
        ("1000_100_3", &[Linear(1000, 100, true), Relu, Linear(100, 3, true)]),
    ]
};
const MLP: &[usize] = &[784, 1024, 1024, 10];

/// `(name, layer sizes, batch, train)`: the five workloads, or with
/// `latency` as the first argument the small-batch forwards of
/// `benches/latency.rs` (batch 1 to 16).
fn workloads() -> Vec<(String, &'static [usize], usize, bool)> {
    if std::env::args().nth(1).as_deref() == Some("latency") {
        let mut v = Vec::new();
        for b in [1usize, 2, 4, 8, 16] {
            v.push((format!("simple_b{b}_fwd"), SIMPLE, b, false));
            v.push((format!("mlp_b{b}_fwd"), MLP, b, false));
        }
        return v;
    }
    vec![
        ("simple_b1_fwd".into(), SIMPLE, 1, false),
        ("simple_b64_fwd".into(), SIMPLE, 64, false),
        ("mlp_b256_fwd".into(), MLP, 256, false),
        ("simple_b64_train".into(), SIMPLE, 64, true),
        ("mlp_b256_train".into(), MLP, 256, true),
    ]
}

fn main() {
    candle_runs::run();
    burn_runs::run();
    if std::env::args().nth(1).as_deref() == Some("latency") {
        candle_runs::run_chains();
        burn_runs::run_chains();
    }
}
