//! Two-thread scaling of the large workloads, measured so that the ratio
//! survives a noisy machine: one-thread and two-thread runs alternate in
//! short rounds within one process, and the medians over the rounds are
//! compared. (Sequential criterion runs of `NNRS_THREADS=1` and `=2` are
//! minutes apart, and on a shared VM the second core's speed drifts in
//! between.) `cargo bench -p nnrs-bench --bench scaling`.

use nncore::Workspace;
use nncore::prelude::*;
use nnrs::workloads::{TrainStep, input, mlp};
use std::time::Instant;

const ROUNDS: usize = 25;
const REPS: usize = 5;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--list` means another
    // bench target's arguments: nothing to do here.
    if std::env::args().skip(1).any(|a| a != "--bench") {
        return;
    }
    let model = mlp(0);
    let x = input(256, 784, 1);
    let mut out = Tensor::zeros(0, 0);
    let mut ws = Workspace::new();
    let mut step = TrainStep::new(mlp(0), 256, 784, 10);
    let names = ["mlp_b256_fwd", "mlp_b256_fwd_into", "mlp_b256_train"];
    // times[workload][threads - 1]: milliseconds per iteration, per round.
    let mut times = vec![[Vec::new(), Vec::new()]; names.len()];
    let mut run = |w: usize| match w {
        0 => drop(std::hint::black_box(model.forward(&x).unwrap())),
        1 => model.forward_into(&x, &mut out, &mut ws).unwrap(),
        _ => drop(step.step().unwrap()),
    };
    for _ in 0..ROUNDS {
        for threads in [1, 2] {
            nncore::ops::set_num_threads(threads);
            for (w, t) in times.iter_mut().enumerate() {
                run(w);
                let start = Instant::now();
                for _ in 0..REPS {
                    run(w);
                }
                t[threads - 1].push(start.elapsed().as_secs_f64() * 1e3 / REPS as f64);
            }
        }
    }
    println!("medians of {ROUNDS} alternating rounds of {REPS} iterations");
    println!(
        "{:<20} {:>10} {:>10} {:>8}",
        "workload", "1 thread", "2 threads", "scaling"
    );
    for (name, [one, two]) in names.iter().zip(&mut times) {
        let (one, two) = (median(one), median(two));
        println!("{name:<20} {one:>8.3}ms {two:>8.3}ms {:>7.2}x", one / two);
    }
}
