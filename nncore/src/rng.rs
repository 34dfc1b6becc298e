//! Random numbers that match PyTorch's CPU generator bit for bit.
//!
//! PyTorch's CPU generator is a 32-bit Mersenne Twister (mt19937) seeded
//! with the low 32 bits of the seed, and `tensor.uniform_(a, b)` on `f32`
//! draws one 32-bit number per element, keeps its low 24 bits `u` and
//! returns `fma(u / 2^24, b - a, a)`. nncore does the same, so
//! `nncore::manual_seed(42)` followed by `Linear::new(100, 50)` gives the
//! very weights that `torch.manual_seed(42); nn.Linear(100, 50)` gives.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// PyTorch's default CPU seed (`default_rng_seed_val`), used until
/// [`manual_seed`] is called.
pub const DEFAULT_SEED: u64 = 67_280_421_310_721;

/// A random number generator with PyTorch's CPU semantics.
///
/// # Example
/// ```
/// use nncore::Generator;
/// let mut g = Generator::new(42);
/// // torch.manual_seed(42); torch.empty(1).uniform_(0, 1) -> 0.8822692632675171
/// assert_eq!(g.uniform(0.0, 1.0), 0.882_269_26_f32);
/// ```
pub struct Generator {
    mt: rand_mt::Mt,
}

impl Generator {
    /// A generator seeded as `torch.Generator().manual_seed(seed)`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        // PyTorch's mt19937 takes the low 32 bits of the seed.
        Self {
            mt: rand_mt::Mt::new(seed as u32),
        }
    }

    /// The next raw 32-bit draw.
    pub fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// One draw of `tensor.uniform_(from, to)` for an `f32` tensor.
    pub fn uniform(&mut self, from: f32, to: f32) -> f32 {
        const MASK: u32 = (1 << f32::MANTISSA_DIGITS) - 1;
        const DIVISOR: f32 = 1.0 / (1u32 << f32::MANTISSA_DIGITS) as f32;
        let x = (self.next_u32() & MASK) as f32 * DIVISOR;
        x.mul_add(to - from, from)
    }

    /// Fills `out` as `uniform_(from, to)` does, element by element in
    /// order (PyTorch's row-major order for the caller to respect).
    pub fn fill_uniform(&mut self, out: &mut [f32], from: f32, to: f32) {
        for v in out {
            *v = self.uniform(from, to);
        }
    }

    /// A `rows x cols` tensor filled as `torch.empty(rows, cols).uniform_(from,
    /// to)` fills it (PyTorch's row-major draw order).
    #[must_use]
    pub fn uniform_tensor(
        &mut self,
        rows: usize,
        cols: usize,
        from: f32,
        to: f32,
    ) -> crate::Tensor {
        let mut data = vec![0.0f32; rows * cols];
        self.fill_uniform(&mut data, from, to);
        crate::Tensor::from_row_slice(rows, cols, &data)
    }
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator").finish_non_exhaustive()
    }
}

static DEFAULT: Mutex<Option<Generator>> = Mutex::new(None);

fn default_generator() -> MutexGuard<'static, Option<Generator>> {
    DEFAULT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seeds the process-wide default generator, as `torch.manual_seed` does.
/// Layers built with their plain constructors (`Linear::new`) draw from
/// it.
///
/// # Example
/// ```
/// use nncore::{manual_seed, Linear};
/// manual_seed(7);
/// let a = Linear::new(3, 2);
/// manual_seed(7);
/// let b = Linear::new(3, 2);
/// assert_eq!(a.weight().value(), b.weight().value());
/// ```
pub fn manual_seed(seed: u64) {
    *default_generator() = Some(Generator::new(seed));
}

thread_local! {
    static SCOPED: std::cell::RefCell<Option<Generator>> = const { std::cell::RefCell::new(None) };
    static IN_DEFAULT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the default generator (seeded with [`DEFAULT_SEED`]
/// unless [`manual_seed`] was called), or, inside [`with_seed`], with that
/// scope's generator.
///
/// # Panics
/// When called again from inside `f` on the same thread (for example
/// `with_default_generator(|_| Linear::new(2, 2))`): `f` already holds the
/// generator, so the inner call could only deadlock or draw out of order.
/// Draw from the `&mut Generator` that `f` is given instead (such as
/// `Linear::with_generator(2, 2, true, g)`).
pub fn with_default_generator<R>(f: impl FnOnce(&mut Generator) -> R) -> R {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_DEFAULT.with(|c| c.set(false));
        }
    }
    assert!(
        !IN_DEFAULT.with(|c| c.replace(true)),
        "nncore::with_default_generator called inside its own closure: draw from the `&mut Generator` the closure was given (for layers: `Linear::with_generator(.., g)`)"
    );
    let _leave = Leave;
    let mut f = Some(f);
    let scoped = SCOPED.with(|s| {
        let mut s = s.borrow_mut();
        s.as_mut().map(|g| (f.take().expect("called once"))(g))
    });
    match (scoped, f) {
        (Some(r), _) => r,
        (None, Some(f)) => {
            let mut guard = default_generator();
            f(guard.get_or_insert_with(|| Generator::new(DEFAULT_SEED)))
        }
        (None, None) => unreachable!("the closure runs exactly once"),
    }
}

/// Runs `f` with the default generator replaced, on this thread only, by
/// one seeded with `seed`; the process-wide generator is neither used nor
/// changed. Like `with torch.random.fork_rng(): torch.manual_seed(seed)`,
/// but immune to other threads drawing at the same time (tests running in
/// parallel, say).
///
/// # Example
/// ```
/// use nncore::{with_seed, Linear};
/// let a = with_seed(7, || Linear::new(3, 2));
/// let b = with_seed(7, || Linear::new(3, 2));
/// assert_eq!(a.weight().value(), b.weight().value());
/// ```
pub fn with_seed<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Generator>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SCOPED.with(|s| *s.borrow_mut() = previous);
        }
    }
    let previous = SCOPED.with(|s| s.borrow_mut().replace(Generator::new(seed)));
    let _restore = Restore(previous);
    f()
}

/// `torch.empty(rows, cols).uniform_(from, to)` from the default generator.
///
/// # Example
/// ```
/// nncore::manual_seed(0);
/// let x = nncore::rand_uniform(4, 3, -1.0, 1.0);
/// assert_eq!(x.shape(), (4, 3));
/// assert!(x.iter().all(|v| (-1.0..1.0).contains(v)));
/// ```
#[must_use]
pub fn rand_uniform(rows: usize, cols: usize, from: f32, to: f32) -> crate::Tensor {
    with_default_generator(|g| g.uniform_tensor(rows, cols, from, to))
}
