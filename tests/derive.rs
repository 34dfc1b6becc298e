//! What `#[derive(Module)]` generates: skip fields, generics, a custom
//! forward, the extra_repr hook, unit structs, raw identifiers, train/eval
//! propagation and parameter visits.

use nncore::prelude::*;

#[derive(Module)]
struct Block<L> {
    inner: L,
    act: ReLU,
}

#[derive(Module)]
struct Model {
    #[module(skip)]
    hidden: usize,
    fc: Linear,
    #[module(skip)]
    label: String,
    block: Block<Linear>,
}

#[test]
fn skip_fields_are_not_children() {
    let m = Model {
        hidden: 3,
        fc: Linear::new(2, 3),
        label: "x".into(),
        block: Block {
            inner: Linear::new(3, 1),
            act: ReLU::new(),
        },
    };
    assert_eq!(
        m.to_string(),
        "Model(\n  (fc): Linear(in_features=2, out_features=3, bias=True)\n  (block): Block(\n    (inner): Linear(in_features=3, out_features=1, bias=True)\n    (act): ReLU()\n  )\n)"
    );
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "fc.weight",
            "fc.bias",
            "block.inner.weight",
            "block.inner.bias"
        ]
    );
    assert_eq!(m.num_parameters(), 2 * 3 + 3 + 3 + 1);
    assert_eq!(m.hidden, 3);
    assert_eq!(m.label, "x");
    // Forward skips the plain data fields too.
    let y = m.forward(&Tensor::zeros(5, 2)).unwrap();
    assert_eq!(y.shape(), (5, 1));
}

#[test]
fn generic_blocks_nest() {
    let b: Block<Block<Linear>> = Block {
        inner: Block {
            inner: Linear::new(4, 4),
            act: ReLU::new(),
        },
        act: ReLU::new(),
    };
    // The printed name has no generic arguments.
    assert!(b.to_string().starts_with("Block(\n  (inner): Block(\n"));
    let names: Vec<String> = b.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["inner.inner.weight", "inner.inner.bias"]);
    let y = b.forward(&Tensor::from_element(2, 4, -1.0)).unwrap();
    assert!(y.iter().all(|v| *v >= 0.0));
}

fn describe(m: &Scaled) -> String {
    format!("scale={}", m.scale)
}

#[derive(Module)]
#[module(custom_forward, extra_repr = "describe")]
struct Scaled {
    #[module(skip)]
    scale: f32,
    fc: Linear,
}

impl Forward for Scaled {
    fn forward(&self, x: &Tensor) -> nncore::Result<Tensor> {
        let y = self.fc.forward(x).map_err(|e| e.within("fc", "Scaled"))?;
        Ok(y * self.scale)
    }
}

#[test]
fn custom_forward_and_extra_repr() {
    let fc = Linear::from_weights(Tensor::from_row_slice(1, 2, &[1.0, 1.0]), None).unwrap();
    let m = Scaled { scale: 2.0, fc };
    assert_eq!(
        m.to_string(),
        "Scaled(\n  scale=2\n  (fc): Linear(in_features=2, out_features=1, bias=False)\n)"
    );
    let y = m
        .forward(&Tensor::from_row_slice(1, 2, &[1.0, 2.0]))
        .unwrap();
    assert_eq!(y[(0, 0)], 6.0);
    let err = m.forward(&Tensor::zeros(1, 3)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Scaled.fc (Linear): expected input with 2 features, got 3"
    );
}

#[derive(Module)]
#[module(extra_repr = "Self::text")]
struct OnlyExtra {}

impl OnlyExtra {
    fn text(&self) -> String {
        "k=1".into()
    }
}

#[derive(Module)]
struct Unit;

#[test]
fn one_line_extra_repr_prints_inline_and_unit_structs_print_empty() {
    assert_eq!(OnlyExtra {}.to_string(), "OnlyExtra(k=1)");
    assert_eq!(Unit.to_string(), "Unit()");
    // A module without children is the identity in the derived chain.
    let x = Tensor::from_element(2, 2, 3.0);
    assert_eq!(Unit.forward(&x).unwrap(), x);
}

#[derive(Module)]
#[allow(non_camel_case_types)]
struct r#Raw {
    r#type: Linear,
}

#[test]
fn raw_identifiers_print_without_prefix() {
    let m = r#Raw {
        r#type: Linear::new(1, 1),
    };
    assert!(m.to_string().starts_with("Raw(\n  (type): Linear("));
    assert_eq!(m.named_parameters()[0].0, "type.weight");
}

#[test]
fn train_eval_propagate_and_visits_reach_every_parameter() {
    let mut m = Model {
        hidden: 0,
        fc: Linear::new(2, 3),
        label: String::new(),
        block: Block {
            inner: Linear::new(3, 1),
            act: ReLU::new(),
        },
    };
    assert!(m.is_training());
    m.eval();
    assert!(!m.is_training());
    assert!(!m.block.act.is_training());
    assert!(!m.fc.is_training());
    m.train();
    assert!(m.block.inner.is_training());

    let mut seen = Vec::new();
    m.visit_parameters_mut(&mut |name, p| {
        p.value_mut().fill(1.0);
        seen.push(name.to_owned());
    });
    assert_eq!(seen.len(), 4);
    assert!(
        m.parameters()
            .iter()
            .all(|p| p.value().iter().all(|v| *v == 1.0))
    );

    let children: Vec<String> = m.named_children().into_iter().map(|(n, _)| n).collect();
    assert_eq!(children, ["fc", "block"]);
    let modules: Vec<String> = m.named_modules().into_iter().map(|(n, _)| n).collect();
    assert_eq!(modules, ["", "fc", "block", "block.inner", "block.act"]);
}

#[test]
fn models_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
    assert_send_sync::<Block<Block<Linear>>>();
}

#[test]
fn dyn_module_prints() {
    let b = Block {
        inner: Linear::new(1, 2),
        act: ReLU::new(),
    };
    let d: &dyn Module = &b;
    assert_eq!(d.to_string(), b.to_string());
}

#[derive(Module)]
struct Repeat<const N: usize> {
    layers: [Linear; N],
    act: ReLU,
}

#[test]
fn const_generic_structs_derive() {
    let m = Repeat::<3> {
        layers: [Linear::new(2, 2), Linear::new(2, 2), Linear::new(2, 2)],
        act: ReLU::new(),
    };
    assert_eq!(m.named_parameters().len(), 6);
    assert_eq!(m.named_parameters()[4].0, "layers.2.weight");
    assert!(
        m.to_string()
            .contains("(0-2): 3 x Linear(in_features=2, out_features=2, bias=True)")
    );
    assert_eq!(m.forward(&Tensor::zeros(4, 2)).unwrap().shape(), (4, 2));
}

#[test]
fn forward_runs_from_several_threads_at_once() {
    let model = Block {
        inner: Linear::new(8, 4),
        act: ReLU::new(),
    };
    let x = Tensor::from_fn(16, 8, |r, c| (r as f32 - c as f32) * 0.1);
    let expected = model.forward(&x).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..50)
                        .map(|_| model.forward(&x).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap().iter().all(|y| *y == expected));
        }
    });
}

#[derive(Module)]
struct Named<'a, L>
where
    L: Clone,
{
    #[module(skip)]
    label: &'a str,
    body: Block<L>,
    head: Option<Linear>,
}

#[test]
fn lifetimes_where_clauses_and_generic_children() {
    let m = Named {
        label: "net",
        body: Block {
            inner: Linear::new(3, 3),
            act: ReLU::new(),
        },
        head: Some(Linear::new(3, 1)),
    };
    assert_eq!(m.label, "net");
    assert_eq!(m.forward(&Tensor::zeros(2, 3)).unwrap().shape(), (2, 1));
    assert_eq!(m.named_parameters()[2].0, "head.weight");
}
