//! Weights in and out, against files written by real PyTorch
//! (`scripts/gen_interop_fixtures.py`) and a corpus of malformed files
//! (`scripts/gen_malformed_corpus.py`).

mod common;

use common::models::SimpleNet;
use common::*;
use nncore::prelude::*;
use nncore::{Error, LoadOptions, SaveDtype, SaveOptions, StateDict, TensorData};
use std::path::PathBuf;

/// SimpleNet with the weights of `torch.manual_seed(seed)`.
fn seeded(seed: u64, i: usize, h: usize, o: usize) -> SimpleNet {
    nncore::with_seed(seed, || SimpleNet::new(i, h, o))
}

fn fx(name: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// A fresh directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnrs-weights-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn snapshot<M: Module>(m: &M) -> Vec<(String, Vec<f32>)> {
    m.named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.to_row_major()))
        .collect()
}

fn io_tensor(sd: &StateDict, key: &str) -> Tensor {
    let t = sd.get(key).unwrap();
    Tensor::from_row_slice(t.shape()[0], t.shape()[1], t.as_f32().unwrap())
}

#[test]
fn pytorch_file_loads_and_matches_pytorch_outputs() {
    let mut model = SimpleNet::new(100, 50, 10);
    let report = model
        .load_safetensors(fx("simple_net.safetensors"))
        .unwrap();
    assert!(report.missing_keys.is_empty() && report.unexpected_keys.is_empty());
    // The file holds torch.manual_seed(0)'s weights, which nncore draws too.
    assert_eq!(snapshot(&model), snapshot(&seeded(0, 100, 50, 10)));
    let io = StateDict::load_safetensors(fx("simple_net_io.safetensors")).unwrap();
    let y = model.forward(&io_tensor(&io, "input")).unwrap();
    assert_close(
        &row_major(&y),
        &row_major(&io_tensor(&io, "output")),
        1e-6,
        "output",
    );
}

#[test]
fn saved_file_is_byte_identical_to_pytorchs() {
    let model = seeded(0, 100, 50, 10);
    let dir = temp_dir("bytes");
    let path = dir.join("m.safetensors");
    model.save_safetensors(&path).unwrap();
    let ours = std::fs::read(&path).unwrap();
    // What safetensors.torch.save_file(model.state_dict(), ..., metadata={"format": "pt"}) wrote.
    assert_eq!(ours, std::fs::read(fx("simple_net.safetensors")).unwrap());
    // The file the script loaded into PyTorch (see gen_interop_fixtures.py).
    assert_eq!(ours, std::fs::read(fx("rust_written.safetensors")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn half_and_double_precision_files_convert() {
    for (file, reference) in [
        ("small_f16.safetensors", "small_f16_as_f32.safetensors"),
        ("small_bf16.safetensors", "small_bf16_as_f32.safetensors"),
        ("small_f64.safetensors", "small_f32.safetensors"),
    ] {
        let mut a = SimpleNet::new(4, 3, 2);
        a.load_safetensors(fx(file)).unwrap();
        let mut b = SimpleNet::new(4, 3, 2);
        b.load_safetensors(fx(reference)).unwrap();
        assert_eq!(snapshot(&a), snapshot(&b), "{file}");
    }
}

#[test]
fn saving_in_half_precision_rounds_as_pytorch_does() {
    let mut model = SimpleNet::new(4, 3, 2);
    model.load_safetensors(fx("small_f32.safetensors")).unwrap();
    let dir = temp_dir("half");
    for (dtype, reference) in [
        (SaveDtype::F16, "small_f16"),
        (SaveDtype::BF16, "small_bf16"),
    ] {
        let path = dir.join(format!("{reference}.safetensors"));
        model
            .save_safetensors_with(&path, SaveOptions::dtype(dtype))
            .unwrap();
        // Same bytes as PyTorch's v.half() / v.bfloat16() export.
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(fx(&format!("{reference}.safetensors"))).unwrap(),
            "{reference}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn integer_tensor_is_an_error_naming_the_key_and_changes_nothing() {
    let mut model = SimpleNet::new(4, 3, 2);
    let before = snapshot(&model);
    let err = model
        .load_safetensors(fx("small_int.safetensors"))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("fc1.weight") && msg.contains("I64"), "{msg}");
    assert_eq!(snapshot(&model), before);
}

fn broken_state_dict() -> StateDict {
    let mut sd = seeded(0, 100, 50, 10).state_dict();
    sd.insert(
        "fc1.weight",
        TensorData::new(vec![50, 99], vec![0.0; 50 * 99]).unwrap(),
    );
    sd.remove("fc2.bias");
    sd.insert(
        "fc3.weight",
        TensorData::new(vec![2, 2], vec![0.0; 4]).unwrap(),
    );
    sd
}

#[test]
fn strict_load_reports_everything_like_pytorch_and_changes_nothing() {
    let expected = fixture("interop.json");
    let mut model = SimpleNet::new(100, 50, 10);
    let before = snapshot(&model);
    let err = model
        .load_state_dict(&broken_state_dict(), true)
        .unwrap_err();
    assert_eq!(err.to_string(), expected["strict_error"].as_str().unwrap());
    assert_eq!(snapshot(&model), before, "a failed load changes nothing");

    // Non-strict: the size mismatch is still an error, as in PyTorch.
    let err = model
        .load_state_dict(&broken_state_dict(), false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        expected["non_strict_error"].as_str().unwrap()
    );
    assert_eq!(snapshot(&model), before);
    let Error::LoadStateDict(e) = err else {
        panic!("wrong error kind")
    };
    assert_eq!(e.model, "SimpleNet");
    assert_eq!(e.mismatches.len(), 1);
}

#[test]
fn non_strict_load_takes_what_matches_and_lists_the_rest() {
    let expected = fixture("interop.json");
    let mut sd = broken_state_dict();
    let good = seeded(0, 100, 50, 10);
    sd.insert(
        "fc1.weight",
        TensorData::new(vec![50, 100], good.fc1.weight().to_row_major()).unwrap(),
    );
    let mut model = SimpleNet::new(100, 50, 10);
    let old_fc2_bias = model.fc2.bias().unwrap().to_row_major();
    let report = model.load_state_dict(&sd, false).unwrap();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        report.missing_keys,
        strings(&expected["non_strict_missing"])
    );
    assert_eq!(
        report.unexpected_keys,
        strings(&expected["non_strict_unexpected"])
    );
    assert_eq!(model.fc1.weight().value(), good.fc1.weight().value());
    assert_eq!(model.fc2.weight().value(), good.fc2.weight().value());
    assert_eq!(model.fc2.bias().unwrap().to_row_major(), old_fc2_bias);

    // The same through a file.
    let dir = temp_dir("nonstrict");
    let path = dir.join("partial.safetensors");
    sd.save_safetensors(&path, SaveOptions::default()).unwrap();
    let mut other = SimpleNet::new(100, 50, 10);
    assert!(other.load_safetensors(&path).is_err());
    let report = other
        .load_safetensors_with(&path, LoadOptions::non_strict())
        .unwrap();
    assert_eq!(report.missing_keys, ["fc2.bias"]);
    assert_eq!(report.unexpected_keys, ["fc3.weight"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn state_dict_round_trip() {
    let a = SimpleNet::new(5, 4, 3);
    let sd = a.state_dict();
    assert_eq!(
        sd.keys().collect::<Vec<_>>(),
        ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    );
    assert_eq!(sd.get("fc1.weight").unwrap().shape(), &[4, 5]);
    let mut b = SimpleNet::new(5, 4, 3);
    b.load_state_dict(&sd, true).unwrap();
    assert_eq!(snapshot(&a), snapshot(&b));
}

#[test]
fn save_is_atomic_and_leaves_no_temporary_files() {
    let dir = temp_dir("atomic");
    let path = dir.join("model.safetensors");
    let a = SimpleNet::new(3, 2, 1);
    a.save_safetensors(&path).unwrap();
    let b = SimpleNet::new(3, 2, 1);
    b.save_safetensors(&path).unwrap(); // over an existing file
    let mut c = SimpleNet::new(3, 2, 1);
    c.load_safetensors(&path).unwrap();
    assert_eq!(snapshot(&b), snapshot(&c));
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["model.safetensors"]);

    // A save that cannot happen is an error and leaves the old file intact.
    let missing_dir = dir.join("no/such/dir/model.safetensors");
    assert!(matches!(
        a.save_safetensors(&missing_dir),
        Err(Error::Io { .. })
    ));
    let target_is_dir = dir.join("sub");
    std::fs::create_dir(&target_is_dir).unwrap();
    std::fs::write(target_is_dir.join("keep"), b"x").unwrap();
    assert!(a.save_safetensors(&target_is_dir).is_err());
    assert_eq!(std::fs::read(target_is_dir.join("keep")).unwrap(), b"x");
    c.load_safetensors(&path).unwrap();
    assert_eq!(snapshot(&b), snapshot(&c));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nan_and_inf_load_as_they_are_and_check_finite_names_them() {
    let mut sd = SimpleNet::new(2, 2, 1).state_dict();
    sd.insert(
        "fc2.weight",
        TensorData::new(vec![1, 2], vec![1.0, f32::INFINITY]).unwrap(),
    );
    sd.insert(
        "fc2.bias",
        TensorData::new(vec![1], vec![f32::NAN]).unwrap(),
    );
    let mut m = SimpleNet::new(2, 2, 1);
    assert!(m.check_finite().is_ok());
    m.load_state_dict(&sd, true).unwrap();
    assert!(m.fc2.bias().unwrap().value()[0].is_nan());
    let err = m.check_finite().unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter fc2.weight holds a non-finite value (inf at flat index 1)"
    );
}

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let mut m = SimpleNet::new(2, 2, 1);
    let err = m.load_safetensors("/no/such/file.safetensors").unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().starts_with("/no/such/file.safetensors: "));
}

#[test]
fn malformed_corpus_is_refused_without_panic() {
    let dir = fx("malformed");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let mut m = SimpleNet::new(2, 2, 1);
        let before = snapshot(&m);
        let res = m.load_safetensors(&path);
        assert!(
            matches!(res, Err(Error::InvalidFile { .. })),
            "{}: {res:?}",
            path.display()
        );
        assert!(StateDict::from_safetensors_bytes(&bytes).is_err());
        assert!(
            m.load_safetensors_bytes(&bytes, LoadOptions::non_strict())
                .is_err()
        );
        assert_eq!(snapshot(&m), before);
        count += 1;
    }
    assert!(count >= 20, "corpus has {count} files");
}

#[test]
fn large_files_load_through_the_memory_map() {
    // 2048 x 2048 f32 weights: 16 MiB and more, so the loader maps the file.
    let a = nncore::with_seed(9, || Linear::new(2048, 2048));
    let dir = temp_dir("large");
    let path = dir.join("large.safetensors");
    a.save_safetensors(&path).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() >= 16 << 20);
    let mut b = Linear::new_no_bias(2048, 2048);
    assert!(
        b.load_safetensors(&path).is_err(),
        "a bias the model lacks is unexpected"
    );
    let mut b = Linear::new(2048, 2048);
    b.load_safetensors(&path).unwrap();
    assert_eq!(a.weight().value(), b.weight().value());
    assert_eq!(a.bias().unwrap().value(), b.bias().unwrap().value());
    std::fs::remove_dir_all(&dir).unwrap();
}
