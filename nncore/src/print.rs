//! PyTorch's printing: `repr(module)` (`Module.__repr__` with
//! `_addindent`) and Python's `repr(float)` for hyper-parameters.

use std::fmt;

use crate::module::Module;

/// PyTorch's `Module.__repr__`: `Name(extra)` when the module has a
/// one-line `extra_repr` and no children, otherwise the extra lines and
/// `(name): child` lines, each indented two spaces (children's own lines
/// indented two more, as `_addindent` does), and `)` on its own line.
///
/// Derived `Display` impls and [`Module::fmt_repr`] call it.
///
/// # Errors
/// Only those of the formatter.
pub fn fmt_module<M: Module + ?Sized>(m: &M, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let extra = m.extra_repr();
    let extra_lines: Vec<&str> = if extra.is_empty() {
        Vec::new()
    } else {
        extra.split('\n').collect()
    };
    let mut child_lines = Vec::new();
    m.visit_children(&mut |name, child| {
        child_lines.push(format!("({name}): {}", add_indent(&repr(child), 2)));
    });
    f.write_str(m.name())?;
    f.write_str("(")?;
    if extra_lines.len() == 1 && child_lines.is_empty() {
        f.write_str(extra_lines[0])?;
    } else if !extra_lines.is_empty() || !child_lines.is_empty() {
        for line in extra_lines
            .iter()
            .copied()
            .chain(child_lines.iter().map(String::as_str))
        {
            f.write_str("\n  ")?;
            f.write_str(line)?;
        }
        f.write_str("\n")?;
    }
    f.write_str(")")
}

/// The PyTorch `repr` of any module, as a `String`.
#[must_use]
pub fn repr<M: Module + ?Sized>(m: &M) -> String {
    struct Repr<'a, M: ?Sized>(&'a M);
    impl<M: Module + ?Sized> fmt::Display for Repr<'_, M> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fmt_repr(f)
        }
    }
    Repr(m).to_string()
}

/// PyTorch's `_addindent`: every line but the first gets `spaces` more
/// spaces.
#[must_use]
pub fn add_indent(s: &str, spaces: usize) -> String {
    let mut lines = s.split('\n');
    let mut out = String::with_capacity(s.len());
    if let Some(first) = lines.next() {
        out.push_str(first);
    }
    for line in lines {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', spaces));
        out.push_str(line);
    }
    out
}

/// Python's `repr(float)`: `0.01`, `1.0`, `1e-05`, `1e+16`.
pub(crate) fn py_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let s = format!("{v:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            let mantissa = mantissa.strip_suffix(".0").unwrap_or(mantissa);
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

impl fmt::Display for dyn Module + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_repr(f)
    }
}
