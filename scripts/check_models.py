#!/usr/bin/env python3
"""Checks the face and OCR models that scripts/setup prepares in models/.

Loads every ONNX model with onnxruntime, prints its input/output names and
shapes, checks them against the layouts the Rust code relies on (see
models/README.md), and runs the pipeline once on the astronaut still:
BlazeFace must find exactly one face with score > 0.5, the face mesh's
presence logit must be > 0, the iris and MobileFaceNet models must give
finite outputs of the expected shape. The OCR pair reads back a line of text
rendered with Pillow's default font (detector box, then recognizer with the
charset from its metadata key "character", greedy CTC decoding).

Needs numpy, onnxruntime and Pillow (scripts/setup runs it inside the
throwaway venv it uses for the tflite -> ONNX conversion).

    python3 scripts/check_models.py [--models DIR] [--json OUT.json]

Exit status 0 when every check passes; the JSON file holds the layouts and
results, which scripts/setup copies into models/manifest.json.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont

# name -> (inputs, outputs) as [(name, shape)], what the Rust side expects.
EXPECTED = {
    "blazeface_128.onnx": (
        [("input:0", [1, 128, 128, 3])],
        [("Identity:0", [1, 512, 1]), ("Identity_1:0", [1, 384, 1]),
         ("Identity_2:0", [1, 512, 16]), ("Identity_3:0", [1, 384, 16])],
    ),
    "face_landmark.onnx": (
        [("input_1", [1, 3, 192, 192])],
        [("conv2d_20", [1, 1404, 1, 1]), ("conv2d_30", [1, 1, 1, 1])],
    ),
    "iris_landmark.onnx": (
        [("input_1", [1, 3, 64, 64])],
        [("output_eyes_contours_and_brows", [1, 213]), ("output_iris", [1, 15])],
    ),
    "mobilefacenet.onnx": (
        [("input", [2, 3, 112, 112])],
        [("embeddings", [2, 192])],
    ),
    # PP-OCRv4 (paddle2onnx): dynamic dims keep their exporter names.
    "ocr_det.onnx": (
        [("x", ["p2o.DynamicDimension.0", 3, "p2o.DynamicDimension.1", "p2o.DynamicDimension.2"])],
        [("sigmoid_0.tmp_0", ["p2o.DynamicDimension.3", 1, "p2o.DynamicDimension.4", "p2o.DynamicDimension.5"])],
    ),
    "ocr_rec.onnx": (
        [("x", ["p2o.DynamicDimension.0", 3, "?", "p2o.DynamicDimension.1"])],
        [("softmax_11.tmp_0", ["p2o.DynamicDimension.2", "p2o.DynamicDimension.3", 6625])],
    ),
}

OCR_TEXT = "Vericall 4721"

# Standard 112x112 five-point template (eyes, nose tip, mouth corners).
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)

FAILURES = []


def check(cond, msg):
    print(("  ok    " if cond else "  FAIL  ") + msg)
    if not cond:
        FAILURES.append(msg)


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def io_of(sess):
    ins = [{"name": i.name, "shape": list(i.shape), "type": i.type} for i in sess.get_inputs()]
    outs = [{"name": o.name, "shape": list(o.shape), "type": o.type} for o in sess.get_outputs()]
    return ins, outs


def affine_crop(img, cx, cy, size, theta, out):
    """Square crop of side `size` px centred on (cx, cy), its x axis rotated by
    theta (radians, image coordinates), resampled to out x out. Returns the
    crop and the function mapping crop coordinates back to image coordinates."""
    c, s = math.cos(theta), math.sin(theta)
    k = size / out
    a, b = k * c, -k * s
    d, e = k * s, k * c
    tx = cx - a * out / 2 - b * out / 2
    ty = cy - d * out / 2 - e * out / 2
    crop = img.transform((out, out), Image.AFFINE, (a, b, tx, d, e, ty), resample=Image.BILINEAR)

    def back(pts):
        pts = np.asarray(pts, dtype=np.float64)
        x = a * pts[:, 0] + b * pts[:, 1] + tx
        y = d * pts[:, 0] + e * pts[:, 1] + ty
        return np.stack([x, y], axis=1)

    return crop, back


def blazeface_anchors():
    out = []
    for n, per in ((16, 2), (8, 6)):
        for y in range(n):
            for x in range(n):
                for _ in range(per):
                    out.append(((x + 0.5) / n, (y + 0.5) / n))
    return np.array(out, dtype=np.float64)


def run_blazeface(sess, img):
    """Letterbox to a square, resize to 128, decode as MediaPipe does.
    Returns faces (score, box [x0,y0,x1,y1] px, 6 keypoints px), best first."""
    w, h = img.size
    side = max(w, h)
    pad_x, pad_y = (side - w) / 2, (side - h) / 2
    sq = Image.new("RGB", (side, side))
    sq.paste(img, (int(pad_x), int(pad_y)))
    x = np.asarray(sq.resize((128, 128), Image.BILINEAR), dtype=np.float32) / 127.5 - 1.0
    o = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input:0": x[None]})))
    logits = np.concatenate([o["Identity:0"], o["Identity_1:0"]], axis=1)[0, :, 0].astype(np.float64)
    regs = np.concatenate([o["Identity_2:0"], o["Identity_3:0"]], axis=1)[0].astype(np.float64)
    anchors = blazeface_anchors()
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))
    cx = regs[:, 0] / 128 + anchors[:, 0]
    cy = regs[:, 1] / 128 + anchors[:, 1]
    bw, bh = regs[:, 2] / 128, regs[:, 3] / 128
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    kps = np.stack([regs[:, 4:16:2] / 128 + anchors[:, :1], regs[:, 5:16:2] / 128 + anchors[:, 1:]], axis=2)

    idx = [i for i in np.argsort(-scores) if scores[i] >= 0.5]
    faces = []
    while idx:
        top = idx[0]
        b0 = boxes[top]
        rest = np.array(idx)
        bb = boxes[rest]
        iw = np.clip(np.minimum(b0[2], bb[:, 2]) - np.maximum(b0[0], bb[:, 0]), 0, None)
        ih = np.clip(np.minimum(b0[3], bb[:, 3]) - np.maximum(b0[1], bb[:, 1]), 0, None)
        inter = iw * ih
        union = (b0[2] - b0[0]) * (b0[3] - b0[1]) + (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1]) - inter
        ious = inter / np.maximum(union, 1e-12)
        group = rest[ious > 0.3]
        wts = scores[group][:, None]
        box = (boxes[group] * wts).sum(0) / wts.sum()
        kp = (kps[group] * wts[:, :, None]).sum(0) / wts.sum()
        # back to image pixels (undo the letterbox)
        box_px = box * side - np.array([pad_x, pad_y, pad_x, pad_y])
        kp_px = kp * side - np.array([pad_x, pad_y])
        faces.append((float(scores[top]), box_px, kp_px))
        idx = [i for i in idx if i not in set(group.tolist())]
    return faces


def run_mesh(sess, img, box, kp):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    size = 1.5 * max(box[2] - box[0], box[3] - box[1])
    theta = math.atan2(kp[1][1] - kp[0][1], kp[1][0] - kp[0][0])
    crop, back = affine_crop(img, cx, cy, size, theta, 192)
    x = (np.asarray(crop, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
    pts, presence = sess.run(["conv2d_20", "conv2d_30"], {"input_1": x})
    pts = pts.reshape(468, 3)
    return float(presence.reshape(-1)[0]), back(pts[:, :2]), theta


def run_iris(sess, img, mesh, theta, corners):
    p0, p1 = mesh[corners[0]], mesh[corners[1]]
    c = (p0 + p1) / 2
    size = 2.3 * float(np.linalg.norm(p1 - p0))
    crop, _ = affine_crop(img, c[0], c[1], size, theta, 64)
    x = (np.asarray(crop, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
    return sess.run(None, {sess.get_inputs()[0].name: x})


def similarity(src, dst):
    """Least-squares similarity transform src -> dst (Umeyama), 2x3."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sgn = np.sign(np.linalg.det(u @ vt)) or 1.0
    dmat = np.diag([1.0, sgn])
    r = u @ dmat @ vt
    scale = (sig * np.diag(dmat)).sum() / (s0 ** 2).sum(1).mean()
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def aligned_112(img, five):
    m = similarity(five, TEMPLATE_112)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    return img.transform((112, 112), Image.AFFINE, tuple(inv.reshape(-1)), resample=Image.BILINEAR)


def embed(sess, a, b):
    x = np.stack([(np.asarray(i, dtype=np.float32) - 127.5) / 128.0 for i in (a, b)]).transpose(0, 3, 1, 2)
    e = sess.run(["embeddings"], {"input": x})[0].astype(np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def main():
    ort.set_default_logger_severity(3)  # no "removing unused initializer" noise
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(here, "..", "models"))
    ap.add_argument("--json", help="write layouts and results here")
    args = ap.parse_args()
    mdir = args.models
    stills = os.path.join(mdir, "stills")

    result = {"onnxruntime": ort.__version__, "models": {}, "checks": {}}
    sessions = {}
    print(f"onnxruntime {ort.__version__}")
    for name, (exp_in, exp_out) in EXPECTED.items():
        path = os.path.join(mdir, name)
        if not os.path.exists(path):
            check(False, f"{name}: missing")
            continue
        sess = session(path)
        sessions[name] = sess
        ins, outs = io_of(sess)
        result["models"][name] = {"inputs": ins, "outputs": outs}
        print(f"{name}")
        for kind, got, exp in (("in ", ins, exp_in), ("out", outs, exp_out)):
            for g in got:
                print(f"    {kind} {g['name']:<32} {g['shape']} {g['type']}")
            check([(g["name"], g["shape"]) for g in got] == [(n, s) for n, s in exp],
                  f"{name}: {kind.strip()}puts are {[(n, s) for n, s in exp]}")
    if FAILURES:
        return finish(result, args.json)

    print("ocr (rendered text line)")
    result["checks"]["ocr"] = check_ocr(sessions["ocr_det.onnx"], sessions["ocr_rec.onnx"])

    img = Image.open(os.path.join(stills, "astronaut.png")).convert("RGB")
    print(f"astronaut.png {img.size[0]}x{img.size[1]}")
    faces = run_blazeface(sessions["blazeface_128.onnx"], img)
    check(len(faces) == 1, f"blazeface: faces with score >= 0.5 after NMS: {len(faces)} (want 1)")
    if not faces:
        return finish(result, args.json)
    score, box, kp = faces[0]
    print(f"    face score {score:.4f} box x0,y0,x1,y1 = {np.round(box, 1).tolist()} px")
    print(f"    keypoints {np.round(kp, 1).tolist()}")
    check(score > 0.5, f"blazeface: face score {score:.4f} > 0.5")
    check(kp[0][0] < kp[1][0], "blazeface: keypoint 0 (right eye) is at image-left of keypoint 1")
    result["checks"]["blazeface"] = {"faces": len(faces), "score": round(score, 4),
                                      "box_px": [round(float(v), 1) for v in box],
                                      "keypoints_px": [[round(float(v), 1) for v in p] for p in kp]}

    presence, mesh, theta = run_mesh(sessions["face_landmark.onnx"], img, box, kp)
    inside = float(np.mean((mesh[:, 0] >= box[0] - 0.25 * (box[2] - box[0])) &
                           (mesh[:, 0] <= box[2] + 0.25 * (box[2] - box[0])) &
                           (mesh[:, 1] >= box[1] - 0.25 * (box[3] - box[1])) &
                           (mesh[:, 1] <= box[3] + 0.25 * (box[3] - box[1]))))
    print(f"    mesh presence logit {presence:.3f}; roll {math.degrees(theta):.1f} deg; "
          f"{inside * 100:.0f}% of points within the box (+25%)")
    print(f"    mesh points: right eye outer (33) {np.round(mesh[33], 1).tolist()}, "
          f"left eye outer (263) {np.round(mesh[263], 1).tolist()}, nose tip (1) {np.round(mesh[1], 1).tolist()}")
    check(presence > 0, f"face mesh: presence logit {presence:.3f} > 0")
    check(inside > 0.95, f"face mesh: points land on the detected face ({inside * 100:.0f}%)")
    result["checks"]["face_mesh"] = {"presence_logit": round(presence, 3), "roll_deg": round(math.degrees(theta), 2),
                                      "points_in_box": round(inside, 3)}

    iris_out = run_iris(sessions["iris_landmark.onnx"], img, mesh, theta, (33, 133))
    check(all(np.isfinite(o).all() for o in iris_out), "iris: finite outputs on the right-eye crop")
    result["checks"]["iris"] = {"shapes": [list(o.shape) for o in iris_out]}

    # MobileFaceNet: astronaut aligned from mesh points vs the other stills.
    five = np.array([mesh[[33, 133]].mean(0), mesh[[362, 263]].mean(0), mesh[1], mesh[61], mesh[291]])
    astro = aligned_112(img, five)
    emb = embed(sessions["mobilefacenet.onnx"], astro, astro.transpose(Image.FLIP_LEFT_RIGHT))
    same = float(emb[0] @ emb[1])
    check(np.isfinite(emb).all(), "mobilefacenet: finite [2,192] embeddings")
    print(f"    mobilefacenet cosine astronaut vs its mirror image: {same:.3f}")
    emb_checks = {"astronaut_vs_mirror": round(same, 3)}
    other = os.path.join(stills, "tom_hanks_112.png")
    if os.path.exists(other):
        tom = Image.open(other).convert("RGB").resize((112, 112))
        e2 = embed(sessions["mobilefacenet.onnx"], astro, tom)
        diff = float(e2[0] @ e2[1])
        print(f"    mobilefacenet cosine astronaut vs tom_hanks_112.png: {diff:.3f}")
        check(diff < same, "mobilefacenet: different people score below the same person")
        emb_checks["astronaut_vs_tom_hanks"] = round(diff, 3)
    result["checks"]["mobilefacenet"] = emb_checks
    return finish(result, args.json)


def check_ocr(det, rec):
    """Renders OCR_TEXT black on white, finds it with the detector (probability
    map > 0.3, bounding box of the hits, grown by 0.6 x its height as the DB
    maps are shrunk), reads the crop with the recognizer. Both take BGR scaled
    to [-1, 1], as in the wheel's own pipeline (cv2 images, mean = std = 0.5);
    the recognizer's input is 48 px high, right-padded with 0 to >= 320 px."""
    img = Image.new("RGB", (320, 96), "white")
    font = ImageFont.load_default(size=32)
    ImageDraw.Draw(img).text((24, 28), OCR_TEXT, fill="black", font=font)
    x = (np.asarray(img, dtype=np.float32)[:, :, ::-1] / 127.5 - 1.0).transpose(2, 0, 1)[None]
    prob = det.run(None, {"x": x})[0]
    check(list(prob.shape) == [1, 1, 96, 320], f"ocr_det: probability map {list(prob.shape)} == [1,1,96,320]")
    ys, xs = np.nonzero(prob[0, 0] > 0.3)
    check(len(xs) > 0, f"ocr_det: text pixels above 0.3: {len(xs)}")
    if not len(xs):
        return {"det_pixels": 0}
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    pad = int(round(0.6 * (y1 - y0)))
    box = (max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, img.width), min(y1 + pad, img.height))
    print(f"    ocr_det: {len(xs)} text pixels, box x0,y0,x1,y1 = {list(box)} px")

    charset = rec.get_modelmeta().custom_metadata_map.get("character", "").split("\n")
    charset = [c for c in charset if c]
    classes = ["<blank>"] + charset + [" "]
    n_out = rec.get_outputs()[0].shape[-1]
    check(len(classes) == n_out, f"ocr_rec: blank + {len(charset)} metadata characters + space == {n_out} classes")
    crop = img.crop(box)
    w = int(math.ceil(48 * crop.width / crop.height))
    c = np.zeros((1, 3, 48, max(w, 320)), dtype=np.float32)
    c[0, :, :, :w] = (np.asarray(crop.resize((w, 48), Image.BILINEAR), dtype=np.float32)[:, :, ::-1]
                      / 127.5 - 1.0).transpose(2, 0, 1)
    p = rec.run(None, {"x": c})[0][0]
    idx = p.argmax(1)
    out, prev = [], 0
    for i in idx:
        if i != prev and i != 0 and i < len(classes):
            out.append(classes[i])
        prev = i
    text = "".join(out)
    conf = float(p.max(1)[idx > 0].mean()) if (idx > 0).any() else 0.0
    print(f"    ocr_rec: read {text!r} (mean confidence {conf:.3f}), rendered {OCR_TEXT!r}")
    check(text == OCR_TEXT, f"ocr_rec: reads back the rendered text ({text!r})")
    return {"rendered": OCR_TEXT, "read": text, "confidence": round(conf, 3), "box_px": list(box),
            "charset_size": len(charset)}


def finish(result, path):
    result["ok"] = not FAILURES
    result["failures"] = FAILURES
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
    if FAILURES:
        print(f"check_models: {len(FAILURES)} check(s) failed", file=sys.stderr)
        return 1
    print("check_models: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
