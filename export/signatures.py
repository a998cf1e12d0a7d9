"""The serving module: a `tf.Module` around the EMA generator with three TF-Serving signatures.

Signatures (all batch-major; TF-Serving's batching concatenates requests along dim 0):

``serving_default``
    inputs ``z`` float32 [-1, z_dim], ``label`` int32 [-1] → ``images`` float32 [-1, H, W, C] in [-1, 1].
``generate``
    inputs ``label`` int32 [-1], ``seed`` int64 [-1], ``truncation`` float32 [-1] →
    ``images`` uint8 [-1, H, W, C] and ``png`` string [-1] (one encoded PNG per row).
    Row i's z is drawn by stateless RNG from ``seed[i]`` alone (`sagan_tf.sampling.noise.noise_for_seeds`,
    the sampler the train step draws with), so the same (seed, truncation, label) gives the same image in
    any batch, on any call.
``attention``
    like ``serving_default`` plus ``attention_<k>`` float32 [-1, N, M] for the k-th attention layer
    (N = positions of its feature map, M = N/4 with pooled attention).

Truncation (per row), the project's one convention (`sagan_tf.sampling.noise`): ``t > 0`` draws z from
N(0, 1) truncated to [-t, t] (every coordinate with |z| > t is redrawn until it falls inside, so the
result is exactly the truncated normal and never leaves [-t, t]); ``t = 0`` means no truncation (what an
unset proto or JSON number gives). Negative values, NaN and ±inf are rejected with INVALID_ARGUMENT
rather than read as "none": such a value is far more likely a client bug than a request.

Every input is checked inside the graph with `tf.debugging` assertions that run before the
generator, so a bad request fails with InvalidArgumentError (TF-Serving: INVALID_ARGUMENT) whose
message names the input and the offending values: labels outside [0, num_classes), z of the wrong
width, inputs with different batch sizes, negative or non-finite truncation, and batches outside
[1, max_batch] (one limit for every signature; the batching file's max_batch_size equals it, so
batches merged by TF-Serving never exceed it). The width check does not rely on the static shape:
TF-Serving does not check fed shapes against the signature, and grappler may fold shape ops whose
value it believes it knows.

Under TF-Serving's batching (``--enable_batching``) requests are concatenated along dim 0 and run as
one call with one status, so a bad request fails every request merged with it into that batch. This
is deliberate: the alternative (no assertion; bad rows answered with zeros or clamped values) would
answer the bad request itself with OK. Clients should validate labels, z and batch size against the
limits in ``assets.extra/sagan_export.json`` before sending; docs/serving.md ("Bad requests under
TF-Serving's batching") gives the reasoning.
"""
import tensorflow as tf

from sagan_tf.models.architecture import generator_stages
from sagan_tf.sampling.noise import noise_for_seeds

DEFAULT_MAX_BATCH = 256
SIGNATURES = ("serving_default", "generate", "attention")


def to_uint8(images):
    """float images in [-1, 1] → uint8, rounding like `sagan_tf.sampling.images.to_uint8` (half to even)."""
    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def attention_map_shapes(spec):
    """[(N, M)] of each attention layer of a generator with model fields `spec`, in layer order."""
    shapes = []
    for stage in generator_stages(spec["resolution"], spec["ch"], spec["g_attention"]):
        if stage.attention:
            n = stage.resolution ** 2
            shapes.append((n, n // 4 if spec["pooled_attention"] else n))
    return shapes


class _Untracked:
    """A plain holder: TF's AutoTrackable does not track attributes that are not Trackable."""

    def __init__(self, value):
        self.value = value


class GeneratorServing(tf.Module):
    """Holds a built Keras generator and exposes the serving signatures as tf.functions.

    `signatures()` gives the dict for `tf.saved_model.save(module, path, signatures=...)`.
    """

    def __init__(self, generator, max_batch=DEFAULT_MAX_BATCH, name="sagan_serving"):
        super().__init__(name=name)
        if not 1 <= int(max_batch):
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        # The Keras model is held outside TF's object tracking; the module tracks the tf.Variables the
        # traced signatures capture (what keras.export.ExportArchive does). Tracking the Keras model or
        # its keras.Variable wrappers instead saves a second set of variables: tf.saved_model.load copes,
        # but TF-Serving's session loader restores one set and the graph reads the other ("Could not
        # find variable ...").
        self._keras = _Untracked(generator)
        spec = dict(generator.spec)
        self.z_dim = int(spec["z_dim"])
        self.num_classes = int(spec["num_classes"])
        # An unconditional generator ignores its labels; it accepts label 0 only.
        self.label_limit = max(self.num_classes, 1)
        self.max_batch = int(max_batch)
        self.attention_shapes = attention_map_shapes(spec)
        if len(self.attention_shapes) != len(generator.attention_layers):
            raise ValueError(f"expected {len(self.attention_shapes)} attention layers from the architecture table, "
                             f"the generator has {len(generator.attention_layers)}")
        z_spec = tf.TensorSpec([None, self.z_dim], tf.float32, name="z")
        label_spec = tf.TensorSpec([None], tf.int32, name="label")
        self.serve = tf.function(self._serve, input_signature=[z_spec, label_spec])
        self.generate = tf.function(self._generate, input_signature=[
            label_spec, tf.TensorSpec([None], tf.int64, name="seed"),
            tf.TensorSpec([None], tf.float32, name="truncation")])
        self.attention = tf.function(self._attention, input_signature=[z_spec, label_spec])

    @property
    def generator(self):
        return self._keras.value

    def signatures(self):
        """Traces the signatures and tracks the variables they capture; pass to tf.saved_model.save."""
        functions = {"serving_default": self.serve.get_concrete_function(),
                     "generate": self.generate.get_concrete_function(),
                     "attention": self.attention.get_concrete_function()}
        captured, seen = [], set()
        for function in functions.values():
            for variable in function.variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    captured.append(variable)
        missing = len(self.generator.weights) - len(captured)
        if missing:
            raise RuntimeError(f"the serving signatures capture {len(captured)} variables but the generator has "
                               f"{len(self.generator.weights)}; {missing} would not be exported.")
        self.captured_variables = captured
        return functions

    def limits(self):
        """The request limits baked into the graph, for documentation and metadata."""
        return {"max_batch": self.max_batch, "label_range": [0, self.label_limit], "z_dim": self.z_dim}

    # --- validation -------------------------------------------------------------------------------

    def _batch_checks(self, label, others, max_batch):
        """Assertions: 1 <= batch <= max_batch, every other input has the label's batch size."""
        batch = tf.shape(label)[0]
        checks = [tf.debugging.Assert(
            tf.logical_and(batch >= 1, batch <= max_batch),
            [f"batch size must be between 1 and {max_batch}; label has", batch, "rows"])]
        for name, tensor in others:
            rows = tf.shape(tensor)[0]
            checks.append(tf.debugging.Assert(
                tf.equal(rows, batch),
                [f"{name} must have one row per label row: {name} has", rows, "rows, label has", batch]))
        return checks

    def _label_checks(self, label):
        bad = tf.logical_or(label < 0, label >= self.label_limit)
        return [tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(bad)),
            [f"label values must be in [0, {self.label_limit}); out of range:", tf.boolean_mask(label, bad),
             "at rows", tf.reshape(tf.where(bad), [-1])], summarize=16)]

    def _z_checks(self, z, label):
        shape = tf.shape(z)
        # The element count catches a wrong width even if shape[1] were constant-folded from the
        # signature's static [None, z_dim]: size == rows·z_dim ⇔ width == z_dim (for rows > 0).
        ok = tf.logical_and(tf.equal(shape[1], self.z_dim), tf.equal(tf.size(z), shape[0] * self.z_dim))
        finite = tf.reduce_all(tf.math.is_finite(z))
        return [tf.debugging.Assert(ok, [f"z must have shape [batch, {self.z_dim}] (z_dim={self.z_dim}); got", shape]),
                tf.debugging.Assert(finite, ["z must be finite; non-finite entries at",
                                             tf.where(tf.logical_not(tf.math.is_finite(z)))], summarize=8)]

    @staticmethod
    def _after(checks, *tensors):
        """The tensors, only computable once every check has passed (asserts run first)."""
        with tf.control_dependencies(checks):
            return [tf.identity(t) for t in tensors]

    # --- signatures -------------------------------------------------------------------------------

    def _checked_z_label(self, z, label, max_batch):
        checks = self._batch_checks(label, [("z", z)], max_batch)
        checks += self._z_checks(z, label) + self._label_checks(label)
        return self._after(checks, z, label)

    def _serve(self, z, label):
        z, label = self._checked_z_label(z, label, self.max_batch)
        return {"images": self.generator((z, label), training=False)}

    def _attention(self, z, label):
        z, label = self._checked_z_label(z, label, self.max_batch)
        images, maps = self.generator((z, label), training=False, return_attention=True)
        outputs = {"images": images}
        for k, (attention, (n, m)) in enumerate(zip(maps, self.attention_shapes)):
            # The layer's reshapes lose the static shape; restore it for the signature ([-1, N, M]).
            outputs[f"attention_{k}"] = tf.ensure_shape(tf.cast(attention, tf.float32), [None, n, m])
        return outputs

    def _generate(self, label, seed, truncation):
        checks = self._batch_checks(label, [("seed", seed), ("truncation", truncation)], self.max_batch)
        checks += self._label_checks(label)
        label, seed, truncation = self._after(checks, label, seed, truncation)
        z = noise_for_seeds(seed, truncation, self.z_dim)  # checks the truncations first
        images = to_uint8(self.generator((z, label), training=False))
        png = tf.map_fn(tf.io.encode_png, images, fn_output_signature=tf.TensorSpec([], tf.string))
        return {"images": images, "png": png}
