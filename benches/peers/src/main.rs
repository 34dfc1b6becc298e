//! The five workloads of `benches/workloads.rs` in candle and Burn (Flex
//! backend), timed the same way as `scripts/bench_pytorch.py` (median of
//! at least 2 s of runs after a warm-up), one thread. Prints one line per
//! workload and framework.
//!
//!     cd benches/peers && RAYON_NUM_THREADS=1 cargo run --release
//!     cd benches/peers && RAYON_NUM_THREADS=1 cargo run --release -- latency

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
}
