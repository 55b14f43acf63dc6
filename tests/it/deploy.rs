//! deploy/: the container image carries every model the server loads. The list comes from the
//! code (every `"<name>.onnx"` literal outside tests and `testkit`), checked against
//! models/manifest.json where scripts/setup wrote one, and each model must be copied into the
//! runtime stage of deploy/Dockerfile (without Docker: the Dockerfile's text is the image's list).

use std::collections::BTreeSet;
use std::path::Path;

use super::architecture::{rust_sources, strip_test_items};

/// Model file names the server's code loads.
fn models_the_code_loads() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (rel, text) in rust_sources() {
        if rel.starts_with("testkit/") {
            continue;
        }
        let code = strip_test_items(&text);
        for (at, _) in code.match_indices(".onnx\"") {
            let start = code[..at].rfind('"').unwrap() + 1;
            names.insert(code[start..at + ".onnx".len()].to_string());
        }
    }
    names
}

/// Files the runtime stage copies from the builder's models/ folder.
fn models_in_the_image(dockerfile: &str) -> BTreeSet<String> {
    let runtime = &dockerfile[dockerfile
        .find("AS runtime")
        .expect("a stage named runtime")..];
    // Join continued lines, then read every `COPY --from=builder` source under models/.
    let joined = runtime.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("COPY --from=builder"))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|w| w.strip_prefix("/src/models/").map(str::to_string))
        .collect()
}

#[test]
fn the_image_carries_every_model_the_server_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let code = models_the_code_loads();
    for needed in [
        "blazeface_128.onnx",
        "mobilefacenet.onnx",
        "ocr_det.onnx",
        "ocr_rec.onnx",
    ] {
        assert!(code.contains(needed), "{needed} not found in {code:?}");
    }
    // scripts/setup writes the manifest of what it fetched; every loaded model must be in it.
    if let Ok(text) = std::fs::read_to_string(root.join("models/manifest.json")) {
        let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
        let fetched: BTreeSet<String> = manifest["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["file"].as_str().unwrap().to_string())
            .collect();
        let missing: Vec<_> = code.difference(&fetched).collect();
        assert!(
            missing.is_empty(),
            "scripts/setup does not fetch {missing:?}"
        );
    }
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    let image = models_in_the_image(&dockerfile);
    let missing: Vec<_> = code.difference(&image).collect();
    assert!(
        missing.is_empty(),
        "deploy/Dockerfile's runtime stage does not copy {missing:?} (it copies {image:?})"
    );
}
