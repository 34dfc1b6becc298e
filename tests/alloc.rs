//! A steady-state training step (after the first) and inference into a
//! caller-provided output allocate nothing: proved with a counting global
//! allocator. One test function, so that no other test allocates at the
//! same time.

use nncore::Workspace;
use nncore::prelude::*;
use nnrs::workloads::{TrainStep, images, input, lenet, mlp, norm_mlp, res_mlp, simple_net};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Every image layer, with groups, strides, padding and several blocks of
/// unfolded input in the first convolution (input 4x32x32, batch 32).
#[derive(Module)]
struct ImageNet {
    conv1: Conv2d,
    bn: BatchNorm2d,
    relu: ReLU,
    max: MaxPool2d,
    conv2: Conv2d,
    avg: AvgPool2d,
    adapt: AdaptiveAvgPool2d,
    flat: Flatten,
    fc: Linear,
}

fn image_net() -> ImageNet {
    nncore::with_seed(0, || ImageNet {
        conv1: nncore::Conv2dConfig::new(4, 8, 3)
            .padding(1)
            .groups(2)
            .build()
            .unwrap(),
        bn: BatchNorm2d::new(8),
        relu: ReLU::new(),
        max: MaxPool2d::with_options(3, 2, 1, 1, false).unwrap(),
        conv2: nncore::Conv2dConfig::new(8, 6, 3)
            .stride(2)
            .bias(false)
            .build()
            .unwrap(),
        avg: AvgPool2d::with_options(2, 1, 1).unwrap(),
        adapt: AdaptiveAvgPool2d::new((2, 3)),
        flat: Flatten::new(),
        fc: Linear::new(36, 10),
    })
}

/// Model-side training steps on images: zero_grad, the recording forward,
/// backward of the parameters for a fixed output gradient, SGD.
fn image_steps<M: Backward>(m: &mut M, x: &NdTensor, grad: &Tensor, opt: &mut Sgd, steps: usize) {
    for _ in 0..steps {
        m.zero_grad();
        m.forward_train_nd(x).unwrap();
        m.backward_params(grad).unwrap();
        opt.step(m).unwrap();
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// Fails naming `what` if `f` allocates.
fn assert_allocates_nothing(what: &str, f: impl FnOnce()) {
    let n = allocations_in(f);
    assert_eq!(n, 0, "{what} allocated {n} times");
}

#[test]
fn steady_state_training_and_inference_into_allocate_nothing() {
    nncore::ops::set_num_threads(1);
    // The counter counts.
    assert!(allocations_in(|| drop(std::hint::black_box(vec![1u8; 10]))) > 0);
    // Without AVX2 (other CPUs and architectures, or `NNCORE_CPU=portable`)
    // the matrix products run on matrixmultiply, which allocates its
    // packing buffers in every product: the claim is for faer's x86
    // kernels (the README says so).
    if cfg!(not(target_arch = "x86_64"))
        || !nncore::kernels::available_variants().contains(&nncore::kernels::Variant::Avx2)
    {
        eprintln!("skipped: the products here run on matrixmultiply, which allocates");
        return;
    }

    let mut simple = TrainStep::new(simple_net(0), 64, 100, 10);
    simple.step().unwrap();
    simple.step().unwrap();
    assert_allocates_nothing("SimpleNet training step", || {
        for _ in 0..3 {
            simple.step().unwrap();
        }
    });

    let mut big = TrainStep::new(mlp(0), 256, 784, 10);
    big.step().unwrap();
    big.step().unwrap();
    assert_allocates_nothing("MLP training step", || {
        big.step().unwrap();
    });

    // The same with momentum: its buffers are made on the first step.
    simple.opt = Sgd::new(0.01).momentum(0.9).weight_decay(1e-4);
    simple.step().unwrap();
    assert_allocates_nothing("SGD with momentum", || {
        simple.step().unwrap();
    });

    // Normalization layers: BatchNorm's statistics and running update,
    // LayerNorm's, and their backward keep their buffers; so does Adam.
    let mut norm = TrainStep::new(norm_mlp(0, 100, 64, 10), 64, 100, 10);
    norm.step().unwrap();
    norm.step().unwrap();
    assert_allocates_nothing("BatchNorm/LayerNorm training step", || {
        for _ in 0..3 {
            norm.step().unwrap();
        }
    });
    norm.model.eval();
    let x = input(64, 100, 3);
    let (mut out, mut ws) = (Tensor::zeros(0, 0), Workspace::new());
    norm.model.forward_into(&x, &mut out, &mut ws).unwrap();
    norm.model.forward_into(&x, &mut out, &mut ws).unwrap();
    assert_eq!(out, norm.model.forward(&x).unwrap());
    assert_allocates_nothing("BatchNorm/LayerNorm forward_into", || {
        norm.model.forward_into(&x, &mut out, &mut ws).unwrap();
    });

    // Inference into a caller-provided output.
    let net = simple_net(0);
    let mut ws = Workspace::new();
    for batch in [1usize, 64] {
        let x = input(batch, 100, 3);
        let mut out = Tensor::zeros(0, 0);
        net.forward_into(&x, &mut out, &mut ws).unwrap();
        net.forward_into(&x, &mut out, &mut ws).unwrap();
        assert_eq!(out, net.forward(&x).unwrap());
        assert_allocates_nothing(&format!("SimpleNet forward_into, batch {batch}"), || {
            for _ in 0..3 {
                net.forward_into(&x, &mut out, &mut ws).unwrap();
            }
        });
    }

    // Written forwards: the tape and the workspace keep their buffers.
    let mut res = TrainStep::new(res_mlp(0, 100, 64, 2, 10), 64, 100, 10);
    res.opt = Sgd::new(0.01).momentum(0.9);
    res.step().unwrap();
    res.step().unwrap();
    assert_allocates_nothing("written residual MLP training step", || {
        for _ in 0..3 {
            res.step().unwrap();
        }
    });
    for batch in [1usize, 64] {
        let x = input(batch, 100, 3);
        let mut out = Tensor::zeros(0, 0);
        res.model.forward_into(&x, &mut out, &mut ws).unwrap();
        res.model.forward_into(&x, &mut out, &mut ws).unwrap();
        assert_eq!(out, res.model.forward(&x).unwrap());
        assert_allocates_nothing(
            &format!("written residual MLP forward_into, batch {batch}"),
            || {
                for _ in 0..3 {
                    res.model.forward_into(&x, &mut out, &mut ws).unwrap();
                }
            },
        );
    }

    // A written `forward` of a small batch takes its values from a
    // per-thread workspace: after a warm-up it allocates its output only.
    let x = input(1, 100, 3);
    let warm = res.model.forward(&x).unwrap();
    let mut again = None;
    let n = allocations_in(|| again = Some(res.model.forward(&x).unwrap()));
    assert_eq!(again.as_ref(), Some(&warm));
    assert_eq!(
        n, 1,
        "written residual MLP forward, batch 1: {n} allocations"
    );

    // Images: every layer keeps its unfolded inputs, indices and
    // statistics between steps; inference takes its scratch from the
    // workspace.
    let mut opt = Sgd::new(0.01).momentum(0.9);
    let x = images(64, 1);
    let mut net = lenet(0);
    let grad = input(64, 10, 2);
    image_steps(&mut net, &x, &grad, &mut opt, 2);
    assert_allocates_nothing("LeNet training step (model and optimizer)", || {
        image_steps(&mut net, &x, &grad, &mut opt, 2);
    });
    let mut inet = image_net();
    let xi = NdTensor::new(input(32, 4 * 32 * 32, 4), Dims::image(4, 32, 32)).unwrap();
    let gi = input(32, 10, 5);
    let mut opt = Sgd::new(0.01);
    image_steps(&mut inet, &xi, &gi, &mut opt, 2);
    assert_allocates_nothing("grouped CNN training step", || {
        image_steps(&mut inet, &xi, &gi, &mut opt, 2);
    });
    net.eval();
    inet.eval();
    for (m, x, what) in [
        (&net as &dyn Forward, images(1, 3), "LeNet, batch 1"),
        (&net, images(64, 3), "LeNet, batch 64"),
        (&inet, xi.clone(), "grouped CNN, batch 32"),
    ] {
        let (mut out, mut ws) = (Tensor::zeros(0, 0), Workspace::new());
        m.forward_into_dims(x.tensor(), x.dims(), &mut out, &mut ws)
            .unwrap();
        m.forward_into_dims(x.tensor(), x.dims(), &mut out, &mut ws)
            .unwrap();
        assert_eq!(&out, m.forward_nd(&x).unwrap().tensor(), "{what}");
        assert_allocates_nothing(&format!("{what} forward_into_dims"), || {
            m.forward_into_dims(x.tensor(), x.dims(), &mut out, &mut ws)
                .unwrap();
        });
    }

    // Two threads: large products and the optimizer's update are split
    // across the helper pool, which allocates nothing per step either.
    nncore::ops::set_num_threads(2);
    big.opt = Sgd::new(0.01);
    big.step().unwrap();
    big.step().unwrap();
    assert_allocates_nothing("MLP training step, two threads", || {
        big.step().unwrap();
    });
    let x = input(256, 784, 3);
    let mut out = Tensor::zeros(0, 0);
    // Warm-up: the output and, from the second batch on, the transposed
    // weights large layers keep for inference.
    for _ in 0..3 {
        big.model.forward_into(&x, &mut out, &mut ws).unwrap();
    }
    assert_allocates_nothing("MLP forward_into, two threads", || {
        big.model.forward_into(&x, &mut out, &mut ws).unwrap();
    });
    nncore::ops::set_num_threads(0);
}
