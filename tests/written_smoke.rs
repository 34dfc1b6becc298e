use nncore::prelude::*;

#[derive(Module)]
struct SimpleNet {
    fc1: Linear,
    relu: ReLU,
    fc2: Linear,
    tape: Tape,
}

#[nncore::forward]
impl SimpleNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.fc1(x)?;
        let out = self.relu(out)?;
        let out = self.fc2(out)?;
        Ok(out)
    }
}

#[derive(Module)]
struct Block {
    fc1: Linear,
    fc2: Linear,
    tape: Tape,
}

#[nncore::forward]
impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = relu(self.fc1(x)?);
        let h = self.fc2(&h)?;
        Ok(relu(h + x))
    }
}

#[derive(Module)]
struct ResMlp {
    stem: Linear,
    blocks: Vec<Block>,
    norm: Option<Tanh>,
    head: Linear,
    #[module(skip)]
    scale: f32,
    tape: Tape,
}

#[nncore::forward]
impl ResMlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.stem(x)?;
        for block in &self.blocks {
            h = block(h)?;
        }
        if let Some(norm) = &self.norm {
            h = norm(h);
        }
        let [a, b] = h.chunk(2, 1);
        let g = sigmoid(a) * b;
        let y = cat(&[g, x * self.scale - 1.0], 1);
        self.head(y)
    }
}

#[test]
fn smoke() {
    let mut m = SimpleNet {
        fc1: Linear::new(4, 8),
        relu: ReLU::new(),
        fc2: Linear::new(8, 2),
        tape: Tape::default(),
    };
    println!("{m}");
    let x = Tensor::from_element(3, 4, 0.5);
    let y = m.forward(&x).unwrap();
    let y2 = m.forward_train(&x).unwrap().clone();
    assert_eq!(y, y2);
    m.backward(&Tensor::from_element(3, 2, 1.0)).unwrap();
    let mut r = ResMlp {
        stem: Linear::new(4, 6),
        blocks: (0..2)
            .map(|_| Block {
                fc1: Linear::new(6, 6),
                fc2: Linear::new(6, 6),
                tape: Tape::default(),
            })
            .collect(),
        norm: Some(Tanh::new()),
        head: Linear::new(7, 3),
        scale: 2.0,
        tape: Tape::default(),
    };
    println!("{r}");
    let y = r.forward(&x).unwrap();
    let y2 = r.forward_train(&x).unwrap().clone();
    assert_eq!(y, y2);
    let g = Tensor::from_element(3, 3, 1.0);
    let dx = r.backward(&g).unwrap();
    println!("{dx}");
    println!("{}", nncore::summary(&r, (3, 4)).unwrap());
    let e = r.forward(&Tensor::zeros(3, 5)).unwrap_err();
    println!("{e}");
}
