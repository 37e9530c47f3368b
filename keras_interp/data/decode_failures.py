"""Decoding that names its files: a failed `tf.data` decode says which.

TensorFlow's decoders raise errors that name no file, and a `tf.data`
graph cannot catch them. `decode_naming_failures` wraps the decoding
stage of the pipeline (`keras_interp.data.pipeline`) so that the first
example that fails to read or decode stops the iteration with an error
naming that example's files (`describe_files`).
"""

import tensorflow as tf

# Decoding (and, in the pipeline, cropping and resizing) runs in parallel;
# tf.data picks the thread count.
NUM_PARALLEL_CALLS = tf.data.AUTOTUNE


def _placeholder(spec):
    """Zeros of `spec`'s structure; unknown dimensions become 1."""
    return tf.nest.map_structure(
        lambda s: tf.zeros([1 if d is None else d for d in s.shape], s.dtype),
        spec,
    )


def decode_naming_failures(
    dataset: tf.data.Dataset,
    decode_fn,
    describe_fn,
    *,
    num_examples: int | None,
) -> tf.data.Dataset:
    """Maps `(example, random)` to `(decode_fn(example), random)`, naming
    the files of an example that fails to decode.

    A TensorFlow op error (`jpeg::Uncompress failed`, `Unknown image file
    format`, ...) carries no file name, and a `tf.data` graph cannot catch
    it. So the examples are numbered in order, decoded in parallel as usual
    (order kept), `Dataset.ignore_errors` turns a failed example into a gap
    in the numbering, and the next example, which carries the description
    of the one before it, raises an `InvalidArgumentError` that names those
    files. No example is ever skipped: the first gap stops the iteration.
    TensorFlow logs the original error as a warning just before. With
    `num_examples` (a finite dataset of that many examples), an end marker
    (decoded as zeros, then dropped) follows the last example, so that a
    failure of the last example is reported too. Only reading and decoding
    run inside `ignore_errors`; cropping and resizing run after it, fused
    with batching as before.
    """
    finite = num_examples is not None
    if finite:
        decoded_spec = dataset.map(
            lambda example, random: decode_fn(example)
        ).element_spec
        dataset = dataset.concatenate(
            tf.data.Dataset.from_tensors(_placeholder(dataset.element_spec))
        )

    def number(state, element):
        count, previous = state
        example, random = element
        new_state = (count + 1, describe_fn(example))
        return new_state, (count, previous, example, random)

    dataset = dataset.scan(
        (tf.constant(0, "int64"), tf.constant("", "string")), number
    )

    def decode(count, previous, example, random):
        if finite:
            decoded = tf.cond(
                count == num_examples,
                lambda: _placeholder(decoded_spec),
                lambda: decode_fn(example),
            )
        else:
            decoded = decode_fn(example)
        return count, previous, decoded, random

    dataset = dataset.map(
        decode, num_parallel_calls=NUM_PARALLEL_CALLS, deterministic=True
    )
    dataset = dataset.ignore_errors(log_warning=True)

    def check(expected, element):
        count, previous, decoded, random = element
        message = tf.strings.join(
            [
                "Could not read or decode ",
                previous,
                ". The cause is in the warning that TensorFlow logged just "
                "before (ignore_errors: Error raised with error message). "
                "Replace the file, or remove its lines from the dataset "
                "index files. "
                "`keras_interp.data.read_cub(..., check_images=True)` finds "
                "every such image of a CUB folder before training.",
            ]
        )
        assertion = tf.debugging.Assert(tf.equal(count, expected), [message])
        with tf.control_dependencies([assertion]):
            return count + 1, (decoded, random, count)

    dataset = dataset.scan(tf.constant(0, "int64"), check)
    if finite:
        dataset = dataset.filter(
            lambda decoded, random, count: count < num_examples
        )
    return dataset


def describe_files(example, *, include_part_mask: bool):
    """The file(s) an example is read from, for error messages."""
    if not include_part_mask:
        return example["path"]
    with_mask = tf.strings.join(
        [example["path"], " or its part mask ", example["mask_path"]]
    )
    return tf.where(example["has_mask"], with_mask, example["path"])
