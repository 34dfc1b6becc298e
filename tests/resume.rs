//! Resumable training: a run stopped after `k` steps, checkpointed and
//! resumed in a new process with a freshly built model, optimizer and
//! schedule ends bit for bit where the uninterrupted run ends.

use std::path::PathBuf;
use std::process::Command;

use nncore::prelude::*;
use nncore::{
    CosineAnnealingLr, OptimizerState, StepLr, TensorData, load_checkpoint, save_checkpoint,
};

#[derive(Module)]
struct Net {
    fc1: Linear,
    bn: BatchNorm1d,
    relu: ReLU,
    fc2: Linear,
}

fn net(seed: u64) -> Net {
    nncore::with_seed(seed, || Net {
        fc1: Linear::new(5, 16),
        bn: BatchNorm1d::new(16).with_momentum(None),
        relu: ReLU::new(),
        fc2: Linear::new(16, 3),
    })
}

const STEPS: usize = 8;
const STOP: usize = 3;
const CASES: [&str; 5] = ["sgd", "sgd_nesterov", "adam", "adam_amsgrad", "adamw"];

fn optimizer(case: &str) -> Box<dyn OptimizerCheckpoint> {
    match case {
        "sgd" => Box::new(Sgd::new(0.05).momentum(0.9).dampening(0.1)),
        "sgd_nesterov" => Box::new(
            Sgd::new(0.05)
                .momentum(0.8)
                .nesterov(true)
                .weight_decay(1e-3),
        ),
        "adam" => Box::new(Adam::new(0.01).weight_decay(1e-4)),
        "adam_amsgrad" => Box::new(Adam::new(0.01).betas(0.8, 0.99).amsgrad(true)),
        "adamw" => Box::new(Adam::adamw(0.01)),
        other => panic!("no case {other}"),
    }
}

fn scheduler(case: &str, opt: &dyn OptimizerCheckpoint) -> Box<dyn SchedulerCheckpoint> {
    if case.starts_with("sgd") {
        Box::new(StepLr::new(opt, 2, 0.5))
    } else {
        Box::new(CosineAnnealingLr::new(opt, 5, 1e-4))
    }
}

/// Training step `i`: a fixed batch per step, MSE against fixed targets;
/// the schedule steps every second batch.
fn step(
    i: usize,
    m: &mut Net,
    opt: &mut dyn OptimizerCheckpoint,
    sched: &mut dyn SchedulerCheckpoint,
) {
    let mut g = nncore::Generator::new(1000 + i as u64);
    let x = g.uniform_tensor(6, 5, -2.0, 2.0);
    let t = g.uniform_tensor(6, 3, -1.0, 1.0);
    m.zero_grad();
    let y = m.forward_train(&x).unwrap();
    let (_, grad) = nncore::mse_loss(y, &t).unwrap();
    m.backward_params(&grad).unwrap();
    opt.step(m).unwrap();
    if i % 2 == 1 {
        sched.step(opt);
    }
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("nncore-resume-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run in a child process by `resume_is_bit_exact_in_a_new_process`:
/// builds everything afresh (other initial weights), loads the checkpoint,
/// runs the remaining steps and saves the model.
#[test]
#[ignore = "run in a child process by resume_is_bit_exact_in_a_new_process"]
fn resume_child() {
    let dir = PathBuf::from(std::env::var("NNCORE_RESUME_DIR").unwrap());
    for case in CASES {
        let mut m = net(77);
        let mut opt = optimizer(case);
        let mut sched = scheduler(case, &*opt);
        load_checkpoint(
            dir.join(format!("{case}.ckpt")),
            &mut m,
            &mut *opt,
            Some(&mut *sched),
        )
        .unwrap();
        for i in STOP..STEPS {
            step(i, &mut m, &mut *opt, &mut *sched);
        }
        m.save_safetensors(dir.join(format!("{case}.resumed")))
            .unwrap();
        std::fs::write(dir.join(format!("{case}.lr")), format!("{:?}", opt.lr())).unwrap();
    }
}

#[test]
fn resume_is_bit_exact_in_a_new_process() {
    let dir = dir();
    let mut expected = Vec::new();
    for case in CASES {
        // Straight through.
        let mut m = net(0);
        let mut opt = optimizer(case);
        let mut sched = scheduler(case, &*opt);
        for i in 0..STEPS {
            step(i, &mut m, &mut *opt, &mut *sched);
        }
        let straight = dir.join(format!("{case}.straight"));
        m.save_safetensors(&straight).unwrap();
        expected.push((case, straight, opt.lr()));

        // Stopped after STOP steps.
        let mut m = net(0);
        let mut opt = optimizer(case);
        let mut sched = scheduler(case, &*opt);
        for i in 0..STOP {
            step(i, &mut m, &mut *opt, &mut *sched);
        }
        save_checkpoint(dir.join(format!("{case}.ckpt")), &m, &*opt, Some(&*sched)).unwrap();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "resume_child", "--test-threads=1"])
        .env("NNCORE_RESUME_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    for (case, straight, lr) in expected {
        let resumed = std::fs::read(dir.join(format!("{case}.resumed"))).unwrap();
        assert_eq!(
            resumed,
            std::fs::read(&straight).unwrap(),
            "{case}: weights and buffers differ"
        );
        let child_lr = std::fs::read_to_string(dir.join(format!("{case}.lr"))).unwrap();
        assert_eq!(child_lr, format!("{lr:?}"), "{case}: learning rate");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Everything a checkpoint and an optimizer state hold, for comparisons.
fn snapshot(m: &Net, opt: &dyn OptimizerCheckpoint) -> (nncore::StateDict, OptimizerState) {
    (m.state_dict(), opt.state_dict(m).unwrap())
}

fn trained(
    case: &str,
) -> (
    Net,
    Box<dyn OptimizerCheckpoint>,
    Box<dyn SchedulerCheckpoint>,
) {
    let mut m = net(0);
    let mut opt = optimizer(case);
    let mut sched = scheduler(case, &*opt);
    for i in 0..STOP {
        step(i, &mut m, &mut *opt, &mut *sched);
    }
    (m, opt, sched)
}

#[test]
fn optimizer_state_saves_alone_and_names_parameters() {
    let (m, opt, _) = trained("adam_amsgrad");
    let st = opt.state_dict(&m).unwrap();
    assert_eq!(st.kind(), "Adam");
    assert_eq!(st.hyperparameters()["amsgrad"], "true");
    assert_eq!(st.hyperparameters()["beta1"], "0.8");
    let keys: Vec<&str> = st.tensors().keys().collect();
    assert_eq!(
        &keys[..4],
        [
            "fc1.weight.step",
            "fc1.weight.exp_avg",
            "fc1.weight.exp_avg_sq",
            "fc1.weight.max_exp_avg_sq"
        ]
    );
    assert_eq!(keys.len(), 6 * 4, "fc1, bn and fc2 weights and biases");
    assert_eq!(
        st.tensors().get("fc1.weight.exp_avg").unwrap().shape(),
        [16, 5]
    );
    assert_eq!(
        st.tensors().get("bn.bias.step").unwrap().as_i64(),
        Some(&[3i64][..])
    );

    let dir = dir().join("alone");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("opt.safetensors");
    st.save_safetensors(&path).unwrap();
    let back = OptimizerState::load_safetensors(&path).unwrap();
    // (A file lists its tensors in its own order.)
    let sorted = |s: &OptimizerState| {
        let mut v: Vec<(String, TensorData)> = s
            .tensors()
            .iter()
            .map(|(k, t)| (k.to_owned(), t.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        (s.kind().to_owned(), s.hyperparameters().clone(), v)
    };
    assert_eq!(sorted(&back), sorted(&st));
    // Into a fresh model (other parameter ids) and optimizer.
    let fresh = net(5);
    let mut opt2 = optimizer("adam");
    opt2.load_state_dict(&fresh, &back).unwrap();
    assert_eq!(opt2.state_dict(&fresh).unwrap(), st);
    // A model file is not an optimizer state.
    m.save_safetensors(dir.join("model.safetensors")).unwrap();
    let e = OptimizerState::load_safetensors(dir.join("model.safetensors")).unwrap_err();
    assert!(e.to_string().contains("no optimizer state"), "{e}");
    let e = load_checkpoint(
        dir.join("model.safetensors"),
        &mut net(0),
        &mut *optimizer("sgd"),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a checkpoint"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mismatched_state_is_reported_at_once_and_changes_nothing() {
    let (m, opt, _) = trained("adam");
    let st = opt.state_dict(&m).unwrap();

    // Another kind of optimizer.
    let (m2, mut sgd, _) = trained("sgd");
    let before = snapshot(&m2, &*sgd);
    let e = sgd.load_state_dict(&m2, &st).unwrap_err().to_string();
    assert!(
        e.starts_with("Error(s) in loading state_dict for SGD:"),
        "{e}"
    );
    assert!(
        e.contains("the state is a Adam optimizer's, this optimizer is SGD"),
        "{e}"
    );
    assert!(
        e.contains("Unexpected key(s) in state_dict: \"fc1.weight.step\""),
        "{e}"
    );
    assert_eq!(snapshot(&m2, &*sgd), before);

    // A model of other shapes and names: every problem at once.
    #[derive(Module)]
    struct Other {
        fc1: Linear,
        bn: BatchNorm1d,
        relu: ReLU,
        head: Linear,
    }
    let other = Other {
        fc1: Linear::new(4, 16),
        bn: BatchNorm1d::new(16).with_momentum(None),
        relu: ReLU::new(),
        head: Linear::new(16, 3),
    };
    let mut adam = optimizer("adam");
    let e = adam.load_state_dict(&other, &st).unwrap_err().to_string();
    assert!(e.contains("size mismatch for fc1.weight.exp_avg: copying a state with shape [16, 5] from checkpoint, the shape in current model is [16, 4]."), "{e}");
    assert!(e.contains("\"fc2.weight.step\""), "{e}");
    assert!(e.contains("\"fc2.bias.exp_avg_sq\""), "{e}");
    assert!(adam.state_dict(&other).unwrap().tensors().is_empty());

    // An incomplete entry and a bad hyper-parameter.
    let mut broken = OptimizerState::new("Adam");
    for (k, v) in st.hyperparameters() {
        broken.set_hyperparameter(k.clone(), v.clone());
    }
    broken.insert_tensor(
        "fc1.weight",
        "exp_avg",
        TensorData::new(vec![16, 5], vec![0.0; 80]).unwrap(),
    );
    let e = adam.load_state_dict(&m, &broken).unwrap_err().to_string();
    assert!(
        e.contains("incomplete state for fc1.weight: no step, exp_avg_sq"),
        "{e}"
    );
    broken.set_hyperparameter("lr", "fast");
    let e = adam.load_state_dict(&m, &broken).unwrap_err().to_string();
    assert!(e.contains("incomplete state"), "{e}");
    let mut plain = OptimizerState::new("Adam");
    for (k, v) in st.hyperparameters() {
        plain.set_hyperparameter(k.clone(), v.clone());
    }
    plain.set_hyperparameter("lr", "fast");
    let e = adam.load_state_dict(&m, &plain).unwrap_err().to_string();
    assert!(e.contains("Adam: lr is \"fast\""), "{e}");
    assert_eq!(adam.lr(), 0.01);
}

#[test]
fn a_checkpoint_that_does_not_fit_changes_nothing() {
    let dir = dir().join("nofit");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.ckpt");
    let (m, opt, sched) = trained("adam");
    save_checkpoint(&path, &m, &*opt, Some(&*sched)).unwrap();

    // Right model, wrong optimizer kind: the schedule is put back, the
    // model untouched.
    let (mut m2, mut sgd, mut step_lr) = trained("sgd");
    let before = (snapshot(&m2, &*sgd), step_lr.state().unwrap());
    let e = load_checkpoint(&path, &mut m2, &mut *sgd, Some(&mut *step_lr)).unwrap_err();
    assert!(e.to_string().contains("StepLR"), "{e}");
    let mut cosine = scheduler("adam", &*sgd);
    let cos_before = cosine.state().unwrap();
    let e = load_checkpoint(&path, &mut m2, &mut *sgd, Some(&mut *cosine)).unwrap_err();
    assert!(e.to_string().contains("this optimizer is SGD"), "{e}");
    assert_eq!((snapshot(&m2, &*sgd), step_lr.state().unwrap()), before);
    assert_eq!(cosine.state().unwrap(), cos_before);

    // A model of another shape: refused before anything moves.
    let mut small = net(0);
    small.fc2 = Linear::new(16, 2);
    let mut adam = optimizer("adam");
    let e = load_checkpoint(&path, &mut small, &mut *adam, None).unwrap_err();
    assert!(
        e.to_string().contains("size mismatch for fc2.weight"),
        "{e}"
    );
    assert!(adam.state_dict(&small).unwrap().tensors().is_empty());

    // The right things load.
    let mut m3 = net(9);
    let mut adam = optimizer("adam");
    let mut cos = scheduler("adam", &*adam);
    load_checkpoint(&path, &mut m3, &mut *adam, Some(&mut *cos)).unwrap();
    assert_eq!(snapshot(&m3, &*adam), snapshot(&m, &*opt));
    assert_eq!(cos.state().unwrap(), sched.state().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
