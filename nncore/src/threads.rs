//! The thread setting (PyTorch's `torch.set_num_threads`) and the
//! fork-join helpers that split large products ([`crate::ops`]) and
//! element-wise passes ([`crate::kernels`]) across cores.

use std::sync::atomic::{AtomicUsize, Ordering};

static NUM_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Products with at least this many multiply-adds are split across
/// threads; smaller ones run on the calling thread, where spreading them
/// would cost more than it gains.
pub const PARALLEL_THRESHOLD: usize = 1 << 21;

/// Sets how many threads large matrix products and element-wise passes
/// use (PyTorch's `torch.set_num_threads`). `0` restores the default: the
/// machine's available parallelism. Values above [`MAX_THREADS`] are
/// clamped to it; more threads than cores only add fork-join overhead.
///
/// ```
/// nncore::ops::set_num_threads(1);
/// assert_eq!(nncore::ops::num_threads(), 1);
/// nncore::ops::set_num_threads(0);
/// ```
pub fn set_num_threads(n: usize) {
    NUM_THREADS.store(n.min(MAX_THREADS), Ordering::Relaxed);
}

/// The most threads [`set_num_threads`] accepts; larger values are
/// clamped to it (a product is split into at most this many parts).
pub const MAX_THREADS: usize = 256;

/// The number of threads large matrix products and element-wise passes
/// use.
#[must_use]
pub fn num_threads() -> usize {
    static DEFAULT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match NUM_THREADS.load(Ordering::Relaxed) {
        0 => *DEFAULT.get_or_init(|| {
            std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_THREADS)
        }),
        n => n,
    }
}

/// How many parts to split a product into: one below
/// [`PARALLEL_THRESHOLD`] multiply-adds, else the thread count.
pub(crate) fn parts(m: usize, n: usize, k: usize) -> usize {
    let threads = num_threads();
    if threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_THRESHOLD {
        threads
    } else {
        1
    }
}

/// The helper threads of split products: one fewer than the machine has
/// cores, because the calling thread computes one part itself. `None` on a
/// one-core machine.
///
/// micropool rather than rayon: a fork-join through rayon's
/// `in_place_scope` from a thread outside its pool puts the caller to
/// sleep until the helper is done, and waking it costs 30 to 50 µs on the
/// 2-core VM this was measured on (a 2 x 5 µs join took 54 µs), several
/// times per training step. micropool's caller helps and then spins, and
/// its helpers spin for a while before sleeping, so that the next product
/// of a step starts at once (the same join: 6.7 µs). Measured on the MLP
/// training step with two threads: 6.3 ms against 6.6 ms.
pub(crate) fn helpers() -> Option<&'static micropool::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<micropool::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        (cores > 1).then(|| {
            micropool::ThreadPoolBuilder::default()
                .num_threads(cores - 1)
                // About 0.7 ms on the AVX-512 VM (a `pause` there takes
                // ~22 ns): longer than the element-wise work between the
                // products of a training step, short enough not to burn
                // much of a core another process may want.
                .idle_spin_cycles(30_000)
                .build()
        })
    })
    .as_ref()
}

/// Runs `f(i)` for every `i` in `lo..hi`, in parallel on the helpers and
/// the calling thread.
pub(crate) fn run_parts(
    pool: &micropool::ThreadPool,
    lo: usize,
    hi: usize,
    f: &(dyn Fn(usize) + Sync),
) {
    if hi - lo <= 1 {
        if hi > lo {
            f(lo);
        }
        return;
    }
    let mid = lo + (hi - lo) / 2;
    pool.join(
        || run_parts(pool, lo, mid, f),
        || run_parts(pool, mid, hi, f),
    );
}

/// Slices (or tuples of slices of one length) that [`for_parts`] can cut
/// into pieces for threads.
pub(crate) trait Split: Sized + Send {
    /// The number of elements.
    fn len(&self) -> usize;
    /// The first `mid` elements and the rest.
    fn split_at(self, mid: usize) -> (Self, Self);
}

impl Split for &[f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        <[f32]>::split_at(self, mid)
    }
}

impl Split for &mut [f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        self.split_at_mut(mid)
    }
}

impl<A: Split, B: Split> Split for (A, B) {
    fn len(&self) -> usize {
        debug_assert_eq!(self.0.len(), self.1.len());
        self.0.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split_at(mid);
        let (b0, b1) = self.1.split_at(mid);
        ((a0, b0), (a1, b1))
    }
}

/// Element-wise work on at least this many elements (1 MiB of `f32`) is
/// split across threads; below it the fork-join costs more than it saves.
pub const PARALLEL_ELEMENTS: usize = 1 << 18;

/// Runs `f` on `data`, cut into one piece per thread when it has at least
/// [`PARALLEL_ELEMENTS`] elements (an optimizer's update of a large
/// weight, an activation over a large batch). Pieces start on 64-byte
/// boundaries.
pub(crate) fn for_parts<S: Split>(data: S, f: &(impl Fn(S) + Sync)) {
    // The length first: small slices (most calls) skip the thread lookups.
    if data.len() < PARALLEL_ELEMENTS {
        return f(data);
    }
    let threads = num_threads();
    match helpers() {
        Some(pool) if threads >= 2 => split_parts(pool, threads, data, f),
        _ => f(data),
    }
}

fn split_parts<S: Split>(
    pool: &micropool::ThreadPool,
    parts: usize,
    data: S,
    f: &(impl Fn(S) + Sync),
) {
    if parts <= 1 {
        f(data);
        return;
    }
    let left = parts / 2;
    let mid = (data.len() * left / parts)
        .next_multiple_of(16)
        .min(data.len());
    let (d0, d1) = data.split_at(mid);
    pool.join(
        || split_parts(pool, left, d0, f),
        || split_parts(pool, parts - left, d1, f),
    );
}

/// The thread setting is global: tests that change it take turns.
#[cfg(test)]
pub(crate) static THREAD_SETTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn split_updates_cover_every_element_once() {
        let _turn = crate::threads::THREAD_SETTING
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = (1 << 18) + 1000 + 3;
        let b: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
        for threads in [2, 3] {
            set_num_threads(threads);
            let mut a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            for_parts((a.as_mut_slice(), b.as_slice()), &|(x, y): (
                &mut [f32],
                &[f32],
            )| {
                for (x, y) in x.iter_mut().zip(y) {
                    *x += 2.0 * y + 1.0;
                }
            });
            set_num_threads(0);
            assert!(
                a.iter()
                    .enumerate()
                    .all(|(i, x)| *x == i as f32 + 2.0 * (i % 7) as f32 + 1.0)
            );
        }
    }

    #[test]
    fn split_element_wise_maps_match_one_thread() {
        let _turn = crate::threads::THREAD_SETTING
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = PARALLEL_ELEMENTS + 37;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let run = |threads: usize| {
            set_num_threads(threads);
            let mut mapped = vec![f32::NAN; n];
            crate::kernels::map_into(&x, &mut mapped, |v| v.max(0.0) * 2.0);
            let mut in_place = x.clone();
            crate::kernels::map_in_place(&mut in_place, |v| v * v);
            let mut zipped = vec![f32::NAN; n];
            crate::kernels::zip_map_into(&x, &y, &mut zipped, |a, b| if b > 0.0 { a } else { 0.0 });
            set_num_threads(0);
            (mapped, in_place, zipped)
        };
        let one = run(1);
        assert_eq!(one.0[3], x[3].max(0.0) * 2.0);
        assert_eq!(one.1[n - 1], x[n - 1] * x[n - 1]);
        for threads in [2, 3] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
    }
}
