"""How hard does the filter loss push, next to the classification loss?

For a saved study model, on a few training batches of the training batch
size (16: the filter loss's image set X is the batch), this measures on the
"part_conv" map x (post-ReLU, before the mask: what the filter loss sees):

* the per-filter MI (category-aware and label-free) the loss would log;
* the RMS of d(-MI summed over filters)/dx per element, i.e. the filter-loss
  gradient at lambda = 1 (it scales linearly with lambda);
* the RMS of d(cross-entropy)/dx per element through the head
  (mask for interpretable models, GAP, classifier; dropout off);
* the lambda at which the two are equal;
* the fraction of the map's mass that the forward mask keeps,
  sum(mask * x) / sum(x), on part_conv and on the backbone's top conv.

Filters are assigned to classes by their mean activation per class on the
probe batches (the layer's rule, without the moving average).

    python experiments/grad_probe.py runs/study/ordinary_s0/model.keras ...
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_interp  # noqa: E402,F401  (registers the custom layers)
from keras_interp import data as data_lib  # noqa: E402
from keras_interp import losses  # noqa: E402
from keras_interp import templates  # noqa: E402
from keras_interp.evaluation import feature_maps  # noqa: E402

BATCH = 16
NUM_BATCHES = 8
TOP = "block4_conv2_relu"


def _batches():
    index = data_lib.read_cub(data_lib.default_data_dir())
    ds = data_lib.make_dataset(
        index,
        split="train",
        image_size=64,
        batch_size=BATCH,
        shuffle=True,
        seed=123,
        include_parts=False,
    )
    return list(ds.take(NUM_BATCHES).as_numpy_iterator())


def _layer(model, name):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.name == name:
            return layer
    raise KeyError(name)


def probe(path, batches):
    model = keras.saving.load_model(path, compile=False)
    interpretable = any(
        "Interpretable" in type(layer).__name__
        for layer in model._flatten_layers(recursive=True)
    )
    raw = feature_maps.feature_map_model(model, "part_conv", map="raw")
    try:
        # The top_mask input (raw) and block4_conv2_relu's output are
        # both the backbone's post-ReLU top map.
        top = feature_maps.feature_map_model(
            model,
            "top_mask" if interpretable else TOP,
            map="raw" if interpretable else "masked",
        )
    except Exception:  # noqa: BLE001
        top = None
    classifier = _layer(model, "classifier")
    # The model's own template slope (ordinary models: the default 4).
    beta = float(getattr(_layer(model, "part_conv"), "beta", 4.0) or 4.0)
    xs, ys, tops = [], [], []
    for batch in batches:
        xs.append(np.maximum(raw.predict_on_batch(batch["image"]), 0.0))
        ys.append(batch["label"])
        if top is not None:
            tops.append(np.maximum(top.predict_on_batch(batch["image"]), 0))
    num_classes = int(classifier.units)
    x_all = np.concatenate(xs)
    y_all = np.concatenate(ys)
    per_class = np.stack(
        [x_all[y_all == c].mean(axis=(0, 1, 2)) for c in range(num_classes)]
    )  # [classes, filters]
    assigned = per_class.argmax(0)
    out = {
        "mi_cat": [],
        "mi_free": [],
        "g_cat": [],
        "g_free": [],
        "g_ce": [],
        "g_authors": [],
    }
    keep = []
    for x, y in zip(xs, ys):
        x = tf.constant(x)
        positives = tf.constant(
            (y[:, None] == assigned[None, :]).astype("float32")
        )
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            mi_cat = losses.category_mutual_information(
                x, positives, beta=beta
            )
            mi_free = losses.mutual_information(x, beta=beta)
            loss_cat = -tf.reduce_sum(mi_cat)
            loss_free = -tf.reduce_sum(mi_free)
            mask = templates.part_mask(x, beta=beta) if interpretable else 1.0
            pooled = tf.reduce_mean(x * mask, axis=(1, 2))
            logits = classifier(pooled)
            ce = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True
                )
            )
        rms = lambda g: float(tf.sqrt(tf.reduce_mean(tf.square(g))))  # noqa
        out["mi_cat"].append(float(tf.reduce_mean(mi_cat)))
        out["mi_free"].append(float(tf.reduce_mean(mi_free)))
        out["g_cat"].append(rms(tape.gradient(loss_cat, x)))
        out["g_free"].append(rms(tape.gradient(loss_free, x)))
        out["g_ce"].append(rms(tape.gradient(ce, x)))
        # The authors' injected term at epoch 1 with their 5-class weights
        # (w+ = 0.5 / 0.2, w- = 0.5 / 0.8), over the batch size as in the
        # library (Keras losses are batch means); loss_weight 1.
        surrogate = losses.authors_filter_gradient(
            x,
            positives,
            beta=beta,
            center="argmax",
            epoch=1.0,
            positive_weight=2.5,
            negative_weight=0.625,
        )
        out["g_authors"].append(rms(surrogate) / BATCH)
        m = templates.part_mask(x, beta=beta)
        keep.append(float(tf.reduce_sum(m * x) / tf.reduce_sum(x)))
    top_keep = [
        float(
            np.sum(np.asarray(templates.part_mask(t, beta=beta)) * t)
            / np.sum(t)
        )
        for t in tops
    ]
    result = {k: float(np.mean(v)) for k, v in out.items()}
    result["mask_keeps_part_conv"] = float(np.mean(keep))
    result["mask_keeps_top"] = float(np.mean(top_keep)) if top_keep else None
    result["lambda_equal_cat"] = result["g_ce"] / max(result["g_cat"], 1e-30)
    result["lambda_equal_free"] = result["g_ce"] / max(
        result["g_free"], 1e-30
    )
    result["mean_max_activation"] = float(x_all.max(axis=(1, 2)).mean())
    result["mean_activation"] = float(x_all.mean())
    return result


def main(argv):
    batches = _batches()
    print(
        "| model | MI/filter (cat.) | MI/filter (label-free) | "
        "RMS dL_filter/dx at lambda=1 (cat. / free) | RMS dCE/dx | "
        "lambda where equal (cat. / free) | authors' term RMS, epoch 1 | "
        "mask keeps (part_conv / top) | mean max x |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in argv[1:]:
        r = probe(path, batches)
        name = os.path.basename(os.path.dirname(path))
        top = "-" if r["mask_keeps_top"] is None else f"{r['mask_keeps_top']:.2f}"
        print(
            f"| {name} | {r['mi_cat']:.1e} | {r['mi_free']:.1e} | "
            f"{r['g_cat']:.1e} / {r['g_free']:.1e} | {r['g_ce']:.1e} | "
            f"{r['lambda_equal_cat']:.2g} / {r['lambda_equal_free']:.2g} | "
            f"{r['g_authors']:.1e} | "
            f"{r['mask_keeps_part_conv']:.2f} / {top} | "
            f"{r['mean_max_activation']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv)
